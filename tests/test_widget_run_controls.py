"""RunControls: run the stale part in the background and Stop it, report progress, what is
running and for how long, status and errors, auto-run after edits."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import ALL

from phys_pipeline import report_progress
from phys_pipeline.errors import CacheError
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.types import (
    NodeSpec,
    NodeStatus,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)
from phys_pipeline.widgets import PipelineApp, RunControls

WAIT_S = 30.0  # what a gated stage waits for the test at most


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition a background thread will make true; bounded, never hangs a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def idle(controls: RunControls) -> bool:
    """The button reads Run and no run of the controls is in flight (or still drawing)."""
    return controls.run_button.description == "Run" and not controls.running


def click_run(controls: RunControls) -> None:
    """Click Run (it returns at once: the run is on a thread) and wait until it is over."""
    controls.run_button.click()
    assert wait_for(lambda: idle(controls)), "the run never ended"


class SlabCfg(StageConfig):
    thickness_mm: float = 1.0


class Slab(PipelineStage[SimpleState, SlabCfg]):
    """The pulse goes through one slab: its position moves on by the slab's thickness."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        z_mm = (state.payload or 0.0) + self.cfg.thickness_mm
        return StageResult(SimpleState(z_mm), metrics={"z_mm": z_mm})


class GatedSlab(Slab):
    """A slab whose solver reports "iteration 4 of 10", then waits until the test opens its
    gate: the test looks at the controls, or presses Stop, while it runs."""

    untracked = ("entered", "gate")

    def __init__(self, cfg: SlabCfg) -> None:
        super().__init__(cfg)
        self.entered, self.gate = threading.Event(), threading.Event()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        report_progress(0.4, "iteration 4 of 10")
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return super().process(state, policy=policy)


@pytest.fixture
def gated() -> GatedSlab:
    return GatedSlab(SlabCfg())


def slab_session(gated: GatedSlab, workers: int) -> LiveSession:
    """entrance -> bulk (gated) -> exit; with one worker, nodes compute on the run's thread."""
    nodes = [
        NodeSpec("entrance", stage=Slab(SlabCfg())),
        NodeSpec("bulk", ["entrance"], gated),
        NodeSpec("exit", ["bulk"], Slab(SlabCfg())),
    ]
    return LiveSession(nodes, SimpleState(None), scheduler=LocalScheduler(max_workers=workers))


@pytest.fixture
def slabs(gated: GatedSlab) -> Iterator[RunControls]:
    """Controls over the slabs on two worker threads: a Stop returns at once, and the bulk's
    thread finishes unheard when the test opens the gate."""
    controls = RunControls(slab_session(gated, workers=2))
    yield controls
    gated.gate.set()
    controls.close()


def shown_text(widget_html: str) -> str:
    return re.sub(r"<[^>]+>", "", widget_html)


def elapsed_s(controls: RunControls) -> float:
    """The seconds the running line shows for its (one) running node."""
    found = re.search(r"(\d+\.\d) s$", shown_text(controls.running_line.value))
    return float(found.group(1)) if found else -1.0


def ticker_alive() -> bool:
    return any(t.name == "phys-pipeline-elapsed" and t.is_alive() for t in threading.enumerate())


def test_run_button_reruns_only_stale_nodes_and_recolours_the_dag(app: PipelineApp) -> None:
    assert app.controls.run_button.description == "Run"
    click_run(app.controls)
    assert app.dag.statuses == dict.fromkeys(ALL, "ran")
    app.editor("fibre").controls["length_m"].value = 3.0
    assert app.dag.statuses["fibre"] == "stale"
    assert app.dag.reasons["fibre"] == "config field length_m changed"
    click_run(app.controls)
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
    click_run(app.controls)
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
    click_run(app.controls)
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
    click_run(controls)
    assert "run failed" in controls.errors.value
    assert "unreachable" in controls.errors.value
    assert not controls.run_pending


# --- in the background, and Stop --------------------------------------------------------------


def test_run_button_runs_in_the_background_and_reads_stop_meanwhile(
    slabs: RunControls, gated: GatedSlab
) -> None:
    button = slabs.run_button
    button.click()  # returned while the bulk computes: the kernel is free to take Stop
    assert gated.entered.wait(WAIT_S)
    assert (button.description, button.icon, button.button_style) == ("Stop", "stop", "warning")
    assert slabs.running and not button.disabled
    gated.gate.set()
    assert wait_for(lambda: idle(slabs))
    assert (button.description, button.icon, button.button_style) == ("Run", "play", "primary")
    assert slabs.session.last_result is not None
    assert slabs.session.last_result.ran == ["entrance", "bulk", "exit"]


def test_stop_cancels_what_has_not_finished_and_the_controls_are_idle_again(
    slabs: RunControls, gated: GatedSlab
) -> None:
    slabs.run_button.click()
    assert gated.entered.wait(WAIT_S)
    slabs.run_button.click()  # Stop
    assert wait_for(lambda: idle(slabs))
    assert not gated.gate.is_set()  # idle while the bulk still computes, unheard
    result = slabs.session.last_result
    assert result is not None
    assert result.runs["entrance"].status is NodeStatus.RAN
    assert set(result.cancelled) == {"bulk", "exit"}
    assert slabs.session.status["bulk"] is NodeStatus.CANCELLED
    assert slabs.status_line.value == result.summary() and "cancelled 2" in result.summary()
    assert (slabs.progress.description, slabs.progress.bar_style) == ("1/3", "warning")
    assert slabs.running_line.value == "" and not ticker_alive()
    assert not slabs.run_button.disabled


def test_a_run_after_stop_loads_what_completed_before_it(
    slabs: RunControls, gated: GatedSlab
) -> None:
    slabs.run_button.click()
    assert gated.entered.wait(WAIT_S)
    slabs.stop()
    assert wait_for(lambda: idle(slabs))
    gated.gate.set()
    click_run(slabs)
    result = slabs.session.last_result
    assert result is not None and result.ok
    assert "entrance" in result.hits
    assert result.metrics["exit.z_mm"] == 3.0


def test_a_stop_before_the_run_reaches_its_first_node_still_stops_it(
    slabs: RunControls, gated: GatedSlab
) -> None:
    slabs.start()
    slabs.stop()  # the run may still be planning: the Stop waits for its first node
    assert wait_for(lambda: idle(slabs))
    result = slabs.session.last_result
    assert result is not None and {"bulk", "exit"} <= set(result.cancelled)


def test_stop_reads_stopping_until_a_node_computing_on_the_run_s_thread_finishes(
    gated: GatedSlab,
) -> None:
    controls = RunControls(slab_session(gated, workers=1))
    try:
        controls.run_button.click()
        assert gated.entered.wait(WAIT_S)
        controls.run_button.click()  # Stop: the bulk cannot be stopped, it runs on that thread
        button = controls.run_button
        assert (button.description, button.disabled) == ("Stopping", True)
        gated.gate.set()
        assert wait_for(lambda: idle(controls))
        result = controls.session.last_result
        assert result is not None and result.cancelled == ["exit"]
        assert result.runs["bulk"].status is NodeStatus.RAN
    finally:
        gated.gate.set()
        controls.close()


def test_stop_with_no_run_in_flight_does_nothing(slabs: RunControls) -> None:
    slabs.stop()
    assert slabs.run_button.description == "Run" and slabs.session.last_result is None


def test_run_blocks_and_returns_the_result(slabs: RunControls, gated: GatedSlab) -> None:
    gated.gate.set()
    result = slabs.run()
    assert result is not None and result.ran == ["entrance", "bulk", "exit"]
    assert idle(slabs)


# --- what is running, for how long, how far ---------------------------------------------------


def test_a_running_node_shows_its_elapsed_seconds_and_progress(
    slabs: RunControls, gated: GatedSlab
) -> None:
    slabs.run_button.click()
    assert gated.entered.wait(WAIT_S)
    assert wait_for(lambda: "iteration" in slabs.running_line.value)
    line = shown_text(slabs.running_line.value)
    assert re.fullmatch(r"running: bulk 40% iteration 4 of 10, \d+\.\d s", line), line
    gated.gate.set()
    assert wait_for(lambda: idle(slabs))
    assert slabs.running_line.value == ""


def test_elapsed_seconds_tick_while_a_node_runs_and_the_ticker_ends_with_the_run(
    slabs: RunControls, gated: GatedSlab
) -> None:
    slabs.run_button.click()
    assert gated.entered.wait(WAIT_S)
    assert wait_for(ticker_alive)
    first = elapsed_s(slabs)
    assert wait_for(lambda: elapsed_s(slabs) > first)  # nothing else happens: the ticker
    gated.gate.set()
    assert wait_for(lambda: idle(slabs) and not ticker_alive())


def test_a_run_started_elsewhere_shows_its_running_node_too(
    slabs: RunControls, gated: GatedSlab
) -> None:
    elsewhere = threading.Thread(target=slabs.session.run)  # as another cell's code would
    elsewhere.start()
    assert gated.entered.wait(WAIT_S)
    assert wait_for(lambda: "running: bulk 40% iteration 4 of 10" in slabs.running_line.value)
    assert wait_for(ticker_alive)
    gated.gate.set()
    elsewhere.join(WAIT_S)
    assert wait_for(lambda: slabs.running_line.value == "" and not ticker_alive())


def test_closing_the_controls_while_a_node_runs_stops_the_ticker(
    slabs: RunControls, gated: GatedSlab
) -> None:
    slabs.run_button.click()
    assert gated.entered.wait(WAIT_S)
    assert wait_for(ticker_alive)
    slabs.close()
    assert not ticker_alive()
