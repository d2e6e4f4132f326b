"""PolicyBag: run-wide overrides handed to every stage, immutable and stably hashed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias

from .errors import PolicyError, UnhashableValueError
from .hashing import digest, new_hasher

__all__ = [
    "EMPTY_POLICY_HASH",
    "PolicyBag",
    "PolicyLike",
    "ScopedPolicy",
    "as_policy",
]


class PolicyBag(Mapping[str, Any]):
    """An immutable mapping of policy keys to values with a stable content hash.

    Values must hash canonically (numbers, strings, arrays, containers, models), so that a policy
    can take part in cache keys; an unusable value is rejected here, naming its key. The bag
    holds its values as given: a value that can change in place (an array, a list, a model) is
    hashed afresh each time, so that writing to it makes the nodes that read it stale, never a
    hit computed from what it held before.
    """

    __slots__ = ("_data", "_digests")

    def __init__(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        merged = {**(dict(data) if data else {}), **kwargs}
        digests: dict[str, bytes] = {}
        for key, value in merged.items():
            if not isinstance(key, str):
                raise PolicyError(repr(key), value, "policy keys must be strings")
            try:
                digests[key] = digest(value, f"policy key {key!r}")
            except UnhashableValueError as exc:
                raise PolicyError(key, value, "value cannot be hashed canonically") from exc
        # in key order: a bag's hash ignores insertion order, so what iterating it gives must too
        self._data = dict(sorted(merged.items()))
        # digests of values that cannot change in place; the others are taken when asked for
        self._digests = {k: d for k, d in digests.items() if _immutable(merged[k])}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"PolicyBag({self._data!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PolicyBag):
            return self.hash() == other.hash()
        return NotImplemented if not isinstance(other, Mapping) else self == PolicyBag(other)

    def __hash__(self) -> int:
        return int(self.hash()[:16], 16)

    def hash(self) -> str:
        """Hex digest of the whole bag; independent of insertion order."""
        return self.hash_of(self._data)

    def hash_of(self, keys: Any) -> str:
        """Hex digest of the entries for ``keys`` only: the hash of the sub-bag they select, so
        keys absent from the bag add nothing (none present: the empty bag's hash)."""
        h = new_hasher()
        for key in sorted(set(keys) & self._data.keys()):
            known = self._digests.get(key)
            h.update(key.encode())
            h.update(known if known is not None else digest(self._data[key], f"policy key {key!r}"))
        return h.hexdigest()

    def updated(self, changes: Mapping[str, Any] | None = None, /, **kwargs: Any) -> PolicyBag:
        """A new bag with ``changes`` applied; the original is unchanged."""
        return PolicyBag({**self._data, **(dict(changes) if changes else {}), **kwargs})

    def without(self, *keys: str) -> PolicyBag:
        return PolicyBag({k: v for k, v in self._data.items() if k not in keys})

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


def _immutable(value: Any) -> bool:
    """Whether ``value`` cannot change after it was hashed (plain scalars, tuples of them)."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return True
    return isinstance(value, tuple) and all(_immutable(item) for item in value)


class ScopedPolicy(PolicyBag):
    """The policy as seen by a stage that declares ``policy_keys``: reading any other key is an
    error, because the stage's cache key does not cover it and a change would go unnoticed."""

    __slots__ = ("_allowed", "_full", "_owner")

    def __init__(self, policy: PolicyBag, allowed: tuple[str, ...], owner: str) -> None:
        super().__init__({k: policy[k] for k in allowed if k in policy})
        self._allowed = frozenset(allowed)
        self._full = policy
        self._owner = owner

    def __getitem__(self, key: str) -> Any:
        if key not in self._allowed:
            raise PolicyError(
                key,
                self._full.get(key),
                f"{self._owner} reads this key but its policy_keys {sorted(self._allowed)} do "
                "not declare it, so its cache entries would not notice a change; declare it",
            )
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if key not in self._allowed:
            self.__getitem__(key)  # raises: the stage asks about a key it did not declare
        return key in self._data


PolicyLike: TypeAlias = PolicyBag | Mapping[str, Any] | None


def as_policy(policy: PolicyLike) -> PolicyBag | None:
    """Accept a PolicyBag, a plain mapping or None; anything else is a clear error."""
    if policy is None or isinstance(policy, PolicyBag):
        return policy
    if isinstance(policy, Mapping):
        return PolicyBag(policy)
    raise PolicyError("<policy>", policy, "a policy must be a PolicyBag, a mapping or None")


EMPTY_POLICY_HASH = PolicyBag().hash()
