"""CacheConfig: the user-facing description of a cache, and the factory that builds it."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .._deprecation import warn_once
from ..errors import CacheConfigError
from .base import CacheStore
from .memory import MemoryStore
from .signing import shared_signer
from .tiered import TieredStore

__all__ = ["CacheConfig", "build_cache_backend"]

_REDIS_SCHEMES = ("redis", "rediss", "unix")
Backend = Literal["disk", "shared-disk", "memory", "redis"]
_BACKENDS: tuple[str, ...] = get_args(Backend)


class CacheConfig(BaseModel):
    """Which store to use and how. ``disk`` is the default; ``shared-disk`` is the same format
    for a directory several users or machines share (with ``PHYS_PIPELINE_CACHE_KEY`` set alike
    for all; without it, entries are signed with the user's own key and a warning says so);
    ``redis`` needs ``redis_url``, connects lazily, and ``redis_max_deadline_s`` caps what moving
    one entry (a stalled server's worst cost to a run) may take; ``memory_tier`` puts an
    in-process LRU in front of the backend. An invalid value raises CacheConfigError naming the
    field. ``shared_lock_suffix`` (phys-pipeline 2.0.0's) is accepted with a warning and has no
    effect: no shared-disk entry needs a lock file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Backend = "disk"
    disk_root: Path = Path(".cache/phys-pipeline")
    disk_max_bytes: int | None = Field(None, gt=0)  # evict least recently used entries above
    redis_url: str | None = Field(None, validate_default=True)
    redis_prefix: str = Field("phys-pipeline", min_length=1, pattern=r"^\S+$")
    redis_ttl_s: int | None = Field(None, gt=0)
    memory_max_bytes: int = Field(2 * 1024**3, gt=0)
    timeout_s: float = Field(0.5, gt=0, allow_inf_nan=False)
    redis_max_deadline_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    strict: bool = False
    memory_tier: bool = False
    # 2.0.0's, read back as given but unused (see __init__): not shown, not dumped
    shared_lock_suffix: str = Field(".lock", repr=False, exclude=True)

    def __init__(self, **data: Any) -> None:
        if "shared_lock_suffix" in data:
            warn_once(
                "CacheConfig(shared_lock_suffix=...)",
                "it has no effect: a shared-disk entry is written in a scratch directory and "
                "renamed into place whole, so readers never see half of one and no lock file "
                "is made; drop the argument",
            )
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "?"
            reason = error["msg"].removeprefix("Value error, ")
            raise CacheConfigError(field, error.get("input"), reason) from None

    @field_validator("backend", mode="before")
    @classmethod
    def _known_backend(cls, backend: Any) -> Any:
        if not isinstance(backend, str) or backend not in _BACKENDS:
            choices = ", ".join(repr(name) for name in _BACKENDS)
            raise ValueError(f"Unsupported cache backend; use one of {choices}")
        return backend

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            if info.data.get("backend") == "redis":
                raise ValueError(
                    "redis_url must be set when backend='redis', e.g. 'redis://localhost:6379/0'"
                )
            return url
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in _REDIS_SCHEMES:
            raise ValueError(f"the scheme must be one of {', '.join(_REDIS_SCHEMES)}")
        return url


def build_cache_backend(config: CacheConfig | None = None) -> CacheStore:
    """The store ``config`` describes (the default config: a DiskStore under ``.cache/``).
    Builds only: nothing is created on disk and no connection is opened until first use.
    The disk and Redis stores (the backends phys-pipeline 2.0.0 had) are ``DiskCache`` and
    ``RedisCache``: our DiskStore and RedisStore, which also take 2.0.0 code's
    ``put(key, meta, arrays)``, ``get`` and ``exists`` on what this returns."""
    from .._v2.cache import DiskCache

    config = config if config is not None else CacheConfig()
    store: CacheStore
    if config.backend == "disk":
        store = DiskCache(config.disk_root, strict=config.strict, max_bytes=config.disk_max_bytes)
    elif config.backend == "shared-disk":
        store = DiskCache(
            config.disk_root,
            signer=shared_signer(config.disk_root),
            strict=config.strict,
            shared=True,
            max_bytes=config.disk_max_bytes,
        )
    elif config.backend == "memory":
        return MemoryStore(config.memory_max_bytes)
    else:
        from .._v2.cache_redis import RedisCache

        assert config.redis_url is not None  # the config refuses redis without one
        store = RedisCache(
            config.redis_url,
            prefix=config.redis_prefix,
            ttl_s=config.redis_ttl_s,
            timeout_s=config.timeout_s,
            max_deadline_s=config.redis_max_deadline_s,
            strict=config.strict,
        )
    if config.memory_tier:
        return TieredStore([MemoryStore(config.memory_max_bytes), store])
    return store
