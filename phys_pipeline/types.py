"""The typed core: states, stage configs, stages, their results and DAG node specs."""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from ._deprecation import warn_once
from .errors import ConfigError
from .hashing import digest, digest_pair, hash_ndarray, hash_small
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .policy import PolicyBag

__all__ = [
    "DagState",
    "NodeInputs",
    "NodeResources",
    "amount_problem",
    "NodeSpec",
    "NodeStatus",
    "PipelineStage",
    "SimpleState",
    "StageConfig",
    "StageResult",
    "State",
    "SweepOrigin",
    "hash_ndarray",
    "hash_small",
]


class State(ABC):
    """What flows between stages. Subclasses say how to copy themselves and how to hash.

    No ``__init__`` and empty ``__slots__``: subclasses may be ``@dataclass(slots=True)``
    classes that never call a base initialiser.
    """

    __slots__ = ()

    @abstractmethod
    def deepcopy(self) -> State:
        """An independent copy a stage may modify."""

    @abstractmethod
    def hashable_repr(self) -> bytes:
        """Bytes that identify the content (feeds the cache keys of root nodes)."""


class SimpleState(State):
    """A payload plus a free-form ``meta`` dict; hashes both canonically (arrays by content)."""

    def __init__(self, payload: Any = None, meta: dict[str, Any] | None = None) -> None:
        self.payload = payload
        self.meta = {} if meta is None else meta

    def deepcopy(self) -> SimpleState:
        if type(self) is SimpleState:  # the common case, built directly: stages copy often
            return SimpleState(copy.deepcopy(self.payload), copy.deepcopy(self.meta))
        return copy.deepcopy(self)  # a subclass stays itself, with what it adds

    def hashable_repr(self) -> bytes:
        return digest_pair(self.payload, self.meta, "SimpleState")

    def __repr__(self) -> str:
        keys = ", ".join(self.meta)
        return f"SimpleState(payload={self.payload!r:.60}, meta keys=[{keys}])"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SimpleState):
            return NotImplemented
        return self.hashable_repr() == other.hashable_repr()

    __hash__ = None  # type: ignore[assignment]  # mutable


class DagState(State):
    """The input of a DAG node with several parents: their states keyed by parent node id."""

    def __init__(self, inputs: Mapping[str, State]) -> None:
        self.inputs: dict[str, State] = dict(inputs)

    def deepcopy(self) -> DagState:
        return DagState({k: v.deepcopy() for k, v in self.inputs.items()})

    def hashable_repr(self) -> bytes:
        return DagState.digest_of({k: v.hashable_repr() for k, v in self.inputs.items()})

    @staticmethod
    def digest_of(parts: Mapping[str, bytes]) -> bytes:
        """A DagState's ``hashable_repr`` from its inputs' (early cutoff knows those)."""
        return digest(dict(parts), "DagState")

    def __getitem__(self, node_id: str) -> State:
        return self.inputs[node_id]

    def __repr__(self) -> str:
        return f"DagState(inputs=[{', '.join(self.inputs)}])"


class StageConfig(BaseModel):
    """A stage's validated, immutable parameters. Subclass it and add typed fields.

    ``name`` labels the stage in metric keys (empty: the stage's class name); ``tags`` carry
    free-form labels. Arbitrary types (such as ndarrays) are allowed and hash by content. Unknown
    fields are rejected, so a typo in an edit or a sweep is an error, not an ignored value.
    """

    model_config = ConfigDict(
        frozen=True, arbitrary_types_allowed=True, extra="forbid", validate_default=True
    )

    name: str = ""
    tags: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Keep pydantic's ``__init__``, ``__repr__`` and ``__eq__`` in every subclass's own
        namespace, where a stdlib ``@dataclass`` decorator leaves them alone (it only adds the
        methods a class does not define). Its generated ``__init__`` would know neither the
        defaults (pydantic holds them) nor ``name``/``tags``, and would skip validation; its
        ``__eq__`` would ignore ``name``/``tags``. A dataclass's ``__post_init__`` still runs,
        after validation, as pydantic's ``model_post_init``."""
        super().__init_subclass__(**kwargs)
        for method in ("__init__", "__repr__", "__eq__"):
            if method not in vars(cls):
                setattr(cls, method, getattr(cls, method))
        if "__post_init__" in vars(cls) and "model_post_init" not in vars(cls):
            cls.model_post_init = _run_post_init  # type: ignore[method-assign]


def _run_post_init(self: StageConfig, context: Any, /) -> None:
    self.__post_init__()  # type: ignore[attr-defined]


S = TypeVar("S", bound=State)
C = TypeVar("C")


class PipelineStage(ABC, Generic[S, C]):
    """One transform ``state -> StageResult``. Subclasses implement :meth:`process`.

    Stages may be dataclasses that never call this ``__init__``, and may be unhashable: the
    library never uses a stage as a dict key. Set ``version`` to pin the code version by hand;
    set ``policy_keys`` to the policy keys the stage reads, so that other policy changes do not
    invalidate its cache entries (by default, any policy change does). A stage's key covers
    its code, the globals that code reads and the attributes the stage holds beside ``cfg``
    (see ``phys_pipeline.fingerprint``); name in ``untracked`` the globals and attributes that
    do not affect its result and cannot be hashed (a connection, a cache of your own).
    """

    version: ClassVar[str | None] = None
    policy_keys: ClassVar[tuple[str, ...] | None] = None
    untracked: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: C) -> None:
        self.cfg = cfg

    @abstractmethod
    def process(self, state: S, *, policy: PolicyBag | None = None) -> StageResult[S]:
        """Turn ``state`` into a result; copy ``state`` before changing it."""

    def estimated_cost(self) -> float:
        """Relative cost hint for schedulers (1.0 = an ordinary stage)."""
        return 1.0

    def can_parallelize_over(self) -> tuple[str, ...]:
        """Config fields this stage could be split over; none by default."""
        return ()

    def __repr__(self) -> str:
        name = getattr(getattr(self, "cfg", None), "name", "?")
        return f"{type(self).__name__}(name={name!r})"


@dataclass
class StageResult(Generic[S]):
    """A stage's output: the new state, scalar metrics, lazy artifacts and provenance.

    Artifacts are values or zero-argument callables (returning a matplotlib figure, an array,
    bytes or a str); callables run only when artifacts are recorded or displayed.
    """

    state: S
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


class NodeStatus(enum.StrEnum):
    """Where a node stands: one vocabulary for runs, sessions, views and run controls. Each
    member is its text (``NodeStatus.HIT == "hit"``), which is also what views show."""

    NOT_RUN = "not run"  # never run, nothing cached for its key
    STALE = "stale"  # its key changed since the last run
    RUNNING = "running"
    RAN = "ran"
    CACHED = "cached"  # in the cache under its current key, not loaded by a run yet
    HIT = "hit"  # loaded from the cache by the last run
    FAILED = "failed"
    SKIPPED = "skipped"  # a node it depends on failed
    CANCELLED = "cancelled"  # the run was stopped (cancel, an interrupt) before it ran

    @property
    def settled(self) -> bool:
        """Whether a run is done with the node (ran, hit, failed or skipped)."""
        return self in _SETTLED


_SETTLED = frozenset(
    {
        NodeStatus.RAN,
        NodeStatus.HIT,
        NodeStatus.FAILED,
        NodeStatus.SKIPPED,
        NodeStatus.CANCELLED,
    }
)


@dataclass(frozen=True)
class NodeResources:
    """Slots a node occupies while it runs (see ``LocalScheduler(max_cpu=, max_gpu=)``).
    ``mpi_ranks`` above one has the ``mpi_runner`` given to ``DagExecutor`` run the stage on
    that many MPI ranks (the runner finds them: they take no slots; without a runner the stage
    runs as any other).
    ``memory_gb`` is 2.0.0's spelling of ``mem_gb``, still accepted and read (deprecated)."""

    cpu: int = 1
    gpu: int = 0
    mem_gb: float = 0.0
    mpi_ranks: int = 1

    def __post_init__(self) -> None:
        for name, value, problem in self.problems():
            raise ConfigError("NodeResources", name, value, f"NodeResources.{name} {problem}")

    def problems(self) -> list[tuple[str, Any, str]]:
        """Each slot that is not a finite number >= 0 (NaN never fits any slot, so a node
        asking for it would wait for ever), and ``mpi_ranks`` if not a whole number >= 1,
        with why."""
        found = [
            (name, value, problem)
            for name in ("cpu", "gpu", "mem_gb")
            if (problem := amount_problem(value := getattr(self, name))) is not None
        ]
        ranks = self.mpi_ranks
        if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
            found.append(("mpi_ranks", ranks, "must be a whole number >= 1"))
        return found


def amount_problem(value: Any) -> str | None:
    """Why ``value`` cannot be an amount of a resource (None: it can)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {type(value).__name__}"
    if not math.isfinite(value) or value < 0:
        return "must be a finite number >= 0"
    return None


def _taking_memory_gb(init: Callable[..., None]) -> Callable[..., None]:
    """NodeResources' ``__init__``, also taking 2.0.0's ``memory_gb`` for ``mem_gb``. Not a
    field: ``dataclasses.replace`` would hand the old value back in, over a new ``mem_gb``."""

    @functools.wraps(init)
    def __init__(
        self: NodeResources, *args: Any, memory_gb: float | None = None, **kw: Any
    ) -> None:
        if memory_gb is not None:
            warn_once("NodeResources(memory_gb=...)", "pass mem_gb", stacklevel=2)
            if "mem_gb" in kw or len(args) > 2:
                raise ConfigError("NodeResources", "memory_gb", memory_gb, "mem_gb is given too")
            kw["mem_gb"] = memory_gb
        init(self, *args, **kw)

    return __init__


def _memory_gb(resources: NodeResources) -> float:
    warn_once("NodeResources.memory_gb", "read NodeResources.mem_gb", stacklevel=2)
    return resources.mem_gb


NodeResources.__init__ = _taking_memory_gb(NodeResources.__init__)  # type: ignore[method-assign]
NodeResources.memory_gb = property(_memory_gb)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NodeInputs:
    """How a node receives its parents' states; part of its key, since the stage sees it.

    ``gather``: always a DagState, even with one parent (a sweep's gather node, whatever the
    number of variants). ``names``: parent id -> the name its state has in the DagState, for
    parents whose ids are not the names the stage reads (a sweep clone's parents are variants).
    """

    gather: bool = False
    names: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        # a copy of its own, so that a caller's later edit cannot change a planned key
        object.__setattr__(self, "names", dict(self.names) if self.names else None)


@dataclass(frozen=True)
class SweepOrigin:
    """The node a sweep cloned a node from, and the swept values it was cloned with (labelled
    as in the clone's id): what sweep tables and plots read. Outside the key: the clone's config
    and parents already say everything the values change."""

    base_id: str
    params: Mapping[str, Any] = field(default_factory=dict)


_DEPRECATED_METADATA = frozenset({"gather", "input_names", "policy_keys", "sweep"})


def _deprecated(spelling: str, stacklevel: int) -> None:
    """Warn, once, that metadata key ``spelling`` is deprecated; ``stacklevel``: how many
    frames above this one the user's code is."""
    warn_once(f"NodeSpec metadata[{spelling!r}]", _INSTEAD[spelling], stacklevel=stacklevel + 1)


@dataclass
class NodeSpec:
    """One DAG node: an id, the ids it depends on and the stage that computes it.

    ``version`` pins the node's code version (overriding the stage's); ``op_name`` labels the
    operation in views; ``inputs`` says how it receives its parents' states (see
    :class:`NodeInputs`); ``policy_keys``, when set, are the policy keys it reads, overriding
    the stage's; ``sweep`` is set on the clones ``expand_sweep`` makes. ``metadata`` is
    free-form user data: the library never reads it, and it is not part of the cache key. A
    clone's metadata also holds ``"sweep"``: its swept values, ``{parameter: value}``, a copy
    for code written for 2.0.0 (ours reads ``sweep``), made afresh from ``sweep`` whenever the
    node is replaced. ``retry`` overrides the executor's retry policy and timeout for this node
    (not part of the key: how often a node is tried does not change its result).

    Deprecated: the metadata keys ``gather``, ``input_names``, ``policy_keys`` and ``sweep``
    (as ``{"base_id": ..., "params": {...}}``) that these fields replace are moved onto them
    (a field given too wins), each spelling warning once with a DeprecationWarning.
    """

    id: str
    deps: list[str] = field(default_factory=list)
    stage: Any = None
    op_name: str | None = None
    version: str | None = None
    resources: NodeResources | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    inputs: NodeInputs | None = None
    policy_keys: tuple[str, ...] | None = None
    sweep: SweepOrigin | None = None
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if isinstance(self.metadata, _CloneMetadata):  # a clone replaced: its copy is made anew
            self.metadata = {k: v for k, v in self.metadata.items() if k != "sweep"}
        if not _DEPRECATED_METADATA.isdisjoint(self.metadata):
            self._adopt_deprecated_metadata()
        # one dependency or policy key may be given as a plain string; list("grid") would be
        # its characters
        self.deps = [self.deps] if isinstance(self.deps, str) else list(self.deps)
        if self.policy_keys is not None:
            keys = self.policy_keys
            self.policy_keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if self.sweep is not None:
            self.metadata = _CloneMetadata({**self.metadata, "sweep": dict(self.sweep.params)})

    def _adopt_deprecated_metadata(self) -> None:
        metadata = dict(self.metadata)
        gather, names = metadata.pop("gather", None), metadata.pop("input_names", None)
        policy_keys = metadata.pop("policy_keys", None)
        sweep = metadata.pop("sweep") if _old_sweep_spelling(metadata.get("sweep")) else None
        for spelling in sorted(_DEPRECATED_METADATA & self.metadata.keys() - metadata.keys()):
            _deprecated(spelling, stacklevel=4)  # here, __post_init__, __init__, the user
        if self.inputs is None and (gather or names):
            self.inputs = NodeInputs(bool(gather), names)
        if self.policy_keys is None:
            self.policy_keys = policy_keys
        if self.sweep is None and sweep is not None:
            if not isinstance(sweep, Mapping) or "base_id" not in sweep:
                reason = "must be {'base_id': ..., 'params': {...}}"
                raise ConfigError(f"node {self.id!r}", "metadata['sweep']", sweep, reason)
            self.sweep = SweepOrigin(sweep["base_id"], dict(sweep.get("params", {})))
        self.metadata = metadata

    def replace(self, **changes: Any) -> NodeSpec:
        return dataclasses.replace(self, **changes)

    @property
    def label(self) -> str:
        return self.op_name or type(self.stage).__name__


_INSTEAD = {
    "gather": "pass NodeSpec(inputs=NodeInputs(gather=True))",
    "input_names": "pass NodeSpec(inputs=NodeInputs(names=...))",
    "policy_keys": "pass NodeSpec(policy_keys=...)",
    "sweep": "read or pass NodeSpec.sweep (a SweepOrigin)",
}


class _CloneMetadata(dict[str, Any]):
    """A sweep clone's metadata: the user's data and the ``"sweep"`` copy of its swept values.
    Its type tells a replaced clone's copy (made anew from the clone's ``sweep``) from data the
    user gave."""


def _old_sweep_spelling(value: Any) -> bool:
    """Whether ``metadata["sweep"]`` is our deprecated spelling of a clone's origin
    (``{"base_id": ..., "params": {...}}``); anything else there, such as 2.0.0's
    ``{parameter: value}``, is the user's data."""
    return isinstance(value, Mapping) and bool(value) and value.keys() <= {"base_id", "params"}


def stage_name(stage: Any) -> str:
    """The name a stage goes by in metric keys and messages: ``cfg.name``, else its class."""
    return name_of(getattr(stage, "cfg", None), type(stage))


def name_of(cfg: Any, stage_class: type) -> str:
    """``stage_name`` of a stage of ``stage_class`` holding ``cfg``, for callers that have
    read ``cfg`` already (a pipeline derives its ``cfg`` afresh on every read)."""
    name = getattr(cfg, "name", None)
    return name if isinstance(name, str) and name else stage_class.__name__
