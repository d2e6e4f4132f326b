"""LiveSession: validated edits mark exactly what they invalidate; runs redo only that."""

from __future__ import annotations

import warnings

import pytest
from dag_stages import GridCfg, GridStage, diamond
from pydantic import Field, field_serializer
from stages.media import Glass, Medium

from phys_pipeline._edit import replace_config
from phys_pipeline.errors import ConfigError, UnknownNodeError
from phys_pipeline.session import LiveSession
from phys_pipeline.types import SimpleState, StageConfig


@pytest.fixture
def session():
    live = LiveSession(diamond(), SimpleState(payload=None))
    live.run()
    return live


def test_fresh_session_is_all_not_run():
    live = LiveSession(diamond(), SimpleState(payload=None))
    assert set(live.status.values()) == {"not run"}
    assert list(live.stale()) == ["grid", "p1", "p2", "merge", "solo"]


def test_first_run_runs_everything_then_nothing_is_stale(session):
    assert set(session.status.values()) == {"ran"}
    assert session.stale() == {}


def test_update_marks_exactly_the_node_and_descendants_stale(session):
    stale = session.update("p1", gdd=42.0)
    assert set(stale) == {"p1", "merge"}
    assert stale["p1"].reasons == ("config field gdd changed",)
    assert stale["merge"].reasons == ("upstream changed",)
    assert session.status == {
        "grid": "ran",
        "p1": "stale",
        "p2": "ran",
        "merge": "stale",
        "solo": "ran",
    }


def test_run_after_update_reruns_only_stale_nodes(session):
    session.update("p1", gdd=42.0)
    result = session.run()
    assert sorted(result.ran) == ["merge", "p1"]
    assert sorted(result.hits) == ["grid", "p2", "solo"]
    assert result.metrics["p1.max_phase"] == pytest.approx(0.5 * 42.0)
    assert session.status["p1"] == "ran" and session.status["grid"] == "hit"


def test_invalid_value_raises_config_error_and_changes_nothing(session):
    before = session.config("p1")
    with pytest.raises(ConfigError) as info:
        session.update("p1", gdd=1e9)
    assert info.value.field == "gdd" and info.value.value == 1e9
    assert "node 'p1'" in str(info.value)
    assert session.config("p1") is before
    assert session.stale() == {}


def test_unknown_field_and_node_are_named(session):
    with pytest.raises(ConfigError, match="'gdd_fs2'"):
        session.update("p1", gdd_fs2=1.0)
    with pytest.raises(UnknownNodeError, match="'p7'"):
        session.update("p7", gdd=1.0)


def test_reverting_an_edit_hits_the_cache(session):
    session.update("p1", gdd=42.0)
    session.run()
    session.update("p1", gdd=10.0)
    result = session.run()
    assert result.ran == []


def test_policy_change_marks_nodes_that_read_it(session):
    stale = session.set_policy({"phase.scale": 2.0})
    # the phase stages read phase.scale; the grid declares nothing, so it sees every policy
    assert "p1" in stale and "policy changed" in stale["p1"].reasons
    assert session.run().metrics["p1.max_phase"] == pytest.approx(2 * 0.5 * 10.0)


def test_redefined_stage_class_makes_that_node_stale(session):
    namespace: dict = {"__name__": "__main__"}
    exec(
        "from dag_stages import GridStage\n"
        "class GridStage(GridStage):\n"
        "    def process(self, state, *, policy=None):\n"
        "        return super().process(state, policy=policy)\n",
        namespace,
    )
    stale = session.set_stage("grid", namespace["GridStage"](GridCfg(name="grid")))
    assert stale["grid"].reasons == (
        "stage class changed (dag_stages.GridStage -> __main__.GridStage)",
    )
    assert set(stale) == {"grid", "p1", "p2", "merge", "solo"}


def test_listeners_see_running_then_done(session):
    events = []
    session.subscribe(lambda event, s: events.append((event, dict(s.status))))
    session.update("solo", gdd=3.0)
    session.run()
    solo = [status["solo"] for event, status in events if event in ("edit", "status")]
    transitions = [s for i, s in enumerate(solo) if i == 0 or s != solo[i - 1]]
    assert transitions == ["stale", "running", "ran"]
    assert events[-1][0] == "run"


def test_failure_is_reported_not_raised(session):
    from dag_stages import FailCfg, FailStage

    session.set_stage("p2", FailStage(FailCfg(name="p2", message="grating clipped")))
    result = session.run()
    assert list(result.failures) == ["p2"]
    assert session.status["p2"] == "failed" and session.status["merge"] == "skipped"
    assert "grating clipped" in session.reasons()["p2"]


def test_session_uses_a_memory_tier_over_a_given_cache(tmp_path):
    from phys_pipeline.cache import DiskCache, MemoryStore, TieredStore

    first = LiveSession(diamond(), SimpleState(None), cache=DiskCache(tmp_path))
    first.run()
    second = LiveSession(diamond(), SimpleState(None), cache=DiskCache(tmp_path))
    backend = second.executor.cache.backend
    assert isinstance(backend, TieredStore)
    memory, disk = backend.tiers
    assert isinstance(memory, MemoryStore) and isinstance(disk, DiskCache)
    assert second.stale() == {}
    assert second.run().ran == []  # read from disk, copied into memory
    key = second.plan().nodes["grid"].key
    disk.clear()
    assert second.executor.cache.get(key) is not None  # now served by the memory tier


def test_session_builds_the_cache_a_cache_config_describes(tmp_path):
    from phys_pipeline.cache import CacheConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CacheWarning would mean the cache is not used
        first = LiveSession(diamond(), SimpleState(None), cache=CacheConfig(disk_root=tmp_path))
        assert sorted(first.run().ran) == ["grid", "merge", "p1", "p2", "solo"]
        second = LiveSession(diamond(), SimpleState(None), cache=CacheConfig(disk_root=tmp_path))
        assert second.stale() == {}
        result = second.run()
    assert result.ran == [] and len(result.hits) == 5
    assert second.executor.cache.errors == 0


def test_session_keeps_a_strict_cache_strict(tmp_path):
    from phys_pipeline.cache import CacheConfig, DiskCache
    from phys_pipeline.dag_cache import DagCache

    given = DagCache(DiskCache(tmp_path), strict=True)
    assert LiveSession(diamond(), SimpleState(None), cache=given).executor.cache.strict is True
    config = CacheConfig(disk_root=tmp_path, strict=True)
    assert LiveSession(diamond(), SimpleState(None), cache=config).executor.cache.strict is True


def test_grid_edit_invalidates_everything(session):
    stale = session.update("grid", N=128)
    assert set(stale) == {"grid", "p1", "p2", "merge", "solo"}
    result = session.run()
    assert result.results["p1"].state.meta["phase"].shape == (128,)


def test_session_accepts_a_new_stage_instance(session):
    session.set_stage("grid", GridStage(GridCfg(name="grid", span=2.0)))
    assert "config field span changed" in session.stale()["grid"].reasons


def test_a_raising_listener_is_reported_and_the_run_completes():
    live = LiveSession(diamond(), SimpleState(payload=None))

    def broken_view(event, session):
        raise ValueError("plot widget went away")

    seen = []
    live.subscribe(broken_view)
    live.subscribe(lambda event, s: seen.append(event))
    with pytest.warns(RuntimeWarning, match=r"broken_view.*plot widget went away") as caught:
        result = live.run()
    assert {"'status' event", "'run' event"} <= {
        m for w in caught for m in ("'status' event", "'run' event") if m in str(w.message)
    }
    assert sorted(result.ran) == ["grid", "merge", "p1", "p2", "solo"]
    assert live.last_result is result
    assert set(live.status.values()) == {"ran"}
    assert seen[-1] == "run"  # listeners after the broken one still hear every event


def test_rerun_recomputes_one_cached_node_and_loads_the_rest(session):
    result = session.rerun("p1")
    assert result.ran == ["p1"]
    assert sorted(result.hits) == ["grid", "merge", "p2", "solo"]
    assert session.status["p1"] == "ran" and session.stale() == {}
    with pytest.raises(UnknownNodeError, match="'p7'"):
        session.rerun("p7")


def test_cached_nodes_are_cached_not_hit_until_a_run_loads_them(tmp_path):
    from phys_pipeline.cache import DiskCache
    from phys_pipeline.views import LEGEND_TEXT, STATUS_COLOURS

    LiveSession(diamond(), SimpleState(None), cache=DiskCache(tmp_path)).run()
    live = LiveSession(diamond(), SimpleState(None), cache=DiskCache(tmp_path))
    assert set(live.status.values()) == {"cached"}
    assert "cached" in STATUS_COLOURS and LEGEND_TEXT.get("cached", "cached") == "cached"
    assert set(live.reasons().values()) == {"cached"}
    live.run()
    assert set(live.status.values()) == {"hit"}


def test_going_back_to_a_cached_config_shows_cached_until_it_loads(session):
    session.update("p1", gdd=42.0)
    session.run()
    session.update("p1", gdd=10.0)  # the first run's entry: cached, not loaded by a run yet
    assert session.status["p1"] == "cached" and session.status["grid"] == "hit"
    session.run()
    assert session.status["p1"] == "hit"


def test_editing_a_stdlib_dataclass_config_keeps_its_name_and_tags():
    import dataclasses

    from phys_pipeline.types import NodeSpec, PipelineStage, StageConfig, StageResult

    @dataclasses.dataclass(frozen=True)
    class DampingCfg(StageConfig):
        gamma: float = 0.5

    class Damp(PipelineStage):
        def process(self, state, *, policy=None):
            return StageResult(state=state, metrics={"gamma": self.cfg.gamma})

    cfg = DampingCfg(gamma=0.2, name="damp", tags={"lab": "B"})
    live = LiveSession([NodeSpec(id="d", stage=Damp(cfg))], SimpleState(payload=None))
    live.update("d", gamma=0.3)
    edited = next(iter(live.specs.values())).stage.cfg
    assert (edited.gamma, edited.name, edited.tags) == (0.3, "damp", {"lab": "B"})
    assert live.run().metrics == {"d.gamma": 0.3}
    with pytest.raises(ConfigError, match="'gamma'"):
        live.update("d", gamma="strong")


class PropagateCfg(StageConfig):
    """A config whose dump differs from its value: an excluded field, a rounding serializer,
    a subclass held in a base-typed field."""

    dt: float = 0.1
    seed: int = Field(0, exclude=True)
    medium: Medium = Medium()
    length_mm: float = 1.0

    @field_serializer("dt")
    def _rounded(self, dt: float) -> float:
        return round(dt, 1)


def test_editing_one_field_keeps_the_others_exactly_as_they_were():
    cfg = PropagateCfg(dt=0.104, seed=7, medium=Glass(dispersion_fs2_per_mm=44.0))
    edited = replace_config(cfg, {"length_mm": 2.0}, "node 'glass'")
    assert edited.dt == 0.104  # not the serializer's 0.1
    assert edited.seed == 7  # not dropped by exclude=True
    assert type(edited.medium) is Glass  # not turned back into the base class
    assert edited.medium.dispersion_fs2_per_mm == 44.0
    assert edited.length_mm == 2.0


def test_an_edit_plans_once_and_what_views_read_plans_nothing(session, monkeypatch):
    import phys_pipeline.session as session_module

    plans = []
    make_plan = session_module.make_plan
    monkeypatch.setattr(
        session_module, "make_plan", lambda *args: plans.append(args) or make_plan(*args)
    )
    stale = session.update("p1", gdd=42.0)
    reasons = session.reasons()
    assert session.current_stale == stale and set(session.current_plan.nodes) == set(stale) | {
        "grid",
        "p2",
        "solo",
    }
    assert reasons["p1"] == "config field gdd changed"
    # grid keeps the key the last run computed: shown "ran", with the run's reason
    assert session.status["grid"] == "ran"
    assert reasons["grid"] == session.last_run_reasons()["grid"] != "cached"
    assert len(plans) == 1


def test_after_a_run_the_kept_plan_is_the_runs(session):
    session.update("p1", gdd=42.0)
    result = session.run()
    assert session.current_plan is result.plan
    assert session.current_stale == {}


def test_an_edit_and_its_rerun_leave_no_reference_cycle_behind(session):
    """A session reruns after every edit: a rerun's results are freed once the next one
    replaces them (its records stay, in ``history``), never left for the garbage collector."""
    import gc
    import weakref

    gc.disable()
    try:
        session.update("p1", gdd=11.0)
        computed = weakref.ref(session.run().results["p1"])
        session.update("p1", gdd=12.0)
        assert session.run().ok
        assert computed() is None
    finally:
        gc.enable()
