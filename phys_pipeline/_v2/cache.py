"""2.0.0's cache names. ``SharedDiskCache`` is our DiskStore, which processes already share
safely (entries are written atomically and signed, no lock files needed). The entry codec
functions keep data as data: JSON metadata and ``.npz`` arrays, never a pickle."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..cache.base import CacheStore
from ..cache.disk import DiskStore
from ..errors import CacheError

__all__ = [
    "CacheBackend",
    "SharedDiskCache",
    "deserialize_cache_entry",
    "serialize_cache_entry",
]

CacheBackend = CacheStore  # what a cache backend offers, for type hints


class SharedDiskCache(DiskStore):
    """A disk cache under ``root`` for several processes (jobs of one user on a cluster, say).
    ``lock_suffix`` is accepted for 2.0.0 code and unused: no entry needs a lock."""

    def __init__(self, root: str | os.PathLike[str], *, lock_suffix: str = ".lock") -> None:
        super().__init__(root)

    @property
    def name(self) -> str:
        return "shared-disk"


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


DEPRECATED = {
    "CacheBackend": "use phys_pipeline.cache.CacheStore",
    "SharedDiskCache": "use phys_pipeline.cache.DiskStore (processes share it safely), or "
    "CacheConfig(backend='shared-disk') for a cache several users share",
    "serialize_cache_entry": "stores encode entries themselves (phys_pipeline.cache.DiskStore)",
    "deserialize_cache_entry": "stores decode entries themselves (phys_pipeline.cache.DiskStore)",
}
