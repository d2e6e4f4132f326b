"""Split-step NLSE example stages against soliton theory (ps, km, W)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
from pydantic import ValidationError

from phys_pipeline import SequentialPipeline, SimpleState
from phys_pipeline.examples.soliton import (
    SechPulseCfg,
    SechPulseStage,
    SplitStepNLSECfg,
    SplitStepNLSEStage,
    soliton_peak_power_W,
    soliton_period_km,
)
from phys_pipeline.pipeline import PipelineResult

BETA2 = -20.0  # ps^2/km
GAMMA = 1.3  # 1/(W km)


def propagate(order: float = 1.0, **nlse: float | int | str) -> PipelineResult:
    """Launch an order-``order`` soliton of the (BETA2, GAMMA) fibre and propagate it."""
    launch = SechPulseCfg(soliton_order=order, beta2_ps2_per_km=BETA2, gamma_per_W_km=GAMMA)
    settings = {"beta2_ps2_per_km": BETA2, "gamma_per_W_km": GAMMA, **nlse}
    stages = [SechPulseStage(launch), SplitStepNLSEStage(SplitStepNLSECfg(**settings))]
    out = SequentialPipeline(stages, name="s").run(SimpleState())
    out.metrics = {key.removeprefix("s."): value for key, value in out.metrics.items()}
    return out


def test_launch_sets_soliton_power_and_period() -> None:
    metrics = propagate(order=1.0, length=0.1, steps=1).metrics
    assert metrics["SechPulseStage.peak_power_W"] == pytest.approx(abs(BETA2) / GAMMA)
    assert metrics["SechPulseStage.soliton_period_km"] == pytest.approx(math.pi / 2 / abs(BETA2))
    # N = 1 means the dispersion and nonlinear lengths are equal
    assert metrics["SechPulseStage.nonlinear_length_km"] == pytest.approx(
        metrics["SechPulseStage.dispersion_length_km"]
    )


def test_fundamental_soliton_keeps_its_shape() -> None:
    metrics = propagate(order=1.0, length=5.0, steps=1000).metrics
    assert metrics["SplitStepNLSEStage.shape_error"] < 1e-4
    assert metrics["SplitStepNLSEStage.fwhm_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["SplitStepNLSEStage.energy_error"] < 1e-10


def test_same_pulse_without_nonlinearity_broadens() -> None:
    metrics = propagate(order=1.0, length=1.0, steps=200, gamma_per_W_km=0.0).metrics
    assert metrics["SplitStepNLSEStage.fwhm_ratio"] > 1.5
    assert metrics["SplitStepNLSEStage.shape_error"] > 0.1
    # an unchirped pulse's RMS width grows as sqrt(1 + (beta2 z sigma_w / sigma_t)^2); for sech
    # that is sqrt(1 + (2 z / (pi L_D))^2) = sqrt(2) at one soliton period z0 = pi L_D / 2
    assert metrics["SplitStepNLSEStage.rms_ratio"] == pytest.approx(math.sqrt(2), rel=1e-6)
    assert metrics["SplitStepNLSEStage.energy_error"] < 1e-10


def test_second_order_soliton_matches_satsuma_yajima_at_half_period() -> None:
    # u(xi, tau) = 4 (cosh 3tau + 3 e^{4 i xi} cosh tau) e^{i xi / 2} /
    #              (cosh 4tau + 4 cosh 2tau + 3 cos 4xi),   xi = z / L_D, tau = t / T0
    out = propagate(order=2.0, length=0.5, steps=500)
    t0 = out.state.meta["t0_ps"]
    xi = out.metrics["SplitStepNLSEStage.length_km"] / out.state.meta["dispersion_length_km"]
    tau = out.state.meta["t"] / t0
    u = (
        4
        * (np.cosh(3 * tau) + 3 * np.exp(4j * xi) * np.cosh(tau))
        / (np.cosh(4 * tau) + 4 * np.cosh(2 * tau) + 3 * np.cos(4 * xi))
    )
    expected = soliton_peak_power_W(1.0, BETA2, GAMMA, t0) * np.abs(u) ** 2
    measured = np.abs(out.state.meta["A_t"]) ** 2
    assert np.linalg.norm(measured - expected) / np.linalg.norm(expected) < 1e-2
    assert out.metrics["SplitStepNLSEStage.peak_power_ratio"] == pytest.approx(4.0, rel=1e-2)


def test_second_order_soliton_recovers_after_one_period() -> None:
    metrics = propagate(order=2.0, length=1.0, steps=500).metrics
    assert metrics["SplitStepNLSEStage.shape_error"] < 1e-2


def test_split_step_error_falls_as_step_squared() -> None:
    coarse = propagate(length=1.0, steps=50).metrics["SplitStepNLSEStage.shape_error"]
    fine = propagate(length=1.0, steps=100).metrics["SplitStepNLSEStage.shape_error"]
    assert coarse / fine == pytest.approx(4.0, rel=0.1)


def test_length_in_km_equals_length_in_soliton_periods() -> None:
    z0 = soliton_period_km(BETA2, 1.0)
    in_periods = propagate(length=0.5, steps=100)
    in_km = propagate(length=0.5 * z0, length_unit="km", steps=100)
    assert in_km.metrics["SplitStepNLSEStage.length_km"] == pytest.approx(0.5 * z0)
    np.testing.assert_allclose(in_km.state.meta["A_t"], in_periods.state.meta["A_t"], atol=1e-12)


def test_snapshots_span_the_fibre() -> None:
    out = propagate(length=1.0, steps=100, n_snapshots=11)
    z_km, intensity_zt = out.state.meta["z_km"], out.state.meta["intensity_zt"]
    assert z_km.shape == (11,)
    assert intensity_zt.shape == (11, out.state.meta["t"].size)
    assert z_km[-1] == pytest.approx(out.metrics["SplitStepNLSEStage.length_km"])


@pytest.mark.parametrize(
    ("cfg_class", "field", "value"),
    [
        (SechPulseCfg, "beta2_ps2_per_km", 5.0),  # normal dispersion has no bright soliton
        (SechPulseCfg, "gamma_per_W_km", 0.0),
        (SechPulseCfg, "n_points", 1000),
        (SplitStepNLSECfg, "steps", 0),
        (SplitStepNLSECfg, "length_unit", "m"),
    ],
)
def test_bad_config_value_names_its_field(cfg_class: type, field: str, value: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        cfg_class(**{field: value})
    assert [error["loc"] for error in excinfo.value.errors()] == [(field,)]


def test_evolution_artifact_is_a_figure() -> None:
    from matplotlib.figure import Figure

    out = propagate(length=1.0, steps=20, n_snapshots=5)
    assert isinstance(out.artifact_values["s.SplitStepNLSEStage.evolution"](), Figure)
