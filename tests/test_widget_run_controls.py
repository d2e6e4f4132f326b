"""RunControls: run the stale part, report progress, status and errors, auto-run after edits."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import ALL

from phys_pipeline.errors import CacheError
from phys_pipeline.session import LiveSession
from phys_pipeline.widgets import PipelineApp, RunControls


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition a background thread will make true; bounded, never hangs a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_run_button_reruns_only_stale_nodes_and_recolours_the_dag(app: PipelineApp) -> None:
    assert app.controls.run_button.description == "Run"
    app.controls.run_button.click()
    assert app.dag.statuses == dict.fromkeys(ALL, "ran")
    app.editor("fibre").controls["length_m"].value = 3.0
    assert app.dag.statuses["fibre"] == "stale"
    assert app.dag.reasons["fibre"] == "config field length_m changed"
    app.controls.run_button.click()
    result = app.session.last_result
    assert result is not None
    assert set(result.ran) == {"fibre", "duration"}
    assert app.dag.statuses == {
        "grid": "hit",
        "pulse": "hit",
        "fibre": "ran",
        "duration": "ran",
        "spectrum": "hit",
    }


def test_status_line_matches_the_summary(app: PipelineApp) -> None:
    app.controls.run_button.click()
    result = app.session.last_result
    assert result is not None
    assert app.controls.status_line.value == result.summary()
    assert app.controls.status_line.value.startswith("ran 5, hit 0, ")
    assert "pp-status-line" in app.controls.status_line._dom_classes


def test_progress_counts_the_nodes_that_had_to_run(app: PipelineApp) -> None:
    app.controls.run()
    app.session.update("duration", threshold=0.25)
    seen: list[tuple[int, int]] = []
    app.session.subscribe(
        lambda event, _: seen.append((app.controls.progress.value, app.controls.progress.max))
    )
    app.controls.run()
    assert seen[-1] == (1, 1)
    assert app.controls.progress.bar_style == "success"


def test_auto_run_reruns_after_an_edit(app: PipelineApp) -> None:
    app.controls.run()
    app.controls.auto_run.value = True
    app.editor("grid").controls["N"].value = 128
    assert wait_for(lambda: app.session.status["grid"] == "ran" and not app.controls.run_pending)
    assert app.session.stale() == {}
    assert app.session.last_result is not None
    assert set(app.session.last_result.ran) == ALL
    assert app.dag.statuses == dict.fromkeys(ALL, "ran")


def test_auto_run_debounces_a_burst_of_edits_into_one_run(app: PipelineApp) -> None:
    app.controls.run()
    runs: list[str] = []
    app.session.subscribe(lambda event, _: runs.append(event) if event == "run" else None)
    app.controls.debounce_s = 0.2
    app.controls.auto_run.value = True
    for length in (2.0, 3.0, 4.0):
        app.editor("fibre").controls["length_m"].value = length
    assert wait_for(lambda: bool(runs) and not app.controls.run_pending)
    assert runs == ["run"]
    assert app.session.config("fibre").length_m == 4.0


def test_failing_node_is_named_in_the_panel_and_coloured(app: PipelineApp) -> None:
    app.editor("fibre").controls["broken"].value = True
    app.controls.run_button.click()
    errors = app.controls.errors.value
    assert "node &#x27;fibre&#x27; failed" in errors
    assert "fibre snapped" in errors
    assert app.dag.statuses["fibre"] == "failed"
    assert app.dag.statuses["duration"] == "skipped"
    assert app.dag.statuses["spectrum"] == "ran"
    assert app.controls.status_line.value.startswith("ran 3, hit 0, failed 1, skipped 1")


def test_a_run_that_cannot_start_is_reported_not_raised(
    session: LiveSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable_cache() -> None:
        raise CacheError("cache backend 'redis://lab:6379' unreachable")

    monkeypatch.setattr(session, "run", unreachable_cache)
    controls = RunControls(session)
    controls.run_button.click()
    assert "run failed" in controls.errors.value
    assert "unreachable" in controls.errors.value
    assert not controls.run_pending
