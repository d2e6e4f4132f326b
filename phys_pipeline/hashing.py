"""Canonical, typed hashing of values: configs, policies, arrays and states.

Every value is fed to the hash as a type tag followed by an unambiguous encoding, so values of
different kinds can never collide (``1`` vs ``1.0`` vs ``"1"`` vs ``b"1"``), values that compare
equal but behave otherwise do not either (``-0.0`` and ``0.0``, dicts in another order, a float
subclass keeping its unit), and arrays hash by their full dtype description, shape, C-order
bytes and memory order, never by ``repr`` (numpy abbreviates large arrays there). Configs
(pydantic models, dataclasses) hash by their whole validated value: concrete class and every
field's raw value, so neither ``Field(exclude=True)`` nor a rounding ``field_serializer`` can
make two configs share a key. A path hashes by its text and the content it names (see
``files``).

Other types join through a registry modelled on ``dask.base.normalize_token``:
``register_hasher(cls)`` maps a type (and its subclasses) to plain data that is then hashed
under the value's qualified type name; ``register_lazy(library, installer)`` defers a
library's registrations until a value of one of its types is met, so ``import phys_pipeline``
never imports pandas, xarray, pint, astropy or scipy. Values pydantic can serialise (Decimal,
UUID, ...) hash by their JSON form under their type's name.

The hash is xxh3-128: non-cryptographic but fast (cache entries are authenticated separately).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import fractions
import operator
import re
import struct
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import xxhash
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import PydanticSerializationError, to_jsonable_python

from ._files import file_digest
from ._v2 import served_from
from .errors import UnhashableValueError

__all__ = [
    "Encoder",
    "Hasher",
    "IMMUTABLE_LEAVES",
    "Normalizer",
    "callable_name",
    "config_field_digests",
    "config_hash",
    "digest",
    "digest_pair",
    "feed",
    "feed_bytes",
    "file_references",
    "hash_ndarray",
    "hash_small",
    "hexdigest",
    "immutable",
    "new_hasher",
    "qualname",
    "register_hasher",
    "register_lazy",
    "registered_base",
]

Hasher = Any  # xxhash.xxh3_128 instance
Encoder = Callable[[Hasher, Any, str], None]
Normalizer = Callable[[Any], Any]

_pack_len = struct.Struct("<Q").pack
_pack_float = struct.Struct("<d").pack


def new_hasher(data: bytes = b"") -> Hasher:
    """A fresh xxh3-128 hasher, optionally already fed ``data``."""
    return xxhash.xxh3_128(data)


def feed_bytes(h: Hasher, tag: bytes, data: bytes | memoryview) -> None:
    if len(data) <= _CONCAT_MAX:  # one update call is cheaper than three for small data
        h.update(tag + _pack_len(len(data)) + data)
    else:
        h.update(tag)
        h.update(_pack_len(len(data)))
        h.update(data)


_CONCAT_MAX = 4096


def _tagged(tag: bytes, text: str) -> bytes:
    """What ``feed_bytes(h, tag, text.encode())`` feeds, for headers built once per type."""
    data = text.encode("utf-8", "surrogatepass")
    return tag + _pack_len(len(data)) + data


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --- arrays ---------------------------------------------------------------------------------


def _dtype_description(dtype: np.dtype) -> Any:
    """A dtype as plain data: ``dtype.str`` (kind, size, byte order, datetime unit) for plain
    dtypes; for structured ones (whose ``str`` is only ``|V<size>``) every field's name,
    offset, title and dtype, recursively, plus the itemsize and alignment; with the metadata a
    dtype carries (``np.dtype(float, metadata={"unit": "m"})``), which ``str`` leaves out."""
    if dtype.fields is not None:
        fields = [(name, *_field_layout(dtype.fields[name])) for name in dtype.names or ()]
        described: Any = ("struct", dtype.itemsize, dtype.isalignedstruct, fields)
    elif dtype.subdtype is not None:
        base, shape = dtype.subdtype
        described = ("subarray", _dtype_description(base), shape)
    else:
        described = dtype.str
    return described if dtype.metadata is None else ("metadata", described, dict(dtype.metadata))


def _field_layout(field: tuple) -> tuple:
    field_dtype, offset, *title = field
    return (_dtype_description(field_dtype), offset, *title)


_DTYPE_TAGS: dict[str, bytes] = {}  # dtype.str -> tag, for plain dtypes


def _dtype_tag(dtype: np.dtype) -> bytes:
    if dtype.fields is None and dtype.metadata is None:
        tag = _DTYPE_TAGS.get(dtype.str)
        if tag is None:
            tag = _DTYPE_TAGS[dtype.str] = _tagged(b"t", dtype.str)
        return tag
    h = new_hasher()
    feed(h, _dtype_description(dtype), "dtype")
    return b"T" + h.digest()


def _feed_array(h: Hasher, arr: np.ndarray, where: str) -> None:
    """dtype, shape and C-order bytes, and the memory order of an n-d array that is not
    C-ordered (``ravel(order="K")``, ``tobytes("A")`` read it). Object arrays are refused:
    their elements may be any object, mutable or without a canonical encoding, and a tuple of
    them hashes ambiguously."""
    dtype = arr.dtype
    if dtype.hasobject:
        raise UnhashableValueError(where, arr)
    h.update(b"A" + _dtype_tag(dtype) + b"".join(map(_pack_len, (arr.ndim, *arr.shape))))
    if arr.ndim > 1 and not arr.flags.c_contiguous:
        _feed_memory_order(h, arr)
    # a flat uint8 view, not memoryview(arr).cast: that fails for empty n-d arrays and for
    # dtypes the buffer protocol lacks (datetime64)
    raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    h.update(_pack_len(raw.nbytes))
    h.update(raw)


def _feed_memory_order(h: Hasher, arr: np.ndarray) -> None:
    """The axes in the order memory holds them (as ``ravel(order="K")`` reads them), when
    that is not their C order: a transpose, a Fortran-ordered array."""
    strides = arr.strides
    axes = [axis for axis in range(arr.ndim) if arr.shape[axis] > 1]
    in_memory = sorted(axes, key=lambda axis: -abs(strides[axis]))
    if in_memory != axes:
        h.update(b"o" + b"".join(map(_pack_len, in_memory)))


# --- plain values ---------------------------------------------------------------------------


def _feed_float(h: Hasher, value: float, where: str = "") -> None:
    # by its bits: -0.0 is not 0.0 to a stage (atan2, 1/x, copysign), nor one NaN another
    h.update(b"f" + _pack_float(value))


def _feed_sequence(h: Hasher, obj: list | tuple, where: str) -> None:
    h.update((b"L" if isinstance(obj, list) else b"U") + _pack_len(len(obj)))
    for item in obj:
        feed(h, item, where)


def _feed_dict(h: Hasher, obj: Mapping, where: str) -> None:
    if not obj:  # empty dicts (meta, tags, metrics) are everywhere
        h.update(_EMPTY_DICT)
        return
    # in order: a stage that iterates a dict (list(cfg.weights.values())) sees its order
    h.update(b"D" + _pack_len(len(obj)))
    for key, value in obj.items():
        feed(h, key, where)
        feed(h, value, where)


_EMPTY_DICT = b"D" + _pack_len(0)


def _feed_int(h: Hasher, obj: int, where: str) -> None:
    feed_bytes(h, b"i", str(obj).encode())


def _feed_str(h: Hasher, obj: str, where: str) -> None:
    feed_bytes(h, b"s", obj.encode("utf-8", "surrogatepass"))


def _feed_complex(h: Hasher, obj: complex, where: str) -> None:
    h.update(b"c")
    _feed_float(h, obj.real)
    _feed_float(h, obj.imag)


def _feed_set(h: Hasher, obj: set | frozenset, where: str) -> None:
    members = [digest(item, where) for item in obj]
    if not all(type(item) in _SET_ORDERED for item in obj):
        # by content: strings iterate in an order each process draws anew (PYTHONHASHSEED)
        members.sort()
    # numbers iterate in an order their insertion fixes ({16, 8} is not {8, 16} to list())
    h.update(b"S" + _pack_len(len(members)))
    for member in members:
        h.update(member)


_SET_ORDERED = frozenset({int, float, bool, type(None)})


def _feed_jsonable(h: Hasher, obj: Any, where: str) -> None:
    """Values pydantic can serialise (Decimal, UUID, ...): their JSON form, tagged with their
    type so that ``Decimal("1.5")`` and ``"1.5"`` differ. Not other iterables: pydantic would
    iterate them, reading a file or draining a generator."""
    if isinstance(obj, Iterable):
        raise UnhashableValueError(where, obj)
    try:
        data = to_jsonable_python(obj)
    except PydanticSerializationError:
        raise UnhashableValueError(where, obj) from None
    feed_bytes(h, b"J", qualname(type(obj)).encode())
    feed(h, data, where)


# Encoders for the exact built-in types that make up nearly every config and state, looked
# up by ``type(obj)`` first in ``feed``; every other type is resolved once (``_resolve``).
_EXACT: dict[type, Encoder] = {
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
    cls = type(obj)
    encoder = _EXACT.get(cls) or _RESOLVED.get(cls) or _resolve(cls)
    encoder(h, obj, where)


def digest(obj: Any, where: str = "value") -> bytes:
    """The 16-byte canonical digest of ``obj``."""
    h = new_hasher()
    feed(h, obj, where)
    return h.digest()


_PAIR_HEAD = b"U" + _pack_len(2)


def digest_pair(first: Any, second: Any, where: str = "value") -> bytes:
    """``digest((first, second))`` without the tuple and one dispatch: states hash this way
    before and after every stage (the executor's mutation check). An unhashable value is
    named by its path inside ``first`` or ``second``."""
    h = xxhash.xxh3_128(_PAIR_HEAD)
    try:
        feed(h, first, where)
        if type(second) is dict and not second:  # a state's meta, most often: no dispatch
            h.update(_EMPTY_DICT)
        else:
            feed(h, second, where)
    except UnhashableValueError as exc:
        raise _located(exc, where, [first, second], in_roots=True) from None
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


# --- the registry ---------------------------------------------------------------------------

_HASHERS: dict[type, Normalizer] = {}
_LAZY: dict[str, Callable[[], None]] = {}  # top-level module name -> its installer
# type -> its encoder, resolved once per type; emptied when full, so that classes redefined
# in a notebook over and over are not all kept alive
_RESOLVED: dict[type, Encoder] = {}
_RESOLVED_MAX = 4096
_LOCK = threading.RLock()  # a lazy installer runs once, and no type resolves half-installed


def register_hasher(cls: type, fn: Normalizer | None = None) -> Any:
    """Hash instances of ``cls`` (and its subclasses) as ``fn(value)``: plain data (numbers,
    strings, bytes, tuples, lists, dicts, arrays, or other hashable values), fed under the
    value's qualified type name so that two types never collide. Use as
    ``register_hasher(cls, fn)`` or as a decorator ``@register_hasher(cls)``. The exact
    built-in types ``feed`` encodes directly (None, bool, int, float, str, list, tuple, dict,
    ndarray) cannot be overridden; register a subclass instead."""
    if fn is None:
        return lambda fn: register_hasher(cls, fn)
    if cls in _EXACT:
        raise TypeError(f"{qualname(cls)} hashes canonically already; register a subclass")
    with _LOCK:
        _HASHERS[cls] = fn
        _RESOLVED.clear()
    return fn


def register_lazy(library: str, installer: Callable[[], None]) -> None:
    """Run ``installer`` (which calls ``register_hasher``) the first time a value whose type
    comes from the top-level module ``library`` is hashed: by then the library is imported,
    and ``import phys_pipeline`` never imports it."""
    with _LOCK:
        _LAZY[library] = installer
        _RESOLVED.clear()


def registered_base(cls: type) -> type | None:
    """The class whose registered hasher hashes instances of ``cls`` (nearest in its MRO),
    or None when none is registered."""
    with _LOCK:
        _install_lazy(cls)
        return next((klass for klass in cls.__mro__ if klass in _HASHERS), None)


def _install_lazy(cls: type) -> None:
    for klass in cls.__mro__:
        installer = _LAZY.pop(klass.__module__.partition(".")[0], None)
        if installer is not None:
            installer()


def _resolve(cls: type) -> Encoder:
    with _LOCK:
        encoder = _RESOLVED.get(cls)
        if encoder is None:
            _install_lazy(cls)
            if len(_RESOLVED) >= _RESOLVED_MAX:
                _RESOLVED.clear()
            encoder = _RESOLVED[cls] = _encoder_for(cls)
        return encoder


def _encoder_for(cls: type) -> Encoder:
    """How to feed a value of type ``cls``: a registered hasher (nearest in the MRO) first,
    then by what the type is."""
    for klass in cls.__mro__:
        if klass in _HASHERS:
            return _registered_encoder(cls, _HASHERS[klass])
    if issubclass(cls, np.generic):  # before float: np.float64 is one, and divides by zero
        return lambda h, obj, where: _feed_array(h, np.asarray(obj), where)
    if issubclass(cls, memoryview):  # its bytes read as its format, in its shape
        return _feed_memoryview
    for base, plain in _PLAIN_BASES:
        if issubclass(cls, base):
            if cls is base:
                return plain
            # a subclass (a float keeping its unit, a NamedTuple with methods, a defaultdict,
            # an array keeping its grid step) behaves otherwise than its plain twin
            return _subclass_encoder(cls, base, plain)
    if callable(getattr(cls, "hashable_repr", None)):  # states
        header = _tagged(b"R", qualname(cls))
        return lambda h, obj, where: feed_bytes(h, header, bytes(obj.hashable_repr()))
    if issubclass(cls, BaseModel):
        return _record_encoder(cls, tuple(cls.__pydantic_fields__), extra=True)
    if dataclasses.is_dataclass(cls):
        return _record_encoder(cls, tuple(f.name for f in dataclasses.fields(cls)), extra=False)
    return _feed_jsonable


def _feed_memoryview(h: Hasher, view: memoryview, where: str) -> None:
    feed_bytes(h, b"m", f"{view.format} {view.shape}".encode())
    feed_bytes(h, b"b", view.tobytes())


def _feed_bytes(h: Hasher, obj: bytes | bytearray, where: str) -> None:
    feed_bytes(h, b"b" if type(obj) is bytes else b"B", bytes(obj))


def _feed_plain_array(h: Hasher, obj: np.ndarray, where: str) -> None:
    _feed_array(h, obj.view(np.ndarray), where)


# the built-in data types, each with the encoding of its plain instances; a subclass's
# instances are read through the base's own methods (``int.__str__``, not an override)
_PLAIN_BASES: tuple[tuple[type, Encoder], ...] = (
    (int, lambda h, obj, where: _feed_int(h, int.__int__(obj), where)),
    (float, lambda h, obj, where: _feed_float(h, float.__float__(obj), where)),
    (complex, lambda h, obj, where: _feed_complex(h, complex(obj.real, obj.imag), where)),
    (str, lambda h, obj, where: _feed_str(h, str.__str__(obj), where)),
    (bytes, _feed_bytes),
    (bytearray, _feed_bytes),
    (np.ndarray, _feed_plain_array),
    (list, _feed_sequence),
    (tuple, _feed_sequence),
    (Mapping, _feed_dict),
    (set, _feed_set),
    (frozenset, _feed_set),
)


def _subclass_encoder(cls: type, base: type, plain: Encoder) -> Encoder:
    """A subclass of a built-in data type (``class Metres(float)``): its class, its plain
    value and the attributes its instances hold (a unit kept on the value)."""
    header = _tagged(b"V", qualname(cls)) + _tagged(b"v", qualname(base))

    def encode(h: Hasher, obj: Any, where: str) -> None:
        h.update(header)
        plain(h, obj, where)
        _feed_dict(h, getattr(obj, "__dict__", None) or {}, where)

    return encode


def _registered_encoder(cls: type, fn: Normalizer) -> Encoder:
    header = _tagged(b"X", qualname(cls))

    def encode(h: Hasher, obj: Any, where: str) -> None:
        h.update(header)
        try:
            data = fn(obj)
        except UnhashableValueError:
            raise
        except Exception as exc:  # a normalizer that cannot read the value: not hashed short
            raise UnhashableValueError(where, obj) from exc
        feed(h, data, where)

    return encode


def _record_encoder(cls: type, names: tuple[str, ...], *, extra: bool) -> Encoder:
    """A model or dataclass by its concrete class and every field's raw value (read as an
    attribute: no serializer, no ``exclude``), plus a pydantic model's extra fields, or the
    attributes a dataclass holds beside its fields (set in ``__post_init__`` from an
    ``InitVar``)."""
    header = _tagged(b"M", qualname(cls)) + b"".join(_tagged(b"n", name) for name in names)
    fields = frozenset(names)

    def encode(h: Hasher, obj: Any, where: str) -> None:
        h.update(header)
        for name in names:
            feed(h, getattr(obj, name), where)
        if extra:
            _feed_dict(h, obj.__pydantic_extra__ or {}, where)
        else:
            held = getattr(obj, "__dict__", None) or {}
            _feed_dict(h, {k: v for k, v in held.items() if k not in fields}, where)

    return encode


# --- built-in registrations -----------------------------------------------------------------


def _timezone(tz: dt.tzinfo | None) -> Any:
    return None if tz is None else (qualname(type(tz)), str(tz))


register_hasher(enum.Enum, operator.attrgetter("value"))
register_hasher(dt.date, dt.date.isoformat)
register_hasher(dt.datetime, lambda t: (t.isoformat(), t.fold, _timezone(t.tzinfo)))
register_hasher(dt.time, lambda t: (t.isoformat(), t.fold, _timezone(t.tzinfo)))
register_hasher(dt.timedelta, lambda t: (t.days, t.seconds, t.microseconds))
register_hasher(fractions.Fraction, lambda f: (f.numerator, f.denominator))
register_hasher(range, lambda r: (r.start, r.stop, r.step))
register_hasher(slice, lambda s: (s.start, s.stop, s.step))
register_hasher(re.Pattern, lambda p: (p.pattern, p.flags))  # pydantic's form drops the flags
register_hasher(SecretStr, SecretStr.get_secret_value)  # pydantic's form is "**********"
register_hasher(SecretBytes, SecretBytes.get_secret_value)
register_hasher(np.memmap, lambda m: m.view(np.ndarray))  # its data, not its open map


@register_hasher(PurePath)
def _path_content(path: PurePath) -> tuple[str, bytes]:
    """The path as written and the content it names now (a file, a tree, or 'missing'):
    ``open`` reads a pure path too."""
    try:
        return str(path), file_digest(Path(path))
    except OSError:
        raise UnhashableValueError(f"file {str(path)!r} (unreadable)", path) from None


@register_hasher(np.random.Generator)
def _generator(generator: np.random.Generator) -> tuple:
    """A generator by its bit generator's kind and state: the numbers it draws next."""
    bits = generator.bit_generator
    return qualname(type(bits)), bits.state


register_hasher(np.random.RandomState, lambda r: r.get_state(legacy=False))


@register_hasher(np.ma.MaskedArray)
def _masked_array(arr: np.ma.MaskedArray) -> tuple:
    return arr.data, np.ma.getmaskarray(arr), arr.fill_value, arr.hardmask


def _elementwise(values: Any) -> Any:
    """A library container's values: a numeric array as it is; an object array (str, None,
    numbers, timestamps, ...) element by element, each under its own type."""
    if isinstance(values, np.ndarray) and values.dtype.hasobject:
        return ("elements", values.shape, values.ravel().tolist())
    return values


def _install_pandas() -> None:
    import pandas as pd

    def column(values: pd.Series | pd.Index) -> tuple:
        dtype = values.dtype
        if isinstance(dtype, np.dtype) and not dtype.hasobject:
            return str(dtype), values.to_numpy()
        if isinstance(dtype, pd.CategoricalDtype):
            return str(dtype), values.array
        return str(dtype), values.to_numpy(dtype=object).tolist()

    # an index's frequency says what comes next (shift, date_range from it, resample)
    register_hasher(
        pd.Index,
        lambda index: (list(index.names), column(index), getattr(index, "freqstr", None)),
    )
    register_hasher(pd.RangeIndex, lambda r: (r.name, r.start, r.stop, r.step))
    register_hasher(
        pd.MultiIndex, lambda m: (list(m.names), list(m.levels), [np.asarray(c) for c in m.codes])
    )
    register_hasher(pd.Categorical, lambda c: (c.categories, c.ordered, np.asarray(c.codes)))
    register_hasher(pd.Series, lambda s: (s.name, s.index, column(s), dict(s.attrs)))
    register_hasher(
        pd.DataFrame,
        lambda df: (
            df.columns,
            df.index,
            [column(df.iloc[:, i]) for i in range(df.shape[1])],
            dict(df.attrs),
        ),
    )
    register_hasher(pd.Timedelta, operator.attrgetter("value"))  # nanoseconds, not µs
    register_hasher(pd.Period, lambda p: (p.ordinal, p.freqstr))
    register_hasher(pd.Interval, lambda i: (i.left, i.right, i.closed))
    register_hasher(type(pd.NaT), lambda _: "NaT")
    register_hasher(type(pd.NA), lambda _: "NA")


def _install_xarray() -> None:
    import xarray as xr

    register_hasher(
        xr.Variable, lambda v: (v.dims, _elementwise(np.asarray(v.values)), dict(v.attrs))
    )
    register_hasher(
        xr.DataArray,
        lambda a: (
            a.name,
            a.variable,
            {name: coord.variable for name, coord in a.coords.items()},
        ),
    )
    register_hasher(
        xr.Dataset,
        lambda ds: (
            dict(ds.sizes),
            {name: var.variable for name, var in ds.data_vars.items()},
            {name: coord.variable for name, coord in ds.coords.items()},
            dict(ds.attrs),
        ),
    )


def _install_pint() -> None:
    from pint.facets.plain import PlainQuantity, PlainUnit

    def unit(u: PlainUnit) -> tuple:
        # a unit by its name, its size in base units (a registry may define "smoot", or
        # redefine it, otherwise than another) and the settings of its registry that change
        # what arithmetic on it gives
        registry = u._REGISTRY
        size = registry.Quantity(1, u).to_base_units()
        settings = (
            registry.autoconvert_offset_to_baseunit,
            registry.default_as_delta,
            registry.auto_reduce_dimensions,
            qualname(registry.non_int_type),
        )
        return str(u), size.magnitude, str(size.units), settings

    register_hasher(PlainQuantity, lambda q: (q.magnitude, unit(q.units)))
    register_hasher(PlainUnit, unit)


def _install_astropy() -> None:
    from astropy import units
    from astropy.time import Time

    def unit(u: units.UnitBase) -> tuple:
        # by its name and its exact size in SI bases: a redefined "smoot", and two scales
        # that print alike ("0.333333 m"), differ
        si = u.decompose()
        return u.to_string(), si.scale, [b.to_string() for b in si.bases], list(map(str, si.powers))

    register_hasher(
        units.Quantity,
        # a Longitude's wrap angle says which of its equal angles a stage reads
        lambda q: (np.asarray(q.value), unit(q.unit), getattr(q, "wrap_angle", None)),
    )
    register_hasher(units.UnitBase, unit)
    register_hasher(
        Time,
        lambda t: (
            np.asarray(t.jd1),
            np.asarray(t.jd2),
            t.scale,
            t.format,
            t.precision,
            t.in_subfmt,
            t.out_subfmt,
            t.location,
        ),
    )


def _install_scipy() -> None:
    from scipy import sparse

    def parts(m: Any) -> tuple:
        if m.format in ("csr", "csc", "bsr"):
            arrays = (m.data, m.indices, m.indptr)
        elif m.format == "dia":
            arrays = (m.data, m.offsets)
        else:  # coo, and dok/lil through coo
            coo = m.tocoo()
            arrays = (coo.data, *getattr(coo, "coords", (coo.row, coo.col)))
        return m.format, m.shape, str(m.dtype), [np.asarray(a) for a in arrays]

    register_hasher(sparse.spmatrix, parts)
    register_hasher(sparse.sparray, parts)

    # interpolators by what they evaluate from: knots, coefficients, order, extrapolation
    # (scipy's own attribute names; on a scipy without them the value is unhashable, and so
    # uncacheable, never hashed short)
    from scipy import interpolate

    register_hasher(
        interpolate.interp1d,
        lambda f: (f.x, f.y, f._kind, f.axis, f.bounds_error, f._fill_value_orig, f._extrapolate),
    )
    for piecewise in (interpolate.PPoly, interpolate.BPoly):  # CubicSpline, Pchip, Akima, ...
        register_hasher(piecewise, lambda p: (p.c, p.x, p.extrapolate, p.axis))
    register_hasher(interpolate.BSpline, lambda b: (b.t, b.c, b.k, b.extrapolate, b.axis))
    register_hasher(
        interpolate.RegularGridInterpolator,
        lambda r: (r.grid, r.values, r.method, r.bounds_error, r.fill_value),
    )
    register_hasher(interpolate.UnivariateSpline, lambda u: (u._eval_args, u.ext, u._data))


register_lazy("pandas", _install_pandas)
register_lazy("xarray", _install_xarray)
register_lazy("pint", _install_pint)
register_lazy("astropy", _install_astropy)
register_lazy("scipy", _install_scipy)


# --- finding an unhashable value ------------------------------------------------------------


def _parts(value: Any) -> Iterator[tuple[str | int, Any]]:
    """The named parts of a value that hashing walks into: a model's or dataclass's fields,
    a mapping's items, a sequence's items."""
    if isinstance(value, BaseModel):
        yield from ((name, getattr(value, name)) for name in type(value).__pydantic_fields__)
        yield from (value.__pydantic_extra__ or {}).items()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield from ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, Mapping):
        yield from value.items()
    elif isinstance(value, list | tuple):
        yield from enumerate(value)


def _steps_to_failure(value: Any, target: Any) -> list[str | int]:
    """The path to the first part of ``value`` that fails to hash, down to ``target`` or to
    a part that cannot be walked into (a DataFrame holding ``target``, say). Looked for only
    once hashing has failed, so the hot path carries no paths."""
    if value is target:
        return []
    for key, part in _parts(value):
        try:
            digest(part)
        except UnhashableValueError:
            return [key, *_steps_to_failure(part, target)]
    return []


def _located(
    exc: UnhashableValueError, where: str, root: Any, *, in_roots: bool = False
) -> UnhashableValueError:
    """``exc`` naming ``where`` and the path of its value inside ``root`` (inside one of the
    values ``root`` lists, with ``in_roots``)."""
    steps = _steps_to_failure(root, exc.value)
    if in_roots and steps:
        steps = steps[1:]
    path = "".join(f"[{s}]" if type(s) is int else f".{s}" for s in steps)
    return UnhashableValueError(where, exc.value, path.lstrip(".") or None)


# --- configs --------------------------------------------------------------------------------


def config_hash(cfg: Any, where: str = "config") -> str:
    """Hex digest of a config's whole validated value: its concrete class and every field's raw
    value (nested models by their own concrete class, arrays by content, paths by the file
    content they name)."""
    known = _CONFIG_DIGESTS.get(cfg)
    if known is not None:
        return known
    h = xxhash.xxh3_128(b"K")
    try:
        feed(h, cfg, where)
    except UnhashableValueError as exc:
        raise _located(exc, where, cfg) from None
    hexdigest = h.hexdigest()
    _CONFIG_DIGESTS.put(cfg, hexdigest)
    return hexdigest


def config_field_digests(cfg: Any, where: str = "config") -> dict[str, str]:
    """Each top-level field's hex digest, to say which field made ``config_hash`` change; worked
    out only when explaining a stale node. A field naming a file digests the file as it is
    now, so when ``config_hash`` changed but no field digest did, a file named by a field
    changed (see ``file_references``)."""
    return {str(name): hexdigest(value, f"{where} field {name!r}") for name, value in _parts(cfg)}


def file_references(value: Any) -> list[Path]:
    """The filesystem paths inside ``value`` (a config field, say), which hash by the content
    of the files they name; empty when ``value`` names no file."""
    if isinstance(value, Path):
        return [value]
    return [path for _, part in _parts(value) for path in file_references(part)]


IMMUTABLE_LEAVES = frozenset({type(None), bool, int, float, complex, str, bytes})
_CONTAINERS = (dict, list, set)


def immutable(value: Any) -> bool:
    """Whether ``value`` can never change: a number, string or bytes, or a tuple or frozenset
    of such values (so a digest of it stays true as long as the object is the same)."""
    if type(value) in IMMUTABLE_LEAVES:
        return True
    return type(value) in (tuple, frozenset) and all(immutable(item) for item in value)


class _ConfigDigests:
    """A memo of ``config_hash`` (plans and pipelines hash every config on every run) for the
    pydantic configs whose content cannot change behind our back: every field holds an
    immutable value (numbers, strings, tuples of them) or an empty container such as the
    default ``tags={}``. Such a config is unchanged while its fields are the very same
    objects and those containers are still empty, which ``get`` checks. Configs holding
    arrays, non-empty containers, nested models or paths (whose files may change) are hashed
    afresh every time. An entry goes when its config is garbage collected."""

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
        if not isinstance(cfg, BaseModel):
            return
        fields, extra = tuple(cfg.__dict__.values()), cfg.__pydantic_extra__
        containers = tuple(v for v in (*fields, extra) if type(v) in _CONTAINERS)
        if any(containers) or not all(
            immutable(v) for v in (*fields, extra) if type(v) not in _CONTAINERS
        ):
            return  # its content may change in place: no memo
        key = id(cfg)
        ref = weakref.ref(cfg, lambda _, key=key: self._entries.pop(key, None))
        self._entries[key] = (ref, type(cfg), fields, extra, containers, hexdigest)


_CONFIG_DIGESTS = _ConfigDigests()


def callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


# names phys-pipeline 2.0.0 code imports from here (hash_model, hash_policy, ...)
__getattr__ = served_from(__name__, "hashing")
