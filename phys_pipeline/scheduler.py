"""Schedulers run the stale part of a plan. One small protocol, a local implementation.

A scheduler gets the tasks to run (in topological order) and the states already available (cache
hits), runs each task once its parents are done, and reports through :class:`RunHooks`. Hooks are
always called from the thread that called ``execute``, so they need no locking. A failed task's
descendants are skipped; independent branches go on.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import pickle
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import ConfigError, DagError, StageError, StateMutationError
from .invoke import call_stage
from .policy import PolicyBag
from .types import DagState, NodeResources, StageResult, State, stage_name

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
    stage that writes to its input would silently corrupt its parent's cached result.
    """
    state = node_input(task, parent_states)
    before = state.hashable_repr() if task.check_mutation else None
    started = time.perf_counter()
    result = call_stage(task.stage, state, task.policy, where=f"node {task.node_id!r}")
    duration = time.perf_counter() - started
    if before is not None and state.hashable_repr() != before:
        raise StateMutationError(task.node_id, stage_name(task.stage))
    return result, duration


class RunHooks(Protocol):
    """What a scheduler reports to. ``reuse`` (None, or thread-safe, called just before a node
    would run) may return the node's result without running it (early cutoff); the scheduler
    then reports ``on_reused`` instead of ``on_done``."""

    reuse: Callable[[str, Mapping[str, State]], StageResult | None] | None

    def on_start(self, node_id: str) -> None: ...

    def on_reused(self, node_id: str, result: StageResult) -> None: ...

    def on_done(self, node_id: str, result: StageResult, duration_s: float) -> None: ...

    def on_error(self, node_id: str, error: BaseException) -> None: ...

    def on_skip(self, node_id: str, failed_dep: str) -> None: ...


class Scheduler(Protocol):
    def execute(
        self, tasks: Sequence[NodeTask], available: Mapping[str, State], hooks: RunHooks
    ) -> None: ...


def _run_pickled(payload: bytes) -> bytes:
    """Process-pool entry point: cloudpickle carries classes defined in notebooks."""
    import cloudpickle

    task, parents = cloudpickle.loads(payload)
    try:
        return cloudpickle.dumps(("ok", run_node(task, parents)))
    except Exception as exc:  # noqa: BLE001 - shipped back and re-raised in the parent
        try:
            return cloudpickle.dumps(("error", exc))
        except (pickle.PicklingError, TypeError):
            return cloudpickle.dumps(("error", RuntimeError(repr(exc))))


class LocalScheduler:
    """Runs nodes concurrently on this machine, honouring ``NodeResources`` slots.

    ``max_workers`` bounds concurrent nodes; ``max_cpu`` / ``max_gpu`` / ``max_mem_gb`` bound
    the sum of the running nodes' ``resources.cpu`` / ``.gpu`` / ``.mem_gb`` (memory: unbounded
    when None). ``mode="thread"`` (default) suits numpy/FFT
    stages that release the GIL; ``mode="process"`` suits pure-Python stages. Pools live only
    for one ``execute`` call: no threads or processes are left running after a run.
    """

    def __init__(
        self,
        max_workers: int = 1,
        max_cpu: int | None = None,
        max_gpu: int = 0,
        *,
        max_mem_gb: float | None = None,
        mode: Literal["thread", "process"] = "thread",
        progress: bool = False,
    ) -> None:
        if max_workers < 1:
            raise ConfigError("LocalScheduler", "max_workers", max_workers, "must be >= 1")
        for field, value in (
            ("max_cpu", max_cpu),
            ("max_gpu", max_gpu),
            ("max_mem_gb", max_mem_gb),
        ):
            if value is not None and value < 0:
                raise ConfigError("LocalScheduler", field, value, "must be >= 0")
        if mode not in ("thread", "process"):
            raise ConfigError("LocalScheduler", "mode", mode, "must be 'thread' or 'process'")
        self.max_workers = max_workers
        self.max_cpu = max_workers if max_cpu is None else max_cpu
        self.max_gpu = max_gpu
        self.max_mem_gb = max_mem_gb
        self.mode = mode
        self.progress = progress

    def __repr__(self) -> str:
        return (
            f"LocalScheduler(max_workers={self.max_workers}, max_cpu={self.max_cpu}, "
            f"max_gpu={self.max_gpu}, max_mem_gb={self.max_mem_gb}, mode={self.mode!r})"
        )

    def _check_fits(self, task: NodeTask) -> None:
        res = task.resources
        too_much_memory = self.max_mem_gb is not None and res.mem_gb > self.max_mem_gb
        if res.cpu > max(self.max_cpu, 1) or res.gpu > self.max_gpu or too_much_memory:
            raise DagError(
                f"node {task.node_id!r} needs cpu={res.cpu}, gpu={res.gpu}, "
                f"mem_gb={res.mem_gb} but the scheduler has max_cpu={self.max_cpu}, "
                f"max_gpu={self.max_gpu}, max_mem_gb={self.max_mem_gb}"
            )

    def execute(
        self, tasks: Sequence[NodeTask], available: Mapping[str, State], hooks: RunHooks
    ) -> None:
        for task in tasks:
            self._check_fits(task)
        bar = _progress_bar(len(tasks)) if self.progress else None
        try:
            if self.max_workers == 1 and self.mode == "thread":
                self._execute_inline(tasks, available, hooks, bar)
            else:
                self._execute_pooled(tasks, available, hooks, bar)
        finally:
            if bar is not None:
                bar.close()

    @staticmethod
    def _execute_inline(
        tasks: Sequence[NodeTask], available: Mapping[str, State], hooks: RunHooks, bar: Any
    ) -> None:
        states = dict(available)
        failed: dict[str, str] = {}
        reuse = getattr(hooks, "reuse", None)
        for task in tasks:
            culprit = next((failed[d] for d in task.deps if d in failed), None) if failed else None
            reused = reuse(task.node_id, states) if reuse is not None and culprit is None else None
            if culprit is not None:
                failed[task.node_id] = culprit
                hooks.on_skip(task.node_id, culprit)
            elif reused is not None:
                states[task.node_id] = reused.state
                hooks.on_reused(task.node_id, reused)
            else:
                hooks.on_start(task.node_id)
                try:
                    result, duration = run_node(task, states)
                except Exception as exc:  # noqa: BLE001 - reported; siblings go on
                    failed[task.node_id] = task.node_id
                    hooks.on_error(task.node_id, exc)
                else:
                    states[task.node_id] = result.state
                    hooks.on_done(task.node_id, result, duration)
            if bar is not None:
                bar.update(1)

    def _execute_pooled(
        self, tasks: Sequence[NodeTask], available: Mapping[str, State], hooks: RunHooks, bar: Any
    ) -> None:
        """Worker threads take ready nodes themselves and release their children, so that a
        short node never waits for this thread to wake up (a thread hand-off costs tens of
        microseconds); this thread calls the hooks, in the order the events happened."""
        with self._pool() as pool:
            run = _PooledRun(self, tasks, available, pool, getattr(hooks, "reuse", None))
            workers = [
                threading.Thread(target=run.work, name=f"phys-node_{i}", daemon=True)
                for i in range(min(self.max_workers, len(tasks)))
            ]
            for worker in workers:
                worker.start()
            try:
                settled = 0
                while settled < len(tasks):
                    event, node_id, *details = run.events.get()
                    if event == "crash":
                        raise details[0]
                    getattr(hooks, event)(node_id, *details)
                    if event != "on_start":
                        settled += 1
                        if bar is not None:
                            bar.update(1)
            finally:
                run.stop()
                for worker in workers:
                    worker.join()

    def _pool(self) -> contextlib.AbstractContextManager[ProcessPoolExecutor | None]:
        """Process mode: the processes the worker threads hand their nodes to."""
        if self.mode == "process":
            # not fork: forking a process whose other threads (Jupyter's, Dask's) hold locks can
            # deadlock the child; stages travel by cloudpickle, so nothing relies on fork
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            context = mp.get_context(method)
            return ProcessPoolExecutor(max_workers=self.max_workers, mp_context=context)
        return contextlib.nullcontext()


def _pickled(task: NodeTask, parents: dict[str, State]) -> bytes:
    """The node's work for a worker process; a stage or state that cannot be pickled fails
    this node (named), not the run."""
    import cloudpickle

    try:
        return cloudpickle.dumps((task, parents))
    except Exception as exc:  # pickling raises TypeError, PicklingError, AttributeError, ...
        raise StageError(
            f"node {task.node_id!r}",
            stage_name(task.stage),
            TypeError(f"cannot send the stage and its input to a worker process: {exc}"),
        ) from exc


def _run_in_process(pool: ProcessPoolExecutor, payload: bytes) -> tuple[StageResult, float]:
    import cloudpickle

    status, value = cloudpickle.loads(pool.submit(_run_pickled, payload).result())
    if status == "error":
        raise value
    return value


class _PooledRun:
    """The state of one pooled run, shared by its worker threads under ``lock``: which nodes
    are ready (in the order they became ready), free slots, parents' states and failures.
    Workers report to the calling thread through ``events`` (hook name, node id, details)."""

    def __init__(
        self,
        scheduler: LocalScheduler,
        tasks: Sequence[NodeTask],
        available: Mapping[str, State],
        pool: ProcessPoolExecutor | None,
        reuse: Callable[[str, Mapping[str, State]], StageResult | None] | None,
    ) -> None:
        self.max_workers = scheduler.max_workers
        self.reuse = reuse
        self.cpu_free, self.gpu_free = max(scheduler.max_cpu, 1), scheduler.max_gpu
        self.mem_free = math.inf if scheduler.max_mem_gb is None else scheduler.max_mem_gb
        self.pool = pool
        self.states = dict(available)
        self.waiting = {t.node_id: t for t in tasks}
        self.remaining_deps = {t.node_id: {d for d in t.deps if d in self.waiting} for t in tasks}
        self.children: dict[str, list[str]] = {}
        for task in tasks:
            for dep in self.remaining_deps[task.node_id]:
                self.children.setdefault(dep, []).append(task.node_id)
        self.ready = deque(t.node_id for t in tasks if not self.remaining_deps[t.node_id])
        self.failed: dict[str, str] = {}  # node -> the failed node it descends from
        self.running = 0
        self.idle = 0  # workers waiting on ``lock`` for a ready node
        self.unsettled = len(tasks)  # nodes not yet done, failed or skipped
        self.stopped = False
        self.lock = threading.Condition()
        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()

    def _settle(self, event: str, node_id: str, *details: Any) -> None:
        self.unsettled -= 1
        self.events.put((event, node_id, *details))

    def _release(self, node_id: str, culprit: str | None) -> None:
        for child in self.children.get(node_id, ()):
            if culprit is not None:
                self.failed.setdefault(child, culprit)
            self.remaining_deps[child].discard(node_id)
            if not self.remaining_deps[child]:
                self.ready.append(child)

    def _skip_doomed(self) -> None:
        """Settle ready nodes whose dependencies failed (and so on down the graph)."""
        doomed = [n for n in self.ready if n in self.failed]
        while doomed:
            for node_id in doomed:
                self.ready.remove(node_id)
                self._settle("on_skip", node_id, self.failed[node_id])
                self._release(node_id, self.failed[node_id])
            doomed = [n for n in self.ready if n in self.failed]

    def _take(self) -> NodeTask | None:
        """The first ready node whose slots are free, with its slots taken; None if none."""
        if self.failed:
            self._skip_doomed()
        if self.running >= self.max_workers:
            return None
        for node_id in self.ready:
            task = self.waiting[node_id]
            res = task.resources
            if (
                res.cpu <= self.cpu_free
                and res.gpu <= self.gpu_free
                and res.mem_gb <= self.mem_free
            ):
                self.ready.remove(node_id)
                self.cpu_free -= res.cpu
                self.gpu_free -= res.gpu
                self.mem_free -= res.mem_gb
                self.running += 1
                self.events.put(("on_start", node_id))
                return task
        return None

    def work(self) -> None:
        """A worker thread: run ready nodes until every node is settled or the run stops.
        Settling a node and taking the next one share one turn of the lock."""
        try:
            finished: tuple[NodeTask, tuple[Any, ...]] | None = None
            while True:
                with self.lock:
                    if finished is not None:
                        self._finish(*finished)
                    task = None
                    while task is None:
                        if self.stopped or not self.unsettled:
                            self.lock.notify_all()  # skips may have settled the last nodes
                            return
                        task = self._take()
                        if task is None:
                            self.idle += 1
                            self.lock.wait()
                            self.idle -= 1
                    parents = {dep: self.states[dep] for dep in task.deps}
                finished = (task, self._run(task, parents))
        except BaseException as exc:  # noqa: BLE001 - a bug here must reach the caller
            self.events.put(("crash", "", exc))

    def _run(self, task: NodeTask, parents: dict[str, State]) -> tuple[Any, ...]:
        """The node's event: ("on_done", id, result, seconds), ("on_reused", id, result) or
        ("on_error", id, exc)."""
        try:
            reused = self.reuse(task.node_id, parents) if self.reuse is not None else None
            if reused is not None:
                return ("on_reused", task.node_id, reused)
            if self.pool is None:
                result, duration = run_node(task, parents)
            else:
                result, duration = _run_in_process(self.pool, _pickled(task, parents))
        except Exception as exc:  # noqa: BLE001 - reported; siblings go on
            return ("on_error", task.node_id, exc)
        return ("on_done", task.node_id, result, duration)

    def _finish(self, task: NodeTask, outcome: tuple[Any, ...]) -> None:
        """Free the node's slots, release its children, report it; called under ``lock``."""
        self.running -= 1
        self.cpu_free += task.resources.cpu
        self.gpu_free += task.resources.gpu
        self.mem_free += task.resources.mem_gb
        if outcome[0] != "on_error":
            self.states[task.node_id] = outcome[2].state
            self._release(task.node_id, None)
        else:
            self.failed[task.node_id] = task.node_id
            self._release(task.node_id, task.node_id)
        self._settle(*outcome)
        if self.idle:  # idle workers may now find a ready node or see the run end
            self.lock.notify_all()

    def stop(self) -> None:
        """No more nodes start; workers finish the node they are running, then exit."""
        with self.lock:
            self.stopped = True
            self.lock.notify_all()


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="nodes", unit="node", leave=False)
