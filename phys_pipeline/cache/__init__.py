"""Cache stores behind one small protocol, with the encoding kept apart from the location.

- :class:`CacheStore` — the protocol: ``get / put / contains / delete / clear``.
- :class:`MemoryStore` — in-process LRU bounded in bytes; keeps results as Python objects.
- :class:`DiskStore` — a directory of JSON + ``.npy`` entries, shareable between processes
  (``DiskCache``, the user guide's name for it, is a DiskStore that also keeps phys-pipeline
  2.0.0's entries, served from ``phys_pipeline._v2.cache``).
- :class:`RedisStore` — one signed value per entry; needs ``pip install phys-pipeline[redis]``.
- :class:`TieredStore` — reads fast-to-slow, backfilling faster tiers.
- :class:`CacheConfig` and :func:`build_cache_backend` — build one of the above from settings.

Every entry is HMAC-signed and used only once it authenticates, so pickles are only ever loaded
from authenticated entries (see ``signing``); anything a store cannot read or authenticate is a
miss plus one :class:`CacheWarning`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .._v2 import served_from

# each store loads on first use, so importing one (or the package) stays light
_LAZY = {
    "CacheStore": "base",
    "CacheWarning": "base",
    "validate_key": "base",
    "CacheConfig": "config",
    "build_cache_backend": "config",
    "DiskStore": "disk",
    "MemoryStore": "memory",
    "RedisStore": "redis",
    "KEY_ENV_VAR": "signing",
    "EntrySigner": "signing",
    "TieredStore": "tiered",
}

__all__ = sorted([*_LAZY, "DiskCache"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    return _v2_names(name)  # 2.0.0's names, or AttributeError


_v2_names = served_from(__name__, "cache")
