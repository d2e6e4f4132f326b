"""The run engine: which nodes are ready, which are skipped, which are reused, and what the hooks
hear, written once for every scheduler.

A scheduler hands :meth:`RunEngine.run` a ``submit(task, parents)`` that starts computing one
node somewhere (on this thread, a thread pool, worker processes, a Dask cluster), and reports the
node's outcome back with :meth:`RunEngine.finish_task`, from any thread. The engine does the
rest, as ``dask.local.get_async`` does for Dask's local schedulers.

The state of one run, all of it guarded by ``lock`` (nodes are numbered by their position in
the topologically ordered ``tasks``):

- ``states``: node id -> state, for every available parent and finished node: what children read.
  The state of a node a worker filed in the cache itself (a ``FiledResult``) is loaded only if
  something on this side reads it.
- ``waiting[i]``: how many of node ``i``'s parents in this run are not finished yet.
- ``children[i]``: the nodes that read node ``i``.
- ``ready``: a heap of nodes whose parents are all finished, lowest position first, so that one
  worker runs the nodes in plan order and hooks hear them in that order.
- ``failed``: node -> the failed node it descends from (itself when its own stage failed). A
  ready node in ``failed`` is skipped instead of taken, naming that node.
- ``free``: the slots (workers, cpu, gpu, mem_gb) the running nodes leave.
- ``running``: nodes taken and not finished.
- ``unclaimed`` (only with ``release``): node id -> children not yet submitted or skipped; at
  zero the backend may drop its copy of the node's state.

One readiness update, ``_settle``, for every way a node ends (done, reused, failed, skipped):
its children lose a parent to wait for and inherit its failure, if any; those with none left
become ready. ``finish_task`` (any thread) frees the node's slots, records its state or its
failure, settles it and reports it; a worker thread that finished a node takes the next ready
one in the same turn of the lock and goes straight on with it (``work``), because a thread
hand-off costs tens of microseconds, many times a trivial node.

Before a taken node is submitted, the hooks' ``reuse`` (early cutoff, see ``_cutoff``) may
supply its result; the node is then reported ``on_reused`` and never starts. Once a node is
computed, and before its children can start, the hooks' ``file`` (on the thread that has the
outcome) stores its result, so that a child writing to its input cannot change what is cached.
Other hooks are only ever called on the thread that called ``run``: straight away when every
node runs on that thread, otherwise through ``events``, which that thread hears when a worker
has nothing more to take, or within ``_Events.LOOK_S`` (not at every event: see ``_Events``).

Retries, timeouts and cancel live here too: a failed node whose policy allows another attempt
goes back on ``ready`` once its backoff has passed (``delayed``), instead of into ``failed``; a
node past its deadline is settled as timed out and its late outcome dropped (``finish_task``
ignores nodes that are not running); a cancel stops taking nodes and ends ``run``.

With one thread and nothing to reuse, retry or bound, ``_work_in_order`` runs the tasks in
their order, which is the order the heap would give, without its bookkeeping.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from heapq import heappop, heappush
from typing import Any, NamedTuple, Protocol

from ._invoke import call_stage
from .dag_cache import FiledResult, Filing
from .errors import (
    CodeChangedDuringRunError,
    CorruptedInputError,
    NodeTimeoutError,
    StaleCodeError,
    StateMutationError,
)
from .fingerprint import Fingerprint, stale_parts
from .policy import PolicyBag
from .progress import reporting
from .retry import RetryPolicy
from .types import DagState, NodeResources, StageResult, State, stage_name

__all__ = [
    "DEFAULT_RESOURCES",
    "Cancellation",
    "NodeTask",
    "Outcome",
    "Reused",
    "RunEngine",
    "RunHooks",
    "Scheduler",
    "Slots",
    "node_input",
    "run_node",
    "run_node_elsewhere",
]

DEFAULT_RESOURCES = NodeResources()


@dataclass(slots=True)
class NodeTask:
    """What a worker needs to compute one node; picklable when the stage is."""

    node_id: str
    deps: tuple[str, ...]
    stage: Any
    policy: PolicyBag | None
    root_state: Any = None
    resources: NodeResources = DEFAULT_RESOURCES
    check_mutation: bool = True
    input_names: tuple[str, ...] | None = None  # DagState keys, when not the dep ids
    gather: bool = False  # always hand a DagState, even with one parent
    filing: Filing | None = None  # set: the worker files the result in the cache itself
    code: Fingerprint | None = None  # the plan's, checked again in other processes
    pinned: str | None = None  # the version the node pins, if any (as the plan saw it)
    expected: Mapping[str, bytes] | None = None  # parents' output digests, for other processes
    retry: RetryPolicy | None = None  # run again after a failure (see ``retry``)
    # check ``code`` again after the run: the run is in the background, and the user's
    # thread may change what the stage reads meanwhile
    recheck: bool = False


def node_input(task: NodeTask, parent_states: Mapping[str, State]) -> Any:
    """Roots get the initial state, one parent its state, several a DagState by parent id."""
    if not task.deps:
        return task.root_state
    if len(task.deps) == 1 and not task.gather:
        return parent_states[task.deps[0]]
    names = task.input_names or task.deps
    return DagState({name: parent_states[dep] for name, dep in zip(names, task.deps, strict=True)})


def run_node(task: NodeTask, parent_states: Mapping[str, State]) -> tuple[StageResult, float]:
    """Compute one node: returns its validated result and the stage's wall time in seconds.

    With ``check_mutation``, the input is re-hashed after the run (as Pydra does), because a
    stage that writes to its input would silently corrupt its parent's cached result; its
    digest goes with the result (``input_digest``), and filing records it in the provenance
    (``provenance["input_digest"]``, what early cutoff compares).
    """
    state = node_input(task, parent_states)
    before = state.hashable_repr() if task.check_mutation else None
    shared = task.expected or getattr(parent_states, "digests", None)
    if shared and before is not None:
        _check_shared_inputs(task, parent_states, shared, before)
    started = time.perf_counter()
    result = call_stage(task.stage, state, task.policy, ("node", task.node_id))
    duration = time.perf_counter() - started
    if before is not None:
        if state.hashable_repr() != before:
            raise StateMutationError(task.node_id, stage_name(task.stage))
        # what the result was computed from: early cutoff compares a later input with it
        # (filing stamps it into the provenance, with the rest: one dict, not two)
        result.input_digest = before  # type: ignore[attr-defined]
    if task.recheck and task.code is not None:
        # the stage's own attributes are passed over: a stage may keep what it builds on first
        # use (a table) on itself, which a foreground run files under the planned key too
        changed = stale_parts(task.stage, task.code, task.pinned, own_state=False)
        if changed:
            raise CodeChangedDuringRunError(task.node_id, stage_name(task.stage), changed)
    return result, duration


def _check_shared_inputs(
    task: NodeTask, parent_states: Mapping[str, State], shared: Mapping[str, bytes], before: bytes
) -> None:
    """A parent several nodes read must still be what it produced (``shared``: its output
    digest): a sibling that writes to its input may have changed it before this node began."""
    single = len(task.deps) == 1 and not task.gather
    for dep in task.deps:
        expected = shared.get(dep)
        if expected is not None:
            now = before if single else parent_states[dep].hashable_repr()
            if bytes(now) != expected:
                raise CorruptedInputError(task.node_id, dep)


def run_node_elsewhere(
    task: NodeTask, parent_states: Mapping[str, State]
) -> tuple[StageResult, float]:
    """``run_node`` in another process (a worker process, a Dask worker): first make sure the
    stage's code and the globals it reads are those the plan keyed it by (a module edited and
    reloaded in the driver may be the old one there), else StaleCodeError names the node."""
    if task.code is not None:
        stale = stale_parts(task.stage, task.code, task.pinned)
        if stale:
            raise StaleCodeError(task.node_id, stage_name(task.stage), stale)
    return run_node(task, parent_states)


Outcome = tuple[StageResult, float] | BaseException
"""What a backend reports for a node: ``(result, seconds)`` or the exception it failed with."""


class Cancellation:
    """A run's stop button, pressed from any thread (a widget callback, another cell):
    the engine running the run subscribes to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requested = False
        self._listeners: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            self.requested = True
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on ``cancel`` (now, if it was pressed already); returns the
        unsubscribe function."""
        with self._lock:
            pressed = self.requested
            if not pressed:
                self._listeners.append(listener)
        if pressed:
            listener()
        return lambda: self._forget(listener)

    def _forget(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)


class Reused(NamedTuple):
    """The outcome of a node that early cutoff supplied instead of running."""

    result: StageResult


class RunHooks(Protocol):
    """What a scheduler reports to. ``reuse`` (None, or thread-safe, called just before a node
    would run) may return the node's result without running it (early cutoff); the scheduler
    then reports ``on_reused`` instead of ``on_start`` and ``on_done``."""

    reuse: Callable[[str, Mapping[str, State]], StageResult | None] | None
    file: Callable[[str, StageResult, float], None] | None

    def on_start(self, node_id: str) -> None: ...

    def on_reused(self, node_id: str, result: StageResult) -> None: ...

    def on_done(self, node_id: str, result: StageResult, duration_s: float) -> None: ...

    def on_error(self, node_id: str, error: BaseException) -> None: ...

    def on_skip(self, node_id: str, failed_dep: str) -> None: ...

    # optional: on_retry(node_id, attempt, error), when a failed attempt will be retried;
    # on_progress(node_id, fraction, message), what a stage reports (``progress``)


class Scheduler(Protocol):
    def execute(
        self, tasks: Sequence[NodeTask], available: Mapping[str, State], hooks: RunHooks
    ) -> None: ...


@dataclass(slots=True)
class Slots:
    """How many nodes may run at once and the cpu/gpu/mem_gb their resources may add up to."""

    workers: float = math.inf
    cpu: float = math.inf
    gpu: float = math.inf
    mem_gb: float = math.inf

    def fits(self, res: NodeResources) -> bool:
        return res.cpu <= self.cpu and res.gpu <= self.gpu and res.mem_gb <= self.mem_gb

    def take(self, res: NodeResources) -> None:
        self.cpu -= res.cpu
        self.gpu -= res.gpu
        self.mem_gb -= res.mem_gb

    def give(self, res: NodeResources) -> None:
        self.cpu += res.cpu
        self.gpu += res.gpu
        self.mem_gb += res.mem_gb


def _slots_may_bind(slots: Slots, tasks: Sequence[NodeTask]) -> bool:
    """Whether the cpu/gpu/mem_gb slots can ever hold a node back that the number of workers
    lets start; if not, the engine skips their arithmetic. Not with one node at a time, each
    fitting alone (the scheduler checks), nor when ``workers`` of the largest asks fit at once
    (the common case: every node one cpu, as many cpus as workers)."""
    workers = slots.workers
    if workers <= 1:
        return False
    asks = {id(task.resources): task.resources for task in tasks}.values()
    return bool(asks) and not all(
        workers * max(getattr(res, name) for res in asks) <= getattr(slots, name)
        for name in ("cpu", "gpu", "mem_gb")
    )


Submit = Callable[[NodeTask, Mapping[str, State]], Any]
"""Starts computing a node somewhere; the outcome comes back through ``finish_task``. The
mapping holds (at least) the states of the task's ``deps``: read them, never change it."""
Compute = Callable[[NodeTask, Mapping[str, State]], tuple[StageResult, float]]
"""Computes a node on the calling thread (``run_node``, or a hand-over to a process)."""


class _States(dict[str, State]):
    """States by node id; a node filed by a worker has its state loaded on first read.
    ``digests``: the output digests of the nodes several nodes read, which ``run_node``
    checks its input against (a sibling may have written to it)."""

    def __init__(self, available: Mapping[str, State]) -> None:
        super().__init__(available)
        self.filed: dict[str, FiledResult] = {}
        self.digests: dict[str, bytes] = {}

    def __missing__(self, node_id: str) -> State:
        filed = self.filed.get(node_id)
        if filed is None:
            raise KeyError(node_id)
        state = self[node_id] = filed.state
        return state


class _Events:
    """What other threads tell the calling thread, in the order it happened. The calling
    thread hears it when woken (a worker has nothing more to take, or leaves ready nodes that
    another worker could start: the calling thread submits them; the run crashed or was
    cancelled) or at its next look, at most ``LOOK_S`` later, not at every event: while a
    worker goes from node to node, waking the calling thread for each event would hand the GIL
    back and forth between the two, which costs more than a short node (tens of microseconds a
    hand-off)."""

    LOOK_S = 0.05

    def __init__(self) -> None:
        self.pending: deque[tuple[Any, ...]] = deque()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()

    def tell(self, event: tuple[Any, ...]) -> None:
        self.pending.append(event)

    def wake(self) -> None:
        self._wake.put(None)

    def put(self, event: tuple[Any, ...]) -> None:
        """Tell, and wake the calling thread to hear it now."""
        self.tell(event)
        self.wake()

    def wait(self, timeout: float | None) -> None:
        """Sleep until woken or ``timeout`` (at most ``LOOK_S``) has passed."""
        with contextlib.suppress(queue.Empty):
            self._wake.get(timeout=self.LOOK_S if timeout is None else min(timeout, self.LOOK_S))


class _Deferred:
    """Hooks as seen from other threads: each call becomes an event for the calling thread."""

    def __init__(self, events: _Events) -> None:
        self.tell, self.put = events.tell, events.put

    def on_start(self, node_id: str) -> None:
        self.tell(("on_start", node_id))

    def on_reused(self, node_id: str, result: StageResult) -> None:
        self.tell(("on_reused", node_id, result))

    def on_done(self, node_id: str, result: StageResult, duration_s: float) -> None:
        self.tell(("on_done", node_id, result, duration_s))

    def on_error(self, node_id: str, error: BaseException) -> None:
        self.tell(("on_error", node_id, error))

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self.tell(("on_skip", node_id, failed_dep))

    def on_retry(self, node_id: str, attempt: int, error: BaseException) -> None:
        self.put(("on_retry", node_id, attempt, error))  # wakes: the retry is due at a time

    def on_progress(self, node_id: str, fraction: float, message: str) -> None:
        self.tell(("on_progress", node_id, fraction, message))


_NOT_SETTLING = frozenset({"on_start", "on_retry", "on_progress"})
"""Events that leave their node where it was: the others each settle one node."""


def _reporting_progress(
    compute: Compute, report: RunHooks, task: NodeTask, states: Mapping[str, State]
) -> Outcome:
    """``compute``, with what the stage reports (``report_progress``) going to the hooks."""
    with reporting(partial(report.on_progress, task.node_id)):  # type: ignore[attr-defined]
        return compute(task, states)


class RunEngine:
    """One run of ``tasks`` (topologically ordered) on top of the ``available`` states.

    ``slots`` bound what runs at once (None: unbounded, as on a cluster that places work
    itself). ``threaded=False`` promises that every node runs and finishes on the calling
    thread, so hooks are called on the spot. ``release(node_id)`` (optional) is told when no
    child will ask for a node's state any more. The module docstring describes the state.
    """

    def __init__(
        self,
        tasks: Sequence[NodeTask],
        available: Mapping[str, State],
        hooks: RunHooks,
        *,
        slots: Slots | None = None,
        threaded: bool = True,
        release: Callable[[str], None] | None = None,
        abandon: Callable[[str], None] | None = None,
    ) -> None:
        self.tasks = tasks
        self.hooks = hooks
        self.reuse = getattr(hooks, "reuse", None)
        self.file = getattr(hooks, "file", None)
        # one pass, as ``tasks`` come parents first
        self.position: dict[str, int] = {}
        self.waiting: list[int] = []
        self.children: list[list[int]] = []
        self.ready: list[int] = []  # in order, so already a heap
        position, waiting, children = self.position, self.waiting, self.children
        readers: dict[str, int] = {}  # of the states available already
        checked = may_retry = False
        for i, task in enumerate(tasks):
            count = 0
            for dep in task.deps:
                parent = position.get(dep)
                if parent is not None:
                    count += 1
                    children[parent].append(i)
                else:
                    readers[dep] = readers.get(dep, 0) + 1
            position[task.node_id] = i
            waiting.append(count)
            children.append([])
            if not count:
                self.ready.append(i)
            checked = checked or task.check_mutation
            may_retry = may_retry or task.retry is not None
        self.states = _States(available)
        # nodes several tasks read: their output digest is kept for run_node to check
        self.shared: set[str] = set()
        if checked:
            self.shared = {dep for dep, count in readers.items() if count > 1}
            self.shared.update(
                [tasks[i].node_id for i, kids in enumerate(children) if len(kids) > 1]
            )
        for dep in self.shared & available.keys():
            self.states.digests[dep] = bytes(available[dep].hashable_repr())
        self.failed: dict[int, str] = {}
        self.free = slots if slots is not None else Slots()
        self.count_slots = slots is not None and _slots_may_bind(slots, tasks)
        self.running: set[int] = set()
        self.release = release
        self.unclaimed: dict[str, int] = {}
        if release is not None:
            for task in tasks:
                for dep in task.deps:
                    self.unclaimed[dep] = self.unclaimed.get(dep, 0) + 1
        self.stopped = False
        self.cancelled = False
        self.may_retry = may_retry  # a task has a retry policy (or a timeout)
        self.attempts: dict[int, int] = {}  # node -> the attempt it is on (retried nodes only)
        self.delayed: list[tuple[float, int]] = []  # (monotonic time due, node): retries
        self.deadlines: dict[int, float] = {}  # running node -> monotonic time it times out
        self.abandon = abandon  # told of a node given up on (timed out) still computing
        self.abandoned = False  # a node was given up on: do not wait for its worker
        self.ended = False  # run() has returned: late outcomes are dropped
        self.lock = threading.Lock()
        self.events = _Events()
        self.threaded = threaded
        self.report: RunHooks | _Deferred = _Deferred(self.events) if threaded else hooks
        self.submit: Submit | None = None

    # --- the calling thread -----------------------------------------------------------------

    def run(self, submit: Submit) -> None:
        """Submit ready nodes until every node is settled, calling the hooks on this thread.
        On any exception (a hook raising, KeyboardInterrupt) nothing more is submitted."""
        self.submit = submit
        cancellation = getattr(self.hooks, "cancellation", None)
        unsubscribe = cancellation.subscribe(self.cancel) if cancellation is not None else None
        try:
            self._fire()
            if not self.threaded:
                while self.delayed and not self.stopped:  # inline: nothing else to do meanwhile
                    time.sleep(self._until_next_retry() or 0.0)
                    self._fire()
                return
            events, pending, settled = self.events, self.events.pending, 0
            while settled < len(self.tasks):
                if not pending:
                    events.wait(self._until_next_wakeup())
                    if self.deadlines:  # a node may have run out of time
                        self._expire()
                    self._fire()  # ready nodes no worker took; a retry come due
                    continue
                event, *details = pending.popleft()
                if event == "crash":
                    raise details[0]
                if event == "cancel":
                    return
                self._hear(event, details)
                if event not in _NOT_SETTLING:
                    settled += 1
                if self._room():
                    self._fire()
        except KeyboardInterrupt:
            # what workers told before the interrupt is heard: a node that completed is
            # reported so (it is cached), not as one the run did not get to
            self.stop()
            told = self.events.pending  # (none when every node runs on this thread)
            while told and told[0][0] not in ("crash", "cancel"):
                event, *details = told.popleft()
                self._hear(event, details)
            raise
        finally:
            self.stop()
            with self.lock:
                self.ended = True
            # the scheduler's submit often holds this engine (partial(engine.work)): drop it,
            # so that the run's states and results are freed now, not by the cycle collector
            self.submit = None
            if unsubscribe is not None:
                unsubscribe()

    def _room(self) -> bool:
        """Whether ready nodes wait while a worker could start one."""
        return bool(self.ready) and len(self.running) < self.free.workers

    def _hear(self, event: str, details: list[Any]) -> None:
        handler = getattr(self.hooks, event, None)  # on_retry and on_progress are optional
        if handler is not None:
            handler(*details)

    def cancel(self) -> None:
        """Stop the run (any thread): nothing more starts, nodes running are abandoned (their
        outcomes dropped; one that completes is still filed), and ``run`` returns."""
        with self.lock:
            self.stopped = self.cancelled = True
        self.events.put(("cancel",))

    def stop(self) -> None:
        """Take no more nodes; those running finish, and their outcomes are dropped."""
        with self.lock:
            self.stopped = True

    def _fire(self) -> None:
        """Take and submit ready nodes while slots allow."""
        while True:
            with self.lock:
                i = self._take()
            if i < 0:
                return
            task = self.tasks[i]
            if self._begin(i):
                self.submit(task, self.states)  # type: ignore[misc]
            if self.release is not None:
                self._claim(task)

    # --- any thread ---------------------------------------------------------------------------

    def work(self, task: NodeTask, parents: Mapping[str, State], compute: Compute) -> None:
        """Compute ``task`` on this thread, then go on with the next ready node, taken in the
        same turn of the lock that finishes this one, until none is left to take."""
        tasks, states, lock, threaded = self.tasks, self.states, self.lock, self.threaded
        plain = self.reuse is None and self.release is None  # nothing to do between nodes
        if getattr(self.hooks, "on_progress", None) is not None:  # someone listens
            compute = partial(_reporting_progress, compute, self.report)
        i = self.position[task.node_id]
        if plain and not threaded and not self.count_slots and not self.may_retry:
            self._work_in_order(i, compute)
            return
        try:
            while i >= 0:
                attempt = self.attempts.get(i, 1) if self.attempts else 1
                try:
                    outcome: Outcome = compute(task, states)
                except Exception as exc:  # noqa: BLE001 - the node's failure; siblings go on
                    outcome = exc
                else:  # a strict cache's CacheError ends the run, as the caller asked
                    if not self.may_retry or self._arrived(i, attempt):
                        self._before_children(task.node_id, outcome)
                if threaded:
                    with lock:
                        i = self._finish(i, outcome, True, attempt)
                        room = self._room()
                    if room:  # ready nodes this thread leaves: the calling thread submits them
                        self.events.wake()
                else:  # only this thread: no lock needed
                    i = self._finish(i, outcome, True, attempt)
                if plain:
                    if i >= 0:
                        task = tasks[i]
                        self.report.on_start(task.node_id)
                    continue
                while i >= 0:
                    task = tasks[i]
                    started = self._begin(i)
                    if self.release is not None:
                        self._claim(task)
                    if started:
                        break
                    with lock:  # reused: finished already; take another
                        i = self._take()
                        room = self._room()
                    if threaded and room:
                        self.events.wake()
        except BaseException as exc:  # a bug, or an interrupt: it must reach the caller
            if not threaded:
                raise
            self.events.put(("crash", exc))
        else:
            if threaded:  # nothing left to take: the calling thread hears what happened
                self.events.wake()

    def _work_in_order(self, first: int, compute: Compute) -> None:
        """``work`` on the calling thread when nothing is reused, retried or bounded: tasks
        come parents first, so the next ready node is always the next one in order (what the
        heap would give), and a finished node's children need only learn of its failure."""
        tasks, states, failed, report = self.tasks, self.states, self.failed, self.report
        on_start, on_done = report.on_start, report.on_done
        self.running.clear()
        self.ready.clear()  # taken here, in order
        for i in range(first, len(tasks)):
            if self.stopped:
                return
            task = tasks[i]
            node_id = task.node_id
            culprit = failed.get(i) if failed else None
            if culprit is not None:
                self._inherit(i, culprit)
                report.on_skip(node_id, culprit)
                continue
            if i != first:  # run told of the first
                on_start(node_id)
            try:
                outcome: Outcome = compute(task, states)
            except Exception as exc:  # noqa: BLE001 - the node's failure; siblings go on
                failed[i] = node_id
                self._inherit(i, node_id)
                report.on_error(node_id, exc)
                continue
            self._before_children(node_id, outcome)
            states[node_id] = outcome[0].state
            on_done(node_id, *outcome)

    def finish_task(self, task: NodeTask, outcome: Outcome | Reused) -> None:
        """Report a submitted node's outcome, from any thread: ``(result, seconds)``, the
        exception it failed with, or ``Reused(result)``."""
        if type(outcome) is tuple:
            result = outcome[0]
            if self.attempts:
                self._note_attempts(task.node_id, result)
            if task.node_id in self.shared:  # a worker's receipt has the digest: no loading
                digest = result.digest if type(result) is FiledResult else None
                self.states.digests[task.node_id] = digest or bytes(result.state.hashable_repr())
            if self.file is not None:
                try:
                    self.file(task.node_id, *outcome)
                except Exception as exc:  # noqa: BLE001 - e.g. a strict cache that failed
                    outcome = exc
        with self.lock:
            self._finish(self.position[task.node_id], outcome, False)
        if self.threaded:  # the calling thread hears it, and submits what it made ready
            self.events.wake()

    def _before_children(self, node_id: str, outcome: tuple[StageResult, float]) -> None:
        """What must happen before any child can touch the node's state: its digest, where
        several nodes read it, and filing it (``hooks.file``): a child that writes to its
        input must not change what is cached."""
        if node_id in self.shared:
            self.states.digests[node_id] = bytes(outcome[0].state.hashable_repr())
        if self.attempts:
            self._note_attempts(node_id, outcome[0])
        if self.file is not None:
            self.file(node_id, *outcome)

    def _arrived(self, i: int, attempt: int) -> bool:
        """Whether the result node ``i``'s attempt ``attempt`` computed is still wanted: not
        when the attempt timed out meanwhile (a retry may be computing another, which is the
        one the run shows and files). A wanted result's node is timed no more, so that filing
        it is not cut short."""
        with self.lock:
            if i not in self.running or self.attempts.get(i, 1) != attempt:
                return False
            self.deadlines.pop(i, None)
            return True

    def _note_attempts(self, node_id: str, result: StageResult) -> None:
        """A result that took retries records how many attempts (provenance["attempts"])."""
        attempt = self.attempts.get(self.position[node_id], 1)
        if attempt > 1:
            result.provenance = {**result.provenance, "attempts": attempt}

    # --- under the lock -----------------------------------------------------------------------

    def _finish(self, i: int, outcome: Outcome | Reused, take_next: bool, attempt: int = 0) -> int:
        """The outcome of running node ``i``: free its slots, record its state or failure,
        settle and report it; with ``take_next``, take the next ready node in the same turn
        of the lock (-1: none). A node that completes after a Stop while ``run`` is still on
        (inline: the very node it was computing) is recorded; once ``run`` has returned,
        outcomes are dropped (filed all the same: they are right). Nothing new is taken once
        the run stopped."""
        running = self.running
        if i not in running or self.ended:
            return -1
        if attempt and self.attempts and self.attempts.get(i, 1) != attempt:
            return -1  # a timed-out attempt's late outcome: a later attempt is running
        running.remove(i)
        if self.deadlines:
            self.deadlines.pop(i, None)
        task = self.tasks[i]
        if self.count_slots:
            self.free.give(task.resources)
        node_id = task.node_id
        if isinstance(outcome, BaseException):
            if task.retry is not None and self._retry(i, task, outcome):
                return self._take() if take_next else -1
            self.failed[i] = node_id
            self._settle(i, node_id)
            self.report.on_error(node_id, outcome)
        else:
            result = outcome[0]
            if type(result) is FiledResult:
                result.bind(task.filing.cache)  # type: ignore[union-attr]
                self.states.filed[node_id] = result
            else:
                self.states[node_id] = result.state
            self._settle(i, None)
            if type(outcome) is Reused:
                self.report.on_reused(node_id, result)
            else:
                self.report.on_done(node_id, result, outcome[1])
        return self._take() if take_next else -1

    def _settle(self, i: int, culprit: str | None) -> None:
        """The readiness update. Node ``i`` is finished: its children lose a parent to wait
        for (and inherit the failure, if any); those with none left become ready."""
        if culprit is not None:
            self._inherit(i, culprit)
        waiting = self.waiting
        for child in self.children[i]:
            waiting[child] -= 1
            if not waiting[child]:
                heappush(self.ready, child)

    def _inherit(self, i: int, culprit: str) -> None:
        """Node ``i`` failed or was skipped: its children will be skipped, naming ``culprit``."""
        for child in self.children[i]:
            self.failed.setdefault(child, culprit)

    def _retry(self, i: int, task: NodeTask, error: BaseException) -> bool:
        """Put a failed node back, to be ready again once its backoff has passed, if its
        policy allows another attempt (under the lock)."""
        attempt = self.attempts.get(i, 1)
        if not task.retry.retries(error, attempt):  # type: ignore[union-attr]
            return False
        self.attempts[i] = attempt + 1
        due = time.monotonic() + task.retry.delay_s(attempt)  # type: ignore[union-attr]
        heappush(self.delayed, (due, i))
        on_retry = getattr(self.report, "on_retry", None)
        if on_retry is not None:
            on_retry(task.node_id, attempt, error)
        return True

    def _until_next_retry(self) -> float | None:
        """Seconds until the next delayed retry is due (None: none is waiting)."""
        if not self.delayed:
            return None
        return max(0.0, self.delayed[0][0] - time.monotonic())

    def _until_next_wakeup(self) -> float | None:
        """Seconds until a retry is due or a running node times out (None: never)."""
        if not self.delayed and not self.deadlines:  # the common case, asked once per event
            return None
        times = [due for due, _ in self.delayed[:1]] + list(self.deadlines.values())
        return max(0.0, min(times) - time.monotonic())

    def _expire(self) -> None:
        """Nodes past their deadline fail with NodeTimeoutError (retried if their policy
        says so); what they compute is abandoned: its outcome is dropped when it comes."""
        now = time.monotonic()
        with self.lock:
            late = [i for i, deadline in self.deadlines.items() if deadline <= now]
            for i in late:
                task = self.tasks[i]
                seconds = task.retry.timeout_s  # type: ignore[union-attr]
                self.attempts.setdefault(i, 1)  # its late outcome is told apart from a retry's
                self._finish(i, NodeTimeoutError(task.node_id, seconds), False)
                self.abandoned = True
                if self.abandon is not None:
                    self.abandon(task.node_id)

    def _take(self) -> int:
        """The first ready node whose slots are free, with its slots taken (-1: none); ready
        nodes below a failure are skipped on the way."""
        if self.delayed:
            now = time.monotonic()
            while self.delayed and self.delayed[0][0] <= now:
                heappush(self.ready, heappop(self.delayed)[1])
        ready, failed, free = self.ready, self.failed, self.free
        if not ready or self.stopped:
            return -1
        if not failed:  # the common case, kept short
            if len(self.running) >= free.workers:
                return -1
            if not self.count_slots:
                i = heappop(ready)
                self.running.add(i)
                if self.tasks[i].retry is not None:
                    self._deadline(i)
                return i
        passed_over: list[int] = []
        taken = -1
        while ready:
            i = ready[0]
            task = self.tasks[i]
            if i in failed:
                heappop(ready)
                self._settle(i, failed[i])
                self.report.on_skip(task.node_id, failed[i])
                if self.release is not None:
                    self._claim_locked(task)
                continue
            if len(self.running) >= free.workers:
                break
            heappop(ready)
            if self.count_slots:
                if not free.fits(task.resources):
                    passed_over.append(i)
                    continue
                free.take(task.resources)
            self.running.add(i)
            taken = i
            break
        if taken >= 0 and self.tasks[taken].retry is not None:
            self._deadline(taken)
        for i in passed_over:
            heappush(ready, i)
        return taken

    def _deadline(self, i: int) -> None:
        timeout = self.tasks[i].retry.timeout_s  # type: ignore[union-attr]
        if timeout is not None:
            self.deadlines[i] = time.monotonic() + timeout
            if self.threaded:  # the calling thread keeps the time: it must know the deadline
                self.events.wake()

    def _begin(self, i: int) -> bool:
        """Early cutoff, or the node starts: False when ``reuse`` supplied (and so finished)
        the node. Not under the lock: ``reuse`` reads the cache and hashes states."""
        node_id = self.tasks[i].node_id
        if self.reuse is not None:
            try:
                reused = self.reuse(node_id, self.states)
            except Exception as exc:  # noqa: BLE001 - a cache that fails fails this node
                with self.lock:
                    self._finish(i, exc, False)
                return False
            if reused is not None:
                with self.lock:
                    self._finish(i, Reused(reused), False)
                return False
        self.report.on_start(node_id)
        return True

    def _claim(self, task: NodeTask) -> None:
        """``task`` was submitted, reused or skipped: it never asks for its parents' states
        again; tell ``release`` about the parents no other child will ask for."""
        with self.lock:
            self._claim_locked(task)

    def _claim_locked(self, task: NodeTask) -> None:
        for dep in task.deps:
            self.unclaimed[dep] -= 1
            if not self.unclaimed[dep]:
                self.release(dep)  # type: ignore[misc]
