"""Common physics data types are stored as JSON + arrays, never pickled, and come back equal:
same type, dtypes, index, coordinates, units and attrs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phys_pipeline.cache import DiskStore
from phys_pipeline.cache.codec import from_frame, to_frame
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.types import SimpleState, StageResult

pd = pytest.importorskip("pandas")
xr = pytest.importorskip("xarray")
pint = pytest.importorskip("pint")
units = pytest.importorskip("astropy.units")
sparse = pytest.importorskip("scipy.sparse")

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"


def frame() -> Any:
    times = pd.date_range("2024-01-01", periods=4, freq="D", name="t")
    return pd.DataFrame(
        {
            "E": np.linspace(0.0, 1.0, 4),
            "n": np.arange(4, dtype=np.int16),
            "label": ["a", "b", None, "d"],
            "kind": pd.Categorical(["x", "y", "x", "x"], ordered=True),
            "mixed": np.array([1, "two", 3.5, None], dtype=object),
        },
        index=times,
    ).assign(**{"ok": [True, False, True, True]})


VALUES: dict[str, Callable[[], Any]] = {
    "dataframe": lambda: frame().rename_axis(columns="quantity").pipe(_with_attrs),
    "series": lambda: pd.Series(
        np.arange(3.0), index=pd.Index(["a", "b", "c"], name="k"), name="amp"
    ),
    "multiindex series": lambda: pd.Series(
        [1.0, 2.0], index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["l", "n"])
    ),
    "range index": lambda: pd.RangeIndex(2, 20, 3, name="shot"),
    "timedelta index": lambda: pd.timedelta_range("1s", periods=3, freq="s"),
    "dataarray": lambda: xr.DataArray(
        np.arange(6.0).reshape(2, 3),
        dims=("x", "y"),
        coords={
            "x": [10, 20],
            "y": ("y", np.array([0.1, 0.2, 0.3]), {"units": "m"}),
            "label": ("x", np.array(["p", "q"])),
        },
        name="E",
        attrs={"units": "V/m", "shot": 3},
    ),
    "dataset": lambda: xr.Dataset(
        {"E": (("t",), np.arange(3.0), {"units": "V"}), "n": (("t",), np.arange(3))},
        coords={"t": [0.0, 1.0, 2.0]},
        attrs={"run": 3},
    ),
    "pint array": lambda: pint.get_application_registry().Quantity(np.arange(3.0), "m/s"),
    "pint scalar": lambda: pint.get_application_registry().Quantity(2.5, "fs"),
    "astropy int array": lambda: units.Quantity(np.arange(3), units.km / units.s, dtype=int),
    "astropy scalar": lambda: 3.0 * units.nm,
    "csr_matrix": lambda: sparse.csr_matrix(np.diag([1.0, 0.0, 2.0])),
    "csc_array": lambda: sparse.csc_array(np.eye(3, dtype=np.complex64)),
    "coo_array": lambda: sparse.coo_array(np.eye(3, dtype=np.int32)),
    "masked array": lambda: np.ma.MaskedArray([1.0, 2.0, 3.0], mask=[0, 1, 0], fill_value=-1.0),
    "masked, no mask": lambda: np.ma.MaskedArray(np.arange(3), hard_mask=True),
    "structured array": lambda: np.array([(1, 2.0)], dtype=[("n", "<i4"), ("x", "<f8")]),
    "record array": lambda: np.rec.fromarrays([np.arange(2), np.arange(2.0)], names="a,b"),
}


def _with_attrs(df: Any) -> Any:
    df.attrs["detector"] = "ccd"
    return df


def assert_equal(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want, check_freq=True)
        assert got.attrs == want.attrs
    elif isinstance(want, pd.Series):
        pd.testing.assert_series_equal(got, want)
    elif isinstance(want, pd.Index):
        pd.testing.assert_index_equal(got, want, exact=True)
        assert got.freq == want.freq if hasattr(want, "freq") else True
    elif isinstance(want, xr.DataArray | xr.Dataset):
        xr.testing.assert_identical(got, want)
    elif isinstance(want, pint.Quantity):
        assert got.units == want.units and str(got.units) == str(want.units)
        np.testing.assert_array_equal(got.magnitude, want.magnitude)
    elif isinstance(want, units.Quantity):
        assert got.unit.to_string() == want.unit.to_string() and got.dtype == want.dtype
        np.testing.assert_array_equal(got.value, want.value)
    elif sparse.issparse(want):
        assert got.dtype == want.dtype and got.shape == want.shape and (got != want).nnz == 0
    elif isinstance(want, np.ma.MaskedArray):
        assert got.dtype == want.dtype and got.hardmask == want.hardmask
        np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(want))
        assert (np.ma.getmask(got) is np.ma.nomask) == (np.ma.getmask(want) is np.ma.nomask)
        np.testing.assert_array_equal(got.filled(), want.filled())
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("make", VALUES.values(), ids=VALUES.keys())
def test_disk_round_trip_is_equal_and_pickle_free(make: Callable[[], Any], tmp_path: Path) -> None:
    cache = DiskStore(tmp_path / "cache")
    cache.put(KEY, StageResult(SimpleState({"v": make()}, {"also": make()})))
    entry = entry_path(cache.root, KEY)
    assert not (entry / "blob.pkl").exists()
    back = cache.get(KEY)
    assert back is not None
    assert_equal(back.state.payload["v"], make())
    assert_equal(back.state.meta["also"], make())


@pytest.mark.parametrize("make", VALUES.values(), ids=VALUES.keys())
def test_frame_round_trip_is_equal_and_pickle_free(make: Callable[[], Any]) -> None:
    signer = EntrySigner()
    frame_bytes = to_frame(KEY, StageResult(SimpleState(make())), signer)
    assert b'"blob":null' in frame_bytes.replace(b" ", b"")
    assert_equal(from_frame(KEY, frame_bytes, signer).state.payload, make())


def test_decoded_arrays_stay_read_only(tmp_path: Path) -> None:
    cache = DiskStore(tmp_path / "cache")
    cache.put(KEY, StageResult(SimpleState(VALUES["dataarray"]())))
    with pytest.raises(ValueError, match="read-only"):
        cache.get(KEY).state.payload.values[0, 0] = 99.0


def test_what_these_encodings_cannot_hold_is_still_pickled(tmp_path: Path) -> None:
    tz_aware = pd.Series(pd.date_range("2024-01-01", periods=2, tz="Europe/Paris"))
    cache = DiskStore(tmp_path / "cache")
    cache.put(KEY, StageResult(SimpleState(tz_aware)))
    assert (entry_path(cache.root, KEY) / "blob.pkl").exists()
    pd.testing.assert_series_equal(cache.get(KEY).state.payload, tz_aware)


def test_importing_the_package_imports_none_of_these_libraries() -> None:
    code = (
        "import sys, phys_pipeline, phys_pipeline.cache, phys_pipeline.cache.codec\n"
        "loaded = {'pandas', 'xarray', 'pint', 'astropy', 'scipy'} & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_entry_naming_a_module_outside_the_table_is_a_miss(tmp_path: Path) -> None:
    from phys_pipeline.cache.codec import EntryRejected, _from_tree

    with pytest.raises((EntryRejected, ValueError), match="unknown data kind"):
        _from_tree({"$data": "os.system", "v": "echo"}, [])
