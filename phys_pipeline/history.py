"""Run history: one record per run of a session, as plain data a panel, a table or a JSON file
can hold, and what is needed to put the session back as it was for any of them.

A :class:`RunRecord` says when a run started and how long it took, what changed since the run
before (:class:`Change`: node, field, old and new value), what each node did and why
(:class:`NodeRecord`), the metrics, and the setup: every node's config values, stage class and
code version, the policy and the initial state's digest. :class:`RunHistory` is the list of
them, with ``to_frame()`` (pandas) and JSON ``save``/``load``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import operator
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import numpy as np
from pydantic_core import to_jsonable_python

from ._edit import raw_values, replace_config
from .errors import ConfigError, PolicyError
from .hashing import config_hash, hexdigest
from .policy import PolicyBag
from .record import atomic_write
from .types import NodeStatus

if TYPE_CHECKING:
    import pandas as pd

    from .executor import DagRunResult

__all__ = [
    "Change",
    "ChangeKind",
    "NodeRecord",
    "RunHistory",
    "RunRecord",
]


class ChangeKind(enum.StrEnum):
    """What a :class:`Change` is about."""

    CONFIG = "config"  # a field of a node's config
    STAGE = "stage"  # the node holds a stage of another class
    CODE = "code"  # the stage's code, or a value its code reads
    POLICY = "policy"  # a policy entry (added: old is None; removed: new is None)
    STATE = "state"  # the initial state (old and new are digests)


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a run's setup and the run's before it. ``node_id`` is None for
    the policy and the state; ``field`` is the config field or policy key ("" otherwise);
    ``old`` and ``new`` are plain data (None: absent)."""

    kind: ChangeKind
    node_id: str | None
    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        if self.kind is ChangeKind.CONFIG:
            return f"{self.node_id}.{self.field}: {self.old!r} -> {self.new!r}"
        if self.kind is ChangeKind.POLICY:
            return f"policy {self.field}: {self.old!r} -> {self.new!r}"
        if self.kind is ChangeKind.STAGE:
            return f"{self.node_id} stage: {self.old} -> {self.new}"
        if self.kind is ChangeKind.CODE:
            return f"{self.node_id} code changed"
        return "initial state changed"


class NodeRecord(NamedTuple):
    """One node in one run: its setup (config values as plain data, an array of more than 64
    elements by dtype, shape and digest; stage class, code version, key, and the config's hash,
    which tells a restore whether it gave back this very config) and what the run did with it.
    ``status`` is None for a node the run did not cover (``run(targets=...)``). (A named
    tuple: immutable, and a session records one per node of every run.)"""

    config: dict[str, Any]
    stage: str
    code_version: str
    cache_key: str
    status: NodeStatus | None
    reason: str = ""
    duration_s: float = 0.0
    error: str | None = None
    attempts: int = 1
    config_hash: str = ""  # "": a history saved before it was recorded


@dataclass(frozen=True, slots=True)
class _Originals:
    """The configs and policy objects a run used, kept in the process that ran it, so that a
    restore gives back exactly them (a loaded history has their plain data only), and the
    objects each config's fields held then (``fields``), which tell the next record whether
    a config is as it was."""

    configs: dict[str, Any]
    policy: PolicyBag | None
    fields: dict[str, tuple[Any, ...]]

    def unchanged(self, node_id: str, cfg: Any, fields: tuple[Any, ...]) -> bool:
        """Whether ``cfg`` is the config object ``node_id`` ran with, its fields holding the
        very objects they held then: with an equal hash too, its values are those recorded.
        An equal hash alone is not enough: it cannot tell -0.0 from 0.0, whether held by
        another config or set in place since."""
        held = self.fields.get(node_id)
        return (
            self.configs.get(node_id) is cfg
            and held is not None
            and len(held) == len(fields)
            and all(map(operator.is_, held, fields))
        )


@dataclass(frozen=True)
class RunRecord:
    """One run of a session: ``number`` counts from 1, ``started`` is a Unix time,
    ``changes`` are relative to the run before, ``nodes`` hold each node's setup and outcome
    in plan order, ``metrics`` are the run's (``"<node>.<key>"``), ``policy`` is the policy's
    entries as plain data (None: no policy)."""

    number: int
    run_id: str
    started: float
    duration_s: float
    changes: tuple[Change, ...]
    nodes: dict[str, NodeRecord]
    metrics: dict[str, Any]
    policy: dict[str, Any] | None
    policy_hash: str
    state_digest: str
    originals: _Originals | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of_run(
        cls, number: int, result: DagRunResult, started: float, before: RunRecord | None
    ) -> RunRecord:
        """The record of a finished run; ``before`` is the previous record (None: first)."""
        plan = result.plan
        planned_nodes, specs, runs = plan.nodes, plan.specs, result.runs
        nodes, configs, fields = {}, {}, {}
        earlier = before.nodes if before is not None else {}
        kept = before.originals if before is not None else None
        for nid in plan.order:  # a session records every node of every run: one pass
            planned = planned_nodes[nid]
            cfg = configs[nid] = specs[nid].stage.cfg
            held = fields[nid] = _held(cfg)
            same = earlier.get(nid)
            if (
                same is not None
                and same.config_hash == planned.config_hash
                and kept is not None
                and kept.unchanged(nid, cfg, held)
            ):
                config = same.config  # the very values, unchanged: shared data
            else:
                config = {name: _plain(value) for name, value in _config_values(cfg).items()}
            run = runs.get(nid)
            nodes[nid] = NodeRecord(
                config,
                planned.stage_type,
                planned.code_version,
                planned.key,
                None if run is None else run.status,
                "" if run is None else run.reason,
                0.0 if run is None else run.duration_s,
                None if run is None else run.error,
                1 if run is None else run.attempts,
                planned.config_hash,
            )
        bag = plan.policy
        policy = None if bag is None else {k: _plain(v) for k, v in bag.items()}
        setup = {"nodes": nodes, "policy": policy, "state_digest": plan.state_digest.hex()}
        return cls(
            number=number,
            run_id=result.provenance["run_id"],
            started=started,
            duration_s=result.provenance["duration_s"],
            changes=() if before is None else _changes(before, **setup),
            # floats (as runs check them) are plain data as they are
            metrics={k: v if type(v) is float else _plain(v) for k, v in result.metrics.items()},
            policy_hash=result.provenance["policy_hash"],
            originals=_Originals(configs, bag, fields),
            **setup,
        )

    def _with(self, status: NodeStatus) -> list[str]:
        return [nid for nid, node in self.nodes.items() if node.status is status]

    @property
    def ran(self) -> list[str]:
        return self._with(NodeStatus.RAN)

    @property
    def hits(self) -> list[str]:
        return self._with(NodeStatus.HIT)

    @property
    def failed(self) -> list[str]:
        return self._with(NodeStatus.FAILED)

    @property
    def skipped(self) -> list[str]:
        return self._with(NodeStatus.SKIPPED)

    @property
    def cancelled(self) -> list[str]:
        return self._with(NodeStatus.CANCELLED)

    @property
    def reasons(self) -> dict[str, str]:
        """Why each node the run covered ran, hit, failed, was skipped or cancelled."""
        return {nid: n.reason for nid, n in self.nodes.items() if n.status is not None}

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per node the run covered (a hit's: loading it)."""
        return {nid: n.duration_s for nid, n in self.nodes.items() if n.status is not None}

    @property
    def parameters(self) -> dict[str, Any]:
        """Every config value, keyed ``"<node>.<field>"`` (the columns of ``to_frame``)."""
        return {f"{nid}.{k}": v for nid, n in self.nodes.items() for k, v in n.config.items()}

    def config_for(self, node_id: str, current: Any) -> Any:
        """``node_id``'s config as it was in this run, for a node whose config is ``current``
        now: the very object, when this process ran it and its class is still ``current``'s;
        else ``current`` with the recorded values that differ validated in. What would not be
        this run's config is refused with a ConfigError naming node, field and value: the run's
        object written to in place since, a value validated into another (a converting
        validator), an array recorded by its summary only, values plain data does not keep
        exactly (checked against the config's hash)."""
        record, where = self.nodes[node_id], f"node {node_id!r}"
        original = self.originals.configs.get(node_id) if self.originals is not None else None
        if original is not None and type(original) is type(current):
            self._check_config(record, original, where, "was written to in place since")
            return original
        now = _config_values(current)
        changes = {}
        for name, value in record.config.items():
            if name in now and _same_plain(_plain(now[name]), value):
                continue
            if _is_summary(value):
                raise ConfigError(
                    where, name, value, f"run {self.number} kept this array by its summary only"
                )
            changes[name] = value
        cfg = replace_config(current, changes, where) if changes else current
        self._check_config(record, cfg, where, "cannot be given back from the history's data")
        return cfg

    def _check_config(self, record: NodeRecord, cfg: Any, where: str, why: str) -> None:
        """A ConfigError unless ``cfg`` is the config ``record`` saw: every field as recorded
        and, with the same fields, the same hash (histories saved before hashes were
        recorded are checked field by field only)."""
        values = _config_values(cfg)
        differ = [
            name
            for name, value in record.config.items()
            if name in values and not _same_plain(_plain(values[name]), value)
        ]
        if not differ and (
            not record.config_hash
            or values.keys() != record.config.keys()
            or config_hash(cfg) == record.config_hash
        ):
            return
        names = differ or list(record.config)
        raise ConfigError(
            where,
            ", ".join(names),
            {name: record.config[name] for name in names},
            f"the config run {self.number} used {why} (restored, it would be "
            f"{ {name: values.get(name) for name in names}!r}); set it by hand",
        )

    def changes_since(self, other: RunRecord) -> tuple[Change, ...]:
        """What differs between ``other``'s setup and this run's (``old``: ``other``'s), as
        ``changes`` says for the run before: to compare any two runs."""
        return _changes(other, self.nodes, self.policy, self.state_digest)

    def policy_bag(self) -> PolicyBag | None:
        """The policy of this run: the very bag when this process ran it, else one made from
        the recorded plain data, which must hash as the run's did: a PolicyError names the
        keys whose values plain data may not give back (an enum kept as its value, a tuple as
        a list, an array or an object by a summary) when it does not."""
        if self.originals is not None:
            return self.originals.policy
        if self.policy is None:
            return None
        bag = PolicyBag(self.policy)
        if bag.hash() != self.policy_hash:
            suspects = [k for k, v in self.policy.items() if isinstance(v, str | list | dict)]
            keys = suspects or list(self.policy)
            raise PolicyError(
                ", ".join(keys),
                {k: self.policy[k] for k in keys},
                f"the history's plain data does not give back run {self.number}'s policy; "
                "set it by hand",
            )
        return bag

    def to_data(self) -> dict[str, Any]:
        """The record as plain data (what ``RunHistory.save`` writes)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        data["changes"] = [dataclasses.asdict(c) for c in self.changes]
        data["nodes"] = {nid: n._asdict() for nid, n in self.nodes.items()}
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> RunRecord:
        nodes = {
            nid: NodeRecord(
                **{**n, "status": None if n["status"] is None else NodeStatus(n["status"])}
            )
            for nid, n in data["nodes"].items()
        }
        changes = tuple(Change(**{**c, "kind": ChangeKind(c["kind"])}) for c in data["changes"])
        return cls(**{**data, "nodes": nodes, "changes": changes})


class RunHistory(Sequence[RunRecord]):
    """The records of a session's runs, oldest first: ``history[-1]`` is the last run,
    ``history.run(number)`` finds one by its number. A session appends to it; assign a loaded
    one (``session.history = RunHistory.load(path)``) to continue it."""

    FORMAT = "phys-pipeline run history"
    VERSION = 1

    def __init__(self, records: Iterable[RunRecord] = ()) -> None:
        self._records = list(records)

    @overload
    def __getitem__(self, index: int) -> RunRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[RunRecord]: ...
    def __getitem__(self, index: int | slice) -> RunRecord | list[RunRecord]:
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self._records)

    def __repr__(self) -> str:
        numbers = [r.number for r in self._records]
        span = f"runs {numbers[0]}..{numbers[-1]}" if numbers else "no runs"
        return f"RunHistory({span})"

    def run(self, number: int) -> RunRecord:
        """The record of run ``number``; a KeyError names the numbers there are."""
        for record in self._records:
            if record.number == number:
                return record
        known = ", ".join(str(r.number) for r in self._records) or "none"
        raise KeyError(f"no run {number!r} in this history; runs: {known}")

    def add(self, result: DagRunResult, started: float) -> RunRecord:
        """Append the record of a finished run (numbered after the last one)."""
        before = self._records[-1] if self._records else None
        number = before.number + 1 if before is not None else 1
        record = RunRecord.of_run(number, result, started, before)
        self._records.append(record)
        if before is not None and before.originals is not None:
            # only the last record's are compared (by the next run's): a session of many
            # runs need not keep a tuple per node of each, for the garbage collector to walk
            before.originals.fields.clear()
        return record

    def to_frame(self) -> pd.DataFrame:
        """One row per run (index ``run``): ``started``, ``duration_s``, a ``"<node>.<field>"``
        column per config value, then a column per metric (``"metric.<key>"`` where a
        metric's key is a parameter's column too). Needs pandas."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "RunHistory.to_frame needs pandas: pip install pandas (or read the records, "
                "e.g. record.parameters and record.metrics)"
            ) from exc
        params = list(dict.fromkeys(k for r in self._records for k in r.parameters))
        taken = set(params)
        metrics = {
            k: f"metric.{k}" if k in taken else k
            for k in dict.fromkeys(k for r in self._records for k in r.metrics)
        }
        rows = [
            {
                "run": r.number,
                "started": r.started,
                "duration_s": r.duration_s,
                **r.parameters,
                **{metrics[k]: v for k, v in r.metrics.items()},
            }
            for r in self._records
        ]
        columns = ["run", "started", "duration_s", *params, *metrics.values()]
        frame = pd.DataFrame(rows, columns=columns).set_index("run")
        frame["started"] = pd.to_datetime(frame["started"], unit="s", utc=True)
        return frame

    def to_data(self) -> dict[str, Any]:
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "runs": [r.to_data() for r in self._records],
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any], where: str = "history") -> RunHistory:
        """The history ``to_data`` gave; a ValueError says when ``data`` is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: not a {cls.FORMAT} (a JSON {type(data).__name__})")
        if data.get("format") != cls.FORMAT:
            raise ValueError(f"{where}: not a {cls.FORMAT} (format {data.get('format')!r})")
        if data.get("version") != cls.VERSION:
            raise ValueError(
                f"{where}: {cls.FORMAT} version {data.get('version')!r}; this phys-pipeline "
                f"reads version {cls.VERSION}"
            )
        return cls(RunRecord.from_data(r) for r in data["runs"])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the history as JSON (plain data: no pickles), all at once."""
        path = Path(path)
        atomic_write(path, json.dumps(self.to_data(), indent=1).encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunHistory:
        """A history ``save`` wrote. Its records hold plain data only: restoring one
        validates its values through the configs' models."""
        path = Path(path)
        return cls.from_data(json.loads(path.read_text(encoding="utf-8")), str(path))


def _config_values(cfg: Any) -> dict[str, Any]:
    """A config's field values as they are (pydantic, dataclass or mapping configs)."""
    if hasattr(type(cfg), "model_fields"):
        return raw_values(cfg)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return dict(cfg) if isinstance(cfg, Mapping) else {}


def _held(cfg: Any) -> tuple[Any, ...]:
    """The objects a config's fields hold, cheaply (an object's own attributes and a pydantic
    model's extra fields): what ``_Originals.unchanged`` compares."""
    own = getattr(cfg, "__dict__", None)
    if own is None:  # a mapping, or a config with slots
        return tuple(_config_values(cfg).values())
    return (*own.values(), *(getattr(cfg, "__pydantic_extra__", None) or {}).values())


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data: as pydantic serialises it, small arrays as lists, larger
    ones by a summary, anything else by its repr (a record is data to read and compare, never
    to unpickle)."""
    return to_jsonable_python(value, fallback=_unserialisable)


_LISTED_ELEMENTS = 64  # a record holds arrays up to this size; larger ones would swell it
_SUMMARY = re.compile(r"<ndarray \S+ \(.*\) [0-9a-f]{16}>")


def _unserialisable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.size <= _LISTED_ELEMENTS:
            return value.tolist()
        return f"<ndarray {value.dtype} {value.shape} {hexdigest(value, 'array')[:16]}>"
    return repr(value)


def _is_summary(value: Any) -> bool:
    """Whether a recorded value is an array's summary (what ``_unserialisable`` gives)."""
    return isinstance(value, str) and _SUMMARY.fullmatch(value) is not None


def _same_plain(a: Any, b: Any) -> bool:
    """Plain values equal as JSON writes them: 1 and 1.0, or 1 and True, differ (a key tells
    them apart), two NaNs do not."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _changes(
    before: RunRecord,
    nodes: dict[str, NodeRecord],
    policy: dict[str, Any] | None,
    state_digest: str,
) -> tuple[Change, ...]:
    """What differs between ``before`` and a run set up with ``nodes``, ``policy`` and the
    state of ``state_digest``: config fields, stage classes, code, policy entries, state."""
    changes = []
    for nid, node in nodes.items():
        old = before.nodes.get(nid)
        if old is None:
            continue
        if old.stage != node.stage:
            changes.append(Change(ChangeKind.STAGE, nid, "", old.stage, node.stage))
        elif old.code_version != node.code_version:
            changes.append(Change(ChangeKind.CODE, nid, "", old.code_version, node.code_version))
        if old.config is not node.config:  # else an unchanged node's, shared by both records
            changes += _differences(ChangeKind.CONFIG, nid, old.config, node.config)
    changes += _differences(ChangeKind.POLICY, None, before.policy or {}, policy or {})
    if before.state_digest != state_digest:
        changes.append(Change(ChangeKind.STATE, None, "", before.state_digest, state_digest))
    return tuple(changes)


def _differences(
    kind: ChangeKind, node_id: str | None, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[Change]:
    """The entries that differ as plain data (0.0 and -0.0 do, two NaNs do not)."""
    return [
        Change(kind, node_id, name, old.get(name), new.get(name))
        for name in dict.fromkeys([*new, *old])
        if name not in old
        or name not in new
        or (old[name] is not new[name] and not _same_plain(old[name], new[name]))
    ]
