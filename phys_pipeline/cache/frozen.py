"""Results the memory tier can keep and hand out without sharing anything a caller can change.

A store that keeps Python objects must never let a caller's in-place edit become the next hit.
The rule, for whatever a result holds:

- **arrays are read-only and never copied on a hit.** On ``put`` an array is made read-only
  *in place*, together with the array owning its memory when it is a view (the caller's own
  arrays: editing them afterwards raises numpy's ValueError instead of silently changing the
  entry), and the store keeps a view of its own (so reshaping the caller's array object, or
  changing its dtype, reaches no entry); an array over memory no array owns (an ``np.memmap``'s
  file, a foreign buffer) is copied once, unless it is immutable (``bytes``, a verified
  disk-cache mapping). On ``get`` every array is handed out as a fresh read-only *view*, which
  numpy refuses to make writable again. Object-dtype arrays are deep-copied both ways.
- **containers are copied.** Dicts, lists and tuples, :class:`SimpleState`, :class:`DagState`
  and other plain classes are rebuilt around the arrays on ``put`` and on every ``get``, so
  adding a key to a hit's ``meta`` changes nothing stored. Any other object (a DataFrame, a
  class with copy hooks, ...) is copied with ``copy.deepcopy``, its plain arrays mapped to
  read-only ones as above; a state that ``copy.deepcopy`` cannot copy is copied with its own
  ``deepcopy()`` method (which copies its arrays too).
- **artifacts** are for display: arrays and containers follow the rule above, while lazy
  artifacts (callables) and other objects (figures) are handed out as they are.

Hits are frequent, so ``keep`` decides how to copy once, at ``put``: for plain data (scalars,
arrays, dicts, lists, tuples, and classes whose ``copy.deepcopy`` is "a new instance with its
attributes copied", such as ``SimpleState``, ``DagState`` and most user states) one walk makes
the store's copy, its size and a *recipe*: small objects that rebuild fresh containers around
new views on each hit without looking at a type again. Anything else, or a value found twice
(an alias, a cycle), takes the general path: ``freeze``, then ``hand_out`` on every hit.

What this cannot stop: code that kept another *writable view* of a state's array from before
the ``put`` (``v = a[:]``, then ``a`` is returned) can still write through ``v``, and whoever
holds the owning array (the caller of ``put``, or of a hit through ``.base``) can deliberately
set it writable again. Both are deliberate acts on one's own memory, not the accidental edits
this module guards against.
"""

from __future__ import annotations

import copy
import copyreg
import dataclasses
import functools
import mmap
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..types import DagState, SimpleState, StageResult, State

__all__ = [
    "FrozenMapping",
    "UncopyableResult",
    "estimate_nbytes",
    "freeze",
    "hand_out",
    "keep",
    "reachable",
]

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
# sized by their own __sizeof__ (sys.getsizeof costs seven times as much), never walked
_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})
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
    """A read-only view of ``arr``, made read-only in place with the array owning its memory,
    when an array owns it; memory nothing can vouch for (a memmap's file, a foreign buffer): a
    read-only copy."""
    if type(arr) is np.ndarray:
        owner = arr if arr.base is None else arr.base  # numpy points views at the owner
        if type(owner) is np.ndarray and owner.flags.owndata:
            owner.flags.writeable = False
            arr.flags.writeable = False
            return arr.view()  # the caller's array object stays the caller's
        if _immutable_memory(arr):
            return arr.view()
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


def keep(result: StageResult) -> tuple[Callable[[], StageResult], int]:
    """What a store keeps of ``result``: the function a hit calls (each call hands out fresh
    containers around read-only views of the store's arrays) and the estimated bytes held.
    Raises UncopyableResult when the state cannot be copied."""
    keeper = _Keeper()
    try:
        return keeper.result(result), keeper.nbytes
    except Exception:  # noqa: BLE001 - _Unusual, or a user's class raising (a __getattr__ that
        # raises KeyError, say): the general path copies it or says why it cannot
        kept = freeze(result)
        return functools.partial(hand_out, kept), estimate_nbytes(kept)


_OBJECT_OVERHEAD = 64


def estimate_nbytes(obj: Any) -> int:
    """A deep size estimate: array buffers by ``nbytes``, containers and objects walked once
    each (by identity), code objects not walked. Good enough to budget memory, not exact."""
    total = 0
    for item in reachable(obj):
        if isinstance(item, np.ndarray):
            total += item.nbytes + _OBJECT_OVERHEAD
            continue
        try:
            total += sys.getsizeof(item)
        except TypeError:
            total += _OBJECT_OVERHEAD
    return total


# a recipe: each call returns a fresh copy of one kept value. Recipe objects are used by their
# bound ``__call__``, which Python calls twice as fast as the object itself.
Thaw = Callable[[], Any]


class _Unusual(Exception):
    """A value only the general path copies right: an alias or a cycle (``copy.deepcopy``'s
    memo keeps them), or an object that is not plain data."""


class _Keeper:
    """The walk ``keep`` takes over plain data: the recipe of each value (None: immutable, or
    an artifact shared as it is), its estimated size added to ``nbytes``. Recipes hold the
    store's copy (templates of the containers with their immutable items in place, read-only
    arrays) in few objects: an entry costs the garbage collector little. Raises _Unusual for
    anything else (see the module docstring)."""

    __slots__ = ("nbytes", "seen", "share_unknown")

    def __init__(self) -> None:
        self.nbytes = 0
        self.seen: set[int] = set()
        self.share_unknown = False  # set for artifacts, as in _Detacher

    def __call__(self, obj: Any) -> Thaw | None:
        kind = type(obj)
        if kind in _ATOMS or (issubclass(kind, np.generic) and kind is not np.void):
            self.nbytes += sys.getsizeof(obj)
            return None
        if kind is tuple:  # a cycle cannot run through tuples alone: no need to note them
            return self._tuple(obj)
        if id(obj) in self.seen:
            raise _Unusual  # an alias or a cycle
        self.seen.add(id(obj))
        if (kind is np.ndarray or kind is np.memmap) and not obj.dtype.hasobject:
            kept = _frozen(obj)
            self.nbytes += kept.nbytes + _OBJECT_OVERHEAD
            return kept.view  # read-only views, for good (see _read_only_view)
        if kind is dict:
            return self._container(obj, dict(obj), obj.items())
        if kind is list:
            return self._container(obj, list(obj), enumerate(obj))
        if self.share_unknown and not isinstance(obj, np.ndarray | list | dict | tuple | State):
            self.nbytes += estimate_nbytes(obj)
            return None
        return self._object(obj)

    def _container(self, obj: Any, kept: Any, items: Iterable[tuple[Any, Any]]) -> Thaw:
        """A dict or a list; dict keys are shared, as in _Detacher."""
        kept, parts = self._items(obj, kept, items)
        return _Rebuilt(kept, parts).__call__ if parts else kept.copy

    def _items(
        self, obj: Any, kept: Any, items: Iterable[tuple[Any, Any]]
    ) -> tuple[Any, tuple[tuple[Any, Thaw], ...]]:
        """``kept`` (a copy of ``obj``) with its mutable items set to None, and their recipes
        by key or index."""
        parts = []
        # the copy's size: an instance __dict__'s own depends on its class's history
        size, scalars, is_dict = sys.getsizeof(kept), _SCALARS, type(obj) is dict
        for where, value in items:
            if is_dict:
                size += where.__sizeof__() if type(where) in scalars else sys.getsizeof(where)
            if type(value) in scalars:
                size += value.__sizeof__()
            elif (part := self(value)) is not None:
                parts.append((where, part))
                kept[where] = None  # the part fills it in on every hit
        self.nbytes += size
        return kept, tuple(parts)

    def _tuple(self, obj: tuple[Any, ...]) -> Thaw | None:
        self.nbytes += sys.getsizeof(obj)
        parts = [self(value) for value in obj]
        if all(part is None for part in parts):
            return None  # immutable all the way down: shared
        parts = [_Same(v).__call__ if p is None else p for v, p in zip(obj, parts, strict=True)]
        return _Tuple(tuple(parts)).__call__

    def _object(self, obj: Any) -> Thaw:
        """What ``copy.deepcopy`` does to an object that reduces to a bare new instance and its
        attributes (``SimpleState``, ``DagState``, most user states), taken apart once."""
        kind = type(obj)
        if kind in copyreg.dispatch_table or getattr(obj, "__deepcopy__", None) is not None:
            raise _Unusual
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception:  # noqa: BLE001 - whatever it raises, the general path says it
            raise _Unusual from None
        if (
            type(reduced) is not tuple
            or len(reduced) < 2
            or reduced[0] is not copyreg.__newobj__
            or type(reduced[1]) is not tuple
            or len(reduced[1]) != 1
            or reduced[1][0] is not kind
            or any(extra is not None for extra in reduced[3:])
            or hasattr(obj, "__setstate__")
        ):
            raise _Unusual
        state = reduced[2] if len(reduced) > 2 else None
        attrs, slots = state if type(state) is tuple and len(state) == 2 else (state, None)
        if type(attrs) not in (dict, type(None)) or type(slots) not in (dict, type(None)):
            raise _Unusual
        # a hit sets every attribute with object.__setattr__, which keeps the instance's values
        # inline (no __dict__ made); that is what deepcopy does unless a data descriptor (a
        # property, say) or a __setattr__ of the class's own would step in
        if (slots and kind.__setattr__ is not object.__setattr__) or (
            attrs and not all(type(name) is str and _plain_name(kind, name) for name in attrs)
        ):
            raise _Unusual
        self.nbytes += sys.getsizeof(obj)
        fields = []
        for name, value in [*(attrs or {}).items(), *(slots or {}).items()]:
            part = self(value)
            fields.append((name, value if part is None else None, part))
        return _Instance(kind, tuple(fields)).__call__

    def _recipe(self, value: Any) -> Thaw:
        return self(value) or _Same(value).__call__

    def result(self, result: StageResult) -> Callable[[], StageResult]:
        state, metrics = self._recipe(result.state), self._recipe(result.metrics)
        provenance = self._recipe(result.provenance)
        self.share_unknown = True  # lazy artifacts (callables) and figures are shared
        artifacts = self._recipe(result.artifacts)
        self.nbytes += sys.getsizeof(result)
        return _Result(state, metrics, artifacts, provenance).__call__


@functools.lru_cache(maxsize=1024)
def _plain_name(kind: type, name: str) -> bool:
    """Whether no data descriptor named ``name`` on ``kind`` would intercept setting it."""
    for klass in kind.__mro__:
        if name in vars(klass):
            return not hasattr(type(vars(klass)[name]), "__set__")
    return True


@dataclasses.dataclass(slots=True, eq=False)
class _Same:
    """The recipe of a value handed out as it is."""

    value: Any

    def __call__(self) -> Any:
        return self.value


@dataclasses.dataclass(slots=True, eq=False)
class _Rebuilt:
    """The recipe of a dict or list holding mutable items: a shallow copy of the kept one,
    each such item thawed into its place."""

    kept: Any
    parts: tuple[tuple[Any, Thaw], ...]

    def __call__(self) -> Any:
        out = self.kept.copy()
        for where, part in self.parts:
            out[where] = part()
        return out


@dataclasses.dataclass(slots=True, eq=False)
class _Tuple:
    """The recipe of a tuple holding mutable items."""

    parts: tuple[Thaw, ...]

    def __call__(self) -> tuple[Any, ...]:
        return tuple([part() for part in self.parts])


@dataclasses.dataclass(slots=True, eq=False)
class _Instance:
    """The recipe of a plain object: ``copy.deepcopy``'s bare new instance, given its
    immutable attributes as they are and fresh copies of the others."""

    kind: type
    fields: tuple[tuple[str, Any, Thaw | None], ...]

    def __call__(self) -> Any:
        kind, setattr_ = self.kind, object.__setattr__
        out = kind.__new__(kind)
        for name, value, part in self.fields:
            setattr_(out, name, value if part is None else part())
        return out


@dataclasses.dataclass(slots=True, eq=False)
class _Result:
    """The recipe of a whole result: what a hit calls."""

    state: Thaw
    metrics: Thaw
    artifacts: Thaw
    provenance: Thaw

    def __call__(self) -> StageResult:
        return StageResult(self.state(), self.metrics(), self.artifacts(), self.provenance())
