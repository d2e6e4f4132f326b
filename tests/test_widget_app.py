"""PipelineApp: the views put together; selecting a node, closing, and the cache it uses."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import ALL, optics_nodes

from phys_pipeline.session import LiveSession
from phys_pipeline.types import SimpleState
from phys_pipeline.widgets import ConfigEditor, PipelineApp


def test_an_editor_that_cannot_be_built_shows_an_error_box(
    app: PipelineApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phys_pipeline.widgets.app as app_module

    class BrokenEditor(ConfigEditor):
        def _build(self) -> None:
            raise ValueError("no control for a tensor field")

    monkeypatch.setattr(app_module, "ConfigEditor", BrokenEditor)
    app.dag.selected = "fibre"  # must not raise into the kernel
    (box,) = app._editor_box.children
    assert "pp-editor-error" in box._dom_classes
    assert "fibre" in box.value and "no control for a tensor field" in box.value
    assert "fibre" not in app.editors
    assert app.artifacts.node_id == "fibre"  # the rest of the selection still happens


def test_selecting_a_node_shows_its_editor_and_artifacts(app: PipelineApp) -> None:
    app.controls.run()
    app.dag.selected = "fibre"  # what a click in the browser does
    assert app._editor_box.children == (app.editors["fibre"],)
    assert app.node_picker.value == "fibre"
    assert app.artifacts.node_id == "fibre"
    assert any("image/png" in o["data"] for o in app.artifacts.output.outputs)
    app.node_picker.value = ""
    assert app.dag.selected == "" and app.artifacts.node_id is None


def test_closing_the_app_unsubscribes_its_views(session: LiveSession) -> None:
    app = PipelineApp.from_session(session)
    app.editor("grid")
    app.close()
    app.close()  # closing twice is harmless
    assert session._listeners == []


def test_the_side_panel_keeps_its_width_and_the_dag_takes_the_rest(app: PipelineApp) -> None:
    """Fixed, not sized by what it shows: a long failure wraps inside it instead of widening
    it (and shrinking the DAG); the browser test measures it."""
    from phys_pipeline.widgets.app import SIDE_WIDTH

    (row, _) = app.children
    assert row.children == (app.dag, app.side_panel)
    side = app.side_panel.layout
    assert (side.width, side.flex) == (SIDE_WIDTH, f"0 0 {SIDE_WIDTH}")
    assert app.controls in app.side_panel.children
    assert app.policy_editor in app.side_panel.children
    assert (app.dag.layout.flex, app.dag.layout.min_width) == ("1 1 0", "0")


def test_app_uses_the_cache_a_cache_config_describes(tmp_path: Path) -> None:
    import warnings

    from phys_pipeline.cache import CacheConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CacheWarning would mean the cache is not used
        first = PipelineApp(optics_nodes(), SimpleState(), cache=CacheConfig(disk_root=tmp_path))
        first.controls.run()
        first.close()
        second = PipelineApp(optics_nodes(), SimpleState(), cache=CacheConfig(disk_root=tmp_path))
        result = second.controls.run()
        second.close()
    assert result is not None and result.ran == [] and set(result.hits) == ALL


def test_the_history_tab_follows_the_session_s_runs(app: PipelineApp) -> None:
    """Results and History share the tab under the DAG; every run gets a row (drawn while
    the History tab is picked)."""
    assert app.results.children == (app.artifacts, app.history)
    assert app.results.titles == ("Results", "History")
    app.results.selected_index = 1
    app.controls.run()
    app.session.update("fibre", length_m=2.0)
    app.controls.run()
    assert [row.number for row in app.history.rows] == [2, 1]
    app.history.pinned = 1
    assert "fibre" in app.history.comparison.value
