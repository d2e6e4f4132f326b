"""A disk cache within a size budget (``DiskStore(max_bytes=...)``): least recently used entries
go first, uses are recorded without a write per hit, and several processes evicting while others
read and write never produce a wrong result."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from phys_pipeline.cache import CacheConfig, DiskStore, budget, build_cache_backend
from phys_pipeline.types import SimpleState, StageResult

ENTRY_BYTES = 64 * 1024  # one result holds 8192 float64


def key(i: int) -> str:
    return f"{i:032x}"


def field(i: int) -> StageResult:
    """A recognisable 64 kB state: every value is ``i``."""
    return StageResult(state=SimpleState(np.full(ENTRY_BYTES // 8, float(i))), metrics={"i": i})


def size_of(store: DiskStore) -> int:
    return sum(info.nbytes for info in store.entries(claims=False))


def stored_keys(store: DiskStore) -> set[str]:
    return {info.key for info in store.entries(claims=False)}


def age_all(store: DiskStore, seconds: float) -> None:
    for info in store.entries(claims=False):
        store.touch(info.key, time.time() - seconds)


def test_writes_beyond_the_budget_evict_down_to_its_low_water_mark(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_bytes=10 * ENTRY_BYTES)
    for i in range(25):
        store.put(key(i), field(i))
    assert size_of(store) <= store.max_bytes
    assert key(24) in stored_keys(store)  # the newest survive
    assert key(0) not in stored_keys(store)


def test_what_was_read_recently_outlives_what_was_written_recently(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_bytes=8 * ENTRY_BYTES)
    for i in range(6):
        store.put(key(i), field(i))
    age_all(store, 3600)
    assert store.get(key(0)).metrics == {"i": 0}  # used now: noted, stamped before evicting
    for i in range(6, 12):
        store.put(key(i), field(i))
    kept = stored_keys(store)
    assert key(0) in kept and key(1) not in kept


def test_a_hit_writes_nothing_until_the_batch_is_flushed(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_bytes=100 * ENTRY_BYTES)
    store.put(key(1), field(1))
    store.touch(key(1), 1000.0)
    store.get(key(1))
    (info,) = store.entries(claims=False)
    assert info.used == 1000.0  # only noted in memory
    store.budget.flush()
    (info,) = store.entries(claims=False)
    assert time.time() - info.used < 60


def test_another_processs_writes_are_seen_at_the_next_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = DiskStore(tmp_path, max_bytes=10 * ENTRY_BYTES)
    ours.put(key(0), field(0))
    theirs = DiskStore(tmp_path)  # another process, with no budget of its own
    for i in range(1, 20):
        theirs.put(key(i), field(i))
    monkeypatch.setattr(budget, "RESCAN_EVERY_S", 0.0)
    ours.budget._rescan_after = 0.0
    ours.put(key(99), field(99))
    assert size_of(ours) <= ours.max_bytes


def test_a_budget_travels_with_a_pickled_store(tmp_path: Path) -> None:
    clone = pickle.loads(pickle.dumps(DiskStore(tmp_path, max_bytes=5 * ENTRY_BYTES)))
    assert clone.budget is not None and clone.budget.max_bytes == 5 * ENTRY_BYTES
    for i in range(10):
        clone.put(key(i), field(i))
    assert size_of(clone) <= 5 * ENTRY_BYTES


def test_the_config_sets_the_budget(tmp_path: Path) -> None:
    store = build_cache_backend(CacheConfig(disk_root=tmp_path, disk_max_bytes=1_000_000))
    assert isinstance(store, DiskStore) and store.budget.max_bytes == 1_000_000
    assert DiskStore(tmp_path).budget is None


def test_least_recently_used_picks_the_oldest_until_the_rest_fits() -> None:
    class Info:
        def __init__(self, name: str, nbytes: int, used: float) -> None:
            self.key, self.nbytes, self.used = name, nbytes, used

    infos = [Info("new", 10, 3.0), Info("old", 10, 1.0), Info("mid", 10, 2.0)]
    assert [i.key for i in budget.least_recently_used(infos, 15)] == ["old", "mid"]
    assert budget.least_recently_used(infos, 30) == []


# --- the soak test: 3 processes x 3 threads, sweeps, eviction active ---------------------------


def _soak(root: str, max_bytes: int, seconds: float, seed: int, out: mp.Queue) -> None:
    """One process: three threads put and get random fields, checking every hit's content."""
    import threading

    store = DiskStore(root, max_bytes=max_bytes)
    wrong: list[str] = []
    errors: list[str] = []
    counts = {"hits": 0, "puts": 0}

    def work(thread_seed: int) -> None:
        rng = np.random.default_rng(thread_seed)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            i = int(rng.integers(0, 60))
            try:
                hit = store.get(key(i))
                if hit is None:
                    store.put(key(i), field(i))
                    counts["puts"] += 1
                else:
                    counts["hits"] += 1
                    if hit.metrics != {"i": i} or not np.all(hit.state.payload == i):
                        wrong.append(key(i))
            except Exception as exc:  # noqa: BLE001 - counted, the test fails on any
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(seed * 10 + t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((wrong, errors, counts))


@pytest.mark.timeout(120)
def test_three_processes_evicting_while_they_read_and_write_never_get_a_wrong_result(
    tmp_path: Path,
) -> None:
    max_bytes = 20 * (ENTRY_BYTES + 4096)  # a third of the 60 distinct fields fits
    out: mp.Queue = mp.get_context("spawn").Queue()
    context = mp.get_context("spawn")
    procs = [
        context.Process(target=_soak, args=(str(tmp_path), max_bytes, 6.0, seed, out))
        for seed in range(3)
    ]
    for proc in procs:
        proc.start()
    reports = [out.get(timeout=100) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    wrong = [w for report in reports for w in report[0]]
    errors = [e for report in reports for e in report[1]]
    assert wrong == [] and errors == []
    assert sum(r[2]["hits"] for r in reports) > 0 and sum(r[2]["puts"] for r in reports) > 20
    # each process settles the budget as it exits: the last one leaves it within budget
    store = DiskStore(tmp_path)
    assert size_of(store) <= max_bytes
    leftovers = os.listdir(tmp_path / "tmp") if (tmp_path / "tmp").exists() else []
    assert leftovers == []  # no scratch or trash directory left behind
