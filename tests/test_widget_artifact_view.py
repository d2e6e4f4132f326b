"""ArtifactView: a node's plots and metrics, and a sweep's table and plot."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import optics_nodes

from phys_pipeline.session import LiveSession
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import SimpleState
from phys_pipeline.widgets import ArtifactView, PipelineApp


def test_artifact_view_shows_an_image_after_a_run(session: LiveSession) -> None:
    view = ArtifactView(session, "fibre")
    assert view.output.outputs == ()
    session.run()
    images = [o for o in view.output.outputs if "image/png" in o["data"]]
    assert len(images) == 1
    assert "gdd_ps2" in view.metrics.value
    session.update("fibre", length_m=2.0)
    session.run()
    assert len([o for o in view.output.outputs if "image/png" in o["data"]]) == 1  # replaced


def test_plots_missing_after_disk_hits_are_explained_and_one_click_redraws_them(
    tmp_path: Path,
) -> None:
    from phys_pipeline.cache import DiskStore

    LiveSession(optics_nodes(), SimpleState(), cache=DiskStore(tmp_path)).run()
    live = LiveSession(optics_nodes(), SimpleState(), cache=DiskStore(tmp_path))
    view, overview = ArtifactView(live, "fibre"), ArtifactView(live)
    assert view.note.value == "" and view.rerun_button.layout.display == "none"
    live.run()  # everything from disk: lazy plots are not cached
    assert not [o for o in view.output.outputs if "image/png" in o["data"]]
    assert "plots are not cached" in view.note.value
    assert view.rerun_button.layout.display != "none"
    assert view.rerun_button.description == "Rerun fibre"
    assert "5 node(s) loaded from the cache" in overview.note.value
    view.rerun_button.click()
    result = live.last_result
    assert result is not None and result.ran == ["fibre"] and len(result.hits) == 4
    assert len([o for o in view.output.outputs if "image/png" in o["data"]]) == 1
    assert view.note.value == "" and view.rerun_button.layout.display == "none"
    assert overview.note.value == ""  # a plot is shown now


def test_sweeps_show_a_sweep_table(app: PipelineApp) -> None:
    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"fwhm_ps": [0.5, 2.0]})])
    swept = PipelineApp(nodes, SimpleState())
    try:
        swept.controls.run()
        assert "pulse[fwhm_ps=0.5]" in swept.dag.statuses
        assert "phase_span" in swept.artifacts.sweep.value
        assert "fwhm_ps" in swept.artifacts.sweep.value
    finally:
        swept.close()


def test_a_one_parameter_sweep_is_plotted_metric_against_parameter() -> None:
    from phys_pipeline.views import sweep_series
    from phys_pipeline.widgets.artifact_view import PNG_MAGIC

    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"fwhm_ps": [0.5, 2.0, 1.0]})])
    live = LiveSession(nodes, SimpleState())
    view = ArtifactView(live)
    assert view.sweep_plot.layout.display == "none"
    result = live.run()
    assert bytes(view.sweep_plot.value).startswith(PNG_MAGIC)
    assert view.sweep_plot.layout.display != "none"
    param, series = sweep_series(result)  # type: ignore[misc]
    assert param == "fwhm_ps"
    assert [x for x, _ in series["pulse.t0_ps"]] == [0.5, 1.0, 2.0]  # sorted by the parameter
    assert series["pulse.t0_ps"][2][1] == pytest.approx(2.0 / 1.665)
    view.show("pulse[fwhm_ps=2]")  # one variant selected: that base node's sweep
    assert bytes(view.sweep_plot.value).startswith(PNG_MAGIC)
    assert set(sweep_series(result, "pulse")[1]) == {"pulse.t0_ps"}  # type: ignore[index]


def test_a_sweep_over_text_values_gets_its_table_but_no_plot() -> None:
    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"units": ["fs", "ps"]})])
    live = LiveSession(nodes, SimpleState())
    view = ArtifactView(live)
    live.run()
    assert "units" in view.sweep.value
    assert bytes(view.sweep_plot.value) == b"" and view.sweep_plot.layout.display == "none"
