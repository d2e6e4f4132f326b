"""2.0.0's ``RunAccumulator``: collects stage results under namespaced keys, for runners of
one's own, with the checks our pipelines make (scalar metrics, no two sources on one key)."""

from __future__ import annotations

import uuid
from typing import Any

from .._invoke import NamespacedKeys, check_metrics
from ..errors import MissingRecorderError
from ..types import StageResult

__all__ = ["RunAccumulator"]


class RunAccumulator:
    """``consume(stage, result)`` files a stage's metrics and artifacts as
    ``"<ns>.<stage>.<key>"`` (``ns_stack`` joined by dots) and appends its provenance, named,
    to ``provenance["stages"]``. With ``record_artifacts``, ``recorder`` saves each artifact as
    it comes, and the stage's provenance lists the files."""

    def __init__(
        self,
        record_artifacts: bool = False,
        recorder: Any = None,
        ns_stack: list[str] | None = None,
    ) -> None:
        if record_artifacts and recorder is None:
            raise MissingRecorderError(".".join(ns_stack or []) or "RunAccumulator")
        self.recorder = recorder if record_artifacts else None
        self.namespace = list(ns_stack or [])
        self.run_id = uuid.uuid4().hex[:12]
        self._metrics: NamespacedKeys[float] = NamespacedKeys("metric", "stage")
        self._artifacts: NamespacedKeys[Any] = NamespacedKeys("artifact", "stage")
        self.provenance: dict[str, Any] = {"stages": []}

    @property
    def metrics(self) -> dict[str, float]:
        return self._metrics.entries

    @property
    def artifacts(self) -> dict[str, Any]:
        return self._artifacts.entries

    def consume(self, stage_name: str, res: StageResult) -> None:
        prefix = ".".join([*self.namespace, stage_name] if stage_name else self.namespace)
        start = f"{prefix}." if prefix else ""
        self._metrics.add(stage_name, start, check_metrics(stage_name, res.metrics or {}))
        self._artifacts.add(stage_name, start, res.artifacts or {})
        record = {**(res.provenance or {}), "stage": stage_name}
        if self.recorder is not None and res.artifacts:
            record["artifacts"] = {
                key: [str(path) for path in self._save(prefix, key, artifact)]
                for key, artifact in res.artifacts.items()
            }
        self.provenance["stages"].append(record)

    def _save(self, stage: str, key: str, artifact: Any) -> list[Any]:
        return self.recorder.record(artifact, stage=stage, key=key, run_id=self.run_id)


DEPRECATED = {
    "RunAccumulator": "SequentialPipeline and DagExecutor collect results themselves; a "
    "SequentialPipeline of your stages is the simplest runner of one's own",
}
