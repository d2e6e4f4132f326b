"""Optical solitons: a sech launch and split-step Fourier propagation of the NLSE.

Units: time in ps, distance in km, power in W (so the field A is in sqrt(W) and energies in pJ),
beta2 in ps^2/km, beta3 in ps^3/km, gamma in 1/(W km). The envelope obeys (Agrawal, lossless)::

    dA/dz = -i beta2/2 d^2A/dT^2 + beta3/6 d^3A/dT^3 + i gamma |A|^2 A

in the frame moving with the pulse. With beta2 < 0 the launch A = N sqrt(P1) sech(T / T0),
P1 = |beta2| / (gamma T0^2), is a soliton of order N; N = 1 keeps its shape for ever.

``state.meta`` keys: ``t`` (ps, centred), ``omega`` (rad/ps, ascending), ``A_t`` (sqrt(W)),
``t0_ps``, ``peak_power_W``, ``dispersion_length_km``, ``soliton_period_km`` -- written by
:class:`SechPulseStage`; :class:`SplitStepNLSEStage` rewrites ``A_t`` and adds ``z_km`` and
``intensity_zt`` (|A|^2 snapshots along the fibre).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..policy import PolicyBag
from ..types import PipelineStage, SimpleState, StageConfig, StageResult
from ._signal import (
    GridSize,
    angular_frequency_grid,
    centred_time_grid,
    fwhm,
    require_meta,
    rms_width,
)

__all__ = [
    "SECH_FWHM_PER_T0",
    "SechPulseCfg",
    "SechPulseStage",
    "SplitStepNLSECfg",
    "SplitStepNLSEStage",
    "soliton_peak_power_W",
    "soliton_period_km",
]

SECH_FWHM_PER_T0 = 2.0 * math.log(1.0 + math.sqrt(2.0))
"""Intensity FWHM of sech^2(t / T0) in units of T0 (about 1.763)."""


def soliton_peak_power_W(order: float, beta2: float, gamma: float, t0_ps: float) -> float:
    """Peak power (W) of an order-N soliton: N^2 = gamma P0 T0^2 / |beta2| = L_D / L_NL."""
    return order**2 * abs(beta2) / (gamma * t0_ps**2)


def soliton_period_km(beta2: float, t0_ps: float) -> float:
    """Soliton period z0 = (pi / 2) L_D with L_D = T0^2 / |beta2| (km)."""
    return 0.5 * math.pi * t0_ps**2 / abs(beta2)


class SechPulseCfg(StageConfig):
    t0_ps: float = Field(
        1.0,
        ge=0.01,
        le=100.0,
        description="sech half-width T0 (ps); intensity FWHM = 1.763 T0",
        json_schema_extra={"unit": "ps"},
    )
    soliton_order: float = Field(
        1.0, gt=0.0, le=10.0, description="soliton order N = sqrt(gamma P0 T0^2 / |beta2|)"
    )
    beta2_ps2_per_km: float = Field(
        -20.0,
        ge=-200.0,
        lt=0.0,
        description="anomalous GVD of the fibre the launch is matched to (ps^2/km); SMF: -21.7",
        json_schema_extra={"unit": "ps²/km"},
    )
    gamma_per_W_km: float = Field(
        1.3,
        gt=0.0,
        le=1000.0,
        description="nonlinear coefficient of that fibre (1/(W km))",
        json_schema_extra={"unit": "1/(W km)"},
    )
    n_points: GridSize = Field(1024, description="number of FFT samples (a power of two)")
    window_t0: float = Field(
        40.0,
        ge=10.0,
        le=1000.0,
        description="total time window in units of T0",
        json_schema_extra={"unit": "T0"},
    )


class SechPulseStage(PipelineStage[SimpleState, SechPulseCfg]):
    """Lays out the grid and launches A = sqrt(P0) sech(t / T0) with P0 set by the order N.

    P0 = N^2 |beta2| / (gamma T0^2), so N = 1 is the fundamental soliton of the given fibre.
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        cfg = self.cfg
        t = centred_time_grid(cfg.n_points, cfg.window_t0 * cfg.t0_ps)
        p0 = soliton_peak_power_W(
            cfg.soliton_order, cfg.beta2_ps2_per_km, cfg.gamma_per_W_km, cfg.t0_ps
        )
        dispersion_length = cfg.t0_ps**2 / abs(cfg.beta2_ps2_per_km)
        field_t = np.sqrt(p0) / np.cosh(t / cfg.t0_ps) + 0j
        st = state.deepcopy()
        st.meta.update(
            t=t,
            omega=angular_frequency_grid(cfg.n_points, float(t[1] - t[0])),
            A_t=field_t,
            t0_ps=float(cfg.t0_ps),
            peak_power_W=p0,
            dispersion_length_km=dispersion_length,
            soliton_period_km=soliton_period_km(cfg.beta2_ps2_per_km, cfg.t0_ps),
        )
        metrics = {
            "peak_power_W": p0,
            "energy_pJ": 2.0 * p0 * cfg.t0_ps,  # Int P0 sech^2(t/T0) dt
            "dispersion_length_km": dispersion_length,
            "nonlinear_length_km": 1.0 / (cfg.gamma_per_W_km * p0),
            "soliton_period_km": st.meta["soliton_period_km"],
        }
        return StageResult(state=st, metrics=metrics)


class SplitStepNLSECfg(StageConfig):
    beta2_ps2_per_km: float = Field(
        -20.0,
        ge=-200.0,
        le=200.0,
        description="group-velocity dispersion (ps^2/km); negative (anomalous) supports solitons",
        json_schema_extra={"unit": "ps²/km"},
    )
    beta3_ps3_per_km: float = Field(
        0.0,
        ge=-10.0,
        le=10.0,
        description="third-order dispersion (ps^3/km); SMF: about 0.1",
        json_schema_extra={"unit": "ps³/km"},
    )
    gamma_per_W_km: float = Field(
        1.3,
        ge=0.0,
        le=1000.0,
        description="nonlinear coefficient (1/(W km)); 0 = linear fibre",
        json_schema_extra={"unit": "1/(W km)"},
    )
    length: float = Field(
        1.0, gt=0.0, le=1000.0, description="fibre length, in the unit chosen by length_unit"
    )
    length_unit: Literal["soliton_period", "km"] = Field(
        "soliton_period", description="soliton periods of the launched pulse, or km"
    )
    steps: int = Field(
        1000, ge=1, le=100_000, description="split-step count; the error falls as 1/steps^2"
    )
    n_snapshots: int = Field(
        64, ge=2, le=1000, description="|A|^2 profiles stored along z for the evolution plot"
    )


class SplitStepNLSEStage(PipelineStage[SimpleState, SplitStepNLSECfg]):
    """Symmetric (Strang) split-step Fourier solution of the NLSE, second order in the step h.

    Each step applies half the dispersion exp(i (beta2/2 w^2 + beta3/6 w^3) h/2) in the
    frequency domain, the full nonlinear phase exp(i gamma |A|^2 h) in time, then the other
    half. Both factors have unit modulus, so energy is conserved to round-off; ``shape_error``
    = ||(|A_out|^2 - |A_in|^2)|| / |||A_in|^2|| measures how far the pulse left its input shape.
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        meta = state.meta
        needed = ("t", "A_t", "soliton_period_km") if self._in_periods else ("t", "A_t")
        require_meta(meta, *needed, stage="SplitStepNLSEStage")
        cfg = self.cfg
        length_km = cfg.length * (meta["soliton_period_km"] if self._in_periods else 1.0)
        t, field_in = meta["t"], meta["A_t"]
        h = length_km / cfg.steps
        omega = 2.0 * np.pi * np.fft.fftfreq(t.size, float(t[1] - t[0]))  # FFT order
        half_dispersion = np.exp(
            0.5j * h * (cfg.beta2_ps2_per_km / 2 * omega**2 + cfg.beta3_ps3_per_km / 6 * omega**3)
        )
        snapshot_steps = {round(s) for s in np.linspace(0, cfg.steps, cfg.n_snapshots)}
        snapshots, z_km = [np.abs(field_in) ** 2], [0.0]
        field = np.asarray(field_in, dtype=complex)
        for step in range(1, cfg.steps + 1):
            # E~ = ifft(E) is the +i w t transform of the physics convention (see ._signal)
            field = np.fft.fft(half_dispersion * np.fft.ifft(field))
            field = field * np.exp(1j * cfg.gamma_per_W_km * h * np.abs(field) ** 2)
            field = np.fft.fft(half_dispersion * np.fft.ifft(field))
            if step in snapshot_steps:
                snapshots.append(np.abs(field) ** 2)
                z_km.append(step * h)
        intensity_in, intensity_out = np.abs(field_in) ** 2, np.abs(field) ** 2
        energy_in, energy_out = float(np.sum(intensity_in)), float(np.sum(intensity_out))
        fwhm_in, fwhm_out = fwhm(t, intensity_in), fwhm(t, intensity_out)
        st = state.deepcopy()
        st.meta.update(A_t=field, z_km=np.array(z_km), intensity_zt=np.array(snapshots))
        metrics = {
            "length_km": length_km,
            "shape_error": float(
                np.linalg.norm(intensity_out - intensity_in) / np.linalg.norm(intensity_in)
            ),
            "energy_error": abs(energy_out - energy_in) / energy_in,
            "fwhm_ps": fwhm_out,
            "fwhm_ratio": fwhm_out / fwhm_in if fwhm_in > 0 else math.inf,
            "rms_ratio": rms_width(t, intensity_out) / rms_width(t, intensity_in),
            "peak_power_ratio": float(intensity_out.max() / intensity_in.max()),
        }
        plot = _evolution_plot(t, st.meta["z_km"], st.meta["intensity_zt"], fwhm_in)
        return StageResult(state=st, metrics=metrics, artifacts={"evolution": plot})

    @property
    def _in_periods(self) -> bool:
        return self.cfg.length_unit == "soliton_period"


def _evolution_plot(
    t: np.ndarray, z_km: np.ndarray, intensity_zt: np.ndarray, fwhm_in: float
) -> Callable[[], Any]:
    def plot() -> Any:
        from matplotlib.figure import Figure

        span = 6.0 * max(fwhm_in, fwhm(t, intensity_zt[-1]))
        keep = np.abs(t) <= span
        fig = Figure(figsize=(9, 3.5), layout="constrained")
        fig.get_layout_engine().set(wspace=0.12)  # the colour bar's label clear of the profile's
        ax_map, ax_profile = fig.subplots(1, 2)
        mesh = ax_map.pcolormesh(t[keep], z_km, intensity_zt[:, keep], shading="auto", cmap="magma")
        fig.colorbar(mesh, ax=ax_map, label=r"$|A|^2$ (W)")
        ax_map.set_xlabel("time (ps)")
        ax_map.set_ylabel("z (km)")
        ax_profile.plot(t[keep], intensity_zt[0, keep], "--", color="0.5", label="input")
        ax_profile.plot(t[keep], intensity_zt[-1, keep], color="C0", label="output")
        ax_profile.set_xlabel("time (ps)")
        ax_profile.set_ylabel(r"$|A|^2$ (W)")
        ax_profile.legend(loc="upper right", fontsize="small")
        return fig

    return plot
