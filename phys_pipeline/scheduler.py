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
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Literal

from ._portable import portable
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
from .errors import ConfigError, DagError, StageError, WorkerDiedError
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
    """Worker process entry point: cloudpickle carries classes defined in notebooks; a
    failure comes back as itself (without the attributes that cannot be pickled, if need
    be), or as a stand-in keeping its message and notes."""
    import cloudpickle

    task, parents = cloudpickle.loads(payload)
    try:
        return cloudpickle.dumps(("ok", run_node_elsewhere(task, parents)))
    except Exception as exc:  # noqa: BLE001 - shipped back and re-raised in the parent
        return cloudpickle.dumps(("error", portable(exc, lossy=True)))


class LocalScheduler(JobApi):
    """Runs nodes concurrently on this machine, honouring ``NodeResources`` slots.

    ``max_workers`` bounds concurrent nodes; ``max_cpu`` / ``max_gpu`` / ``max_mem_gb`` bound
    the sum of the running nodes' ``resources.cpu`` / ``.gpu`` / ``.mem_gb`` (memory: unbounded
    when None). ``mode="thread"`` (default) suits numpy/FFT
    stages that release the GIL; ``mode="process"`` suits pure-Python stages. Worker processes
    live only for one ``execute`` call; worker threads wait, idle, for the scheduler's next
    run (they end with the scheduler), unless the run left one still computing.

    One worker in thread mode runs nodes on the calling thread (``inline=True``, the fastest).
    With ``inline=False`` it runs them on a thread of its own, so that a cancel (a Stop button)
    or the interrupt button ends the run at once while a node computes: the node is abandoned
    (reported cancelled; should it complete, its result is still cached, being right), which
    is a live session's default.

    In process mode, a worker process that dies fails only its node (WorkerDiedError), and a
    node past its timeout, or a cancelled run, has its worker killed. A worker that exits with
    status 0 in mid-node (``os._exit(0)``, a Fortran ``STOP``) is not seen to die: only a
    ``RetryPolicy(timeout_s=...)`` ends such a node.
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
        inline: bool = True,
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
        self.inline = inline
        self._idle_threads = _IdleThreads()

    def __repr__(self) -> str:
        return (
            f"LocalScheduler(max_workers={self.max_workers}, max_cpu={self.max_cpu}, "
            f"max_gpu={self.max_gpu}, max_mem_gb={self.max_mem_gb}, mode={self.mode!r}"
            f"{'' if self.inline else ', inline=False'})"
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
        timed = False  # a timeout needs a thread to watch the clock while a node runs
        for task in tasks:
            if id(task.resources) not in checked:
                self._check_fits(task)
                checked.add(id(task.resources))
            if task.retry is not None and task.retry.timeout_s:
                timed = True
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
            if self.inline and self.max_workers == 1 and self.mode == "thread" and not timed:
                engine = RunEngine(tasks, available, hooks, slots=slots, threaded=False)
                engine.run(partial(engine.work, compute=run_node))
                return
            workers = max(1, min(self.max_workers, len(tasks)))
            processes = _WorkerProcesses(workers) if self.mode == "process" else None
            abandon = None if processes is None else processes.abandon
            engine = RunEngine(tasks, available, hooks, slots=slots, abandon=abandon)
            with self._threads(workers, engine, processes) as threads:
                compute = run_node if processes is None else processes.compute
                # worker threads take ready nodes themselves (``engine.work``), so that a short
                # node never waits for this thread to wake up; this thread calls the hooks
                engine.run(partial(threads.submit, engine.work, compute=compute))
        finally:
            if bar is not None:
                bar.close()

    @contextlib.contextmanager
    def _threads(
        self, workers: int, engine: RunEngine, processes: _WorkerProcesses | None
    ) -> Iterator[ThreadPoolExecutor]:
        """Worker threads (in process mode, they hand their nodes to ``processes``): the last
        run's if it settled every node, kept for the next. A thread mode run that was
        cancelled, interrupted or gave up on a node leaves its threads: one is left to finish
        its node (Python cannot stop a thread), its outcome dropped. Worker processes are stopped
        in any case, killed if still computing, and so free their threads."""
        # a node that times out keeps its thread until it ends: room for as many abandoned
        # attempts as there can be, so that the run keeps its width (threads are only started
        # when needed; the engine's slots still bound what runs at once)
        spare = sum(
            t.retry.max_retries + 1
            for t in engine.tasks
            if t.retry is not None and t.retry.timeout_s
        )
        size = workers + spare
        threads = self._idle_threads.take(size)
        abandon = True
        try:
            yield threads
            abandon = engine.cancelled or engine.abandoned
        finally:
            if processes is not None:
                processes.close()
                abandon = False
            if abandon:
                threads.shutdown(wait=False, cancel_futures=True)
            else:  # every node settled: the threads are idle, and the next run takes them
                self._idle_threads.keep(size, threads)


class _IdleThreads:
    """The worker threads of a scheduler's last run that ended with every node settled, kept
    for its next run: starting a thread costs more than a live session's small rerun (a
    ``ThreadPoolExecutor`` ends its idle threads when it is garbage collected)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: tuple[int, ThreadPoolExecutor] | None = None

    def take(self, size: int) -> ThreadPoolExecutor:
        """The kept threads if there are ``size`` of them (two runs at once: the second
        starts its own), else a new pool."""
        with self.lock:
            kept, self.kept = self.kept, None
        if kept is not None and kept[0] == size:
            return kept[1]
        if kept is not None:
            kept[1].shutdown(wait=False)
        return ThreadPoolExecutor(max_workers=size, thread_name_prefix="phys-node")

    def keep(self, size: int, threads: ThreadPoolExecutor) -> None:
        with self.lock:
            kept, self.kept = self.kept, (size, threads)
        if kept is not None:
            kept[1].shutdown(wait=False)


class _WorkerProcesses:
    """One run's worker processes (a ``pebble`` pool, started on first use; never forked: a
    fork of a process whose other threads, Jupyter's or Dask's, hold locks can deadlock).

    A node whose worker dies fails alone with WorkerDiedError while pebble starts a new worker
    for the others; a node given up on (its timeout, a cancelled run) has its worker killed.
    ``running``: node id -> the future of its current attempt, to kill on ``abandon``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.lock = threading.Lock()
        self.running: dict[str, Future] = {}
        self.closed = False
        self.pool = self._new_pool()

    def _new_pool(self) -> Any:
        from pebble import ProcessPool

        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        return ProcessPool(max_workers=self.workers, context=mp.get_context(method))

    def compute(self, task: NodeTask, parents: Mapping[str, State]) -> tuple[StageResult, float]:
        """Compute one node in a worker process, from the worker thread that hands it over."""
        payload = _pickled(task, {dep: parents[dep] for dep in task.deps})
        try:
            return self._run(task, payload)
        except BrokenProcessPool:
            # pebble gives up on its whole pool when a worker dies running no node (killed
            # while idle): this node did not kill it, so it runs again, on a new pool
            return self._run(task, payload)

    def _run(self, task: NodeTask, payload: bytes) -> tuple[StageResult, float]:
        import cloudpickle
        from pebble import ProcessExpired

        future = self._schedule(task, payload)
        try:
            status, value = cloudpickle.loads(future.result())
        except ProcessExpired as exc:
            raise WorkerDiedError(task.node_id, exc.exitcode) from None
        finally:
            with self.lock:
                if self.running.get(task.node_id) is future:
                    del self.running[task.node_id]
        if status == "error":
            raise value
        return value

    def _schedule(self, task: NodeTask, payload: bytes) -> Future:
        # pebble's own clock also stops the attempt, in case the engine gave up on it
        # (``abandon``) before it was scheduled here
        timeout = task.retry.timeout_s if task.retry is not None else None
        broken = None
        with self.lock:
            if self.closed:
                raise CancelledError("the run has ended")
            if not self.pool.active:  # pebble gave up on it (see ``compute``)
                broken, self.pool = self.pool, self._new_pool()
            future = self.pool.schedule(_run_pickled, args=(payload,), timeout=timeout)
            self.running[task.node_id] = future
        if broken is not None:
            self._stop(broken)
        return future

    def abandon(self, node_id: str) -> None:
        """The engine gave up on a node (it timed out): kill its worker (pebble does, when a
        running future is cancelled, and starts another)."""
        with self.lock:
            future = self.running.pop(node_id, None)
        if future is not None:
            future.cancel()

    def close(self) -> None:
        """Cancel what still runs (its thread stops waiting), then stop the workers, killing
        those still computing."""
        with self.lock:
            self.closed = True
            futures = list(self.running.values())
            self.running.clear()
        for future in futures:
            future.cancel()
        self._stop(self.pool)

    @staticmethod
    def _stop(pool: Any) -> None:
        pool.stop()
        pool.join()


class _WithProgress:
    """Hooks that also advance a progress bar once per settled node."""

    def __init__(self, hooks: RunHooks, bar: Any) -> None:
        self.hooks, self.bar = hooks, bar
        self.reuse = getattr(hooks, "reuse", None)
        self.file = getattr(hooks, "file", None)
        self.cancellation = getattr(hooks, "cancellation", None)
        self.on_progress = getattr(hooks, "on_progress", None)  # what stages report

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


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="nodes", unit="node", leave=False)


__getattr__ = served_from(__name__, "scheduler")
