"""The hashing registry: registered types, the lazy library registrations and the built-in
hashers for pandas, xarray, pint, astropy, scipy.sparse, enums, datetimes and paths. Each test
tries to make two different values share a digest."""

from __future__ import annotations

import datetime as dt
import enum
import subprocess
import sys
import zoneinfo

import numpy as np
import pytest

from phys_pipeline.errors import UnhashableValueError
from phys_pipeline.hashing import digest, register_hasher, register_lazy


def distinct(*values: object) -> bool:
    """Whether the values have pairwise different digests."""
    return len({digest(v) for v in values}) == len(values)


# --- the registry ---------------------------------------------------------------------------


class Lattice:
    def __init__(self, spacing: float, sites: int) -> None:
        self.spacing, self.sites = spacing, sites


class Chain(Lattice):
    pass


class Ring:
    def __init__(self, spacing: float, sites: int) -> None:
        self.spacing, self.sites = spacing, sites


register_hasher(Lattice, lambda lat: (lat.spacing, lat.sites))


@register_hasher(Ring)
def _ring(ring: Ring) -> tuple[float, int]:
    return ring.spacing, ring.sites


def test_a_registered_type_hashes_by_its_normalised_value():
    assert digest(Lattice(0.5, 8)) == digest(Lattice(0.5, 8))
    assert distinct(Lattice(0.5, 8), Lattice(0.5, 9), Lattice(0.25, 8))


def test_a_subclass_uses_its_base_hasher_under_its_own_name():
    assert digest(Chain(0.5, 8)) == digest(Chain(0.5, 8))
    assert distinct(Chain(0.5, 8), Lattice(0.5, 8))


def test_two_types_normalising_to_the_same_data_never_collide():
    assert distinct(Lattice(0.5, 8), Ring(0.5, 8), (0.5, 8))


def test_a_later_registration_replaces_an_earlier_resolution():
    class Probe:
        def __init__(self, gain: float) -> None:
            self.gain = gain

    with pytest.raises(UnhashableValueError):
        digest(Probe(1.0))
    register_hasher(Probe, lambda p: p.gain)
    assert distinct(Probe(1.0), Probe(2.0))


def test_plain_builtin_types_cannot_be_overridden():
    with pytest.raises(TypeError):
        register_hasher(float, lambda x: 0.0)


def test_a_lazy_registration_waits_for_a_value_of_its_library():
    installed = []
    register_lazy("test_hashing_registry", lambda: installed.append(True))
    digest(1.0)
    assert installed == []

    class Local:  # defined in this module: its top-level module is test_hashing_registry
        pass

    with pytest.raises(UnhashableValueError):
        digest(Local())
    assert installed == [True]


def test_import_phys_pipeline_imports_no_optional_library():
    code = (
        "import sys, phys_pipeline, phys_pipeline.hashing, phys_pipeline.dag\n"
        "from phys_pipeline.hashing import digest\n"
        "digest({'x': [1.0, 'a']})\n"
        "print(sorted(m for m in ('pandas', 'xarray', 'pint', 'astropy', 'scipy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


DIGEST_IN_A_PROCESS = """
import pandas as pd, xarray as xr
from phys_pipeline.hashing import digest
frame = pd.DataFrame({"E": [1.0, 2.0], "label": ["a", None]}, index=pd.Index([3, 4], name="k"))
print(digest(frame).hex(), digest(xr.DataArray([1.0], dims="x", coords={"x": ["a"]})).hex())
"""


def test_library_digests_are_the_same_in_every_process():
    pytest.importorskip("pandas")
    pytest.importorskip("xarray")
    runs = {
        subprocess.run(
            [sys.executable, "-c", DIGEST_IN_A_PROCESS], capture_output=True, text=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1 and "" not in runs


# --- standard library -----------------------------------------------------------------------


class Polarisation(enum.Enum):
    S = "s"
    P = "p"


class Axis(enum.IntEnum):
    X = 1


class OtherAxis(enum.IntEnum):
    X = 1


def test_enums_hash_by_their_class_and_value():
    assert distinct(Polarisation.S, Polarisation.P, "s", Axis.X, OtherAxis.X, 1)


def test_datetimes_hash_their_time_zone_and_fold():
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    plus_one = dt.timezone(dt.timedelta(hours=1))
    naive = dt.datetime(2024, 1, 1, 12)
    assert distinct(
        naive,
        naive.replace(tzinfo=paris),
        naive.replace(tzinfo=plus_one),
        naive.replace(microsecond=1),
        naive.replace(fold=1),
        naive.date(),
        naive.time(),
    )


def test_times_and_timedeltas_hash_by_value():
    assert distinct(dt.time(1, 2), dt.time(1, 2, 3), dt.timedelta(seconds=1), dt.timedelta(1))
    assert digest(dt.timedelta(hours=24)) == digest(dt.timedelta(days=1))


# --- pandas ---------------------------------------------------------------------------------


@pytest.fixture
def pd():
    return pytest.importorskip("pandas")


def test_dataframes_differ_in_values_columns_index_and_dtypes(pd):
    base = pd.DataFrame({"E": [1.0, 2.0], "n": [1, 2]})
    assert digest(base) == digest(base.copy())
    assert distinct(
        base,
        base.assign(E=[1.0, 2.5]),
        base.rename(columns={"E": "F"}),
        base.set_axis([5, 6], axis=0),
        base.astype({"n": "int32"}),
        base.rename_axis("shot"),
        base[["n", "E"]],
    )


def test_object_columns_hash_element_by_element(pd):
    labels = pd.DataFrame({"label": pd.Series(["a", None, 1], dtype=object)})
    assert digest(labels) == digest(labels.copy())
    assert distinct(
        labels,
        pd.DataFrame({"label": pd.Series(["a", None, 2], dtype=object)}),
        pd.DataFrame({"label": pd.Series(["a", None, "1"], dtype=object)}),
        pd.DataFrame({"label": pd.Series(["a", float("nan"), 1], dtype=object)}),
    )


def test_series_differ_in_name_index_and_categories(pd):
    series = pd.Series(["a", "b"], name="mode")
    assert distinct(
        series,
        series.rename("other"),
        series.set_axis([1, 2]),
        series.astype("category"),
        pd.Series(pd.Categorical(["a", "b"], categories=["b", "a"]), name="mode"),
        pd.Series(pd.Categorical(["a", "b"], ordered=True), name="mode"),
    )


def test_a_multi_index_hashes_its_levels_codes_and_names(pd):
    index = pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["shot", "arm"])
    assert distinct(
        index,
        index.set_names(["shot", "side"]),
        pd.MultiIndex.from_tuples([(1, "a"), (2, "c")], names=["shot", "arm"]),
        pd.Index([(1, "a"), (2, "b")], tupleize_cols=False),
    )


def test_nullable_and_tz_aware_columns_hash_by_value(pd):
    assert distinct(
        pd.Series([1, None], dtype="Int64"),
        pd.Series([1, 2], dtype="Int64"),
        pd.Series([1.0, None], dtype="Float64"),
    )
    times = pd.Series(pd.date_range("2024-01-01", periods=2, tz="UTC"))
    assert distinct(times, times.dt.tz_convert("Europe/Paris"), times.dt.tz_localize(None))


def test_timestamps_and_timedeltas_keep_nanoseconds(pd):
    assert distinct(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-01T00:00:00.000000001"))
    assert distinct(pd.Timedelta(1, "ns"), pd.Timedelta(0), pd.NaT, pd.NA, None)


def test_a_range_index_does_not_collide_with_its_values(pd):
    assert distinct(pd.RangeIndex(3), pd.Index([0, 1, 2]), pd.RangeIndex(0, 3, name="k"))


# --- xarray ---------------------------------------------------------------------------------


@pytest.fixture
def xr():
    return pytest.importorskip("xarray")


def test_data_arrays_differ_in_data_dims_coords_attrs_and_name(xr):
    base = xr.DataArray(np.ones(2), dims=["x"], coords={"x": [0.0, 1.0]}, attrs={"units": "V"})
    assert digest(base) == digest(base.copy(deep=True))
    assert distinct(
        base,
        base * 2,
        base.rename({"x": "y"}),
        base.assign_coords(x=[0.0, 2.0]),
        base.assign_coords(t=("x", [5, 6])),
        base.assign_attrs(units="mV"),
        base.rename("signal"),
    )


def test_datasets_differ_in_variables_and_attrs(xr):
    base = xr.Dataset({"E": ("x", [1.0, 2.0])}, coords={"x": ["a", "b"]})
    assert distinct(
        base,
        base.rename({"E": "B"}),
        base.assign(E=("x", [1.0, 3.0])),
        base.assign_coords(x=["a", "c"]),
        base.assign_attrs(run=1),
    )


# --- units ----------------------------------------------------------------------------------


def test_pint_quantities_hash_magnitude_and_unit():
    pint = pytest.importorskip("pint")
    ureg = pint.UnitRegistry()
    assert digest(ureg.Quantity(1.0, "m")) == digest(ureg.Quantity(1.0, "m"))
    assert distinct(
        ureg.Quantity(1.0, "m"),
        ureg.Quantity(1.0, "mm"),
        ureg.Quantity(2.0, "m"),
        ureg.Quantity(np.array([1.0]), "m"),
        1.0,
    )


def test_astropy_quantities_hash_value_and_unit():
    units = pytest.importorskip("astropy.units")
    assert digest(1.0 * units.m) == digest(1.0 * units.m)
    assert distinct(1.0 * units.m, 1.0 * units.s, 2.0 * units.m, np.ones(2) * units.m, np.ones(2))


# --- scipy.sparse ---------------------------------------------------------------------------


def test_sparse_matrices_hash_format_shape_dtype_and_entries():
    sparse = pytest.importorskip("scipy.sparse")
    dense = np.eye(3)
    changed = dense.copy()
    changed[0, 2] = 5.0
    csr = sparse.csr_matrix(dense)
    assert digest(csr) == digest(sparse.csr_matrix(dense))
    assert distinct(
        csr,
        sparse.csr_matrix(changed),
        sparse.csc_matrix(dense),
        sparse.csr_array(dense),
        sparse.coo_matrix(dense),
        sparse.csr_matrix(dense.astype(np.float32)),
        sparse.csr_matrix(np.eye(3, 4)),
        sparse.dok_matrix(dense),
        sparse.dia_matrix(dense),
    )
