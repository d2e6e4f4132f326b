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
        assert "pulse__fwhm_ps-0.5" in swept.dag.statuses
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
    view.show("pulse__fwhm_ps-2.0")  # one variant selected: that base node's sweep
    assert bytes(view.sweep_plot.value).startswith(PNG_MAGIC)
    assert set(sweep_series(result, "pulse")[1]) == {"pulse.t0_ps"}  # type: ignore[index]


def test_a_sweep_over_text_values_gets_its_table_but_no_plot() -> None:
    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"units": ["fs", "ps"]})])
    live = LiveSession(nodes, SimpleState())
    view = ArtifactView(live)
    live.run()
    assert "units" in view.sweep.value
    assert bytes(view.sweep_plot.value) == b"" and view.sweep_plot.layout.display == "none"


def images(outputs: tuple[dict, ...]) -> list[dict]:
    return [o for o in outputs if "image/png" in o["data"]]


def test_the_dag_sinks_are_watched_by_default_and_stay_on_screen(session: LiveSession) -> None:
    view = ArtifactView(session)
    assert view.watched == ["duration", "spectrum"]  # nothing reads them
    assert view.watched_box.layout.display == "none"  # all nodes are listed anyway
    session.run()
    view.show("grid")
    assert view.watched_box.layout.display != "none"
    assert [p.node_id for p in view.watched_box.children] == ["duration", "spectrum"]
    assert "phase_span" in view.panels["duration"].metrics.value
    assert "bins" in view.panels["spectrum"].metrics.value
    assert "phase_span" not in view.metrics.value  # the selected node's table is grid's
    view.show("duration")  # selected: shown once, in the selected panel
    assert view.panels["duration"].layout.display == "none"
    assert view.panels["spectrum"].layout.display != "none"
    assert "phase_span" in view.metrics.value


def test_pinning_a_node_keeps_its_plot_on_screen_and_unpinning_drops_it(
    session: LiveSession,
) -> None:
    from phys_pipeline.errors import UnknownNodeError

    view = ArtifactView(session, "fibre", watched=[])
    session.run()
    assert view.pin_button.value is False and view.pin_button.layout.display != "none"
    view.pin_button.value = True  # the pin toggle of the selected node
    assert view.watched == ["fibre"]
    view.show("grid")
    panel = view.panels["fibre"]
    assert len(images(panel.output.outputs)) == 1 and not images(view.output.outputs)
    assert panel.pin_button.value is True
    panel.pin_button.value = False  # the toggle of the watched panel unpins
    assert view.watched == [] and "fibre" not in view.panels
    assert view.watched_box.children == () and panel.comm is None  # closed
    view.pin("duration")
    view.unpin("duration")
    assert view.watched == []
    with pytest.raises(UnknownNodeError, match="no-such-node"):
        view.pin("no-such-node")


def test_an_edit_greys_what_it_made_stale_until_the_next_run(session: LiveSession) -> None:
    view = ArtifactView(session, "fibre")
    session.run()
    assert "pp-stale" not in view.title.value + view.metrics.value
    session.update("fibre", length_m=2.0)
    caption, figure = view.output.outputs
    assert "stale" in view.title.value and "pp-stale-badge" in caption["data"]["text/html"]
    assert 'class="pp-figure pp-stale"' in figure["data"]["text/html"]
    assert '<tr class="pp-stale"><td>fibre</td>' in view.metrics.value
    assert "pp-stale-badge" in view.panels["duration"].title.value  # downstream of the edit
    assert "pp-stale-badge" not in view.panels["spectrum"].title.value
    session.update("fibre", length_m=1.0)  # undone: what is shown is current again
    assert "pp-stale" not in view.title.value + view.metrics.value
    session.update("fibre", length_m=3.0)
    session.run()
    assert "pp-stale" not in view.title.value + view.metrics.value
    assert "pp-stale" not in str(view.output.outputs)
    assert "pp-stale" not in view.panels["duration"].title.value


def test_each_figure_has_a_png_download_link(session: LiveSession) -> None:
    import base64
    import re

    from phys_pipeline.widgets.artifact_view import PNG_MAGIC

    view = ArtifactView(session, "fibre")
    session.run()
    (figure,) = images(view.output.outputs)
    card = figure["data"]["text/html"]
    link = re.search(r'<a class="pp-download" download="([^"]+)" href="([^"]+)"', card)
    assert link is not None and link.group(1) == "fibre.phase.png"
    assert link.group(2) == "data:image/png;base64," + figure["data"]["image/png"]
    assert f'<img src="{link.group(2)}"' in card  # the very image shown
    assert base64.b64decode(figure["data"]["image/png"]).startswith(PNG_MAGIC)


def test_the_metric_table_has_node_and_metric_columns_under_aligned_headers() -> None:
    import re

    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"fwhm_ps": [0.5, 2.0]})])
    live = LiveSession(nodes, SimpleState())
    view = ArtifactView(live)
    live.run()
    table = view.metrics.value
    headers = re.findall(r'<th style="text-align:(\w+)">(\w+)</th>', table)
    assert headers == [("left", "node"), ("left", "metric"), ("right", "value")]
    rows = re.findall(
        r"<tr[^>]*><td>([^<]*)</td><td>([^<]*)</td><td style=\"text-align:right\">", table
    )
    assert ("pulse__fwhm_ps-0.5", "t0_ps") in rows  # a dot in the node id splits nothing
    assert ("fibre__fwhm_ps-2.0", "gdd_ps2") in rows


def test_every_colour_of_the_panel_but_the_figure_card_follows_the_jupyterlab_theme() -> None:
    import re

    import phys_pipeline.widgets.artifact_view as module

    css = Path(module.__file__).with_name("artifact_view.css").read_text()
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    colours = re.findall(r"(#[0-9a-fA-F]{3,8}|rgba?\([^)]*\))", css)
    assert colours  # fallbacks are there
    uses = re.findall(r"var\((--[\w-]+), (#[0-9a-fA-F]{3,8}|rgba?\([^)]*\))\)", css)
    assert sorted(colour for _, colour in uses) == sorted(colours)  # each one is a fallback
    assert {name for name, _ in uses if not name.startswith("--jp-")} == {"--pp-figure-background"}
