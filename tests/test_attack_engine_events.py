"""Attacks on the engine's batched events (``_Events``): worker threads tell the calling thread
what happened without waking it, and wake it only at certain points; it looks every
``_Events.LOOK_S`` meanwhile. Hooks must still be called on the run's thread, in order, each
node settled exactly once; the run must neither hang nor return early; parallel branches,
retries and timeouts must not wait for the look; cancel and Ctrl-C must end a run at once;
a live session's statuses must be true during and after a run.

Where a test must prove that something does not rely on the periodic look, the look is made
30 s (``monkeypatch.setattr(_Events, "LOOK_S", 30.0)``): relying on it would make the test
wait for a barrier or an event until its (few seconds') timeout. The Ctrl-C tests make it 1 s
(see ``interrupted_while_held_computes``)."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from phys_pipeline import DagExecutor, LocalScheduler, NodeSpec, SimpleState
from phys_pipeline.engine import _Events
from phys_pipeline.progress import report_progress
from phys_pipeline.retry import RetryPolicy
from phys_pipeline.session import LiveSession
from phys_pipeline.types import DagState, NodeStatus, PipelineStage, StageConfig, StageResult

START = SimpleState(None)
WAIT_S = 10.0  # how long a stage or the test waits for the other side: a failure, not a hang

# tag -> what a stage with that tag does before it computes (wait, fail, report...): kept out
# of the stages' keys (``untracked``)
CTL: dict[str, Any] = {}


class StepCfg(StageConfig):
    tag: str = ""
    gain: float = 2.0
    note: str = ""  # read by nothing: an edit of it changes the node's key, not its output


class Step(PipelineStage[SimpleState, StepCfg]):
    """Multiplies the payload (the sum of its parents' payloads) by ``gain``, after whatever
    ``CTL[tag]`` does; a control that returns a value makes that the payload."""

    untracked = ("CTL",)

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        if isinstance(state, DagState):
            base = sum(s.payload or 1.0 for s in state.inputs.values())
        else:
            base = state.payload or 1.0
        control = CTL.get(self.cfg.tag)
        if control is not None:
            out = control()
            if out is not None:
                return StageResult(SimpleState(out))
        value = base * self.cfg.gain
        return StageResult(SimpleState(value), metrics={"v": value})


def node(node_id: str, deps: tuple[str, ...] = (), **cfg: Any) -> NodeSpec:
    extra = {k: cfg.pop(k) for k in ("retry",) if k in cfg}
    return NodeSpec(node_id, list(deps), Step(StepCfg(**cfg)), **extra)


class Gate:
    """A stage control that computes until the test lets it go (at most ``WAIT_S``)."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.started.set()
        self.release.wait(WAIT_S)


class Meet:
    """A stage control that returns only once its sibling computes too."""

    def __init__(self, parties: int = 2) -> None:
        self.barrier = threading.Barrier(parties, timeout=WAIT_S)

    def __call__(self) -> None:
        self.barrier.wait()


class FailFirst:
    """Fails its first ``times`` calls, then runs (``then``, if given)."""

    def __init__(self, times: int = 1, then: Any = None) -> None:
        self.left, self.then, self.calls = times, then, 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise OSError("licence server busy")
        return self.then() if self.then is not None else None


class Heard:
    """Every hook call: (event, node id), and the threads they came on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.threads: set[int] = set()

    def _note(self, event: str, node_id: str) -> None:
        self.events.append((event, node_id))
        self.threads.add(threading.get_ident())

    def on_start(self, node_id: str) -> None:
        self._note("start", node_id)

    def on_done(self, node_id: str, result: Any, cache_hit: bool) -> None:
        self._note("hit" if cache_hit else "done", node_id)

    def on_error(self, node_id: str, error: BaseException) -> None:
        self._note("error", node_id)

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self._note("skip", node_id)

    def on_retry(self, node_id: str, attempt: int, error: BaseException) -> None:
        self._note("retry", node_id)

    def on_progress(self, node_id: str, fraction: float, message: str) -> None:
        self._note("progress", node_id)


TERMINAL = ("done", "hit", "error", "skip")


def interrupt_main_when(started: threading.Event) -> threading.Thread:
    """Ctrl-C (a real SIGINT to the main thread, as a kernel's interrupt) once ``started``."""
    main = threading.main_thread().ident

    def press() -> None:
        if started.wait(WAIT_S):
            signal.pthread_kill(main, signal.SIGINT)  # type: ignore[arg-type]

    presser = threading.Thread(target=press, name="ctrl-c")
    presser.start()
    return presser


@pytest.fixture(autouse=True)
def _fresh_controls():
    CTL.clear()
    yield
    for control in CTL.values():  # let any stage still computing go
        if isinstance(control, Gate):
            control.release.set()
        if isinstance(control, Meet):
            control.barrier.abort()
    CTL.clear()


# --- hooks: on the run's thread, in order, each node settled once ----------------------------


def mixed_dag() -> list[NodeSpec]:
    """A failure with skips below it, parallel branches that join, a node retried after a
    failure, and a node that reports progress while it runs."""

    def talk() -> None:
        for step in range(3):
            report_progress(step / 3, f"step {step}")
            time.sleep(0.11)  # past the reports' thinning interval (0.1 s)

    CTL["bad"] = FailFirst(times=10**6)
    CTL["flaky"] = FailFirst(times=1)
    CTL["talk"] = talk
    return [
        node("r1"),
        node("bad", ("r1",), tag="bad"),
        node("below", ("bad",)),
        node("deeper", ("below",)),
        node("r2"),
        node("d", ("r2",)),
        node("e", ("r2",), gain=3.0),
        node("f", ("d", "e")),
        node("flaky", tag="flaky", retry=RetryPolicy(max_retries=2, backoff_s=0.01, jitter=0)),
        node("talk", ("r2",), tag="talk"),
        node("after_flaky", ("flaky", "f")),
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_hooks_hear_every_node_once_in_causal_order_on_the_run_s_thread(workers: int) -> None:
    for _ in range(5):
        nodes = mixed_dag()
        heard = Heard()
        executor = DagExecutor(
            scheduler=LocalScheduler(max_workers=workers, inline=False), callbacks=[heard]
        )
        result = executor.run(START, nodes, raise_on_error=False)
        assert heard.threads == {threading.get_ident()}
        events = heard.events
        ids = [n.id for n in nodes]
        terminal = {
            nid: [i for i, (ev, n) in enumerate(events) if n == nid and ev in TERMINAL]
            for nid in ids
        }
        assert all(len(at) == 1 for at in terminal.values()), events  # settled exactly once
        end = {nid: at[0] for nid, at in terminal.items()}
        for i, (ev, nid) in enumerate(events):
            assert i <= end[nid], f"{ev} of {nid} heard after it settled: {events}"
            if ev in ("progress", "retry", "done", "error"):
                assert ("start", nid) in events[:i], f"{ev} of {nid} before its start: {events}"
        for spec in nodes:
            for dep in spec.deps:
                first = min(i for i, (_, n) in enumerate(events) if n == spec.id)
                assert end[dep] < first, f"{spec.id} heard of before {dep} settled: {events}"
        assert ("retry", "flaky") in events and ("progress", "talk") in events
        statuses = {nid: run.status for nid, run in result.runs.items()}
        assert statuses == {
            **dict.fromkeys(ids, NodeStatus.RAN),
            "bad": NodeStatus.FAILED,
            "below": NodeStatus.SKIPPED,
            "deeper": NodeStatus.SKIPPED,
        }
        assert result.runs["flaky"].attempts == 2


# --- Ctrl-C and Stop while a node computes on a worker thread --------------------------------


def seed_then_held(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """``seed`` returns only once the run's thread is asleep, waiting for events (so that it
    hears of ``seed`` only when woken or at its look); ``held`` computes until released."""
    asleep = threading.Event()
    wait = _Events.wait

    def noted_wait(self: _Events, timeout: float | None) -> bool:
        asleep.set()
        return wait(self, timeout)

    monkeypatch.setattr(_Events, "wait", noted_wait)
    CTL["seed"] = lambda: None if asleep.wait(WAIT_S) else -1.0
    gate = CTL["held"] = Gate()
    return gate


def seed_and_held() -> list[NodeSpec]:
    return [node("seed", tag="seed"), node("held", ("seed",), tag="held")]


def interrupted_while_held_computes(monkeypatch, run: Any) -> tuple[float, Any]:
    """Call ``run()`` (a run of ``seed_and_held``) and press Ctrl-C while ``held`` computes,
    the run's thread asleep; returns the seconds the run took and the KeyboardInterrupt it
    raised. The look is made 1 s, not 30 s: a signal that lands just before a thread blocks is
    seen only when its wait ends (CPython), a race the look bounds (0.05 s in real runs)."""
    assert threading.current_thread() is threading.main_thread()
    monkeypatch.setattr(_Events, "LOOK_S", 1.0)
    gate = seed_then_held(monkeypatch)
    presser = interrupt_main_when(gate.started)
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            run()
    finally:
        gate.release.set()
        presser.join(WAIT_S)
    return time.perf_counter() - started, caught.value


@pytest.mark.timeout(60)
def test_an_interrupt_while_a_node_computes_keeps_what_completed_before_it(monkeypatch) -> None:
    """Ctrl-C while ``held`` computes on the session's worker thread: the run ends at once
    (``held`` cancelled, long before its stage would end), and ``seed``, which completed
    before, is reported as run, not cancelled."""
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=1, inline=False))
    seconds, interrupt = interrupted_while_held_computes(
        monkeypatch, lambda: executor.run(START, seed_and_held())
    )
    partial = interrupt.partial  # type: ignore[attr-defined]
    assert seconds < WAIT_S and partial.runs["held"].status is NodeStatus.CANCELLED
    assert partial.runs["seed"].status is NodeStatus.RAN


@pytest.mark.timeout(60)
def test_a_session_interrupted_while_a_node_computes_shows_what_ran(monkeypatch) -> None:
    live = LiveSession(seed_and_held(), START)
    seconds, _ = interrupted_while_held_computes(monkeypatch, live.run)
    assert seconds < WAIT_S and live.status["held"] is NodeStatus.CANCELLED
    assert live.status["seed"] is NodeStatus.RAN


@pytest.mark.timeout(60)
def test_stop_ends_a_session_s_run_at_once_and_shows_what_ran_without_the_look(
    monkeypatch,
) -> None:
    """Stop while ``held`` computes (the worker told ``seed`` done without waking anyone):
    the run ends at once, ``seed`` shows run, ``held`` cancelled, and no node stays RUNNING."""
    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    gate = seed_then_held(monkeypatch)
    live = LiveSession(seed_and_held(), START)
    stopper = threading.Thread(target=lambda: gate.started.wait(WAIT_S) and live.cancel())
    stopper.start()
    started = time.perf_counter()
    try:
        out = live.run()
        assert not gate.release.is_set()  # returned while held still computed
    finally:
        gate.release.set()
        stopper.join(WAIT_S)
    assert time.perf_counter() - started < WAIT_S
    assert out.ran == ["seed"] and out.cancelled == ["held"]
    assert live.status == {"seed": NodeStatus.RAN, "held": NodeStatus.CANCELLED}
    assert live.running_since == {}


# --- what a session shows while a run is in flight ------------------------------------------


@pytest.mark.timeout(60)
def test_a_session_never_shows_two_nodes_running_on_its_one_worker() -> None:
    """Statuses change on the run's thread, in the order things happened: with one worker
    thread, at most one node is RUNNING at any status change, a node is RUNNING only after
    its parent is done, and the long node is shown running (its parent done) while it runs."""
    gate = CTL["held"] = Gate()
    nodes = [node("seed"), node("mid", ("seed",)), node("held", ("mid",), tag="held")]
    nodes.append(node("tail", ("held",)))
    live = LiveSession(nodes, START)
    snapshots: list[tuple[int, dict[str, NodeStatus]]] = []
    live.subscribe(
        lambda event, s: (
            event == "status" and snapshots.append((threading.get_ident(), dict(s.status)))
        )
    )
    shown = threading.Event()
    live.subscribe(
        lambda event, s: (
            s.status["held"] is NodeStatus.RUNNING
            and s.status["mid"] is NodeStatus.RAN
            and shown.set()
        )
    )
    runner = threading.Thread(target=live.run, name="test-run")
    runner.start()
    try:
        assert gate.started.wait(WAIT_S)
        assert shown.wait(WAIT_S), "held was never shown running while it ran"
        assert not gate.release.is_set()
    finally:
        gate.release.set()
        runner.join(WAIT_S)
    assert not runner.is_alive()
    assert {ident for ident, _ in snapshots} == {runner.ident}
    order = [n.id for n in nodes]
    for _, status in snapshots:
        running = [nid for nid, s in status.items() if s is NodeStatus.RUNNING]
        assert len(running) <= 1, status
        for nid in running:
            assert all(status[p] is NodeStatus.RAN for p in order[: order.index(nid)]), status
    assert live.status == dict.fromkeys(order, NodeStatus.RAN)


# --- nodes left ready, retries and timeouts do not wait for the look -------------------------


@pytest.mark.timeout(60)
def test_a_backoff_retry_starts_on_time_while_a_sibling_runs_without_the_look(
    monkeypatch,
) -> None:
    """``flaky`` fails on a worker thread and is due again 0.2 s later; the calling thread,
    which keeps the time, must submit it then, while ``long`` still runs (``long`` waits for
    the second attempt to start): not at its next look, made 30 s."""
    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    second = threading.Event()
    CTL["flaky"] = FailFirst(times=1, then=second.set)
    CTL["long"] = lambda: 1.0 if second.wait(WAIT_S) else -1.0
    retry = RetryPolicy(max_retries=1, backoff_s=0.2, jitter=0)
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=2))
    started = time.perf_counter()
    out = executor.run(START, [node("flaky", tag="flaky", retry=retry), node("long", tag="long")])
    assert time.perf_counter() - started < WAIT_S
    assert out.results["long"].state.payload == 1.0, "the retry waited for the look"
    assert out.runs["flaky"].attempts == 2 and out.runs["flaky"].status is NodeStatus.RAN


@pytest.mark.timeout(60)
def test_a_retry_after_a_timeout_on_a_worker_ignores_the_late_first_attempt(monkeypatch) -> None:
    """``fit``, taken by the worker that finished ``prep``, hangs past its 0.5 s deadline;
    its second attempt starts on time (the look is 30 s), and the first attempt's result,
    which arrives while the second runs, is dropped: the run shows the second's, once."""
    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    second_started, first_returned = threading.Event(), threading.Event()
    attempts: list[int] = []

    def fit() -> float:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            second_started.wait(WAIT_S)
            first_returned.set()
            return -1.0  # late: must be dropped
        second_started.set()
        first_returned.wait(0.4)  # well inside this attempt's deadline
        return 2.0

    CTL["fit"] = fit
    heard = Heard()
    retry = RetryPolicy(max_retries=1, timeout_s=0.5, jitter=0)
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=1), callbacks=[heard])
    started = time.perf_counter()
    out = executor.run(START, [node("prep"), node("fit", ("prep",), tag="fit", retry=retry)])
    assert time.perf_counter() - started < WAIT_S / 2
    assert second_started.is_set(), "the first attempt was never timed out"
    assert out.results["fit"].state.payload == 2.0
    assert out.runs["fit"].status is NodeStatus.RAN and out.runs["fit"].attempts == 2
    assert [e for e in heard.events if e[1] == "fit"] == [
        ("start", "fit"),
        ("retry", "fit"),
        ("start", "fit"),
        ("done", "fit"),
    ]
    assert heard.threads == {threading.get_ident()}


@pytest.mark.timeout(60)
def test_branches_below_a_node_reused_on_a_worker_start_at_once(monkeypatch) -> None:
    """Early cutoff on a worker thread: ``grid`` recomputes to the same output, so the worker
    reuses ``x`` (on_reused) and takes ``y``; ``z`` must start on the second worker straight
    away (the two meet at a barrier), not at the 30 s look. Statuses then say what happened."""
    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    CTL["meet"] = Meet(2)
    nodes = [
        node("grid"),
        node("x", ("grid",)),
        node("y", ("x",), tag="meet"),
        node("z", ("x",), tag="meet", gain=3.0),
    ]
    live = LiveSession(nodes, START, scheduler=LocalScheduler(max_workers=2))
    threads: set[int] = set()
    live.subscribe(lambda event, s: threads.add(threading.get_ident()))
    live.run()
    live.update("grid", note="edited: same output")
    live.update("y", gain=5.0)
    live.update("z", gain=7.0)
    started = time.perf_counter()
    out = live.run()
    assert time.perf_counter() - started < WAIT_S
    assert out.failures == {}
    assert out.runs["x"].status is NodeStatus.HIT
    assert out.runs["x"].reason == "cached: upstream output unchanged"
    assert live.status == {
        "grid": NodeStatus.RAN,
        "x": NodeStatus.HIT,
        "y": NodeStatus.RAN,
        "z": NodeStatus.RAN,
    }
    assert out.results["y"].state.payload == 2.0 * 2.0 * 5.0
    assert threads == {threading.get_ident()}


@pytest.mark.timeout(120)
def test_a_dask_run_s_parallel_branches_meet_without_the_look(monkeypatch) -> None:
    """Dask reports outcomes through ``finish_task``, which wakes the calling thread: the
    branches below ``grid`` are submitted at once and meet; hooks hear all on this thread."""
    pytest.importorskip("distributed")
    from distributed import Client

    from phys_pipeline.dask import DaskScheduler

    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    CTL["meet"] = Meet(2)
    nodes = [
        node("grid"),
        node("a", ("grid",), tag="meet"),
        node("b", ("grid",), tag="meet", gain=3.0),
        node("join", ("a", "b")),
    ]
    heard = Heard()
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        executor = DagExecutor(scheduler=DaskScheduler(c), callbacks=[heard])
        started = time.perf_counter()
        out = executor.run(START, nodes)
        assert time.perf_counter() - started < 20.0
    assert out.results["join"].state.payload == (2.0 * 2.0 + 2.0 * 3.0) * 2.0
    assert heard.threads == {threading.get_ident()}
    assert sorted(nid for ev, nid in heard.events if ev == "done") == ["a", "b", "grid", "join"]


@pytest.mark.timeout(120)
def test_a_process_mode_run_settles_without_the_look(monkeypatch) -> None:
    """Worker threads hand nodes to worker processes and go from node to node; each wakes
    the calling thread once it has nothing more to take, so the run ends long before the
    30 s look, every node heard on this thread in order."""
    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    nodes = [node("grid"), node("a", ("grid",)), node("b", ("grid",), gain=3.0)]
    nodes.append(node("join", ("a", "b")))
    heard = Heard()
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=2, mode="process"), callbacks=[heard]
    )
    started = time.perf_counter()
    out = executor.run(START, nodes)
    assert time.perf_counter() - started < 25.0
    assert out.results["join"].state.payload == (2.0 * 2.0 + 2.0 * 3.0) * 2.0
    assert heard.threads == {threading.get_ident()}
    assert [nid for ev, nid in heard.events if ev == "done"][::3] == ["grid", "join"]
