"""MemoryStore: an in-process LRU bounded in bytes, for repeated runs in one notebook kernel."""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar

from ..types import StageResult
from .base import CacheWarning, validate_key
from .frozen import UncopyableResult, estimate_nbytes, keep

__all__ = ["MemoryStore", "estimate_nbytes"]


class MemoryStore:
    """Keeps results as Python objects (lazy artifacts included) in LRU order, evicting the
    least recently used entries once their estimated size exceeds ``max_bytes``. Thread-safe.
    A result larger than ``max_bytes`` on its own is not kept. Nothing stored is shared with a
    caller that could change it: arrays are read-only and containers copied (see ``frozen``)."""

    name: ClassVar[str] = "memory"  # the CacheConfig.backend this store is

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        if max_bytes <= 0:
            raise ValueError(f"MemoryStore: max_bytes must be > 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        # key -> (what a hit calls for a fresh copy of the entry, its estimated size)
        self._entries: OrderedDict[str, tuple[Callable[[], StageResult], int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Estimated bytes held now."""
        return self._nbytes

    def get(self, key: str) -> StageResult | None:
        """Lock-free: each dict operation is atomic, and an entry never changes once made (a
        put replaces it), so the lock only guards the byte count and eviction in ``put``."""
        key = validate_key(key)
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:  # noqa: SIM105 - contextlib.suppress costs more than the whole lookup
            self._entries.move_to_end(key)
        except KeyError:  # evicted meanwhile: the entry in hand is still whole
            pass
        return entry[0]()

    def put(self, key: str, result: StageResult) -> None:
        """Keep a private copy of ``result`` (see ``frozen``): its arrays become read-only,
        in place where they own their memory, so the caller's later edits raise instead of
        changing the entry. A result that cannot be copied is not kept (one CacheWarning)."""
        key = validate_key(key)
        try:
            hand_out, size = keep(result)
        except UncopyableResult as exc:
            self.delete(key)
            warnings.warn(
                f"memory cache: not keeping entry {key}, its state cannot be copied ({exc})",
                CacheWarning,
                stacklevel=2,
            )
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (hand_out, size)
            self._nbytes += size
            while self._nbytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._nbytes -= evicted

    def contains(self, key: str) -> bool:
        return validate_key(key) in self._entries

    def delete(self, key: str) -> None:
        key = validate_key(key)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"MemoryStore({len(self)} entries, {self._nbytes / 2**20:.1f} MiB of "
            f"{self.max_bytes / 2**20:.0f} MiB)"
        )
