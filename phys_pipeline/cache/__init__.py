"""Cache stores behind one small protocol, with the encoding kept apart from the location.

- :class:`CacheStore` — the protocol: ``get / put / contains / delete / clear``.
- :class:`MemoryStore` — in-process LRU bounded in bytes; keeps results as Python objects.
- :class:`DiskCache` — a directory of JSON + ``.npy`` entries, shareable between processes.
- :class:`RedisStore` — one signed value per entry; needs ``pip install phys-pipeline[redis]``.
- :class:`TieredStore` — reads fast-to-slow, backfilling faster tiers.
- :class:`CacheConfig` and :func:`build_cache_backend` — build one of the above from settings.

Every entry is HMAC-signed and used only once it authenticates, so pickles are only ever loaded
from authenticated entries (see ``signing``); anything a store cannot read or authenticate is a
miss plus one :class:`CacheWarning`.
"""

from __future__ import annotations

from .base import CacheStore, CacheWarning, validate_key
from .config import CacheConfig, build_cache_backend
from .disk import DiskCache
from .memory import MemoryStore
from .redis import RedisStore
from .signing import KEY_ENV_VAR, EntrySigner
from .tiered import TieredStore

__all__ = [
    "KEY_ENV_VAR",
    "CacheConfig",
    "CacheStore",
    "CacheWarning",
    "DiskCache",
    "EntrySigner",
    "MemoryStore",
    "RedisStore",
    "TieredStore",
    "build_cache_backend",
    "validate_key",
]
