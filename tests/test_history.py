"""Run history: every session run is recorded as plain data (what changed, what each node did
and why, timings, metrics, the setup), tabulated by ``to_frame``, saved and loaded as JSON, and
``restore`` puts a run's configs and policy back so the next run loads everything."""

from __future__ import annotations

import gc
import json
import sys
import weakref

import numpy as np
import pytest
from stages.optics import ALL

from phys_pipeline.errors import ConfigError, UnknownNodeError
from phys_pipeline.history import Change, ChangeKind, RunHistory
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, SimpleState


@pytest.fixture
def explored(session: LiveSession) -> LiveSession:
    """The optics session (``session`` in conftest) run once, then three edits, each run:
    the fibre lengthened, the dispersion policy doubled, the pulse shortened."""
    session.run()
    session.update("fibre", length_m=2.0)
    session.run()
    session.set_policy(dispersion_scale=2.0)
    session.run()
    session.update("pulse", fwhm_ps=0.5)
    session.run()
    return session


def test_every_run_is_numbered_with_what_changed_since_the_one_before(explored):
    history = explored.history
    assert [record.number for record in history] == [1, 2, 3, 4]
    assert [record.changes for record in history] == [
        (),
        (Change(ChangeKind.CONFIG, "fibre", "length_m", 1.0, 2.0),),
        (Change(ChangeKind.POLICY, None, "dispersion_scale", 1.0, 2.0),),
        (Change(ChangeKind.CONFIG, "pulse", "fwhm_ps", 1.0, 0.5),),
    ]
    assert [str(c) for r in history for c in r.changes] == [
        "fibre.length_m: 1.0 -> 2.0",
        "policy dispersion_scale: 1.0 -> 2.0",
        "pulse.fwhm_ps: 1.0 -> 0.5",
    ]


def test_a_record_says_what_each_node_did_and_why(explored):
    first, second, third, fourth = explored.history
    assert sorted(first.ran) == sorted(ALL) and first.hits == []
    assert second.ran == ["fibre", "duration"]
    assert second.hits == ["grid", "pulse", "spectrum"]
    assert third.ran == ["fibre", "duration"]  # only the fibre reads the policy
    assert fourth.ran == ["pulse", "fibre", "duration"]
    assert second.reasons == {
        "grid": "cached",
        "pulse": "cached",
        "fibre": "config field length_m changed",
        "duration": "upstream changed",
        "spectrum": "cached",
    }
    assert third.reasons["fibre"] == "policy changed"
    assert set(fourth.timings) == ALL
    assert fourth.failed == fourth.skipped == fourth.cancelled == []


def test_a_record_holds_the_runs_metrics_timing_and_identity(explored):
    result = explored.last_result
    last = explored.history[-1]
    assert last.metrics == result.metrics
    assert last.run_id == result.provenance["run_id"]
    assert last.duration_s == result.provenance["duration_s"]
    assert last.timings == {nid: run.duration_s for nid, run in result.runs.items()}
    starts = [record.started for record in explored.history]
    assert starts == sorted(starts)


def test_a_record_holds_the_setup_of_its_run(explored):
    second, third = explored.history[1], explored.history[2]
    assert second.nodes["fibre"].config["length_m"] == 2.0
    assert second.parameters["fibre.length_m"] == 2.0
    assert second.parameters["grid.weights"] == [1.0, 1.0, 1.0]  # an array, as plain data
    assert second.parameters["pulse.shape"] == "gaussian"  # an enum, by its value
    assert (second.policy, third.policy) == ({"dispersion_scale": 1.0}, {"dispersion_scale": 2.0})
    assert second.policy_hash != third.policy_hash
    assert second.state_digest == third.state_digest
    plan = explored.last_result.plan
    assert explored.history[-1].nodes["fibre"].cache_key == plan.nodes["fibre"].key
    assert explored.history[-1].nodes["fibre"].stage == plan.nodes["fibre"].stage_type


def test_a_large_array_in_a_config_is_recorded_by_a_summary_that_sees_changes(session):
    session.update("grid", weights=np.ones(4096))
    session.run()
    session.update("grid", weights=np.linspace(0.5, 1.0, 4096))
    session.run()
    first, second = (record.parameters["grid.weights"] for record in session.history)
    assert first.startswith("<ndarray float64 (4096,) ") and first != second
    assert [c.field for c in session.history[1].changes] == ["weights"]
    assert session.restore(1) == {}  # the arrays themselves are kept in memory


def test_older_records_do_not_keep_alive_what_a_config_held_then(session):
    """The objects a config's fields held are kept by the last record only (the next run's
    record compares them, to share unchanged values): an array a config held, replaced in
    place past the frozen model, is freed two runs later; unchanged configs are still shared."""
    old = np.ones(4096)
    session.update("grid", weights=old)
    session.run()
    held_once = weakref.ref(old)
    del old
    object.__setattr__(session.node("grid").stage.cfg, "weights", np.zeros(4096))
    session.run()
    session.update("fibre", length_m=3.0)
    session.run()
    gc.collect()
    assert held_once() is None
    second, third = session.history[1:]
    assert third.nodes["pulse"].config is second.nodes["pulse"].config
    assert third.nodes["grid"].config is second.nodes["grid"].config
    assert third.nodes["fibre"].config != second.nodes["fibre"].config


def test_a_failed_run_records_the_failure_and_what_it_skipped(session):
    session.run()
    session.update("fibre", broken=True)
    session.run()
    record = session.history[-1]
    assert record.failed == ["fibre"] and record.skipped == ["duration"]
    assert record.nodes["fibre"].error == "RuntimeError: fibre snapped"
    assert record.changes == (Change(ChangeKind.CONFIG, "fibre", "broken", False, True),)


def test_a_run_of_some_targets_records_the_rest_as_not_covered(session):
    session.run(targets=["spectrum"])
    record = session.history[-1]
    assert record.ran == ["grid", "spectrum"]
    assert record.nodes["fibre"].status is None and "fibre" not in record.timings
    assert record.nodes["fibre"].config["length_m"] == 1.0  # the setup is whole


def test_a_new_stage_class_and_a_new_state_are_changes(session):
    from stages.optics import FibreStage

    class LossyFibre(FibreStage):
        pass

    session.run()
    session.set_stage("fibre", LossyFibre(session.config("fibre")))
    session.set_state(SimpleState(payload=1.0))
    session.run()
    kinds = {(c.kind, c.node_id) for c in session.history[-1].changes}
    assert kinds == {(ChangeKind.STAGE, "fibre"), (ChangeKind.STATE, None)}


def test_listeners_find_the_record_when_they_hear_the_run(session):
    seen = []
    session.subscribe(lambda event, s: event == "run" and seen.append(len(s.history)))
    session.run()
    session.run()
    assert seen == [1, 2]


# --- restore ------------------------------------------------------------------------------------


def test_restoring_a_run_makes_the_next_run_all_hits(explored):
    events = []
    explored.subscribe(lambda event, s: events.append(event))
    stale = explored.restore(2)
    assert stale == {} and events == ["edit"]
    assert explored.config("fibre").length_m == 2.0 and explored.config("pulse").fwhm_ps == 1.0
    assert explored.policy == {"dispersion_scale": 1.0}
    assert explored.status == {  # loaded by the last run, or only in the cache
        "grid": "hit",
        "pulse": "cached",
        "fibre": "cached",
        "duration": "cached",
        "spectrum": "hit",
    }
    result = explored.run()
    assert result.ran == [] and sorted(result.hits) == sorted(ALL)
    assert result.metrics == explored.history[1].metrics
    assert explored.history[-1].changes == (
        Change(ChangeKind.CONFIG, "pulse", "fwhm_ps", 0.5, 1.0),
        Change(ChangeKind.POLICY, None, "dispersion_scale", 2.0, 1.0),
    )


def test_restoring_from_a_loaded_history_validates_the_values_and_hits(explored, tmp_path):
    explored.history.save(tmp_path / "history.json")
    explored.history = RunHistory.load(tmp_path / "history.json")
    explored.restore(3)
    assert explored.config("fibre").length_m == 2.0 and explored.config("pulse").fwhm_ps == 1.0
    assert explored.policy == {"dispersion_scale": 2.0}
    result = explored.run()
    assert result.ran == [] and result.metrics == explored.history.run(3).metrics
    assert explored.history[-1].number == 5  # the loaded history goes on


def test_a_restore_the_configs_refuse_changes_nothing(explored, tmp_path):
    path = tmp_path / "history.json"
    explored.history.save(path)
    data = json.loads(path.read_text())
    data["runs"][1]["nodes"]["fibre"]["config"]["length_m"] = -5.0
    explored.history = RunHistory.from_data(data)
    before = (explored.specs, explored.policy, dict(explored.status))
    with pytest.raises(ConfigError) as caught:
        explored.restore(2)
    assert (caught.value.field, caught.value.value) == ("length_m", -5.0)
    assert "node 'fibre'" in str(caught.value)
    assert (explored.specs, explored.policy, dict(explored.status)) == before
    assert explored.stale() == {}


def test_restoring_an_unknown_run_or_another_dags_run_is_an_error(explored):
    with pytest.raises(KeyError, match=r"no run 9 in this history; runs: 1, 2, 3, 4"):
        explored.restore(9)
    other = LiveSession([NodeSpec(id="laser", stage=explored.node("grid").stage)], SimpleState())
    other.history = explored.history
    with pytest.raises(UnknownNodeError, match="unknown node id 'grid'"):
        other.restore(1)


# --- the table and the file ---------------------------------------------------------------------


def test_to_frame_has_a_row_per_run_with_parameters_and_metrics(explored):
    frame = explored.history.to_frame()
    assert list(frame.index) == [1, 2, 3, 4] and frame.index.name == "run"
    assert list(frame.columns[:2]) == ["started", "duration_s"]
    assert {"fibre.length_m", "pulse.fwhm_ps", "grid.N", "duration.threshold"} <= set(frame)
    assert {"fibre.gdd_ps2", "duration.phase_span", "pulse.t0_ps"} <= set(frame)
    assert list(frame["fibre.length_m"]) == [1.0, 2.0, 2.0, 2.0]
    assert list(frame["fibre.gdd_ps2"]) == pytest.approx([-0.02, -0.04, -0.08, -0.08])
    # the grid reports its N as a metric too: the parameter keeps the name
    assert list(frame["grid.N"]) == [256] * 4 and "metric.grid.N" in frame
    assert str(frame["started"].dtype).startswith("datetime64")


def test_to_frame_without_pandas_says_what_to_install(explored, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    with pytest.raises(ImportError, match="to_frame needs pandas: pip install pandas"):
        explored.history.to_frame()


def test_a_history_saves_as_plain_json_and_loads_equal(explored, tmp_path):
    path = explored.history.save(tmp_path / "history.json")
    data = json.loads(path.read_text())  # plain JSON: no pickles
    assert data["format"] == RunHistory.FORMAT and len(data["runs"]) == 4
    loaded = RunHistory.load(path)
    assert list(loaded) == list(explored.history)
    assert loaded.to_frame().equals(explored.history.to_frame())
    assert loaded[1].changes[0].kind is ChangeKind.CONFIG
    assert loaded[1].nodes["fibre"].status == "ran"


def test_loading_a_file_that_is_not_a_history_says_so(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps([{"stage": "fibre"}]))
    with pytest.raises(ValueError, match=r"manifest\.json: not a phys-pipeline run history"):
        RunHistory.load(path)
    path.write_text(json.dumps({"format": RunHistory.FORMAT, "version": 99, "runs": []}))
    with pytest.raises(ValueError, match="version 99"):
        RunHistory.load(path)
