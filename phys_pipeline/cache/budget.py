"""Keeping a disk cache within a size budget: least recently used entries go first.

Cheap on the hot path: a hit is only noted in memory; the entries used since are stamped (their
directory's times set to the time of use) in one batch at most every ``FLUSH_EVERY_S`` seconds
and before every eviction. The size is tracked as an estimate: one scan of the cache the first
time this process writes, plus what it writes since; it is scanned again when the estimate goes
over budget (then the least recently used entries are removed down to ``LOW_WATER`` of the
budget) or is older than ``RESCAN_EVERY_S``, or twenty times what the last scan took on a large
cache (other processes write too: the cache may exceed its budget by what they wrote since
this process last looked). A process that wrote settles the budget when it exits, so a cache
whose writers have all finished is within budget.

Safe with readers and writers in other processes: an entry is removed by renaming its directory
out of the readers' way (``DiskStore.delete``), so a reader that has it open finishes, a later
one misses and recomputes. Two processes evicting at once may both remove entries, leaving the
cache somewhat below budget; never an entry half gone.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

__all__ = [
    "FLUSH_EVERY_S",
    "LOW_WATER",
    "RESCAN_EVERY_S",
    "DiskBudget",
    "Listed",
    "least_recently_used",
]

FLUSH_EVERY_S = 30.0
RESCAN_EVERY_S = 10.0
LOW_WATER = 0.9

_log = logging.getLogger("phys_pipeline.cache")


class Listed(Protocol):
    """What a budget needs to know of an entry (``DiskStore.entries`` gives ``EntryInfo``)."""

    key: str
    nbytes: int
    used: float


def least_recently_used(infos: Iterable[Listed], max_bytes: int) -> list[Any]:
    """The entries to remove, least recently used first, so that at most ``max_bytes``
    remain."""
    listed = sorted(infos, key=lambda info: info.used)
    total = sum(info.nbytes for info in listed)
    doomed = []
    for info in listed:
        if total <= max_bytes:
            break
        doomed.append(info)
        total -= info.nbytes
    return doomed


class _Store(Protocol):
    """What a budget uses of its store (a ``DiskStore``)."""

    root: Any

    def entries(self, *, claims: bool = True) -> Iterator[Any]: ...

    def delete(self, key: str) -> None: ...

    def touch(self, key: str, when: float) -> None: ...


class DiskBudget:
    """The budget of one ``DiskStore`` (``DiskStore(max_bytes=...)`` makes one)."""

    def __init__(self, store: _Store, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes!r}")
        self.store, self.max_bytes = store, max_bytes
        self._lock = threading.Lock()
        self._used: dict[str, float] = {}  # key -> wall time of its last use, not stamped yet
        self._flushed = time.monotonic()
        self._estimate: int | None = None  # bytes in the cache, as far as this process knows
        self._scanned = 0.0  # monotonic time of the last scan
        self._rescan_after = RESCAN_EVERY_S
        self._written = False  # since the last scan: settle the budget at exit
        atexit.register(_settle_at_exit, weakref.ref(self))

    def note_hit(self, key: str) -> None:
        """An entry was read: remember when (stamped later, in a batch)."""
        self._used[key] = time.time()
        if time.monotonic() - self._flushed > FLUSH_EVERY_S:
            self.flush()

    def note_put(self, key: str, nbytes: int) -> None:
        """An entry of ``nbytes`` was written; evict if the cache is now over budget."""
        self._used.pop(key, None)  # a new directory is stamped already
        self._written = True
        with self._lock:
            stale = time.monotonic() - self._scanned > self._rescan_after
            if self._estimate is None or stale:
                self._estimate = self._scan()
            else:
                self._estimate += nbytes
            if self._estimate > self.max_bytes:
                self._estimate = self._evict()

    def flush(self) -> None:
        """Stamp every entry used since the last flush with the time it was used."""
        used, self._used = self._used, {}
        self._flushed = time.monotonic()
        for key, when in used.items():
            self.store.touch(key, when)

    def settle(self) -> None:
        """Stamp recent uses and, if this process wrote since it last looked, bring the
        cache back within budget (at exit, so a process leaves the cache as it should be)."""
        self.flush()
        with self._lock:
            if self._written and self._scan() > self.max_bytes:
                self._estimate = self._evict()
            self._written = False

    def _scan(self) -> int:
        started = time.monotonic()
        total = sum(info.nbytes for info in self.store.entries(claims=False))
        self._scanned = time.monotonic()
        self._rescan_after = max(RESCAN_EVERY_S, 20 * (self._scanned - started))
        return total

    def _evict(self) -> int:
        """Remove least recently used entries down to LOW_WATER of the budget; returns the
        bytes left."""
        self.flush()
        infos = list(self.store.entries(claims=False))
        doomed = least_recently_used(infos, int(self.max_bytes * LOW_WATER))
        for info in doomed:
            self.store.delete(info.key)
        self._scanned = time.monotonic()
        freed = sum(info.nbytes for info in doomed)
        remaining = sum(info.nbytes for info in infos) - freed
        _log.debug(
            "evict %d entries (%d bytes) from %s: %d bytes left of %d",
            len(doomed),
            freed,
            self.store.root,
            remaining,
            self.max_bytes,
        )
        return remaining


def _settle_at_exit(budget: weakref.ref[DiskBudget]) -> None:
    alive = budget()
    if alive is not None:
        try:
            alive.settle()
        except Exception:  # noqa: BLE001 - a cache that cannot be tidied must not fail exit
            _log.debug("could not settle the budget of %s at exit", alive.store.root)
