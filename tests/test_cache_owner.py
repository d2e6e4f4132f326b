"""DagCache, the one owner of a DAG's cache: what ``cache=`` means (``open_cache``), every
store operation of a run going through it, and what it remembers between runs (the last
plan, output digests)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage, diamond, with_stage

from phys_pipeline import _deprecation
from phys_pipeline.cache import CacheConfig, DiskCache, DiskStore, MemoryStore, TieredStore
from phys_pipeline.dag import make_plan
from phys_pipeline.dag_cache import DagCache, open_cache
from phys_pipeline.errors import CacheError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, SimpleState, StageResult

START = SimpleState(None)


class CountingStore(MemoryStore):
    """A memory store that counts what reaches it, to compare with the owner's counters."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"get": 0, "put": 0, "delete": 0}

    def get(self, key: str) -> StageResult | None:
        self.calls["get"] += 1
        return super().get(key)

    def put(self, key: str, result: StageResult) -> None:
        self.calls["put"] += 1
        super().put(key, result)

    def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        super().delete(key)


class CountingProxy:
    """Any store, counting what reaches it."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.calls = {"get": 0, "put": 0, "delete": 0}

    def __getattr__(self, name: str) -> object:
        if name in self.calls:
            self.calls[name] += 1
        return getattr(self.store, name)


class CountingCache(DagCache):
    """An owner that counts deletes too (hits, misses and puts it counts already)."""

    deletes = 0

    def delete(self, key: str) -> None:
        self.deletes += 1
        super().delete(key)


def chain(gdd: float, n: int = 16) -> list[NodeSpec]:
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(N=n))),
        NodeSpec(id="phase", deps=["grid"], stage=PhaseStage(PhaseCfg(gdd=gdd))),
        NodeSpec(id="again", deps=["phase"], stage=PhaseStage(PhaseCfg(gdd=1.0))),
    ]


# --- open_cache: the one meaning of cache= ---------------------------------------------------


def test_no_cache_is_an_owner_without_a_store_that_still_remembers_the_last_plan() -> None:
    executor = DagExecutor()
    assert isinstance(executor.cache, DagCache) and executor.cache.backend is None
    executor.run(START, chain(gdd=10.0))
    assert executor.last_plan is executor.cache.previous is not None
    second = executor.run(START, chain(gdd=20.0))
    assert second.ran == ["grid", "phase", "again"]  # nothing is stored, so everything runs
    assert second.runs["phase"].reason == "config field gdd changed"
    assert second.runs["grid"].reason == "not cached"


def test_open_cache_wraps_a_store_and_keeps_a_strict_stores_promise() -> None:
    store = MemoryStore()
    owner = open_cache(store)
    assert owner.backend is store and not owner.strict

    class StrictStore(MemoryStore):
        strict = True

    assert open_cache(StrictStore()).strict


def test_open_cache_uses_a_dag_cache_as_it_is_and_builds_a_config(tmp_path: Path) -> None:
    owner = DagCache(MemoryStore())
    assert open_cache(owner) is owner
    assert DagCache(owner).backend is owner.backend  # never wrapped twice
    built = open_cache(CacheConfig(backend="disk", disk_root=tmp_path, strict=True))
    assert isinstance(built.backend, DiskStore) and built.strict


def test_open_cache_refuses_what_is_not_a_store() -> None:
    with pytest.raises(TypeError, match="dict is not a cache store: it lacks put, contains"):
        open_cache({"not": "a store"})


def test_a_memory_tier_goes_in_front_of_the_given_store_and_keeps_its_strictness(
    tmp_path: Path,
) -> None:
    owner = open_cache(DagCache(DiskCache(tmp_path), strict=True), memory_bytes=1 << 20)
    assert isinstance(owner.backend, TieredStore) and owner.strict
    memory, disk = owner.backend.tiers
    assert isinstance(memory, MemoryStore) and memory.max_bytes == 1 << 20
    assert isinstance(disk, DiskCache)
    alone = open_cache(None, memory_bytes=1 << 20)
    assert isinstance(alone.backend, MemoryStore)


@pytest.fixture
def fresh_deprecations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_deprecation, "_given", set())


def test_the_old_factories_still_work_and_warn_once(fresh_deprecations: None) -> None:
    from phys_pipeline.dag_cache import as_dag_cache
    from phys_pipeline.session import default_session_cache

    with pytest.warns(DeprecationWarning, match="use open_cache") as caught:
        assert as_dag_cache(None) is None
        assert isinstance(as_dag_cache(MemoryStore()).backend, MemoryStore)
    assert len(caught) == 1 and caught[0].filename == __file__
    with pytest.warns(DeprecationWarning, match="memory_bytes") as caught:
        assert isinstance(default_session_cache(None, 1 << 20).backend, MemoryStore)
    assert len(caught) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_dag_cache(None)  # once only


# --- every store operation goes through the owner --------------------------------------------


def test_every_read_and_write_of_a_session_goes_through_its_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs, hits, early cutoff, edits and ``rerun``: the session's store (a memory tier in
    front of the user's) sees exactly the traffic its owner counted, so nothing reads or
    writes the store beside it."""
    session = LiveSession(chain(gdd=10.0), START, cache=MemoryStore(), memory_bytes=1 << 20)
    owner = session.executor.cache
    store = CountingProxy(owner.backend)
    monkeypatch.setattr(owner, "backend", store)
    deletes = []
    monkeypatch.setattr(
        owner, "delete", lambda key: (deletes.append(key), DagCache.delete(owner, key))
    )
    session.run()
    session.update("phase", name="renamed")  # a new key for phase, the same output: cutoff
    assert session.run().runs["again"].reason == "cached: upstream output unchanged"
    session.rerun("grid")
    session.update("phase", gdd=30.0)
    session.stale()
    session.run()
    assert store.calls["get"] == owner.hits + owner.misses > 0
    assert store.calls["put"] == owner.puts > 0
    assert store.calls["delete"] == len(deletes) == 2  # rerun's: the entry, its figures


def test_an_executor_reads_and_writes_its_store_only_through_its_owner() -> None:
    store = CountingStore()
    owner = CountingCache(store)
    executor = DagExecutor(cache=owner)
    executor.run(START, chain(gdd=10.0))
    renamed = chain(gdd=10.0)
    renamed[1] = renamed[1].replace(stage=PhaseStage(PhaseCfg(gdd=10.0, name="renamed")))
    assert executor.run(START, renamed).runs["again"].reason.startswith("cached: upstream")
    executor.run(START, renamed)
    assert store.calls["get"] == owner.hits + owner.misses
    assert store.calls["put"] == owner.puts
    assert store.calls["delete"] == owner.deletes == 0


# --- what it remembers -------------------------------------------------------------------------


def test_staleness_is_relative_to_the_last_run_through_the_owner() -> None:
    owner = DagCache(MemoryStore())
    nodes = chain(gdd=10.0)
    assert owner.stale(make_plan(nodes, START))["phase"].reasons == ("not cached",)
    DagExecutor(cache=owner).run(START, nodes)
    assert owner.stale(make_plan(nodes, START)) == {}
    edited = chain(gdd=5.0)
    stale = owner.stale(make_plan(edited, START))
    assert stale["phase"].reasons == ("config field gdd changed",)
    assert stale["again"].reasons == ("upstream changed",)


def test_an_uncacheable_node_is_never_filed() -> None:
    owner = DagCache(CountingStore())
    plan = make_plan(chain(gdd=1.0), START)
    node = plan.nodes["phase"]._replace(uncacheable="reads os.environ")
    owner.file(node, StageResult(state=SimpleState(1.0)))
    assert owner.puts == 0 and not owner.contains(node.key)
    owner.file(plan.nodes["grid"], StageResult(state=SimpleState(1.0)))
    assert owner.puts == 1 and owner.contains(plan.nodes["grid"].key)


def test_a_computed_result_records_the_digest_of_its_input() -> None:
    owner = DagCache(MemoryStore())
    result = DagExecutor(cache=owner).run(START, chain(gdd=1.0))
    grid_output = result.results["grid"].state.hashable_repr()
    assert result.results["phase"].provenance["input_digest"] == bytes(grid_output).hex()
    stored = owner.get(result.plan.nodes["phase"].key)
    assert stored.provenance["input_digest"] == bytes(grid_output).hex()


def test_early_cutoff_needs_a_store_and_a_previous_run() -> None:
    plan = make_plan(chain(gdd=1.0), START)
    assert DagCache(None).early_cutoff(plan, {}) is None
    owner = DagCache(MemoryStore())
    assert owner.early_cutoff(plan, {}) is None  # nothing to compare with yet
    owner.finished(plan)
    assert owner.early_cutoff(plan, {}) is not None


def test_without_a_store_nothing_is_counted_or_kept() -> None:
    owner = DagCache(None)
    plan = make_plan(chain(gdd=1.0), START)
    owner.file(plan.nodes["grid"], StageResult(state=SimpleState(1.0)))
    assert owner.get(plan.nodes["grid"].key) is None and not owner.contains(plan.nodes["grid"].key)
    assert (owner.hits, owner.misses, owner.puts) == (0, 0, 0)
    assert set(owner.stale(plan)) == {"grid", "phase", "again"}


def test_a_strict_owner_raises_a_store_failure_and_a_lenient_one_warns() -> None:
    class Broken(MemoryStore):
        def get(self, key: str) -> StageResult | None:
            raise OSError("disk unplugged")

    key = "ab" * 16
    with pytest.raises(CacheError, match="disk unplugged"):
        DagCache(Broken(), strict=True).get(key)
    with pytest.warns(UserWarning, match="cache read for key .* failed .* disk unplugged"):
        assert DagCache(Broken()).get(key) is None


def test_a_diamond_with_a_swapped_stage_reruns_exactly_what_the_owner_calls_stale() -> None:
    owner = DagCache(MemoryStore())
    executor = DagExecutor(cache=owner)
    executor.run(START, diamond())
    edited = with_stage(diamond(), "b", PhaseStage(PhaseCfg(gdd=7.0)))
    stale = owner.stale(make_plan(edited, START))
    result = executor.run(START, edited)
    assert set(result.ran) == set(stale)


# --- filing on workers (the Dask side is in test_dask_filing.py) ------------------------------


def test_only_stores_other_processes_reach_are_offered_to_workers(tmp_path: Path) -> None:
    assert DagCache(MemoryStore()).worker_store() is None
    assert DagCache(None).worker_store() is None
    disk = DiskCache(tmp_path)
    tiered = open_cache(disk, memory_bytes=1 << 20)
    shared = tiered.worker_store()
    assert shared is not None and shared.store is disk  # the memory tier stays in the driver
    assert shared.key_ids == (disk.signer.key_id(),)


def test_a_worker_that_cannot_file_hands_the_whole_result_back(tmp_path: Path) -> None:
    from phys_pipeline.dag_cache import FiledResult, file_on_worker

    owner = DagCache(DiskCache(tmp_path))
    node = make_plan(chain(gdd=1.0), START).nodes["grid"]
    result = StageResult(state=SimpleState(np.arange(4.0)))
    workers = owner.worker_store()
    foreign = type(workers)(workers.store, ("another key",))
    back, _ = file_on_worker(owner.filing(foreign, node), result, 0.5)
    assert back is result and not owner.contains(node.key)

    class Full(MemoryStore):
        def put(self, key: str, result: StageResult) -> None:
            raise OSError("no space left on device")

    full = type(workers)(Full(), ())
    back, _ = file_on_worker(owner.filing(full, node), result, 0.5)
    assert back is result
    filed, seconds = file_on_worker(owner.filing(workers, node), result, 0.5)
    assert type(filed) is FiledResult and seconds == 0.5
    assert filed.digest == bytes(result.state.hashable_repr())
    assert owner.get(node.key).provenance["duration_s"] == 0.5


def test_an_uncacheable_node_gets_no_filing(tmp_path: Path) -> None:
    owner = DagCache(DiskCache(tmp_path))
    node = make_plan(chain(gdd=1.0), START).nodes["grid"]._replace(uncacheable="reads os.environ")
    assert owner.filing(owner.worker_store(), node) is None


def test_a_run_with_a_progress_bar_files_its_results_too() -> None:
    """The progress bar wraps the run's hooks: the step that files results must come through."""
    from phys_pipeline.scheduler import LocalScheduler

    owner = DagCache(MemoryStore())
    for workers in (1, 2):
        owner.clear()
        executor = DagExecutor(scheduler=LocalScheduler(max_workers=workers, progress=True))
        executor.cache = owner
        executor.run(START, chain(gdd=1.0))
        again = DagExecutor(cache=owner).run(START, chain(gdd=1.0))
        assert again.hits == ["grid", "phase", "again"]


def test_a_run_reads_each_cached_node_once_and_reports_its_plan_first() -> None:
    """A cached node costs one read of the store: the run reads it while it looks its nodes
    up, with no lookup before (each a walk of a disk store's directories, a round trip to
    Redis). Only a read that misses is followed by a lookup, which tells an entry that is not
    there from one that cannot be read. Listeners still hear the plan before the hits."""

    class LookupsCounted(CountingStore):
        def __init__(self) -> None:
            super().__init__()
            self.calls["contains"] = 0

        def contains(self, key: str) -> bool:
            self.calls["contains"] += 1
            return super().contains(key)

    store = LookupsCounted()
    DagExecutor(cache=DagCache(store)).run(START, chain(gdd=10.0))
    heard: list[str] = []

    class Listener:
        def on_plan(self, plan: object, stale: dict) -> None:
            heard.append("plan")

        def on_done(self, node_id: str, result: object, cache_hit: bool) -> None:
            heard.append(f"{node_id} {'hit' if cache_hit else 'ran'}")

    store.calls = dict.fromkeys(store.calls, 0)
    again = DagExecutor(cache=DagCache(store), callbacks=[Listener()]).run(START, chain(gdd=20.0))
    assert again.hits == ["grid"] and again.ran == ["phase", "again"]
    assert (store.calls["get"], store.calls["contains"]) == (3, 2)  # a lookup per miss only
    assert heard == ["plan", "grid hit", "phase ran", "again ran"]
    assert store.calls["put"] == 2
