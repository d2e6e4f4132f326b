"""SequentialPipeline: stages run one after another; itself usable as a stage."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic

import numpy as np

from ._invoke import NamespacedKeys, call_stage, is_state, where
from ._v2 import served_from
from ._v2.keys import RenamedKeys
from .errors import MissingRecorderError, NotAStateError, UnhashableValueError
from .fingerprint import code_version
from .hashing import config_hash, hexdigest
from .policy import EMPTY_POLICY_HASH, PolicyBag, PolicyLike, as_policy
from .record import ArtifactRecorder, resolve_artifact
from .types import S, StageConfig, StageResult, name_of, stage_name

__all__ = [
    "PipelineConfig",
    "PipelineResult",
    "SequentialPipeline",
]

_SHOWN_WHOLE = 2048  # arrays of up to this many values are shown as they are (2.0.0's limit)
_HEAD = 16  # how many of an array's first values a preview shows


def _array_preview(array: np.ndarray) -> dict[str, Any]:
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "head": np.asarray(array.flat[:_HEAD]).tolist(),  # flat: never a copy of all of it
    }


def _preview(value: Any) -> Any:
    """How a pipeline result shows an artifact it did not record (see PipelineResult)."""
    if isinstance(value, np.ndarray):
        return value if value.size <= _SHOWN_WHOLE else _array_preview(value)
    if isinstance(value, bool | int | float | str | dict):
        return value
    return str(type(value))


def _recorded_preview(value: Any, paths: list[Any]) -> dict[str, Any]:
    """How a pipeline result shows an artifact it recorded: a figure as its PNG file, an array
    as its preview, anything else as its type (the files are in the provenance)."""
    png = next((path for path in paths if path.suffix == ".png"), None)
    if png is not None:
        return {"figure": str(png)}
    if isinstance(value, np.ndarray):
        return {"preview": _array_preview(value)}
    return {"preview": str(type(value))}


def _record_artifacts(
    record: dict[str, Any],
    stage: str,
    new: dict[str, Any],
    recorder: ArtifactRecorder,
    run_id: str,
    cfg_hash: str,
) -> dict[str, dict[str, Any]]:
    """Save a stage's artifacts with ``recorder``, list the files in the stage's provenance
    ``record``, and return how the result shows each, under its key in the result."""
    shown = {}
    for key, artifact in new.items():
        value = resolve_artifact(artifact)
        paths = recorder.record(value, stage=stage, key=key, run_id=run_id, config_hash=cfg_hash)
        record.setdefault("artifacts", {})[key] = [str(p) for p in paths]
        shown[f"{stage}.{key}"] = _recorded_preview(value, paths)
    return shown


@dataclass
class PipelineResult(StageResult[S]):
    """What ``SequentialPipeline.run`` gives. ``artifacts`` show each artifact as phys-pipeline
    2.0.0 did: when recorded, a figure as ``{"figure": <its PNG>}`` and anything else as
    ``{"preview": ...}`` (an array's dtype, shape and first 16 values, else its type); when not,
    an array of over 2048 values as that preview, a smaller one, a number, text or a dict as it
    is, anything else (a lazy artifact: not called) as its type. ``artifact_values`` holds what
    the stages returned, under the same keys."""

    artifact_values: dict[str, Any] = field(default_factory=dict)


class _StageRecord(RenamedKeys):
    """A stage's provenance record, which also answers what 2.0.0 called its keys."""

    __slots__ = ()
    _where = "SequentialPipeline stage record"
    _renamed = MappingProxyType(
        {"stage": "name", "cfg_hash": "config_hash", "wall_time_s": "duration_s"}
    )


class PipelineConfig(StageConfig):
    """What a pipeline node's cache key sees of the pipeline: each inner stage's qualified class
    and config hash (nested pipelines fold in their own), and the pipeline's own policy."""

    stages: tuple[tuple[str, str], ...] = ()
    policy_hash: str = EMPTY_POLICY_HASH


def _stage_version(stage: Any, memo: dict[type, str]) -> str:
    """A stage's pinned ``version`` (nested pipelines: their combined one), else its code
    version; ``memo`` holds code versions per class for one run or one key."""
    version = getattr(stage, "version", None)
    if isinstance(version, str) and version:
        return version
    cls = type(stage)
    known = memo.get(cls)
    if known is None:
        known = memo[cls] = code_version(cls)
    return known


class SequentialPipeline(Generic[S]):
    """Run ``stages`` in order, each receiving the previous stage's state.

    The caller's state goes to the first stage as is (stages copy before writing). Metrics come
    back as ``"<pipeline>.<stage>.<key>"``; two stages landing on one key (same name, or stage
    ``a`` metric ``b.c`` and stage ``a.b`` metric ``c``) is a MetricKeyCollisionError naming
    both. Timings and hashes go to provenance, never metrics.
    A pipeline has ``cfg`` and ``process``, so it can be a stage of another pipeline or a DAG node.
    """

    def __init__(
        self,
        stages: Sequence[Any],
        name: str | None = None,
        *,
        policy: PolicyLike = None,
    ) -> None:
        self.stages = stages
        self.name = name or "pipeline"
        self._policy = as_policy(policy)

    @property
    def cfg(self) -> PipelineConfig:
        """Derived afresh from the inner stages (they may be replaced or edited), so a DAG
        node holding this pipeline goes stale ("config field stages changed") when any of them
        does."""
        stages = []
        for stage in self.stages:
            cls = type(stage)
            try:
                cfg_hash = config_hash(getattr(stage, "cfg", None))
            except UnhashableValueError as exc:
                # the field path starts at this pipeline's config: "<stage>.<field>"
                field = ".".join(filter(None, (stage_name(stage), exc.field)))
                raise UnhashableValueError(
                    f"pipeline {self.name!r} config", exc.value, field
                ) from None
            stages.append((f"{cls.__module__}.{cls.__qualname__}", cfg_hash))
        policy_hash = self._policy.hash() if self._policy is not None else EMPTY_POLICY_HASH
        return PipelineConfig(name=self.name, stages=tuple(stages), policy_hash=policy_hash)

    @property
    def version(self) -> str:
        """The inner stages' code versions combined, so a DAG node holding this pipeline goes
        stale, naming the method or helper that changed, when any of their code does."""
        memo: dict[type, str] = {}
        return hexdigest([_stage_version(stage, memo) for stage in self.stages], self.name)

    def set_policy(self, policy: PolicyLike) -> None:
        """Use ``policy`` for later runs that are not given one."""
        self._policy = as_policy(policy)

    @property
    def policy(self) -> PolicyBag | None:
        return self._policy

    @policy.setter
    def policy(self, policy: PolicyLike) -> None:
        self.set_policy(policy)

    def run(
        self,
        state: S,
        *,
        policy: PolicyLike = None,
        record_artifacts: bool = False,
        recorder: ArtifactRecorder | None = None,
    ) -> PipelineResult[S]:
        bag = as_policy(policy) if policy is not None else self._policy
        policy_hash = bag.hash() if bag is not None else EMPTY_POLICY_HASH
        v2_values = {"policy_hash": policy_hash}  # what 2.0.0's stage records also held
        run_id = uuid.uuid4().hex[:12]
        stage_records: list[dict[str, Any]] = []
        if not is_state(state):
            raise NotAStateError(f"pipeline {self.name!r}", state)
        if record_artifacts and recorder is None:
            raise MissingRecorderError(self.name)
        if not record_artifacts:
            recorder = None
        owner = ("pipeline", self.name)
        metrics: NamespacedKeys[float] = NamespacedKeys("metric", f"{where(owner)} stage")
        artifacts: NamespacedKeys[Any] = NamespacedKeys("artifact", f"{where(owner)} stage")
        recorded: dict[str, Any] = {}  # how the recorded artifacts are shown, by key
        prefix = f"{self.name}."
        code_versions: dict[type, str] = {}  # per run: a notebook may redefine code between runs
        perf_counter = time.perf_counter
        started = perf_counter()
        for stage in self.stages:
            cfg = getattr(stage, "cfg", None)  # the config it runs with, read once
            name = name_of(cfg, type(stage))
            t0 = perf_counter()
            result = call_stage(stage, state, bag, owner)
            duration = perf_counter() - t0
            try:
                cfg_hash = config_hash(cfg)
            except UnhashableValueError as exc:
                raise exc.at(f"stage {name!r} config") from None
            if result.metrics:
                metrics.add(name, f"{prefix}{name}.", result.metrics)
            version = _stage_version(stage, code_versions)
            record = _StageRecord()
            record["name"] = name
            record["class"] = type(stage).__qualname__
            record["config_hash"] = cfg_hash
            record["version"] = version
            record["duration_s"] = duration
            record._values = v2_values
            if result.provenance:
                record["provenance"] = result.provenance
            if result.artifacts:
                artifacts.add(name, f"{prefix}{name}.", result.artifacts)
                if recorder is not None:
                    shown = _record_artifacts(
                        record, f"{prefix}{name}", result.artifacts, recorder, run_id, cfg_hash
                    )
                    recorded.update(shown)
            stage_records.append(record)
            state = result.state
        provenance = {
            "pipeline": self.name,
            "run_id": run_id,
            "policy_hash": policy_hash,
            "stages": stage_records,
            "duration_s": time.perf_counter() - started,
        }
        values = artifacts.entries
        if recorder is None:
            recorded = {key: _preview(value) for key, value in values.items()}
        return PipelineResult(
            state=state,
            metrics=metrics.entries,
            artifacts=recorded,
            provenance=provenance,
            artifact_values=values,
        )

    def process(self, state: S, *, policy: PolicyBag | None = None) -> StageResult[S]:
        """Stage protocol: a pipeline nested in a pipeline or DAG runs with the outer policy.

        Metric and artifact keys come back as ``"<stage>.<key>"``; the outer runner adds this
        pipeline's name. Artifacts are the stages' own values, for the outer runner to show.
        """
        result = self.run(state, policy=policy)
        prefix = len(self.name) + 1
        return StageResult(
            state=result.state,
            metrics={key[prefix:]: value for key, value in result.metrics.items()},
            artifacts={key[prefix:]: value for key, value in result.artifact_values.items()},
            provenance=result.provenance,
        )

    def __repr__(self) -> str:
        names = ", ".join(stage_name(s) for s in self.stages)
        return f"SequentialPipeline(name={self.name!r}, stages=[{names}])"


# names phys-pipeline 2.0.0 code imports from here (PipelineStageWrapper)
__getattr__ = served_from(__name__, "pipeline")
