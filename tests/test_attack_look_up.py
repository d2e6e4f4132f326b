"""Attacks on ``DagCache.look_up`` (a run reads each cached node straight away, and asks whether
an entry is there only after a read missed), on Redis readers leaving entries they cannot
authenticate in place, and on ``DiskStore.load`` taking NotADirectoryError for a miss. Real
stores throughout (a DiskStore in tmp_path, a real redis-server); the only stand-ins are thin
store wrappers that count calls, make a read fail, or let a co-user write at a chosen moment."""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage

from phys_pipeline.cache import CacheWarning, DiskStore, MemoryStore, RedisStore
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.dag_cache import DagCache, open_cache
from phys_pipeline.errors import CacheError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, NodeStatus, SimpleState, StageResult

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

START = SimpleState(None)
UNREADABLE = "cache entry unreadable"


def chain(gdd: float = 1.0, n: int = 16) -> list[NodeSpec]:
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(N=n))),
        NodeSpec(id="phase", deps=["grid"], stage=PhaseStage(PhaseCfg(gdd=gdd))),
        NodeSpec(id="again", deps=["phase"], stage=PhaseStage(PhaseCfg(gdd=1.0))),
    ]


def reference(nodes: list[NodeSpec]) -> DagRunResult:
    """The same DAG computed without any cache: what every run must agree with."""
    return DagExecutor().run(START, nodes)


def keys_of(nodes: list[NodeSpec]) -> dict[str, str]:
    plan = DagExecutor().plan(START, nodes)
    return {nid: node.key for nid, node in plan.nodes.items()}


def assert_same_results(out: DagRunResult, expected: DagRunResult) -> None:
    assert out.metrics == expected.metrics
    for nid, result in expected.results.items():
        got = out.results[nid].state
        for name, value in result.state.meta.items():
            np.testing.assert_array_equal(got.meta[name], value)


def filled_disk_cache(tmp_path: Path) -> tuple[Path, list[NodeSpec], dict[str, str]]:
    """A DiskStore's root holding every node of ``chain()``, the nodes and their keys."""
    root, nodes = tmp_path / "cache", chain()
    DagExecutor(cache=DiskStore(root)).run(START, nodes)
    return root, nodes, keys_of(nodes)


def cache_to_plant_in(tmp_path: Path, node: str) -> tuple[Path, list[NodeSpec], str]:
    """A DiskStore root not made yet, the nodes of ``chain()`` and the key of ``node``: where
    a co-user plants something before our first run."""
    nodes = chain()
    return tmp_path / "cache", nodes, keys_of(nodes)[node]


def cache_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


class Proxy:
    """A real store, counting the calls that reach it (the store protocol by delegation)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: dict[str, list[str]] = {"get": [], "contains": [], "put": []}

    def get(self, key: str) -> StageResult | None:
        self.calls["get"].append(key)
        return self.store.get(key)

    def contains(self, key: str) -> bool:
        self.calls["contains"].append(key)
        return self.store.contains(key)

    def put(self, key: str, result: StageResult) -> None:
        self.calls["put"].append(key)
        self.store.put(key, result)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def clear(self) -> None:
        self.store.clear()


# --- a co-user's write landing between the read and the lookup ----------------------------------


class CoUserWritesAfterTheMiss(Proxy):
    """The run's own DiskStore; the moment its read of ``key`` has missed, another process
    of the same user (a second DiskStore on the same directory) publishes that very entry,
    complete and genuine, as a concurrent run computing the same node does."""

    def __init__(self, store: DiskStore, co_user: DiskStore, key: str, result: StageResult):
        super().__init__(store)
        self.co_user, self.key, self.result = co_user, key, result
        self.armed = self.written = False

    def get(self, key: str) -> StageResult | None:
        got = super().get(key)
        if got is None and key == self.key and self.armed and not self.written:
            self.written = True
            self.co_user.put(key, self.result)
        return got


@pytest.mark.xfail(
    strict=True,
    reason="documented limit: the lookup after a missed read is a later call, so an entry a "
    "co-user publishes in between is reported unreadable and computed again (the result is "
    "right; reading again would warn twice about every genuinely bad entry). The code before "
    "look_up had the mirror race: an entry removed between its lookup and its read.",
)
def test_an_entry_published_between_the_read_and_the_lookup_is_not_called_unreadable(
    tmp_path: Path,
) -> None:
    """Two runs of the same DAG share a cache directory. One run's read of ``phase`` misses;
    the other run publishes ``phase`` (atomically: complete and signed) just after. The lookup
    that follows the miss finds the entry, which is perfectly readable: the node must not be
    reported with an entry that 'cannot be read' (nor, better, be computed again)."""
    root = tmp_path / "cache"
    edited = chain(gdd=2.0)
    expected = reference(edited)
    phase_key = keys_of(edited)["phase"]
    computed = DagExecutor(cache=MemoryStore()).run(START, edited).results["phase"]
    store = CoUserWritesAfterTheMiss(DiskStore(root), DiskStore(root), phase_key, computed)
    executor = DagExecutor(cache=store)
    executor.run(START, chain(gdd=1.0))
    store.armed = True  # the co-user's run, computing the edited DAG too, is about to file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = executor.run(START, edited)
    assert store.written and DiskStore(root).get(phase_key) is not None  # intact and readable
    assert cache_warnings(caught) == []  # and nothing found fault with it
    assert out.runs["phase"].reason != UNREADABLE, out.runs["phase"]
    assert out.runs["phase"].reason in ("cached", "config field gdd changed")
    assert_same_results(out, expected)


# --- entries that are there but cannot be read --------------------------------------------------


def test_a_foreign_disk_entry_is_reported_unreadable_recomputed_and_left_in_place(
    tmp_path: Path,
) -> None:
    """A co-user (another key) wrote ``phase``'s entry: our run reads it, misses, reports it as
    unreadable, computes the right result, and deletes nothing of theirs."""
    root = tmp_path / "cache"
    nodes = chain(gdd=3.0)
    keys = keys_of(nodes)
    co_user = DiskStore(root, signer=EntrySigner("a co-user's own key"))
    wrong = StageResult(SimpleState(None, {"omega": np.zeros(16), "phase": np.ones(16)}))
    co_user.put(keys["phase"], wrong)
    files = sorted(p.name for p in entry_path(root, keys["phase"]).iterdir())

    cache = DagCache(DiskStore(root))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = DagExecutor(cache=cache).run(START, nodes)
    assert out.ran == ["grid", "phase", "again"]
    assert out.runs["phase"].reason == UNREADABLE
    assert out.runs["grid"].reason == out.runs["again"].reason == "not cached"
    assert_same_results(out, reference(nodes))
    assert len(cache_warnings(caught)) == 1
    assert sorted(p.name for p in entry_path(root, keys["phase"]).iterdir()) == files
    assert co_user.get(keys["phase"]) is not None  # theirs still reads for them
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["errors"]) == (0, 3, 0)


def test_a_listener_hears_the_unreadable_node_in_the_plan_before_any_hit(tmp_path: Path) -> None:
    """The plan a listener hears names the unreadable node as stale (a session shows it pending),
    and comes before the hits' on_done."""
    root, nodes, keys = filled_disk_cache(tmp_path)
    meta = entry_path(root, keys["again"]) / "meta.json"
    meta.chmod(0o644)
    meta.write_text(meta.read_text().replace('"', "'", 1))

    heard: list[Any] = []

    class Listener:
        def on_plan(self, plan: object, stale: dict) -> None:
            heard.append(("plan", {nid: s.reasons for nid, s in stale.items()}))

        def on_done(self, node_id: str, result: object, cache_hit: bool) -> None:
            heard.append((node_id, cache_hit))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        out = DagExecutor(cache=DiskStore(root), callbacks=[Listener()]).run(START, nodes)
    assert heard == [
        ("plan", {"again": (UNREADABLE,)}),
        ("grid", True),
        ("phase", True),
        ("again", False),
    ]
    assert out.hits == ["grid", "phase"] and out.runs["again"].reason == UNREADABLE
    assert_same_results(out, reference(nodes))


def test_a_targeted_run_reads_only_the_nodes_it_covers_and_looks_up_the_rest(
    tmp_path: Path,
) -> None:
    root, nodes, keys = filled_disk_cache(tmp_path)
    store = Proxy(DiskStore(root))
    out = DagExecutor(cache=DagCache(store)).run(START, nodes, targets=["phase"])
    assert out.hits == ["grid", "phase"] and "again" not in out.runs
    assert store.calls["get"] == [keys["grid"], keys["phase"]]
    assert store.calls["contains"] == [keys["again"]]
    assert store.calls["put"] == []


def test_a_targeted_run_with_an_unreadable_node_recomputes_it_right(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    nodes = chain(gdd=5.0)
    keys = keys_of(nodes)
    DiskStore(root, signer=EntrySigner("co-user")).put(
        keys["grid"], StageResult(SimpleState(None, {"omega": np.full(16, 7.0)}))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        out = DagExecutor(cache=DiskStore(root)).run(START, nodes, targets=["phase"])
    assert out.ran == ["grid", "phase"] and out.runs["grid"].reason == UNREADABLE
    expected = reference(nodes)
    np.testing.assert_array_equal(
        out.results["phase"].state.meta["phase"], expected.results["phase"].state.meta["phase"]
    )


# --- early cutoff --------------------------------------------------------------------------


def cutoff_chain(n: int) -> list[NodeSpec]:
    """``grid``'s N changes its key; ``phase`` and ``again`` then are stale only because
    upstream changed. (Early cutoff needs an upstream node whose output did not change: a
    span of the same grid written differently does that.)"""
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(N=16, span=float(n)))),
        NodeSpec(id="phase", deps=["grid"], stage=PhaseStage(PhaseCfg(gdd=2.0))),
        NodeSpec(id="again", deps=["phase"], stage=PhaseStage(PhaseCfg(gdd=1.0))),
    ]


def test_early_cutoff_never_serves_a_previous_entry_replaced_by_a_foreign_one(
    tmp_path: Path,
) -> None:
    """Between runs a co-user (another key) replaced ``phase``'s previous entry: the cutoff
    cannot read it, so ``phase`` runs; the result is right and nothing foreign is served."""
    root = tmp_path / "cache"
    executor = DagExecutor(cache=DiskStore(root))
    executor.run(START, cutoff_chain(1))
    before = keys_of(cutoff_chain(1))
    DiskStore(root).delete(before["phase"])
    DiskStore(root, signer=EntrySigner("co-user")).put(
        before["phase"], StageResult(SimpleState(None, {"omega": np.zeros(16)}))
    )
    edited = cutoff_chain(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        out = executor.run(START, edited)
    assert out.runs["phase"].status is NodeStatus.RAN
    assert_same_results(out, reference(edited))


# --- the disk store's own tree, planted ---------------------------------------------------------


def plant_genuine_wrong_entry(tmp_path: Path, key: str) -> Path:
    """A directory elsewhere holding a genuine entry (our key signs it) for ``key`` whose result
    is wrong; returns that other cache's root."""
    elsewhere = tmp_path / "elsewhere"
    wrong = StageResult(SimpleState(None, {"omega": np.full(16, 99.0)}), metrics={"N": -1})
    DiskStore(elsewhere).put(key, wrong)
    return elsewhere


@pytest.mark.parametrize("level", ["shard", "entry"])
def test_a_symlink_planted_in_the_tree_is_never_followed_to_a_wrong_result(
    tmp_path: Path, level: str
) -> None:
    root, nodes, key = cache_to_plant_in(tmp_path, "grid")
    elsewhere = plant_genuine_wrong_entry(tmp_path, key)
    ours = entry_path(root, key)
    if level == "shard":
        link, target = ours.parent.parent, entry_path(elsewhere, key).parent.parent
    else:
        link, target = ours, entry_path(elsewhere, key)
    link.parent.mkdir(parents=True)
    link.symlink_to(target, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        out = DagExecutor(cache=DiskStore(root)).run(START, nodes)
    assert out.runs["grid"].status is NodeStatus.RAN
    assert out.metrics["grid.N"] == 16
    assert_same_results(out, reference(nodes))
    assert link.is_symlink()  # left in place
    assert DiskStore(elsewhere).get(key).metrics == {"N": -1}  # and nothing written through it
    assert len(os.listdir(entry_path(elsewhere, key).parent)) == 1


@pytest.mark.parametrize("planted", ["fifo", "file"])
def test_a_fifo_or_file_in_place_of_a_shard_costs_a_recompute_and_stays(
    tmp_path: Path, planted: str
) -> None:
    root, nodes, key = cache_to_plant_in(tmp_path, "phase")
    shard = entry_path(root, key).parent.parent
    shard.parent.mkdir(parents=True)
    if planted == "fifo":
        os.mkfifo(shard)
    else:
        shard.write_bytes(b"not a directory")
    box: dict[str, Any] = {}

    def run() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)
            box["out"] = DagExecutor(cache=DiskStore(root)).run(START, nodes)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the run hung on the planted shard"
    out = box["out"]
    assert out.runs["phase"].status is NodeStatus.RAN
    assert out.runs["phase"].reason != "cached"
    assert_same_results(out, reference(nodes))
    assert shard.exists() and not shard.is_dir()  # nobody removed it


@pytest.mark.parametrize("where", ["under", "at"])
def test_a_root_under_or_at_a_file_is_a_miss_warned_about_for_writes_only(
    tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    nodes = chain()
    cache = DagCache(DiskStore(blocker / "cache" if where == "under" else blocker))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = DagExecutor(cache=cache).run(START, nodes)
    assert out.ran == ["grid", "phase", "again"]
    assert {r.reason for r in out.runs.values()} == {"not cached"}
    messages = cache_warnings(caught)
    assert messages and all("cannot write" in m for m in messages), messages
    assert blocker.read_text() == "a file"
    assert_same_results(out, reference(nodes))


# --- stores that fail, strict or not -------------------------------------------------------------


class ReadsFail(Proxy):
    """A real memory store whose reads raise (a backend bug, a torn connection)."""

    failing = True

    def get(self, key: str) -> StageResult | None:
        self.calls["get"].append(key)
        if self.failing:
            raise RuntimeError("read failed")
        return self.store.get(key)


def test_a_store_whose_reads_fail_says_so_and_computes_its_entries() -> None:
    memory = MemoryStore()
    nodes = chain()
    DagExecutor(cache=memory).run(START, nodes)
    cache = DagCache(ReadsFail(memory))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = DagExecutor(cache=cache).run(START, nodes)
    assert out.ran == ["grid", "phase", "again"]
    assert {r.reason for r in out.runs.values()} == {"cache read failed"}
    assert len(cache_warnings(caught)) == 3 and cache.errors == 3
    assert_same_results(out, reference(nodes))


class EveryCallFails(Proxy):
    """A store that has gone away: every call raises (after a timeout, for a remote one)."""

    def get(self, key: str) -> StageResult | None:
        self.calls["get"].append(key)
        raise TimeoutError("store unreachable")

    def contains(self, key: str) -> bool:
        self.calls["contains"].append(key)
        raise TimeoutError("store unreachable")

    def put(self, key: str, result: StageResult) -> None:
        self.calls["put"].append(key)
        raise TimeoutError("store unreachable")


def test_a_store_that_is_gone_costs_one_failed_call_per_node_at_look_up() -> None:
    """A read that raised told the run nothing, and the store is failing: asking it again
    (``contains``) doubles what an outage costs each node at look-up (two timeouts for a
    remote store) and the warnings and errors counted. Before look_up, a run asked once."""
    store = EveryCallFails(MemoryStore())
    cache = DagCache(store)
    nodes = chain()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = DagExecutor(cache=cache).run(START, nodes)
    assert_same_results(out, reference(nodes))
    looked_up = len(store.calls["get"]) + len(store.calls["contains"])
    assert looked_up == len(nodes), store.calls
    assert cache.errors == 2 * len(nodes)  # one failed look-up and one failed put per node
    assert len(cache_warnings(caught)) == 2 * len(nodes)


def test_a_strict_cache_whose_read_fails_raises_before_the_plan_and_leaves_a_session_clean() -> (
    None
):
    store = ReadsFail(MemoryStore())
    store.failing = False
    nodes = chain()
    session = LiveSession(nodes, START, cache=DagCache(store, strict=True), memory_bytes=1)
    first = session.run()
    assert first.ran == ["grid", "phase", "again"]
    store.failing = True
    heard: list[str] = []
    session.subscribe(lambda event, _: heard.append(event))
    with pytest.raises(CacheError, match="read failed"):
        session.run()
    assert len(session.history) == 1
    assert NodeStatus.RUNNING not in session.status.values()
    assert session.executor.cache.previous is first.plan  # the failed run is not compared with
    assert "run" not in heard


# --- a session with a memory tier in front of the disk ------------------------------------------


def test_a_session_with_unreadable_disk_entries_keeps_true_statuses_and_history(
    tmp_path: Path,
) -> None:
    root, nodes, keys = filled_disk_cache(tmp_path)
    meta = entry_path(root, keys["phase"]) / "meta.json"
    meta.chmod(0o644)
    meta.write_bytes(meta.read_bytes()[:-5])

    session = LiveSession(nodes, START, cache=DiskStore(root), memory_bytes=1 << 24)
    assert session.status["phase"] is NodeStatus.CACHED  # a lookup cannot tell: still a hint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        out = session.run()
    assert out.hits == ["grid", "again"] and out.ran == ["phase"]  # again's own entry is fine
    assert out.runs["phase"].reason == UNREADABLE
    assert session.status["phase"] is NodeStatus.RAN
    assert session.last_run_reasons()["phase"] == UNREADABLE
    assert session.history[-1].reasons["phase"] == UNREADABLE
    assert_same_results(out, reference(nodes))
    # the memory tier holds what was computed: the next run loads it, right
    again = session.run()
    assert again.hits == ["grid", "phase", "again"]
    assert_same_results(again, reference(nodes))
    assert sorted(p.name for p in meta.parent.iterdir())  # the bad entry was not deleted


# --- Redis --------------------------------------------------------------------------------------


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"attack-{uuid.uuid4().hex[:8]}"
    yield name
    RedisStore(redis_url, prefix=name).clear()


def test_a_redis_entry_signed_by_a_co_user_is_recomputed_then_overwritten_and_hit(
    redis_url: str, prefix: str
) -> None:
    nodes = chain(gdd=4.0)
    keys = keys_of(nodes)
    co_user = RedisStore(redis_url, prefix, signer=EntrySigner("co-user"))
    co_user.put(keys["phase"], StageResult(SimpleState(None, {"omega": np.zeros(16)})))
    ours = RedisStore(redis_url, prefix)
    cache = DagCache(ours)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = DagExecutor(cache=cache).run(START, nodes)
    assert out.runs["phase"].reason == UNREADABLE and len(cache_warnings(caught)) == 1
    assert_same_results(out, reference(nodes))
    assert ours.get(keys["phase"]) is not None  # the put overwrote the foreign entry
    again = DagExecutor(cache=DagCache(ours)).run(START, nodes)
    assert again.hits == ["grid", "phase", "again"]
    assert_same_results(again, reference(nodes))


def test_a_co_users_redis_run_leaves_none_of_our_entries_deleted_by_reading(
    redis_url: str, prefix: str
) -> None:
    """The co-user only plans and reads (their stale check and a targeted run of what they
    do not share with us): our entries are all still there, and still hits for us."""
    nodes = chain(gdd=6.0)
    ours = RedisStore(redis_url, prefix)
    DagExecutor(cache=ours).run(START, nodes)
    co_user = RedisStore(redis_url, prefix, signer=EntrySigner("co-user"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        for key in keys_of(nodes).values():
            assert co_user.get(key) is None
        DagCache(co_user).look_up(
            DagExecutor().plan(START, nodes), [n.id for n in nodes]
        )  # a co-user's look-up: reads only
    assert len(ours) == 3
    again = DagExecutor(cache=ours).run(START, nodes)
    assert again.hits == ["grid", "phase", "again"]


def test_stats_count_one_read_per_node_of_a_run(tmp_path: Path) -> None:
    nodes = chain()
    cache = open_cache(DiskStore(tmp_path / "cache"))
    DagExecutor(cache=cache).run(START, nodes)
    assert (cache.hits, cache.misses, cache.puts) == (0, 3, 3)
    cache.reset_stats()
    DagExecutor(cache=cache).run(START, nodes)
    assert (cache.hits, cache.misses, cache.puts) == (3, 0, 0)
    assert cache.stats()["hit_rate"] == 1.0


def test_dask_workers_facing_a_co_users_redis_entry_leave_it_to_the_driver_to_overwrite(
    client: Any, redis_url: str, prefix: str
) -> None:
    """Readers leave a co-user's entry in place, so a worker filing ``phase`` finds a key
    taken: it sends the full result back, the driver's put overwrites the entry, and the next
    run hits: nothing foreign is served, nothing is lost."""
    from phys_pipeline.dask import DaskScheduler

    nodes = chain(gdd=8.0)
    keys = keys_of(nodes)
    RedisStore(redis_url, prefix, signer=EntrySigner("co-user")).put(
        keys["phase"], StageResult(SimpleState(None, {"omega": np.zeros(16)}))
    )
    ours = RedisStore(redis_url, prefix, signer=EntrySigner("our own key"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        out = DagExecutor(scheduler=DaskScheduler(client), cache=ours).run(START, nodes)
    assert out.runs["phase"].reason == UNREADABLE
    assert_same_results(out, reference(nodes))
    again = DagExecutor(scheduler=DaskScheduler(client), cache=ours).run(START, nodes)
    assert again.hits == ["grid", "phase", "again"]
    assert_same_results(again, reference(nodes))
