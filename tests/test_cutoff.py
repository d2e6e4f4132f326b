"""Early cutoff: a node rerun after an edit that produces the same output as before lets the
nodes below it load their previous results instead of running."""

from __future__ import annotations

import numpy as np
import pytest
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage
from pydantic import Field

from phys_pipeline.cache import DiskCache, MemoryStore
from phys_pipeline.dag_cache import DagCache
from phys_pipeline.executor import DagExecutor
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult


class ClipCfg(StageConfig):
    limit: float = Field(10.0, gt=0.0, description="largest |omega| kept")


class Clip(PipelineStage[SimpleState, ClipCfg]):
    """Clips the grid to +-limit: a limit beyond the grid's span changes nothing."""

    def process(self, state, *, policy=None):
        st = state.deepcopy()
        st.meta["omega"] = np.clip(st.meta["omega"], -self.cfg.limit, self.cfg.limit)
        return StageResult(state=st)


CALLS = {"phase": 0}


class Counted(PhaseStage):
    """A phase stage that counts its calls, so a test can see whether it ran. The counter
    is a global it reads, so it is declared untracked: otherwise every call would change the
    stage's key."""

    untracked = ("CALLS",)

    def process(self, state, *, policy=None):
        CALLS["phase"] += 1
        return super().process(state, policy=policy)


def chain(limit: float, gdd: float = 100.0) -> list[NodeSpec]:
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(N=32, span=1.0))),
        NodeSpec(id="clip", deps=["grid"], stage=Clip(ClipCfg(limit=limit))),
        NodeSpec(id="phase", deps=["clip"], stage=Counted(PhaseCfg(gdd=gdd))),
        NodeSpec(id="peak", deps=["phase"], stage=Counted(PhaseCfg(gdd=2 * gdd))),
    ]


def statuses(out):
    return {nid: run.status for nid, run in out.runs.items()}


@pytest.fixture(params=[1, 2], ids=["inline", "two-workers"])
def executor(request):
    return DagExecutor(
        scheduler=LocalScheduler(max_workers=request.param), cache=DagCache(MemoryStore())
    )


def test_an_edit_that_leaves_the_output_unchanged_stops_at_the_edited_node(executor):
    first = executor.run(SimpleState(None), chain(limit=10.0))
    CALLS["phase"] = 0
    out = executor.run(SimpleState(None), chain(limit=20.0))  # both beyond the span of 1.0
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "hit", "peak": "hit"}
    assert CALLS["phase"] == 0
    assert out.runs["phase"].reason == "cached: upstream output unchanged"
    assert out.metrics == first.metrics
    again = executor.run(SimpleState(None), chain(limit=20.0))
    assert statuses(again) == dict.fromkeys(statuses(out), "hit")
    assert {r.reason for r in again.runs.values()} == {"cached"}  # filed under the new keys


def test_an_edit_that_changes_the_output_reruns_everything_below(executor):
    executor.run(SimpleState(None), chain(limit=10.0))
    CALLS["phase"] = 0
    out = executor.run(SimpleState(None), chain(limit=0.5))  # now it clips
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "ran", "peak": "ran"}
    assert CALLS["phase"] == 2


def test_a_node_whose_own_config_changed_runs_even_below_an_unchanged_output(executor):
    executor.run(SimpleState(None), chain(limit=10.0))
    out = executor.run(SimpleState(None), chain(limit=20.0, gdd=50.0))
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "ran", "peak": "ran"}


def test_cutoff_can_be_switched_off():
    executor = DagExecutor(cache=DagCache(MemoryStore()), early_cutoff=False)
    executor.run(SimpleState(None), chain(limit=10.0))
    out = executor.run(SimpleState(None), chain(limit=20.0))
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "ran", "peak": "ran"}


def test_cutoff_reads_previous_outputs_from_a_disk_cache(tmp_path):
    DagExecutor(cache=DiskCache(tmp_path)).run(SimpleState(None), chain(limit=10.0))
    executor = DagExecutor(cache=DiskCache(tmp_path))  # a new session: no digests in memory
    executor.run(SimpleState(None), chain(limit=10.0))
    out = executor.run(SimpleState(None), chain(limit=20.0))
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "hit", "peak": "hit"}


def test_a_node_whose_previous_entry_is_gone_runs_and_the_one_below_still_loads():
    """The previous result of ``phase`` is gone: it runs. ``peak``'s previous result recorded
    the digest of the input it was computed from, which ``phase`` produces again: it loads."""
    store = MemoryStore()
    executor = DagExecutor(cache=DagCache(store))
    first = executor.run(SimpleState(None), chain(limit=10.0))
    store.delete(first.runs["phase"].cache_key)
    out = executor.run(SimpleState(None), chain(limit=20.0))
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "ran", "peak": "hit"}
    assert out.runs["peak"].reason == "cached: upstream output unchanged"


def test_a_previous_result_without_an_input_digest_is_not_reused():
    """Entries written without the mutation check record no input digest: never cut off."""
    store = MemoryStore()
    unchecked = DagExecutor(cache=DagCache(store), check_mutation=False)
    unchecked.run(SimpleState(None), chain(limit=10.0))
    out = unchecked.run(SimpleState(None), chain(limit=20.0))
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "ran", "peak": "ran"}


def test_without_a_cache_nothing_is_cut_off():
    executor = DagExecutor()
    executor.run(SimpleState(None), chain(limit=10.0))
    out = executor.run(SimpleState(None), chain(limit=20.0))
    assert set(statuses(out).values()) == {"ran"}


class Const(PipelineStage[SimpleState, StageConfig]):
    def process(self, state, *, policy=None):
        return StageResult(state=SimpleState(payload=1.0))


def test_a_merge_is_cut_off_only_when_every_changed_parent_kept_its_output():
    def nodes(a_tag: str, b_limit: float) -> list[NodeSpec]:
        return [
            NodeSpec(id="grid", stage=GridStage(GridCfg(N=16))),
            NodeSpec(id="a", deps=["grid"], stage=Clip(ClipCfg(limit=5.0, tags={"t": a_tag}))),
            NodeSpec(id="b", deps=["grid"], stage=Clip(ClipCfg(limit=b_limit))),
            NodeSpec(id="m", deps=["a", "b"], stage=Const(StageConfig())),
        ]

    executor = DagExecutor(cache=DagCache(MemoryStore()))
    executor.run(SimpleState(None), nodes("x", 5.0))
    same = executor.run(SimpleState(None), nodes("y", 6.0))
    assert statuses(same)["m"] == "hit"
    changed = executor.run(SimpleState(None), nodes("z", 0.5))
    assert statuses(changed)["m"] == "ran"


class CountingStore(MemoryStore):
    """A memory store that counts the reads of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    def get(self, key):
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key)


def test_an_input_the_previous_result_was_not_computed_from_rules_it_out_unread():
    """The cache owner remembers each entry's input digest (``input_digest_hint``): a node
    whose input changed is not reused, and its previous entry is not even read."""
    store = CountingStore()
    executor = DagExecutor(cache=DagCache(store))
    first = executor.run(SimpleState(None), chain(limit=10.0))
    store.reads.clear()
    out = executor.run(SimpleState(None), chain(limit=0.5))  # clip's output changes
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "ran", "peak": "ran"}
    assert store.reads.get(first.runs["phase"].cache_key, 0) == 0
    assert store.reads.get(first.runs["peak"].cache_key, 0) == 0


def test_the_remembered_input_digest_never_rules_a_reuse_in():
    """The entry under the previous key is replaced by one computed from another input (a
    co-user's): the remembered digest still matches the input, but only the entry's own
    record can allow a reuse, so ``phase`` runs."""
    store = MemoryStore()
    executor = DagExecutor(cache=DagCache(store))
    first = executor.run(SimpleState(None), chain(limit=10.0))
    key = first.runs["phase"].cache_key
    other = store.get(key)
    other.provenance = {**other.provenance, "input_digest": "0" * 32}
    store.delete(key)
    store.put(key, other)
    CALLS["phase"] = 0
    out = executor.run(SimpleState(None), chain(limit=20.0))  # clip's output is unchanged
    assert statuses(out)["phase"] == "ran" and CALLS["phase"] >= 1


def test_a_plan_made_without_cutoff_keys_never_lets_a_node_be_cut_off():
    """An executor with nothing to load from (or early cutoff off) plans without the keys
    cutoff compares (``NodePlan.own`` empty); a cache shared with an executor that cuts off
    then compares nothing with them: its nodes run."""
    cache = DagCache(MemoryStore())
    DagExecutor(cache=cache, early_cutoff=False).run(SimpleState(None), chain(limit=10.0))
    assert {node.own for node in cache.previous.nodes.values()} == {""}
    out = DagExecutor(cache=cache).run(SimpleState(None), chain(limit=20.0))
    assert statuses(out) == {"grid": "hit", "clip": "ran", "phase": "ran", "peak": "ran"}
