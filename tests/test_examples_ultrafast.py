"""The ultrafast-optics example stages against closed-form theory (fs, nm, mm)."""

from __future__ import annotations

import math
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
from pydantic import ValidationError

from phys_pipeline import SequentialPipeline, SimpleState
from phys_pipeline.examples.ultrafast import (
    DispersiveFibreCfg,
    DispersiveFibreStage,
    FrequencyGridCfg,
    FrequencyGridStage,
    GaussianPulseCfg,
    GaussianPulseStage,
    GratingCompressorCfg,
    GratingCompressorStage,
    PhaseFitCfg,
    PhaseFitStage,
    PulseDurationCfg,
    PulseDurationStage,
    gaussian_broadened_fwhm,
    grating_pair_phase,
    treacy_gdd_fs2,
    treacy_separation_mm,
    treacy_tod_fs3,
)

SILICA_BETA2 = 36.16  # fs^2/mm at 800 nm
SILICA_BETA3 = 27.47  # fs^3/mm at 800 nm
GRATING = {"groove_density_per_mm": 1200.0, "incidence_deg": 30.0}


def launch(fwhm_fs: float, window_fs: float, n_points: int = 4096, chirp: float = 0.0) -> list:
    """Grid at 800 nm plus a Gaussian pulse: the first two stages of every chain here."""
    return [
        FrequencyGridStage(FrequencyGridCfg(n_points=n_points, window_fs=window_fs)),
        GaussianPulseStage(GaussianPulseCfg(fwhm_fs=fwhm_fs, chirp=chirp)),
    ]


def run(stages: list) -> dict[str, float]:
    """Run the chain and return its metrics keyed ``"<stage name>.<metric>"``."""
    out = SequentialPipeline(stages, name="p").run(SimpleState())
    return {key.removeprefix("p."): value for key, value in out.metrics.items()}


def run_state(stages: list) -> SimpleState:
    """Run the chain and return its final state."""
    return SequentialPipeline(stages).run(SimpleState()).state


def test_launched_gaussian_has_requested_fwhm_and_rms() -> None:
    metrics = run([*launch(25.0, 1000.0), PulseDurationStage(PulseDurationCfg())])
    t0 = 25.0 / (2 * math.sqrt(math.log(2)))
    assert metrics["PulseDurationStage.fwhm_fs"] == pytest.approx(25.0, rel=1e-4)
    assert metrics["PulseDurationStage.rms_fs"] == pytest.approx(t0 / math.sqrt(2), rel=1e-6)
    assert metrics["PulseDurationStage.tl_ratio"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("chirp", [0.0, 2.0, -2.0])
@pytest.mark.parametrize("beta2", [SILICA_BETA2, -21.7])
def test_fibre_broadening_matches_gaussian_theory(chirp: float, beta2: float) -> None:
    fibre = DispersiveFibreCfg(length_m=0.01, beta2_fs2_per_mm=beta2, beta3_fs3_per_mm=0.0)
    metrics = run(
        [
            *launch(20.0, 3000.0, chirp=chirp),
            DispersiveFibreStage(fibre),
            PulseDurationStage(PulseDurationCfg()),
        ]
    )
    expected = gaussian_broadened_fwhm(20.0, beta2, 10.0, chirp)
    assert metrics["PulseDurationStage.fwhm_fs"] == pytest.approx(expected, rel=1e-3)


def test_broadening_formula_uses_the_1_over_e_half_width() -> None:
    # one dispersion length L_D = T0^2 / beta2 broadens by sqrt(2), with T0 = FWHM / 1.665
    t0 = 20.0 / (2 * math.sqrt(math.log(2)))
    z_dispersion = t0**2 / SILICA_BETA2
    broadened = gaussian_broadened_fwhm(20.0, SILICA_BETA2, z_dispersion)
    assert broadened == pytest.approx(20.0 * math.sqrt(2), rel=1e-12)


def test_phase_fit_recovers_fibre_gdd_and_tod() -> None:
    fibre = DispersiveFibreCfg(
        length_m=0.02, beta2_fs2_per_mm=SILICA_BETA2, beta3_fs3_per_mm=SILICA_BETA3
    )
    metrics = run(
        [*launch(20.0, 3000.0), DispersiveFibreStage(fibre), PhaseFitStage(PhaseFitCfg(degree=3))]
    )
    assert metrics["PhaseFitStage.gdd_fs2"] == pytest.approx(SILICA_BETA2 * 20.0, rel=1e-6)
    assert metrics["PhaseFitStage.tod_fs3"] == pytest.approx(SILICA_BETA3 * 20.0, rel=1e-6)


def test_treacy_formulas_match_derivatives_of_exact_grating_phase() -> None:
    omega0 = 2 * math.pi * 299.792458 / 800.0
    step = 1e-3  # rad/fs
    omega = omega0 + step * np.array([-1.0, 0.0, 1.0])
    _, delay, _ = grating_pair_phase(omega, separation_mm=5.0, **GRATING)
    gdd = (delay[2] - delay[0]) / (2 * step)
    tod = (delay[2] - 2 * delay[1] + delay[0]) / step**2
    assert gdd == pytest.approx(treacy_gdd_fs2(800.0, separation_mm=5.0, **GRATING), rel=1e-5)
    assert tod == pytest.approx(treacy_tod_fs3(800.0, separation_mm=5.0, **GRATING), rel=1e-5)


def test_grating_compressor_gdd_matches_treacy_and_is_negative() -> None:
    stages = [
        *launch(50.0, 4000.0),
        GratingCompressorStage(GratingCompressorCfg(separation_mm=2.0, **GRATING)),
        PhaseFitStage(PhaseFitCfg(degree=4, threshold=1e-2)),
    ]
    metrics = run(stages)
    expected_gdd = treacy_gdd_fs2(800.0, separation_mm=2.0, **GRATING)
    expected_tod = treacy_tod_fs3(800.0, separation_mm=2.0, **GRATING)
    assert expected_gdd < 0 < expected_tod
    assert metrics["GratingCompressorStage.gdd_fs2"] == expected_gdd
    assert metrics["PhaseFitStage.gdd_fs2"] == pytest.approx(expected_gdd, rel=1e-2)
    assert metrics["PhaseFitStage.tod_fs3"] == pytest.approx(expected_tod, rel=1e-2)
    assert metrics["GratingCompressorStage.clipped_energy_fraction"] < 1e-12


def test_matched_grating_pair_recompresses_stretched_pulse() -> None:
    fibre = DispersiveFibreCfg(
        length_m=0.5, beta2_fs2_per_mm=SILICA_BETA2, beta3_fs3_per_mm=SILICA_BETA3
    )
    separation = treacy_separation_mm(-SILICA_BETA2 * 500.0, 800.0, **GRATING)
    stages = [
        *launch(100.0, 5000.0, n_points=8192),
        DispersiveFibreStage(fibre),
        PulseDurationStage(PulseDurationCfg(name="stretched")),
        GratingCompressorStage(GratingCompressorCfg(separation_mm=separation, **GRATING)),
        PulseDurationStage(PulseDurationCfg(name="compressed")),
    ]
    metrics = run(stages)
    assert metrics["GratingCompressorStage.gdd_fs2"] == pytest.approx(-SILICA_BETA2 * 500.0)
    assert metrics["stretched.tl_ratio"] > 4.0
    # residual fibre + grating TOD is what keeps it from exactly 1
    assert metrics["compressed.tl_ratio"] < 1.02
    assert metrics["compressed.peak_ratio"] > 0.98
    assert metrics["compressed.tl_fwhm_fs"] == pytest.approx(100.0, rel=1e-3)


def test_phase_fit_refuses_a_pulse_wrapped_around_the_window() -> None:
    stages = [
        *launch(20.0, 2000.0),
        GratingCompressorStage(GratingCompressorCfg(separation_mm=10.0, **GRATING)),
        PhaseFitStage(PhaseFitCfg()),
    ]
    with pytest.raises(ValueError, match="time window"):
        run(stages)


def test_grating_rejects_an_evanescent_first_order() -> None:
    cfg = GratingCompressorCfg(groove_density_per_mm=3000.0, incidence_deg=0.0)
    with pytest.raises(ValueError, match="does not propagate"):
        run([*launch(30.0, 1000.0), GratingCompressorStage(cfg)])


@pytest.mark.parametrize(
    ("cfg_class", "field", "value"),
    [
        (FrequencyGridCfg, "n_points", 1000),
        (FrequencyGridCfg, "centre_wavelength_nm", 50.0),
        (GaussianPulseCfg, "fwhm_fs", -5.0),
        (DispersiveFibreCfg, "length_m", -1.0),
        (GratingCompressorCfg, "incidence_deg", 90.0),
        (GratingCompressorCfg, "passes", 3),
        (PhaseFitCfg, "degree", 5),
    ],
)
def test_bad_config_value_names_its_field(cfg_class: type, field: str, value: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        cfg_class(**{field: value})
    assert [error["loc"] for error in excinfo.value.errors()] == [(field,)]


def test_stages_leave_their_input_state_untouched() -> None:
    state = run_state([*launch(20.0, 1000.0)])
    before = state.deepcopy()
    DispersiveFibreStage(DispersiveFibreCfg()).process(state)
    GratingCompressorStage(GratingCompressorCfg(separation_mm=0.1)).process(state)
    assert state == before


def test_artifacts_are_lazy_matplotlib_figures() -> None:
    from matplotlib.figure import Figure

    stages = [
        *launch(20.0, 1000.0),
        DispersiveFibreStage(DispersiveFibreCfg()),
        PhaseFitStage(PhaseFitCfg()),
        PulseDurationStage(PulseDurationCfg()),
    ]
    artifacts = SequentialPipeline(stages, name="p").run(SimpleState()).artifact_values
    assert set(artifacts) == {"p.PhaseFitStage.phase", "p.PulseDurationStage.intensity"}
    for make_figure in artifacts.values():
        assert isinstance(make_figure(), Figure)
