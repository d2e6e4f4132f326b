"""2.0.0's pipeline-as-stage wrapper. Our pipelines are stages already; the wrapper runs one
under another name and takes its config and version from it, so that a DAG node holding the
wrapper goes stale whenever an inner stage (its config or code) changes."""

from __future__ import annotations

from typing import Generic

from ..pipeline import PipelineConfig, SequentialPipeline
from ..policy import PolicyBag
from ..types import PipelineStage, S, StageResult

__all__ = ["PipelineStageWrapper"]


class PipelineStageWrapper(PipelineStage[S, PipelineConfig], Generic[S]):
    """``pipeline`` as one stage named ``name``: its metrics come back as
    ``"<pipeline>.<stage>.<key>"``, and the outer runner puts ``name`` in front."""

    def __init__(self, name: str, pipeline: SequentialPipeline[S]) -> None:
        self.name, self.pipeline = name, pipeline

    @property  # type: ignore[override]
    def cfg(self) -> PipelineConfig:
        """The pipeline's (derived afresh, see ``SequentialPipeline.cfg``) under ``name``."""
        return self.pipeline.cfg.model_copy(update={"name": self.name})

    @property  # type: ignore[override]
    def version(self) -> str:
        return self.pipeline.version

    def process(self, state: S, *, policy: PolicyBag | None = None) -> StageResult[S]:
        out = self.pipeline.run(state, policy=policy)
        return StageResult(out.state, out.metrics, out.artifact_values, out.provenance)


DEPRECATED = {
    "PipelineStageWrapper": "a SequentialPipeline is a stage itself: put it in the outer "
    "pipeline (or a NodeSpec) as it is",
}
