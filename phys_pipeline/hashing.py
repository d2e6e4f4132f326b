"""Canonical, typed hashing of configs, policies, arrays, states and code.

Every value is fed to the hash as a type tag followed by an unambiguous encoding, so values of
different kinds can never collide (``1`` vs ``1.0`` vs ``"1"`` vs ``b"1"``), and arrays hash by
dtype, shape and their C-order bytes, never by ``repr`` (numpy abbreviates large arrays there).
Other values pydantic can serialise (datetimes, Decimals, UUIDs, ...) hash by their JSON form
under their type's name.
The hash is xxh3-128: non-cryptographic but fast (cache entries are authenticated separately).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import operator
import struct
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePath
from typing import Any

import numpy as np
import xxhash
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import UnhashableValueError

Hasher = Any  # xxhash.xxh3_128 instance

_pack_len = struct.Struct("<Q").pack
_pack_float = struct.Struct("<d").pack


def new_hasher() -> Hasher:
    return xxhash.xxh3_128()


def feed_bytes(h: Hasher, tag: bytes, data: bytes | memoryview) -> None:
    if len(data) <= _CONCAT_MAX:  # one update call is cheaper than three for small data
        h.update(tag + _pack_len(len(data)) + data)
    else:
        h.update(tag)
        h.update(_pack_len(len(data)))
        h.update(data)


_CONCAT_MAX = 4096


def _feed_array(h: Hasher, arr: np.ndarray, where: str) -> None:
    if arr.dtype.hasobject:
        h.update(b"O")
        h.update(_pack_len(arr.ndim))
        for dim in arr.shape:
            h.update(_pack_len(dim))
        for item in arr.ravel(order="C"):
            feed(h, item, where)
        return
    h.update(b"A")
    feed_bytes(h, b"t", arr.dtype.str.encode())
    h.update(b"".join(map(_pack_len, (arr.ndim, *arr.shape))))
    # a flat uint8 view, not memoryview(arr).cast: that fails for empty n-d arrays and for
    # dtypes the buffer protocol lacks (datetime64)
    raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    h.update(_pack_len(raw.nbytes))
    h.update(raw)


def _feed_float(h: Hasher, value: float, where: str = "") -> None:
    # one NaN and one zero, so equal-looking physics values share a key
    value = 0.0 if value == 0.0 else value
    h.update(b"fnan" if math.isnan(value) else b"f" + _pack_float(value))


def _key_digest(key: Any, where: str) -> bytes:
    """``digest(key)``; str keys (nearly all of them) in one call, without a hasher object."""
    if type(key) is str:
        data = key.encode("utf-8", "surrogatepass")
        return xxhash.xxh3_128_digest(b"s" + _pack_len(len(data)) + data)
    return digest(key, where)


def _feed_mapping(h: Hasher, items: Any, where: str) -> None:
    encoded = sorted([(_key_digest(k, where), v) for k, v in items])
    h.update(_pack_len(len(encoded)))
    for key_digest, value in encoded:
        h.update(key_digest)
        feed(h, value, where)


def _feed_sequence(h: Hasher, obj: list | tuple, where: str) -> None:
    h.update((b"L" if isinstance(obj, list) else b"U") + _pack_len(len(obj)))
    for item in obj:
        feed(h, item, where)


def _feed_dict(h: Hasher, obj: Mapping, where: str) -> None:
    if not obj:  # empty dicts (meta, tags, metrics) are everywhere
        h.update(_EMPTY_DICT)
        return
    h.update(b"D")
    _feed_mapping(h, obj.items(), where)


_EMPTY_DICT = b"D" + _pack_len(0)


def _feed_int(h: Hasher, obj: int, where: str) -> None:
    feed_bytes(h, b"i", str(obj).encode())


def _feed_str(h: Hasher, obj: str, where: str) -> None:
    feed_bytes(h, b"s", obj.encode("utf-8", "surrogatepass"))


# Encoders for the exact built-in types that make up nearly every config and state, looked
# up by ``type(obj)`` before the general chain in ``feed``. Subclasses (np.float64, IntEnum,
# ...) take the chain, which encodes them exactly as before.
_EXACT: dict[type, Callable[[Hasher, Any, str], None]] = {
    type(None): lambda h, obj, where: h.update(b"N"),
    bool: lambda h, obj, where: h.update(b"T" if obj else b"F"),
    int: _feed_int,
    float: _feed_float,
    str: _feed_str,
    list: _feed_sequence,
    tuple: _feed_sequence,
    dict: _feed_dict,
    np.ndarray: _feed_array,
}


def feed(h: Hasher, obj: Any, where: str = "value") -> None:
    """Feed the canonical, tagged encoding of ``obj`` to ``h``; ``where`` names it in errors."""
    exact = _EXACT.get(type(obj))
    if exact is not None:
        exact(h, obj, where)
    elif obj is None:
        h.update(b"N")
    elif obj is True or obj is False:
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int) and not isinstance(obj, enum.Enum):
        _feed_int(h, int(obj), where)
    elif isinstance(obj, float):
        _feed_float(h, float(obj))
    elif isinstance(obj, complex):
        h.update(b"c")
        _feed_float(h, obj.real)
        _feed_float(h, obj.imag)
    elif isinstance(obj, str):
        _feed_str(h, obj, where)
    elif isinstance(obj, bytes | bytearray | memoryview):
        feed_bytes(h, b"b", bytes(obj))
    elif isinstance(obj, np.ndarray):
        _feed_array(h, obj, where)
    elif isinstance(obj, np.generic):
        _feed_array(h, np.asarray(obj), where)
    elif isinstance(obj, list | tuple):
        _feed_sequence(h, obj, where)
    elif isinstance(obj, Mapping):
        _feed_dict(h, obj, where)
    elif isinstance(obj, set | frozenset):
        h.update(b"S")
        members = sorted(digest(item, where) for item in obj)
        h.update(_pack_len(len(members)))
        for member in members:
            h.update(member)
    elif isinstance(obj, enum.Enum):
        feed_bytes(h, b"E", qualname(type(obj)).encode())
        feed(h, obj.value, where)
    elif isinstance(obj, PurePath):
        feed_bytes(h, b"P", str(obj).encode())
    elif hasattr(obj, "hashable_repr") and callable(obj.hashable_repr):
        feed_bytes(h, b"R", qualname(type(obj)).encode())
        feed_bytes(h, b"r", bytes(obj.hashable_repr()))
    elif hasattr(obj, "model_dump") and callable(obj.model_dump):
        feed_bytes(h, b"M", qualname(type(obj)).encode())
        feed(h, config_snapshot(obj), where)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        feed_bytes(h, b"C", qualname(type(obj)).encode())
        feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, where)
    else:
        _feed_jsonable(h, obj, where)


def _feed_jsonable(h: Hasher, obj: Any, where: str) -> None:
    """Values pydantic can serialise (datetime, Decimal, UUID, timedelta, ...): their JSON
    form, tagged with their type so that ``Decimal("1.5")`` and ``"1.5"`` differ. Not other
    iterables: pydantic would iterate them, reading a file or draining a generator."""
    if isinstance(obj, Iterable):
        raise UnhashableValueError(where, obj)
    try:
        data = to_jsonable_python(obj)
    except PydanticSerializationError:
        raise UnhashableValueError(where, obj) from None
    feed_bytes(h, b"J", qualname(type(obj)).encode())
    feed(h, data, where)


def digest(obj: Any, where: str = "value") -> bytes:
    """The 16-byte canonical digest of ``obj``."""
    h = new_hasher()
    feed(h, obj, where)
    return h.digest()


_PAIR_HEAD = b"U" + _pack_len(2)


def digest_pair(first: Any, second: Any, where: str = "value") -> bytes:
    """``digest((first, second))`` without the tuple and one dispatch: states hash this way
    before and after every stage (the executor's mutation check)."""
    h = xxhash.xxh3_128(_PAIR_HEAD)
    feed(h, first, where)
    feed(h, second, where)
    return h.digest()


def hexdigest(obj: Any, where: str = "value") -> str:
    h = new_hasher()
    feed(h, obj, where)
    return h.hexdigest()


def hash_ndarray(arr: np.ndarray) -> bytes:
    """Digest of an array's dtype, shape and C-order bytes."""
    h = new_hasher()
    _feed_array(h, np.asarray(arr), "array")
    return h.digest()


def hash_small(obj: Any) -> bytes:
    """Digest of a small structured value (numbers, strings, containers, arrays)."""
    return digest(obj)


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- configs --------------------------------------------------------------------------------


def config_snapshot(cfg: Any) -> Any:
    """Read a config as plain data: through ``model_dump`` (pydantic models and the stdlib
    dataclasses that subclass them), else dataclass fields, else the object itself."""
    if cfg is None:
        return None
    if hasattr(cfg, "model_dump"):
        return cfg.model_dump()
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    return cfg


def config_hash(cfg: Any, where: str = "config") -> str:
    """Hex digest of a config's class and canonical content (arrays folded in by content)."""
    known = _CONFIG_DIGESTS.get(cfg)
    if known is not None:
        return known
    h = new_hasher()
    feed_bytes(h, b"K", qualname(type(cfg)).encode())
    snapshot = config_snapshot(cfg)
    try:
        feed(h, snapshot, where)
    except UnhashableValueError as exc:
        raise UnhashableValueError(where, exc.value, _field_path(snapshot, exc.value)) from None
    hexdigest = h.hexdigest()
    _CONFIG_DIGESTS.put(cfg, hexdigest)
    return hexdigest


def _field_path(snapshot: Any, target: Any) -> str | None:
    """The path (``"sub.deep.k"``, ``"points[2]"``) of ``target`` inside a config snapshot;
    looked for only once hashing has failed, so the hot path carries no paths."""
    steps = _steps_to(snapshot, target)
    path = "".join(f"[{s}]" if type(s) is int else f".{s}" for s in steps or ())
    return path.lstrip(".") or None


def _steps_to(data: Any, target: Any) -> list | None:
    if data is target:
        return []
    if isinstance(data, Mapping):
        children: Any = data.items()
    elif isinstance(data, list | tuple):
        children = enumerate(data)
    elif dataclasses.is_dataclass(data) and not isinstance(data, type):
        children = ((f.name, getattr(data, f.name)) for f in dataclasses.fields(data))
    elif isinstance(data, set | frozenset):
        return [] if any(item is target for item in data) else None
    else:
        return None
    for key, value in children:
        below = _steps_to(value, target)
        if below is not None:
            return [key, *below]
    return None


_IMMUTABLE_LEAVES = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (dict, list, set)


def _immutable(value: Any) -> bool:
    if type(value) in _IMMUTABLE_LEAVES:
        return True
    return type(value) in (tuple, frozenset) and all(_immutable(item) for item in value)


class _ConfigDigests:
    """A memo of ``config_hash`` (plans and pipelines hash every config on every run) for the
    pydantic configs whose content cannot change behind our back: every field holds an
    immutable value (numbers, strings, tuples of them) or an empty container such as the
    default ``tags={}``. Such a config is unchanged while its fields are the very same
    objects and those containers are still empty, which ``get`` checks. Configs holding
    arrays, non-empty containers or nested models are hashed afresh every time. An entry
    goes when its config is garbage collected."""

    def __init__(self) -> None:
        # id(cfg) -> (weak ref to cfg, its class, its field objects, its extra fields, its
        # empty containers, digest)
        self._entries: dict[int, tuple[weakref.ref, type, tuple, Any, tuple, str]] = {}

    def get(self, cfg: Any) -> str | None:
        entry = self._entries.get(id(cfg))
        if entry is None:
            return None
        ref, cls, fields, extra, containers, hexdigest = entry
        values = cfg.__dict__.values()
        if (
            ref() is not cfg
            or type(cfg) is not cls
            or cfg.__pydantic_extra__ is not extra
            or len(values) != len(fields)
            or not all(map(operator.is_, values, fields))
            or any(containers)  # e.g. someone wrote into cfg.tags
        ):
            return None
        return hexdigest

    def put(self, cfg: Any, hexdigest: str) -> None:
        if not isinstance(cfg, BaseModel) or type(cfg).model_computed_fields:
            return
        fields, extra = tuple(cfg.__dict__.values()), cfg.__pydantic_extra__
        containers = tuple(v for v in (*fields, extra) if type(v) in _CONTAINERS)
        if any(containers) or not all(
            _immutable(v) for v in (*fields, extra) if type(v) not in _CONTAINERS
        ):
            return  # its content may change in place: no memo
        key = id(cfg)
        ref = weakref.ref(cfg, lambda _, key=key: self._entries.pop(key, None))
        self._entries[key] = (ref, type(cfg), fields, extra, containers, hexdigest)


_CONFIG_DIGESTS = _ConfigDigests()


def callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__
