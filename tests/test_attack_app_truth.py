"""Attacks on what the notebook app shows: each test sets up a situation a physicist meets
(a run from a cell, a Stop, a failure, an edit after a restore, a swept node, a global edited in
a cell) and asserts what a truthful app shows there. No browser: the widget models and the
session are read directly."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import ALL, optics_nodes
from test_session_truth import GatedFibre, RunInThread, run_blocked_in_fibre

from phys_pipeline.cache import DiskStore
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    NodeSpec,
    NodeStatus,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)
from phys_pipeline.widgets import (
    ArtifactView,
    ConfigEditor,
    DagView,
    HistoryView,
    RunControls,
)

WAIT_S = 30.0  # what a gated stage waits for the test at most: a broken test fails, not hangs


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll a condition a background thread will make true; bounded, never hangs a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def idle(controls: RunControls) -> bool:
    return controls.run_button.description == "Run" and not controls.running


# --- a slab line whose bulk waits at a turnstile, one gate per call ---------------------------


class SlabCfg(StageConfig):
    thickness_mm: float = 1.0


class Slab(PipelineStage[SimpleState, SlabCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        z_mm = (state.payload or 0.0) + self.cfg.thickness_mm
        return StageResult(SimpleState(z_mm), metrics={"z_mm": z_mm})


class Turnstile:
    """Call ``i`` of the bulk sets ``entered[i]`` and waits for ``gates[i]``: the test says
    which computation of the bulk may go on, run after run."""

    def __init__(self, calls: int = 6) -> None:
        self.entered = [threading.Event() for _ in range(calls)]
        self.gates = [threading.Event() for _ in range(calls)]
        self._lock = threading.Lock()
        self._calls = 0

    def next_call(self) -> int:
        with self._lock:
            call, self._calls = self._calls, self._calls + 1
        return call

    def open_all(self) -> None:
        for gate in self.gates:
            gate.set()


class TurnstileSlab(Slab):
    untracked = ("turnstile",)

    def __init__(self, cfg: SlabCfg, turnstile: Turnstile) -> None:
        super().__init__(cfg)
        self.turnstile = turnstile

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        call = self.turnstile.next_call()
        self.turnstile.entered[call].set()
        assert self.turnstile.gates[call].wait(WAIT_S), f"the test never opened gate {call}"
        return super().process(state, policy=policy)


@pytest.fixture
def turnstile() -> Iterator[Turnstile]:
    gates = Turnstile()
    yield gates
    gates.open_all()  # no thread left waiting


@pytest.fixture
def slab_line(turnstile: Turnstile) -> Iterator[tuple[LiveSession, RunControls]]:
    """entrance -> bulk (at the turnstile) -> exit, run once (bulk call 0), then the bulk
    thickened: the next run computes bulk and exit. Nodes compute on a worker thread (the
    session's default), so a Stop ends a run at once."""
    nodes = [
        NodeSpec("entrance", stage=Slab(SlabCfg())),
        NodeSpec("bulk", ["entrance"], TurnstileSlab(SlabCfg(), turnstile)),
        NodeSpec("exit", ["bulk"], Slab(SlabCfg())),
    ]
    live = LiveSession(nodes, SimpleState(None))
    controls = RunControls(live)
    turnstile.gates[0].set()
    live.run()
    live.update("bulk", thickness_mm=2.0)
    yield live, controls
    turnstile.open_all()
    controls.close()


# --- the run controls --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_second_run_from_a_cell_counts_its_own_nodes_not_the_first_runs(
    session: LiveSession,
) -> None:
    """Runs started in a cell (``session.run()``): the bar of the second, which computes one
    node, must not read the first run's 5 nodes."""
    controls = RunControls(session)
    session.run()
    assert controls.progress.description == "5/5"
    session.update("duration", threshold=0.25)
    result = session.run()
    assert result.ran == ["duration"]
    assert controls.status_line.value.startswith("ran 1, hit 4")
    assert controls.progress.description == "1/1"  # shows "5/5"


@pytest.mark.timeout(60)
def test_a_rerun_from_the_artifact_panel_counts_the_node_it_recomputes(
    session: LiveSession,
) -> None:
    """The artifact view's Rerun button recomputes one node; the bar must count it (it reads
    "0/0", the node's old status not being a waiting one, or a former run's count)."""
    controls = RunControls(session)
    controls.run()
    result = session.rerun("fibre")
    assert result.ran == ["fibre"]
    assert controls.progress.description == "1/1"


GAIN = 2.0  # a global the amplifier's code reads: a cell edits it


class Amplifier(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = (state.payload or 1.0) * GAIN
        return StageResult(SimpleState(out), metrics={"out": out})


@pytest.mark.timeout(60)
def test_after_a_global_edited_in_a_cell_the_run_counts_the_nodes_it_computes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A global the stages read is edited in a cell, then Run: both nodes recompute (the run
    plans afresh), and the bar must say so, not "0/0" beside "ran 2, hit 0"."""
    nodes = [
        NodeSpec("first", stage=Amplifier(StageConfig())),
        NodeSpec("second", ["first"], Amplifier(StageConfig())),
    ]
    live = LiveSession(nodes, SimpleState(1.0))
    controls = RunControls(live)
    controls.run()
    monkeypatch.setattr(sys.modules[__name__], "GAIN", 3.0)
    assert set(live.stale()) == {"first", "second"}
    result = controls.run()
    assert result is not None and result.ran == ["first", "second"]
    assert result.metrics["second.out"] == pytest.approx(9.0)
    assert controls.status_line.value.startswith("ran 2, hit 0")
    assert controls.progress.description == "2/2"  # shows "0/0"


@pytest.mark.timeout(60)
def test_after_a_failure_run_does_not_say_nothing_is_stale(session: LiveSession) -> None:
    """The fibre failed and the duration was skipped: a click on Run computes both again,
    so the button's tooltip must not say "nothing is stale"."""
    controls = RunControls(session)
    session.update("fibre", broken=True)
    controls.run()
    assert set(session.stale()) == {"fibre", "duration"}
    assert controls.run_button.tooltip != "nothing is stale"
    assert "2" in controls.run_button.tooltip


@pytest.mark.timeout(60)
def test_after_a_stop_run_does_not_say_nothing_is_stale(
    slab_line: tuple[LiveSession, RunControls], turnstile: Turnstile
) -> None:
    """Stopped while the bulk computes: bulk and exit are cancelled and a click on Run
    computes them, so the tooltip must not say "nothing is stale"."""
    live, controls = slab_line
    controls.start()
    assert turnstile.entered[1].wait(WAIT_S)
    controls.stop()
    assert wait_for(lambda: idle(controls))
    assert set(live.last_result.cancelled) == {"bulk", "exit"}
    assert set(live.stale()) == {"bulk", "exit"}
    assert controls.run_button.tooltip != "nothing is stale"  # says "nothing is stale"


@pytest.mark.timeout(60)
def test_the_button_reads_stop_while_its_own_run_computes_after_a_cell_run(
    slab_line: tuple[LiveSession, RunControls], turnstile: Turnstile
) -> None:
    """A run from a cell is in flight when Run is clicked: the click's run waits for it, then
    computes. While it computes the bulk the button must read Stop (it reads Run: the cell
    run's end set it idle), or the user cannot stop it and a click starts yet another run."""
    live, controls = slab_line
    in_cell = RunInThread(live)
    assert turnstile.entered[1].wait(WAIT_S)
    controls.start()
    assert wait_for(lambda: controls.running)  # the click's run started
    live.update("bulk", thickness_mm=3.0)  # the click's run will compute the bulk again
    turnstile.gates[1].set()
    in_cell.join()
    assert turnstile.entered[2].wait(WAIT_S), "the click's run never reached the bulk"
    assert controls.running
    assert controls.run_button.description == "Stop"  # reads "Run"
    turnstile.gates[2].set()
    assert wait_for(lambda: idle(controls))


@pytest.mark.timeout(60)
def test_a_stop_pressed_while_the_clicks_run_waits_stops_that_run_too(
    slab_line: tuple[LiveSession, RunControls], turnstile: Turnstile
) -> None:
    """Stop pressed while the click's run waits behind a cell's run: the Stop cancels the
    cell's run, then the click's run goes on and computes the bulk and the exit with the button
    reading Run. Nothing may compute after a Stop the button accepted."""
    live, controls = slab_line
    in_cell = RunInThread(live)
    assert turnstile.entered[1].wait(WAIT_S)
    thread = controls.start()
    assert wait_for(lambda: controls.running)
    controls.stop()
    in_cell.join()
    turnstile.gates[2].set()  # a run after the Stop would pass the bulk at once
    thread.join(WAIT_S)
    assert not thread.is_alive()
    computed_after_stop = [record.ran for record in live.history[2:]]
    assert all(ran == [] for ran in computed_after_stop), computed_after_stop


@pytest.mark.timeout(60)
def test_a_run_that_raises_does_not_leave_the_bar_looking_busy(tmp_path) -> None:
    """A strict cache refuses the fibre's entry and the run raises (shown in ``errors``): the
    bar must not stay in the running look ("info"), as if the run went on."""
    store = DiskStore(tmp_path / "cache", strict=True)
    live = LiveSession(optics_nodes(), SimpleState(), cache=store)
    planted = entry_path(store.root, live.current_plan.nodes["fibre"].key).parent
    planted.parent.mkdir(parents=True)
    planted.write_text("a file where the entry's directory goes")
    controls = RunControls(live)
    assert controls.run() is None
    assert "run failed" in controls.errors.value
    assert NodeStatus.RUNNING not in live.status.values()
    assert controls.progress.bar_style != "info"


# --- the DAG's tooltips ------------------------------------------------------------------------


@pytest.fixture
def gated_optics() -> Iterator[tuple[LiveSession, GatedFibre]]:
    """The optics session run once, its fibre then gated and lengthened to 2 m."""
    from stages.optics import FibreCfg

    gated = GatedFibre(FibreCfg())
    nodes = [n.replace(stage=gated) if n.id == "fibre" else n for n in optics_nodes()]
    live = LiveSession(nodes, SimpleState(), policy={"dispersion_scale": 1.0})
    gated.gate.set()
    live.run()
    live.update("fibre", length_m=2.0)
    gated.gate.clear()
    yield live, gated
    gated.gate.set()


@pytest.mark.timeout(60)
def test_an_edit_undone_during_a_run_leaves_the_runs_reasons_in_the_tooltips(
    gated_optics: tuple[LiveSession, GatedFibre],
) -> None:
    """An edit made and undone while the fibre computes leaves the setup the run's own: the
    fibre is shown ran, and its tooltip must say why it ran (its length changed), not
    "cached", as it does when no edit came meanwhile."""
    live, gated = gated_optics
    dag = DagView(live)
    running = run_blocked_in_fibre(live, gated)
    live.update("spectrum", floor_db=-30.0)
    live.update("spectrum", floor_db=-40.0)  # undone: the setup the run computes
    gated.gate.set()
    running.join()
    assert live.status["fibre"] == "ran" and live.stale() == {}
    assert live.last_run_reasons()["fibre"] == "config field length_m changed"
    assert dag.statuses["fibre"] == "ran"
    assert dag.reasons["fibre"] == "config field length_m changed"  # says "cached"


@pytest.mark.timeout(60)
def test_holding_reasons_after_a_run_without_edits_say_why_each_node_ran(
    gated_optics: tuple[LiveSession, GatedFibre],
) -> None:
    live, gated = gated_optics
    dag = DagView(live)
    gated.gate.set()
    live.run()
    assert dag.reasons["fibre"] == "config field length_m changed"
    assert dag.reasons["grid"] == "cached"


# --- history and restore -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_restore_message_does_not_outlive_an_edit_that_makes_it_false(
    session: LiveSession,
) -> None:
    """ "the next run loads every node from the cache" stays in the history panel after the
    fibre is edited, though the next run then computes fibre and duration."""
    view = HistoryView(session)
    session.run()
    session.update("fibre", length_m=2.0)
    session.run()
    view.restore(1)
    assert "the next run loads every node from the cache" in view.message.value
    session.update("fibre", length_m=5.0)
    assert set(session.stale()) == {"fibre", "duration"}
    assert "the next run loads every node from the cache" not in view.message.value


@pytest.mark.timeout(60)
def test_holding_restore_during_a_run_ends_with_the_restored_setup_shown(
    gated_optics: tuple[LiveSession, GatedFibre],
) -> None:
    """Run 2 (2 m) is in flight when run 1 (1 m) is restored: when it ends, the fibre is shown
    as the cache holds the restored setup, its plots flagged stale, and the record of run 2
    lists 2 m with the metrics of 2 m."""
    live, gated = gated_optics
    view = HistoryView(live)
    artifacts = ArtifactView(live, "fibre", drawing_process=None)
    running = run_blocked_in_fibre(live, gated)
    view.restore(1)
    assert "the next run loads every node from the cache" in view.message.value
    gated.gate.set()
    running.join()
    assert live.config("fibre").length_m == 1.0
    assert live.status["fibre"] == "cached" and live.status["duration"] == "cached"
    assert "pp-stale-badge" in artifacts.title.value
    record = live.history[-1]
    assert record.nodes["fibre"].config["length_m"] == 2.0
    assert record.metrics["fibre.gdd_ps2"] == pytest.approx(-0.04)


# --- the artifact panels -----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_sweeps_table_and_plot_are_marked_stale_after_an_edit_upstream() -> None:
    """After the grid is edited every variant is stale (the DAG says so, the metric table is
    greyed) but the sweep table and the sweep plot still show the old numbers as current."""
    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"fwhm_ps": [0.5, 2.0]})])
    live = LiveSession(nodes, SimpleState())
    view = ArtifactView(live, drawing_process=None)
    live.run()
    assert "t0_ps" in view.sweep.value and view.sweep_plot.layout.display != "none"
    live.update("grid", N=128)
    assert all(status == "stale" for status in live.status.values())
    assert "pp-stale" in view.metrics.value  # the metric table is greyed
    plot_marked = (
        "pp-stale" in view.sweep_plot._dom_classes or view.sweep_plot.layout.display == "none"
    )
    assert "stale" in view.sweep.value and plot_marked


@pytest.mark.timeout(60)
def test_a_watched_node_a_targeted_run_left_out_is_not_shown_as_never_run(
    session: LiveSession,
) -> None:
    """Run 1 computed everything; run 2 (``targets=["spectrum"]``) did not cover the duration.
    Its watched panel says "not run yet", which it is not: it ran in run 1."""
    view = ArtifactView(session, "grid", drawing_process=None)
    session.run()
    assert "phase_span" in view.panels["duration"].metrics.value
    session.run(targets=["spectrum"])
    assert "not run yet" not in view.panels["duration"].metrics.value


@pytest.mark.timeout(60)
def test_holding_a_skipped_nodes_panel_says_why_it_has_no_result(session: LiveSession) -> None:
    view = ArtifactView(session, "duration", drawing_process=None)
    session.run()
    session.update("fibre", broken=True)
    session.run()
    texts = [o["data"].get("text/plain", "") for o in view.output.outputs]
    assert any("skipped: upstream node 'fibre' failed" in t for t in texts), texts
    assert "phase_span" not in view.metrics.value
    assert session.status["duration"] == "skipped"


# --- the config editor -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_refusal_message_does_not_name_a_kept_value_the_config_no_longer_has(
    session: LiveSession,
) -> None:
    """500 m is refused and the row says "kept 1.0"; a restore then sets 2.0 m. The row shows
    2.0 and must not go on saying the config kept 1.0."""
    editor = ConfigEditor(session, "fibre")
    session.update("fibre", length_m=2.0)
    session.run()
    session.update("fibre", length_m=1.0)
    editor.entries["length_m"].value = "500"
    assert "kept 1.0" in editor.errors["length_m"].value
    assert session.config("fibre").length_m == 1.0
    session.restore(1)
    assert session.config("fibre").length_m == 2.0
    assert editor.entries["length_m"].value == "2.0"
    assert "kept 1.0" not in editor.errors["length_m"].value


# --- holding: what the app gets right ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_holding_a_stop_then_edit_then_run_shows_the_edit_computed(
    slab_line: tuple[LiveSession, RunControls], turnstile: Turnstile
) -> None:
    live, controls = slab_line
    controls.start()
    assert turnstile.entered[1].wait(WAIT_S)
    controls.stop()
    assert wait_for(lambda: idle(controls))
    live.update("exit", thickness_mm=5.0)
    assert live.status["exit"] == "stale" and live.status["bulk"] == "stale"
    turnstile.gates[2].set()
    assert controls.run() is not None
    assert live.last_result.metrics["exit.z_mm"] == pytest.approx(8.0)
    assert dict(live.status) == {"entrance": "hit", "bulk": "ran", "exit": "ran"}
    assert controls.status_line.value.startswith("ran 2, hit 1")
    assert controls.progress.description == "2/2"


@pytest.mark.timeout(60)
def test_holding_history_rows_match_their_results_through_a_failure_and_its_fix(
    session: LiveSession,
) -> None:
    view = HistoryView(session)
    session.run()
    session.update("fibre", broken=True)
    session.run()
    session.update("fibre", broken=False, length_m=3.0)
    session.run()
    failed, fixed = session.history[1], session.history[2]
    assert failed.failed == ["fibre"] and failed.skipped == ["duration"]
    assert "fibre.gdd_ps2" not in failed.metrics
    assert fixed.nodes["fibre"].config["length_m"] == 3.0
    assert fixed.metrics["fibre.gdd_ps2"] == pytest.approx(-0.06)
    assert set(fixed.ran) == {"fibre", "duration"}
    view.pinned = 1
    assert "fibre.length_m" in view.comparison.value
    assert set(session.status.values()) <= {"ran", "hit"} and set(session.status) == ALL


@pytest.mark.timeout(60)
def test_a_node_a_targeted_run_left_out_turns_stale_not_never_run(session: LiveSession) -> None:
    """Run 1 computed everything; run 2 covered only the spectrum. An edit upstream makes the
    duration stale: it has a result (run 1's), it is not a node that never ran."""
    session.run()
    session.run(targets=["spectrum"])
    session.update("grid", N=128)
    assert session.status["duration"] == "stale"
