"""DagCache: the one object the DAG executor talks to about cached results.

It wraps any cache store, counts hits, misses and puts, and makes sure a cache problem never
fails a run: a store that raises is reported with a CacheWarning and treated as a miss (or a
dropped put), unless ``strict=True``, where it raises CacheError. Hits, misses, stores and
evictions are logged (``logging``, logger ``phys_pipeline.cache``, DEBUG level).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .cache.base import CacheStore, CacheWarning, validate_key
from .errors import CacheError
from .types import StageResult

__all__ = ["DagCache", "as_dag_cache"]

_log = logging.getLogger("phys_pipeline.cache")


class DagCache:
    """Counts and guards cache traffic for DAG runs; thread-safe if its store is (all the
    stores in ``phys_pipeline.cache`` are). Keys are hex digests (see ``validate_key``)."""

    def __init__(self, backend: CacheStore | DagCache, *, strict: bool = False) -> None:
        if isinstance(backend, DagCache):
            backend = backend.backend
        _check_store(backend)
        self.backend: CacheStore = backend
        self.strict = strict
        self.hits = self.misses = self.puts = self.errors = 0
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    @contextmanager
    def _guard(self, what: str, key: str = "(all)") -> Iterator[None]:
        """Turn a store failure into a warning (the caller's default stands) or, if strict,
        a CacheError."""
        try:
            yield
        except Exception as exc:  # a cache must not fail a run, whatever broke
            self._count("errors")
            if self.strict and isinstance(exc, CacheError):
                raise
            message = (
                f"cache {what} for key {key} failed in {self.backend!r}: "
                f"{type(exc).__name__}: {exc}"
            )
            if self.strict:
                raise CacheError(message) from exc
            warnings.warn(message, CacheWarning, stacklevel=4)

    def get(self, key: str) -> StageResult | None:
        """The cached result for ``key``, or None (also when the store fails)."""
        key = validate_key(key)
        result = None
        with self._guard("read", key):
            result = self.backend.get(key)
        self._count("hits" if result is not None else "misses")
        _log.debug("%s %s", "hit" if result is not None else "miss", key)
        return result

    def put(self, key: str, result: StageResult) -> None:
        key = validate_key(key)
        with self._guard("write", key):
            self.backend.put(key, result)
            self._count("puts")
            _log.debug("store %s", key)

    def contains(self, key: str) -> bool:
        """A cheap hint: ``get`` may still miss (e.g. a corrupt or expired entry)."""
        key = validate_key(key)
        found = False
        with self._guard("lookup", key):
            found = bool(self.backend.contains(key))
        return found

    def delete(self, key: str) -> None:
        key = validate_key(key)
        with self._guard("delete", key):
            self.backend.delete(key)
            _log.debug("evict %s", key)

    def clear(self) -> None:
        """Empty the store (the counters keep counting; see ``reset_stats``)."""
        with self._guard("clear"):
            self.backend.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self.hits = self.misses = self.puts = self.errors = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "hits": self.hits,
                "misses": self.misses,
                "puts": self.puts,
                "errors": self.errors,
                "hit_rate": self.hits / lookups if lookups else 0.0,
                "backend": repr(self.backend),
            }

    def __repr__(self) -> str:
        return f"DagCache({self.backend!r}, hits={self.hits}, misses={self.misses})"


def _check_store(obj: object) -> None:
    missing = [
        m for m in ("get", "put", "contains", "clear") if not callable(getattr(obj, m, None))
    ]
    if missing:
        raise TypeError(
            f"{type(obj).__qualname__} is not a cache store: it lacks {', '.join(missing)}; "
            "pass a DiskCache, MemoryStore, RedisStore, TieredStore, CacheConfig or DagCache"
        )


def as_dag_cache(obj: object) -> DagCache | None:
    """What the executor's ``cache=`` argument means: None (no cache), a DagCache (used as
    is), a CacheConfig (built), or any store (wrapped, strict if the store is)."""
    if obj is None or isinstance(obj, DagCache):
        return obj
    from .cache.config import CacheConfig, build_cache_backend

    if isinstance(obj, CacheConfig):
        return DagCache(build_cache_backend(obj), strict=obj.strict)
    _check_store(obj)
    # a store built with strict=True keeps its promise: its CacheErrors reach the caller
    return DagCache(obj, strict=bool(getattr(obj, "strict", False)))  # type: ignore[arg-type]
