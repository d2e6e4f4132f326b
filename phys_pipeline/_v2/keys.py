"""Records that still answer the keys 2.0.0 code read from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .._deprecation import warn_once

__all__ = ["RenamedKeys"]


class RenamedKeys(dict[str, Any]):
    """A plain dict of a record's current keys that also answers its 2.0.0 keys, warning
    once for each: a subclass's ``_renamed`` maps an old key to the current key holding its
    value, and a record's ``_values`` gives old keys that have no current key their value.
    Iterating, comparing or saving it sees only the current keys. Made as a plain dict is
    (records are made once per stage: no Python-level ``__init__``, no instance ``__dict__``),
    then given its ``_values``."""

    __slots__ = ("_values",)
    _where: ClassVar[str] = "record"
    _renamed: ClassVar[Mapping[str, str]] = {}

    def _is_old(self, key: object) -> bool:
        if not isinstance(key, str) or dict.__contains__(self, key):
            return False
        return key in self._values or dict.__contains__(self, self._renamed.get(key))

    def _old(self, key: str) -> Any:
        """The value of old key ``key`` (one ``_is_old`` accepts), warning once."""
        if key in self._values:
            instead, value = f"read the run's provenance[{key!r}]", self._values[key]
        else:
            current = self._renamed[key]
            instead, value = f"read {current!r}", self[current]
        warn_once(f"{self._where}[{key!r}]", instead, stacklevel=3)
        return value

    def __missing__(self, key: str) -> Any:
        if not self._is_old(key):
            raise KeyError(key)
        return self._old(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._old(key) if self._is_old(key) else super().get(key, default)

    def __contains__(self, key: object) -> bool:
        if not self._is_old(key):
            return dict.__contains__(self, key)
        self._old(key)  # type: ignore[arg-type]  # _is_old: a str
        return True
