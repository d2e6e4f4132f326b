"""2.0.0's cache names. ``DiskCache`` (the user guide's name too) is our DiskStore that also
keeps 2.0.0's entries, ``{"meta": ..., "arrays": ...}`` under any text key (``MetaArraysEntries``,
which ``cache_redis.RedisCache`` shares, and which ``build_cache_backend``'s disk and Redis
stores have, so 2.0.0 code can put into what it builds); ``SharedDiskCache``
is the same for a directory several users share, which processes share safely already (entries
are written atomically and signed, no lock files needed). The entry codec functions keep data
as data: JSON metadata and ``.npz`` arrays, never a pickle."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._deprecation import warn_once
from ..cache.base import CacheStore, validate_key
from ..cache.disk import DiskStore
from ..cache.signing import shared_signer
from ..errors import CacheConfigError, CacheError
from ..types import SimpleState, StageResult

__all__ = [
    "CacheBackend",
    "DiskCache",
    "SharedDiskCache",
    "deserialize_cache_entry",
    "serialize_cache_entry",
]

CacheBackend = CacheStore  # what a cache backend offers, for type hints

_ENTRY = {"format": "phys-pipeline 2.0.0 meta+arrays"}  # the provenance of such an entry


def _entry_key(key: str) -> str:
    """Where the entry put under 2.0.0 key ``key`` lives: under ``key`` itself when it is a key
    as ours are written (a hex digest in lowercase), else under a digest of it (2.0.0's keys
    are any text: 'CAFE...' and 'cafe...' are two keys, which our keys' lowercasing would
    make one)."""
    with contextlib.suppress(ValueError):
        if validate_key(key) == key:
            return key
    tagged = f"phys-pipeline 2.0.0 cache key\0{key}".encode()
    return hashlib.blake2b(tagged, digest_size=16).hexdigest()


class MetaArraysEntries:
    """What 2.0.0 code asks of a cache, on one of our stores (mixed in before it):
    ``put(key, meta, arrays)`` keeps ``{"meta": meta, "arrays": arrays}`` under the text ``key``
    (replacing what was there, as 2.0.0 did), ``get(key)`` gives it back with arrays of its own
    to write to, ``exists(key)`` says whether it is there. ``put(key, result)`` and a result's
    ``get`` are the store's own. Shared by every 2.0.0 cache class, so they agree."""

    def put(  # type: ignore[override]
        self,
        key: str,
        result: StageResult | Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
        ttl_s: int | None = None,
    ) -> None:
        """``put(key, result)``, or 2.0.0's ``put(key, meta, arrays)`` (``meta=`` by the name
        2.0.0 gave it); ``ttl_s`` is this entry's time to live where the store has one (see
        ``_expire``)."""
        if ttl_s is not None and not ttl_s > 0:
            raise CacheConfigError("ttl_s", ttl_s, "must be a positive number of seconds")
        if meta is not None and result is None and arrays is not None:
            result = meta
        elif meta is not None or result is None:
            raise TypeError("put() takes a result, or 2.0.0's meta and arrays")
        stored = _entry_key(key)
        if arrays is None:
            validate_key(key)  # our form takes our keys only: text is a ValueError
            super().put(stored, result)  # type: ignore[misc]
        else:
            warn_once(
                f"{type(self).__name__}.put(key, meta, arrays)",
                "put(key, StageResult(SimpleState(arrays, meta))) under a hex-digest key",
            )
            entry = StageResult(SimpleState(dict(arrays), dict(result)), provenance=dict(_ENTRY))
            self.delete(stored)  # type: ignore[attr-defined]
            super().put(stored, entry)  # type: ignore[misc]
        if ttl_s is not None:
            self._expire(stored, ttl_s)

    def _expire(self, key: str, ttl_s: int) -> None:
        """Give the entry under ``key`` ``ttl_s`` seconds to live: a store without expiry (a
        disk entry stays until pruned) accepts ``ttl_s`` as 2.0.0 accepted it, and keeps it."""

    def get(self, key: str) -> Any:
        """The result under ``key``, or the ``{"meta", "arrays"}`` 2.0.0's ``put`` kept there;
        None if there is neither."""
        found = super().get(_entry_key(key))  # type: ignore[misc]
        if found is None or found.provenance != _ENTRY:
            return found
        arrays = {name: np.array(array) for name, array in found.state.payload.items()}
        return {"meta": found.state.meta, "arrays": arrays}

    def exists(self, key: str) -> bool:
        warn_once(f"{type(self).__name__}.exists", "use contains")
        return bool(self.contains(_entry_key(key)))  # type: ignore[attr-defined]


class DiskCache(MetaArraysEntries, DiskStore):
    """Our DiskStore, taking 2.0.0's entries besides (see ``MetaArraysEntries``)."""


class SharedDiskCache(DiskCache):
    """A disk cache under ``root`` that several users share, entries signed with
    ``PHYS_PIPELINE_CACHE_KEY`` (without it, with the user's own key and a warning: see
    ``shared_signer``). ``lock_suffix`` is accepted for 2.0.0 code and unused: no entry needs a
    lock."""

    def __init__(self, root: str | os.PathLike[str], *, lock_suffix: str = ".lock") -> None:
        super().__init__(root, signer=shared_signer(Path(root)), shared=True)


def serialize_cache_entry(
    meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> tuple[bytes, bytes]:
    """``meta`` as JSON and ``arrays`` as one ``.npz``. Metadata JSON cannot hold, or an array
    of Python objects (only a pickle could hold it), is a CacheError naming it."""
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise CacheError(f"cache entry array {name!r} holds Python objects; store numbers")

    def refuse(value: Any) -> Any:
        raise CacheError(f"cache entry meta: {type(value).__name__} {value!r:.80} is not JSON")

    meta_bytes = json.dumps(dict(meta), sort_keys=True, default=refuse).encode()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return meta_bytes, buffer.getvalue()


def deserialize_cache_entry(meta_payload: bytes, arrays_payload: bytes) -> dict[str, Any]:
    """``{"meta": ..., "arrays": {...}}`` back from ``serialize_cache_entry``'s bytes; arrays
    that would need unpickling are a CacheError, never loaded."""
    try:
        meta = json.loads(meta_payload)
        with np.load(io.BytesIO(arrays_payload), allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (ValueError, TypeError, OSError, zipfile.BadZipFile) as exc:
        raise CacheError(f"cache entry cannot be loaded as data: {exc}") from exc
    return {"meta": meta, "arrays": arrays}


DEPRECATED = {  # DiskCache is ours too: the user guide's name
    "CacheBackend": "use phys_pipeline.cache.CacheStore",
    "SharedDiskCache": "use phys_pipeline.cache.DiskStore (processes share it safely), or "
    "CacheConfig(backend='shared-disk') for a cache several users share",
    "serialize_cache_entry": "stores encode entries themselves (phys_pipeline.cache.DiskStore)",
    "deserialize_cache_entry": "stores decode entries themselves (phys_pipeline.cache.DiskStore)",
}
