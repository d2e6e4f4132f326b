"""DagCache: the one owner of a DAG's cached results and of what it remembers between runs.

Every read and write of a store goes through it (the executor's hits and puts, the plan's
staleness check, early cutoff, eviction, ``LiveSession.rerun``), and so does cross-run memory:
the plan of the last run, which lets staleness name what changed and early cutoff compare. A
store problem never fails a run: a store that raises is reported with a CacheWarning and
treated as a miss (or a dropped put), unless ``strict=True``, where it raises CacheError.
Hits, misses, stores and evictions are logged (``logging``, logger ``phys_pipeline.cache``,
DEBUG level).

``open_cache`` is the one factory for what ``cache=`` means anywhere in the library.

Results need not pass through the driver to be cached: a scheduler whose workers can reach the
store (``DaskScheduler`` with a disk or Redis store) asks for a ``Filing`` per node; the worker
files the result itself (``file_on_worker``) and sends back only a ``FiledResult`` (metrics,
artifacts, provenance and the output's digest), whose state the driver loads from the cache
when something first asks for it.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._cutoff import EarlyCutoff
from ._deprecation import deprecated_function
from .cache.base import CacheStore, CacheWarning, validate_key
from .cache.figures import Figures, figures_entry, figures_from_entry, figures_key
from .dag import NodePlan, Plan, Staleness
from .errors import CacheError
from .types import StageResult

__all__ = [
    "DagCache",
    "FiledResult",
    "Filing",
    "WorkerStore",
    "as_dag_cache",
    "file_on_worker",
    "node_provenance",
    "open_cache",
    "stamp",
]

_log = logging.getLogger("phys_pipeline.cache")


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
        # key -> the input digest of the result filed or read under it here: lets early
        # cutoff rule a reuse out without reading the entry (kept for the last plan's keys)
        self._input_digests: dict[str, str] = {}

    # --- store traffic ------------------------------------------------------------------------

    def _failed(self, what: str, key: str, exc: Exception) -> None:
        """A store failure: a warning (the caller's default stands) or, if strict, a
        CacheError. (Called from ``except``: a context manager costs a microsecond a hit.)"""
        with self._lock:
            self.errors += 1
        if self.strict and isinstance(exc, CacheError):
            raise exc
        message = (
            f"cache {what} for key {key} failed in {self.backend!r}: {type(exc).__name__}: {exc}"
        )
        if self.strict:
            raise CacheError(message) from exc
        warnings.warn(message, CacheWarning, stacklevel=3)

    def get(self, key: str) -> StageResult | None:
        """The cached result for ``key``, or None (also when the store fails)."""
        return self._read(key)[0]

    def _read(self, key: str) -> tuple[StageResult | None, bool]:
        """``get``, and whether the store failed (raised) rather than missed."""
        key = validate_key(key)
        if self.backend is None:
            return None, False
        failed = False
        try:
            result = self.backend.get(key)
        except Exception as exc:  # noqa: BLE001 - a cache must not fail a run, whatever broke
            self._failed("read", key, exc)
            result, failed = None, True
        with self._lock:
            if result is None:
                self.misses += 1
            else:
                self.hits += 1
        if result is not None:
            self._note_input(key, result)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s", "hit" if result is not None else "miss", key)
        return result, failed

    def put(self, key: str, result: StageResult) -> None:
        key = validate_key(key)
        if self.backend is None:
            return
        try:
            self.backend.put(key, result)
        except Exception as exc:  # noqa: BLE001
            self._failed("write", key, exc)
            return
        with self._lock:
            self.puts += 1
        self._note_input(key, result)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("store %s", key)

    def _note_input(self, key: str, result: StageResult) -> None:
        digest = result.provenance.get("input_digest")
        if type(digest) is str:
            self._input_digests[key] = digest

    def input_digest_hint(self, key: str) -> str | None:
        """The ``input_digest`` of the result last filed or read under ``key`` here, if any.
        Only a hint, which can rule an early-cutoff reuse out but never in: the store may hold
        another entry under the key (it keeps the first one put), which only reading it tells."""
        return self._input_digests.get(key)

    def contains(self, key: str) -> bool:
        """A cheap hint: ``get`` may still miss (e.g. a corrupt or expired entry)."""
        key = validate_key(key)
        if self.backend is None:
            return False
        try:
            return bool(self.backend.contains(key))
        except Exception as exc:  # noqa: BLE001
            self._failed("lookup", key, exc)
            return False

    def delete(self, key: str) -> None:
        key = validate_key(key)
        if self.backend is None:
            return
        try:
            self.backend.delete(key)
        except Exception as exc:  # noqa: BLE001
            self._failed("delete", key, exc)
            return
        _log.debug("evict %s", key)

    def clear(self) -> None:
        """Empty the store (the counters keep counting; see ``reset_stats``)."""
        if self.backend is not None:
            try:
                self.backend.clear()
            except Exception as exc:  # noqa: BLE001
                self._failed("clear", "(all)", exc)

    def put_figures(
        self, node_key: str, figures: Mapping[str, tuple[str, bytes]], *, node_id: str = "?"
    ) -> None:
        """Keep the rendered figures of the result under ``node_key`` (name -> (MIME type,
        bytes), PNG or SVG) as data in a signed entry of their own, so a view can show them
        after a restart though lazy artifacts are not cached. They replace other figures of
        ours kept before (a store keeps the first entry put under a key, and the result under
        ``node_key`` may have been computed again since its entry was evicted); an entry that
        does not authenticate is not ours to replace. Views call it when they draw; runs
        never do (not counted as a put). A store failure is a warning, as for ``put``."""
        node_key = validate_key(node_key)
        entry = figures_entry(node_key, figures, node_id)
        if self.backend is None:
            return
        key = figures_key(node_key)
        try:
            kept = self.backend.get(key)
            if kept is not None:
                if figures_from_entry(node_key, kept) == dict(figures):
                    return
                self.backend.delete(key)
            self.backend.put(key, entry)
        except Exception as exc:  # noqa: BLE001
            self._failed("write of figures", key, exc)

    def figures(self, node_key: str) -> Figures | None:
        """The figures kept for ``node_key`` by ``put_figures``, or None: none kept, or an entry
        that does not authenticate or is not figures (a miss, as for ``get``; not counted, and
        nothing is deleted)."""
        node_key = validate_key(node_key)
        if self.backend is None:
            return None
        key = figures_key(node_key)
        try:
            entry = self.backend.get(key)
        except Exception as exc:  # noqa: BLE001
            self._failed("read of figures", key, exc)
            return None
        return None if entry is None else figures_from_entry(node_key, entry)

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

    def look_up(
        self, plan: Plan, order: Sequence[str]
    ) -> tuple[dict[str, Staleness], dict[str, tuple[StageResult, float]]]:
        """What a run of ``order`` (node ids of ``plan``) finds: the nodes of ``plan`` it must
        compute, with reasons (as ``stale``), and the cached results of the others among
        ``order``, loaded, each with the seconds its load took. A node of ``order`` is read
        straight away, not first looked up (one walk of a disk store's directories, one round
        trip to Redis, per hit); only a read that misses is followed by a lookup, which tells
        an entry that is not there from one that cannot be read. A read the store failed
        (warned about already) is not: a store that is down would be asked twice per node."""
        if self.backend is None:
            return self.stale(plan), {}
        wanted, previous = set(order), self._previous
        stale: dict[str, Staleness] = {}
        loaded: dict[str, tuple[StageResult, float]] = {}
        for nid in plan.order:
            node = plan.nodes[nid]
            if not node.uncacheable:
                if nid in wanted:
                    started = time.perf_counter()
                    result, failed = self._read(node.key)
                    if result is not None:
                        loaded[nid] = (result, time.perf_counter() - started)
                        continue
                    if failed:
                        stale[nid] = Staleness(nid, ("cache read failed",))
                        continue
                    if self.contains(node.key):  # there, but corrupt, forged or foreign
                        stale[nid] = Staleness(nid, ("cache entry unreadable",))
                        continue
                elif self.contains(node.key):
                    continue
            stale[nid] = Staleness(nid, plan.explain(nid, previous))
        return stale, loaded

    def file(self, node: NodePlan, result: StageResult) -> None:
        """Store a result a node computed, unless its key covers too little to be trusted
        (``node.uncacheable``): such a result must never be served. A result a worker filed
        already is only counted."""
        if self.backend is None:
            return
        if type(result) is FiledResult:
            with self._lock:
                self.puts += 1
            _log.debug("store %s (by a worker)", node.key)
        elif not node.uncacheable:
            self.put(node.key, result)

    def worker_store(self) -> WorkerStore | None:
        """The part of the store that other processes reach too (disk, Redis; not a memory
        tier), for workers to file results in themselves; None: results come to the driver."""
        tiers = getattr(self.backend, "tiers", [self.backend])
        shared = [t for t in tiers if getattr(t, "reachable_from_other_processes", False)]
        if not shared:
            return None
        from .cache.tiered import TieredStore

        store = shared[0] if len(shared) == 1 else TieredStore(shared)
        return WorkerStore(store, _key_ids(store))

    def filing(self, workers: WorkerStore, node: NodePlan) -> Filing | None:
        """What a worker needs to file ``node``'s result (None: it cannot be cached)."""
        if node.uncacheable:
            return None
        return Filing(workers, node.key, node_provenance(node), self)

    def early_cutoff(self, plan: Plan, reasons: Mapping[str, Staleness]) -> EarlyCutoff | None:
        """What lets the nodes below a rerun node whose output did not change load instead of
        running (None: nothing to compare with, or nowhere to load from)."""
        if self.backend is None or self._previous is None:
            return None
        return EarlyCutoff(plan, self._previous, reasons, self)

    def finished(self, plan: Plan) -> None:
        """A run of ``plan`` is over: it becomes what the next run is compared with."""
        self._previous = plan
        hints = self._input_digests
        if hints:  # (none without a store)
            self._input_digests = {
                node.key: hints[node.key] for node in plan.nodes.values() if node.key in hints
            }

    def forget(self, nodes: Iterable[NodePlan]) -> None:
        """Drop the entries of ``nodes`` (a stage corrupted them, or the user asked) and the
        figures kept beside them: they show the result dropped, not the one filed next (a
        store keeps the first entry put under a key)."""
        for node in nodes:
            self.delete(node.key)
            self.delete(figures_key(node.key))

    def __repr__(self) -> str:
        return f"DagCache({self.backend!r}, hits={self.hits}, misses={self.misses})"


# the format of the records below (2.0.0 code reads it as provenance["version"])
PROVENANCE_VERSION = "v2"


def node_provenance(node: NodePlan) -> dict[str, str]:
    """What a cached result records of the node that computed it: its key's ingredients,
    the policy it saw among them."""
    return {
        "node_id": node.id,
        "stage": node.stage_type,
        "cache_key": node.key,
        "code_version": node.code_version,
        "config_hash": node.config_hash,
        "policy_hash": node.policy_hash,
        "version": PROVENANCE_VERSION,
    }


def stamp(result: StageResult, provenance: dict[str, Any], duration_s: float) -> None:
    """Give a computed result its provenance: what the stage recorded, then ``provenance``
    (the node's: ``node_provenance``, a dict the result may keep), the time it took, and the
    digest of its input (``input_digest``, set by ``run_node``)."""
    provenance["duration_s"] = duration_s
    digest = getattr(result, "input_digest", None)
    if digest is not None:
        provenance["input_digest"] = bytes(digest).hex()
    if result.provenance:  # what the stage recorded comes first, as it always has
        provenance = {**result.provenance, **provenance}
    result.provenance = provenance


def _key_ids(store: Any) -> tuple[str, ...]:
    """The signing keys a store's tiers use, by id (the secrets stay where they are)."""
    tiers = getattr(store, "tiers", [store])
    return tuple(t.signer.key_id() for t in tiers if getattr(t, "signer", None) is not None)


@dataclass(frozen=True, slots=True)
class WorkerStore:
    """The shared part of a run's store, as shipped to workers, with the ids of the keys the
    driver signs with: a worker holding other keys must not file (the driver could not read
    what it wrote)."""

    store: Any
    key_ids: tuple[str, ...]


@dataclass(frozen=True)
class Filing:
    """Where a worker files one node's result, and the provenance the entry records. The
    driver's ``cache`` stays behind (it is not pickled): it is what the ``FiledResult`` that
    comes back loads its state from."""

    workers: WorkerStore
    key: str
    provenance: dict[str, str]
    cache: DagCache | None = field(default=None, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return Filing, (self.workers, self.key, self.provenance)


class FiledResult(StageResult):
    """A result a worker filed in the shared store: its metrics, artifacts and provenance came
    to the driver, its state loads from the cache when first asked for. (Bound to the
    driver's ``DagCache`` by the run engine as it arrives.)"""

    def __init__(
        self,
        key: str,
        digest: bytes,
        metrics: dict[str, float],
        artifacts: dict[str, Any],
        provenance: dict[str, Any],
    ) -> None:
        self.key, self.digest = key, digest
        self.metrics, self.artifacts, self.provenance = metrics, artifacts, provenance
        self._cache: DagCache | None = None
        self._state: Any = None

    def bind(self, cache: DagCache | None) -> None:
        self._cache = cache

    @property  # type: ignore[override]
    def state(self) -> Any:
        """Loaded from the cache on first access, and checked against the digest the worker
        sent. An entry gone by then (pruned, evicted), or holding another result (replaced
        by a co-user), is a CacheError naming the node: never a missing or different state."""
        if self._state is None:
            loaded = self._cache.get(self.key) if self._cache is not None else None
            node = self.provenance.get("node_id", "?")
            if loaded is None:
                raise CacheError(
                    f"node {node!r}: its result was filed in the cache by a worker under key "
                    f"{self.key}, and cannot be read back now (evicted or removed?); run again "
                    "to recompute it"
                )
            if bytes(loaded.state.hashable_repr()) != self.digest:
                raise CacheError(
                    f"node {node!r}: the cache entry under key {self.key} holds another state "
                    "than the one this run computed (replaced since it was filed?); run again "
                    "to recompute it"
                )
            self._state = loaded.state
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        self._state = value

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": None}  # whoever unpickles binds its own

    def __repr__(self) -> str:
        return f"FiledResult(key={self.key!r}, metrics={self.metrics!r})"


def file_on_worker(
    filing: Filing, result: StageResult, seconds: float
) -> tuple[StageResult, float]:
    """Worker side: file ``result`` in the shared store and return a ``FiledResult`` (no
    state) to send to the driver in its place; the full result when it cannot be filed here
    (other keys, a store failure), so that the driver files it and nothing is lost."""
    stamp(result, dict(filing.provenance), seconds)
    store = filing.workers.store
    try:
        if _key_ids(store) != filing.workers.key_ids or store.contains(filing.key):
            # the driver could not read what we sign, or an entry is there already (a
            # co-user's, or one the driver rejected): its content is not known to be ours
            return result, seconds
        store.put(filing.key, result)
        if not store.contains(filing.key):
            return result, seconds
    except Exception:  # noqa: BLE001 - the driver files it instead, and reports any failure
        return result, seconds
    digest = bytes(result.state.hashable_repr())
    filed = FiledResult(filing.key, digest, result.metrics, result.artifacts, result.provenance)
    return filed, seconds


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
