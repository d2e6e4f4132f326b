"""Edit → plot in the app, the kernel's side: a revisited setup's plots are shown without being
drawn again, but only drawings true to their cache entry are reused; a panel's metrics come
before its figures are drawn, the figures of the run before greyed meanwhile; the History tab
draws the runs (its rows and metric plot) while that tab is picked, not on every run."""

from __future__ import annotations

import base64
from typing import Any

import pytest

pytest.importorskip("ipywidgets")

from dag_stages import GridCfg, GridStage

from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult
from phys_pipeline.widgets import ArtifactView, HistoryView, PipelineApp
from phys_pipeline.widgets.artifact_view import PNG_MAGIC

START = SimpleState(None)
PLOT_UNITS = "rad/fs"  # read by the stage's plot when drawn: its code's key covers it


def picture(text: str) -> bytes:
    """A 'PNG' that says what it shows (the view shows anything starting with the PNG magic)."""
    return PNG_MAGIC + text.encode()


class SpectrumPlot:
    """A lazy plot of a spectral width that counts how often it is drawn."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return picture(f"width {self.width} {PLOT_UNITS}")


class SpectrumCfg(StageConfig):
    width: float = 1.0


class Spectrum(PipelineStage[SimpleState, SpectrumCfg]):
    """A spectral width, with a lazy plot of it."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        width = self.cfg.width
        return StageResult(
            SimpleState(width), metrics={"width": width}, artifacts={"plot": SpectrumPlot(width)}
        )


def spectrum_nodes() -> list[NodeSpec]:
    return [
        NodeSpec("spectrum", stage=Spectrum(SpectrumCfg())),
        NodeSpec("grid", stage=GridStage(GridCfg())),
    ]


def spectrum_session() -> LiveSession:
    return LiveSession(spectrum_nodes(), START)  # the default cache: a memory tier


def shown(view: ArtifactView, node_id: str) -> list[bytes]:
    outputs = view.panels[node_id].output.outputs
    return [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o["data"]]


def test_a_revisited_setup_shows_its_plot_without_drawing_it_again() -> None:
    live = spectrum_session()
    view = ArtifactView(live, "grid", watched=["spectrum"])
    plot = live.run().results["spectrum"].artifacts["plot"]
    live.update("spectrum", width=2.0)
    live.run()
    live.update("spectrum", width=1.0)
    result = live.run()
    assert result.hits == ["spectrum", "grid"]
    assert result.results["spectrum"].artifacts["plot"] is plot  # the memory tier's own
    assert shown(view, "spectrum") == [picture("width 1.0 rad/fs")]
    assert plot.calls == 1


def test_a_plot_drawn_while_its_node_was_stale_is_drawn_again_for_the_cache_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drawn after a global its code reads changed, the plot shows the old result in today's
    units: not what the entry holds, so the hit after the global is back draws it anew."""
    live = spectrum_session()
    view = ArtifactView(live, "grid", watched=[])
    plot = live.run().results["spectrum"].artifacts["plot"]
    monkeypatch.setattr(__import__(__name__), "PLOT_UNITS", "THz")
    assert "spectrum" in live.stale()
    view.watched = ["spectrum"]  # first shown now: drawn in THz
    assert shown(view, "spectrum") == [picture("width 1.0 THz")]
    monkeypatch.setattr(__import__(__name__), "PLOT_UNITS", "rad/fs")
    assert live.run().hits == ["spectrum", "grid"]
    assert shown(view, "spectrum") == [picture("width 1.0 rad/fs")]
    assert plot.calls == 2


def test_a_panel_shows_its_metrics_before_drawing_greying_the_old_figure_meanwhile() -> None:
    live = spectrum_session()
    view = ArtifactView(live, "grid", watched=["spectrum"])
    live.run()
    panel = view.panels["spectrum"]
    seen: list[tuple[str, Any]] = []
    panel.metrics.observe(lambda change: seen.append(("metrics", change["new"])), "value")
    panel.output.observe(lambda change: seen.append(("figures", change["new"])), "outputs")
    panel.output.observe(lambda change: seen.append(("classes", change["new"])), "_dom_classes")
    live.update("spectrum", width=3.0)
    seen.clear()  # the edit greys the panel; what follows is the run's
    live.run()
    kinds = [kind for kind, _ in seen]
    assert kinds == ["metrics", "classes", "figures", "classes"], kinds
    assert ">3<" in seen[0][1] and "pp-drawing" in seen[1][1]
    assert "pp-drawing" not in seen[3][1] and "pp-drawing" not in panel.output._dom_classes
    assert shown(view, "spectrum") == [picture("width 3.0 rad/fs")]


def test_a_revisit_changes_no_class_since_nothing_is_drawn() -> None:
    live = spectrum_session()
    view = ArtifactView(live, "grid", watched=["spectrum"])
    live.run()
    live.update("spectrum", width=2.0)
    live.run()
    classes: list[Any] = []
    view.panels["spectrum"].output.observe(lambda change: classes.append(change), "_dom_classes")
    live.update("spectrum", width=1.0)
    live.run()
    assert classes == []


def test_the_history_tab_draws_the_runs_when_it_is_picked_not_on_each_run() -> None:
    nodes = [
        NodeSpec("spectrum", stage=Spectrum(SpectrumCfg())),
        NodeSpec("grid", stage=GridStage(GridCfg())),
    ]
    app = PipelineApp(nodes, START)
    plot = app.history.metric_plot
    app.controls.run()
    app.session.update("spectrum", width=2.0)
    app.controls.run()
    assert not app.history.shown and bytes(plot.value) == b""  # Results is the tab picked
    assert app.history.rows == []  # nor the runs' rows

    app.results.selected_index = 1  # the History tab
    assert [row.number for row in app.history.rows] == [2, 1]
    two_runs = bytes(plot.value)
    assert two_runs.startswith(PNG_MAGIC) and plot.layout.display != "none"

    app.results.selected_index = 0
    app.session.update("spectrum", width=4.0)
    app.controls.run()
    assert plot.layout.display == "none"  # two runs' plot is not shown as three runs'
    assert len(app.history.rows) == 2
    app.results.selected_index = 1
    assert [row.number for row in app.history.rows] == [3, 2, 1]
    assert bytes(plot.value) not in (b"", two_runs) and plot.layout.display != "none"
    app.close()


def test_a_history_view_of_its_own_is_shown_and_draws_on_each_run() -> None:
    live = spectrum_session()
    view = HistoryView(live)
    live.run()
    live.update("spectrum", width=2.0)
    live.run()
    assert view.shown and bytes(view.metric_plot.value).startswith(PNG_MAGIC)
