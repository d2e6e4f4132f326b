"""Linear ultrafast optics as pipeline stages: grid -> pulse -> fibre -> compressor -> diagnostics.

Units: time in fs, angular frequency in rad/fs, wavelength in nm, fibre length in m, dispersion
per length in fs^2/mm and fs^3/mm (numerically equal to ps^2/km and 1e-3 ps^3/km), grating
separations in mm. The field is a complex envelope normalised to unit peak |E|^2 at launch.

Stages share these ``state.meta`` keys:

- ``t`` (fs, centred), ``omega`` (rad/fs, ascending, relative to the carrier), ``omega0``
  (rad/fs), ``dt_fs``, ``centre_wavelength_nm`` -- written by :class:`FrequencyGridStage`;
- ``E_t`` (envelope on ``t``) and ``E_w`` (spectrum on ``omega``) -- written by the pulse stage
  and rewritten by every stage that changes the pulse.

Sign convention (see :mod:`._signal`): a spectral phase phi(omega) delays frequency omega by
dphi/domega, so GDD = phi'' > 0 is normal dispersion (red before blue) and grating pairs give
GDD < 0.
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
    edge_energy_fraction,
    field_from_spectrum,
    fwhm,
    require_meta,
    rms_width,
    spectrum_from_field,
)

__all__ = [
    "C_NM_PER_FS",
    "FWHM_PER_T0",
    "DispersiveFibreCfg",
    "DispersiveFibreStage",
    "FrequencyGridCfg",
    "FrequencyGridStage",
    "GaussianPulseCfg",
    "GaussianPulseStage",
    "GratingCompressorCfg",
    "GratingCompressorStage",
    "PhaseFitCfg",
    "PhaseFitStage",
    "PulseDurationCfg",
    "PulseDurationStage",
    "diffraction_angle_deg",
    "gaussian_broadened_fwhm",
    "grating_pair_phase",
    "treacy_gdd_fs2",
    "treacy_separation_mm",
    "treacy_tod_fs3",
]

C_NM_PER_FS = 299.792458
"""Speed of light in nm/fs."""

FWHM_PER_T0 = 2.0 * math.sqrt(math.log(2.0))
"""Intensity FWHM of exp(-t^2 / T0^2) in units of its 1/e half-width T0 (about 1.665)."""


# --- pure physics -----------------------------------------------------------------------------


def gaussian_broadened_fwhm(T0_fwhm: float, beta2: float, z: float, chirp: float = 0.0) -> float:
    """Intensity FWHM of a Gaussian pulse after linear dispersion ``beta2 * z``.

    With T0 = T0_fwhm / (2 sqrt(ln 2)) the 1/e intensity half-width and L_D = T0^2 / |beta2|,
    T(z) / T0 = sqrt((1 + C beta2 z / T0^2)^2 + (beta2 z / T0^2)^2) (Agrawal eq. 3.2.19), which is
    sqrt(1 + (z / L_D)^2) for an unchirped pulse (C = 0). Any consistent units: T0_fwhm in fs and
    beta2 * z in fs^2 (e.g. beta2 in fs^2/mm and z in mm).
    """
    t0 = T0_fwhm / FWHM_PER_T0
    xi = beta2 * z / t0**2
    return T0_fwhm * math.sqrt((1.0 + chirp * xi) ** 2 + xi**2)


def diffraction_angle_deg(
    wavelength_nm: float, groove_density_per_mm: float, incidence_deg: float, order: int = 1
) -> float:
    """Diffraction angle theta_d (deg) from the grating equation sin theta_d = m lambda / d - sin
    theta_i; a ValueError if the order is evanescent (|sin theta_d| >= 1)."""
    sin_d = order * wavelength_nm * groove_density_per_mm * 1e-6 - math.sin(
        math.radians(incidence_deg)
    )
    if abs(sin_d) >= 1.0:
        raise ValueError(
            f"grating order {order} does not propagate at {wavelength_nm:.6g} nm with "
            f"groove_density_per_mm={groove_density_per_mm} and incidence_deg={incidence_deg}"
        )
    return math.degrees(math.asin(sin_d))


def _cos_diffraction(
    wavelength_nm: float, groove_density_per_mm: float, incidence_deg: float, order: int
) -> float:
    theta_d = diffraction_angle_deg(wavelength_nm, groove_density_per_mm, incidence_deg, order)
    return math.cos(math.radians(theta_d))


def treacy_gdd_fs2(
    wavelength_nm: float,
    groove_density_per_mm: float,
    incidence_deg: float,
    separation_mm: float,
    passes: int = 2,
    order: int = 1,
) -> float:
    """Treacy's group-delay dispersion of a parallel grating pair, in fs^2.

    GDD = -passes * m^2 lambda^3 G / (2 pi c^2 d^2 cos^3 theta_d), with G the perpendicular
    separation, d the groove period and sin theta_d = m lambda / d - sin theta_i. Always
    negative: grating pairs compress normally-dispersed (up-chirped) pulses.
    """
    cos_d = _cos_diffraction(wavelength_nm, groove_density_per_mm, incidence_deg, order)
    d_nm = 1e6 / groove_density_per_mm
    g_nm = separation_mm * 1e6
    return (
        -passes
        * order**2
        * wavelength_nm**3
        * g_nm
        / (2.0 * math.pi * C_NM_PER_FS**2 * d_nm**2 * cos_d**3)
    )


def treacy_tod_fs3(
    wavelength_nm: float,
    groove_density_per_mm: float,
    incidence_deg: float,
    separation_mm: float,
    passes: int = 2,
    order: int = 1,
) -> float:
    """Treacy's third-order dispersion of a grating pair, in fs^3.

    TOD = -(3 lambda / (2 pi c)) GDD (1 + (m lambda / d) sin theta_i - sin^2 theta_i) / cos^2
    theta_d: positive, and it adds to a fibre's positive TOD, which limits recompression.
    """
    gdd = treacy_gdd_fs2(
        wavelength_nm, groove_density_per_mm, incidence_deg, separation_mm, passes, order
    )
    cos_d = _cos_diffraction(wavelength_nm, groove_density_per_mm, incidence_deg, order)
    sin_i = math.sin(math.radians(incidence_deg))
    m_lambda_over_d = order * wavelength_nm * groove_density_per_mm * 1e-6
    ratio = (1.0 + m_lambda_over_d * sin_i - sin_i**2) / cos_d**2
    return -3.0 * wavelength_nm / (2.0 * math.pi * C_NM_PER_FS) * gdd * ratio


def treacy_separation_mm(
    target_gdd_fs2: float,
    wavelength_nm: float,
    groove_density_per_mm: float,
    incidence_deg: float,
    passes: int = 2,
) -> float:
    """The grating separation (mm) whose Treacy GDD equals ``target_gdd_fs2`` (< 0).

    GDD is linear in the separation, so this is target / GDD(1 mm); pass minus a fibre's
    beta2 * L to build the matched compressor.
    """
    if target_gdd_fs2 >= 0.0:
        raise ValueError(f"a grating pair only gives negative GDD, got target {target_gdd_fs2}")
    per_mm = treacy_gdd_fs2(wavelength_nm, groove_density_per_mm, incidence_deg, 1.0, passes)
    return target_gdd_fs2 / per_mm


def grating_pair_phase(
    omega_abs: np.ndarray,
    groove_density_per_mm: float,
    incidence_deg: float,
    separation_mm: float,
    passes: int = 2,
    order: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact spectral phase (rad) and group delay (fs) of a grating pair, and where it transmits.

    Between the gratings the beam keeps the tangential wavenumber k_x = k sin theta_i - 2 pi m / d,
    so each pass adds G k_y = G sqrt(k^2 - k_x^2) (k = omega / c), with group delay
    G (k - k_x sin theta_i) / (c k_y). Differentiating twice more gives Treacy's GDD; evaluating
    the full square root keeps every higher order too. Frequencies whose order is evanescent
    (k_x^2 >= k^2) get phase and delay 0 and ``False`` in the returned mask.
    """
    sin_i = math.sin(math.radians(incidence_deg))
    k = np.asarray(omega_abs, dtype=float) / C_NM_PER_FS
    k_x = k * sin_i - 2.0 * math.pi * order * groove_density_per_mm * 1e-6
    k_y_sq = k**2 - k_x**2
    transmits = (k > 0.0) & (k_y_sq > 0.0)
    k_y = np.sqrt(np.where(transmits, k_y_sq, 1.0))
    length_nm = passes * separation_mm * 1e6
    phase = np.where(transmits, length_nm * k_y, 0.0)
    delay = np.where(transmits, length_nm * (k - k_x * sin_i) / (C_NM_PER_FS * k_y), 0.0)
    return phase, delay, transmits


# --- stages -----------------------------------------------------------------------------------


class FrequencyGridCfg(StageConfig):
    n_points: GridSize = Field(4096, description="number of FFT samples (a power of two)")
    window_fs: float = Field(
        2000.0,
        ge=10.0,
        le=1e6,
        description="total time window (fs); the pulse and its dispersed wings must fit inside",
        json_schema_extra={"unit": "fs"},
    )
    centre_wavelength_nm: float = Field(
        800.0,
        ge=200.0,
        le=5000.0,
        description="carrier (centre) wavelength (nm)",
        json_schema_extra={"unit": "nm"},
    )


class FrequencyGridStage(PipelineStage[SimpleState, FrequencyGridCfg]):
    """Lays out the time and frequency grids every later stage works on.

    dt = window / N and the angular-frequency step is 2 pi / window; ``omega`` is relative to
    the carrier omega0 = 2 pi c / lambda0, so the absolute frequency is omega0 + omega.
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        cfg = self.cfg
        dt = cfg.window_fs / cfg.n_points
        omega = angular_frequency_grid(cfg.n_points, dt)
        omega0 = 2.0 * math.pi * C_NM_PER_FS / cfg.centre_wavelength_nm
        st = state.deepcopy()
        st.meta.update(
            t=centred_time_grid(cfg.n_points, cfg.window_fs),
            omega=omega,
            omega0=omega0,
            dt_fs=dt,
            centre_wavelength_nm=float(cfg.centre_wavelength_nm),
        )
        metrics = {
            "dt_fs": dt,
            "omega0_rad_per_fs": omega0,
            "omega_span_rad_per_fs": float(omega[-1] - omega[0]),
        }
        return StageResult(state=st, metrics=metrics)


class GaussianPulseCfg(StageConfig):
    fwhm_fs: float = Field(
        30.0,
        ge=1.0,
        le=10000.0,
        description="intensity FWHM duration of the launched pulse (fs)",
        json_schema_extra={"unit": "fs"},
    )
    chirp: float = Field(
        0.0,
        ge=-20.0,
        le=20.0,
        description="linear chirp C in E = exp(-(1 + iC) t^2 / (2 T0^2)); 0 = transform-limited",
    )


class GaussianPulseStage(PipelineStage[SimpleState, GaussianPulseCfg]):
    """A (chirped) Gaussian envelope E(t) = exp(-(1 + iC) t^2 / (2 T0^2)), T0 = FWHM / 1.665.

    |E|^2 = exp(-t^2 / T0^2) has unit peak; the chirp C adds GDD = C T0^2 / (1 + C^2) to the
    spectrum without changing the intensity envelope.
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        require_meta(state.meta, "t", "dt_fs", stage="GaussianPulseStage")
        t0 = self.cfg.fwhm_fs / FWHM_PER_T0
        st = state.deepcopy()
        t, dt = st.meta["t"], st.meta["dt_fs"]
        field_t = np.exp(-(1.0 + 1j * self.cfg.chirp) * t**2 / (2.0 * t0**2))
        st.meta["E_t"] = field_t
        st.meta["E_w"] = spectrum_from_field(field_t, dt)
        metrics = {
            "t0_fs": t0,
            "chirp_gdd_fs2": self.cfg.chirp * t0**2 / (1.0 + self.cfg.chirp**2),
            "edge_energy_fraction": edge_energy_fraction(np.abs(field_t) ** 2),
        }
        return StageResult(state=st, metrics=metrics)


def _apply_spectral_phase(st: SimpleState, phase: np.ndarray) -> None:
    """Multiply ``E_w`` by exp(i phase) and refresh ``E_t`` (in place on a copied state)."""
    st.meta["E_w"] = st.meta["E_w"] * np.exp(1j * phase)
    st.meta["E_t"] = field_from_spectrum(st.meta["E_w"], st.meta["dt_fs"])


class DispersiveFibreCfg(StageConfig):
    length_m: float = Field(
        0.01,
        ge=0.0,
        le=100.0,
        description="fibre (or glass) length (m)",
        json_schema_extra={"unit": "m"},
    )
    beta2_fs2_per_mm: float = Field(
        36.16,
        ge=-1000.0,
        le=1000.0,
        description="group-velocity dispersion (fs^2/mm = ps^2/km); fused silica at 800 nm: 36.16",
        json_schema_extra={"unit": "fs²/mm"},
    )
    beta3_fs3_per_mm: float = Field(
        27.47,
        ge=-10000.0,
        le=10000.0,
        description="third-order dispersion (fs^3/mm); fused silica at 800 nm: 27.47",
        json_schema_extra={"unit": "fs³/mm"},
    )


class DispersiveFibreStage(PipelineStage[SimpleState, DispersiveFibreCfg]):
    """Linear propagation: E~(omega, z) = E~(omega, 0) exp(i (beta2/2 omega^2 + beta3/6 omega^3) z).

    No nonlinearity and no loss, in the frame moving at the group velocity (beta1 dropped), so the
    pulse stays centred and only its shape changes.
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        require_meta(state.meta, "omega", "dt_fs", "E_w", stage="DispersiveFibreStage")
        z_mm = self.cfg.length_m * 1e3
        gdd = self.cfg.beta2_fs2_per_mm * z_mm
        tod = self.cfg.beta3_fs3_per_mm * z_mm
        st = state.deepcopy()
        omega = st.meta["omega"]
        _apply_spectral_phase(st, gdd / 2.0 * omega**2 + tod / 6.0 * omega**3)
        return StageResult(state=st, metrics={"gdd_fs2": gdd, "tod_fs3": tod})


class GratingCompressorCfg(StageConfig):
    groove_density_per_mm: float = Field(
        1200.0,
        ge=100.0,
        le=3600.0,
        description="grating groove density (lines/mm)",
        json_schema_extra={"unit": "lines/mm"},
    )
    incidence_deg: float = Field(
        30.0,
        ge=0.0,
        lt=90.0,
        description="angle of incidence on the first grating (deg)",
        json_schema_extra={"unit": "deg"},
    )
    separation_mm: float = Field(
        10.0,
        ge=0.0,
        le=2000.0,
        description="perpendicular distance between the grating faces (mm)",
        json_schema_extra={"unit": "mm"},
    )
    passes: Literal[2, 1] = Field(
        2, description="passes through the pair; 2 (with a fold mirror) undoes the spatial chirp"
    )


class GratingCompressorStage(PipelineStage[SimpleState, GratingCompressorCfg]):
    """A Treacy grating pair (first order) at the grid's centre wavelength.

    Applies the exact phase passes * G * k_y(omega) (see :func:`grating_pair_phase`) minus its
    value and slope at the carrier (a constant phase and delay), so the pulse stays centred; the
    metrics report Treacy's analytic GDD and TOD at the carrier.
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        meta = state.meta
        require_meta(meta, "omega", "omega0", "dt_fs", "E_w", stage="GratingCompressorStage")
        cfg = self.cfg
        wavelength_nm = 2.0 * math.pi * C_NM_PER_FS / meta["omega0"]
        geometry = (cfg.groove_density_per_mm, cfg.incidence_deg, cfg.separation_mm, cfg.passes)
        gdd = treacy_gdd_fs2(wavelength_nm, *geometry)
        tod = treacy_tod_fs3(wavelength_nm, *geometry)
        omega0 = meta["omega0"]
        phase, _, transmits = grating_pair_phase(omega0 + meta["omega"], *geometry)
        # drop the carrier's phase and group delay (a constant and a shift): the pulse stays put
        carrier_phase, carrier_delay, _ = grating_pair_phase(np.array([omega0]), *geometry)
        phase = np.where(transmits, phase - carrier_phase[0] - carrier_delay[0] * meta["omega"], 0)
        st = state.deepcopy()
        power = np.abs(st.meta["E_w"]) ** 2
        clipped = float(np.sum(power[~transmits]) / np.sum(power))
        st.meta["E_w"] = np.where(transmits, st.meta["E_w"], 0.0)
        _apply_spectral_phase(st, phase)
        metrics = {
            "gdd_fs2": gdd,
            "tod_fs3": tod,
            "diffraction_deg": diffraction_angle_deg(
                wavelength_nm, cfg.groove_density_per_mm, cfg.incidence_deg
            ),
            "clipped_energy_fraction": clipped,
        }
        return StageResult(state=st, metrics=metrics)


class PhaseFitCfg(StageConfig):
    degree: int = Field(3, ge=2, le=4, description="degree of the polynomial fitted to phi(omega)")
    threshold: float = Field(
        1e-3,
        gt=0.0,
        lt=1.0,
        description="fit only where the spectral intensity exceeds this fraction of its peak",
    )


class PhaseFitStage(PipelineStage[SimpleState, PhaseFitCfg]):
    """Measures GDD and TOD by fitting phi(omega) = sum_k phi_k omega^k / k! to the spectrum.

    The phase is unwrapped over the contiguous band around the spectral peak where the intensity
    exceeds ``threshold`` (elsewhere it is noise) and fitted by intensity-weighted least squares.
    Writes ``phase_taylor`` = [phi0 (rad), GD (fs), GDD (fs^2), TOD (fs^3), FOD (fs^4)][:degree+1].
    A polynomial phase is recovered exactly; for a non-polynomial phase (a grating pair) the
    unfitted higher orders bias the fit, less so for a narrower band (higher ``threshold``).
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        require_meta(state.meta, "omega", "E_w", stage="PhaseFitStage")
        omega, field_w = state.meta["omega"], state.meta["E_w"]
        power = np.abs(field_w) ** 2
        band = _band_around_peak(power >= self.cfg.threshold * power.max(), int(power.argmax()))
        if band.stop - band.start <= self.cfg.degree:
            raise ValueError(
                f"only {band.stop - band.start} spectral samples above threshold="
                f"{self.cfg.threshold}; refine the grid or lower the threshold"
            )
        w_band = omega[band]
        phase = np.unwrap(np.angle(field_w[band]))
        # a step near pi per sample means a group delay near the window edge: the pulse has
        # wrapped around the periodic time grid and the phase cannot be trusted
        if np.max(np.abs(np.diff(phase))) > 0.9 * math.pi:
            window = 2.0 * math.pi / float(omega[1] - omega[0])
            raise ValueError(
                f"group delays reach the edge of the {window:.4g} fs time window; widen it"
            )
        coeffs = np.polynomial.polynomial.polyfit(
            w_band, phase, self.cfg.degree, w=np.sqrt(power[band])
        )
        residual = phase - np.polynomial.polynomial.polyval(w_band, coeffs)
        rms_residual = float(np.sqrt(np.average(residual**2, weights=power[band])))
        taylor = coeffs * np.array([math.factorial(k) for k in range(coeffs.size)])
        st = state.deepcopy()
        st.meta["phase_taylor"] = taylor
        metrics = {"group_delay_fs": taylor[1], "gdd_fs2": taylor[2]}
        if self.cfg.degree >= 3:
            metrics["tod_fs3"] = taylor[3]
        if self.cfg.degree >= 4:
            metrics["fod_fs4"] = taylor[4]
        metrics["residual_rms_rad"] = rms_residual
        plot = _phase_plot(w_band, power[band] / power.max(), phase, phase - residual)
        return StageResult(state=st, metrics=metrics, artifacts={"phase": plot})


def _band_around_peak(mask: np.ndarray, peak: int) -> slice:
    """The contiguous run of ``True`` in ``mask`` that contains index ``peak``."""
    start, stop = peak, peak + 1
    while start > 0 and mask[start - 1]:
        start -= 1
    while stop < mask.size and mask[stop]:
        stop += 1
    return slice(start, stop)


def _phase_plot(
    omega: np.ndarray, intensity: np.ndarray, phase: np.ndarray, fit: np.ndarray
) -> Callable[[], Any]:
    def plot() -> Any:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.subplots()
        ax.fill_between(omega, intensity, color="0.85", label="spectral intensity")
        ax.set_xlabel("omega - omega0 (rad/fs)")
        ax.set_ylabel("relative intensity")
        ax_phase = ax.twinx()
        ax_phase.plot(omega, phase, ".", ms=2, color="C0", label="unwrapped phase")
        ax_phase.plot(omega, fit, "-", color="C3", label="polynomial fit")
        ax_phase.set_ylabel("spectral phase (rad)")
        ax_phase.legend(loc="upper right", fontsize="small")
        return fig

    return plot


class PulseDurationCfg(StageConfig):
    plot_span_fwhm: float = Field(
        4.0,
        ge=1.0,
        le=50.0,
        description="half-width of the plotted time range, in units of the measured FWHM",
        json_schema_extra={"unit": "FWHM"},
    )


class PulseDurationStage(PipelineStage[SimpleState, PulseDurationCfg]):
    """Measures |E(t)|^2: FWHM, RMS width and the transform limit of the same spectrum.

    The transform-limited pulse drops the spectral phase (E~ -> |E~|), so ``tl_ratio`` =
    FWHM / FWHM_TL >= 1 says how far a compressor is from perfect; ``peak_ratio`` is the peak
    intensity relative to that transform limit (a temporal Strehl ratio).
    """

    policy_keys: ClassVar[tuple[str, ...]] = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        require_meta(state.meta, "t", "dt_fs", "E_t", "E_w", stage="PulseDurationStage")
        t = state.meta["t"]
        intensity = np.abs(state.meta["E_t"]) ** 2
        tl_field = field_from_spectrum(np.abs(state.meta["E_w"]), state.meta["dt_fs"])
        tl_intensity = np.abs(tl_field) ** 2
        width, tl_width = fwhm(t, intensity), fwhm(t, tl_intensity)
        metrics = {
            "fwhm_fs": width,
            "rms_fs": rms_width(t, intensity),
            "tl_fwhm_fs": tl_width,
            "tl_ratio": width / tl_width if tl_width > 0 else math.inf,
            "peak_ratio": float(intensity.max() / tl_intensity.max()),
            "edge_energy_fraction": edge_energy_fraction(intensity),
        }
        span = self.cfg.plot_span_fwhm * max(width, tl_width)
        plot = _intensity_plot(t, intensity, tl_intensity, span)
        return StageResult(state=state.deepcopy(), metrics=metrics, artifacts={"intensity": plot})


def _intensity_plot(
    t: np.ndarray, intensity: np.ndarray, tl_intensity: np.ndarray, span: float
) -> Callable[[], Any]:
    def plot() -> Any:
        from matplotlib.figure import Figure

        keep = np.abs(t) <= span
        scale = tl_intensity.max()
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.subplots()
        ax.plot(t[keep], tl_intensity[keep] / scale, "--", color="0.5", label="transform limit")
        ax.plot(t[keep], intensity[keep] / scale, color="C0", label="pulse")
        ax.set_xlabel("time (fs)")
        ax.set_ylabel("intensity / transform-limited peak")
        ax.legend(loc="upper right", fontsize="small")
        return fig

    return plot
