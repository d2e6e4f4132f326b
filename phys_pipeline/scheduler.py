"""Schedulers run the stale part of a plan. One small protocol, a local implementation.

A scheduler gets the tasks to run (in topological order) and the states already available (cache
hits), runs each task once its parents are done, and reports through :class:`RunHooks`. Hooks are
always called from the thread that called ``execute``, so they need no locking. A failed task's
descendants are skipped; independent branches go on.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import ConfigError, DagError, StateMutationError
from .invoke import call_stage
from .policy import PolicyBag
from .types import DagState, NodeResources, StageResult, State, stage_name

DEFAULT_RESOURCES = NodeResources()


@dataclass
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
    def on_start(self, node_id: str) -> None: ...

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

    ``max_workers`` bounds concurrent nodes; ``max_cpu`` / ``max_gpu`` bound the sum of the
    running nodes' ``resources.cpu`` / ``.gpu``. ``mode="thread"`` (default) suits numpy/FFT
    stages that release the GIL; ``mode="process"`` suits pure-Python stages. Pools live only
    for one ``execute`` call: no threads or processes are left running after a run.
    """

    def __init__(
        self,
        max_workers: int = 1,
        max_cpu: int | None = None,
        max_gpu: int = 0,
        *,
        mode: Literal["thread", "process"] = "thread",
        progress: bool = False,
    ) -> None:
        if max_workers < 1:
            raise ConfigError("LocalScheduler", "max_workers", max_workers, "must be >= 1")
        if mode not in ("thread", "process"):
            raise ConfigError("LocalScheduler", "mode", mode, "must be 'thread' or 'process'")
        self.max_workers = max_workers
        self.max_cpu = max_workers if max_cpu is None else max_cpu
        self.max_gpu = max_gpu
        self.mode = mode
        self.progress = progress

    def __repr__(self) -> str:
        return (
            f"LocalScheduler(max_workers={self.max_workers}, max_cpu={self.max_cpu}, "
            f"max_gpu={self.max_gpu}, mode={self.mode!r})"
        )

    def _check_fits(self, task: NodeTask) -> None:
        res = task.resources
        if res.cpu > max(self.max_cpu, 1) or res.gpu > self.max_gpu:
            raise DagError(
                f"node {task.node_id!r} needs cpu={res.cpu}, gpu={res.gpu} but the scheduler "
                f"has max_cpu={self.max_cpu}, max_gpu={self.max_gpu}"
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
        for task in tasks:
            culprit = next((failed[d] for d in task.deps if d in failed), None)
            if culprit is not None:
                failed[task.node_id] = culprit
                hooks.on_skip(task.node_id, culprit)
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
        states = dict(available)
        waiting = {t.node_id: t for t in tasks}
        remaining_deps = {t.node_id: {d for d in t.deps if d in waiting} for t in tasks}
        children: dict[str, list[str]] = {}
        for task in tasks:
            for dep in remaining_deps[task.node_id]:
                children.setdefault(dep, []).append(task.node_id)
        ready = [t.node_id for t in tasks if not remaining_deps[t.node_id]]
        running: dict[Future, NodeTask] = {}
        cpu_free, gpu_free = max(self.max_cpu, 1), self.max_gpu
        failed: dict[str, str] = {}

        def release(node_id: str, culprit: str | None) -> None:
            for child in children.get(node_id, ()):
                if culprit is not None:
                    failed.setdefault(child, culprit)
                remaining_deps[child].discard(node_id)
                if not remaining_deps[child]:
                    ready.append(child)

        with self._pool() as pool:
            while ready or running:
                still_ready = []
                for node_id in ready:
                    task = waiting[node_id]
                    if node_id in failed:
                        hooks.on_skip(node_id, failed[node_id])
                        release(node_id, failed[node_id])
                        if bar is not None:
                            bar.update(1)
                        continue
                    res = task.resources
                    fits = res.cpu <= cpu_free and res.gpu <= gpu_free
                    if not fits or len(running) >= self.max_workers:
                        still_ready.append(node_id)
                        continue
                    cpu_free -= res.cpu
                    gpu_free -= res.gpu
                    hooks.on_start(node_id)
                    running[self._submit(pool, task, states)] = task
                ready[:] = still_ready
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    cpu_free += task.resources.cpu
                    gpu_free += task.resources.gpu
                    try:
                        result, duration = self._outcome(future)
                    except Exception as exc:  # noqa: BLE001 - reported; siblings go on
                        failed[task.node_id] = task.node_id
                        hooks.on_error(task.node_id, exc)
                        release(task.node_id, task.node_id)
                    else:
                        states[task.node_id] = result.state
                        hooks.on_done(task.node_id, result, duration)
                        release(task.node_id, None)
                    if bar is not None:
                        bar.update(1)

    def _pool(self) -> Executor:
        if self.mode == "process":
            return ProcessPoolExecutor(max_workers=self.max_workers)
        return ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="phys-node")

    def _submit(self, pool: Executor, task: NodeTask, states: Mapping[str, State]) -> Future:
        parents = {dep: states[dep] for dep in task.deps}
        if self.mode == "process":
            import cloudpickle

            return pool.submit(_run_pickled, cloudpickle.dumps((task, parents)))
        return pool.submit(run_node, task, parents)

    def _outcome(self, future: Future) -> tuple[StageResult, float]:
        if self.mode != "process":
            return future.result()
        import cloudpickle

        status, value = cloudpickle.loads(future.result())
        if status == "error":
            raise value
        return value


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="nodes", unit="node", leave=False)
