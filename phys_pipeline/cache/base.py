"""The store protocol: where results live, kept apart from how they are encoded (``codec``)."""

from __future__ import annotations

import functools
import re
from typing import Protocol, runtime_checkable

from ..types import StageResult

__all__ = ["CacheStore", "CacheWarning", "validate_key"]

# hex digests only: a key becomes a file name or a Redis key, so it must never carry "/" or ".."
_KEY_RE = re.compile(r"[0-9a-f]{16,128}")


class CacheWarning(UserWarning):
    """A cache entry was ignored (corrupt, foreign, unsigned) or a backend is unavailable.

    The run goes on as if the entry were missing; the warning says what was skipped and why.
    """


def validate_key(key: object) -> str:
    """Return ``key`` in lowercase if it is a hex digest (16-128 hex digits), else ValueError."""
    if isinstance(key, str):
        checked = _checked(key)
        if checked is not None:
            return checked
    raise ValueError(
        f"invalid cache key {key!r}: expected a hex digest of 16 to 128 hex digits "
        "(e.g. the 32-digit xxh3-128 hexdigest of a node)"
    )


@functools.lru_cache(maxsize=8192)  # every cache operation of a run checks its key, twice
def _checked(key: str) -> str | None:
    lowered = key.lower()
    return lowered if _KEY_RE.fullmatch(lowered) else None


@runtime_checkable
class CacheStore(Protocol):
    """Where results live. Stores never raise for a missing or unreadable entry: ``get`` gives
    None (with a :class:`CacheWarning` when an entry had to be skipped). ``contains`` is a cheap
    hint that decodes nothing, so ``get`` may still miss after it said True."""

    def get(self, key: str) -> StageResult | None: ...

    def put(self, key: str, result: StageResult) -> None: ...

    def contains(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> None: ...
