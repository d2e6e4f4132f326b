"""LocalScheduler: runs the stale part of a plan on this machine, inline, on threads or on
worker processes. It only submits nodes; readiness, skipping, early cutoff, slots and hook
calls are the run engine's (``phys_pipeline.engine``), shared with ``DaskScheduler``.

Hooks are always called from the thread that called ``execute``, so they need no locking. A
failed task's descendants are skipped; independent branches go on.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import pickle
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import Any, Literal

from ._v2 import served_from
from ._v2.scheduler import JobApi
from .engine import (
    DEFAULT_RESOURCES,
    NodeTask,
    RunEngine,
    RunHooks,
    Scheduler,
    Slots,
    node_input,
    run_node,
    run_node_elsewhere,
)
from .errors import ConfigError, DagError, StageError
from .types import StageResult, State, amount_problem, stage_name

# NodeTask, RunHooks, Scheduler, run_node, node_input and DEFAULT_RESOURCES live in the engine;
# they are importable from here too, as user code and the docs do
__all__ = [
    "DEFAULT_RESOURCES",
    "LocalScheduler",
    "NodeTask",
    "RunHooks",
    "Scheduler",
    "node_input",
    "run_node",
]


def _run_pickled(payload: bytes) -> bytes:
    """Process-pool entry point: cloudpickle carries classes defined in notebooks."""
    import cloudpickle

    task, parents = cloudpickle.loads(payload)
    try:
        return cloudpickle.dumps(("ok", run_node_elsewhere(task, parents)))
    except Exception as exc:  # noqa: BLE001 - shipped back and re-raised in the parent
        try:
            return cloudpickle.dumps(("error", exc))
        except (pickle.PicklingError, TypeError):
            return cloudpickle.dumps(("error", RuntimeError(repr(exc))))


class LocalScheduler(JobApi):
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
            problem = None if value is None else amount_problem(value)
            if problem is not None:
                raise ConfigError("LocalScheduler", field, value, problem)
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
        checked: set[int] = set()  # most nodes share one NodeResources: check each once
        for task in tasks:
            if id(task.resources) not in checked:
                self._check_fits(task)
                checked.add(id(task.resources))
        bar = _progress_bar(len(tasks)) if self.progress else None
        if bar is not None:
            hooks = _WithProgress(hooks, bar)
        slots = Slots(
            self.max_workers,
            max(self.max_cpu, 1),
            self.max_gpu,
            math.inf if self.max_mem_gb is None else self.max_mem_gb,
        )
        try:
            timed = any(t.retry is not None and t.retry.timeout_s for t in tasks)
            if self.max_workers == 1 and self.mode == "thread" and not timed:
                # inline (a timeout needs a thread to watch the clock while a node runs)
                engine = RunEngine(tasks, available, hooks, slots=slots, threaded=False)
                engine.run(partial(engine.work, compute=run_node))
                return
            engine = RunEngine(tasks, available, hooks, slots=slots)
            with self._pools(len(tasks), engine) as (threads, processes):
                compute = run_node if processes is None else partial(_in_process, processes)
                # worker threads take ready nodes themselves (``engine.work``), so that a short
                # node never waits for this thread to wake up; this thread calls the hooks
                engine.run(partial(threads.submit, engine.work, compute=compute))
        finally:
            if bar is not None:
                bar.close()

    @contextlib.contextmanager
    def _pools(
        self, n_tasks: int, engine: RunEngine
    ) -> Iterator[tuple[ThreadPoolExecutor, ProcessPoolExecutor | None]]:
        """Worker threads, and in process mode the processes they hand their nodes to. Both
        live only for one ``execute``: a run that ends waits for them; one cancelled or
        interrupted does not: worker processes are killed, worker threads left to finish their
        node (Python cannot stop a thread), its outcome dropped."""
        workers = max(1, min(self.max_workers, n_tasks))
        processes = None
        if self.mode == "process":
            # not fork: forking a process whose other threads (Jupyter's, Dask's) hold locks
            # can deadlock the child; stages travel by cloudpickle, nothing relies on fork
            method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
            processes = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))
        # a node that times out keeps its thread (Python cannot stop one): room for as many
        # abandoned attempts as there can be, so that the run keeps its width (threads are
        # only started when needed; the engine's slots still bound what runs at once)
        spare = sum(
            t.retry.max_retries + 1
            for t in engine.tasks
            if t.retry is not None and t.retry.timeout_s
        )
        threads = ThreadPoolExecutor(max_workers=workers + spare, thread_name_prefix="phys-node")
        abandon = True
        try:
            yield threads, processes
            abandon = engine.cancelled or engine.abandoned
        finally:
            if processes is not None:
                if abandon:
                    _kill_workers(processes)
                processes.shutdown(wait=not abandon, cancel_futures=True)
            threads.shutdown(wait=not abandon, cancel_futures=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a process pool's workers now (a cancelled run's nodes must not go on computing);
    the pool's process table is not public API, hence the care."""
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(Exception):
            process.kill()


class _WithProgress:
    """Hooks that also advance a progress bar once per settled node."""

    def __init__(self, hooks: RunHooks, bar: Any) -> None:
        self.hooks, self.bar = hooks, bar
        self.reuse = getattr(hooks, "reuse", None)
        self.file = getattr(hooks, "file", None)
        self.cancellation = getattr(hooks, "cancellation", None)

    def on_start(self, node_id: str) -> None:
        self.hooks.on_start(node_id)

    def on_reused(self, node_id: str, result: StageResult) -> None:
        self.hooks.on_reused(node_id, result)
        self.bar.update(1)

    def on_done(self, node_id: str, result: StageResult, duration_s: float) -> None:
        self.hooks.on_done(node_id, result, duration_s)
        self.bar.update(1)

    def on_error(self, node_id: str, error: BaseException) -> None:
        self.hooks.on_error(node_id, error)
        self.bar.update(1)

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self.hooks.on_skip(node_id, failed_dep)
        self.bar.update(1)


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


def _in_process(
    pool: ProcessPoolExecutor, task: NodeTask, parents: Mapping[str, State]
) -> tuple[StageResult, float]:
    """Compute one node in a worker process, from the worker thread that hands it over."""
    import cloudpickle

    payload = _pickled(task, {dep: parents[dep] for dep in task.deps})
    status, value = cloudpickle.loads(pool.submit(_run_pickled, payload).result())
    if status == "error":
        raise value
    return value


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="nodes", unit="node", leave=False)


__getattr__ = served_from(__name__, "scheduler")
