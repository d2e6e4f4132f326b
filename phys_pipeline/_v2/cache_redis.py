"""2.0.0's ``phys_pipeline.cache_redis``: ``RedisCache`` is our RedisStore taking 2.0.0's
entries besides, through the same ``MetaArraysEntries`` as ``DiskCache``, plus the names that
module re-exported. The ``redis`` package loads only when a cache is made."""

from __future__ import annotations

from typing import Any

from ..cache.base import validate_key
from ..cache.redis import RedisStore
from .cache import DEPRECATED as CACHE_DEPRECATED
from .cache import (
    CacheBackend,
    MetaArraysEntries,
    deserialize_cache_entry,
    serialize_cache_entry,
)

__all__ = ["CacheBackend", "RedisCache", "deserialize_cache_entry", "serialize_cache_entry"]


class RedisCache(MetaArraysEntries, RedisStore):
    """Our RedisStore under 2.0.0's name and signature (``options``: RedisStore's own, such as
    ``timeout_s`` or ``strict``), taking 2.0.0's entries besides (see ``MetaArraysEntries``);
    ``put(..., ttl_s=...)`` gives that entry its own time to live, else the cache's ``ttl_s``
    applies. Entries 2.0.0 itself wrote are in another format: misses, computed again."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "phys-pipeline",
        ttl_s: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, prefix, ttl_s, **options)

    def _expire(self, key: str, ttl_s: int) -> None:
        name = self._name(validate_key(key))
        self._call("EXPIRE", lambda client: client.expire(name, ttl_s), None)


DEPRECATED = {
    **{name: CACHE_DEPRECATED[name] for name in __all__ if name in CACHE_DEPRECATED},
    "RedisCache": "use build_cache_backend(CacheConfig(backend='redis', redis_url=...)), "
    "or phys_pipeline.cache.RedisStore",
}
