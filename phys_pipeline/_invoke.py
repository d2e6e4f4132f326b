"""Calling one stage and checking what it returns: the single place both runners go through."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import numpy as np

from .errors import (
    MetricError,
    MetricKeyCollisionError,
    PhysPipelineError,
    StageOutputError,
)
from .policy import PolicyBag
from .types import DagState, SimpleState, StageResult, State, stage_name

__all__ = [
    "NamespacedKeys",
    "Owner",
    "call_stage",
    "check_metrics",
    "is_state",
    "scalar_metric",
    "where",
]

_CORE_STATES = (SimpleState, DagState)  # checked by exact type first: isinstance on an ABC is slow


def is_state(obj: Any) -> bool:
    return (
        type(obj) in _CORE_STATES
        or isinstance(obj, State)
        or (
            callable(getattr(obj, "deepcopy", None))
            and callable(getattr(obj, "hashable_repr", None))
        )
    )


def _is_real_scalar(value: Any) -> bool:
    if isinstance(value, np.ndarray | np.generic):
        # by dtype: float() would accept np.str_("1.5") and drop a complex value's imaginary part
        if np.ndim(value) != 0:
            return False
        kind = value.dtype.kind
        return kind in "biuf" or (kind == "O" and _is_real_scalar(value.item()))
    return isinstance(value, numbers.Real)


def scalar_metric(stage: str, key: str, value: Any) -> float:
    """``value`` as a Python float, or a MetricError naming the stage and key."""
    if _is_real_scalar(value):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise MetricError(stage, key, value, "not a real scalar") from exc
        if math.isnan(number):
            raise MetricError(stage, key, value, "metric is NaN")
        return number
    raise MetricError(
        stage,
        key,
        value,
        "must be a scalar (metrics are real scalars); put arrays in the state or artifacts",
    )


def _is_mapping(obj: Any) -> bool:
    return type(obj) is dict or isinstance(obj, Mapping)  # the ABC check is slow; dicts are common


def _metric_key(stage: str, key: Any, value: Any) -> str:
    """A str subclass (``np.str_``) as its plain string; any other key is a MetricError, since
    ``str(key)`` would merge metric ``1`` with metric ``"1"``."""
    if isinstance(key, str):
        return str.__str__(key)  # its value: str() of a (str, Enum) member is its name
    raise MetricError(stage, key, value, f"metric keys must be strings, got {type(key).__name__}")


def check_metrics(stage: str, metrics: Any) -> dict[str, float]:
    if not _is_mapping(metrics):
        raise MetricError(stage, "<metrics>", metrics, "metrics must be a dict of scalars")
    checked = {}
    for key, value in metrics.items():
        name = key if type(key) is str else _metric_key(stage, key, value)
        checked[name] = scalar_metric(stage, name, value)
    return checked


_V = TypeVar("_V")


class NamespacedKeys(Generic[_V]):
    """Entries of many sources (nodes, stages) flattened to ``"<prefix><key>"``. Node ``a``
    metric ``b.c`` and node ``a.b`` metric ``c`` would both be ``a.b.c``, so a key that two
    sources share is a MetricKeyCollisionError naming both, never an overwrite."""

    def __init__(self, kind: str, owner: str) -> None:
        self.kind, self.owner = kind, owner  # for messages: "metric", "node" -> node 'a' metric 'k'
        self.entries: dict[str, _V] = {}
        self._sources: list[tuple[str, str, Mapping[str, _V]]] = []  # read only on a collision

    def add(self, source: str, prefix: str, new: Mapping[str, _V]) -> None:
        """Add all of ``new`` (from ``source``, e.g. a node id) under ``prefix``, or (on a
        collision) none of it."""
        entries = {prefix + key: value for key, value in new.items()}
        if not self.entries.keys().isdisjoint(entries):
            raise self._collision(source, prefix, entries)
        self.entries.update(entries)
        self._sources.append((source, prefix, new))

    def _collision(
        self, source: str, prefix: str, entries: dict[str, _V]
    ) -> MetricKeyCollisionError:
        key = next(k for k in entries if k in self.entries)
        first = next(
            self._label(earlier, key[len(start) :])
            for earlier, start, added in self._sources
            if key.startswith(start) and key[len(start) :] in added
        )
        return MetricKeyCollisionError(key, first, self._label(source, key[len(prefix) :]))

    def _label(self, source: str, key: str) -> str:
        return f"{self.owner} {source!r} {self.kind} {key!r}"


Owner = tuple[str, str]
"""Who runs a stage, for messages: ``("node", node_id)`` or ``("pipeline", name)``."""


def where(owner: Owner) -> str:
    """``owner`` as messages name it: ``node 'fit'``, ``pipeline 'bench'``."""
    kind, name = owner
    return f"{kind} {name!r}"


def call_stage(stage: Any, state: Any, policy: PolicyBag | None, owner: Owner) -> StageResult:
    """Run ``stage.process(state, policy=policy)`` and validate the result.

    An exception the stage raises keeps its type (code that catches ``ValueError`` still does)
    and gains a note (PEP 678) naming ``owner`` (the node or pipeline), the stage and its
    config; our own typed errors name the culprit already and pass through unchanged.
    ``owner`` is spelled out only in a message: a node's call is made for every node.
    """
    try:
        result = stage.process(state, policy=policy)
    except PhysPipelineError:
        raise
    except Exception as exc:
        cfg = getattr(stage, "cfg", None)
        exc.add_note(
            f"raised by stage {stage_name(stage)!r} in {where(owner)}, config {cfg!r:.200}"
        )
        raise
    if not isinstance(result, StageResult):
        raise StageOutputError(where(owner), stage_name(stage), result, "a StageResult")
    if not is_state(result.state):
        raise StageOutputError(
            where(owner),
            stage_name(stage),
            result.state,
            "StageResult.state to be a State (deepcopy, hashable_repr)",
        )
    metrics = result.metrics
    no_metrics = type(metrics) is dict and not metrics
    result.metrics = {} if no_metrics else check_metrics(stage_name(stage), metrics)
    artifacts = result.artifacts
    if not _is_mapping(artifacts):
        raise StageOutputError(
            where(owner), stage_name(stage), artifacts, "StageResult.artifacts to be a dict"
        )
    bad_keys = [key for key in artifacts if not isinstance(key, str)] if artifacts else None
    if bad_keys:  # "<node>.<key>" would merge artifact 1 with artifact "1"
        raise StageOutputError(
            where(owner),
            stage_name(stage),
            artifacts,
            f"StageResult.artifacts keys to be strings, not {bad_keys[0]!r}",
        )
    return result
