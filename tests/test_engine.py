"""The run engine on its own, driven by fake backends: readiness follows the graph, a failure
skips exactly its descendants (naming it), early cutoff replaces a submit, slots are never
oversubscribed, each node's exception is reported as that node's, and hooks are only ever
called on the thread that runs the engine."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from phys_pipeline.engine import NodeTask, RunEngine, Slots, _Events, run_node
from phys_pipeline.types import NodeResources, SimpleState, StageResult, State

GRID = SimpleState(None, {"grid": "64 points"})


def spectrum(name: str) -> StageResult:
    """The result a fake backend reports: a state tagged with the node that made it."""
    return StageResult(SimpleState(None, {"made_by": name}))


class Log:
    """Hooks that record what the engine reports, and on which thread."""

    reuse: Any = None

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.threads: set[int] = set()

    def _log(self, *event: Any) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())

    def on_start(self, node_id: str) -> None:
        self._log("start", node_id)

    def on_reused(self, node_id: str, result: StageResult) -> None:
        self._log("reused", node_id)

    def on_done(self, node_id: str, result: StageResult, duration_s: float) -> None:
        self._log("done", node_id)

    def on_error(self, node_id: str, error: BaseException) -> None:
        self._log("error", node_id, error)

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self._log("skip", node_id, failed_dep)

    def of(self, kind: str) -> list[str]:
        return [e[1] for e in self.events if e[0] == kind]


def task(node_id: str, *deps: str, **resources: Any) -> NodeTask:
    return NodeTask(node_id, deps, None, None, resources=NodeResources(**resources))


# grid -> (pulse_a, pulse_b) -> interfere -> report; tasks are given parents first
DIAMOND = [
    task("grid"),
    task("pulse_a", "grid"),
    task("pulse_b", "grid"),
    task("interfere", "pulse_a", "pulse_b"),
    task("report", "interfere"),
]


class SyncBackend:
    """Completes each node as it is submitted; ``failing`` nodes raise their exception."""

    def __init__(self, engine: RunEngine, failing: Mapping[str, BaseException] = {}) -> None:
        self.engine, self.failing = engine, failing
        self.submitted: list[str] = []
        self.parents_seen: dict[str, dict[str, State]] = {}

    def submit(self, task: NodeTask, parents: Mapping[str, State]) -> None:
        self.submitted.append(task.node_id)
        self.parents_seen[task.node_id] = {dep: parents[dep] for dep in task.deps}
        error = self.failing.get(task.node_id)
        self.engine.finish_task(task, error if error is not None else (spectrum(task.node_id), 0.0))


def run_sync(tasks: list[NodeTask], hooks: Log, **failing: BaseException) -> SyncBackend:
    engine = RunEngine(tasks, {}, hooks)
    backend = SyncBackend(engine, failing)
    engine.run(backend.submit)
    return backend


# --- readiness ------------------------------------------------------------------------------


def test_a_node_is_submitted_only_once_all_its_parents_are_done() -> None:
    log = Log()
    backend = run_sync(DIAMOND, log)

    assert backend.submitted == ["grid", "pulse_a", "pulse_b", "interfere", "report"]
    seen = backend.parents_seen["interfere"]
    assert {name: s.meta["made_by"] for name, s in seen.items()} == {
        "pulse_a": "pulse_a",
        "pulse_b": "pulse_b",
    }
    assert log.of("done") == backend.submitted


def test_available_parents_count_as_done_and_reach_the_children() -> None:
    """A cache hit upstream: the grid is available, so both pulses are ready at once."""
    engine = RunEngine(DIAMOND[1:3], {"grid": GRID}, Log())
    backend = SyncBackend(engine)
    engine.run(backend.submit)

    assert backend.submitted == ["pulse_a", "pulse_b"]
    assert backend.parents_seen["pulse_b"]["grid"] is GRID


def test_one_worker_runs_nodes_in_plan_order_with_hooks_on_the_spot() -> None:
    """Inline: the engine's own ``work`` computes each node and goes straight on."""
    tasks = [task("a"), task("b", "a"), task("c"), task("d", "c")]
    log, order = Log(), []

    def compute(node: NodeTask, parents: Mapping[str, State]) -> tuple[StageResult, float]:
        order.append(node.node_id)
        assert log.events[-1] == ("start", node.node_id)  # reported before it runs
        return spectrum(node.node_id), 0.0

    engine = RunEngine(tasks, {}, log, slots=Slots(workers=1), threaded=False)
    engine.run(lambda node, parents: engine.work(node, parents, compute))

    assert order == ["a", "b", "c", "d"]


# --- failures and skips ---------------------------------------------------------------------


def test_descendants_of_a_failed_node_are_skipped_naming_it_and_other_branches_finish() -> None:
    tasks = [*DIAMOND, task("calibrate")]
    log = Log()
    saturated = ValueError("gain saturated")

    backend = run_sync(tasks, log, pulse_a=saturated)

    assert log.of("error") == ["pulse_a"]
    assert [e[1:] for e in log.events if e[0] == "skip"] == [
        ("interfere", "pulse_a"),
        ("report", "pulse_a"),
    ]
    assert "interfere" not in backend.submitted and "report" not in backend.submitted
    assert set(log.of("done")) == {"grid", "pulse_b", "calibrate"}
    assert set(log.of("start")) == set(backend.submitted)  # skipped nodes never start


def test_each_node_failure_is_reported_with_its_own_exception() -> None:
    tasks = [task("grid"), task("fit_a", "grid"), task("fit_b", "grid"), task("plot", "grid")]
    log = Log()
    diverged, singular = FloatingPointError("fit diverged"), ArithmeticError("singular matrix")

    run_sync(tasks, log, fit_a=diverged, fit_b=singular)

    errors = {e[1]: e[2] for e in log.events if e[0] == "error"}
    assert errors == {"fit_a": diverged, "fit_b": singular}
    assert errors["fit_a"] is diverged and errors["fit_b"] is singular
    assert log.of("done") == ["grid", "plot"]


def test_a_stage_exception_in_work_fails_only_its_node() -> None:
    """``work`` turns a stage's exception into that node's failure, as run_node raises it."""

    class Diverges:
        def process(self, state: Any, *, policy: Any = None) -> StageResult:
            raise FloatingPointError("split-step diverged at z=3.2 mm")

    class Passes:
        def process(self, state: Any, *, policy: Any = None) -> StageResult:
            return StageResult(state)

    tasks = [
        NodeTask("grid", (), Passes(), None, root_state=GRID),
        NodeTask("propagate", ("grid",), Diverges(), None),
        NodeTask("analyse", ("propagate",), Passes(), None),
        NodeTask("plot", ("grid",), Passes(), None),
    ]
    log = Log()
    engine = RunEngine(tasks, {}, log, slots=Slots(workers=1), threaded=False)
    engine.run(lambda node, parents: engine.work(node, parents, run_node))

    [(_, node_id, error)] = [e for e in log.events if e[0] == "error"]
    assert node_id == "propagate" and "split-step diverged at z=3.2 mm" in str(error)
    assert ("skip", "analyse", "propagate") in log.events
    assert log.of("done") == ["grid", "plot"]


# --- early cutoff ---------------------------------------------------------------------------


def test_a_reused_node_is_never_submitted_and_its_children_read_the_reused_state() -> None:
    previous = spectrum("last run's pulse_a")
    asked: list[str] = []

    class Cutoff(Log):
        def reuse(self, node_id: str, parents: Mapping[str, State]) -> StageResult | None:
            asked.append(node_id)
            assert all(dep in parents for dep in dict(DIAMOND_DEPS)[node_id])
            return previous if node_id == "pulse_a" else None

    log = Cutoff()
    backend = run_sync(DIAMOND, log)

    assert "pulse_a" not in backend.submitted and "pulse_a" not in log.of("start")
    assert log.of("reused") == ["pulse_a"]
    assert backend.parents_seen["interfere"]["pulse_a"] is previous.state
    assert asked == [t.node_id for t in DIAMOND]  # asked once per node, just before it runs


DIAMOND_DEPS = [(t.node_id, t.deps) for t in DIAMOND]


def test_a_failing_reuse_fails_its_node_only() -> None:
    class BrokenCache(Log):
        def reuse(self, node_id: str, parents: Mapping[str, State]) -> StageResult | None:
            if node_id == "pulse_b":
                raise OSError("cache disk unplugged")
            return None

    log = BrokenCache()
    run_sync(DIAMOND, log)

    assert log.of("error") == ["pulse_b"]
    assert ("skip", "interfere", "pulse_b") in log.events


# --- slots and threads ----------------------------------------------------------------------


class PoolBackend:
    """Completes nodes on a thread pool after a random moment, tracking what runs at once."""

    def __init__(self, engine: RunEngine, pool: ThreadPoolExecutor) -> None:
        self.engine, self.pool = engine, pool
        self.lock = threading.Lock()
        self.in_use = {"workers": 0, "cpu": 0, "gpu": 0, "mem_gb": 0.0}
        self.peak = dict(self.in_use)

    def _add(self, res: NodeResources, sign: int) -> None:
        with self.lock:
            slots = ((name, getattr(res, name)) for name in ("cpu", "gpu", "mem_gb"))
            for name, amount in (("workers", 1), *slots):
                self.in_use[name] += sign * amount
                self.peak[name] = max(self.peak[name], self.in_use[name])

    def submit(self, task: NodeTask, parents: Mapping[str, State]) -> None:
        self._add(task.resources, +1)
        self.pool.submit(self._complete, task)

    def _complete(self, task: NodeTask) -> None:
        time.sleep(random.uniform(0.0, 0.004))
        self._add(task.resources, -1)
        self.engine.finish_task(task, (spectrum(task.node_id), 0.0))


def test_resource_slots_are_never_oversubscribed() -> None:
    random.seed(7)
    tasks = [task("grid")]
    for i in range(40):
        tasks.append(task(f"fft_{i}", "grid", cpu=random.choice([1, 2, 3])))
        tasks.append(task(f"gpu_fit_{i}", f"fft_{i}", gpu=1, mem_gb=random.choice([1.0, 2.5])))
    slots = Slots(workers=4, cpu=4, gpu=2, mem_gb=4.0)
    log = Log()
    engine = RunEngine(tasks, {}, log, slots=slots)

    with ThreadPoolExecutor(8) as pool:
        backend = PoolBackend(engine, pool)
        engine.run(backend.submit)

    assert len(log.of("done")) == len(tasks)
    assert backend.peak["workers"] <= 4 and backend.peak["cpu"] <= 4
    assert backend.peak["gpu"] <= 2 and backend.peak["mem_gb"] <= 4.0
    assert backend.peak["workers"] > 1  # and nodes did run side by side
    assert slots == Slots(workers=4, cpu=4, gpu=2, mem_gb=4.0)  # every slot given back


def test_hooks_are_called_on_the_engine_thread_whatever_thread_reports() -> None:
    log = Log()
    engine = RunEngine(DIAMOND, {}, log)
    with ThreadPoolExecutor(2) as pool:
        engine.run(PoolBackend(engine, pool).submit)

    assert log.threads == {threading.get_ident()}
    assert log.of("done")[0] == "grid" and log.of("done")[-1] == "report"


class Waits:
    """A stage that runs until ``release`` is set (at most 10 s), noting when it started."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        self.started.set()
        self.release.wait(10)
        return StageResult(state)


class Quick:
    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        return StageResult(state)


class Sleeps:
    """Long enough for the calling thread to be asleep, waiting, when it ends."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        time.sleep(0.3)
        return StageResult(state)


def test_a_long_node_is_heard_started_while_it_runs_on_a_worker_thread() -> None:
    """Workers do not wake the calling thread for every event (see ``_Events``), but a node
    that runs long is reported started while it runs, on the calling thread, and the nodes
    after it are heard in order once it is done."""
    slow = Waits()
    tasks = [
        NodeTask("grid", (), Sleeps(), None, root_state=GRID),
        NodeTask("propagate", ("grid",), slow, None),
        NodeTask("report", ("propagate",), Quick(), None),
    ]
    heard_running = threading.Event()

    class Watch(Log):
        def on_start(self, node_id: str) -> None:
            super().on_start(node_id)
            if node_id == "propagate":
                heard_running.set()

    log = Watch()
    engine = RunEngine(tasks, {}, log, slots=Slots(workers=1))
    with ThreadPoolExecutor(1) as pool:
        runner = threading.Thread(
            target=engine.run, args=(lambda t, p: pool.submit(engine.work, t, p, run_node),)
        )
        runner.start()
        assert slow.started.wait(10)
        # heard within a look of the calling thread (0.05 s), long before the node ends
        assert heard_running.wait(2), "the running node was never reported started"
        assert log.of("done") == ["grid"]
        slow.release.set()
        runner.join(10)
    assert not runner.is_alive()
    assert [e[:2] for e in log.events] == [
        ("start", "grid"),
        ("done", "grid"),
        ("start", "propagate"),
        ("done", "propagate"),
        ("start", "report"),
        ("done", "report"),
    ]
    assert log.threads == {runner.ident}


class MeetsItsSibling:
    """Returns only once its sibling runs too (a barrier both wait at, for at most 10 s)."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.barrier = barrier

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        self.barrier.wait()
        return StageResult(state)


def test_nodes_a_worker_leaves_ready_start_on_a_free_worker_at_once(monkeypatch) -> None:
    """The grid's worker takes one branch itself; the other branch must start on the second
    worker straight away, not at the calling thread's next look (made 30 s here): the worker
    wakes the calling thread, which submits it. Without that, the branches never meet."""
    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    barrier = threading.Barrier(2, timeout=10)
    tasks = [
        NodeTask("grid", (), Sleeps(), None, root_state=GRID),
        NodeTask("pulse_a", ("grid",), MeetsItsSibling(barrier), None),
        NodeTask("pulse_b", ("grid",), MeetsItsSibling(barrier), None),
    ]
    log = Log()
    engine = RunEngine(tasks, {}, log, slots=Slots(workers=2))
    with ThreadPoolExecutor(2) as pool:
        engine.run(lambda t, p: pool.submit(engine.work, t, p, run_node))
    assert log.of("error") == [] and sorted(log.of("done")) == ["grid", "pulse_a", "pulse_b"]


def test_a_raising_hook_stops_the_run_and_late_outcomes_are_dropped() -> None:
    """Only the grid completes during the run; its on_done hook interrupts the run."""
    interrupted = threading.Event()

    class Interrupt(Log):
        def on_done(self, node_id: str, result: StageResult, duration_s: float) -> None:
            super().on_done(node_id, result, duration_s)
            interrupted.set()
            raise KeyboardInterrupt

    log = Interrupt()
    engine = RunEngine(DIAMOND, {}, log)
    pending: list[NodeTask] = []

    def submit(node: NodeTask, parents: Mapping[str, State]) -> None:
        assert not interrupted.is_set()
        if node.node_id == "grid":
            done = (spectrum("grid"), 0.0)
            threading.Thread(target=engine.finish_task, args=(node, done)).start()
        else:
            pending.append(node)

    with pytest.raises(KeyboardInterrupt):
        engine.run(submit)

    for node in pending:  # finishing after the run ended: dropped
        engine.finish_task(node, (spectrum(node.node_id), 0.0))
    assert set(engine.states) == {"grid"}
    assert log.of("done") == ["grid"]


# --- releasing parents' states --------------------------------------------------------------


def test_release_is_told_once_no_child_will_ask_for_a_state() -> None:
    released: list[str] = []
    tasks = [*DIAMOND[:2], task("boom", "pulse_a"), task("after", "boom", "grid")]
    engine = RunEngine(tasks, {}, Log(), release=released.append)
    backend = SyncBackend(engine, {"boom": RuntimeError("detector saturated")})
    engine.run(backend.submit)

    # grid: once pulse_a and the skipped "after" are past; boom's state: never needed again
    assert sorted(released) == ["boom", "grid", "pulse_a"]
    assert released.index("pulse_a") < released.index("grid")
