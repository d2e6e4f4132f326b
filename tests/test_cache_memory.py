"""MemoryStore (LRU bounded in bytes) and TieredStore (read-through with backfill)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from phys_pipeline.cache import DiskStore, MemoryStore, TieredStore
from phys_pipeline.cache.memory import estimate_nbytes
from phys_pipeline.types import DagState, SimpleState, StageResult, State

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

MB = 1_000_000


def key(i: int) -> str:
    return f"{i:032x}"


def result_of(nbytes: int, tag: int = 0) -> StageResult:
    return StageResult(SimpleState(np.full(nbytes // 8, float(tag))), metrics={"tag": tag})


@dataclass(slots=True)
class TwoFields(State):
    a: np.ndarray
    b: np.ndarray

    def deepcopy(self) -> TwoFields:
        return TwoFields(self.a.copy(), self.b.copy())

    def hashable_repr(self) -> bytes:
        return self.a.tobytes() + self.b.tobytes()


# --- size estimate --------------------------------------------------------------------------


def test_estimate_counts_array_bytes_wherever_they_live() -> None:
    a, b = np.zeros(100_000), np.zeros(50_000)
    for state in (
        SimpleState({"nested": [a, {"deeper": (b,)}]}),
        TwoFields(a, b),
        DagState({"x": SimpleState(a), "y": SimpleState(meta={"b": b})}),
    ):
        size = estimate_nbytes(StageResult(state))
        assert 1.2 * MB <= size < 1.2 * MB + 10_000, type(state).__name__


def test_estimate_counts_a_shared_array_once() -> None:
    a = np.zeros(100_000)
    assert estimate_nbytes(SimpleState([a, a, a])) < 0.81 * MB


# --- LRU by bytes ---------------------------------------------------------------------------


def test_lru_evicts_least_recently_used_by_bytes() -> None:
    store = MemoryStore(max_bytes=int(3.5 * MB))
    for i in range(3):
        store.put(key(i), result_of(MB, i))
    assert store.get(key(0)) is not None  # 0 is now the most recently used
    store.put(key(3), result_of(MB, 3))
    assert [store.contains(key(i)) for i in range(4)] == [True, False, True, True]
    assert store.nbytes <= store.max_bytes
    store.put(key(4), result_of(2 * MB, 4))  # needs two slots: evicts 2 and 0
    assert [store.contains(key(i)) for i in range(5)] == [False, False, False, True, True]


def test_byte_accounting_follows_overwrite_delete_and_clear() -> None:
    store = MemoryStore(max_bytes=10 * MB)
    store.put(key(1), result_of(MB))
    one = store.nbytes
    assert MB <= one < MB + 5_000
    store.put(key(1), result_of(MB))
    assert store.nbytes == one
    store.put(key(2), result_of(2 * MB))
    store.delete(key(1))
    assert 2 * MB <= store.nbytes < 2 * MB + 5_000
    store.clear()
    assert store.nbytes == 0 and len(store) == 0


def test_result_larger_than_the_budget_is_not_kept() -> None:
    store = MemoryStore(max_bytes=MB)
    store.put(key(1), result_of(MB // 2))
    store.put(key(2), result_of(2 * MB))
    assert not store.contains(key(2)) and store.contains(key(1))


def test_memory_keeps_lazy_artifacts_and_shares_arrays_read_only() -> None:
    state = SimpleState(np.ones(3))

    def plot() -> str:
        return "figure"

    store = MemoryStore()
    store.put(key(1), StageResult(state, artifacts={"plot": plot}))
    hit = store.get(key(1))
    assert hit.artifacts["plot"] is plot
    assert hit.state is not state and np.shares_memory(hit.state.payload, state.payload)
    assert not hit.state.payload.flags.writeable and not state.payload.flags.writeable


def test_editing_a_hits_provenance_does_not_change_the_store() -> None:
    store = MemoryStore()
    store.put(key(1), StageResult(SimpleState(1.0), provenance={"cache": "miss"}))
    store.get(key(1)).provenance["cache"] = "hit"
    assert store.get(key(1)).provenance == {"cache": "miss"}


def test_hits_take_microseconds() -> None:
    store = MemoryStore()
    store.put(key(1), result_of(MB))
    store.get(key(1))
    start = time.perf_counter()
    for _ in range(20_000):
        store.get(key(1))
    assert (time.perf_counter() - start) / 20_000 < 50e-6


def test_concurrent_puts_and_gets_keep_the_budget_and_the_books() -> None:
    store = MemoryStore(max_bytes=20 * 100_000)

    def worker(offset: int) -> None:
        for i in range(300):
            k = key(offset * 1000 + i % 40)
            store.put(k, result_of(100_000, i))
            got = store.get(k)
            assert got is None or got.metrics["tag"] in range(300)

    with ThreadPoolExecutor(6) as pool:
        for done in [pool.submit(worker, n) for n in range(6)]:
            done.result()  # re-raises a worker's failure
    assert store.nbytes <= store.max_bytes
    assert store.nbytes == sum(size for _, size in store._entries.values())


# --- TieredStore ----------------------------------------------------------------------------


def test_tiered_hit_in_a_slow_tier_backfills_the_fast_tier(tmp_path: Path) -> None:
    fast, slow = MemoryStore(), DiskStore(tmp_path / "cache")
    tiers = TieredStore([fast, slow])
    slow.put(key(1), result_of(1000, 7))
    assert not fast.contains(key(1))
    assert tiers.get(key(1)).metrics == {"tag": 7}
    assert fast.contains(key(1))
    slow.clear()
    assert tiers.get(key(1)).metrics == {"tag": 7}  # now served by memory


def test_tiered_put_writes_every_tier_and_misses_fall_through(tmp_path: Path) -> None:
    fast, slow = MemoryStore(), DiskStore(tmp_path / "cache")
    tiers = TieredStore([fast, slow])
    assert tiers.get(key(2)) is None and not tiers.contains(key(2))
    tiers.put(key(2), result_of(1000, 2))
    assert fast.contains(key(2)) and slow.contains(key(2))
    tiers.delete(key(2))
    assert not fast.contains(key(2)) and not slow.contains(key(2))
    tiers.put(key(3), result_of(1000, 3))
    tiers.clear()
    assert len(fast) == 0 and len(slow) == 0


def test_tiered_prefers_the_fastest_tier() -> None:
    first, second = MemoryStore(), MemoryStore()
    first.put(key(1), result_of(100, 1))
    second.put(key(1), result_of(100, 2))
    assert TieredStore([first, second]).get(key(1)).metrics == {"tag": 1}
