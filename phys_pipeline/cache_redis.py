"""phys-pipeline 2.0.0's Redis cache module, for code written for it: ``RedisCache`` and the
entry helpers, served from ``phys_pipeline._v2.cache_redis``. Our own Redis store is
``phys_pipeline.cache.RedisStore`` (``CacheConfig(backend="redis")``)."""

from ._v2 import served_from

__getattr__ = served_from(__name__, "cache_redis")
