"""A small ultrafast-optics DAG for the widget tests: grid -> pulse -> fibre -> duration,
grid -> spectrum. Its configs carry every kind of field a control is made for (bounded,
half-bounded, literal, enum, bool, pattern-checked text, an array no widget edits); the fibre
plots its phase lazily and fails on purpose when ``broken``."""

from __future__ import annotations

import enum
from typing import Literal

import numpy as np
from pydantic import Field

from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult


class GridCfg(StageConfig):
    N: int = Field(256, ge=16, le=4096, description="number of frequency samples")
    span: float = Field(20.0, gt=0, description="frequency half span, rad/ps")
    window: Literal["none", "hann"] = "none"
    centred: bool = True
    weights: np.ndarray = np.ones(3)  # not editable in a widget


class GridStage(PipelineStage[SimpleState, GridCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        st = state.deepcopy()
        st.meta["omega"] = np.linspace(-self.cfg.span, self.cfg.span, self.cfg.N)
        return StageResult(state=st, metrics={"N": self.cfg.N})


class Shape(enum.Enum):
    GAUSSIAN = "gaussian"
    SECH = "sech"


class PulseCfg(StageConfig):
    fwhm_ps: float = Field(1.0, ge=0.05, le=10.0, description="intensity FWHM, ps")
    shape: Shape = Shape.GAUSSIAN
    units: str = Field("ps", pattern=r"^(fs|ps)$", description="time unit label")


class PulseStage(PipelineStage[SimpleState, PulseCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        st = state.deepcopy()
        t0 = self.cfg.fwhm_ps / 1.665
        st.meta["spectrum"] = np.exp(-((st.meta["omega"] * t0) ** 2) / 2)
        return StageResult(state=st, metrics={"t0_ps": t0})


class FibreCfg(StageConfig):
    length_m: float = Field(1.0, ge=0.0, le=100.0)
    beta2_ps2_per_m: float = -0.02
    broken: bool = False


class FibreStage(PipelineStage[SimpleState, FibreCfg]):
    """Applies quadratic spectral phase; plots it lazily; fails on purpose when ``broken``."""

    policy_keys = ("dispersion_scale",)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        if self.cfg.broken:
            raise RuntimeError("fibre snapped")
        scale = float(policy.get("dispersion_scale", 1.0)) if policy else 1.0
        st = state.deepcopy()
        omega = st.meta["omega"]
        st.meta["phase"] = 0.5 * scale * self.cfg.beta2_ps2_per_m * self.cfg.length_m * omega**2
        return StageResult(
            state=st,
            metrics={"gdd_ps2": scale * self.cfg.beta2_ps2_per_m * self.cfg.length_m},
            artifacts={"phase": lambda: phase_figure(omega, st.meta["phase"])},
        )


def phase_figure(omega: np.ndarray, phase: np.ndarray) -> object:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot(omega, phase)
    ax.set_xlabel("omega (rad/ps)")
    return fig


class DurationCfg(StageConfig):
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


class DurationStage(PipelineStage[SimpleState, DurationCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        gdd = float(np.ptp(state.meta["phase"]))
        return StageResult(state=state.deepcopy(), metrics={"phase_span": gdd})


class SpectrumCfg(StageConfig):
    floor_db: float = -40.0


class SpectrumStage(PipelineStage[SimpleState, SpectrumCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=state.deepcopy(), metrics={"bins": len(state.meta["omega"])})


def optics_nodes() -> list[NodeSpec]:
    return [
        NodeSpec("grid", [], GridStage(GridCfg())),
        NodeSpec("pulse", ["grid"], PulseStage(PulseCfg())),
        NodeSpec("fibre", ["pulse"], FibreStage(FibreCfg())),
        NodeSpec("duration", ["fibre"], DurationStage(DurationCfg())),
        NodeSpec("spectrum", ["grid"], SpectrumStage(SpectrumCfg())),
    ]


ALL = {"grid", "pulse", "fibre", "duration", "spectrum"}
