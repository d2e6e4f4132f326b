"""Attacks on the cache owner (``DagCache``) and early cutoff, without Dask: cutoff deciding a
node's previous result still holds when something it sees changed, an interrupt leaving what a
stage corrupted in the store, owners shared between DAGs, entries removed or replaced behind
the owner's back, targets runs, and an owner without a store.

Each broken attack is a strict xfail naming what goes wrong; the others are regression tests
(the Dask side is in test_attack_dask_filing.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage
from interrupts import InterruptOnDone
from stages.scribblers import (
    DelayCfg,
    LatePeak,
    Peak,
    Scribbler,
    SlowScribbler,
    culprit_and_peak,
)

from phys_pipeline.cache import DiskStore, MemoryStore
from phys_pipeline.dag import make_plan
from phys_pipeline.dag_cache import DagCache, open_cache
from phys_pipeline.errors import CorruptedInputError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.types import (
    DagState,
    NodeInputs,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

START = SimpleState(None)
REUSED = "cached: upstream output unchanged"


# --- stages: two laser lines and their beat note; a pinned FIR filter ---------------------------


class LineCfg(StageConfig):
    amplitude: float = 1.0
    label: str = "line"  # a tag: changes the key, never the output


class LaserLine(PipelineStage[SimpleState, LineCfg]):
    """Root: a constant field amplitude sampled on 8 points."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(np.full(8, self.cfg.amplitude)))


class Beat(PipelineStage[DagState, StageConfig]):
    """The beat note of a signal against a reference: their difference (its sign matters)."""

    def process(self, state: DagState, *, policy: PolicyBag | None = None) -> StageResult:
        beat = state.inputs["signal"].payload - state.inputs["reference"].payload
        return StageResult(SimpleState(beat), metrics={"beat": float(beat.sum())})


def beat_nodes(names: dict[str, str], label: str = "line") -> list[NodeSpec]:
    return [
        NodeSpec("probe", stage=LaserLine(LineCfg(amplitude=3.0, label=label))),
        NodeSpec("local_osc", stage=LaserLine(LineCfg(amplitude=1.0))),
        NodeSpec(
            "beat", ["probe", "local_osc"], Beat(StageConfig()), inputs=NodeInputs(names=names)
        ),
    ]


class FirFilter(PipelineStage[SimpleState, StageConfig]):
    """A FIR filter whose taps are an attribute beside its config; its code version is pinned
    by hand (``version``), so the taps reach the key by value, apart from the code."""

    version = "fir-1"

    def __init__(self, cfg: StageConfig, taps: list[float]) -> None:
        super().__init__(cfg)
        self.taps = np.asarray(taps, dtype=float)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = np.convolve(state.payload, self.taps, mode="same")
        return StageResult(SimpleState(out), metrics={"energy": float(np.sum(out**2))})


def fir_nodes(taps: list[float], label: str = "line") -> list[NodeSpec]:
    return [
        NodeSpec("line", stage=LaserLine(LineCfg(amplitude=2.0, label=label))),
        NodeSpec("fir", ["line"], FirFilter(StageConfig(), taps)),
    ]


class TaggedGridCfg(GridCfg):
    tag: str = ""  # a tag: changes the key, never the grid


class TaggedGrid(GridStage):
    """A frequency grid with a tag (what a relabelling edit changes)."""


def chain(gdd: float, tag: str = "") -> list[NodeSpec]:
    return [
        NodeSpec("grid", stage=TaggedGrid(TaggedGridCfg(N=16, tag=tag))),
        NodeSpec("phase", ["grid"], PhaseStage(PhaseCfg(gdd=gdd))),
        NodeSpec("again", ["phase"], PhaseStage(PhaseCfg(gdd=1.0))),
    ]


def span_chain(span: float, gdd: float) -> list[NodeSpec]:
    """A grid of 8 points over +-span, then two phases: two DAGs sharing node ids."""
    return [
        NodeSpec("grid", stage=GridStage(GridCfg(N=8, span=span))),
        NodeSpec("phase", ["grid"], PhaseStage(PhaseCfg(gdd=gdd))),
        NodeSpec("again", ["phase"], PhaseStage(PhaseCfg(gdd=2.0))),
    ]


def fresh_metrics(nodes: list[NodeSpec]) -> dict[str, float]:
    """What an uncached run computes: the ground truth."""
    return DagExecutor().run(START, nodes).metrics


def phases(result: DagRunResult) -> dict[str, np.ndarray]:
    return {nid: r.state.meta["phase"] for nid, r in result.results.items() if nid != "grid"}


# --- early cutoff: a node is reused only if nothing it sees changed ----------------------------


def test_swapped_input_names_with_an_unchanged_upstream_output_are_recomputed() -> None:
    executor = DagExecutor(cache=MemoryStore())
    first = executor.run(START, beat_nodes({"probe": "signal", "local_osc": "reference"}))
    assert first.metrics["beat.beat"] == pytest.approx(16.0)
    # the probe is relabelled (new key, same field) while the beat's inputs are swapped
    swapped = beat_nodes({"probe": "reference", "local_osc": "signal"}, label="relabelled")
    second = executor.run(START, swapped)
    assert second.metrics["beat.beat"] == pytest.approx(fresh_metrics(swapped)["beat.beat"])
    assert second.runs["beat"].reason != REUSED


def test_a_pinned_stage_with_new_attributes_is_recomputed_despite_an_unchanged_upstream() -> None:
    executor = DagExecutor(cache=MemoryStore())
    executor.run(START, fir_nodes([1.0, 1.0, 1.0]))
    narrowed = fir_nodes([0.0, 1.0, 0.0], label="relabelled")
    second = executor.run(START, narrowed)
    assert second.metrics["fir.energy"] == pytest.approx(fresh_metrics(narrowed)["fir.energy"])


def test_pinned_attributes_changed_alone_are_recomputed() -> None:
    """Without an upstream edit the changed key is simply not cached: the node recomputes."""
    executor = DagExecutor(cache=MemoryStore())
    executor.run(START, fir_nodes([1.0, 1.0, 1.0]))
    narrowed = fir_nodes([0.0, 1.0, 0.0])
    second = executor.run(START, narrowed)
    assert second.ran == ["fir"]
    assert second.metrics == fresh_metrics(narrowed)


def test_swapped_input_names_alone_are_recomputed() -> None:
    executor = DagExecutor(cache=MemoryStore())
    executor.run(START, beat_nodes({"probe": "signal", "local_osc": "reference"}))
    swapped = beat_nodes({"probe": "reference", "local_osc": "signal"})
    second = executor.run(START, swapped)
    assert second.ran == ["beat"]
    assert second.metrics["beat.beat"] == pytest.approx(-16.0)


# --- what a stage corrupted must not outlive the run ----------------------------------------------


def test_an_interrupt_after_a_stage_wrote_to_its_input_leaves_no_corrupted_entry(
    tmp_path: Path,
) -> None:
    nodes = culprit_and_peak(Scribbler(StageConfig()), Peak(StageConfig()))
    honest = fresh_metrics([nodes[0], nodes[2]])["peak.peak"]
    store = DiskStore(tmp_path)
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=1), cache=store, callbacks=[InterruptOnDone("peak")]
    )
    with pytest.raises(KeyboardInterrupt):
        executor.run(START, nodes, raise_on_error=False)
    again = DagExecutor(cache=store).run(START, [nodes[0], nodes[2]])
    assert again.metrics["peak.peak"] == honest == 1.0


def test_a_sibling_finished_before_the_culprit_returned_is_not_left_cached(
    tmp_path: Path,
) -> None:
    nodes = culprit_and_peak(SlowScribbler(DelayCfg(delay_s=1.0)), LatePeak(DelayCfg(delay_s=0.2)))
    store = DiskStore(tmp_path)
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=2), cache=store, callbacks=[InterruptOnDone("peak")]
    )
    with pytest.raises(KeyboardInterrupt):
        executor.run(START, nodes, raise_on_error=False)
    time.sleep(1.5)  # the culprit's thread finishes; nobody hears of it
    again = DagExecutor(cache=store).run(START, [nodes[0], nodes[2]])
    assert again.metrics["peak.peak"] == 1.0


def test_without_an_interrupt_the_corrupted_sibling_is_evicted(tmp_path: Path) -> None:
    nodes = culprit_and_peak(Scribbler(StageConfig()), Peak(StageConfig()))
    store = DiskStore(tmp_path)
    out = DagExecutor(scheduler=LocalScheduler(max_workers=1), cache=store).run(
        START, nodes, raise_on_error=False
    )
    assert set(out.failures) == {"culprit", "peak"}
    assert isinstance(out.failures["peak"], CorruptedInputError)  # never run on it
    assert not store.contains(out.plan.nodes["peak"].key)
    again = DagExecutor(cache=store).run(START, [nodes[0], nodes[2]])
    assert again.ran == ["grid", "peak"] and again.metrics["peak.peak"] == 1.0


# --- one owner, several DAGs ---------------------------------------------------------------------


def test_two_executors_sharing_one_owner_get_their_own_dags_answers() -> None:
    """The last plan is the other DAG's (same node ids): cutoff may reuse its results only
    where the inputs and everything else are the same, never across a config change."""
    owner = DagCache(MemoryStore())
    first, second = DagExecutor(cache=owner), DagExecutor(cache=owner)
    first.run(START, span_chain(span=1.0, gdd=10.0))
    other = span_chain(span=2.0, gdd=10.0)  # a different grid: nothing of the first holds
    out = second.run(START, other)
    assert out.ran == ["grid", "phase", "again"] and out.metrics == fresh_metrics(other)
    assert out.runs["grid"].reason == "config field span changed"  # relative to the other DAG
    third = span_chain(span=1.0, gdd=30.0)  # the first DAG's grid, another phase
    out = first.run(START, third)
    assert out.hits == ["grid"] and out.metrics == fresh_metrics(third)
    relabelled = span_chain(span=2.0, gdd=10.0)
    relabelled[0] = relabelled[0].replace(op_name="wide grid")  # op_name: not in the key
    out = second.run(START, relabelled)
    assert out.metrics == fresh_metrics(relabelled)


def test_cutoff_across_dags_sharing_an_owner_reuses_only_equal_inputs() -> None:
    owner = DagCache(MemoryStore())
    DagExecutor(cache=owner).run(START, beat_nodes({"probe": "signal", "local_osc": "reference"}))
    same = beat_nodes({"probe": "signal", "local_osc": "reference"}, label="other dag")
    out = DagExecutor(cache=owner).run(START, same)
    assert out.runs["beat"].reason == REUSED
    assert out.metrics["beat.beat"] == pytest.approx(16.0)
    louder = [
        NodeSpec("probe", stage=LaserLine(LineCfg(amplitude=5.0))),
        *beat_nodes({"probe": "signal", "local_osc": "reference"})[1:],
    ]
    out = DagExecutor(cache=owner).run(START, louder)
    assert out.runs["beat"].status == "ran" and out.metrics["beat.beat"] == pytest.approx(32.0)


def test_a_session_and_an_executor_on_one_owner_stay_right_through_edits(tmp_path: Path) -> None:
    owner = DagCache(DiskStore(tmp_path))
    executor = DagExecutor(cache=owner)
    session = LiveSession(chain(gdd=10.0), START, cache=owner, memory_bytes=1 << 20)
    assert session.executor.cache.backend.tiers[1] is owner.backend  # the same disk store
    executor.run(START, chain(gdd=20.0))
    session.update("phase", gdd=20.0)
    out = session.run()
    assert out.hits == ["grid", "phase", "again"]  # filed by the executor
    assert out.metrics == fresh_metrics(chain(gdd=20.0))
    out = executor.run(START, chain(gdd=20.0, tag="relabelled"))  # cutoff, from the session's
    assert out.runs["phase"].reason == REUSED
    session.rerun("phase")  # drops its entry from the session's tiers (the shared disk too)
    out = executor.run(START, chain(gdd=20.0))
    assert out.hits == ["grid", "phase", "again"]  # refiled by the session's rerun
    assert out.metrics == fresh_metrics(chain(gdd=20.0))
    session.update("phase", gdd=40.0)
    assert session.run().metrics == fresh_metrics(chain(gdd=40.0))
    session.update("grid", tag="relabelled")
    out = session.run()
    assert out.runs["phase"].reason == "cached: upstream output unchanged"
    assert out.metrics == fresh_metrics(chain(gdd=40.0, tag="relabelled"))


# --- entries changed behind the owner's back ------------------------------------------------------


def test_cutoff_after_a_co_user_cleared_the_store_recomputes(tmp_path: Path) -> None:
    executor = DagExecutor(cache=DiskStore(tmp_path))
    executor.run(START, beat_nodes({"probe": "signal", "local_osc": "reference"}))
    DiskStore(tmp_path).clear()  # another process prunes the cache
    relabelled = beat_nodes({"probe": "signal", "local_osc": "reference"}, label="relabelled")
    out = executor.run(START, relabelled)
    assert out.runs["beat"].reason != REUSED and "beat" in out.ran
    assert out.metrics["beat.beat"] == pytest.approx(16.0)


def test_cutoff_compares_with_what_the_children_read_not_what_the_store_holds_now(
    tmp_path: Path,
) -> None:
    """A co-user replaces the grid's entry with another grid under the same key after the
    run. The new grid equals what is in the store now, not what ``phase`` was computed from:
    cutoff must not reuse ``phase``."""
    executor = DagExecutor(cache=DiskStore(tmp_path))
    first = executor.run(START, span_chain(span=1.0, gdd=10.0))
    grid_key = first.plan.nodes["grid"].key
    impostor = DagExecutor().run(START, span_chain(span=2.0, gdd=10.0)).results["grid"]
    co_user = DiskStore(tmp_path)
    co_user.delete(grid_key)
    co_user.put(grid_key, impostor)
    edited = span_chain(span=2.0, gdd=10.0)
    out = executor.run(START, edited)
    assert out.metrics == fresh_metrics(edited)
    assert out.runs["phase"].reason != REUSED


def test_cutoff_after_the_previous_child_entry_was_evicted_recomputes(tmp_path: Path) -> None:
    executor = DagExecutor(cache=DiskStore(tmp_path))
    first = executor.run(START, chain(gdd=10.0))
    DiskStore(tmp_path).delete(first.plan.nodes["again"].key)  # evicted by a co-user's prune
    relabelled = chain(gdd=10.0, tag="relabelled")
    out = executor.run(START, relabelled)
    assert out.runs["phase"].reason == REUSED  # its entry is still there
    assert out.runs["again"].status == "ran"
    assert out.metrics == fresh_metrics(relabelled)


# --- targets, then everything ---------------------------------------------------------------------


def test_a_targets_run_then_full_runs_give_the_uncached_answer() -> None:
    executor = DagExecutor(cache=MemoryStore())
    executor.run(START, chain(gdd=10.0))
    edited = chain(gdd=25.0)
    partial = executor.run(START, edited, targets=["phase"])
    assert partial.ran == ["phase"] and "again" not in partial.runs
    full = executor.run(START, edited)
    assert full.ran == ["again"] and full.metrics == fresh_metrics(edited)
    relabelled = chain(gdd=25.0, tag="relabelled")
    partial = executor.run(START, relabelled, targets=["grid"])
    assert partial.ran == ["grid"]
    full = executor.run(START, relabelled)
    # compared with the targets run's plan, in which the grid had its new key already:
    # nothing to cut off from (a missed reuse, never a wrong one)
    assert full.ran == ["phase", "again"]
    assert {full.runs[n].reason for n in ("phase", "again")} == {"not cached"}
    assert full.metrics == fresh_metrics(relabelled)
    back = chain(gdd=10.0)
    partial = executor.run(START, back, targets=["grid"])
    assert partial.hits == ["grid"]
    full = executor.run(START, back)
    assert full.hits == ["grid", "phase", "again"] and full.metrics == fresh_metrics(back)


def test_a_targets_run_after_an_edit_never_lets_cutoff_reuse_the_unrun_nodes() -> None:
    """The targets run's plan holds keys nothing was filed under: the next run compares with
    that plan, and cutoff must find nothing to reuse rather than anything stale."""
    executor = DagExecutor(cache=MemoryStore())
    executor.run(START, span_chain(span=1.0, gdd=10.0))
    edited = span_chain(span=2.0, gdd=10.0)
    executor.run(START, edited, targets=["grid"])
    out = executor.run(START, edited)
    assert out.ran == ["phase", "again"] and out.metrics == fresh_metrics(edited)


# --- an owner without a store ---------------------------------------------------------------------


def test_a_store_less_owner_stores_nothing_cuts_off_nothing_and_offers_workers_nothing() -> None:
    owner = DagCache(None)
    assert owner.worker_store() is None
    executor = DagExecutor(cache=owner)
    executor.run(START, chain(gdd=10.0))
    again = executor.run(START, chain(gdd=10.0))
    assert again.ran == ["grid", "phase", "again"]
    assert {r.reason for r in again.runs.values()} == {"not cached"}
    relabelled = executor.run(START, chain(gdd=10.0, tag="relabelled"))
    assert relabelled.ran == ["grid", "phase", "again"]  # nothing to reuse: no cutoff
    assert relabelled.runs["phase"].reason == "upstream changed"
    edited = executor.run(START, chain(gdd=20.0, tag="relabelled"))
    assert edited.runs["phase"].reason == "config field gdd changed"
    assert edited.metrics == fresh_metrics(chain(gdd=20.0))
    plan = make_plan(chain(gdd=20.0), START)
    assert owner.early_cutoff(plan, owner.stale(plan)) is None
    owner.forget(plan.nodes.values())  # nothing to drop: no error
    owner.clear()
    assert owner.puts == owner.hits == owner.misses == 0
    assert open_cache(None).backend is None and open_cache(owner) is owner


def test_a_store_less_owner_with_a_memory_tier_is_a_memory_store_that_cuts_off() -> None:
    owner = open_cache(DagCache(None), memory_bytes=1 << 20)
    assert isinstance(owner.backend, MemoryStore)
    executor = DagExecutor(cache=owner)
    executor.run(START, chain(gdd=10.0))
    relabelled = chain(gdd=10.0, tag="relabelled")
    out = executor.run(START, relabelled)
    assert out.ran == ["grid"] and out.metrics == fresh_metrics(relabelled)
    assert {out.runs[n].reason for n in ("phase", "again")} == {REUSED}
    np.testing.assert_array_equal(
        phases(out)["again"], phases(DagExecutor().run(START, relabelled))["again"]
    )
