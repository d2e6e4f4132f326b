"""TieredStore over real stores: reads go fast to slow and stop at the first hit, a hit in a
slow tier is copied into every faster tier, writes, deletes and clears reach every tier, and a
hit served by the memory tier shares nothing the caller could change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phys_pipeline.cache import CacheWarning, DiskCache, MemoryStore, TieredStore
from phys_pipeline.errors import CacheError
from phys_pipeline.types import SimpleState, StageResult

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"


def spectrum(peak: float, n: int = 16) -> StageResult:
    """A measured spectrum: the array in the state, its peak as meta and as a metric."""
    return StageResult(
        SimpleState({"intensity": np.linspace(0.0, peak, n)}, {"peak": peak}),
        metrics={"peak": peak},
        provenance={"detector": "ccd"},
    )


def peak_of(store: Any, key: str = KEY) -> float | None:
    """The peak metric of the entry ``store`` serves for ``key`` (None: a miss)."""
    hit = store.get(key)
    return None if hit is None else hit.metrics["peak"]


class Logged:
    """A real store whose calls are written to ``log`` as ``(name, method)``."""

    def __init__(self, name: str, store: Any, log: list[tuple[str, str]]) -> None:
        self.name, self.store, self.log = name, store, log

    def _call(self, method: str, *args: Any) -> Any:
        self.log.append((self.name, method))
        return getattr(self.store, method)(*args)

    def get(self, key: str) -> StageResult | None:
        return self._call("get", key)

    def put(self, key: str, result: StageResult) -> None:
        self._call("put", key, result)

    def contains(self, key: str) -> bool:
        return self._call("contains", key)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def clear(self) -> None:
        self._call("clear")


@pytest.fixture
def disk(tmp_path: Path) -> DiskCache:
    return DiskCache(tmp_path / "disk")


@pytest.fixture
def archive(tmp_path: Path) -> DiskCache:
    """A second, slower disk tier (a network share, say)."""
    return DiskCache(tmp_path / "archive")


# --- reading --------------------------------------------------------------------------------


def test_the_fastest_tier_holding_the_key_wins() -> None:
    fast, slow = MemoryStore(), MemoryStore()
    fast.put(KEY, spectrum(1.0))
    slow.put(KEY, spectrum(2.0))
    assert peak_of(TieredStore([fast, slow])) == 1.0


def test_a_hit_in_a_fast_tier_never_asks_the_slower_tiers(disk: DiskCache) -> None:
    log: list[tuple[str, str]] = []
    memory = MemoryStore()
    memory.put(KEY, spectrum(1.0))
    tiers = TieredStore([Logged("memory", memory, log), Logged("disk", disk, log)])
    assert peak_of(tiers) == 1.0
    assert log == [("memory", "get")]


def test_a_miss_asks_every_tier_in_order(disk: DiskCache) -> None:
    log: list[tuple[str, str]] = []
    tiers = TieredStore([Logged("memory", MemoryStore(), log), Logged("disk", disk, log)])
    assert tiers.get(KEY) is None
    assert log == [("memory", "get"), ("disk", "get")]


def test_a_hit_in_the_slowest_tier_is_copied_into_every_faster_tier(
    disk: DiskCache, archive: DiskCache
) -> None:
    memory = MemoryStore()
    archive.put(KEY, spectrum(3.0))
    assert peak_of(TieredStore([memory, disk, archive])) == 3.0
    archive.clear()
    assert peak_of(memory) == 3.0 and peak_of(disk) == 3.0


def test_a_backfilled_entry_serves_the_next_read_from_the_fast_tier(disk: DiskCache) -> None:
    log: list[tuple[str, str]] = []
    disk.put(KEY, spectrum(3.0))
    tiers = TieredStore([Logged("memory", MemoryStore(), log), Logged("disk", disk, log)])
    tiers.get(KEY)
    assert log == [("memory", "get"), ("disk", "get"), ("memory", "put")]
    log.clear()
    assert peak_of(tiers) == 3.0
    assert log == [("memory", "get")]


def test_a_tier_with_a_corrupt_entry_falls_through_and_keeps_the_entry(
    disk: DiskCache, archive: DiskCache
) -> None:
    """A reader never deletes what it cannot read: the corrupt disk entry stays (for an
    explicit prune), the archive serves, and the memory tier is backfilled."""
    memory = MemoryStore()
    tiers = TieredStore([memory, disk, archive])
    tiers.put(KEY, spectrum(3.0))
    memory.clear()
    (meta,) = disk.root.rglob("meta.json")
    meta.unlink()
    meta.write_text("{ not json")
    assert disk.contains(KEY)  # a cheap hint: the entry is there, unread
    with pytest.warns(CacheWarning, match="entry"):
        assert peak_of(tiers) == 3.0  # from the archive
    assert meta.read_text() == "{ not json"  # left where it was
    assert memory.contains(KEY)


def test_a_result_the_memory_tier_cannot_keep_is_still_served_by_disk(disk: DiskCache) -> None:
    memory = MemoryStore(max_bytes=4096)
    tiers = TieredStore([memory, disk])
    tiers.put(KEY, spectrum(5.0, n=10_000))  # 80 kB of intensity
    assert not memory.contains(KEY)
    hit = tiers.get(KEY)
    assert hit is not None and hit.state.payload["intensity"][-1] == 5.0
    assert not memory.contains(KEY)


# --- writing and housekeeping ---------------------------------------------------------------


def test_put_writes_every_tier(disk: DiskCache, archive: DiskCache) -> None:
    memory = MemoryStore()
    TieredStore([memory, disk, archive]).put(KEY, spectrum(2.0))
    for tier in (memory, disk, archive):
        hit = tier.get(KEY)
        assert hit is not None and hit.metrics == {"peak": 2.0}
        np.testing.assert_array_equal(hit.state.payload["intensity"], np.linspace(0.0, 2.0, 16))


def test_delete_reaches_every_tier(disk: DiskCache, archive: DiskCache) -> None:
    memory = MemoryStore()
    tiers = TieredStore([memory, disk, archive])
    tiers.put(KEY, spectrum(2.0))
    tiers.put(OTHER_KEY, spectrum(4.0))
    tiers.delete(KEY)
    for tier in (memory, disk, archive):
        assert tier.get(KEY) is None and peak_of(tier, OTHER_KEY) == 4.0


def test_clear_empties_every_tier(disk: DiskCache, archive: DiskCache) -> None:
    memory = MemoryStore()
    tiers = TieredStore([memory, disk, archive])
    tiers.put(KEY, spectrum(2.0))
    tiers.put(OTHER_KEY, spectrum(4.0))
    tiers.clear()
    assert [len(tier) for tier in (memory, disk, archive)] == [0, 0, 0]


@pytest.mark.parametrize("holder", ["memory", "disk", None])
def test_contains_is_true_if_any_tier_has_the_key(disk: DiskCache, holder: str | None) -> None:
    memory = MemoryStore()
    tiers = {"memory": memory, "disk": disk}
    if holder is not None:
        tiers[holder].put(KEY, spectrum(1.0))
    assert TieredStore([memory, disk]).contains(KEY) is (holder is not None)


# --- failing tiers --------------------------------------------------------------------------


def unwritable_disk(tmp_path: Path, *, strict: bool) -> DiskCache:
    """A disk store whose root lies under a regular file: every write fails."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return DiskCache(blocker / "cache", strict=strict)


def test_a_strict_tiers_error_reaches_the_caller(tmp_path: Path) -> None:
    tiers = TieredStore([MemoryStore(), unwritable_disk(tmp_path, strict=True)])
    with pytest.raises(CacheError, match="cannot write entry"):
        tiers.put(KEY, spectrum(1.0))


@pytest.mark.parametrize(("strict_tiers", "expected"), [((), False), ((1,), True), ((0, 1), True)])
def test_a_tiered_store_is_strict_if_any_tier_is(
    tmp_path: Path, strict_tiers: tuple[int, ...], expected: bool
) -> None:
    tiers = [DiskCache(tmp_path / f"tier{i}", strict=i in strict_tiers) for i in range(2)]
    assert TieredStore(tiers).strict is expected


def test_a_tier_that_cannot_write_leaves_the_others_serving(tmp_path: Path) -> None:
    memory = MemoryStore()
    tiers = TieredStore([memory, unwritable_disk(tmp_path, strict=False)])
    with pytest.warns(CacheWarning, match="cannot write entry"):
        tiers.put(KEY, spectrum(1.0))
    assert peak_of(tiers) == 1.0


# --- a memory-tier hit is the caller's to read, not to change -------------------------------


def test_editing_the_containers_of_a_memory_hit_does_not_change_the_entry(
    disk: DiskCache,
) -> None:
    tiers = TieredStore([MemoryStore(), disk])
    tiers.put(KEY, spectrum(2.0))
    hit = tiers.get(KEY)
    assert hit is not None
    hit.state.meta["peak"] = 0.0
    hit.state.payload["intensity"] = np.zeros(16)
    hit.metrics["peak"] = 0.0
    hit.provenance["detector"] = "edited"
    again = tiers.get(KEY)
    assert again is not None
    assert again.state.meta == {"peak": 2.0} and again.metrics == {"peak": 2.0}
    assert again.provenance == {"detector": "ccd"}
    np.testing.assert_array_equal(again.state.payload["intensity"], np.linspace(0.0, 2.0, 16))


def test_writing_into_an_array_of_a_memory_hit_raises(disk: DiskCache) -> None:
    tiers = TieredStore([MemoryStore(), disk])
    tiers.put(KEY, spectrum(2.0))
    hit = tiers.get(KEY)
    assert hit is not None
    with pytest.raises(ValueError, match="read-only"):
        hit.state.payload["intensity"][0] = 99.0
    again = tiers.get(KEY)
    assert again is not None and again.state.payload["intensity"][0] == 0.0


# --- building one ---------------------------------------------------------------------------


def test_a_tiered_store_needs_a_tier() -> None:
    with pytest.raises(ValueError, match="at least one tier"):
        TieredStore([])


def test_repr_names_the_tiers_fastest_first(disk: DiskCache) -> None:
    memory = MemoryStore()
    assert repr(TieredStore([memory, disk])) == f"TieredStore([{memory!r}, {disk!r}])"
