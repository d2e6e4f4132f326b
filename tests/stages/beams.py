"""A Gaussian beam and the amplifiers after it, for the tests of results Dask workers file:
the field is a large array (so whether a state travelled shows), an amplifier multiplies the
power by its gain, and a ``tag`` changes a node's key but never its output (early cutoff)."""

from __future__ import annotations

import numpy as np

from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import PipelineStage, SimpleState, StageConfig, StageResult


class BeamCfg(StageConfig):
    n: int = 2048
    width: float = 0.1
    tag: str = ""


class GaussianBeam(PipelineStage[SimpleState, BeamCfg]):
    """Root: a Gaussian beam profile on n points."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        x = np.linspace(-1.0, 1.0, self.cfg.n)
        field = np.exp(-((x / self.cfg.width) ** 2))
        return StageResult(SimpleState(field), metrics={"power": float(np.sum(field**2))})


class GainCfg(StageConfig):
    gain: float = 2.0
    tag: str = ""


class Amplifier(PipelineStage[SimpleState, GainCfg]):
    """Multiplies the field by sqrt(gain): the power by gain."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        field = state.payload * np.sqrt(self.cfg.gain)
        return StageResult(SimpleState(field), metrics={"power": float(np.sum(field**2))})
