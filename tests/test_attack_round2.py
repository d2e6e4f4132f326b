"""Attacks on last session's shortcuts, each of which could show a wrong answer without a word
if it were wrong: a scheduler's idle worker threads kept for its next run, the run history
reusing an unchanged node's recorded config values, the artifact view reusing what it drew
for a revisited setup, the 2.0.0 form of sweep ids, and 2.0.0's ``put(key, meta, arrays)``
and ``SharedDiskCache`` on our signed disk store. Each test asserts the right behaviour."""

from __future__ import annotations

import base64
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ConfigDict, Field

from phys_pipeline._v2.cache import DiskCache, SharedDiskCache
from phys_pipeline.cache import CacheWarning, MemoryStore
from phys_pipeline.errors import ConfigError, SweepError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.history import RunHistory
from phys_pipeline.policy import PolicyBag
from phys_pipeline.progress import report_progress
from phys_pipeline.retry import RetryPolicy
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    DagState,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

START = SimpleState(None)


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Wait for something another thread does (a bound, never a timing assert)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


# --- 1. a scheduler's worker threads kept for its next run ------------------------------------

# a gated node of gain g says it began (ENTERED[g]) and computes until the test opens GATES[g]
GATES: dict[float, threading.Event] = {}
ENTERED: dict[float, threading.Event] = {}


@pytest.fixture
def gates() -> Iterator[Callable[..., None]]:
    """Makes fresh gates for the gains given; every gate is opened when the test ends, so no
    abandoned node outlives it."""

    def make(*gains: float) -> None:
        for gain in gains:
            GATES[gain], ENTERED[gain] = threading.Event(), threading.Event()

    yield make
    for gate in GATES.values():
        gate.set()
    GATES.clear()
    ENTERED.clear()


class GainCfg(StageConfig):
    gain: float = 1.0


class Gated(PipelineStage[SimpleState, GainCfg]):
    """An amplifier whose integration runs until the test lets it finish."""

    untracked = ("GATES", "ENTERED")  # the test's gates, not physics

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        gain = self.cfg.gain
        ENTERED[gain].set()
        GATES[gain].wait(30)
        report_progress(1.0, f"gain {gain}")
        return StageResult(SimpleState(gain), metrics={"gain": gain})


class Quick(PipelineStage[SimpleState, GainCfg]):
    """An amplifier that needs no gate."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        report_progress(1.0, f"gain {self.cfg.gain}")
        return StageResult(SimpleState(self.cfg.gain), metrics={"gain": self.cfg.gain})


class CtrlC(PipelineStage[SimpleState, GainCfg]):
    """Presses Ctrl-C from inside its stage once the gated node of gain 1 computes."""

    untracked = ("ENTERED",)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        ENTERED[1.0].wait(30)
        raise KeyboardInterrupt


class Heard:
    """Run callbacks: every gain a done or progress event carried, by node."""

    def __init__(self) -> None:
        self.done: list[tuple[str, float]] = []
        self.progress: list[tuple[str, str]] = []

    def on_done(self, node_id: str, result: StageResult, cache_hit: bool) -> None:
        self.done.append((node_id, result.metrics["gain"]))

    def on_progress(self, node_id: str, fraction: float, message: str) -> None:
        self.progress.append((node_id, message))


def amp(gain: float, stage: type[PipelineStage] = Gated) -> list[NodeSpec]:
    return [NodeSpec("amp", stage=stage(GainCfg(gain=gain)))]


def in_thread(run: Callable[[], DagRunResult]) -> tuple[threading.Thread, list[Any]]:
    """Start ``run`` on a thread; the list gets its result (or the exception it raised)."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(run())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


@pytest.mark.timeout(60)
def test_a_cancelled_run_s_late_node_reaches_neither_the_next_run_nor_the_next_key(
    gates: Callable[..., None],
) -> None:
    """Run 1 (gain 1) is stopped while its node computes; run 2 (gain 2) starts on the same
    executor, and run 1's node completes in the middle of it: run 2 and its hooks hear only
    gain 2, the cache keeps each result under its own key, and a return to gain 1 loads 1."""
    gates(1.0, 2.0)
    store = MemoryStore()
    executor = DagExecutor(scheduler=LocalScheduler(inline=False), cache=store)
    threading.Thread(target=lambda: ENTERED[1.0].wait(30) and executor.cancel()).start()
    first = executor.run(START, amp(1.0), raise_on_error=False)
    assert first.cancelled == ["amp"] and not GATES[1.0].is_set()
    key_1 = first.runs["amp"].cache_key

    heard = Heard()
    thread, out = in_thread(lambda: executor.run(START, amp(2.0), callbacks=[heard]))
    assert ENTERED[2.0].wait(30)
    GATES[1.0].set()  # run 1's node completes while run 2 computes
    wait_until(lambda: store.contains(key_1), "the late result of run 1 to be filed")
    GATES[2.0].set()
    thread.join(30)
    (second,) = out
    assert second.results["amp"].metrics == {"gain": 2.0}
    assert heard.done == [("amp", 2.0)] and heard.progress == [("amp", "gain 2.0")]
    assert store.get(second.runs["amp"].cache_key).metrics == {"gain": 2.0}
    assert store.get(key_1).metrics == {"gain": 1.0}  # filed under its own key: it is right
    back = executor.run(START, amp(1.0))
    assert back.hits == ["amp"] and back.results["amp"].metrics == {"gain": 1.0}


@pytest.mark.timeout(60)
def test_a_stage_pressing_ctrl_c_leaves_no_thread_the_next_run_would_wait_behind(
    gates: Callable[..., None],
) -> None:
    """A stage raising KeyboardInterrupt on a worker thread ends the run while a sibling
    computes: the next run on the scheduler, with another gain, runs at once (its threads are
    not the abandoned one's) and shows its own gain, also once the sibling completes late."""
    gates(1.0)
    store = MemoryStore()
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=2), cache=store)
    nodes = [
        NodeSpec("amp", stage=Gated(GainCfg(gain=1.0))),
        NodeSpec("ctrl_c", stage=CtrlC(GainCfg())),
    ]
    with pytest.raises(KeyboardInterrupt) as caught:
        executor.run(START, nodes)
    assert "amp" in caught.value.partial.cancelled  # type: ignore[attr-defined]
    nodes = [NodeSpec("amp", stage=Quick(GainCfg(gain=3.0))), nodes[1]]
    heard = Heard()
    second = executor.run(START, nodes[:1], callbacks=[heard])
    assert not GATES[1.0].is_set()  # finished while the abandoned node still computed
    assert second.results["amp"].metrics == {"gain": 3.0} and heard.done == [("amp", 3.0)]
    late_key = caught.value.partial.runs["amp"].cache_key  # type: ignore[attr-defined]
    GATES[1.0].set()
    wait_until(lambda: store.contains(late_key), "the abandoned node's late result")
    assert second.results["amp"].metrics == {"gain": 3.0} and heard.done == [("amp", 3.0)]
    assert executor.run(START, nodes[:1]).results["amp"].metrics == {"gain": 3.0}


# the first attempt of a timed node computes until the test opens its gate; later ones do not
ATTEMPTS: list[float] = []
HUNG: list[threading.Thread] = []  # the thread of the first attempt


class FirstAttemptHangs(PipelineStage[SimpleState, GainCfg]):
    """A solver whose first attempt hangs (a stuck licence server); a retry converges."""

    untracked = ("ATTEMPTS", "HUNG", "GATES", "ENTERED")

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        gain = self.cfg.gain
        ATTEMPTS.append(gain)
        if ATTEMPTS.count(gain) == 1:
            HUNG.append(threading.current_thread())
            ENTERED[gain].set()
            GATES[gain].wait(30)
            gain = -gain  # what the given-up attempt would say: never to be seen
        return StageResult(SimpleState(gain), metrics={"gain": gain})


@pytest.mark.timeout(60)
def test_an_attempt_given_up_on_reaches_neither_its_run_nor_the_next_one(
    gates: Callable[..., None],
) -> None:
    gates(4.0)
    ATTEMPTS.clear()
    HUNG.clear()
    store = MemoryStore()
    executor = DagExecutor(
        scheduler=LocalScheduler(inline=False),
        cache=store,
        retry=RetryPolicy(max_retries=1, timeout_s=0.3, backoff_s=0.0),
    )
    first = executor.run(START, amp(4.0, FirstAttemptHangs))
    assert first.results["amp"].metrics == {"gain": 4.0}
    assert first.runs["amp"].attempts == 2
    heard = Heard()
    second = executor.run(START, amp(5.0, Quick), callbacks=[heard])
    assert not GATES[4.0].is_set()  # not queued behind the hung attempt's thread
    GATES[4.0].set()
    HUNG[0].join(30)  # its pool was let go: the thread ends once the late outcome is handled
    assert not HUNG[0].is_alive()
    assert store.get(first.runs["amp"].cache_key).metrics == {"gain": 4.0}
    assert second.results["amp"].metrics == {"gain": 5.0} and heard.done == [("amp", 5.0)]


@pytest.mark.timeout(60)
def test_two_runs_at_once_on_one_executor_keep_their_own_results_and_hooks(
    gates: Callable[..., None],
) -> None:
    gates(6.0, 7.0)
    executor = DagExecutor(scheduler=LocalScheduler(inline=False), cache=MemoryStore())
    executor.run(START, amp(8.0, Quick))  # leaves its thread idle for the next run to take
    heard = {6.0: Heard(), 7.0: Heard()}
    runs = {
        gain: in_thread(lambda g=gain: executor.run(START, amp(g), callbacks=[heard[g]]))
        for gain in (6.0, 7.0)
    }
    assert ENTERED[6.0].wait(30) and ENTERED[7.0].wait(30)  # both compute at once
    GATES[7.0].set()
    GATES[6.0].set()
    for gain, (thread, out) in runs.items():
        thread.join(30)
        (result,) = out
        assert result.results["amp"].metrics == {"gain": gain}
        assert heard[gain].done == [("amp", gain)]
        assert heard[gain].progress == [("amp", f"gain {gain}")]


def test_progress_of_a_node_on_a_kept_thread_goes_to_its_own_run_s_listeners() -> None:
    """A kept worker thread carries no reporter from the run before into the next."""
    scheduler = LocalScheduler(inline=False)
    listening, again = Heard(), Heard()
    DagExecutor(scheduler=scheduler).run(START, amp(1.0, Quick), callbacks=[listening])
    DagExecutor(scheduler=scheduler).run(START, amp(2.0, Quick))  # nobody listens
    DagExecutor(scheduler=scheduler, callbacks=[again]).run(START, amp(3.0, Quick))
    assert listening.progress == [("amp", "gain 1.0")]
    assert again.progress == [("amp", "gain 3.0")]


# --- 2. the run history reusing an unchanged node's recorded config values --------------------


class OffsetCfg(StageConfig):
    offset: float = 0.0  # a detuning, fs: -0.0 and 0.0 share a key (they compute alike)


class Detune(PipelineStage[SimpleState, OffsetCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(self.cfg.offset), metrics={"offset": self.cfg.offset})


class NanCfg(OffsetCfg):
    """A detuning beside a calibration not measured yet (NaN)."""

    calibration: float = float("nan")


class NoteCfg(OffsetCfg):
    """A detuning with a lab note that model_dump leaves out."""

    note: str = Field("", exclude=True)


class OpenCfg(StageConfig):
    """A config that takes fields it does not declare (2.0.0 code's habit)."""

    model_config = ConfigDict(extra="allow", frozen=False)
    offset: float = 0.0


def detune_session(cfg: StageConfig | None = None) -> LiveSession:
    return LiveSession([NodeSpec("detune", stage=Detune(cfg or OffsetCfg()))], START)


def recorded(live: LiveSession, number: int) -> dict[str, Any]:
    return live.history.run(number).nodes["detune"].config


def sign(value: float) -> float:
    return float(np.copysign(1.0, value))


def test_a_config_edited_to_an_equal_hash_is_recorded_and_restored_as_it_ran() -> None:
    """-0.0 equals 0.0 (and once hashed alike): the record of the run with -0.0 must say
    -0.0, the value set, and give it back on restore (reusing run 1's recorded values said
    0.0, and restore refused, claiming an edit in place that never happened)."""
    live = detune_session()
    live.run()
    live.update("detune", offset=-0.0)
    assert live.run().ran == ["detune"]  # a stage may tell the zeros apart (copysign)
    assert sign(recorded(live, 2)["offset"]) == -1.0
    assert sign(recorded(live, 1)["offset"]) == 1.0
    assert [str(change) for change in live.history.run(2).changes] == ["detune.offset: 0.0 -> -0.0"]
    live.restore(1)
    assert sign(live.config("detune").offset) == 1.0
    live.restore(2)
    assert sign(live.config("detune").offset) == -1.0


def test_a_config_written_to_in_place_between_runs_is_recorded_as_it_ran() -> None:
    """``object.__setattr__`` past a frozen config, to a value equal to the old one: the next
    run's record says what the config held, and run 1's restore says it was written to."""
    live = detune_session()
    live.run()
    object.__setattr__(live.config("detune"), "offset", -0.0)
    live.run()
    assert sign(recorded(live, 2)["offset"]) == -1.0
    with pytest.raises(ConfigError, match="written to in place"):
        live.restore(1)


def test_a_field_edited_beside_a_nan_says_only_what_changed() -> None:
    live = detune_session(NanCfg())
    live.run()
    live.update("detune", offset=2.0)
    live.run()
    assert [str(change) for change in live.history.run(2).changes] == ["detune.offset: 0.0 -> 2.0"]


def test_a_field_left_out_of_dumps_is_recorded_as_it_ran() -> None:
    live = detune_session(NoteCfg())
    live.run()
    live.update("detune", note="after realignment")
    live.run()
    assert recorded(live, 1)["note"] == "" and recorded(live, 2)["note"] == "after realignment"


def test_a_mutable_default_changed_in_place_after_a_run_leaves_that_run_s_record_alone() -> None:
    live = detune_session()
    live.run()
    live.config("detune").tags["fibre"] = "PM980"  # the shared default dict, written to
    live.run()
    assert recorded(live, 1)["tags"] == {} and recorded(live, 2)["tags"] == {"fibre": "PM980"}
    assert live.history.run(2).changes[0].field == "tags"


def test_extra_fields_of_an_open_config_are_recorded_as_they_ran() -> None:
    live = detune_session(OpenCfg(offset=1.0, fibre="SMF-28"))
    live.run()
    live.config("detune").fibre = "PM980"  # an extra field, set in place
    live.run()
    assert recorded(live, 1)["fibre"] == "SMF-28" and recorded(live, 2)["fibre"] == "PM980"


def test_a_history_loaded_from_json_is_continued_with_the_values_that_ran(
    tmp_path: Path,
) -> None:
    live = detune_session()
    live.run()
    live.history = RunHistory.load(live.history.save(tmp_path / "history.json"))
    live.update("detune", offset=-0.0)
    live.run()
    assert sign(recorded(live, 2)["offset"]) == -1.0


# --- 4. sweep ids in 2.0.0's form: s__a-0.1_b-x y ---------------------------------------------


class AnyCfg(StageConfig):
    """Takes any value, so a sweep can set 1, 1.0, True or '1' as given."""

    a: Any = 0
    b: Any = 0


class Echo(PipelineStage[SimpleState, AnyCfg]):
    """Says what it was set to."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState((self.cfg.a, self.cfg.b)))


class Relay(PipelineStage[SimpleState, AnyCfg]):
    """Hands on what its parent says (a fibre span below the swept source)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(state.payload))


class Pair(PipelineStage[DagState, AnyCfg]):
    """Pairs what its two parents say."""

    def process(self, state: DagState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState((state["left"].payload, state["right"].payload)))


def swept(grid: dict[str, list[Any]], below: list[NodeSpec] = ()) -> list[NodeSpec]:
    return expand_sweep([NodeSpec("s", stage=Echo(AnyCfg())), *below], [SweepSpec("s", grid)])


def same(a: Any, b: Any) -> bool:
    """Equal and of one type, -0.0 told from 0.0 and an array compared by content."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return type(a) is type(b) and repr(a) == repr(b)


@pytest.mark.parametrize(
    "values",
    [[1, "1"], [1, 1.0, True], [0.0, -0.0], [0.1, np.float64(0.1)], ["x__y", "x", "x_a-1"]],
    ids=["int-str", "int-float-bool", "signed-zeros", "float-numpy", "separators"],
)
def test_sweep_values_that_print_alike_get_ids_of_their_own_and_run_as_given(
    values: list[Any],
) -> None:
    nodes = swept({"a": values})
    assert len({n.id for n in nodes}) == len(values)
    result = DagExecutor().run(START, nodes)
    for node, value in zip(nodes, values, strict=True):
        assert same(node.sweep.params["a"], value)
        assert same(result.results[node.id].state.payload[0], value)


@pytest.mark.parametrize(
    ("grid", "values"),
    [
        ({"a": ["1_b-2", "1"], "b": ["3", "2_b-3"]}, "'1_b-2'"),
        ({"a": [float("nan"), float("nan")]}, "nan"),
        ({"a": [np.arange(3000), np.arange(3000) + (np.arange(3000) == 1500)]}, "array"),
    ],
    ids=["separators-in-values", "nan-twice", "arrays-printed-alike"],
)
def test_sweep_points_whose_ids_would_collide_are_a_sweep_error_naming_node_and_values(
    grid: dict[str, list[Any]], values: str
) -> None:
    with pytest.raises(SweepError, match=rf"node 's' with \{{'a': {values}.*both get the id"):
        expand_sweep([NodeSpec("s", stage=Echo(AnyCfg()))], [SweepSpec("s", grid, mode="zip")])


def test_a_variant_id_taken_by_a_node_of_the_dag_is_a_sweep_error() -> None:
    with pytest.raises(SweepError, match=r"node 's' with \{'a': 'x'\} and node 's__a-x'"):
        swept({"a": ["x"]}, [NodeSpec("s__a-x", stage=Echo(AnyCfg()))])


@pytest.mark.parametrize(
    "values",
    [[1, True], [0.0, -0.0], [np.zeros(2), np.ones(2)]],
    ids=["one-and-true", "signed-zeros", "arrays"],
)
def test_a_merge_below_a_swept_node_pairs_each_grid_point_with_itself(values: list[Any]) -> None:
    """Two branches of one sweep meet: each merge variant reads both branches of its own grid
    point, never 1 with True (equal under ==) or an array with another (no single truth)."""
    diamond = [
        NodeSpec("left", ["s"], Relay(AnyCfg())),
        NodeSpec("right", ["s"], Relay(AnyCfg())),
        NodeSpec("merge", ["left", "right"], Pair(AnyCfg())),
    ]
    nodes = swept({"a": values}, diamond)
    merges = [n for n in nodes if n.sweep is not None and n.sweep.base_id == "merge"]
    assert len(merges) == len(values)
    result = DagExecutor().run(START, nodes)
    for merge, value in zip(merges, values, strict=True):
        left, right = result.results[merge.id].state.payload
        assert same(left[0], value) and same(right[0], value)
        assert same(merge.sweep.params["a"], value)


# --- 5. 2.0.0's put(key, meta, arrays) and SharedDiskCache on our signed disk store -----------


def quietly(call: Callable[[], Any]) -> Any:
    """``call`` with the 2.0.0 forms' deprecation warnings (and the shared-key one) hushed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", CacheWarning)
        return call()


def entry_dirs(root: Path) -> set[Path]:
    return {meta.parent for meta in root.rglob("meta.json")}


def shot(number: float) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return {"shot": number}, {"field": np.full(3, number)}


def test_2_0_0_keys_that_differ_only_in_case_keep_entries_of_their_own(
    tmp_path: Path, isolated_cache_key: Path
) -> None:
    """2.0.0's keys are any text: 'CAFE...' and 'cafe...' are two keys (the first was
    lowercased into our key space, where the second lives, and read the second's data)."""
    cache = DiskCache(tmp_path / "cache")
    upper, lower = "CAFEBABECAFEBABE", "cafebabecafebabe"
    quietly(lambda: cache.put(upper, *shot(1.0)))
    quietly(lambda: cache.put(lower, *shot(2.0)))
    assert cache.get(upper)["meta"] == {"shot": 1.0}
    assert cache.get(lower)["meta"] == {"shot": 2.0}
    result = StageResult(SimpleState(3.0))
    quietly(lambda: cache.put("ABCDEF0123456789", result))  # a result under such a key
    assert cache.get("ABCDEF0123456789").state.payload == 3.0
    assert quietly(lambda: cache.exists("ABCDEF0123456789"))
    assert cache.get("abcdef0123456789") is None


def test_an_entry_moved_under_another_2_0_0_key_is_a_miss(
    tmp_path: Path, isolated_cache_key: Path
) -> None:
    root = tmp_path / "cache"
    cache = DiskCache(root)
    quietly(lambda: cache.put("pulse 1", *shot(1.0)))
    first = entry_dirs(root)
    quietly(lambda: cache.put("pulse 2", *shot(2.0)))
    (second,) = entry_dirs(root) - first
    (source,) = first
    shutil.rmtree(second)
    source.rename(second)  # pulse 1's signed entry, where pulse 2's lives
    with pytest.warns(CacheWarning):
        assert cache.get("pulse 2") is None


def test_without_the_shared_key_one_user_never_reads_another_s_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache_key: Path
) -> None:
    """Two users of one directory, each signing with a key of their own (no
    PHYS_PIPELINE_CACHE_KEY): what either puts under a 2.0.0 key or a node's key is a miss
    for the other, whose runs compute their own results."""
    shared = tmp_path / "shared"
    alice = quietly(lambda: SharedDiskCache(shared))
    quietly(lambda: alice.put("pulse 1", *shot(1.0)))
    nodes = [NodeSpec("amp", stage=Quick(GainCfg(gain=2.0)))]
    first = DagExecutor(cache=alice).run(START, nodes)
    key = first.runs["amp"].cache_key

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "bob"))
    bob = quietly(lambda: SharedDiskCache(shared))
    assert quietly(lambda: bob.get("pulse 1")) is None
    quietly(lambda: bob.put("pulse 1", *shot(-1.0)))  # replaces alice's, as 2.0.0 did
    forged = StageResult(SimpleState(-2.0), metrics={"gain": -2.0})
    bob.delete(key)
    bob.put(key, forged)  # bob's own result under alice's node key
    assert DagExecutor(cache=bob).run(START, nodes).hits == ["amp"]  # bob reads his own

    assert quietly(lambda: alice.get("pulse 1")) is None  # never bob's data
    again = quietly(lambda: DagExecutor(cache=alice).run(START, nodes))
    assert again.ran == ["amp"] and again.results["amp"].metrics == {"gain": 2.0}


# --- 3. the artifact view reusing what it drew for a revisited setup ---------------------------


class WidthCfg(StageConfig):
    width: float = 1.0


class ScratchFigure(PipelineStage[SimpleState, WidthCfg]):
    """Draws its plot into a figure of its own, cleared first: one figure object for every
    result (the stage's copies after an edit share it), which holds no input (untracked)."""

    untracked = ("figure",)

    def __init__(self, cfg: WidthCfg) -> None:
        from matplotlib.figure import Figure

        super().__init__(cfg)
        self.figure = Figure(figsize=(2, 1), dpi=50)

    def value(self) -> float:
        return self.cfg.width

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        value = self.value()
        self.figure.clear()
        self.figure.gca().plot([0.0, value], [0.0, 1.0])
        return StageResult(
            SimpleState(value), metrics={"value": value}, artifacts={"plot": self.figure}
        )


SHOTS: list[float] = []


class MonteCarloShot(ScratchFigure):
    """A shot of a Monte Carlo run: each run draws another value."""

    untracked = ("figure", "SHOTS")

    def value(self) -> float:
        SHOTS.append(float(len(SHOTS) + 1))
        return SHOTS[-1]


@pytest.fixture
def widgets() -> None:
    pytest.importorskip("ipywidgets")
    pytest.importorskip("matplotlib")


def watched_png(view: Any, node_id: str) -> bytes:
    (png,) = [
        base64.b64decode(o["data"]["image/png"])
        for o in view.panels[node_id].output.outputs
        if "image/png" in o["data"]
    ]
    return png


def fresh_png(figure: Any) -> bytes:
    from phys_pipeline.views import figure_png

    return figure_png(figure)


def test_a_figure_object_a_stage_draws_again_is_shown_as_drawn_for_each_result(
    widgets: None,
) -> None:
    """The edit's run hands out the same figure object, drawn anew: the view shows the new
    drawing (it showed the first run's beside the new metrics, and kept it for the new key),
    and the revisit shows the first result's drawing, which the figure no longer holds."""
    from phys_pipeline.widgets import ArtifactView

    live = LiveSession(
        [
            NodeSpec("spectrum", stage=ScratchFigure(WidthCfg())),
            NodeSpec("end", ["spectrum"], Relay(AnyCfg())),
        ],
        START,
    )
    view = ArtifactView(live, "end", watched=["spectrum"])
    first = live.run()
    figure = first.results["spectrum"].artifacts["plot"]
    width_1 = watched_png(view, "spectrum")
    assert width_1 == fresh_png(figure)
    live.update("spectrum", width=3.0)
    second = live.run()
    assert second.results["spectrum"].artifacts["plot"] is figure  # drawn again in place
    width_3 = fresh_png(figure)
    assert width_3 != width_1
    assert watched_png(view, "spectrum") == width_3
    assert live.executor.cache.figures(second.runs["spectrum"].cache_key)["plot"][1] == width_3
    live.update("spectrum", width=1.0)
    assert live.run().hits == ["spectrum", "end"]
    assert watched_png(view, "spectrum") == width_1


def test_a_rerun_that_draws_its_figure_object_again_shows_the_new_drawing(widgets: None) -> None:
    from phys_pipeline.widgets import ArtifactView

    SHOTS.clear()
    live = LiveSession(
        [
            NodeSpec("shot", stage=MonteCarloShot(WidthCfg())),
            NodeSpec("end", ["shot"], Relay(AnyCfg())),
        ],
        START,
    )
    view = ArtifactView(live, "end", watched=["shot"])
    live.run()
    first = watched_png(view, "shot")
    rerun = live.rerun("shot")
    assert rerun.results["shot"].metrics == {"value": 2.0}
    assert watched_png(view, "shot") == fresh_png(rerun.results["shot"].artifacts["plot"])
    assert watched_png(view, "shot") != first
