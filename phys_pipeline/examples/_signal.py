"""Helpers the example stages share: one Fourier convention, pulse widths, grid sizes, meta checks.

Fourier convention (the physics one, as in Agrawal's *Nonlinear Fiber Optics*)::

    E(t) = 1/(2 pi) Int E~(w) exp(-i w t) dw        E~(w) = Int E(t) exp(+i w t) dt

so a spectral phase phi(w) delays frequency w by dphi/dw and phi''(w) is the group-delay
dispersion (GDD). Time grids are centred (``t[n // 2] == 0``); spectra are stored with ``omega``
ascending (``fftshift`` order) so they plot directly.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

GridSize = Literal[256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
"""FFT sizes offered to users: powers of two, so a widget shows a dropdown, not a slider."""


def centred_time_grid(n_points: int, window: float) -> np.ndarray:
    """``n_points`` samples spanning ``window`` with ``t = 0`` at index ``n_points // 2``."""
    return (np.arange(n_points) - n_points // 2) * (window / n_points)


def angular_frequency_grid(n_points: int, dt: float) -> np.ndarray:
    """Ascending angular frequencies ``2 pi k / (N dt)`` matching :func:`spectrum_from_field`."""
    return 2.0 * np.pi * np.fft.fftshift(np.fft.fftfreq(n_points, dt))


def spectrum_from_field(field_t: np.ndarray, dt: float) -> np.ndarray:
    """E~(w) = Int E(t) exp(+i w t) dt on the ascending ``omega`` grid (Riemann sum)."""
    n = field_t.size
    return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(field_t))) * (n * dt)


def field_from_spectrum(field_w: np.ndarray, dt: float) -> np.ndarray:
    """Inverse of :func:`spectrum_from_field`: E(t) on the centred time grid."""
    n = field_w.size
    return np.fft.fftshift(np.fft.fft(np.fft.ifftshift(field_w))) / (n * dt)


def fwhm(x: np.ndarray, y: np.ndarray) -> float:
    """Full width at half maximum of ``y(x)`` between the outermost half-maximum crossings.

    Crossings are found by linear interpolation, so the error is far below the grid step for a
    smooth peak spanning many samples. Returns 0 if the peak touches the grid edge.
    """
    half = 0.5 * float(np.max(y))
    above = np.flatnonzero(y >= half)
    first, last = int(above[0]), int(above[-1])
    if first == 0 or last == y.size - 1:
        return 0.0

    def crossing(i_below: int, i_above: int) -> float:
        y0, y1 = y[i_below], y[i_above]
        return float(x[i_below] + (half - y0) * (x[i_above] - x[i_below]) / (y1 - y0))

    return crossing(last + 1, last) - crossing(first - 1, first)


def rms_width(x: np.ndarray, weight: np.ndarray) -> float:
    """Standard deviation of ``x`` weighted by ``weight`` (the RMS duration for intensities)."""
    total = float(np.sum(weight))
    mean = float(np.sum(x * weight)) / total
    return float(np.sqrt(np.sum((x - mean) ** 2 * weight) / total))


def edge_energy_fraction(intensity: np.ndarray, edge: float = 0.05) -> float:
    """Share of the energy in the outer ``edge`` of the window on each side.

    A few 1e-6 or more means the pulse reaches the window edge and wraps around (FFT grids are
    periodic): widen the window.
    """
    n_edge = max(1, int(edge * intensity.size))
    outer = float(np.sum(intensity[:n_edge]) + np.sum(intensity[-n_edge:]))
    return outer / float(np.sum(intensity))


def require_meta(meta: dict[str, Any], *keys: str, stage: str) -> None:
    """Fail early, naming the missing ``state.meta`` keys, when stages are chained out of order."""
    missing = [key for key in keys if key not in meta]
    if missing:
        raise KeyError(
            f"{stage} needs state.meta keys {missing}; run the stages that write them first"
        )
