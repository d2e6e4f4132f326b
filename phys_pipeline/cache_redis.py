"""phys-pipeline 2.0.0's Redis cache module, for code written for it: ``RedisCache`` and the
entry helpers, served from ``phys_pipeline._v2.cache_redis`` (each warns once, naming ours).
Our own Redis store is ``phys_pipeline.cache.RedisStore`` (``CacheConfig(backend="redis")``)."""

from ._v2 import served_from

__all__: list[str] = []  # nothing of ours: only 2.0.0's names, served on request

__getattr__ = served_from(__name__, "cache_redis")
