"""figure_png: a figure that lays itself out is drawn once, to the pixels savefig gives."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure
from PIL import Image

from phys_pipeline.views import figure_png


def pulse_figure(layout: str | None) -> Figure:
    """An intensity trace with labels and a legend: what constrained layout has to fit."""
    t = np.linspace(-300.0, 300.0, 801)
    figure = Figure(figsize=(6, 3.5), layout=layout)
    axes = figure.subplots()
    axes.plot(t, np.exp(-((t / 100.0) ** 2)), label="pulse")
    axes.set_xlabel("time (fs)")
    axes.set_ylabel("intensity")
    axes.legend(loc="upper right")
    return figure


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def draws(figure: Figure) -> list[object]:
    """Each draw of ``figure`` from now on (its draw events)."""
    seen: list[object] = []
    figure.canvas.mpl_connect("draw_event", seen.append)
    return seen


def test_a_constrained_layout_figure_is_drawn_once_to_the_pixels_savefig_gives() -> None:
    saved = io.BytesIO()
    pulse_figure("constrained").savefig(saved, format="png", dpi=96)  # lays out, draws twice
    figure = pulse_figure("constrained")
    drawn = draws(figure)

    png = figure_png(figure)

    assert len(drawn) == 1
    assert pixels(png).shape == (336, 576, 4)  # 6 x 3.5 inches at 96 dpi
    assert np.array_equal(pixels(png), pixels(saved.getvalue()))


def test_a_figure_without_a_layout_of_its_own_is_trimmed_to_its_content() -> None:
    png = figure_png(pulse_figure(None))
    height, width, _ = pixels(png).shape
    assert height < 336 and width < 576  # bbox_inches="tight" cut the empty margins
