"""RedisStore: one Redis value per entry (a signed frame, see ``codec.to_frame``) with an optional
TTL. A cache must never make a run much slower or fail it: every command has a deadline that
grows with the bytes it moves, up to a low ceiling; when Redis stalls or is down calls become
misses/dropped puts, warned about once per outage, and the store backs off (exponentially) before
trying again. ``strict=True`` raises CacheError instead.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
import uuid
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

_log = logging.getLogger("phys_pipeline.cache")

_MAX_VALUE_BYTES = 512 * 1024**2  # Redis' limit for one string value
_PIECE_BYTES = 1024**2  # the most one command moves; bigger values go in pieces
_MIN_BYTES_PER_S = 50 * 1024**2  # the slowest link served in full: half a gigabit LAN
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
    running is fine; the first call finds out.

    Deadlines: moving ``n`` bytes may take ``deadline_s(n) = timeout_s + n / (50 MiB/s)``,
    capped at ``max_deadline_s`` (5 s), never below ``timeout_s``. 50 MiB/s is half a gigabit
    LAN, so a busy LAN still moves entries whole; in 5 s a gigabit link moves Redis' largest
    value (512 MiB). One command moves at most 1 MiB, so its socket timeout is
    ``deadline_s(1 MiB)`` (0.52 s by default); bigger values go in 1 MiB pieces, written to a
    temporary key renamed into place and read under WATCH (so nobody sees half an entry), with
    the whole value's deadline checked between pieces. A server that stops answering thus costs
    about one command's timeout whatever the entry's size; a link too slow for an entry costs
    its deadline (plus at most one command's timeout).

    Backoff: after a failure no call goes to Redis for ``retry_after_s`` (1 s), doubling after
    each failed retry up to ``max_retry_after_s`` (30 s): meanwhile gets miss and puts are
    dropped at once. After a wait a single call tries again; when it succeeds the store is back.
    """

    reachable_from_other_processes: ClassVar[bool] = True  # by its URL
    name: ClassVar[str] = "redis"  # the CacheConfig.backend this store is

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str = "phys-pipeline",
        ttl_s: int | None = None,
        *,
        timeout_s: float = 0.5,
        max_deadline_s: float = 5.0,
        strict: bool = False,
        retry_after_s: float = 1.0,
        max_retry_after_s: float = 30.0,
        signer: EntrySigner | None = None,
    ) -> None:
        self._redis = _import_redis()
        if ttl_s is not None and ttl_s <= 0:
            raise CacheConfigError("redis_ttl_s", ttl_s, "must be a positive number of seconds")
        for field, value in (
            ("timeout_s", timeout_s),
            ("redis_max_deadline_s", max_deadline_s),
            ("retry_after_s", retry_after_s),
            ("max_retry_after_s", max_retry_after_s),
        ):
            if not 0 < value < float("inf"):
                raise CacheConfigError(field, value, "must be a finite number of seconds > 0")
        self.url, self.prefix, self.ttl_s = url, prefix, ttl_s
        self.timeout_s, self.max_deadline_s, self.strict = timeout_s, max_deadline_s, strict
        self.retry_after_s, self.max_retry_after_s = retry_after_s, max_retry_after_s
        self.signer = signer if signer is not None else EntrySigner()
        self._lock = threading.Lock()
        self._reset_health()
        self._client = self._make_client()  # parses the URL now (a bad one fails here)

    def deadline_s(self, nbytes: int) -> float:
        """How long moving ``nbytes`` may take before the server counts as stalled."""
        proportional = self.timeout_s + nbytes / _MIN_BYTES_PER_S
        return max(self.timeout_s, min(self.max_deadline_s, proportional))

    def backoff_s(self, failures: int) -> float:
        """How long to leave Redis alone after ``failures`` failed attempts in a row."""
        ceiling = max(self.retry_after_s, self.max_retry_after_s)
        return min(ceiling, self.retry_after_s * 2.0 ** min(failures - 1, 64))

    def _make_client(self) -> Any:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            return self._redis.Redis.from_url(
                self.url,
                socket_timeout=self.deadline_s(_PIECE_BYTES),
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),  # one attempt: the store does its own backoff
                health_check_interval=0,
            )
        except ValueError as exc:
            raise CacheConfigError("redis_url", redact_url(self.url), str(exc)) from None

    def _name(self, key: str) -> str:
        return f"{self.prefix}:{_LAYOUT}:{key}"

    # --- outage handling --------------------------------------------------------------------

    def _reset_health(self) -> None:
        self._failures = 0  # failed attempts in a row, counted once per attempt; 0: healthy
        self._retry_at = 0.0  # time.monotonic() before which no call goes to Redis
        self._probing = False  # a call is trying Redis again after a backoff
        self._down_since = 0.0
        self._refusals_warned: set[tuple[str, str]] = set()

    def _backing_off(self) -> bool:
        if self.strict or not self._failures:
            return False
        return self._probing or time.monotonic() < self._retry_at

    def _admit(self) -> int | None:
        """The failures seen when a call may go to Redis, None if it must answer at once.
        After a backoff only one call (the probe) goes; the others keep answering at once."""
        if self.strict or not self._failures:
            return 0
        with self._lock:
            if self._probing or time.monotonic() < self._retry_at:
                return None
            self._probing = True
            return self._failures

    def _succeeded(self, seen: int) -> None:
        if not seen:
            return  # calls admitted while healthy say nothing about an outage begun meanwhile
        with self._lock:
            down_for = time.monotonic() - self._down_since
            self._failures, self._probing = 0, False
        _log.info("Redis cache at %s is back after %.1f s", redact_url(self.url), down_for)

    def _failed(self, what: str, exc: BaseException, seen: int) -> None:
        """Warn once per outage and back off (or raise, when strict)."""
        where = redact_url(self.url)
        if self.strict:
            raise CacheError(
                f"Redis cache at {where}: {what} failed ({type(exc).__name__}: {exc})"
            ) from exc
        now = time.monotonic()
        with self._lock:
            first = self._failures == 0
            if first:
                self._down_since = now
            if self._failures == seen:  # calls in flight when an outage began count once
                self._failures += 1
                self._retry_at = now + self.backoff_s(self._failures)
            if seen:
                self._probing = False
        if first:
            warnings.warn(
                f"Redis cache at {where} is unavailable ({type(exc).__name__}: {exc}); "
                f"running without it; next attempt in {self.backoff_s(1):g} s, then less often "
                f"(up to every {max(self.retry_after_s, self.max_retry_after_s):g} s)",
                CacheWarning,
                stacklevel=4,
            )

    def _refused(self, what: str, exc: BaseException) -> None:
        """The server answered with an error (full, read-only, ...): that call's result is lost,
        the server is fine. Warned about once per store and kind of refusal."""
        message = f"Redis cache at {redact_url(self.url)} refused {what} ({exc})"
        if self.strict:
            raise CacheError(message) from exc
        kind = (what, type(exc).__name__)
        with self._lock:
            first = kind not in self._refusals_warned
            self._refusals_warned.add(kind)
        if first:
            warnings.warn(f"{message}; such calls miss or drop", CacheWarning, stacklevel=4)

    def _call(self, what: str, fn: Callable[[Any], T], default: T) -> T:
        """Run ``fn(client)`` unless backing off; any Redis failure gives ``default``."""
        seen = self._admit()
        if seen is None:
            return default
        try:
            value = fn(self._client)
        except self._redis.ResponseError as exc:
            self._succeeded(seen)
            self._refused(what, exc)
            return default
        except (self._redis.RedisError, OSError) as exc:
            self._failed(what, exc, seen)
            return default
        self._succeeded(seen)
        return value

    def _drop(self, message: str) -> None:
        if self.strict:
            raise CacheError(f"Redis cache at {redact_url(self.url)}: {message}")
        warnings.warn(
            f"Redis cache at {redact_url(self.url)}: {message}", CacheWarning, stacklevel=3
        )

    # --- moving values, in pieces when big -----------------------------------------------------

    def _deadline(self, what: str, nbytes: int) -> Callable[[], None]:
        """A check to run between pieces: TimeoutError once moving ``nbytes`` is overdue."""
        limit = self.deadline_s(nbytes)
        end = time.monotonic() + limit

        def check() -> None:
            if time.monotonic() > end:
                raise self._redis.TimeoutError(
                    f"{what} of {nbytes / 2**20:.1f} MiB took over its {limit:.2g} s deadline"
                )

        return check

    def _read(self, client: Any, name: str) -> bytes | None:
        head = client.getrange(name, 0, _PIECE_BYTES - 1)  # not MULTI: a full server refuses it
        if len(head) < _PIECE_BYTES:
            return head or None  # all of it ("": no such entry)
        pieces = []
        with client.pipeline() as pipe:
            pipe.watch(name)  # a value replaced while read is a miss, not a torn frame
            size = pipe.strlen(name)
            check = self._deadline("GET", size)
            for start in range(0, size, _PIECE_BYTES):
                check()
                pieces.append(pipe.getrange(name, start, start + _PIECE_BYTES - 1))
            pipe.multi()
            try:
                pipe.execute()
            except self._redis.WatchError:
                return None
        return b"".join(pieces) or None

    def _write(self, client: Any, name: str, frame: bytes) -> None:
        if len(frame) <= _PIECE_BYTES:
            client.set(name, frame, ex=self.ttl_s)
            return
        check = self._deadline("SET", len(frame))
        # pieces go to a key of their own, renamed into place whole: readers never see half
        partial = f"{self.prefix}:{_LAYOUT}-partial:{uuid.uuid4().hex}"
        expire_s = int(self.deadline_s(len(frame))) + 60  # an abandoned partial goes soon
        with client.pipeline() as pipe:  # the full length at once: no reallocation per piece
            pipe.setrange(partial, len(frame) - 1, b"\0").expire(partial, expire_s).execute()
        view = memoryview(frame)
        for start in range(0, len(frame), _PIECE_BYTES):
            check()
            client.setrange(partial, start, view[start : start + _PIECE_BYTES])
        check()
        with client.pipeline() as pipe:
            pipe.rename(partial, name)
            if self.ttl_s is None:
                pipe.persist(name)
            else:
                pipe.expire(name, self.ttl_s)
            pipe.execute()

    # --- the store protocol -----------------------------------------------------------------

    def get(self, key: str) -> StageResult | None:
        key = validate_key(key)
        name = self._name(key)
        frame = self._call("GET", lambda client: self._read(client, name), None)
        if frame is None:
            return None
        try:
            return from_frame(key, frame, self.signer)
        except CacheError as exc:  # no usable key: the entry may be fine, so it stays
            self._drop(f"cannot check entry {key}: {exc}")
            return None
        except EntryRejected as exc:
            # left in place: a reader never deletes what it cannot authenticate (a co-user
            # signing with another key would wipe the other's entries); the next put of this
            # key overwrites it
            warnings.warn(
                f"Redis cache at {redact_url(self.url)}: ignoring entry {key} ({exc}); "
                "it will be recomputed",
                CacheWarning,
                stacklevel=2,
            )
            return None

    def put(self, key: str, result: StageResult) -> None:
        key = validate_key(key)
        if self._backing_off():
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
        self._call("SET", lambda client: self._write(client, name, frame), None)

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
        del state["_lock"], state["_client"], state["_redis"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._redis = _import_redis()
        self._lock = threading.Lock()
        self._reset_health()  # another process finds out for itself (its clock differs, too)
        self._client = self._make_client()

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, prefix={self.prefix!r}, ttl_s={self.ttl_s})"
