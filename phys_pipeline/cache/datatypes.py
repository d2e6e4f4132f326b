"""Common physics data types as JSON + arrays instead of pickles: numpy masked and record
arrays, pandas DataFrame/Series/Index, xarray DataArray/Dataset, pint and astropy quantities,
scipy.sparse CSR/CSC/COO matrices and arrays.

Each type is a node ``{"$data": "<kind>", "v": ...}`` whose arrays go to the entry's ``.npy``
files like any other (``codec`` does the rest). None of these libraries is imported to encode:
a value can only be one of their types if its module is already in ``sys.modules``. Decoding
imports a library only when an (authenticated) entry names one of the kinds below, never a
module an entry names itself. A value whose structure these encodings cannot hold exactly
(object columns of arbitrary objects, tz-aware or nullable pandas dtypes, multi-indexed xarray
coordinates, lazily loaded data, quantities from a non-default pint registry, ...) raises
NotJsonable, and ``codec`` pickles it as before.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NotJsonable", "decode_data", "encode_data"]

Tree = Callable[[Any], Any]  # encodes (or decodes) a child value


class NotJsonable(Exception):
    """The value needs pickle (raised while trying the JSON encoding)."""


@dataclass(frozen=True)
class _Kind:
    module: str  # the library whose types these are (checked in sys.modules, imported on decode)
    matches: Callable[[Any, Any], bool]  # (value, module) -> is this kind
    encode: Callable[[Any, Any, Tree], Any]  # (value, module, child encoder) -> JSON
    decode: Callable[[Any, Any, Tree], Any]  # (JSON, module, child decoder) -> value


def _plain(arr: Any) -> np.ndarray:
    if type(arr) is not np.ndarray:
        raise NotJsonable(type(arr))
    return arr


# --- numpy ----------------------------------------------------------------------------------


def _masked_encode(m: Any, np_: Any, sub: Tree) -> Any:
    mask = np_.ma.getmask(m)
    return {
        "data": sub(_plain(m.data)),
        "mask": None if mask is np_.ma.nomask else sub(_plain(mask)),
        "fill_value": sub(m.fill_value),
        "hard_mask": m.hardmask,
    }


def _masked_decode(v: Any, np_: Any, sub: Tree) -> Any:
    mask = np_.ma.nomask if v["mask"] is None else sub(v["mask"])
    return np_.ma.MaskedArray(
        sub(v["data"]), mask=mask, fill_value=sub(v["fill_value"]), hard_mask=v["hard_mask"]
    )


# --- pandas ---------------------------------------------------------------------------------


def _values_encode(values: Any, pd: Any, sub: Tree) -> Any:
    """A Series' or Index's values: numpy dtypes as arrays, strings and categoricals as data."""
    dtype = values.dtype
    if isinstance(dtype, np.dtype) and not dtype.hasobject:
        return {"array": sub(_plain(values.to_numpy(copy=False)))}
    if isinstance(dtype, np.dtype):  # object: Python values JSON can hold exactly
        return {"objects": sub(list(values))}
    if type(dtype) is pd.StringDtype:
        na = "nan" if dtype.na_value is not pd.NA else "NA"
        strings = values.to_numpy(dtype=object, na_value=None).tolist()
        return {"strings": sub(strings), "storage": dtype.storage, "na": na}
    if type(dtype) is pd.CategoricalDtype:
        codes = values.cat.codes if isinstance(values, pd.Series) else values.codes
        return {
            "codes": sub(_plain(np.asarray(codes))),
            "categories": _index_encode(dtype.categories, pd, sub),
            "ordered": bool(dtype.ordered),
        }
    raise NotJsonable(dtype)


def _values_decode(v: Any, pd: Any, sub: Tree) -> Any:
    if "array" in v:
        return sub(v["array"])
    if "objects" in v:
        objects = sub(v["objects"])
        out = np.empty(len(objects), dtype=object)
        out[:] = objects
        return out
    if "strings" in v:
        dtype = pd.StringDtype(v["storage"], na_value=np.nan if v["na"] == "nan" else pd.NA)
        return pd.array(sub(v["strings"]), dtype=dtype)
    categories = _index_decode(v["categories"], pd, sub)
    dtype = pd.CategoricalDtype(categories, ordered=v["ordered"])
    return pd.Categorical.from_codes(sub(v["codes"]), dtype=dtype)


def _index_encode(index: Any, pd: Any, sub: Tree) -> Any:
    if type(index) is pd.RangeIndex:
        return {"range": [index.start, index.stop, index.step], "name": sub(index.name)}
    if type(index) is pd.MultiIndex:
        return {
            "levels": [_index_encode(level, pd, sub) for level in index.levels],
            "codes": [sub(_plain(np.asarray(codes))) for codes in index.codes],
            "names": sub(list(index.names)),
        }
    if type(index) not in (pd.Index, pd.DatetimeIndex, pd.TimedeltaIndex, pd.CategoricalIndex):
        raise NotJsonable(type(index))
    freq = getattr(index, "freqstr", None)
    return {"values": _values_encode(index, pd, sub), "name": sub(index.name), "freq": freq}


def _index_decode(v: Any, pd: Any, sub: Tree) -> Any:
    if "range" in v:
        return pd.RangeIndex(*v["range"], name=sub(v["name"]))
    if "levels" in v:
        levels = [_index_decode(level, pd, sub) for level in v["levels"]]
        codes = [sub(c) for c in v["codes"]]
        return pd.MultiIndex(levels=levels, codes=codes, names=sub(v["names"]))
    index = pd.Index(_values_decode(v["values"], pd, sub), name=sub(v["name"]))
    if v["freq"] is None:
        return index
    with_freq = pd.DatetimeIndex if index.dtype.kind == "M" else pd.TimedeltaIndex
    return with_freq(index, freq=v["freq"])


def _series_encode(s: Any, pd: Any, sub: Tree) -> Any:
    return {
        "values": _values_encode(s, pd, sub),
        "index": _index_encode(s.index, pd, sub),
        "name": sub(s.name),
        "attrs": sub(dict(s.attrs)),
    }


def _series_decode(v: Any, pd: Any, sub: Tree) -> Any:
    values = _values_decode(v["values"], pd, sub)
    index = _index_decode(v["index"], pd, sub)
    series = pd.Series(values, index=index, name=sub(v["name"]), copy=False)
    series.attrs.update(sub(v["attrs"]))
    return series


def _frame_encode(df: Any, pd: Any, sub: Tree) -> Any:
    return {
        "columns": [_values_encode(df.iloc[:, i], pd, sub) for i in range(df.shape[1])],
        "names": _index_encode(df.columns, pd, sub),
        "index": _index_encode(df.index, pd, sub),
        "attrs": sub(dict(df.attrs)),
    }


def _frame_decode(v: Any, pd: Any, sub: Tree) -> Any:
    columns = {i: _values_decode(c, pd, sub) for i, c in enumerate(v["columns"])}
    frame = pd.DataFrame(columns, index=_index_decode(v["index"], pd, sub), copy=False)
    frame.columns = _index_decode(v["names"], pd, sub)
    frame.attrs.update(sub(v["attrs"]))
    return frame


# --- xarray ---------------------------------------------------------------------------------


def _variable_encode(var: Any, sub: Tree) -> Any:
    return {
        "dims": sub(list(var.dims)),
        "data": sub(_plain(var.data)),  # dask or other lazy data: pickled
        "attrs": sub(dict(var.attrs)),
    }


def _variable_decode(v: Any, sub: Tree) -> tuple:
    return (tuple(sub(v["dims"])), sub(v["data"]), sub(v["attrs"]))


def _coords_encode(obj: Any, xr: Any, sub: Tree) -> list:
    for index in obj.xindexes.values():
        if type(index) is not xr.indexes.PandasIndex:  # multi-indexes, custom indexes
            raise NotJsonable(type(index))
    return [[sub(name), _variable_encode(c.variable, sub)] for name, c in obj.coords.items()]


def _coords_decode(pairs: Any, sub: Tree) -> dict:
    return {sub(name): _variable_decode(var, sub) for name, var in pairs}


def _data_array_encode(da: Any, xr: Any, sub: Tree) -> Any:
    return {
        "var": _variable_encode(da.variable, sub),
        "coords": _coords_encode(da, xr, sub),
        "name": sub(da.name),
    }


def _data_array_decode(v: Any, xr: Any, sub: Tree) -> Any:
    dims, data, attrs = _variable_decode(v["var"], sub)
    coords = _coords_decode(v["coords"], sub)
    return xr.DataArray(data, coords=coords, dims=dims, name=sub(v["name"]), attrs=attrs)


def _dataset_encode(ds: Any, xr: Any, sub: Tree) -> Any:
    return {
        "data_vars": [[sub(n), _variable_encode(d.variable, sub)] for n, d in ds.data_vars.items()],
        "coords": _coords_encode(ds, xr, sub),
        "attrs": sub(dict(ds.attrs)),
    }


def _dataset_decode(v: Any, xr: Any, sub: Tree) -> Any:
    data_vars = _coords_decode(v["data_vars"], sub)
    return xr.Dataset(data_vars, coords=_coords_decode(v["coords"], sub), attrs=sub(v["attrs"]))


# --- units ----------------------------------------------------------------------------------


def _pint_matches(q: Any, pint: Any) -> bool:
    return isinstance(q, pint.Quantity) and q._REGISTRY is pint.get_application_registry().get()


def _pint_encode(q: Any, pint: Any, sub: Tree) -> Any:
    units = str(q.units)
    if q._REGISTRY.Unit(units) != q.units:
        raise NotJsonable(units)
    return {"magnitude": sub(q.magnitude), "units": units}


def _pint_decode(v: Any, pint: Any, sub: Tree) -> Any:
    return pint.get_application_registry().Quantity(sub(v["magnitude"]), v["units"])


def _astropy_matches(q: Any, units: Any) -> bool:
    return type(q) is units.Quantity and "info" not in q.__dict__


def _astropy_encode(q: Any, units: Any, sub: Tree) -> Any:
    unit = q.unit.to_string()
    if units.Unit(unit) != q.unit or units.Unit(unit).to_string() != unit:
        raise NotJsonable(unit)
    return {"value": sub(q.view(np.ndarray)), "unit": unit}


def _astropy_decode(v: Any, units: Any, sub: Tree) -> Any:
    value = sub(v["value"])
    return units.Quantity(value, units.Unit(v["unit"]), dtype=value.dtype, copy=False)


# --- scipy.sparse ---------------------------------------------------------------------------

_SPARSE = ("csr_matrix", "csc_matrix", "coo_matrix", "csr_array", "csc_array", "coo_array")


def _sparse_matches(m: Any, sparse: Any) -> bool:
    name = type(m).__name__
    return name in _SPARSE and type(m) is getattr(sparse, name)


def _sparse_encode(m: Any, sparse: Any, sub: Tree) -> Any:
    if m.format == "coo":
        parts = [sub(_plain(m.data)), [sub(_plain(c)) for c in m.coords]]
    else:
        parts = [sub(_plain(m.data)), sub(_plain(m.indices)), sub(_plain(m.indptr))]
    return {"class": type(m).__name__, "parts": parts, "shape": list(m.shape)}


def _sparse_decode(v: Any, sparse: Any, sub: Tree) -> Any:
    name = v["class"]
    if name not in _SPARSE:
        raise ValueError(f"unknown sparse class {name!r}")
    if name.startswith("coo"):
        data, coords = v["parts"]
        parts: tuple = (sub(data), tuple(sub(c) for c in coords))
    else:
        parts = tuple(sub(p) for p in v["parts"])
    return getattr(sparse, name)(parts, shape=tuple(v["shape"]), copy=False)


# --- the table ------------------------------------------------------------------------------


def _exact(name: str) -> Callable[[Any, Any], bool]:
    """Matches values whose type is exactly ``module.<name>`` (dotted names allowed)."""

    def matches(value: Any, module: Any) -> bool:
        target = module
        for part in name.split("."):
            target = getattr(target, part)
        return type(value) is target

    return matches


_KINDS: dict[str, _Kind] = {
    "numpy.ma.MaskedArray": _Kind(
        "numpy", _exact("ma.MaskedArray"), _masked_encode, _masked_decode
    ),
    "numpy.recarray": _Kind(
        "numpy",
        _exact("recarray"),
        lambda a, np_, sub: sub(a.view(np_.ndarray)),
        lambda v, np_, sub: sub(v).view(np_.recarray),
    ),
    "pandas.DataFrame": _Kind("pandas", _exact("DataFrame"), _frame_encode, _frame_decode),
    "pandas.Series": _Kind("pandas", _exact("Series"), _series_encode, _series_decode),
    "pandas.Index": _Kind(
        "pandas",
        lambda value, pd: isinstance(value, pd.Index),
        _index_encode,
        _index_decode,
    ),
    "xarray.DataArray": _Kind(
        "xarray", _exact("DataArray"), _data_array_encode, _data_array_decode
    ),
    "xarray.Dataset": _Kind("xarray", _exact("Dataset"), _dataset_encode, _dataset_decode),
    "pint.Quantity": _Kind("pint", _pint_matches, _pint_encode, _pint_decode),
    "astropy.Quantity": _Kind("astropy.units", _astropy_matches, _astropy_encode, _astropy_decode),
    "scipy.sparse": _Kind("scipy.sparse", _sparse_matches, _sparse_encode, _sparse_decode),
}


def encode_data(value: Any, sub: Tree) -> Any:
    """``{"$data": kind, "v": ...}`` for a value of a known kind whose library is loaded, else
    None; NotJsonable if it is of a known kind that these encodings cannot hold exactly."""
    for name, kind in _KINDS.items():
        module = sys.modules.get(kind.module)
        if module is not None and kind.matches(value, module):
            return {"$data": name, "v": kind.encode(value, module, sub)}
    return None


def decode_data(name: Any, value: Any, sub: Tree) -> Any:
    """The value of a ``$data`` node, importing its library (one of ours) on first use."""
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"unknown data kind {name!r:.80}")
    return kind.decode(value, importlib.import_module(kind.module), sub)
