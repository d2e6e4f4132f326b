"""A stage that writes to the frequency grid it was given, and peak finders that read that same
grid, for the tests that no result computed from a corrupted grid stays cached (locally and on
Dask workers). Writing in place is what read-only arrays cannot stop: the mutation check fails
the culprit with StateMutationError once it returns; the true grid's peak is 1.0, the
scribbled one's 99.0."""

from __future__ import annotations

import time

import numpy as np
from dag_stages import GridCfg, GridStage

from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult


class DelayCfg(StageConfig):
    delay_s: float


class Scribbler(PipelineStage[SimpleState, StageConfig]):
    """Replaces its input grid (8 points) in place."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        state.meta["omega"] = np.full(8, 99.0)
        return StageResult(state=state.deepcopy())


class SlowScribbler(Scribbler):
    """Replaces its input grid in place at once, then computes for ``delay_s``: the mutation
    check can only tell once it returns."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        result = super().process(state, policy=policy)
        time.sleep(self.cfg.delay_s)
        return result


class Peak(PipelineStage[SimpleState, StageConfig]):
    """The largest frequency of the grid it reads: what a corrupted grid changes."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        peak = float(np.max(state.meta["omega"]))
        return StageResult(SimpleState(peak), metrics={"peak": peak})


class LatePeak(Peak):
    """A peak finder that reads its grid ``delay_s`` after it starts."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        time.sleep(self.cfg.delay_s)
        return super().process(state, policy=policy)


def culprit_and_peak(culprit: PipelineStage, peak: PipelineStage) -> list[NodeSpec]:
    """A grid of 8 points read by ``culprit`` and, beside it, by ``peak``."""
    return [
        NodeSpec("grid", stage=GridStage(GridCfg(N=8))),
        NodeSpec("culprit", ["grid"], culprit),
        NodeSpec("peak", ["grid"], peak),
    ]
