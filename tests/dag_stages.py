"""Small physics-flavoured stages shared by the DAG, executor, sweep and session tests."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import (
    DagState,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)


class GridCfg(StageConfig):
    N: int = Field(64, ge=4, le=1 << 16, description="number of grid points")
    span: float = Field(1.0, gt=0.0, description="half width of the grid")


class GridStage(PipelineStage[SimpleState, GridCfg]):
    """A frequency grid."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        st = state.deepcopy()
        st.meta["omega"] = np.linspace(-self.cfg.span, self.cfg.span, self.cfg.N)
        return StageResult(state=st, metrics={"N": self.cfg.N})


class PhaseCfg(StageConfig):
    gdd: float = Field(0.0, ge=-1e4, le=1e4, description="group-delay dispersion, fs^2")
    window: Literal["none", "hann"] = "none"


class PhaseStage(PipelineStage[SimpleState, PhaseCfg]):
    """Applies a quadratic spectral phase; reads the policy key ``phase.scale``."""

    policy_keys = ("phase.scale",)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        scale = float(policy.get("phase.scale", 1.0)) if policy else 1.0
        st = state.deepcopy()
        w = st.meta["omega"]
        st.meta["phase"] = scale * 0.5 * self.cfg.gdd * w**2
        return StageResult(state=st, metrics={"max_phase": float(np.abs(st.meta["phase"]).max())})


class SumCfg(StageConfig):
    weight: float = 1.0


class SumStage(PipelineStage[DagState, SumCfg]):
    """Merges parents: the weighted sum of their phases' peak values. Reads no policy."""

    policy_keys = ()

    def process(self, state: DagState, *, policy: PolicyBag | None = None) -> StageResult:
        total = sum(float(np.abs(s.meta["phase"]).max()) for s in state.inputs.values())
        return StageResult(
            state=SimpleState(
                payload=total * self.cfg.weight, meta={"parents": list(state.inputs)}
            ),
            metrics={"total": total * self.cfg.weight},
        )


class FailCfg(StageConfig):
    message: str = "boom"


class FailStage(PipelineStage[SimpleState, FailCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        raise RuntimeError(self.cfg.message)


def diamond() -> list[NodeSpec]:
    """grid -> (p1, p2) -> merge, plus an independent branch grid -> solo."""
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(name="grid"))),
        NodeSpec(id="p1", deps=["grid"], stage=PhaseStage(PhaseCfg(name="p1", gdd=10.0))),
        NodeSpec(id="p2", deps=["grid"], stage=PhaseStage(PhaseCfg(name="p2", gdd=-20.0))),
        NodeSpec(id="merge", deps=["p1", "p2"], stage=SumStage(SumCfg(name="merge"))),
        NodeSpec(id="solo", deps=["grid"], stage=PhaseStage(PhaseCfg(name="solo", gdd=1.0))),
    ]


def with_stage(nodes: list[NodeSpec], node_id: str, stage: object) -> list[NodeSpec]:
    return [n.replace(stage=stage) if n.id == node_id else n for n in nodes]
