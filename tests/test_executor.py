"""DagExecutor: inputs by topology, caching across runs and processes, failures that name
themselves, resumable reruns, resources, and the stage shapes existing users write."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from dag_stages import (
    FailCfg,
    FailStage,
    GridCfg,
    GridStage,
    PhaseCfg,
    PhaseStage,
    diamond,
    with_stage,
)

from phys_pipeline.cache import CacheWarning, DiskCache, MemoryStore
from phys_pipeline.dag_cache import DagCache
from phys_pipeline.errors import (
    ConfigError,
    DagError,
    NodeFailedError,
    StageError,
    StageOutputError,
    StateMutationError,
)
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import (
    DagState,
    NodeResources,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    State,
)


def run(nodes, cache=None, workers=1, **kwargs):
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=workers), cache=cache)
    return executor.run(SimpleState(payload=None), nodes, **kwargs)


def statuses(result):
    return {nid: r.status for nid, r in result.runs.items()}


# --- inputs ----------------------------------------------------------------------------------


class Probe(PipelineStage[State, StageConfig]):
    """Records the type and keys of what it receives."""

    def process(self, state, *, policy=None):
        keys = sorted(state.inputs) if isinstance(state, DagState) else None
        return StageResult(state=SimpleState(payload=(type(state).__name__, keys)))


def test_roots_get_the_initial_state_one_parent_its_state_many_a_dag_state():
    nodes = [*diamond(), NodeSpec(id="probe_one", deps=["p1"], stage=Probe(StageConfig()))]
    nodes.append(NodeSpec(id="probe_two", deps=["p1", "solo"], stage=Probe(StageConfig())))
    nodes.append(NodeSpec(id="probe_root", stage=Probe(StageConfig())))
    out = run(nodes)
    assert out.results["probe_root"].state.payload == ("SimpleState", None)
    assert out.results["probe_one"].state.payload == ("SimpleState", None)
    assert out.results["probe_two"].state.payload == ("DagState", ["p1", "solo"])


def test_root_receives_the_callers_state_object_itself():
    seen = []

    class Keep(PipelineStage):
        def process(self, state, *, policy=None):
            seen.append(state)
            return StageResult(state=state)

    initial = SimpleState(payload=3)
    DagExecutor(check_mutation=False).run(initial, [NodeSpec(id="k", stage=Keep(StageConfig()))])
    assert seen == [initial] and seen[0] is initial


def test_result_has_order_results_namespaced_metrics_and_node_runs():
    out = run(diamond())
    assert out.execution_order == ["grid", "p1", "p2", "merge", "solo"]
    assert isinstance(out.results["merge"], StageResult)
    assert out.metrics["grid.N"] == 64.0
    assert out.metrics["merge.total"] == pytest.approx(0.5 * 10 + 0.5 * 20)
    records = {r["node_id"]: r for r in out.provenance["node_runs"]}
    assert set(records) == set(out.execution_order)
    for record in records.values():
        assert {"node_id", "cache_hit", "cache_key", "reason", "duration_s"} <= set(record)
        assert record["cache_hit"] is False


def test_policy_reaches_stages():
    out = run(diamond(), policy={"phase.scale": 2.0})
    assert out.metrics["p1.max_phase"] == pytest.approx(2 * 0.5 * 10.0)


# --- caching ---------------------------------------------------------------------------------


def test_second_run_hits_everything_and_gives_equal_results(tmp_path):
    cache = DagCache(DiskCache(tmp_path))
    first = run(diamond(), cache)
    second = run(diamond(), cache)
    assert set(statuses(first).values()) == {"ran"}
    assert set(statuses(second).values()) == {"hit"}
    assert second.metrics == first.metrics
    np.testing.assert_array_equal(
        second.results["p1"].state.meta["phase"], first.results["p1"].state.meta["phase"]
    )


def test_config_change_reruns_exactly_the_node_and_descendants():
    cache = DagCache(MemoryStore(max_bytes=1 << 26))
    executor = DagExecutor(cache=cache)
    executor.run(SimpleState(payload=None), diamond())
    edited = with_stage(diamond(), "p2", PhaseStage(PhaseCfg(name="p2", gdd=7.0)))
    out = executor.run(SimpleState(payload=None), edited)
    assert sorted(out.ran) == ["merge", "p2"]
    assert out.runs["p2"].reason == "config field gdd changed"
    assert out.runs["merge"].reason == "upstream changed"
    assert out.runs["grid"].cache_hit


def test_code_change_reruns_that_node_and_descendants():
    class GridStageV2(GridStage):
        def process(self, state, *, policy=None):
            result = super().process(state, policy=policy)
            result.state.meta["omega"] = result.state.meta["omega"] * 2.0
            return result

    executor = DagExecutor(cache=MemoryStore(max_bytes=1 << 26))
    executor.run(SimpleState(payload=None), diamond())
    out = executor.run(
        SimpleState(payload=None), with_stage(diamond(), "grid", GridStageV2(GridCfg(name="grid")))
    )
    assert sorted(out.ran) == ["grid", "merge", "p1", "p2", "solo"]
    assert out.runs["grid"].reason.startswith("stage class changed (dag_stages.GridStage -> ")


def test_hits_across_executor_instances(tmp_path):
    run(diamond(), DiskCache(tmp_path))
    out = run(diamond(), DiskCache(tmp_path))
    assert out.ran == []


def test_hits_across_processes(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from dag_stages import diamond
        from phys_pipeline.cache import DiskCache
        from phys_pipeline.executor import DagExecutor, DagRunResult
        from phys_pipeline.types import SimpleState
        out = DagExecutor(cache=DiskCache({str(tmp_path)!r})).run(SimpleState(None), diamond())
        print(",".join(sorted(out.ran)))
        """
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "grid,merge,p1,p2,solo"
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == ""


def test_corrupt_entry_is_recomputed_with_a_warning(tmp_path):
    cache = DagCache(DiskCache(tmp_path))
    first = run(diamond(), cache)
    key = first.runs["p1"].cache_key
    for npy in tmp_path.rglob(f"*{key}*/*.npy"):
        data = bytearray(npy.read_bytes())
        data[-1] ^= 0xFF
        npy.write_bytes(bytes(data))
    with pytest.warns(CacheWarning):
        second = run(diamond(), cache)
    assert second.ran == ["p1"]
    assert second.runs["p1"].reason == "cache entry unreadable"
    np.testing.assert_array_equal(
        second.results["p1"].state.meta["phase"], first.results["p1"].state.meta["phase"]
    )


def test_targets_run_only_what_they_need():
    out = run(diamond(), targets=["p1"])
    assert out.execution_order == ["grid", "p1"]


# --- failures --------------------------------------------------------------------------------


def failing_diamond():
    return with_stage(diamond(), "p2", FailStage(FailCfg(name="p2", message="bad GDD")))


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_node_names_itself_and_independent_branches_finish(workers):
    cache = DagCache(MemoryStore(max_bytes=1 << 26))
    with pytest.raises(NodeFailedError) as info:
        run(failing_diamond(), cache, workers=workers)
    error = info.value
    assert list(error.failures) == ["p2"]
    assert str(error) == "1 node(s) failed: p2 (RuntimeError: bad GDD) (1 sub-exception)"
    assert type(error.failures["p2"]) is RuntimeError
    partial = error.partial
    assert statuses(partial) == {
        "grid": "ran",
        "p1": "ran",
        "p2": "failed",
        "merge": "skipped",
        "solo": "ran",
    }
    assert "'p2'" in partial.runs["merge"].reason
    assert cache.contains(partial.runs["solo"].cache_key)
    assert not cache.contains(partial.runs["p2"].cache_key)


def test_rerun_after_fixing_resumes_from_the_failure():
    executor = DagExecutor(cache=MemoryStore(max_bytes=1 << 26))
    result = executor.run(SimpleState(payload=None), failing_diamond(), raise_on_error=False)
    assert list(result.failures) == ["p2"]
    fixed = executor.run(SimpleState(payload=None), diamond())
    assert sorted(fixed.ran) == ["merge", "p2"]


def test_stage_returning_none_is_a_typed_error_naming_the_node():
    class Forgetful(PipelineStage):
        def process(self, state, *, policy=None):
            st = state.deepcopy()
            st.payload = 1

    out = DagExecutor().run(
        SimpleState(None),
        [NodeSpec(id="forgetful", stage=Forgetful(StageConfig()))],
        raise_on_error=False,
    )
    error = out.failures["forgetful"]
    assert isinstance(error, StageOutputError)
    assert "node 'forgetful'" in str(error)


def test_stage_mutating_its_input_is_caught():
    class Vandal(PipelineStage):
        def process(self, state, *, policy=None):
            state.meta["omega"][0] = 99.0
            return StageResult(state=state.deepcopy())

    nodes = [
        NodeSpec(id="grid", stage=GridStage(GridCfg())),
        NodeSpec(id="vandal", deps=["grid"], stage=Vandal(StageConfig())),
    ]
    out = DagExecutor().run(SimpleState(None), nodes, raise_on_error=False)
    assert isinstance(out.failures["vandal"], StateMutationError)
    assert "'vandal'" in str(out.failures["vandal"])


# --- schedulers ------------------------------------------------------------------------------


class Sleep(PipelineStage):
    """Sleeps and records how many nodes were running at once."""

    lock = threading.Lock()
    running = 0
    peak = 0

    def process(self, state, *, policy=None):
        with Sleep.lock:
            Sleep.running += 1
            Sleep.peak = max(Sleep.peak, Sleep.running)
        time.sleep(0.05)
        with Sleep.lock:
            Sleep.running -= 1
        return StageResult(state=SimpleState(payload=self.cfg.name))


def fan_out(n, cpu=1):
    res = NodeResources(cpu=cpu)
    return [
        NodeSpec(id=f"s{i}", stage=Sleep(StageConfig(name=f"s{i}")), resources=res)
        for i in range(n)
    ]


def test_threads_run_independent_nodes_concurrently():
    Sleep.peak = 0
    DagExecutor(scheduler=LocalScheduler(max_workers=2, max_cpu=2)).run(
        SimpleState(None), fan_out(4)
    )
    assert Sleep.peak == 2


def test_cpu_slots_bound_concurrency():
    Sleep.peak = 0
    DagExecutor(scheduler=LocalScheduler(max_workers=4, max_cpu=4)).run(
        SimpleState(None), fan_out(4, cpu=2)
    )
    assert Sleep.peak == 2


def test_memory_slots_bound_concurrency():
    Sleep.peak = 0
    three_gb = NodeResources(mem_gb=3)
    nodes = [
        NodeSpec(id=f"m{i}", stage=Sleep(StageConfig(name=f"m{i}")), resources=three_gb)
        for i in range(3)
    ]
    DagExecutor(scheduler=LocalScheduler(max_workers=3, max_cpu=3, max_mem_gb=4)).run(
        SimpleState(None), nodes
    )
    assert Sleep.peak == 1


def test_node_needing_more_memory_than_the_scheduler_has_is_named():
    nodes = [NodeSpec(id="big", stage=GridStage(GridCfg()), resources=NodeResources(mem_gb=8))]
    with pytest.raises(DagError, match=r"'big'.*mem_gb=8"):
        DagExecutor(scheduler=LocalScheduler(max_mem_gb=4)).run(SimpleState(None), nodes)


@pytest.mark.parametrize("field", ["max_cpu", "max_gpu", "max_mem_gb"])
def test_negative_scheduler_limits_are_rejected(field):
    with pytest.raises(ConfigError, match=field):
        LocalScheduler(max_workers=2, **{field: -1})


def test_node_needing_more_than_the_scheduler_has_is_named():
    nodes = [NodeSpec(id="hungry", stage=GridStage(GridCfg()), resources=NodeResources(gpu=1))]
    with pytest.raises(Exception, match="'hungry'"):
        DagExecutor(scheduler=LocalScheduler(max_workers=2)).run(SimpleState(None), nodes)


def test_process_pool_runs_a_locally_defined_stage_in_another_process():
    class Square(PipelineStage):
        def process(self, state, *, policy=None):
            return StageResult(
                state=SimpleState(payload=np.arange(4) ** 2), metrics={"pid": os.getpid()}
            )

    out = DagExecutor(scheduler=LocalScheduler(max_workers=2, mode="process")).run(
        SimpleState(None), [NodeSpec(id="sq", stage=Square(StageConfig()))]
    )
    np.testing.assert_array_equal(out.results["sq"].state.payload, [0, 1, 4, 9])
    assert out.metrics["sq.pid"] != os.getpid()


def test_process_pool_failure_keeps_its_type_and_message_and_a_note_names_the_node():
    class Diverge(PipelineStage):
        def process(self, state, *, policy=None):
            raise FloatingPointError("split-step diverged at z=3.2 mm")

    nodes = [
        NodeSpec(id="grid", stage=GridStage(GridCfg())),
        NodeSpec(id="diverge", stage=Diverge(StageConfig())),
    ]
    out = DagExecutor(scheduler=LocalScheduler(max_workers=2, mode="process")).run(
        SimpleState(None), nodes, raise_on_error=False
    )
    error = out.failures["diverge"]
    assert type(error) is FloatingPointError
    assert str(error) == "split-step diverged at z=3.2 mm"
    [note] = error.__notes__
    assert note.startswith("raised by stage 'Diverge' in node 'diverge', ")
    assert out.runs["grid"].status == "ran"


def test_process_pool_stage_that_cannot_be_pickled_fails_only_its_node():
    class Locked(PipelineStage):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.lock = threading.Lock()

        def process(self, state, *, policy=None):
            return StageResult(state=state)

    nodes = [
        NodeSpec(id="grid", stage=GridStage(GridCfg())),
        NodeSpec(id="locked", stage=Locked(StageConfig())),
    ]
    cache = DagCache(MemoryStore())
    out = DagExecutor(scheduler=LocalScheduler(max_workers=2, mode="process"), cache=cache).run(
        SimpleState(None), nodes, raise_on_error=False
    )
    assert list(out.failures) == ["locked"]
    assert type(out.failures["locked"]) is StageError  # what StageError is still raised for
    assert "node 'locked'" in str(out.failures["locked"])
    assert "worker process" in str(out.failures["locked"])
    assert out.runs["grid"].status == "ran" and cache.contains(out.runs["grid"].cache_key)


def test_the_same_executor_reruns_many_times():
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=2), cache=MemoryStore(max_bytes=1 << 26)
    )
    outcomes = [executor.run(SimpleState(None), diamond()).summary() for _ in range(5)]
    assert outcomes[0].startswith("ran 5, hit 0")
    assert all(o.startswith("ran 0, hit 5") for o in outcomes[1:])


def test_progress_bar_only_when_asked(capsys):
    DagExecutor(scheduler=LocalScheduler()).run(SimpleState(None), diamond())
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    DagExecutor(scheduler=LocalScheduler(progress=True)).run(SimpleState(None), diamond())
    err = capsys.readouterr().err
    assert "nodes:" in err and "/5 [" in err  # tqdm's bar: its description, then done/total


# --- what existing users write ---------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class FieldState(State):
    """A user state: a dataclass with slots that never calls State.__init__."""

    field: np.ndarray
    z_m: float = 0.0
    notes: dict = dataclasses.field(default_factory=dict)

    def deepcopy(self):
        return FieldState(self.field.copy(), self.z_m, dict(self.notes))

    def hashable_repr(self):
        from phys_pipeline.types import hash_small

        return hash_small((self.field, self.z_m, self.notes))


@dataclasses.dataclass
class Propagate(PipelineStage):
    """A dataclass stage that never calls PipelineStage.__init__."""

    cfg: StageConfig
    dz_m: float = 0.1

    def process(self, state, *, policy=None):
        st = state.deepcopy()
        st.field = st.field * np.exp(1j * self.dz_m)
        st.z_m += self.dz_m
        return StageResult(state=st, metrics={"z_m": st.z_m})


def test_dataclass_state_and_stage_with_version_pin_run_and_cache(tmp_path):
    nodes = [
        NodeSpec(id="z1", stage=Propagate(StageConfig(name="z1")), version="v2"),
        NodeSpec(id="z2", deps=["z1"], stage=Propagate(StageConfig(name="z2"))),
    ]
    initial = FieldState(field=np.ones(8, dtype=complex), notes={"fibre": ("SMF-28", 1)})
    first = run_with(initial, nodes, DiskCache(tmp_path))
    second = run_with(initial, nodes, DiskCache(tmp_path))
    assert first.metrics["z2.z_m"] == pytest.approx(0.2)
    assert second.ran == []
    restored = second.results["z2"].state
    assert isinstance(restored, FieldState)
    assert restored.notes == {"fibre": ("SMF-28", 1)}
    np.testing.assert_allclose(restored.field, np.exp(0.2j) * np.ones(8))
    assert (
        first.runs["z1"].cache_key
        != run_with(initial, [nodes[0].replace(version="v3"), nodes[1]], None).runs["z1"].cache_key
    )


def run_with(state, nodes, cache):
    return DagExecutor(cache=cache).run(state, nodes)


def test_duck_typed_stage_runs():
    class Duck:
        cfg = StageConfig(name="duck")

        def process(self, state, *, policy=None):
            return StageResult(state=SimpleState(payload="quack"))

    out = DagExecutor().run(SimpleState(None), [NodeSpec(id="duck", stage=Duck())])
    assert out.results["duck"].state.payload == "quack"


def test_sequential_pipeline_is_a_dag_node():
    pipe = SequentialPipeline(
        [GridStage(GridCfg(name="grid")), PhaseStage(PhaseCfg(name="phase", gdd=2.0))],
        name="chain",
    )
    out = DagExecutor().run(SimpleState(None), [NodeSpec(id="chain", stage=pipe)])
    assert out.metrics["chain.phase.max_phase"] == pytest.approx(1.0)


def test_no_warnings_on_a_clean_cached_run(tmp_path):
    run(diamond(), DiskCache(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(diamond(), DiskCache(tmp_path))


def test_stage_reading_an_undeclared_policy_key_fails_naming_node_and_key():
    class Sneaky(PhaseStage):
        def process(self, state, *, policy=None):
            policy.get("plot.dpi", 100)
            return super().process(state, policy=policy)

    nodes = with_stage(diamond(), "p1", Sneaky(PhaseCfg(name="p1")))
    out = DagExecutor().run(
        SimpleState(None), nodes, policy={"plot.dpi": 300}, raise_on_error=False
    )
    error = out.failures["p1"]
    assert "'plot.dpi'" in str(error) and "'p1'" in str(error)
    assert out.ok is False and out.runs["p2"].status == "ran"


class Peak(PipelineStage):
    """The largest frequency of the grid it reads: what a corrupted grid would change."""

    def process(self, state, *, policy=None):
        return StageResult(state=state, metrics={"peak": float(np.max(state.meta["omega"]))})


def run_beside_a_peak(culprit: PipelineStage) -> tuple[float, DagRunResult, DagRunResult]:
    """Run ``culprit`` beside a Peak node on one cached grid, then the grid and Peak again from
    that cache; returns the peak of an untouched grid and both runs (failures kept in them)."""
    grid = NodeSpec(id="grid", stage=GridStage(GridCfg(N=8)))
    peak = NodeSpec(id="peak", deps=["grid"], stage=Peak(StageConfig()))
    honest = run([grid, peak], cache=DagCache(MemoryStore())).metrics["peak.peak"]
    cache = DagCache(MemoryStore())
    culprit_node = NodeSpec(id="culprit", deps=["grid"], stage=culprit)
    out = run([grid, culprit_node, peak], cache=cache, raise_on_error=False)
    return honest, out, run([grid, peak], cache=cache)


def test_a_stage_writing_into_a_cached_input_is_refused_and_corrupts_nothing():
    """The memory tier makes the arrays of a result it keeps read-only, and the run hands that
    result to the children: a stage writing into its input array fails at the write, naming
    itself, and neither the parent nor a sibling is corrupted."""

    class Vandal(PipelineStage):
        def process(self, state, *, policy=None):
            state.meta["omega"][:] = 99.0
            return StageResult(state=state.deepcopy())

    honest, out, again = run_beside_a_peak(Vandal(StageConfig()))
    error = out.failures["culprit"]
    assert type(error) is ValueError and "read-only" in str(error)
    [note] = error.__notes__
    assert note.startswith("raised by stage 'Vandal' in node 'culprit', ")
    assert out.metrics["peak.peak"] == honest
    assert statuses(again) == {"grid": "hit", "peak": "hit"}
    assert again.metrics["peak.peak"] == honest != 99.0


def test_a_stage_changing_its_input_containers_is_caught_and_corrupts_nothing():
    """What read-only arrays cannot stop (a new key in the input's meta) the mutation check
    catches: the node fails with StateMutationError and the cached parent is unchanged."""

    class Scribbler(PipelineStage):
        def process(self, state, *, policy=None):
            state.meta["omega"] = np.full(8, 99.0)
            return StageResult(state=state.deepcopy())

    honest, out, again = run_beside_a_peak(Scribbler(StageConfig()))
    assert isinstance(out.failures["culprit"], StateMutationError)
    assert again.metrics["peak.peak"] == honest != 99.0


def test_a_run_is_prepare_then_execute():
    """The two public halves of ``run``: prepare plans, loads what is cached and makes the
    tasks without computing anything; execute computes them and reports failures in the
    result instead of raising."""
    cache = DagCache(MemoryStore(max_bytes=1 << 26))
    executor = DagExecutor(cache=cache)
    executor.run(SimpleState(payload=None), diamond())
    edited = with_stage(diamond(), "p2", PhaseStage(PhaseCfg(name="p2", gdd=7.0)))
    prepared = executor.prepare(SimpleState(payload=None), edited)
    assert sorted(task.node_id for task in prepared.tasks) == ["merge", "p2"]
    assert sorted(prepared.recorder.results) == ["grid", "p1", "solo"]  # loaded, not run
    result = executor.execute(prepared)
    assert sorted(result.ran) == ["merge", "p2"] and sorted(result.hits) == ["grid", "p1", "solo"]
    assert executor.last_plan is prepared.plan


class HearsEverything:
    """A callback listening to every event, progress included (as a session does)."""

    def __init__(self) -> None:
        self.heard = 0

    def on_start(self, node_id):
        self.heard += 1

    def on_done(self, node_id, result, cache_hit):
        self.heard += 1

    def on_progress(self, node_id, fraction, message):
        self.heard += 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_leaves_no_reference_cycle_behind(workers: int) -> None:
    """Everything a run made is freed as soon as it is dropped, not at the garbage
    collector's next pass: a live session reruns constantly, and cycles of whole runs (plans,
    results, records) made it collect several times as often (a bound method of the recorder
    kept on the recorder did). With the collector off, a node's result dies with the run."""
    import gc
    import weakref

    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=workers),
        cache=DagCache(MemoryStore()),
        callbacks=[HearsEverything()],
    )
    gc.disable()
    try:
        result = executor.run(SimpleState(None), diamond())
        computed = weakref.ref(result.results["merge"])
        del result
        assert computed() is None
    finally:
        gc.enable()
