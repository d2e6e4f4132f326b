"""Two processes run the same sweep against one cache at the same time: both get exactly the
results of a single-process run, and every entry they leave behind reads back correctly."""

from __future__ import annotations

import multiprocessing
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dag_stages import diamond
from stages.states import Trace

from phys_pipeline.cache import DiskStore, RedisStore
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    State,
)

pytestmark = pytest.mark.usefixtures("isolated_cache_key")


class Spectrometer(PipelineStage[SimpleState, StageConfig]):
    """The power spectrum of a Gaussian pulse on the grid."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        omega = state.meta["omega"]
        power = np.abs(np.fft.fft(np.exp(-(omega**2) * 40.0))) ** 2
        resolution = (float(omega[1] - omega[0]), "rad/fs")
        return StageResult(Trace(power, resolution), {"peak": float(power.max())})


def sweep_nodes() -> list[NodeSpec]:
    """diamond() plus a spectrometer, swept over 3 grids x 3 dispersions: 30 nodes."""
    nodes = [
        *diamond(),
        NodeSpec(id="spectrum", deps=["grid"], stage=Spectrometer(StageConfig(name="spectrum"))),
    ]
    grids = SweepSpec("grid", {"N": [20_000, 40_000, 60_000]})
    phases = SweepSpec("p1", {"gdd": [1.0, 5.0, -3.0]})
    return expand_sweep(nodes, [grids, phases])


def fingerprint(state: State, metrics: dict[str, float]) -> tuple[str, dict[str, float]]:
    return bytes(state.hashable_repr()).hex(), dict(metrics)


def fingerprints(result: DagRunResult) -> dict[str, tuple[str, dict[str, float]]]:
    return {nid: fingerprint(r.state, r.metrics) for nid, r in result.results.items()}


# --- the two processes -----------------------------------------------------------------------


def disk_store(root: str) -> DiskStore:
    return DiskStore(root)


def redis_store(url: str, prefix: str) -> RedisStore:
    return RedisStore(url, prefix, timeout_s=5.0)


def run_sweep(
    make_store: Callable[..., Any], args: tuple, index: int, start: Any, results: Any
) -> None:
    """A child process: wait for its sibling, then compute the sweep one sink at a time (the
    second child in reverse order, so each reads entries the other is writing), then run the
    whole sweep once more; report the last run."""
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=2), cache=make_store(*args))
    nodes = sweep_nodes()
    plan = executor.plan(SimpleState(None), nodes)
    sinks = [nid for nid in plan.order if plan.graph.out_degree(nid) == 0]
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        start.wait(timeout=60)
        began = time.time()
        ran = []
        for sink in sinks if index == 0 else sinks[::-1]:
            ran += executor.run(SimpleState(None), nodes, targets=[sink]).ran
        ended = time.time()
        out = executor.run(SimpleState(None), nodes)
    messages = [f"{w.category.__name__}: {w.message}" for w in recorded]
    results.put((fingerprints(out), ran, out.hits, began, ended, messages))


def run_twice_at_once(make_store: Callable[..., Any], args: tuple) -> list[tuple]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    children = [
        ctx.Process(target=run_sweep, args=(make_store, args, index, start, results))
        for index in range(2)
    ]
    for child in children:
        child.start()
    try:
        outcomes = [results.get(timeout=90) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    assert [child.exitcode for child in children] == [0, 0]
    return outcomes


def check_shared_runs(outcomes: list[tuple], store: Any) -> None:
    """Both runs equal a single-process run; the runs overlapped; every entry reads back."""
    reference_run = DagExecutor().run(SimpleState(None), sweep_nodes())
    reference = fingerprints(reference_run)
    assert len(reference) == 30
    for got, ran, hits, _, _, messages in outcomes:
        assert got == reference
        assert messages == []
        assert len(ran) == len(set(ran))  # nothing this process computed was computed again
        assert sorted(hits) == sorted(reference)  # its final run found every entry
    (_, ran_a, _, began_a, ended_a, _), (_, ran_b, _, began_b, ended_b, _) = outcomes
    assert set(ran_a) | set(ran_b) == set(reference)  # every node was computed by someone
    print(
        "OVERLAP",
        len(set(ran_a) & set(ran_b)),
        len(ran_a),
        len(ran_b),
        began_a,
        ended_a,
        began_b,
        ended_b,
    )
    assert max(began_a, began_b) < min(ended_a, ended_b), "the two runs did not overlap"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a corrupt or half-written entry would warn here
        for nid, plan in reference_run.plan.nodes.items():
            entry = store.get(plan.key)
            assert entry is not None, nid
            assert fingerprint(entry.state, entry.metrics) == reference[nid], nid
    assert len(store) == len(reference)


@pytest.mark.timeout(120)
def test_two_processes_share_a_disk_cache_for_one_sweep(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    outcomes = run_twice_at_once(disk_store, (str(root),))
    check_shared_runs(outcomes, DiskStore(root))
    assert list((root / "tmp").iterdir()) == []  # the losers' scratch copies are gone


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"concurrency-{uuid.uuid4().hex[:8]}"
    yield prefix
    RedisStore(redis_url, prefix).clear()


@pytest.mark.timeout(120)
def test_two_processes_share_a_redis_cache_for_one_sweep(redis_url: str, redis_prefix: str) -> None:
    outcomes = run_twice_at_once(redis_store, (redis_url, redis_prefix))
    check_shared_runs(outcomes, RedisStore(redis_url, redis_prefix))
