"""Attacks on LiveSession's truth and its run history: a restore that would quietly give back
another setup than the run's, statuses that say a node runs when it does not (or does not when
it does), and runs that overlap. Each test names what must never happen."""

from __future__ import annotations

import enum
import math
import threading
from typing import Any

import numpy as np
import pytest
from pydantic import field_validator
from stages.optics import FibreCfg, FibreStage, optics_nodes
from test_session_truth import WAIT_S, GatedFibre, RunInThread, run_blocked_in_fibre

from phys_pipeline.cache import DiskStore
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.errors import CacheError, ConfigError, PolicyError
from phys_pipeline.history import RunHistory
from phys_pipeline.policy import PolicyBag
from phys_pipeline.progress import report_progress
from phys_pipeline.retry import RetryPolicy
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

# --- restore: the run's setup, exactly, or a refusal ------------------------------------------


class Method(enum.Enum):
    RK4 = "rk4"
    EULER = "euler"


class PrismCfg(StageConfig):
    """An apex angle given in degrees and kept in radians (a converting validator), and a
    transmission mask of any type (an array here)."""

    apex: float = 30.0
    mask: Any = None

    @field_validator("apex")
    @classmethod
    def _to_radians(cls, degrees: float) -> float:
        return math.radians(degrees)


class Prism(PipelineStage[SimpleState, PrismCfg]):
    """Deviation from the apex angle; the integrator the policy names changes the answer."""

    policy_keys = ("method",)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        method = policy.get("method") if policy else None
        order = 4.0 if method is Method.RK4 else 1.0
        mask = self.cfg.mask
        transmitted = float(np.sum(mask)) if isinstance(mask, np.ndarray) else -1.0
        return StageResult(
            SimpleState(self.cfg.apex),
            metrics={"apex_rad": self.cfg.apex, "order": order, "transmitted": transmitted},
        )


@pytest.fixture
def prism(tmp_path) -> LiveSession:
    """A prism run at 30 degrees with a mask of 100 ones and RK4, then at 60 degrees with a mask
    of 100 zeros and Euler; its history saved to JSON and loaded back (a new kernel)."""
    cfg = PrismCfg(apex=30.0, mask=np.ones(100))
    live = LiveSession([NodeSpec("prism", stage=Prism(cfg))], SimpleState(), policy={})
    live.set_policy(method=Method.RK4)
    live.run()
    live.update("prism", apex=60.0, mask=np.zeros(100))
    live.set_policy(method=Method.EULER)
    live.run()
    live.history = RunHistory.load(live.history.save(tmp_path / "history.json"))
    return live


def setup_of(live: LiveSession) -> tuple[Any, ...]:
    return (live.specs, live.policy, dict(live.status), live.current_plan)


@pytest.mark.timeout(60)
def test_a_saved_run_is_restored_exactly_or_refused_never_approximately(prism):
    """Each of the three differs from run 1's after a plain restore (the angle converted twice,
    the mask becoming its summary string, the integrator a string no stage compares equal to
    the enum), and the next run would compute another answer, labelled run 1's setup."""
    before = setup_of(prism)
    with pytest.raises((ConfigError, PolicyError)):
        prism.restore(1)
    assert setup_of(prism) == before


@pytest.mark.timeout(60)
def test_a_converting_validator_is_not_applied_twice_by_a_restore(prism):
    prism.set_policy(method=Method.RK4)  # only the config differs from run 1's now
    prism.update("prism", mask=np.ones(100))
    before = setup_of(prism)
    with pytest.raises(ConfigError) as caught:
        prism.restore(1)
    assert caught.value.field == "apex" and "node 'prism'" in str(caught.value)
    assert setup_of(prism) == before


@pytest.mark.timeout(60)
def test_an_array_kept_by_its_summary_is_not_restored_as_that_string(prism):
    prism.set_policy(method=Method.RK4)
    prism.update("prism", apex=30.0)
    before = setup_of(prism)
    with pytest.raises(ConfigError) as caught:
        prism.restore(1)
    assert caught.value.field == "mask" and "summary" in caught.value.reason
    assert setup_of(prism) == before


@pytest.mark.timeout(60)
def test_a_policy_value_plain_data_cannot_give_back_refuses_the_restore(prism):
    prism.update("prism", apex=30.0, mask=np.ones(100))
    before = setup_of(prism)
    with pytest.raises(PolicyError) as caught:
        prism.restore(1)
    assert caught.value.key == "method"
    assert setup_of(prism) == before


@pytest.mark.timeout(60)
def test_a_value_plain_data_cannot_tell_from_the_current_one_is_not_taken_for_it(tmp_path):
    """Run 1's mask was a tuple, the current one a list of the same numbers: both are saved as
    [1, 2], so a plain restore would keep the list and call it run 1's setup (the key,
    which tells them apart, knows better)."""
    live = LiveSession([NodeSpec("prism", stage=Prism(PrismCfg(mask=(1, 2))))], SimpleState())
    live.run()
    live.update("prism", mask=[1, 2])
    live.run()
    live.history = RunHistory.load(live.history.save(tmp_path / "history.json"))
    before = setup_of(live)
    with pytest.raises(ConfigError, match="cannot be given back from the history's data"):
        live.restore(1)
    assert setup_of(live) == before


@pytest.mark.timeout(60)
def test_an_array_changed_in_place_since_the_run_is_not_restored_as_the_runs(session):
    """The run's config object is kept in memory, but the array in it was written to since:
    giving it back is not run 1's setup."""
    weights = np.ones(3)
    session.update("grid", weights=weights)
    session.run()
    session.update("grid", N=512)
    session.run()
    weights[0] = 7.0
    before = setup_of(session)
    with pytest.raises(ConfigError) as caught:
        session.restore(1)
    assert caught.value.field == "weights"
    assert setup_of(session) == before


@pytest.mark.timeout(60)
def test_a_restore_after_the_stage_class_was_redefined_never_loads_the_old_classes_result(
    session,
):
    """A cell redefining the stage: restoring a run of the old class puts its config back,
    and the node computes with the new code instead of loading what the old code made."""

    class FibreStage2(FibreStage):  # the cell run again, with a fix in it
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
            result = super().process(state, policy=policy)
            result.metrics["gdd_ps2"] *= 10
            return result

    session.run()
    session.update("fibre", length_m=2.0)
    session.run()
    session.set_stage("fibre", FibreStage2(session.config("fibre")))
    stale = session.restore(1)
    assert stale["fibre"].reasons[0].startswith("stage class changed")
    result = session.run()
    assert "fibre" in result.ran and result.metrics["fibre.gdd_ps2"] == pytest.approx(-0.2)


@pytest.mark.timeout(60)
def test_a_policy_array_written_to_in_place_is_not_served_from_the_cache():
    class Masked(PipelineStage[SimpleState, StageConfig]):
        policy_keys = ("mask",)

        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
            passed = float(np.sum(policy["mask"])) if policy else 0.0
            return StageResult(SimpleState(passed), metrics={"passed": passed})

    mask = np.ones(4)
    live = LiveSession(
        [NodeSpec("m", stage=Masked(StageConfig()))], SimpleState(), policy={"mask": mask}
    )
    live.run()
    mask[:] = 0.0
    assert live.run().metrics["m.passed"] == 0.0


# --- statuses during and after a run ----------------------------------------------------------


@pytest.fixture(params=[1, 2], ids=["inline", "worker-threads"])
def held(request: pytest.FixtureRequest) -> tuple[LiveSession, GatedFibre]:
    """The optics session run once, its fibre then gated and lengthened to 2 m."""
    gated = GatedFibre(FibreCfg())
    nodes = [n.replace(stage=gated) if n.id == "fibre" else n for n in optics_nodes()]
    live = LiveSession(
        nodes,
        SimpleState(),
        policy={"dispersion_scale": 1.0},
        scheduler=LocalScheduler(max_workers=request.param),
    )
    gated.gate.set()
    live.run()
    live.update("fibre", length_m=2.0)
    gated.gate.clear()
    return live, gated


@pytest.mark.timeout(60)
def test_an_edit_undone_while_its_node_runs_shows_it_running_again(held):
    live, gated = held
    running = run_blocked_in_fibre(live, gated)
    live.update("fibre", length_m=3.0)
    assert live.status["fibre"] == "stale"
    live.update("fibre", length_m=2.0)  # back to what the run computes: it still runs
    assert live.status["fibre"] == "running"
    gated.gate.set()
    running.join()
    assert live.status["fibre"] == "ran"


@pytest.mark.timeout(60)
def test_a_run_a_strict_cache_ends_leaves_no_node_running(tmp_path):
    """A strict store that refuses the fibre's entry ends the run with CacheError (as asked);
    the fibre must not be shown running forever after: every node is shown as the cache
    holds it."""
    store = DiskStore(tmp_path / "cache", strict=True)
    live = LiveSession(optics_nodes(), SimpleState(), cache=store)
    planted = entry_path(store.root, live.current_plan.nodes["fibre"].key).parent
    planted.parent.mkdir(parents=True)
    planted.write_text("a file where the entry's directory goes")
    heard: list[str] = []
    live.subscribe(lambda event, s: heard.append(event))
    with pytest.raises(CacheError):
        live.run()
    assert NodeStatus.RUNNING not in live.status.values()
    assert live.running_since == {} and live.progress == {}
    stale = live.stale()  # the fibre sits in the memory tier, in front of the refusing disk
    assert live.status == {nid: "not run" if nid in stale else "cached" for nid in live.specs}
    assert {"grid", "pulse"}.isdisjoint(stale) and "duration" in stale
    assert heard[-1] == "status"  # the views hear it


@pytest.mark.timeout(60)
def test_overlapping_runs_leave_the_later_runs_result_and_record_last(held):
    """A run started while another is in flight (an auto-run and a click): the session's last
    result and last record must be of the setup it shows, not of the older run that happened
    to end last."""
    live, gated = held
    older = run_blocked_in_fibre(live, gated)  # computes 2 m, held in the fibre
    live.set_stage("fibre", FibreStage(FibreCfg(length_m=3.0)))  # not gated
    newer = RunInThread(live)
    gated.gate.set()
    older.join()
    newer.join()
    assert live.config("fibre").length_m == 3.0
    assert live.last_result.metrics["fibre.gdd_ps2"] == pytest.approx(-0.06)
    assert live.history[-1].nodes["fibre"].config["length_m"] == 3.0
    assert [r.nodes["fibre"].config["length_m"] for r in live.history] == [1.0, 2.0, 3.0]
    assert live.status["fibre"] in ("ran", "hit") and live.stale() == {}


@pytest.mark.timeout(60)
def test_a_run_cancelled_then_edited_shows_the_edit_and_records_the_cancel(held):
    live, gated = held
    running = run_blocked_in_fibre(live, gated)
    live.cancel()
    live.update("fibre", length_m=3.0)
    gated.gate.set()
    result = running.join()
    assert "duration" in result.cancelled
    assert live.status["fibre"] == "stale" and live.status["duration"] == "stale"
    assert live.history[-1].cancelled == result.cancelled
    rerun = live.run()
    assert rerun.metrics["fibre.gdd_ps2"] == pytest.approx(-0.06)
    assert live.stale() == {} and live.status["fibre"] == "ran"


class Slab(PipelineStage[SimpleState, StageConfig]):
    """Reports its progress every 50 ms for ``tags['seconds']``; the slab that times out keeps
    on reporting from its abandoned thread."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        steps = int(self.cfg.tags["seconds"] / 0.05)
        for step in range(steps):
            report_progress(step / steps, f"step {step}")
            threading.Event().wait(0.05)
        return StageResult(SimpleState(1.0), metrics={"done": 1.0})


@pytest.mark.timeout(60)
def test_a_timed_out_nodes_late_progress_is_not_shown_as_running():
    nodes = [
        NodeSpec(
            "hung",
            stage=Slab(StageConfig(tags={"seconds": 1.5})),
            retry=RetryPolicy(timeout_s=0.3),
        ),
        NodeSpec("long", stage=Slab(StageConfig(tags={"seconds": 1.5}))),
    ]
    live = LiveSession(nodes, SimpleState(), scheduler=LocalScheduler(max_workers=2))
    untrue: list[tuple[str, Any]] = []

    def check(event: str, session: LiveSession) -> None:
        progress = dict(session.progress)
        if event == "progress" and "hung" in progress and session.status["hung"] != "running":
            untrue.append((session.status["hung"], progress["hung"]))

    live.subscribe(check)
    result = live.run()
    assert result.runs["hung"].status is NodeStatus.FAILED
    assert untrue == []


@pytest.mark.timeout(120)
def test_edits_from_several_threads_while_runs_happen_end_truthful(held):
    """Sliders on other threads keep editing while runs come and go; once they stop, every
    node shown ran or hit was computed for the setup shown, and every node shown stale is."""
    live, gated = held
    gated.gate.set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def slide(node: str, field: str, values: list[float]) -> None:
        try:
            i = 0
            while not stop.is_set():
                live.update(node, **{field: values[i % len(values)]})
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    sliders = [
        threading.Thread(target=slide, args=("fibre", "length_m", [1.0, 2.0, 3.0])),
        threading.Thread(target=slide, args=("pulse", "fwhm_ps", [0.5, 1.0])),
        threading.Thread(target=slide, args=("duration", "threshold", [0.25, 0.5])),
    ]
    for slider in sliders:
        slider.start()
    runs = [RunInThread(live) for _ in range(3)]
    for _ in range(5):
        live.run()
    for run in runs:
        run.join()
    stop.set()
    for slider in sliders:
        slider.join(WAIT_S)
    assert errors == []
    plan, result = live.current_plan, live.last_result
    stale = live.stale()
    for nid, status in live.status.items():
        if status in ("ran", "hit"):
            assert result.runs[nid].cache_key == plan.nodes[nid].key, nid
        if status in ("stale", "not run"):
            assert nid in stale, nid
        assert status != "running", nid
    final = live.run()
    for nid, run in final.runs.items():
        assert run.cache_key == live.current_plan.nodes[nid].key
