"""Stopping a run: ``DagExecutor.cancel()`` from another thread (a widget's Stop button) and
the kernel's interrupt (KeyboardInterrupt) stop submitting, stop what can be stopped, keep what
completed cached, and say which nodes were not run; the next run resumes from the cache."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phys_pipeline.cache import DiskStore, MemoryStore
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.types import (
    NodeSpec,
    NodeStatus,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

START = SimpleState(None)


class StepCfg(StageConfig):
    seconds: float = 0.0
    gain: float = 2.0


class Amplify(PipelineStage[SimpleState, StepCfg]):
    """Doubles the pulse energy, taking ``seconds`` (a long integration step)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        time.sleep(self.cfg.seconds)
        energy = (state.payload or 1.0) * self.cfg.gain
        return StageResult(SimpleState(energy), metrics={"energy": energy})


def chain(slow_seconds: float) -> list[NodeSpec]:
    """seed -> slow -> after, and an independent quick branch seed -> side."""
    return [
        NodeSpec("seed", stage=Amplify(StepCfg())),
        NodeSpec("slow", ["seed"], Amplify(StepCfg(seconds=slow_seconds))),
        NodeSpec("after", ["slow"], Amplify(StepCfg())),
        NodeSpec("side", ["seed"], Amplify(StepCfg(gain=3.0))),
    ]


class CancelWhenStarted:
    """A callback that presses Stop from another thread once ``node_id`` starts."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.executor: DagExecutor | None = None

    def on_start(self, node_id: str) -> None:
        if node_id == self.node_id:
            threading.Timer(0.2, self.executor.cancel).start()  # type: ignore[union-attr]


class InterruptWhenDone:
    """Ctrl-C once ``node_id`` is done (KeyboardInterrupt on the thread running the hooks)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def on_done(self, node_id: str, result: Any, cache_hit: bool) -> None:
        if node_id == self.node_id:
            raise KeyboardInterrupt


def cancelled_run(scheduler: LocalScheduler, cache: Any, slow: float) -> tuple[Any, float]:
    stopper = CancelWhenStarted("slow")
    executor = DagExecutor(scheduler=scheduler, cache=cache, callbacks=[stopper])
    stopper.executor = executor
    started = time.perf_counter()
    result = executor.run(START, chain(slow_seconds=slow), raise_on_error=False)
    return result, time.perf_counter() - started


@pytest.mark.timeout(60)
def test_cancel_from_another_thread_stops_a_threaded_run_and_the_next_run_resumes() -> None:
    store = MemoryStore()
    result, seconds = cancelled_run(LocalScheduler(max_workers=2), store, slow=5.0)
    assert seconds < 4.0  # returned at Stop, not when the slow node finished
    assert set(result.cancelled) == {"slow", "after"}
    assert result.runs["slow"].status is NodeStatus.CANCELLED and not result.ok
    assert "cancelled 2" in result.summary()
    resumed = DagExecutor(cache=store).run(START, chain(slow_seconds=0.0))
    assert set(resumed.hits) == {"seed", "side"}  # completed before Stop: cached
    assert resumed.metrics["after.energy"] == 8.0


@pytest.mark.timeout(60)
def test_cancel_kills_a_node_running_in_a_worker_process() -> None:
    scheduler = LocalScheduler(max_workers=2, mode="process")
    result, seconds = cancelled_run(scheduler, MemoryStore(), slow=30.0)
    assert seconds < 15.0  # the worker was killed, not waited for
    assert "slow" in result.cancelled and "after" in result.cancelled


@pytest.mark.timeout(60)
def test_cancel_in_an_inline_run_lets_the_running_node_finish_and_starts_nothing_more() -> None:
    result, _ = cancelled_run(LocalScheduler(max_workers=1), MemoryStore(), slow=1.0)
    assert result.runs["slow"].status is NodeStatus.RAN  # inline: it was this very thread
    assert set(result.cancelled) == {"after", "side"} or set(result.cancelled) == {"after"}


def test_cancel_with_no_run_in_flight_does_nothing() -> None:
    executor = DagExecutor()
    executor.cancel()
    assert executor.run(START, chain(0.0)).cancelled == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupt_cancels_keeps_what_completed_and_is_raised_again(
    workers: int, tmp_path: Path
) -> None:
    store = DiskStore(tmp_path)
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=workers),
        cache=store,
        callbacks=[InterruptWhenDone("seed")],
    )
    with pytest.raises(KeyboardInterrupt) as caught:
        executor.run(START, chain(slow_seconds=0.5))
    partial = caught.value.partial  # type: ignore[attr-defined]
    assert "after" in partial.cancelled and partial.runs["seed"].status is NodeStatus.RAN
    assert any("run interrupted" in note for note in caught.value.__notes__)
    resumed = DagExecutor(cache=store).run(START, chain(slow_seconds=0.0))
    assert "seed" in resumed.hits
    assert resumed.metrics["after.energy"] == 8.0 and resumed.metrics["side.energy"] == 6.0


@pytest.mark.timeout(60)
def test_a_session_shows_cancelled_nodes_and_its_run_does_not_raise() -> None:
    session = LiveSession(chain(slow_seconds=5.0), START, scheduler=LocalScheduler(max_workers=2))
    session.subscribe(
        lambda event, s: (
            event == "status"
            and s.status.get("slow") is NodeStatus.RUNNING
            and threading.Timer(0.2, s.cancel).start()
        )
    )
    result = session.run()
    assert session.status["slow"] is NodeStatus.CANCELLED
    assert session.status["after"] is NodeStatus.CANCELLED
    assert session.status["seed"] is NodeStatus.RAN
    assert "slow" in result.cancelled


@pytest.mark.timeout(120)
def test_cancel_stops_a_dask_run_and_leaves_nothing_on_the_cluster() -> None:
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    from phys_pipeline.dask import DaskScheduler

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        stopper = CancelWhenStarted("slow")
        executor = DagExecutor(scheduler=DaskScheduler(client), callbacks=[stopper])
        stopper.executor = executor
        started = time.perf_counter()
        result = executor.run(START, chain(slow_seconds=20.0), raise_on_error=False)
        assert time.perf_counter() - started < 15.0
        assert "after" in result.cancelled
        deadline = time.monotonic() + 30
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert np.isfinite(result.metrics["seed.energy"])


def test_cancel_while_the_run_plans_stops_it_before_anything_computes() -> None:
    """A Stop pressed while the run still plans or loads from the cache is not lost."""
    executor = DagExecutor(cache=MemoryStore())
    nodes = chain(slow_seconds=0.0)
    executor.run(START, nodes[:1])  # the first node is cached

    class StopAtPlan:
        def on_plan(self, plan: Any, stale: Any) -> None:
            executor.cancel()

    out = executor.run(START, nodes, callbacks=[StopAtPlan()])
    assert out.hits == [nodes[0].id]
    assert out.ran == []
    assert out.cancelled == [node.id for node in nodes[1:]]


RELEASE = threading.Event()


class Held(PipelineStage[SimpleState, StepCfg]):
    """Computes until the test lets it go (an integration that has not converged yet)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        RELEASE.wait(30)
        return StageResult(SimpleState(1.0))


@pytest.mark.timeout(60)
def test_a_session_s_run_ends_at_cancel_while_its_node_still_computes() -> None:
    """A live session runs nodes on a thread of its own: Stop does not wait for the node."""
    RELEASE.clear()
    nodes = [
        NodeSpec("seed", stage=Amplify(StepCfg())),
        NodeSpec("held", ["seed"], Held(StepCfg())),
    ]
    live = LiveSession(nodes, START)
    live.subscribe(lambda event, s: s.cancel() if s.status.get("held") == "running" else None)
    try:
        out = live.run()
        assert not RELEASE.is_set()  # returned while the node was still computing
        assert out.ran == ["seed"] and out.cancelled == ["held"]
        assert live.status["held"] == NodeStatus.CANCELLED
    finally:
        RELEASE.set()


class ThreadName(PipelineStage[SimpleState, StepCfg]):
    """Records the thread it computes on, by a mark of its own (an ident may be reused once
    its thread has ended)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(thread_mark()))


def thread_mark() -> str:
    return vars(threading.current_thread()).setdefault("test_mark", uuid.uuid4().hex)


def thread_of(scheduler: LocalScheduler, gain: float) -> str:
    out = DagExecutor(scheduler=scheduler).run(
        START, [NodeSpec("t", stage=ThreadName(StepCfg(gain=gain)))]
    )
    return out.results["t"].state.payload


def test_a_scheduler_s_next_run_takes_the_thread_its_last_settled_run_left_idle() -> None:
    scheduler = LocalScheduler(inline=False)
    first = thread_of(scheduler, 1.0)
    assert thread_of(scheduler, 2.0) == first != thread_mark()


@pytest.mark.timeout(60)
def test_after_stop_the_next_run_does_not_wait_for_the_abandoned_node_s_thread() -> None:
    """The thread left computing an abandoned node is not kept: a run queued behind it
    would wait for that node, and seem to hang."""
    RELEASE.clear()
    scheduler = LocalScheduler(inline=False)
    idle = thread_of(scheduler, 1.0)
    executor = DagExecutor(scheduler=scheduler)
    threading.Timer(0.3, executor.cancel).start()
    try:
        out = executor.run(START, [NodeSpec("held", stage=Held(StepCfg()))], raise_on_error=False)
        assert out.cancelled == ["held"] and not RELEASE.is_set()
        assert thread_of(scheduler, 3.0) not in (idle, thread_mark())
        assert not RELEASE.is_set()  # the next run finished while the held node still computed
    finally:
        RELEASE.set()
