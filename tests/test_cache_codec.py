"""Round trips through every store's encoding: what comes back is what went in."""

from __future__ import annotations

import datetime
import json
import math
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phys_pipeline.cache import CacheWarning, DiskStore, MemoryStore, RedisStore
from phys_pipeline.cache.codec import from_frame, to_frame
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.types import DagState, SimpleState, StageResult, State

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"


class Detector:
    """An arbitrary user object inside a state (only pickle can store it)."""

    def __init__(self, name: str, efficiency: float) -> None:
        self.name, self.efficiency = name, efficiency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Detector) and vars(self) == vars(other)


@dataclass(slots=True)
class BeamState(State):
    """A user state: slots dataclass holding arrays and arbitrary objects."""

    field_xy: np.ndarray
    detector: Detector
    lookup: dict[Any, Any] = field(default_factory=dict)

    def deepcopy(self) -> BeamState:
        return BeamState(self.field_xy.copy(), self.detector, dict(self.lookup))

    def hashable_repr(self) -> bytes:
        return self.field_xy.tobytes()


class FrameStore:
    """The Redis encoding without a server: each put stores one frame."""

    def __init__(self) -> None:
        self.frames: dict[str, bytes] = {}
        self.signer = EntrySigner()

    def put(self, key: str, result: StageResult) -> None:
        self.frames[key] = to_frame(key, result, self.signer)

    def get(self, key: str) -> StageResult | None:
        return from_frame(key, self.frames[key], self.signer) if key in self.frames else None


def make_disk(tmp_path: Path) -> DiskStore:
    return DiskStore(tmp_path / "cache")


def make_frames(tmp_path: Path) -> FrameStore:
    return FrameStore()


ENCODING_STORES = [make_disk, make_frames]


@pytest.fixture(params=ENCODING_STORES, ids=["disk", "frame"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return request.param(tmp_path)


def round_trip(store: Any, result: StageResult, key: str = KEY) -> StageResult:
    store.put(key, result)
    back = store.get(key)
    assert back is not None
    return back


def assert_same(got: Any, want: Any) -> None:
    """Equal value *and* type, recursively; NaN equals NaN; arrays by dtype, shape, values."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for k in want:
            assert_same(got[k], want[k])
    elif isinstance(want, list | tuple):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    elif isinstance(want, float):
        assert got == want and math.copysign(1, got) == math.copysign(1, want)
    elif isinstance(want, np.generic):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    else:
        assert got == want


# --- SimpleState: JSON + arrays -------------------------------------------------------------


ARRAYS = {
    "psi": (np.arange(12.0) + 1j).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
    "strided": np.arange(20, dtype=np.float32)[::3],
    "scalar": np.array(2.5),
    "empty": np.zeros((0, 4)),
    "mask": np.array([True, False, True]),
    "times": np.array(["2024-01-01", "2024-06-01"], dtype="datetime64[D]"),
    "record": np.zeros(2, dtype=[("x", "<f8"), ("n", "<i4")]),
    "big": np.linspace(0, 1, 100_000),  # over the disk store's mmap threshold
}


def test_simple_state_arrays_keep_dtype_shape_values_and_are_read_only(store: Any) -> None:
    back = round_trip(store, StageResult(SimpleState(dict(ARRAYS))))
    for name, want in ARRAYS.items():
        got = back.state.payload[name]
        assert type(got) is np.ndarray, name  # never an np.memmap subclass
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable, name
        with pytest.raises(ValueError):
            got[...] = 0


def test_cached_arrays_become_writable_after_the_stages_deepcopy(store: Any) -> None:
    back = round_trip(store, StageResult(SimpleState(np.ones(4))))
    copy = back.state.deepcopy()
    copy.payload[0] = 5.0
    assert back.state.payload[0] == 1.0


NESTED = {
    "grid": {"N": 512, "dx": 0.125, "bounds": (-1.5, 1.5)},
    "labels": ["e-", "mu-", None, True, False],
    "huge_int": 2**200,
    "specials": [float("nan"), float("inf"), float("-inf"), -0.0, 1e-300],
    "impedance": 50 + 2j,
    "np_scalars": [np.float32(1.5), np.int64(-3), np.bool_(True), np.complex64(1 - 1j)],
    "raw": b"\x00\xffbytes",
    "$not_a_tag": "dollar keys survive",
    (0, 1): "tuple key",
    3: "int key",
    "deep": [[[{"x": ({"y": [()]},)}]]],
    "unicode": "Δt = 1 fs, \udc80 lone surrogate",
}


def test_simple_state_nested_json_data_round_trips_with_exact_types(store: Any) -> None:
    meta = {"units": "SI", "version": (1, 2)}
    back = round_trip(store, StageResult(SimpleState(NESTED, meta)))
    assert type(back.state) is SimpleState
    assert_same(back.state.payload, NESTED)
    assert_same(back.state.meta, meta)


def test_shared_arrays_stay_shared(store: Any) -> None:
    grid = np.arange(5.0)
    back = round_trip(store, StageResult(SimpleState({"x": grid, "again": grid})))
    assert back.state.payload["x"] is back.state.payload["again"]


def test_metrics_provenance_and_materialised_artifacts_are_kept(store: Any) -> None:
    result = StageResult(
        SimpleState(np.zeros(3)),
        metrics={"energy": 1.25, "np_energy": np.float64(2.5), "nan": float("nan")},
        artifacts={
            "spectrum": np.arange(4.0),
            "raw": b"\x01\x02",
            "note": "converged",
            "plot": lambda: "a figure",  # lazy: dropped
            "figure": threading.Lock(),  # not JSON-able: dropped
        },
        provenance={"node": "b", "key": KEY, "cache": {"hit": False}, "wall_s": 0.5},
    )
    back = round_trip(store, result)
    assert_same(back.metrics, result.metrics)
    assert_same(back.provenance, result.provenance)
    assert set(back.artifacts) == {"spectrum", "raw", "note"}
    np.testing.assert_array_equal(back.artifacts["spectrum"], np.arange(4.0))
    assert back.artifacts["raw"] == b"\x01\x02"
    assert back.artifacts["note"] == "converged"


def test_provenance_that_json_cannot_hold_is_pickled(store: Any) -> None:
    when = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    back = round_trip(store, StageResult(SimpleState(1.0), provenance={"started": when}))
    assert back.provenance == {"started": when}


# --- states that need pickle ----------------------------------------------------------------


def test_slots_dataclass_state_with_arbitrary_objects_round_trips(store: Any) -> None:
    state = BeamState(
        np.random.default_rng(0).normal(size=(64, 64)),
        Detector("CCD", 0.8),
        {("x", 1): {1, 2}, frozenset({"a"}): np.arange(3)},
    )
    back = round_trip(store, StageResult(state, metrics={"peak": 3.0}, provenance={"n": 1}))
    assert type(back.state) is BeamState
    np.testing.assert_array_equal(back.state.field_xy, state.field_xy)
    assert not back.state.field_xy.flags.writeable
    assert back.state.detector == Detector("CCD", 0.8)
    assert back.state.lookup[("x", 1)] == {1, 2}
    np.testing.assert_array_equal(back.state.lookup[frozenset({"a"})], np.arange(3))
    assert back.metrics == {"peak": 3.0} and back.provenance == {"n": 1}


def test_dag_state_round_trips(store: Any) -> None:
    state = DagState(
        {
            "laser": SimpleState(np.ones((2, 2)), {"wavelength_nm": 800}),
            "medium": SimpleState({"n2": 2.5e-20}),
        }
    )
    back = round_trip(store, StageResult(state))
    assert type(back.state) is DagState
    assert back.state["laser"] == state["laser"]
    assert back.state["medium"] == state["medium"]


def test_simple_state_subclass_keeps_its_class(store: Any) -> None:
    back = round_trip(store, StageResult(TaggedState(np.arange(3), {"k": 1})))
    assert type(back.state) is TaggedState
    assert back.state == TaggedState(np.arange(3), {"k": 1})


class TaggedState(SimpleState):
    pass


# --- states pickle cannot name: classes local to a function or a notebook, lambdas ----------


@pytest.fixture(params=["disk", "redis"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The stores another process reads back from: a directory and a real redis-server."""
    if request.param == "disk":
        yield DiskStore(tmp_path / "cache")
        return
    made = RedisStore(request.getfixturevalue("redis_url"), prefix=f"codec-{uuid.uuid4().hex}")
    yield made
    made.clear()


def test_state_class_defined_inside_a_function_round_trips(shared_store: Any) -> None:
    @dataclass
    class LocalPulse(State):
        envelope: np.ndarray
        label: str

        def deepcopy(self) -> LocalPulse:
            return LocalPulse(self.envelope.copy(), self.label)

        def hashable_repr(self) -> bytes:
            return self.envelope.tobytes() + self.label.encode()

    state = LocalPulse(np.hanning(256), "chirped")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "cannot encode" would be a warning
        back = round_trip(shared_store, StageResult(state, metrics={"fwhm": 1.5}))
    assert type(back.state) is LocalPulse
    np.testing.assert_array_equal(back.state.envelope, state.envelope)
    assert back.state.label == "chirped" and back.metrics == {"fwhm": 1.5}


def test_state_holding_a_lambda_round_trips(shared_store: Any) -> None:
    gain = 3.0
    state = BeamState(np.ones(8), Detector("APD", 0.6), {"response": lambda x: gain * x**2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = round_trip(shared_store, StageResult(state))
    assert back.state.lookup["response"](2.0) == 12.0
    assert back.state.detector == Detector("APD", 0.6)


NOTEBOOK_CELL = """
from dataclasses import dataclass
import numpy as np
from phys_pipeline.types import State

@dataclass
class CellState(State):
    samples: np.ndarray

    def deepcopy(self):
        return CellState(self.samples.copy())

    def hashable_repr(self):
        return self.samples.tobytes()
"""


def test_state_class_from_a_notebook_cell_round_trips(shared_store: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "notebook_cell_7"}  # no module to import it from
    exec(NOTEBOOK_CELL, namespace)
    state = namespace["CellState"](np.arange(5.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = round_trip(shared_store, StageResult(state))
    assert type(back.state) is namespace["CellState"]
    np.testing.assert_array_equal(back.state.samples, np.arange(5.0))


def entry_dir(cache: DiskStore, key: str = KEY) -> Path:
    return entry_path(cache.root, key)


def canonical(body: dict) -> bytes:
    """The documented form of the body that the HMAC covers."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def test_json_and_arrays_entry_has_no_pickle_and_is_signed(
    tmp_path: Path, isolated_cache_key: Path
) -> None:
    cache = make_disk(tmp_path)
    round_trip(cache, StageResult(SimpleState(dict(ARRAYS), {"nested": NESTED})))
    files = sorted(p.name for p in entry_dir(cache).iterdir())
    assert "blob.pkl" not in files
    assert files.count("meta.json") == 1 and len(files) > len(ARRAYS)
    doc = json.loads((entry_dir(cache) / "meta.json").read_bytes())
    assert doc["body"]["blob"] is None
    assert EntrySigner().verify(doc["hmac"], canonical(doc["body"]))  # data is signed too
    assert isolated_cache_key.exists()


def test_pickled_state_keeps_big_arrays_out_of_the_pickle(tmp_path: Path) -> None:
    cache = make_disk(tmp_path)
    big = np.random.default_rng(1).normal(size=200_000)  # 1.6 MB
    cache.put(KEY, StageResult(BeamState(big, Detector("PMT", 0.3))))
    blob = (entry_dir(cache) / "blob.pkl").read_bytes()
    assert len(blob) < 10_000
    assert big.tobytes()[:64] not in blob
    np.testing.assert_array_equal(cache.get(KEY).state.field_xy, big)


def test_frame_of_pickled_state_is_signed(tmp_path: Path) -> None:
    frame = to_frame(KEY, StageResult(BeamState(np.ones(3), Detector("x", 1.0))), EntrySigner())
    assert b'"hmac":"' in frame


def test_unpicklable_state_is_skipped_with_a_warning(tmp_path: Path) -> None:
    cache = make_disk(tmp_path)
    state = BeamState(np.ones(2), Detector("d", 1.0), {"lock": threading.Lock()})
    with pytest.warns(CacheWarning, match="cannot encode a result whose state is BeamState"):
        cache.put(KEY, StageResult(state))
    assert cache.get(KEY) is None
    assert not list((tmp_path / "cache").rglob("*.npy"))


@pytest.mark.parametrize("make", [make_disk, lambda p: MemoryStore()], ids=["disk", "memory"])
@pytest.mark.parametrize("bad", ["../" + "a" * 30, "ab/cd" + "0" * 27, "", "xyz" * 11, 42])
def test_keys_that_are_not_hex_digests_are_refused(
    make: Callable[[Path], Any], bad: Any, tmp_path: Path
) -> None:
    store = make(tmp_path)
    for call in (store.get, store.contains, lambda k: store.put(k, StageResult(SimpleState()))):
        with pytest.raises(ValueError, match="invalid cache key"):
            call(bad)
    assert not (tmp_path / "cache").exists()


# --- property: any JSON-able payload survives the frame encoding ------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.complex_numbers(allow_nan=False)
    | st.builds(np.float32, st.floats(width=32))
    | st.builds(np.int16, st.integers(-(2**15), 2**15 - 1))
    | st.builds(np.array, st.lists(st.floats(allow_nan=False), max_size=5))
)
_keys = st.text(max_size=4) | st.integers() | st.tuples(st.integers(), st.text(max_size=2))
_trees = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(_keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_trees)
def test_any_json_like_payload_round_trips_exactly(payload: Any) -> None:
    signer = EntrySigner("property test")
    frame = to_frame(KEY, StageResult(SimpleState(payload)), signer)
    assert b'"blob":null' in frame  # never needed pickle
    assert_same(from_frame(KEY, frame, signer).state.payload, payload)


def test_simple_state_json_cannot_hold_is_pickled_whole_without_stray_arrays(
    tmp_path: Path,
) -> None:
    cache = make_disk(tmp_path)
    payload = {"raw": b"\x00\x01", "googol_cubed": 10**5000}  # beyond JSON's int digits
    back = round_trip(cache, StageResult(SimpleState(payload, {"detector": Detector("x", 1)})))
    assert back.state.payload == payload and back.state.meta["detector"] == Detector("x", 1)
    assert sorted(p.name for p in entry_dir(cache).iterdir()) == ["blob.pkl", "meta.json"]
