"""The memory tier shares no writable memory with its callers: every test edits what a store
handed out (or what was put) in place, and the next hit must still be the original value, or the
edit must fail loudly. Never may the edited value come back as a hit."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage

from phys_pipeline.cache import CacheWarning, DiskStore, MemoryStore, TieredStore
from phys_pipeline.errors import NodeFailedError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.session import LiveSession
from phys_pipeline.types import (
    DagState,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    State,
)

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"


@dataclass(slots=True)
class Beam(State):
    """A user state: arrays and a mutable list in slots."""

    field: np.ndarray
    history: list[str]

    def deepcopy(self) -> Beam:
        return Beam(self.field.copy(), list(self.history))

    def hashable_repr(self) -> bytes:
        return self.field.tobytes() + "|".join(self.history).encode()


class Locked(State):
    """A state ``copy.deepcopy`` cannot copy (it holds a lock); its own deepcopy() can."""

    def __init__(self, field: np.ndarray) -> None:
        self.field, self.lock = field, threading.Lock()

    def deepcopy(self) -> Locked:
        return Locked(self.field.copy())

    def hashable_repr(self) -> bytes:
        return self.field.tobytes()


def stored(store: MemoryStore | TieredStore) -> StageResult:
    hit = store.get(KEY)
    assert hit is not None
    return hit


def spectrum() -> np.ndarray:
    return np.linspace(0.0, 1.0, 16)


# --- MemoryStore: what a hit hands out ------------------------------------------------------


def test_writing_into_a_hits_array_raises_and_the_next_hit_is_unchanged() -> None:
    store = MemoryStore()
    store.put(KEY, StageResult(SimpleState(spectrum())))
    hit = stored(store)
    with pytest.raises(ValueError, match="read-only"):
        hit.state.payload *= 2
    with pytest.raises(ValueError, match="WRITEABLE"):
        hit.state.payload.flags.writeable = True
    np.testing.assert_array_equal(stored(store).state.payload, spectrum())


def test_editing_a_hits_containers_does_not_change_the_store() -> None:
    store = MemoryStore()
    payload = {"fields": [spectrum(), spectrum()], "meta": {"n": 16}}
    store.put(KEY, StageResult(SimpleState(payload, {"unit": "fs"}), metrics={"e": 1.0}))
    hit = stored(store)
    hit.state.payload["fields"].append(np.zeros(3))
    hit.state.payload["fields"][0] = np.zeros(16)
    hit.state.payload["meta"]["n"] = 99
    hit.state.meta["unit"] = "ps"
    hit.state.payload = None
    hit.metrics["e"] = -1.0
    again = stored(store)
    assert len(again.state.payload["fields"]) == 2 and again.state.payload["meta"] == {"n": 16}
    np.testing.assert_array_equal(again.state.payload["fields"][0], spectrum())
    assert again.state.meta == {"unit": "fs"} and again.metrics == {"e": 1.0}


def test_every_array_in_nested_containers_is_read_only() -> None:
    store = MemoryStore()
    store.put(KEY, StageResult(SimpleState([[spectrum(), (spectrum(),)], {"k": [spectrum()]}])))
    payload = stored(store).state.payload
    for arr in (payload[0][0], payload[0][1][0], payload[1]["k"][0]):
        assert not arr.flags.writeable


def test_an_array_stored_twice_is_handed_out_as_one_view() -> None:
    arr = spectrum()
    store = MemoryStore()
    store.put(KEY, StageResult(SimpleState([arr, arr], {"again": arr})))
    hit = stored(store)
    assert hit.state.payload[0] is hit.state.payload[1] is hit.state.meta["again"]


def test_a_user_state_is_copied_around_read_only_arrays() -> None:
    store = MemoryStore()
    store.put(KEY, StageResult(Beam(spectrum(), ["made"])))
    hit = stored(store).state
    assert not hit.field.flags.writeable
    hit.history.append("edited")
    hit.field = np.zeros(16)
    again = stored(store).state
    assert again.history == ["made"]
    np.testing.assert_array_equal(again.field, spectrum())


def test_a_dag_state_is_copied_around_read_only_arrays() -> None:
    store = MemoryStore()
    store.put(KEY, StageResult(DagState({"a": SimpleState(spectrum()), "b": Beam(spectrum(), [])})))
    hit = stored(store)
    hit.state.inputs["a"] = SimpleState(np.zeros(16))
    hit.state.inputs["b"].history.append("edited")
    with pytest.raises(ValueError, match="read-only"):
        hit.state.inputs["b"].field[0] = 5.0
    again = stored(store).state
    np.testing.assert_array_equal(again["a"].payload, spectrum())
    assert again["b"].history == []


def test_a_state_copy_deepcopy_refuses_is_copied_by_its_own_deepcopy() -> None:
    store = MemoryStore()
    store.put(KEY, StageResult(Locked(spectrum())))
    hit = stored(store).state
    hit.field[0] = 7.0  # a private copy: writable, and not the store's
    assert stored(store).state.field[0] == 0.0


def test_an_uncopyable_payload_is_not_kept_with_one_warning() -> None:
    store = MemoryStore()
    with pytest.warns(CacheWarning, match="cannot be copied"):
        store.put(KEY, StageResult(SimpleState(threading.Lock())))
    assert store.get(KEY) is None and len(store) == 0


# --- MemoryStore: what was put --------------------------------------------------------------


def test_the_array_put_becomes_read_only_so_editing_it_raises() -> None:
    arr = spectrum()
    store = MemoryStore()
    store.put(KEY, StageResult(SimpleState(arr)))
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 99.0
    np.testing.assert_array_equal(stored(store).state.payload, spectrum())


def test_editing_the_containers_put_does_not_change_the_store() -> None:
    state = SimpleState({"a": spectrum()}, {"steps": ["grid"]})
    result = StageResult(state, provenance={"node": "grid"})
    store = MemoryStore()
    store.put(KEY, result)
    state.payload["a"] = np.zeros(16)
    state.meta["steps"].append("edited")
    result.provenance["node"] = "other"
    hit = stored(store)
    np.testing.assert_array_equal(hit.state.payload["a"], spectrum())
    assert hit.state.meta == {"steps": ["grid"]} and hit.provenance == {"node": "grid"}


@pytest.mark.parametrize("read_only_view", [False, True])
def test_the_array_a_stored_view_looks_into_becomes_read_only(read_only_view: bool) -> None:
    base = np.arange(32.0)
    view = base[::2]
    view.flags.writeable = not read_only_view
    store = MemoryStore()
    store.put(KEY, StageResult(SimpleState(view)))
    with pytest.raises(ValueError, match="read-only"):
        base[:] = -1.0
    np.testing.assert_array_equal(stored(store).state.payload, np.arange(0.0, 32.0, 2.0))


def test_a_memmap_is_copied_on_put(tmp_path: Path) -> None:
    mapped = np.lib.format.open_memmap(tmp_path / "raw.npy", mode="w+", shape=(8,))
    mapped[:] = 1.0
    store = MemoryStore()
    store.put(KEY, StageResult(SimpleState(mapped)))
    mapped[:] = 2.0
    payload = stored(store).state.payload
    assert type(payload) is np.ndarray and payload.tolist() == [1.0] * 8


def test_lazy_artifacts_are_kept_and_array_artifacts_read_only() -> None:
    def plot() -> str:
        return "figure"

    store = MemoryStore()
    store.put(KEY, StageResult(SimpleState(), artifacts={"plot": plot, "trace": spectrum()}))
    hit = stored(store)
    assert hit.artifacts["plot"] is plot and not hit.artifacts["trace"].flags.writeable


# --- TieredStore ----------------------------------------------------------------------------


def test_a_backfilled_hit_cannot_be_edited_into_the_memory_tier(tmp_path: Path) -> None:
    fast = MemoryStore()
    tiers = TieredStore([fast, DiskStore(tmp_path / "cache")])
    tiers.put(KEY, StageResult(SimpleState({"f": spectrum()}, {"n": 16})))
    fast.clear()
    hit = stored(tiers)  # from disk, backfilled into memory
    hit.state.meta["n"] = 0
    with pytest.raises(ValueError, match="read-only"):
        hit.state.payload["f"] += 1.0
    again = fast.get(KEY)
    assert again is not None and again.state.meta == {"n": 16}
    np.testing.assert_array_equal(again.state.payload["f"], spectrum())


# --- through the executor and a session -----------------------------------------------------


def chain() -> list[NodeSpec]:
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(N=32))),
        NodeSpec(id="phase", deps=["grid"], stage=PhaseStage(PhaseCfg(gdd=10.0))),
    ]


class Doubler(PipelineStage[SimpleState, StageConfig]):
    """A buggy stage: doubles its input's grid in place instead of copying first."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        state.meta["omega"] *= 2
        return StageResult(state=state)


@pytest.mark.parametrize("first", ["ran", "hit"])
def test_editing_a_run_result_in_place_raises_and_the_rerun_is_unchanged(first: str) -> None:
    executor = DagExecutor(cache=MemoryStore())
    out = executor.run(SimpleState(None), chain())
    want = out.results["grid"].state.meta["omega"].copy()
    if first == "hit":
        out = executor.run(SimpleState(None), chain())
        assert out.hits == ["grid", "phase"]
    with pytest.raises(ValueError, match="read-only"):
        out.results["grid"].state.meta["omega"] *= 2
    out.results["grid"].state.meta["omega"] = np.zeros(32)  # rebinding: the caller's copy only
    again = executor.run(SimpleState(None), chain())
    assert again.hits == ["grid", "phase"]
    np.testing.assert_array_equal(again.results["grid"].state.meta["omega"], want)


def test_a_stage_writing_into_a_cached_input_fails_clearly_and_corrupts_nothing() -> None:
    executor = DagExecutor(cache=MemoryStore())
    executor.run(SimpleState(None), chain())
    nodes = [chain()[0], NodeSpec(id="double", deps=["grid"], stage=Doubler(StageConfig()))]
    with pytest.raises(NodeFailedError) as caught:
        executor.run(SimpleState(None), nodes)
    error = caught.value.partial.failures["double"]
    assert type(error) is ValueError and "read-only" in str(error)  # numpy's own error
    [note] = error.__notes__
    assert note.startswith("raised by stage 'Doubler' in node 'double', ")
    again = executor.run(SimpleState(None), chain())
    assert again.hits == ["grid", "phase"]
    np.testing.assert_array_equal(
        again.results["grid"].state.meta["omega"], np.linspace(-1.0, 1.0, 32)
    )


def test_a_session_rerun_serves_the_original_after_the_caller_edits_results() -> None:
    session = LiveSession(chain(), SimpleState(None))
    first = session.run()
    want = first.results["phase"].state.meta["phase"].copy()
    first.results["phase"].state.meta["note"] = "edited"
    with pytest.raises(ValueError, match="read-only"):
        first.results["phase"].state.meta["phase"][:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        again = session.run()
    assert again.hits == ["grid", "phase"]
    np.testing.assert_array_equal(again.results["phase"].state.meta["phase"], want)
    assert "note" not in again.results["phase"].state.meta
