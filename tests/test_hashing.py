"""Canonical, typed hashing of values, arrays, configs and code."""

from __future__ import annotations

import copy
import datetime as dt
import enum
import itertools
import os
import struct
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel, Field

from phys_pipeline.dag import make_plan
from phys_pipeline.errors import UnhashableValueError
from phys_pipeline.fingerprint import code_version
from phys_pipeline.hashing import callable_name, config_hash, digest, hexdigest
from phys_pipeline.types import NodeSpec, SimpleState, StageConfig, hash_ndarray, hash_small

# --- typed values -----------------------------------------------------------------------------


def test_values_of_different_types_never_share_a_digest():
    values = [1, 1.0, "1", b"1", True, [1], (1,), {1}, {"1": 1}, None, 1 + 0j, np.int64(1)]
    digests = {digest(v) for v in values}
    assert len(digests) == len(values)


def test_digest_is_sixteen_bytes():
    assert isinstance(digest(1.0), bytes)
    assert len(digest(1.0)) == 16


def test_hexdigest_is_the_hex_of_digest():
    assert hexdigest({"T": 300.0}) == digest({"T": 300.0}).hex()


def test_dict_digest_depends_on_insertion_order():
    # a stage that iterates a dict (np.array(list(cfg.weights.values()))) sees its order
    assert digest({"mass": 1.0, "charge": -1.0}) != digest({"charge": -1.0, "mass": 1.0})


def test_dict_digest_distinguishes_key_types():
    assert digest({1: "a"}) != digest({"1": "a"})


def test_list_digest_depends_on_order():
    assert digest([1.0, 2.0]) != digest([2.0, 1.0])


def test_nested_containers_do_not_collide_across_boundaries():
    assert digest([[1, 2], [3]]) != digest([[1], [2, 3]])
    assert digest(["ab", "c"]) != digest(["a", "bc"])


def test_set_digest_ignores_order():
    assert digest({"x", "y", "z"}) == digest({"z", "y", "x"})


def test_signed_zeros_differ():
    # atan2(0.0, -1.0) is pi, atan2(-0.0, -1.0) is -pi
    assert digest(0.0) != digest(-0.0)


def test_nans_differ_by_sign_and_equal_nans_agree():
    assert digest(float("nan")) != digest(-float("nan"))
    assert digest(float("nan")) == digest(float("nan"))


def test_int_enum_differs_from_its_value():
    class Axis(enum.IntEnum):
        X = 1

    assert digest(Axis.X) != digest(1)


def test_paths_hash_by_their_text():
    assert digest(PurePosixPath("data/run1.h5")) == digest(PurePosixPath("data/run1.h5"))
    assert digest(PurePosixPath("data/run1.h5")) != digest("data/run1.h5")


def test_dataclasses_hash_by_field_values():
    @dataclass
    class Mirror:
        reflectivity: float

    assert digest(Mirror(0.99)) == digest(Mirror(0.99))
    assert digest(Mirror(0.99)) != digest(Mirror(0.98))


def test_pydantic_models_hash_by_content():
    class Lens(BaseModel):
        focal_mm: float

    assert digest(Lens(focal_mm=50.0)) == digest(Lens(focal_mm=50.0))
    assert digest(Lens(focal_mm=50.0)) != digest(Lens(focal_mm=75.0))


def test_states_hash_through_hashable_repr():
    assert digest(SimpleState(1.0)) == digest(SimpleState(1.0))
    assert digest(SimpleState(1.0)) != digest(SimpleState(2.0))


@pytest.mark.parametrize("value", [lambda: 1, object(), print], ids=["lambda", "object", "builtin"])
def test_unhashable_values_raise_naming_where(value):
    with pytest.raises(UnhashableValueError, match="detector gain"):
        digest({"k": value}, "detector gain")


# --- arrays -----------------------------------------------------------------------------------


def test_arrays_with_same_bytes_but_different_dtype_differ():
    as_int32 = np.zeros(4, dtype=np.int32)
    as_int64 = np.zeros(2, dtype=np.int64)
    assert as_int32.tobytes() == as_int64.tobytes()
    assert hash_ndarray(as_int32) != hash_ndarray(as_int64)


def test_arrays_with_same_bytes_but_different_shape_differ():
    flat = np.arange(6.0)
    assert hash_ndarray(flat.reshape(2, 3)) != hash_ndarray(flat.reshape(3, 2))
    assert hash_ndarray(flat.reshape(2, 3)) != hash_ndarray(flat)


def test_non_contiguous_slice_hashes_like_its_contiguous_copy():
    grid = np.arange(20.0).reshape(4, 5)
    column = grid[:, 1]
    assert not column.flags.c_contiguous
    assert hash_ndarray(column) == hash_ndarray(np.ascontiguousarray(column))


def test_fortran_ordered_array_hashes_apart_from_its_c_ordered_copy():
    """ravel(order="K"), and C code handed the buffer, read it in another order."""
    field = np.arange(12.0).reshape(3, 4)
    assert hash_ndarray(np.asfortranarray(field)) != hash_ndarray(field)
    assert hash_ndarray(field.T) == hash_ndarray(np.asfortranarray(field.T))


def test_a_strided_view_in_c_order_hashes_like_its_copy():
    field = np.arange(24.0).reshape(4, 6)
    for view in (field[::-1], field[:, ::2], field[1:3, 1:], field[:1].T):
        assert hash_ndarray(view) == hash_ndarray(np.ascontiguousarray(view))


def test_large_arrays_differing_in_the_middle_hash_differently():
    field = np.zeros(10_000)
    bumped = field.copy()
    bumped[5_000] = 1e-300
    assert hash_ndarray(field) != hash_ndarray(bumped)


def test_empty_arrays_of_different_shape_hash_differently():
    assert hash_ndarray(np.zeros((0, 3))) != hash_ndarray(np.zeros((3, 0)))


def test_datetime_arrays_hash_by_content():
    days = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")
    assert hash_ndarray(days) == hash_ndarray(days.copy())
    assert hash_ndarray(days) != hash_ndarray(days + 1)


def test_object_arrays_are_refused():
    # their elements may be any object; see test_hashing_values.py for the field paths
    with pytest.raises(UnhashableValueError):
        hash_small(np.array([1, "a"], dtype=object))


def test_hash_ndarray_returns_bytes():
    assert isinstance(hash_ndarray(np.ones(3)), bytes)


def test_hash_small_returns_bytes():
    assert isinstance(hash_small({"T": 300.0, "grid": np.ones(3)}), bytes)


def test_hash_small_distinguishes_nested_array_content():
    assert hash_small({"E": np.ones(3)}) != hash_small({"E": np.array([1.0, 1.0, 2.0])})


# --- configs ----------------------------------------------------------------------------------


class CavityCfg(StageConfig):
    length_mm: float = 10.0


class WaveguideCfg(StageConfig):
    length_mm: float = 10.0


def test_config_hash_is_stable_for_equal_configs():
    assert config_hash(CavityCfg(length_mm=5.0)) == config_hash(CavityCfg(length_mm=5.0))


def test_config_hash_changes_when_a_value_changes():
    assert config_hash(CavityCfg(length_mm=5.0)) != config_hash(CavityCfg(length_mm=5.5))


def test_config_hash_includes_the_config_class():
    assert config_hash(CavityCfg()) != config_hash(WaveguideCfg())


def test_config_hash_includes_name_and_tags():
    assert config_hash(CavityCfg(name="a")) != config_hash(CavityCfg(name="b"))
    assert config_hash(CavityCfg(tags={"run": 1})) != config_hash(CavityCfg(tags={"run": 2}))


def test_config_hash_accepts_plain_dicts_and_none():
    assert config_hash({"L": 1.0}) == config_hash({"L": 1.0})
    assert config_hash(None) != config_hash({})


class ExposureCfg(StageConfig):
    """A detector exposure with the field types lab configs carry besides numbers."""

    start: dt.datetime = dt.datetime(2024, 5, 1, 12, 0)
    night: dt.date = dt.date(2024, 5, 1)
    duration: dt.timedelta = dt.timedelta(seconds=30)
    gain: Decimal = Decimal("1.25")
    run: uuid.UUID = uuid.UUID(int=7)
    frames: Path = Path("frames")
    filters: set[str] = Field(default_factory=lambda: {"V", "R"})
    checkpoints: frozenset[dt.datetime] = frozenset({dt.datetime(2024, 5, 1, 12, 1)})


CHANGED_EXPOSURE_FIELDS = {
    "start": dt.datetime(2024, 5, 1, 12, 5),
    "night": dt.date(2024, 5, 2),
    "duration": dt.timedelta(seconds=31),
    "gain": Decimal("1.26"),
    "run": uuid.UUID(int=8),
    "frames": Path("darks"),
    "filters": {"V"},
    "checkpoints": frozenset({dt.datetime(2024, 5, 1, 12, 2)}),
}


def test_config_with_datetime_decimal_uuid_path_and_set_fields_hashes_stably():
    assert config_hash(ExposureCfg()) == config_hash(ExposureCfg())


@pytest.mark.parametrize("field", list(CHANGED_EXPOSURE_FIELDS))
def test_config_hash_follows_each_serialisable_field(field):
    changed = ExposureCfg(**{field: CHANGED_EXPOSURE_FIELDS[field]})
    assert config_hash(changed) != config_hash(ExposureCfg())


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1.5"), "1.5"),
        (dt.datetime(2024, 5, 1), "2024-05-01T00:00:00"),
        (uuid.UUID(int=7), str(uuid.UUID(int=7))),
    ],
    ids=["Decimal", "datetime", "UUID"],
)
def test_serialisable_values_never_share_a_digest_with_their_json_string(value, text):
    assert digest(value) != digest(text)


def test_date_and_datetime_of_the_same_instant_differ():
    assert digest(dt.date(2024, 5, 1)) != digest(dt.datetime(2024, 5, 1))


def test_generators_and_files_are_unhashable_and_left_unread(tmp_path):
    samples = (x for x in [1.0, 2.0])
    with pytest.raises(UnhashableValueError):
        digest(samples)
    assert list(samples) == [1.0, 2.0]
    (tmp_path / "log.txt").write_text("line\n")
    with open(tmp_path / "log.txt") as handle:
        with pytest.raises(UnhashableValueError):
            digest(handle)
        assert handle.read() == "line\n"


class ProbeCfg(StageConfig):
    fn: Any = None


class LensCfg(StageConfig):
    coating: dict[str, Any] = Field(default_factory=dict)


class TelescopeCfg(StageConfig):
    lens: LensCfg = LensCfg()
    stops: tuple[Any, ...] = ()


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        (ProbeCfg(fn=lambda t: t), "fn"),
        (TelescopeCfg(lens=LensCfg(coating={"k": object()})), "lens.coating.k"),
        (TelescopeCfg(stops=(1.0, 2.0, print)), "stops[2]"),
    ],
    ids=["top level", "nested", "in a list"],
)
def test_unhashable_config_value_names_its_field_path(cfg, field):
    with pytest.raises(UnhashableValueError) as info:
        config_hash(cfg, "detector config")
    assert info.value.field == field
    assert info.value.where == f"detector config field {field!r}"
    assert f"detector config field {field!r}" in str(info.value)


def test_unhashable_config_value_in_a_plan_names_node_and_field():
    class Probe:
        cfg = ProbeCfg(fn=lambda t: t)

        def process(self, state, *, policy=None):
            return state

    with pytest.raises(UnhashableValueError, match="node 'x' config field 'fn'"):
        make_plan([NodeSpec(id="x", stage=Probe())], SimpleState())


# --- code versions ----------------------------------------------------------------------------

STAGE_SOURCE = """
def attenuation(x):
    return x * {factor}

class Absorber:
    def process(self, state):
        return attenuation(state) + {offset}
"""


def define(factor: float = 0.5, offset: float = 0.0, globals_: dict | None = None) -> type:
    """Run a 'notebook cell' defining Absorber in a fresh namespace and return the class."""
    namespace = {"__name__": "__main__"} if globals_ is None else globals_
    exec(STAGE_SOURCE.format(factor=factor, offset=offset), namespace)
    return namespace["Absorber"]


def test_code_version_is_stable_for_identical_code():
    assert code_version(define()) == code_version(define())


def test_code_version_changes_when_a_method_body_changes():
    assert code_version(define(offset=0.0)) != code_version(define(offset=1.0))


def test_code_version_changes_when_a_called_helper_changes():
    assert code_version(define(factor=0.5)) != code_version(define(factor=0.25))


def test_code_version_changes_when_a_keyword_only_default_changes():
    source = (
        "class Gain:\n"
        "    def process(self, state, *, policy=None, scale={scale}):\n"
        "        return state * scale\n"
    )
    versions = []
    for scale in (2.0, 3.0, 2.0):
        namespace: dict = {"__name__": "notebook_cell"}
        exec(source.format(scale=scale), namespace)
        versions.append(code_version(namespace["Gain"]))
    assert versions[0] != versions[1] and versions[0] == versions[2]


def test_code_version_ignores_line_positions():
    namespace = {"__name__": "__main__"}
    exec("\n\n\n# moved down a few lines" + STAGE_SOURCE.format(factor=0.5, offset=0.0), namespace)
    assert code_version(namespace["Absorber"]) == code_version(define())


def test_code_version_of_instance_matches_its_class():
    absorber_cls = define()
    assert code_version(absorber_cls()) == code_version(absorber_cls)


def test_code_version_works_for_code_run_without_a_module_name():
    # exec(source, {}) leaves __module__ None on functions
    assert code_version(define(factor=0.5, globals_={})) != code_version(
        define(factor=0.25, globals_={})
    )


def test_code_version_includes_inherited_user_methods():
    namespace = {"__name__": "__main__"}
    exec(
        "class Base:\n    def gain(self):\n        return 2.0\nclass Stage(Base):\n    pass\n",
        namespace,
    )
    before = code_version(namespace["Stage"])
    exec("class Base:\n    def gain(self):\n        return 3.0\n", namespace)
    exec("class Stage(Base):\n    pass\n", namespace)
    assert code_version(namespace["Stage"]) != before


def cell_class(source: str, name: str = "Stage", **namespace: object) -> type:
    """Run a notebook cell ``source`` in a fresh namespace and return the class ``name``."""
    namespace = {"__name__": "__main__", **namespace}
    exec(textwrap.dedent(source), namespace)
    return namespace[name]


def with_constant(value: str) -> type:
    return cell_class(
        f"""
        class Stage:
            FACTOR = {value}

            def process(self, x):
                return x * self.FACTOR
        """,
        np=np,
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [("2.0", "3.0"), ("np.array([1.0, 2.0])", "np.array([1.0, 2.5])"), ("{'n': 1}", "{'n': 2}")],
    ids=["float", "array", "dict"],
)
def test_code_version_changes_when_a_class_constant_changes(before, after):
    assert code_version(with_constant(before)) == code_version(with_constant(before))
    assert code_version(with_constant(before)) != code_version(with_constant(after))


def test_code_version_ignores_the_class_docstring():
    plain = cell_class("class Stage:\n    def process(self, x):\n        return x\n")
    documented = cell_class(
        'class Stage:\n    """Docs."""\n\n    def process(self, x):\n        return x\n'
    )
    assert code_version(plain) == code_version(documented)


def scaled_stage(gain: float) -> type:
    return cell_class(
        f"""
        def scaled(gain):
            def decorate(fn):
                def wrapper(self, x):
                    return gain * fn(self, x)
                return wrapper
            return decorate

        class Stage:
            @scaled({gain})
            def process(self, x):
                return x
        """
    )


def test_code_version_changes_when_a_closure_value_changes():
    assert code_version(scaled_stage(2.0)) == code_version(scaled_stage(2.0))
    assert code_version(scaled_stage(2.0)) != code_version(scaled_stage(3.0))


def test_code_version_changes_when_a_method_wrapped_by_a_decorator_from_elsewhere_changes():
    tools = cell_class(
        """
        import functools

        def logged(fn):
            @functools.wraps(fn)
            def wrapper(*args):
                return fn(*args)
            return wrapper
        """,
        name="logged",
        __name__="lab_tools",
    )

    def stage(body: str) -> type:
        source = f"class Stage:\n    @logged\n    def process(self, x):\n        return {body}\n"
        return cell_class(source, logged=tools)

    assert code_version(stage("x + 1")) != code_version(stage("x + 2"))


UNHASHABLE_CONSTANT_CELL = """
import threading

from phys_pipeline.fingerprint import code_version

def sentinel_guard():
    marker = object()
    def check(self, x):
        return x is not marker
    return check

class Stage:
    LOCK = threading.Lock()
    MISSING = object()
    check = sentinel_guard()

    def process(self, x):
        return x
print(code_version(Stage))
"""


def test_code_version_of_unhashable_constants_and_cells_is_the_same_in_every_process():
    versions = {
        subprocess.run(
            [sys.executable, "-c", UNHASHABLE_CONSTANT_CELL],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(versions) == 1


def test_callable_name_is_the_qualified_name():
    assert callable_name(define().process) == "Absorber.process"


# --- properties -------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
float_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int16, np.int64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
    elements={"allow_nan": False},
)


@given(values)
def test_digest_is_stable_for_the_same_value(value):
    assert digest(value) == digest(copy.deepcopy(value))


@given(st.dictionaries(st.text(max_size=6), values, min_size=2, max_size=5))
def test_a_reversed_dict_has_another_digest(mapping):
    reversed_mapping = dict(reversed(list(mapping.items())))
    assert digest(mapping) != digest(reversed_mapping)


def _strictly_equal(a: object, b: object) -> bool:
    """Equal and of the same types all the way down (1 == 1.0 == True in Python), dicts in
    the same order, floats bit for bit (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(_strictly_equal, a, b))
    return a == b


@given(st.lists(st.dictionaries(st.text(max_size=4), values, max_size=4), min_size=2, max_size=6))
def test_distinct_dicts_have_distinct_digests(mappings):
    for a, b in itertools.combinations(mappings, 2):
        if not _strictly_equal(a, b):
            assert digest(a) != digest(b)


@given(float_arrays)
def test_array_hash_is_stable_for_a_copy(array):
    assert hash_ndarray(array) == hash_ndarray(array.copy())


@given(float_arrays, float_arrays)
def test_distinct_arrays_have_distinct_hashes(a, b):
    same = a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    assert (hash_ndarray(a) == hash_ndarray(b)) == same
