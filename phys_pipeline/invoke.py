"""Calling one stage and checking what it returns: the single place both runners go through."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import MetricError, PhysPipelineError, StageError, StageOutputError
from .policy import PolicyBag
from .types import DagState, SimpleState, StageResult, State, stage_name

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
        stage, key, value, "metrics must be real scalars; put arrays in the state or artifacts"
    )


def _is_mapping(obj: Any) -> bool:
    return type(obj) is dict or isinstance(obj, Mapping)  # the ABC check is slow; dicts are common


def check_metrics(stage: str, metrics: Any) -> dict[str, float]:
    if not _is_mapping(metrics):
        raise MetricError(stage, "<metrics>", metrics, "metrics must be a dict of scalars")
    return {str(k): scalar_metric(stage, str(k), v) for k, v in metrics.items()}


def call_stage(stage: Any, state: Any, policy: PolicyBag | None, where: str) -> StageResult:
    """Run ``stage.process(state, policy=policy)`` and validate the result.

    Errors raised by the stage are wrapped in a StageError naming ``where`` (the node id or
    pipeline) and the stage; our own typed errors pass through unchanged.
    """
    try:
        result = stage.process(state, policy=policy)
    except PhysPipelineError:
        raise
    except Exception as exc:
        raise StageError(where, stage_name(stage), exc) from exc
    if not isinstance(result, StageResult):
        raise StageOutputError(where, stage_name(stage), result, "a StageResult")
    if not is_state(result.state):
        raise StageOutputError(
            where,
            stage_name(stage),
            result.state,
            "StageResult.state to be a State (deepcopy, hashable_repr)",
        )
    metrics = result.metrics
    no_metrics = type(metrics) is dict and not metrics
    result.metrics = {} if no_metrics else check_metrics(stage_name(stage), metrics)
    if not _is_mapping(result.artifacts):
        raise StageOutputError(
            where, stage_name(stage), result.artifacts, "StageResult.artifacts to be a dict"
        )
    return result
