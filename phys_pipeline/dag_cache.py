"""DagCache: the one owner of a DAG's cached results and of what it remembers between runs.

Every read and write of a store goes through it (the executor's hits and puts, the plan's
staleness check, early cutoff, eviction, ``LiveSession.rerun``), and so does cross-run memory:
the plan of the last run, which lets staleness name what changed, and the digests of the
outputs it has seen, which early cutoff compares. A store problem never fails a run: a store
that raises is reported with a CacheWarning and treated as a miss (or a dropped put), unless
``strict=True``, where it raises CacheError. Hits, misses, stores and evictions are logged
(``logging``, logger ``phys_pipeline.cache``, DEBUG level).

``open_cache`` is the one factory for what ``cache=`` means anywhere in the library.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ._deprecation import deprecated_function
from .cache.base import CacheStore, CacheWarning, validate_key
from .cutoff import EarlyCutoff
from .dag import NodePlan, Plan, Staleness
from .errors import CacheError
from .types import StageResult, State

__all__ = ["DagCache", "as_dag_cache", "open_cache"]

_log = logging.getLogger("phys_pipeline.cache")

_MAX_REMEMBERED = 4096  # output digests kept between runs (16 bytes each, plus the key)


class DagCache:
    """The cache of a DAG executor or session: a store (or none) plus what the last run
    left behind. Thread-safe if its store is (all the stores in ``phys_pipeline.cache`` are).
    Keys are hex digests (see ``validate_key``). ``backend=None``: nothing is stored, but the
    last plan is still remembered, so reasons name what changed."""

    def __init__(self, backend: CacheStore | DagCache | None, *, strict: bool = False) -> None:
        if isinstance(backend, DagCache):
            backend = backend.backend
        if backend is not None:
            _check_store(backend)
        self.backend: CacheStore | None = backend
        self.strict = strict
        self.hits = self.misses = self.puts = self.errors = 0
        self._lock = threading.Lock()
        self._previous: Plan | None = None
        self._digests: dict[str, bytes] = {}  # cache key -> digest of the output filed there

    # --- store traffic ------------------------------------------------------------------------

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
        if self.backend is None:
            return None
        result = None
        with self._guard("read", key):
            result = self.backend.get(key)
        self._count("hits" if result is not None else "misses")
        _log.debug("%s %s", "hit" if result is not None else "miss", key)
        return result

    def put(self, key: str, result: StageResult) -> None:
        key = validate_key(key)
        if self.backend is None:
            return
        with self._guard("write", key):
            self.backend.put(key, result)
            self._count("puts")
            _log.debug("store %s", key)

    def contains(self, key: str) -> bool:
        """A cheap hint: ``get`` may still miss (e.g. a corrupt or expired entry)."""
        key = validate_key(key)
        found = False
        if self.backend is not None:
            with self._guard("lookup", key):
                found = bool(self.backend.contains(key))
        return found

    def delete(self, key: str) -> None:
        key = validate_key(key)
        self._digests.pop(key, None)
        if self.backend is None:
            return
        with self._guard("delete", key):
            self.backend.delete(key)
            _log.debug("evict %s", key)

    def clear(self) -> None:
        """Empty the store (the counters keep counting; see ``reset_stats``)."""
        self._digests.clear()
        if self.backend is not None:
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

    # --- what runs ask of it ------------------------------------------------------------------

    @property
    def previous(self) -> Plan | None:
        """The plan of the last run through this cache: what reasons are relative to."""
        return self._previous

    def stale(self, plan: Plan) -> dict[str, Staleness]:
        """The nodes of ``plan`` a run would compute, with reasons relative to the last run."""
        return plan.stale(self if self.backend is not None else None, self._previous)

    def file(self, node: NodePlan, result: StageResult) -> None:
        """Store a result a node computed, unless its key covers too little to be trusted
        (``node.uncacheable``): such a result must never be served."""
        if not node.uncacheable:
            self.put(node.key, result)

    def early_cutoff(self, plan: Plan, reasons: Mapping[str, Staleness]) -> EarlyCutoff | None:
        """What lets the nodes below a rerun node whose output did not change load instead of
        running (None: nothing to compare with, or nowhere to load from)."""
        if self.backend is None or self._previous is None:
            return None
        return EarlyCutoff(plan, self._previous, reasons, self)

    def output_digest(self, key: str, state: State | None = None) -> bytes | None:
        """The digest of the output filed under ``key``: remembered, or of ``state`` when
        given, or read back from the store (None: no longer cached)."""
        known = self._digests.get(key)
        if known is None:
            if state is None:
                cached = self.get(key)
                if cached is None:
                    return None
                state = cached.state
            known = self._digests[key] = bytes(state.hashable_repr())
        return known

    def finished(self, plan: Plan) -> None:
        """A run of ``plan`` is over: it becomes what the next run is compared with."""
        self._previous = plan
        if len(self._digests) > _MAX_REMEMBERED:
            self._digests.clear()

    def forget(self, nodes: Iterable[NodePlan]) -> None:
        """Drop the entries of ``nodes`` (a stage corrupted them, or the user asked)."""
        for node in nodes:
            self.delete(node.key)

    def __repr__(self) -> str:
        return f"DagCache({self.backend!r}, hits={self.hits}, misses={self.misses})"


def _check_store(obj: object) -> None:
    missing = [
        m for m in ("get", "put", "contains", "clear") if not callable(getattr(obj, m, None))
    ]
    if missing:
        raise TypeError(
            f"{type(obj).__qualname__} is not a cache store: it lacks {', '.join(missing)}; "
            "pass a DiskStore, MemoryStore, RedisStore, TieredStore, CacheConfig or DagCache"
        )


def open_cache(cache: Any = None, *, memory_bytes: int | None = None) -> DagCache:
    """What ``cache=`` means, everywhere: None (no store), a DagCache (used as is), a
    CacheConfig (built) or any store (wrapped; a store built ``strict=True`` keeps its
    CacheErrors). ``memory_bytes`` puts an in-process memory tier of that size in front, so
    reruns load in microseconds (what ``LiveSession`` does); strictness is kept."""
    from .cache.config import CacheConfig, build_cache_backend

    if isinstance(cache, DagCache) and memory_bytes is None:
        return cache
    strict = False
    store: Any = None
    if isinstance(cache, DagCache):
        store, strict = cache.backend, cache.strict
    elif isinstance(cache, CacheConfig):
        store, strict = build_cache_backend(cache), cache.strict
    elif cache is not None:
        _check_store(cache)
        store, strict = cache, bool(getattr(cache, "strict", False))
    if memory_bytes is not None:
        from .cache import MemoryStore, TieredStore

        memory = MemoryStore(max_bytes=memory_bytes)
        store = memory if store is None else TieredStore([memory, store])
    return DagCache(store, strict=strict)


def _as_dag_cache(obj: object) -> DagCache | None:
    return None if obj is None else open_cache(obj)


as_dag_cache = deprecated_function(
    "phys_pipeline.dag_cache.as_dag_cache",
    _as_dag_cache,
    "use open_cache(cache), which gives a DagCache without a store for None",
)
