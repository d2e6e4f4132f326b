"""MemoryStore: an in-process LRU bounded in bytes, for repeated runs in one notebook kernel."""

from __future__ import annotations

import sys
import threading
import types
from collections import OrderedDict
from typing import Any

import numpy as np

from ..types import StageResult
from .base import validate_key

__all__ = ["MemoryStore", "estimate_nbytes"]

_OBJECT_OVERHEAD = 64
# leaves: sized but not walked (code objects would drag in whole modules)
_LEAVES = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
)


def _attributes(obj: Any) -> list[Any]:
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                values.append(getattr(obj, name))
    return values


def estimate_nbytes(obj: Any) -> int:
    """A deep size estimate: array buffers by ``nbytes``, containers and objects walked once
    each (by identity), code objects not walked. Good enough to budget memory, not exact."""
    total, seen, stack = 0, set(), [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            total += item.nbytes + _OBJECT_OVERHEAD
            if item.dtype.hasobject:
                stack.extend(item.ravel().tolist())
            continue
        try:
            total += sys.getsizeof(item)
        except TypeError:
            total += _OBJECT_OVERHEAD
        if isinstance(item, _LEAVES):
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            stack.extend(_attributes(item))
    return total


def _shallow_copy(result: StageResult) -> StageResult:
    """Fresh dicts around the same state, so a caller that adds provenance to a hit cannot
    change what the store holds (states are never copied: stages copy before writing)."""
    return StageResult(
        state=result.state,
        metrics=dict(result.metrics),
        artifacts=dict(result.artifacts),
        provenance=dict(result.provenance),
    )


class MemoryStore:
    """Keeps results as Python objects (lazy artifacts included) in LRU order, evicting the
    least recently used entries once their estimated size exceeds ``max_bytes``. Thread-safe.
    A result larger than ``max_bytes`` on its own is not kept."""

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        if max_bytes <= 0:
            raise ValueError(f"MemoryStore: max_bytes must be > 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[StageResult, int]] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Estimated bytes held now."""
        return self._nbytes

    def get(self, key: str) -> StageResult | None:
        key = validate_key(key)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        return _shallow_copy(entry[0])

    def put(self, key: str, result: StageResult) -> None:
        key = validate_key(key)
        size = estimate_nbytes(result)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if size > self.max_bytes:
                return
            self._entries[key] = (_shallow_copy(result), size)
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
