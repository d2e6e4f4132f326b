"""RedisStore: one Redis value per entry (a signed frame, see ``codec.to_frame``), ``SET`` with
an optional TTL. A cache must never make a run slower or fail it: every call has socket
timeouts, and when Redis is down calls become misses/dropped puts, warned about once per outage,
with no new attempts for ``retry_after_s``. ``strict=True`` raises CacheError instead.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar, TypeVar

from ..errors import CacheConfigError, CacheError
from ..types import StageResult
from .base import CacheWarning, validate_key
from .codec import EntryRejected, from_frame, to_frame
from .signing import EntrySigner

__all__ = ["RedisStore"]

T = TypeVar("T")

_MAX_VALUE_BYTES = 512 * 1024**2  # Redis' limit for one string value
_BULK_BYTES = 1024**2  # values above this may take longer than timeout_s to send
_BULK_TIMEOUT_S = 30.0
_LAYOUT = "v1"


def _import_redis() -> ModuleType:
    try:
        import redis
    except ImportError as exc:
        raise ImportError(
            "the Redis cache needs the 'redis' package: pip install phys-pipeline[redis]"
        ) from exc
    return redis


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (URLs end up in warnings and errors)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class RedisStore:
    """Entries under ``<prefix>:v1:<key>``; safe to share between threads and processes.

    Nothing connects at construction, so building one against a server that is not (yet)
    running is fine; the first call finds out. Connecting and answering get ``timeout_s``;
    sending a value over 1 MiB may take up to 30 s, so big entries survive a slow link.
    """

    reachable_from_other_processes: ClassVar[bool] = True  # by its URL

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str = "phys-pipeline",
        ttl_s: int | None = None,
        *,
        timeout_s: float = 0.5,
        strict: bool = False,
        retry_after_s: float = 5.0,
        signer: EntrySigner | None = None,
    ) -> None:
        self._redis = _import_redis()
        if ttl_s is not None and ttl_s <= 0:
            raise CacheConfigError("redis_ttl_s", ttl_s, "must be a positive number of seconds")
        if not timeout_s > 0:
            raise CacheConfigError("timeout_s", timeout_s, "must be > 0 seconds")
        self.url, self.prefix, self.ttl_s = url, prefix, ttl_s
        self.timeout_s, self.strict, self.retry_after_s = timeout_s, strict, retry_after_s
        self.signer = signer if signer is not None else EntrySigner()
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._outage_warned = False
        self._clients: dict[float, Any] = {}
        self._client(timeout_s)  # parses the URL now (a bad one fails here); does not connect

    def _client(self, timeout_s: float) -> Any:
        client = self._clients.get(timeout_s)
        if client is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:
                client = self._redis.Redis.from_url(
                    self.url,
                    socket_timeout=timeout_s,
                    socket_connect_timeout=self.timeout_s,
                    retry=Retry(NoBackoff(), 0),  # one attempt: the store does its own backoff
                    health_check_interval=0,
                )
            except ValueError as exc:
                raise CacheConfigError("redis_url", redact_url(self.url), str(exc)) from None
            with self._lock:
                client = self._clients.setdefault(timeout_s, client)
        return client

    def _name(self, key: str) -> str:
        return f"{self.prefix}:{_LAYOUT}:{key}"

    # --- outage handling --------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[Any], T], default: T, timeout_s: float = 0.0) -> T:
        """Run one Redis command; on failure warn once per outage and back off (or raise)."""
        if not self.strict and time.monotonic() < self._down_until:
            return default
        try:
            value = fn(self._client(timeout_s or self.timeout_s))
        except (self._redis.RedisError, OSError) as exc:
            self._outage(what, exc)
            return default
        if self._outage_warned:
            with self._lock:
                self._outage_warned = False  # recovered: a later outage warns again
        return value

    def _outage(self, what: str, exc: BaseException) -> None:
        where = redact_url(self.url)
        if self.strict:
            raise CacheError(
                f"Redis cache at {where}: {what} failed ({type(exc).__name__}: {exc})"
            ) from exc
        with self._lock:
            self._down_until = time.monotonic() + self.retry_after_s
            first = not self._outage_warned
            self._outage_warned = True
        if first:
            warnings.warn(
                f"Redis cache at {where} is unavailable ({type(exc).__name__}: {exc}); "
                f"running without it, next attempt in {self.retry_after_s:g} s",
                CacheWarning,
                stacklevel=4,
            )

    def _drop(self, message: str) -> None:
        if self.strict:
            raise CacheError(f"Redis cache at {redact_url(self.url)}: {message}")
        warnings.warn(
            f"Redis cache at {redact_url(self.url)}: {message}", CacheWarning, stacklevel=3
        )

    # --- the store protocol -----------------------------------------------------------------

    def get(self, key: str) -> StageResult | None:
        key = validate_key(key)
        name = self._name(key)
        frame = self._call("GET", lambda client: client.get(name), None)
        if frame is None:
            return None
        try:
            return from_frame(key, frame, self.signer)
        except CacheError as exc:  # no usable key: the entry may be fine, so it stays
            self._drop(f"cannot check entry {key}: {exc}")
            return None
        except EntryRejected as exc:
            warnings.warn(
                f"Redis cache at {redact_url(self.url)}: ignoring entry {key} ({exc}); "
                "it will be recomputed",
                CacheWarning,
                stacklevel=2,
            )
            self._call("DEL", lambda client: client.delete(name), None)
            return None

    def put(self, key: str, result: StageResult) -> None:
        key = validate_key(key)
        if not self.strict and time.monotonic() < self._down_until:
            return  # skip the encoding work too
        try:
            frame = to_frame(key, result, self.signer)
        except CacheError as exc:
            self._drop(f"cannot write entry {key}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - whatever pickle raises, the result just isn't cached
            self._drop(
                f"cannot encode a result whose state is {type(result.state).__qualname__} "
                f"({type(exc).__name__}: {exc})"
            )
            return
        if len(frame) > _MAX_VALUE_BYTES:
            self._drop(f"entry {key} is {len(frame) / 2**20:.0f} MiB, over Redis' 512 MiB limit")
            return
        name = self._name(key)
        timeout = max(self.timeout_s, _BULK_TIMEOUT_S) if len(frame) > _BULK_BYTES else 0.0
        self._call("SET", lambda client: client.set(name, frame, ex=self.ttl_s), None, timeout)

    def contains(self, key: str) -> bool:
        name = self._name(validate_key(key))
        return bool(self._call("EXISTS", lambda client: client.exists(name), 0))

    def delete(self, key: str) -> None:
        name = self._name(validate_key(key))
        self._call("DEL", lambda client: client.delete(name), None)

    def _names(self, client: Any) -> list[bytes]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return list(client.scan_iter(match=f"{pattern}:{_LAYOUT}:*", count=1000))

    def clear(self) -> None:
        """Delete this store's entries (only keys under its prefix)."""

        def clear_all(client: Any) -> None:
            names = self._names(client)
            for start in range(0, len(names), 500):
                client.delete(*names[start : start + 500])

        self._call("clear", clear_all, None)

    def __len__(self) -> int:
        return len(self._call("SCAN", self._names, []))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["_clients"], state["_redis"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._redis = _import_redis()
        self._lock = threading.Lock()
        self._clients = {}

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, prefix={self.prefix!r}, ttl_s={self.ttl_s})"
