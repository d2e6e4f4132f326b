"""Results the memory tier can keep and hand out without sharing anything a caller can change.

A store that keeps Python objects must never let a caller's in-place edit become the next hit.
The rule, for whatever a result holds:

- **arrays are read-only and never copied on a hit.** On ``put`` an array is made read-only
  *in place*, together with the array owning its memory when it is a view (the caller's own
  arrays: editing them afterwards raises numpy's ValueError instead of silently changing the
  entry); an array over memory no array owns (an ``np.memmap``'s file, a foreign buffer) is
  copied once, unless it is immutable (``bytes``, a verified disk-cache mapping). On ``get``
  every array is handed out as a fresh read-only *view*, which numpy refuses to make writable
  again. Object-dtype arrays are deep-copied both ways.
- **containers are copied.** Dicts, lists and tuples, :class:`SimpleState` and
  :class:`DagState` are rebuilt around the arrays on ``put`` and on every ``get``, so adding a
  key to a hit's ``meta`` changes nothing stored. Any other object (a user's ``State``
  subclass, a DataFrame, ...) is copied with ``copy.deepcopy``, its plain arrays mapped to
  read-only ones as above; a state that ``copy.deepcopy`` cannot copy is copied with its own
  ``deepcopy()`` method (which copies its arrays too).
- **artifacts** are for display: arrays and containers follow the rule above, while lazy
  artifacts (callables) and other objects (figures) are handed out as they are.

What this cannot stop: code that kept another *writable view* of a state's array from before
the ``put`` (``v = a[:]``, then ``a`` is returned) can still write through ``v``, and whoever
holds the owning array can deliberately set it writable again. Both are deliberate acts on one's
own memory, not the accidental edits this module guards against.
"""

from __future__ import annotations

import copy
import mmap
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..types import DagState, SimpleState, StageResult, State

__all__ = ["FrozenMapping", "UncopyableResult", "freeze", "hand_out", "reachable"]

# immutable, or code: handed out as they are
_ATOMS = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        range,
        type,
        types.FunctionType,
        types.BuiltinFunctionType,
        types.ModuleType,
    }
)
# sized by estimate_nbytes but never walked (code objects would drag in whole modules)
_LEAVES = (
    str,
    bytes,
    bytearray,
    int,
    float,
    complex,
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
)


class FrozenMapping(mmap.mmap):
    """A read-only memory map of a cache file whose digest was verified (``disk`` makes them):
    arrays viewing one are shared like arrays viewing ``bytes`` (see ``disk`` for the trust
    boundary of a mapped file)."""


class UncopyableResult(Exception):
    """A result holds an object that can be copied neither by ``copy.deepcopy`` nor by its own
    ``deepcopy()``; the memory tier does not keep it."""


def _attributes(obj: Any) -> list[Any]:
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                values.append(getattr(obj, name))
    return values


def reachable(obj: Any) -> Iterator[Any]:
    """Every object reachable from ``obj`` once (by identity): container items, attributes and
    slots, object-array elements; leaves (strings, numbers, code) are yielded, not walked."""
    seen, stack = set(), [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                stack.extend(item.ravel().tolist())
        elif isinstance(item, _LEAVES):
            continue
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            stack.extend(_attributes(item))


def _immutable_memory(arr: np.ndarray) -> bool:
    """Whether nothing outside the cache can write ``arr``'s memory: every array on its base
    chain is read-only and the chain ends in an array owning its memory, ``bytes`` or a
    verified cache mapping."""
    base: Any = arr
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        if base.base is None:
            return True
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return type(base) is bytes or isinstance(base, FrozenMapping)


def _frozen(arr: np.ndarray) -> np.ndarray:
    """``arr`` made read-only in place, with the array owning its memory, when an array owns
    it; memory nothing can vouch for (a memmap's file, a foreign buffer): a read-only copy."""
    if type(arr) is np.ndarray:
        owner = arr if arr.base is None else arr.base  # numpy points views at the owner
        if type(owner) is np.ndarray and owner.flags.owndata:
            owner.flags.writeable = False
            arr.flags.writeable = False
            return arr
        if _immutable_memory(arr):
            return arr
    private = np.array(arr, copy=True, subok=False)
    private.flags.writeable = False
    return private


def _read_only_view(arr: np.ndarray) -> np.ndarray:
    return arr.view()  # the stored array is read-only, so is its view, for good


class _Detacher:
    """Copies containers and maps arrays with ``on_array``; an array (or an object copied by
    ``copy.deepcopy``) found twice is mapped once, so aliases stay aliases."""

    __slots__ = ("memo", "on_array", "share_unknown")

    def __init__(self, on_array: Callable[[np.ndarray], np.ndarray]) -> None:
        self.on_array = on_array
        self.share_unknown = False  # set for artifacts: figures and such are handed out as is
        self.memo: dict[int, Any] = {}

    def __call__(self, obj: Any) -> Any:
        kind = type(obj)  # exact types first: this runs on every memory hit
        if kind in _ATOMS:
            return obj
        atoms = _ATOMS  # containers skip the call for their immutable items
        if kind is dict:
            return {k: v if type(v) in atoms else self(v) for k, v in obj.items()}
        if (kind is np.ndarray or kind is np.memmap) and not obj.dtype.hasobject:
            out = self.memo.get(id(obj))
            if out is None:
                out = self.memo[id(obj)] = self.on_array(obj)
            return out
        if kind is list:
            return [v if type(v) in atoms else self(v) for v in obj]
        if kind is tuple:
            return tuple([v if type(v) in atoms else self(v) for v in obj])
        if kind is SimpleState and len(vars(obj)) == 2:
            return SimpleState(self(obj.payload), self(obj.meta))
        if kind is DagState:
            return DagState({k: self(v) for k, v in obj.inputs.items()})
        if issubclass(kind, np.generic) and kind is not np.void:
            return obj
        if self.share_unknown and not isinstance(obj, np.ndarray | list | dict | tuple):
            return obj
        return self._deepcopy(obj)

    def _deepcopy(self, obj: Any) -> Any:
        """``copy.deepcopy`` with the plain arrays inside ``obj`` pre-mapped in the memo."""
        for item in reachable(obj):
            if type(item) is np.ndarray and not item.dtype.hasobject and id(item) not in self.memo:
                self.memo[id(item)] = self.on_array(item)
        try:
            return copy.deepcopy(obj, self.memo)
        except Exception as exc:  # noqa: BLE001 - locks, files, whatever a __reduce__ raises
            if isinstance(obj, State):
                try:
                    return obj.deepcopy()
                except Exception:  # noqa: BLE001 - the user's method, whatever it raises
                    pass
            raise UncopyableResult(f"{type(obj).__qualname__}: {type(exc).__name__}") from None

    def result(self, result: StageResult) -> StageResult:
        state, metrics, provenance = (
            self(result.state),
            self(result.metrics),
            self(result.provenance),
        )
        self.share_unknown = True
        artifacts = {k: v if callable(v) else self(v) for k, v in result.artifacts.items()}
        return StageResult(state, metrics, artifacts, provenance)


def freeze(result: StageResult) -> StageResult:
    """A copy of ``result`` for a store to keep: its own containers, read-only arrays (the
    caller's arrays made read-only in place where they own their memory). Raises
    UncopyableResult when the state cannot be copied."""
    try:
        return _Detacher(_frozen).result(result)
    except RecursionError:
        raise UncopyableResult("nested too deeply") from None


def hand_out(result: StageResult) -> StageResult:
    """What a hit gives the caller: fresh containers around read-only views of the stored
    arrays (cheap: no array data is copied)."""
    return _Detacher(_read_only_view).result(result)
