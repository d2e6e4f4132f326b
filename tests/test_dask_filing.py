"""Workers file results in a shared cache themselves: on a real LocalCluster with a disk store,
states never travel to the driver unless it reads them, and nothing is ever served wrong for it
(other keys, a removed entry, an uncacheable node, early cutoff, a session's memory tier)."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from stages.beams import Amplifier, BeamCfg, GainCfg, GaussianBeam

pytest.importorskip("distributed")

from distributed import Client

from phys_pipeline.cache import DiskStore, MemoryStore
from phys_pipeline.dag_cache import DagCache, FiledResult
from phys_pipeline.dask import DaskScheduler
from phys_pipeline.errors import CacheError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import NodeSpec, SimpleState, StageResult


class EnvGain(Amplifier):
    """Reads its gain from the environment: its key cannot cover that, so it is uncacheable."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        gain = float(os.environ.get("TEST_FILING_GAIN", "1"))
        return StageResult(SimpleState(state.payload * gain))


def beam(gain: float = 2.0, tag: str = "") -> list[NodeSpec]:
    return [
        NodeSpec("field", stage=GaussianBeam(BeamCfg(n=4096))),
        NodeSpec("amp", ["field"], Amplifier(GainCfg(gain=gain, tag=tag))),
        NodeSpec("again", ["amp"], Amplifier(GainCfg(gain=3.0))),
    ]


START = SimpleState(None)


def local_run(nodes: list[NodeSpec]) -> dict[str, np.ndarray]:
    result = DagExecutor().run(START, nodes)
    return {nid: r.state.payload for nid, r in result.results.items()}


def test_workers_file_results_and_the_driver_gets_only_receipts(
    client: Client, tmp_path: Path
) -> None:
    store = DiskStore(tmp_path)
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=store)
    result = executor.run(START, beam())
    assert {type(r) for r in result.results.values()} == {FiledResult}
    assert executor.cache.puts == 3  # counted by the owner, written by the workers
    for node_id, expected in local_run(beam()).items():
        np.testing.assert_array_equal(result.results[node_id].state.payload, expected)
        entry = store.get(result.plan.nodes[node_id].key)
        assert entry is not None and entry.provenance["node_id"] == node_id
        assert entry.provenance["cache_key"] == result.plan.nodes[node_id].key
    assert result.metrics["again.power"] == pytest.approx(6 * result.metrics["field.power"])
    rerun = DagExecutor(scheduler=DaskScheduler(client), cache=store).run(START, beam())
    assert rerun.hits == ["field", "amp", "again"]


def test_a_receipt_carries_no_state(client: Client, tmp_path: Path) -> None:
    result = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path)).run(
        START, beam()
    )
    receipt = pickle.loads(pickle.dumps(result.results["amp"]))
    assert len(pickle.dumps(receipt)) < 2048  # the state is 4096 float64: 32 kB
    with pytest.raises(CacheError, match=r"node 'amp': its result was filed .* cannot be read"):
        receipt.state  # unbound: nothing to load from, and no state travelled  # noqa: B018


def test_a_memory_store_or_file_on_workers_false_brings_results_to_the_driver(
    client: Client, tmp_path: Path
) -> None:
    in_memory = DagExecutor(scheduler=DaskScheduler(client), cache=MemoryStore())
    assert not any(type(r) is FiledResult for r in in_memory.run(START, beam()).results.values())
    off = DagExecutor(
        scheduler=DaskScheduler(client, file_on_workers=False), cache=DiskStore(tmp_path)
    )
    result = off.run(START, beam())
    assert not any(type(r) is FiledResult for r in result.results.values())
    assert off.cache.puts == 3


def test_workers_with_another_key_leave_the_filing_to_the_driver(
    client: Client, tmp_path: Path, isolated_cache_key: Path
) -> None:
    """The driver's key is now a new file the workers cannot see: whatever they signed, the
    driver could not read, so they send the results and the driver files them."""
    store = DiskStore(tmp_path / "cache")
    result = DagExecutor(scheduler=DaskScheduler(client), cache=store).run(START, beam())
    assert not any(type(r) is FiledResult for r in result.results.values())
    assert isolated_cache_key.exists()
    fresh = DagExecutor(cache=DiskStore(tmp_path / "cache")).run(START, beam())
    assert fresh.hits == ["field", "amp", "again"]


def test_a_filed_entry_removed_before_it_is_read_is_an_error_naming_the_node(
    client: Client, tmp_path: Path
) -> None:
    store = DiskStore(tmp_path)
    result = DagExecutor(scheduler=DaskScheduler(client), cache=store).run(START, beam())
    store.clear()
    with pytest.raises(CacheError, match=r"node 'again'.*run again to recompute it"):
        result.results["again"].state  # noqa: B018


def test_an_uncacheable_node_is_never_filed_by_a_worker(client: Client, tmp_path: Path) -> None:
    nodes = [*beam()[:1], NodeSpec("env", ["field"], EnvGain(GainCfg()))]
    store = DiskStore(tmp_path)
    with pytest.warns(UserWarning, match="environment"):
        result = DagExecutor(scheduler=DaskScheduler(client), cache=store).run(START, nodes)
    assert type(result.results["env"]) is not FiledResult
    assert not store.contains(result.plan.nodes["env"].key)
    assert store.contains(result.plan.nodes["field"].key)


def test_early_cutoff_compares_the_digests_workers_sent(client: Client, tmp_path: Path) -> None:
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path))
    executor.run(START, beam())
    relabelled = executor.run(START, beam(tag="renamed"))  # new key, same output
    assert relabelled.ran == ["amp"]
    assert relabelled.runs["again"].reason == "cached: upstream output unchanged"
    changed = executor.run(START, beam(gain=5.0))
    assert changed.ran == ["amp", "again"]
    np.testing.assert_allclose(
        changed.results["again"].state.payload, local_run(beam(gain=5.0))["again"]
    )


def test_a_sweep_of_filed_variants_matches_a_local_run(client: Client, tmp_path: Path) -> None:
    nodes = expand_sweep(beam(), [SweepSpec("amp", {"gain": [1.0, 4.0, 9.0]})])
    result = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path)).run(
        START, nodes
    )
    expected = local_run(nodes)
    assert set(result.results) == set(expected)
    for node_id, payload in expected.items():
        np.testing.assert_array_equal(result.results[node_id].state.payload, payload)


def test_a_session_on_dask_fills_its_memory_tier_from_the_shared_disk(
    client: Client, tmp_path: Path
) -> None:
    session = LiveSession(beam(), START, cache=DiskStore(tmp_path), scheduler=DaskScheduler(client))
    first = session.run()
    assert {type(r) for r in first.results.values()} == {FiledResult}
    session.update("again", gain=3.5)
    second = session.run()
    assert second.ran == ["again"] and second.hits == ["field", "amp"]
    np.testing.assert_allclose(
        second.results["again"].state.payload, local_run(list(session.specs.values()))["again"]
    )
    assert isinstance(session.executor.cache, DagCache)


class Diverges(Amplifier):
    """A propagation that blows up: the node fails with its own exception."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        raise FloatingPointError("split-step diverged: reduce the step")


def test_a_failing_node_with_a_filing_is_named_and_keeps_its_exception(
    client: Client, tmp_path: Path
) -> None:
    nodes = [*beam(), NodeSpec("blowup", ["amp"], Diverges(GainCfg()))]
    store = DiskStore(tmp_path)
    result = DagExecutor(scheduler=DaskScheduler(client), cache=store).run(
        START, nodes, raise_on_error=False
    )
    assert set(result.failures) == {"blowup"}
    assert "split-step diverged" in str(result.failures["blowup"])
    assert not store.contains(result.plan.nodes["blowup"].key)
    assert sorted(result.ran) == ["again", "amp", "field"]


def test_nothing_stays_on_the_cluster_after_a_filed_run(client: Client, tmp_path: Path) -> None:
    nodes = [*beam(), NodeSpec("blowup", ["amp"], Diverges(GainCfg()))]
    result = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path)).run(
        START, nodes, raise_on_error=False
    )
    deadline = time.monotonic() + 30
    count = -1
    while count and time.monotonic() < deadline:
        count = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        time.sleep(0.05)
    assert count == 0
    assert set(result.failures) == {"blowup"}
