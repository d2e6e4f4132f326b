"""One error taxonomy: every error names its culprit (node id, stage, field, key or value).

All errors derive from :class:`PhysPipelineError`; most also derive from the builtin
``ValueError`` / ``TypeError`` they refine, so generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence
from typing import Any

from ._v2 import served_from

__all__ = [
    "CodeChangedDuringRunError",
    "CacheConfigError",
    "CacheError",
    "ConfigError",
    "CorruptedInputError",
    "CycleError",
    "DagError",
    "DuplicateNodeError",
    "EmptyDagError",
    "MetricError",
    "MetricKeyCollisionError",
    "MissingDependencyError",
    "MissingRecorderError",
    "MissingStageError",
    "NodeFailedError",
    "NodeTimeoutError",
    "NotAStateError",
    "PhysPipelineError",
    "PolicyError",
    "RemoteStageError",
    "StageError",
    "StageOutputError",
    "StaleCodeError",
    "StateMutationError",
    "SweepError",
    "UncacheableWarning",
    "UnhashableValueError",
    "UnknownNodeError",
    "WorkerDiedError",
]


def _rebuild(cls: type[BaseException], args: tuple, attributes: dict) -> BaseException:
    """Unpickle an error without calling its ``__init__`` (whose signature is not its args):
    ours, and a stage's own that travels from a worker process (see ``_portable``)."""
    error = cls.__new__(cls, *args)
    Exception.__init__(error, *args)
    error.__dict__.update(attributes)
    return error


class PhysPipelineError(Exception):
    """Base class of every error phys-pipeline raises on purpose.

    Errors survive pickling (process pools and Dask ship them between processes) with their
    message and attributes, although their ``__init__`` takes other arguments than ``args``.
    """

    def __reduce__(self) -> tuple[Any, tuple[type, tuple, dict]]:
        return _rebuild, (type(self), self.args, self.__dict__)


# --- configs, policies, hashing -------------------------------------------------------------


class ConfigError(PhysPipelineError, ValueError):
    """A stage config value failed validation; names the stage (or node) and the field."""

    def __init__(self, owner: str, field: str, value: Any, reason: str) -> None:
        self.owner, self.field, self.value, self.reason = owner, field, value, reason
        super().__init__(f"{owner}: invalid value for field {field!r}: {value!r} ({reason})")


class UnhashableValueError(PhysPipelineError, TypeError):
    """A value cannot be hashed canonically (so it cannot take part in a cache key); names
    where it was met and, inside a config, the path of its field (``"sub.deep.k"``)."""

    def __init__(self, where: str, value: Any, field: str | None = None) -> None:
        self.where = f"{where} field {field!r}" if field else where
        self.value, self.field = value, field
        super().__init__(
            f"{self.where}: cannot hash a value of type {type(value).__module__}."
            f"{type(value).__qualname__} canonically; use numbers, strings, bytes, arrays, "
            "lists, dicts, dataclasses, pydantic models or values pydantic can serialise"
        )

    def at(self, where: str) -> UnhashableValueError:
        """The same error, naming ``where`` (callers label it only once it is raised)."""
        return UnhashableValueError(where, self.value, self.field)


class UncacheableWarning(UserWarning):
    """A node reads a value that cannot be hashed (a global, or an attribute of its stage), so
    its key cannot cover it: the node is not cached and reruns every time. Names the node and
    the value; declare the value untracked to silence it (see docs/concepts.md)."""


class PolicyError(PhysPipelineError, TypeError):
    """A policy entry is unusable (e.g. unhashable); names the key."""

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key, self.value = key, value
        super().__init__(f"policy key {key!r} = {value!r}: {reason}")


# --- stages and their results ---------------------------------------------------------------


class StageError(PhysPipelineError, RuntimeError):
    """A stage raised while processing; names the node (or pipeline) and stage."""

    def __init__(self, where: str, stage: str, cause: BaseException) -> None:
        self.where, self.stage, self.cause = where, stage, cause
        super().__init__(f"{where}: stage {stage!r} failed: {type(cause).__name__}: {cause}")


class StageOutputError(PhysPipelineError, TypeError):
    """A stage returned something other than a StageResult holding a State."""

    def __init__(self, where: str, stage: str, got: Any, expected: str) -> None:
        self.where, self.stage, self.got = where, stage, got
        super().__init__(
            f"{where}: stage {stage!r} returned {type(got).__name__} ({got!r:.80}); "
            f"expected {expected}"
        )


class MetricError(PhysPipelineError, ValueError):
    """A metric is not a finite-or-infinite real scalar, or its key is not a string; names the
    stage and key."""

    def __init__(self, stage: str, key: Any, value: Any, reason: str) -> None:
        self.stage, self.key, self.value = stage, key, value
        super().__init__(f"stage {stage!r}: metric {key!r} = {value!r:.80}: {reason}")


class MetricKeyCollisionError(PhysPipelineError, ValueError):
    """Two metrics would land under one namespaced key (node ``a`` metric ``b.c`` and node
    ``a.b`` metric ``c`` are both ``a.b.c``); names both sources instead of overwriting."""

    def __init__(self, key: str, first: str, second: str) -> None:
        self.key, self.first, self.second = key, first, second
        super().__init__(
            f"metric key {key!r} comes from both {first} and {second}; rename one of them"
        )


class NotAStateError(PhysPipelineError, TypeError):
    """A value was given where a State is needed (e.g. the initial state of a run)."""

    def __init__(self, where: str, got: Any) -> None:
        self.where, self.got = where, got
        super().__init__(
            f"{where}: expected a State (with .deepcopy() and .hashable_repr()), got "
            f"{type(got).__name__} ({got!r:.80}); wrap plain data in SimpleState(payload=...)"
        )


class StateMutationError(PhysPipelineError, RuntimeError):
    """A stage changed the state it was given (stages must copy before writing)."""

    def __init__(self, node_id: str, stage: str) -> None:
        self.node_id, self.stage = node_id, stage
        super().__init__(
            f"node {node_id!r}: stage {stage!r} mutated its input state; call "
            "state.deepcopy() before writing to it"
        )


class NodeTimeoutError(PhysPipelineError, TimeoutError):
    """A node ran longer than its retry policy's ``timeout_s``: given up on (a worker process or
    Dask task is stopped; a thread, which Python cannot stop, finishes unheard)."""

    def __init__(self, node_id: str, seconds: float) -> None:
        self.node_id, self.seconds = node_id, seconds
        super().__init__(f"node {node_id!r} ran longer than its timeout of {seconds:g} s")


class CorruptedInputError(PhysPipelineError, RuntimeError):
    """A node's input is not what its parent produced: another stage reading the same state
    wrote to it (that stage fails with StateMutationError). This node is not computed from
    it, and nothing it would produce is cached."""

    def __init__(self, node_id: str, parent: str) -> None:
        self.node_id, self.parent = node_id, parent
        super().__init__(
            f"node {node_id!r}: the state of its parent {parent!r} was changed in place by "
            "another stage that reads it (see the StateMutationError of that node); "
            f"{node_id!r} is not run on it"
        )


class MissingRecorderError(PhysPipelineError, ValueError):
    """Artifact recording was asked for without a recorder to write the artifacts."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        super().__init__(
            f"pipeline {pipeline!r}: record_artifacts=True needs a recorder, e.g. "
            "recorder=ArtifactRecorder('artifacts')"
        )


# --- graphs ---------------------------------------------------------------------------------


class DagError(PhysPipelineError, ValueError):
    """The DAG spec is invalid."""


class EmptyDagError(DagError):
    def __init__(self) -> None:
        super().__init__("the DAG has no nodes")


class DuplicateNodeError(DagError):
    def __init__(self, node_ids: Iterable[str]) -> None:
        self.node_ids = sorted(set(node_ids))
        super().__init__(f"Duplicate node ids: {', '.join(map(repr, self.node_ids))}")


class MissingDependencyError(DagError):
    def __init__(self, node_id: str, missing: Iterable[str]) -> None:
        # by text: a dep that cannot be an id (a list) is named among the strings
        self.node_id, self.missing = node_id, sorted(missing, key=str)
        super().__init__(
            f"Missing dependency: node {node_id!r} depends on unknown node(s): "
            f"{', '.join(map(repr, self.missing))}"
        )


class CycleError(DagError):
    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        path = " -> ".join([*cycle, cycle[0]]) if cycle else "?"
        super().__init__(f"Cycle detected in the DAG: {path}")


class MissingStageError(DagError):
    def __init__(self, node_id: str, got: Any) -> None:
        self.node_id = node_id
        super().__init__(
            f"node {node_id!r} has no usable stage (got {got!r:.80}); a stage needs .cfg and "
            ".process(state, *, policy=None)"
        )


class UnknownNodeError(DagError, KeyError):
    def __init__(self, node_id: str, known: Iterable[str]) -> None:
        self.node_id = node_id
        known = sorted(known)
        hint = ", ".join(map(repr, known[:10])) + (" ..." if len(known) > 10 else "")
        super().__init__(f"unknown node id {node_id!r}; known ids: {hint}")

    __str__ = ValueError.__str__


class SweepError(PhysPipelineError, ValueError):
    """A sweep spec is invalid; names the node and the parameter."""


class StaleCodeError(PhysPipelineError, RuntimeError):
    """A worker process would run other code (or other global values) for a node's stage than
    the plan keyed it by: a module edited and reloaded here but already imported there, or a
    module constant changed at run time. Its result would be filed under the wrong key."""

    def __init__(self, node_id: str, stage: str, differing: list[str]) -> None:
        self.node_id, self.stage, self.differing = node_id, stage, differing
        super().__init__(
            f"node {node_id!r}: the worker process has other code or values for stage "
            f"{stage!r} than this run was planned with ({', '.join(differing)}), so its "
            "result would be cached under the wrong key; restart the workers (Dask: "
            "client.restart()) after editing your modules, or reload the module here if you "
            "edited its file"
        )


class CodeChangedDuringRunError(StaleCodeError):
    """A run in the background (a Run button's thread) computed a node while the code or the
    globals it reads changed (a cell ran meanwhile): its result is of neither the planned nor
    the new values' run, so it is not cached; the next run computes it with the new ones."""

    def __init__(self, node_id: str, stage: str, differing: list[str]) -> None:
        self.node_id, self.stage, self.differing = node_id, stage, differing
        RuntimeError.__init__(
            self,
            f"node {node_id!r}: {', '.join(differing)} changed while stage {stage!r} ran, so "
            "its result is not cached; run again to compute it with the new values (if the "
            "stage changes it itself, as a cache of its own, name it in the stage's "
            "`untracked`)",
        )


class NodeFailedError(PhysPipelineError, RuntimeError, ExceptionGroup):
    """One or more nodes failed in a DAG run; completed nodes are cached and kept. An
    ExceptionGroup of the nodes' own exceptions (each noted with its node), so ``except*
    ValueError`` catches a stage's ValueError; ``failures`` maps node id to exception and
    ``partial`` holds the run's result."""

    def __new__(cls, failures: dict[str, BaseException], partial: Any = None) -> NodeFailedError:
        return ExceptionGroup.__new__(cls, _failed_message(failures), list(failures.values()))

    def __init__(self, failures: dict[str, BaseException], partial: Any = None) -> None:
        super().__init__(_failed_message(failures), list(failures.values()))
        self.failures, self.partial = failures, partial

    def derive(self, excs: Sequence[Exception]) -> NodeFailedError:  # type: ignore[override]
        """What ``except*`` leaves (or splits off): a NodeFailedError of just those nodes, so
        an outer ``except NodeFailedError`` still catches it and names only what is left."""
        return NodeFailedError(_failures_of(self.failures, excs), self.partial)

    def __reduce__(self) -> tuple[Any, ...]:
        return NodeFailedError, (self.failures, self.partial)


def _failures_of(
    failures: dict[str, BaseException], excs: Sequence[BaseException]
) -> dict[str, BaseException]:
    """The nodes ``excs`` came from: ``split`` keeps the group's order and passes each node's
    exception on as itself or, when it is a group, as the part of it that matched."""
    left = iter(failures.items())
    kept: dict[str, BaseException] = {}
    for exc in excs:
        for node_id, failure in left:
            if failure is exc or _leaves(exc) <= _leaves(failure):
                kept[node_id] = exc
                break
    return kept


def _leaves(exc: BaseException) -> set[int]:
    if isinstance(exc, BaseExceptionGroup):
        return set().union(*(_leaves(e) for e in exc.exceptions))
    return {id(exc)}


def _failed_message(failures: dict[str, BaseException]) -> str:
    """Each node once, with its error's type and message (the node's note says the rest)."""
    parts = [f"{nid} ({type(exc).__name__}: {exc})" for nid, exc in failures.items()]
    return f"{len(failures)} node(s) failed: " + "; ".join(parts)


# --- caches ---------------------------------------------------------------------------------


class CacheError(PhysPipelineError, RuntimeError):
    """A cache backend is misconfigured or (in strict mode) unavailable."""


class CacheConfigError(CacheError, ValueError):
    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field, self.value = field, value
        super().__init__(f"CacheConfig.{field} = {value!r}: {reason}")


# --- worker processes -----------------------------------------------------------------------


class WorkerDiedError(PhysPipelineError, RuntimeError):
    """The worker process computing a node died (a segfault in a C extension, ``os._exit``, the
    out-of-memory killer): that node fails, the others go on in new workers. ``exitcode`` is
    the process's (negative: the number of the signal that ended it)."""

    def __init__(self, node_id: str, exitcode: int) -> None:
        self.node_id, self.exitcode = node_id, exitcode
        if exitcode < 0:
            try:
                how = f"signal {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"signal {-exitcode}"
        else:
            how = f"exit code {exitcode}"
        super().__init__(f"node {node_id!r}: its worker process died ({how})")


class RemoteStageError(RuntimeError):
    """Stands in for a stage's exception that could not come back from the process it was
    raised in (it holds a lock, or unpickles wrong): names its type (``module.Qualname``) and
    keeps its message and notes. Not a PhysPipelineError: it is the stage's own failure, and
    retried as its original would be: ``lineage`` names the original's classes
    (``module.Qualname``, most derived first), which ``RetryPolicy`` judges by."""

    def __init__(self, type_name: str, message: str, lineage: tuple[str, ...] = ()) -> None:
        self.type_name, self.message = type_name, message
        self.lineage = lineage or (type_name,)
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.type_name, self.message, self.lineage), self.__dict__


# names phys-pipeline 2.0.0 code imports from here (PipelineError, DagCycleError, ...)
__getattr__ = served_from(__name__, "errors")
