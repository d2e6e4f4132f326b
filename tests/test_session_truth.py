"""LiveSession tells the truth: an edit that fails leaves the session as it was, a node edited
while a run is in flight is stale when the run ends, and why each node ran is kept after it."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from stages.optics import FibreCfg, FibreStage, optics_nodes

from phys_pipeline.errors import (
    ConfigError,
    MissingStageError,
    NotAStateError,
    PolicyError,
    UnhashableValueError,
)
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.types import SimpleState

WAIT_S = 30  # a generous bound on waiting for the run thread, so a broken test fails, not hangs


class GatedFibre(FibreStage):
    """A fibre that, once entered, waits until the test opens its gate: the test edits the
    session while the run is inside it."""

    untracked = ("entered", "gate")

    def __init__(self, cfg: FibreCfg) -> None:
        super().__init__(cfg)
        self.entered, self.gate = threading.Event(), threading.Event()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return super().process(state, policy=policy)


@pytest.fixture
def gated() -> GatedFibre:
    return GatedFibre(FibreCfg())


@pytest.fixture(params=[1, 2], ids=["inline", "worker-threads"])
def live(request: pytest.FixtureRequest, gated: GatedFibre) -> LiveSession:
    """The optics DAG (grid -> pulse -> fibre -> duration, grid -> spectrum), run once, its
    fibre gated; ``fibre.length_m`` then edited to 2 m, so the next run computes the fibre.
    Nodes run inline on the run's thread, or on worker threads that report from there."""
    nodes = [n.replace(stage=gated) if n.id == "fibre" else n for n in optics_nodes()]
    scheduler = LocalScheduler(max_workers=request.param)
    session = LiveSession(
        nodes, SimpleState(), policy={"dispersion_scale": 1.0}, scheduler=scheduler
    )
    gated.gate.set()
    session.run()
    session.update("fibre", length_m=2.0)
    gated.gate.clear()
    return session


class RunInThread:
    """``session.run()`` on a thread of its own, as a widget's auto-run timer does."""

    def __init__(self, session: LiveSession) -> None:
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(session,), name="test-run")
        self.thread.start()

    def _run(self, session: LiveSession) -> None:
        self.result = session.run()

    def join(self) -> Any:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the run did not finish"
        return self.result


def run_blocked_in_fibre(live: LiveSession, gated: GatedFibre) -> RunInThread:
    """Start a run and return once the fibre computes and the session shows it running (a
    worker thread may enter the stage before the run's thread reports it)."""
    shown = threading.Event()
    unsubscribe = live.subscribe(lambda _, s: s.status["fibre"] == "running" and shown.set())
    running = RunInThread(live)
    assert gated.entered.wait(WAIT_S), "the run never reached the fibre"
    assert shown.wait(WAIT_S), "the session never showed the fibre running"
    unsubscribe()
    return running


# --- edits while a run is in flight ---------------------------------------------------------


def test_a_node_edited_during_a_run_is_stale_when_the_run_ends(live, gated):
    running = run_blocked_in_fibre(live, gated)
    assert live.status["fibre"] == "running"
    live.update("fibre", length_m=3.0)  # as a slider's callback would, from this thread
    assert live.status["fibre"] == "stale"
    gated.gate.set()
    result = running.join()

    assert sorted(result.ran) == ["duration", "fibre"]  # the run computed its own setup (2 m)
    assert result.metrics["fibre.gdd_ps2"] == pytest.approx(-0.04)
    assert live.status == {
        "grid": "hit",
        "pulse": "hit",
        "fibre": "stale",
        "duration": "stale",
        "spectrum": "hit",
    }
    stale = live.stale()
    assert set(stale) == {"fibre", "duration"} and set(live.current_stale) == set(stale)
    assert stale["fibre"].reasons == ("config field length_m changed",)
    assert live.reasons()["fibre"] == "config field length_m changed"


def test_listeners_never_hear_an_outdated_node_as_done(live, gated):
    heard: list[tuple[str, str]] = []
    running = run_blocked_in_fibre(live, gated)
    live.update("fibre", length_m=3.0)
    live.subscribe(lambda event, session: heard.append((event, session.status["fibre"])))
    gated.gate.set()
    running.join()
    assert heard and all(status == "stale" for _, status in heard)
    assert heard[-1][0] == "run"


def test_the_next_run_computes_what_was_edited_during_the_last(live, gated):
    running = run_blocked_in_fibre(live, gated)
    live.update("fibre", length_m=3.0)
    gated.gate.set()
    running.join()
    result = live.run()
    assert sorted(result.ran) == ["duration", "fibre"]
    assert result.metrics["fibre.gdd_ps2"] == pytest.approx(-0.06)
    assert live.status["fibre"] == "ran" and live.stale() == {}


def test_an_edit_undone_during_a_run_leaves_the_run_result_fresh(live, gated):
    running = run_blocked_in_fibre(live, gated)
    live.update("fibre", length_m=3.0)
    live.update("fibre", length_m=2.0)  # back to what the run computes
    gated.gate.set()
    running.join()
    assert live.status["fibre"] == "ran" and live.status["duration"] == "ran"
    assert live.stale() == {}


def test_a_policy_edit_during_a_run_makes_its_readers_stale(live, gated):
    running = run_blocked_in_fibre(live, gated)
    live.set_policy({"dispersion_scale": 2.0})  # only the fibre reads it
    gated.gate.set()
    running.join()
    assert live.status["fibre"] == "stale" and live.status["duration"] == "stale"
    assert live.status["grid"] == "hit" and live.status["spectrum"] == "hit"
    assert live.stale()["fibre"].reasons == ("policy changed",)


def test_an_edit_below_the_running_node_leaves_the_running_node_alone(live, gated):
    running = run_blocked_in_fibre(live, gated)
    live.update("duration", threshold=0.25)
    assert live.status["fibre"] == "running"
    gated.gate.set()
    running.join()
    assert live.status["fibre"] == "ran" and live.status["duration"] == "stale"
    assert set(live.stale()) == {"duration"}


# --- failed edits change nothing --------------------------------------------------------------


def snapshot(session: LiveSession) -> dict[str, Any]:
    """Everything an edit could change, compared by identity where it is an object."""
    return {
        "specs": {nid: id(spec) for nid, spec in session.specs.items()},
        "state": id(session.state),
        "policy": id(session.policy),
        "status": dict(session.status),
        "plan": id(session.current_plan),
        "reasons": session.reasons(),
        "runs": len(session.history),
    }


class Opaque:
    """A value nothing knows how to hash."""


FAILED_EDITS = {
    "unhashable config value": (
        lambda s: s.update("fibre", tags={"spool": Opaque()}),
        UnhashableValueError,
        ("'fibre'", "tags.spool", "Opaque"),
    ),
    "value the model refuses": (
        lambda s: s.update("fibre", length_m=-1.0),
        ConfigError,
        ("'fibre'", "'length_m'", "-1.0"),
    ),
    "unknown field": (
        lambda s: s.update("fibre", lenght_m=2.0),
        ConfigError,
        ("'fibre'", "'lenght_m'", "2.0"),
    ),
    "set_stage(None)": (
        lambda s: s.set_stage("fibre", None),
        MissingStageError,
        ("'fibre'", "stage", "None"),
    ),
    "stage with an unhashable config": (
        lambda s: s.set_stage("fibre", FibreStage(FibreCfg(tags={"spool": Opaque()}))),
        UnhashableValueError,
        ("'fibre'", "tags.spool", "Opaque"),
    ),
    "set_state(ndarray)": (
        lambda s: s.set_state(np.zeros(3)),
        NotAStateError,
        ("initial state", "ndarray", "array([0., 0., 0.])"),
    ),
    "unhashable policy value": (
        lambda s: s.set_policy({"dispersion_scale": Opaque()}),
        PolicyError,
        ("'dispersion_scale'", "Opaque"),
    ),
    "unhashable policy keyword": (
        lambda s: s.set_policy(dispersion_scale=lambda: 2.0),
        PolicyError,
        ("'dispersion_scale'", "lambda"),
    ),
}


@pytest.mark.parametrize(
    ("edit", "error", "named"), list(FAILED_EDITS.values()), ids=list(FAILED_EDITS)
)
def test_a_failed_edit_raises_a_typed_error_and_changes_nothing(session, edit, error, named):
    session.run()
    before = snapshot(session)
    events: list[str] = []
    session.subscribe(lambda event, s: events.append(event))
    with pytest.raises(error) as caught:
        edit(session)
    for part in named:
        assert part in str(caught.value)
    assert snapshot(session) == before
    assert events == []  # nothing to tell the views
    assert session.stale() == {}
    result = session.run()  # does not raise, and nothing was left to compute
    assert result.ok and result.ran == [] and len(result.hits) == 5


def test_a_failed_edit_keeps_the_pending_edits_before_it(session):
    session.run()
    session.update("fibre", length_m=2.0)
    with pytest.raises(ConfigError):
        session.update("fibre", length_m=500.0)
    assert session.config("fibre").length_m == 2.0
    assert set(session.stale()) == {"fibre", "duration"}
    assert sorted(session.run().ran) == ["duration", "fibre"]


def test_a_failed_edit_during_a_run_changes_nothing(live, gated):
    running = run_blocked_in_fibre(live, gated)
    with pytest.raises(ConfigError):
        live.update("fibre", length_m=-1.0)
    assert live.status["fibre"] == "running"
    gated.gate.set()
    running.join()
    assert live.status["fibre"] == "ran" and live.stale() == {}


# --- why each node ran, after the run --------------------------------------------------------


def test_reasons_after_a_run_say_why_each_node_ran(session):
    session.run()
    session.update("fibre", length_m=2.0)
    session.run()
    expected = {
        "grid": "cached",
        "pulse": "cached",
        "fibre": "config field length_m changed",
        "duration": "upstream changed",
        "spectrum": "cached",
    }
    assert session.reasons() == expected
    assert session.last_run_reasons() == expected


def test_the_last_runs_reasons_are_kept_through_later_edits(session):
    session.run()
    session.update("fibre", length_m=2.0)
    session.run()
    session.update("spectrum", floor_db=-60.0)
    assert session.reasons()["spectrum"] == "config field floor_db changed"
    assert session.last_run_reasons()["fibre"] == "config field length_m changed"
    assert session.last_run_reasons()["spectrum"] == "cached"


def test_a_first_run_says_not_cached_and_no_run_says_nothing(session):
    assert session.last_run_reasons() == {}
    session.run()
    assert set(session.last_run_reasons().values()) == {"not cached"}


def test_a_cancelled_run_is_recorded_with_what_it_did_not_get_to(live, gated):
    running = run_blocked_in_fibre(live, gated)
    live.cancel()  # a Stop button, from this thread
    gated.gate.set()
    result = running.join()
    record = live.history[-1]
    assert record.cancelled == result.cancelled and "duration" in record.cancelled
    assert record.hits == ["grid", "pulse", "spectrum"]
    assert live.status["duration"] == "cancelled"
