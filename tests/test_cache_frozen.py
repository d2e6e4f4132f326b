"""Attacks on the memory tier's copy protocol (``cache.frozen``): ``keep`` decides at ``put`` how
each hit is copied, so every test here tries to make a later hit return altered data, by
editing a hit or what was put, through containers, attributes, array objects and unusual
classes. The next hit must always equal what was put, or the edit must fail loudly."""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phys_pipeline.cache import CacheWarning, DiskStore, MemoryStore, TieredStore
from phys_pipeline.cache.frozen import freeze, hand_out, keep
from phys_pipeline.types import DagState, SimpleState, StageResult, State

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"


def spectrum(n: int = 16) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def hit(store: MemoryStore | TieredStore) -> StageResult:
    result = store.get(KEY)
    assert result is not None
    return result


def stored(result: StageResult) -> MemoryStore:
    store = MemoryStore()
    store.put(KEY, result)
    return store


@dataclasses.dataclass(slots=True)
class Pulse(State):
    """A user state in slots: a field array and a mutable log."""

    field: np.ndarray
    log: list[str]

    def deepcopy(self) -> Pulse:
        return Pulse(self.field.copy(), list(self.log))

    def hashable_repr(self) -> bytes:
        return self.field.tobytes()


class Cavity(State):
    """A user state with a ``__dict__``, a private slot-free attribute and nested modes."""

    def __init__(self, modes: dict[str, np.ndarray], length: float) -> None:
        self.modes, self.length = modes, length
        self.__losses = [0.01]

    @property
    def losses(self) -> list[float]:
        return self.__losses

    def deepcopy(self) -> Cavity:
        return copy.deepcopy(self)

    def hashable_repr(self) -> bytes:
        return repr(sorted(self.modes)).encode()


class Detector:
    """Slots with a private (mangled) name, as ``copyreg`` mangles them."""

    __slots__ = ("__counts", "name")

    def __init__(self, name: str, counts: list[int]) -> None:
        self.name, self.__counts = name, counts

    @property
    def counts(self) -> list[int]:
        return self.__counts


class Calibrated:
    """Drops its lookup cache when copied: ``__getstate__`` says what a copy holds."""

    def __init__(self, gain: float) -> None:
        self.gain, self.cache = gain, {"warm": True}

    def __getstate__(self) -> dict[str, Any]:
        return {"gain": self.gain}


class Restored:
    """Rebuilt through ``__setstate__``: the general path copies it."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def __getstate__(self) -> dict[str, Any]:
        return {"values": self.values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.values = state["values"]


# --- a hit's array objects ------------------------------------------------------------------


def test_reshaping_or_retyping_a_hits_array_object_changes_no_later_hit() -> None:
    store = stored(StageResult(SimpleState(spectrum())))
    arr = hit(store).state.payload
    arr.shape = (4, 4)
    arr.dtype = np.int64
    again = hit(store).state.payload
    assert again.shape == (16,) and again.dtype == np.float64
    np.testing.assert_array_equal(again, spectrum())


def test_reshaping_the_array_behind_a_hits_view_changes_no_later_hit() -> None:
    store = stored(StageResult(SimpleState(spectrum())))
    owner = hit(store).state.payload.base
    owner.shape = (2, 8)
    assert hit(store).state.payload.shape == (16,)


def test_a_hits_array_can_be_neither_written_nor_made_writable() -> None:
    store = stored(StageResult(SimpleState({"field": spectrum()})))
    field = hit(store).state.payload["field"]
    with pytest.raises(ValueError, match="read-only"):
        field[3] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        np.copyto(field, 0.0)
    with pytest.raises(ValueError, match="WRITEABLE"):
        field.flags.writeable = True
    np.testing.assert_array_equal(hit(store).state.payload["field"], spectrum())


# --- what was put ---------------------------------------------------------------------------


def test_reshaping_or_retyping_an_array_after_put_changes_no_hit() -> None:
    arr = spectrum()
    store = stored(StageResult(SimpleState(arr)))
    arr.shape = (4, 4)
    arr.dtype = np.int64
    again = hit(store).state.payload
    assert again.shape == (16,) and again.dtype == np.float64
    np.testing.assert_array_equal(again, spectrum())


def test_resizing_an_array_after_put_fails_and_changes_no_hit() -> None:
    arr = spectrum()
    store = stored(StageResult(SimpleState(arr)))
    with pytest.raises(ValueError):
        arr.resize(32)  # the store's view holds on to its memory
    np.testing.assert_array_equal(hit(store).state.payload, spectrum())


def test_rebinding_attributes_of_a_state_after_put_changes_no_hit() -> None:
    state = SimpleState(spectrum(), {"unit": "THz"})
    store = stored(StageResult(state))
    state.payload, state.meta, state.note = None, {}, "edited"
    again = hit(store).state
    assert again.meta == {"unit": "THz"} and not hasattr(again, "note")
    np.testing.assert_array_equal(again.payload, spectrum())


def test_editing_a_list_inside_a_tuple_after_put_changes_no_hit() -> None:
    steps = ["grid"]
    store = stored(StageResult(SimpleState((steps, spectrum()))))
    steps.append("edited")
    payload = hit(store).state.payload
    assert type(payload) is tuple and payload[0] == ["grid"]


# --- a hit's containers and attributes ------------------------------------------------------


def test_every_field_of_a_hit_is_the_callers_to_edit() -> None:
    result = StageResult(
        SimpleState({"modes": [spectrum()], "n": 2}, {"unit": "THz", "tags": ["a"]}),
        metrics={"energy": 1.0},
        artifacts={"trace": spectrum()},
        provenance={"node": "laser", "inputs": {"seed": 3}},
    )
    store = stored(result)
    first = hit(store)
    first.state.payload["modes"].append(np.zeros(3))
    first.state.payload["n"] = 0
    first.state.meta["tags"].append("edited")
    first.state.meta.clear()
    first.state.payload = None
    first.state.extra = "edited"
    first.metrics["energy"] = 0.0
    first.artifacts.clear()
    first.provenance["inputs"]["seed"] = 4
    first.state = None
    again = hit(store)
    assert len(again.state.payload["modes"]) == 1 and again.state.payload["n"] == 2
    assert again.state.meta == {"unit": "THz", "tags": ["a"]}
    assert not hasattr(again.state, "extra") and again.metrics == {"energy": 1.0}
    assert set(again.artifacts) == {"trace"} and again.provenance["inputs"] == {"seed": 3}


def test_a_tuple_holding_a_list_is_handed_out_with_a_fresh_list() -> None:
    store = stored(StageResult(SimpleState(meta={"window": (["hann"], 0.5)})))
    hit(store).state.meta["window"][0].append("edited")
    assert hit(store).state.meta["window"] == (["hann"], 0.5)


def test_a_tuple_of_scalars_is_shared_and_equal() -> None:
    store = stored(StageResult(SimpleState((1, 2.0, "three"))))
    assert hit(store).state.payload == (1, 2.0, "three")


def test_a_dag_states_inputs_are_the_callers_to_edit() -> None:
    store = stored(StageResult(DagState({"pump": SimpleState(spectrum(), {"nm": 800})})))
    first = hit(store).state
    first.inputs["pump"].meta["nm"] = 400
    first.inputs["probe"] = SimpleState()
    again = hit(store).state
    assert list(again.inputs) == ["pump"] and again["pump"].meta == {"nm": 800}


# --- user classes -------------------------------------------------------------------------------


def test_a_slotted_user_state_is_handed_out_afresh() -> None:
    store = stored(StageResult(Pulse(spectrum(), ["made"])))
    first = hit(store).state
    first.log.append("edited")
    first.field = np.zeros(16)
    again = hit(store).state
    assert type(again) is Pulse and again.log == ["made"]
    np.testing.assert_array_equal(again.field, spectrum())


def test_a_user_state_with_a_private_attribute_is_handed_out_afresh() -> None:
    store = stored(StageResult(Cavity({"tem00": spectrum()}, 0.3)))
    first = hit(store).state
    first.losses.append(0.5)
    first.modes["tem01"] = spectrum()
    again = hit(store).state
    assert again.losses == [0.01] and list(again.modes) == ["tem00"] and again.length == 0.3


def test_a_private_slot_is_handed_out_afresh() -> None:
    store = stored(StageResult(SimpleState(Detector("ccd", [1, 2]))))
    hit(store).state.payload.counts.append(3)
    again = hit(store).state.payload
    assert again.counts == [1, 2] and again.name == "ccd"


def test_a_class_is_copied_as_copy_deepcopy_copies_it() -> None:
    store = stored(StageResult(SimpleState(Calibrated(2.0))))
    payload = hit(store).state.payload
    assert payload.gain == 2.0 and not hasattr(payload, "cache")
    assert vars(payload) == vars(copy.deepcopy(Calibrated(2.0)))


def test_a_class_with_setstate_is_handed_out_afresh() -> None:
    store = stored(StageResult(SimpleState(Restored([1.0]))))
    hit(store).state.payload.values.append(2.0)
    assert hit(store).state.payload.values == [1.0]


class Gauge:
    """A property over a private reading, whose setter logs; an instance can still hold an
    entry of the property's name in its ``__dict__``."""

    def __init__(self) -> None:
        self._reading, self.log = 0.0, []

    @property
    def reading(self) -> float:
        return self._reading

    @reading.setter
    def reading(self, value: float) -> None:
        self.log.append(value)
        self._reading = value


class Clamped:
    """Slots set through a ``__setattr__`` of its own, as ``copy.deepcopy`` sets them."""

    __slots__ = ("level",)

    def __setattr__(self, name: str, value: float) -> None:
        object.__setattr__(self, name, min(value, 1.0) + 0.5)


def test_an_instance_entry_shadowed_by_a_property_is_copied_as_deepcopy_copies_it() -> None:
    gauge = Gauge()
    gauge.__dict__["reading"] = 5.0
    store = stored(StageResult(SimpleState(gauge)))
    payload = hit(store).state.payload
    assert vars(payload) == vars(copy.deepcopy(gauge)) and payload.log == []


def test_slots_set_through_a_custom_setattr_are_copied_as_deepcopy_copies_them() -> None:
    clamped = Clamped()
    clamped.level = 3.0
    store = stored(StageResult(SimpleState(clamped)))
    assert hit(store).state.payload.level == copy.deepcopy(clamped).level


class Lookup:
    """Answers unknown attributes from a table (a KeyError, not an AttributeError, for a name
    it lacks: even for ``__deepcopy__``)."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def __getattr__(self, name: str) -> float:
        return self.__dict__["table"][name]


def test_a_class_whose_getattr_raises_is_not_kept_and_the_put_does_not_fail() -> None:
    store = MemoryStore()
    with pytest.warns(CacheWarning, match="cannot be copied"):
        store.put(KEY, StageResult(SimpleState(Lookup({"gain": 2.0}))))
    assert store.get(KEY) is None


def test_a_defaultdict_keeps_its_type_and_is_handed_out_afresh() -> None:
    counts: defaultdict[str, int] = defaultdict(int, {"photons": 3})
    store = stored(StageResult(SimpleState(meta={"counts": counts})))
    first = hit(store).state.meta["counts"]
    first["electrons"] += 1
    again = hit(store).state.meta["counts"]
    assert type(again) is defaultdict and dict(again) == {"photons": 3}


def test_a_state_referring_to_itself_is_handed_out_afresh() -> None:
    cavity = Cavity({"tem00": spectrum()}, 0.3)
    cavity.mirror = cavity
    store = stored(StageResult(cavity))
    first = hit(store).state
    assert first.mirror is first
    first.losses.append(0.5)
    assert hit(store).state.losses == [0.01]


def test_a_list_found_twice_is_handed_out_twice_as_one_list() -> None:
    shared = ["grid"]
    store = stored(StageResult(SimpleState([shared, shared])))
    first = hit(store).state.payload
    first[0].append("edited")
    assert hit(store).state.payload == [["grid"], ["grid"]]


# --- across tiers and threads ---------------------------------------------------------------


def test_reshaping_a_backfilled_hit_changes_no_later_memory_hit(tmp_path: Path) -> None:
    memory = MemoryStore()
    tiers = TieredStore([memory, DiskStore(tmp_path / "cache")])
    tiers.put(KEY, StageResult(SimpleState({"field": spectrum()})))
    memory.clear()
    from_disk = hit(tiers).state.payload["field"]  # and now in memory as well
    from_disk.shape = (4, 4)
    assert hit(memory).state.payload["field"].shape == (16,)


def test_hits_on_many_threads_are_independent_copies() -> None:
    store = stored(StageResult(SimpleState({"log": []}, {"n": 0})))
    errors: list[str] = []

    def vandal() -> None:
        for _ in range(200):
            state = hit(store).state
            if state.payload["log"] or state.meta != {"n": 0}:
                errors.append("saw an edit")
            state.payload["log"].append("edited")
            state.meta["n"] += 1

    threads = [threading.Thread(target=vandal) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- how the hand-out is decided ------------------------------------------------------------


def test_hits_of_plain_data_never_call_copy_deepcopy(monkeypatch: pytest.MonkeyPatch) -> None:
    store = stored(
        StageResult(
            DagState({"pulse": Pulse(spectrum(), []), "cav": Cavity({"m": spectrum()}, 1.0)}),
            metrics={"energy": np.float64(1.0)},
        )
    )

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("copy.deepcopy called on a hit")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    assert hit(store).state["pulse"].log == []


# --- random results, random vandals ---------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)
)
arrays = st.lists(st.floats(allow_nan=False, width=32), max_size=6).map(np.array)
values = st.recursive(
    scalars | arrays,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
        st.builds(SimpleState, inner, st.dictionaries(st.text(max_size=3), inner, max_size=2)),
        st.builds(Pulse, arrays, st.lists(st.text(max_size=3), max_size=2)),
    ),
    max_leaves=12,
)
results = st.builds(
    StageResult,
    values,
    st.dictionaries(st.text(max_size=3), st.floats(allow_nan=False), max_size=2),
    st.dictionaries(st.text(max_size=3), arrays, max_size=2),
    st.dictionaries(st.text(max_size=3), values, max_size=2),
)

RANDOM = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (arrays: dtype, shape and content)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, SimpleState | StageResult):
        return same(vars(a), vars(b))
    if isinstance(a, Pulse):
        return same(a.field, b.field) and same(a.log, b.log)
    return a == b


def vandalise(value: Any) -> None:
    """Edit everything reachable from ``value`` in place, as a careless caller might."""
    if isinstance(value, np.ndarray):
        if value.size:
            with pytest.raises(ValueError, match="read-only"):
                value[...] = 7.0
        value.shape = (value.size,)
        value.dtype = np.uint8
    elif isinstance(value, dict):
        for key in list(value):
            vandalise(value[key])
            value[key] = "vandalised"
        value["new"] = 1
    elif isinstance(value, list):
        for item in value:
            vandalise(item)
        value.append("vandalised")
        value[0] = "vandalised"
    elif isinstance(value, tuple):
        for item in value:
            vandalise(item)
    elif isinstance(value, SimpleState | StageResult):
        for name, attr in list(vars(value).items()):
            vandalise(attr)
            setattr(value, name, "vandalised")
        value.extra = "vandalised"
    elif isinstance(value, Pulse):
        vandalise(value.field)
        vandalise(value.log)
        value.field, value.log = np.zeros(1), []


@RANDOM
@given(results)
def test_no_edit_of_a_hit_reaches_the_next_hit(result: StageResult) -> None:
    want = copy.deepcopy(result)
    store = stored(result)
    assert same(hit(store), want)
    vandalise(hit(store))
    assert same(hit(store), want)


@RANDOM
@given(results)
def test_no_edit_of_what_was_put_reaches_a_hit(result: StageResult) -> None:
    want = copy.deepcopy(result)
    store = stored(result)
    vandalise(result)
    assert same(hit(store), want)


@RANDOM
@given(results)
def test_the_recipe_hands_out_what_the_general_path_does(result: StageResult) -> None:
    recipe, _ = keep(copy.deepcopy(result))
    assert same(recipe(), hand_out(freeze(copy.deepcopy(result))))
