"""DaskScheduler: run the stale part of a plan on a ``dask.distributed`` cluster.

Same protocol and semantics as :class:`~phys_pipeline.scheduler.LocalScheduler`, and the same
run engine (``phys_pipeline.engine``: readiness, skipping, early cutoff, hooks); this scheduler
only submits. Each node is one Dask task submitted once all of its parents succeeded; parents
reach it as futures, so states move worker to worker. When the workers can reach the cache's
store (a disk store on a filesystem they share, Redis), each worker files its node's result
there itself and the driver receives only metrics, artifacts, provenance and a digest; the
state loads from the cache if the driver ever reads it (``DagCache.filing``). Otherwise the
driver fetches each result once and caches it. Hooks run in the thread that called
``execute``. Stages are shipped with cloudpickle, so classes defined in ``__main__`` or a
notebook work; classes from your own modules must be importable on the workers.

Dask is imported only here, so ``import phys_pipeline`` stays light.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any

import cloudpickle

try:
    import dask.system
    from distributed import Client, Future, LocalCluster
except ImportError as exc:
    raise ImportError(
        "phys_pipeline.dask needs dask.distributed; install it with "
        'pip install "phys-pipeline[dask]"'
    ) from exc

from ._portable import portable
from .dag_cache import file_on_worker
from .engine import NodeTask, Outcome, RunEngine, RunHooks, run_node_elsewhere
from .errors import DagError, RemoteStageError
from .types import NodeResources, StageResult, State

__all__ = ["RESOURCE_NAMES", "DaskScheduler", "dask_resources"]

# NodeResources field -> Dask worker resource name, and the factor from the field's unit to the
# resource's (Dask's docs declare memory in bytes: ``dask worker --resources "MEMORY=10e9"``).
RESOURCE_NAMES: dict[str, tuple[str, float]] = {
    "cpu": ("CPU", 1.0),
    "gpu": ("GPU", 1.0),
    "mem_gb": ("MEMORY", 1e9),
}


def dask_resources(
    node_id: str, resources: NodeResources, declared: Mapping[str, float]
) -> dict[str, float] | None:
    """The Dask resource request for one node, or None for no constraint.

    Only names some worker declares are requested (``declared``: name -> largest amount any
    worker has): on a cluster without resources every node runs anywhere, as on a laptop. A
    request no worker can satisfy raises DagError now, because Dask would wait for it forever.
    """
    request: dict[str, float] = {}
    for field, (name, factor) in RESOURCE_NAMES.items():
        amount = getattr(resources, field) * factor
        if amount <= 0 or name not in declared:
            continue
        if amount > declared[name]:
            raise DagError(
                f"node {node_id!r} needs {name}={amount:g} but the largest worker declares "
                f"{name}={declared[name]:g}"
            )
        request[name] = amount
    return request or None


def _state_of(output: tuple[StageResult, float]) -> State:
    """Worker side: the state part of a node's output, so children receive a bare state."""
    return output[0].state


def _file(task: NodeTask, output: tuple[StageResult, float]) -> tuple[StageResult, float]:
    """Worker side, a task of its own after the node's (so that the node's output, state
    included, stays whole for its children): file the result in the shared cache, and hand
    the driver a receipt in its place (the whole result if it could not be filed)."""
    return file_on_worker(task.filing, *output)  # type: ignore[arg-type]


def _run_node(task: NodeTask, parents: Mapping[str, State]) -> tuple[StageResult, float]:
    """Worker side: ``run_node_elsewhere``; an exception that Dask could not bring back as
    itself (it would send ``Exception(repr(exc))``) is raised as a stand-in keeping its
    message and notes."""
    try:
        return run_node_elsewhere(task, parents)
    except Exception as exc:
        carried = portable(exc)
        if not isinstance(carried, RemoteStageError):
            raise  # Dask's pickling rebuilds it as ``portable`` found it can be
    raise carried  # out of the handler: no context, which would be the exception itself


def _run_root(task: NodeTask, root_state: State) -> tuple[StageResult, float]:
    """Worker side: a root node whose initial state was scattered once rather than embedded in
    every root's task (a big initial field would otherwise travel once per root)."""
    return _run_node(dataclasses.replace(task, root_state=root_state), {})


def _detached(exc: BaseException) -> BaseException:
    """``exc`` (and the exceptions it chains) without driver-side tracebacks, keeping messages.

    The run result keeps errors, and these tracebacks lead back through this run's frames to
    its futures, which would stay pinned, with their data, on the cluster."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return exc


def _outcome(future: Future) -> Outcome:
    """A finished node's ``(result, seconds)``, or its exception with the worker's traceback.

    A failed task's exception is taken, not re-raised: raising would tie this run's frames
    (and their futures) to the exception."""
    if future.status == "error":
        exc = future.exception()
        tb = future.traceback()
        return exc.with_traceback(tb) if isinstance(tb, TracebackType) else exc
    try:
        return future.result()  # also waits out a recomputation if a worker was lost
    except Exception as exc:  # noqa: BLE001 - cancelled, or the result cannot be loaded here
        return _detached(exc)


class DaskScheduler:
    """Runs nodes on a Dask cluster: a given ``client``, the scheduler at ``address``, or (with
    neither) a ``LocalCluster`` of single-threaded worker processes started on first use.

    ``cluster_kwargs`` override the LocalCluster defaults (``n_workers`` = CPU count,
    ``threads_per_worker=1``, ``processes=True``, no dashboard port clash). With ``resources``,
    ``NodeResources`` map to the worker resources ``CPU``, ``GPU`` and ``MEMORY`` (bytes) when
    workers declare them. ``file_on_workers=False`` brings every result through the driver
    even when the workers could file it in the cache themselves. ``close()`` (or leaving a
    ``with`` block) shuts down what this object started -- the LocalCluster or the connection
    to ``address`` -- never a client you passed.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        address: str | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        resources: bool = True,
        file_on_workers: bool = True,
    ) -> None:
        if client is not None and address is not None:
            raise ValueError("DaskScheduler takes a client or an address, not both")
        if cluster_kwargs and (client is not None or address is not None):
            raise ValueError(
                "DaskScheduler.cluster_kwargs configure the LocalCluster it starts; they cannot "
                "apply to a given client or address"
            )
        self.address = address
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.resources = resources
        self.file_on_workers = file_on_workers
        self._user_client = client
        self._own_client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The client in use, connecting or starting a LocalCluster on first access."""
        if self._user_client is not None:
            return self._user_client
        with self._lock:
            if self._own_client is None:
                if self.address is not None:
                    self._own_client = Client(self.address)
                else:
                    kwargs = {
                        "n_workers": dask.system.CPU_COUNT,
                        "threads_per_worker": 1,
                        "processes": True,
                        "dashboard_address": ":0",
                        **self.cluster_kwargs,
                    }
                    self._cluster = LocalCluster(**kwargs)
                    try:
                        self._own_client = Client(self._cluster)
                    except BaseException:
                        self._cluster.close()
                        self._cluster = None
                        raise
            return self._own_client

    @property
    def started(self) -> bool:
        """Whether a client is available without connecting or starting anything."""
        return self._user_client is not None or self._own_client is not None

    def close(self) -> None:
        """Close what this scheduler started; idempotent. A later run starts afresh."""
        with self._lock:
            client, cluster = self._own_client, self._cluster
            self._own_client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> DaskScheduler:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        client = self._user_client or self._own_client
        if client is not None:
            where = f"address={client.scheduler.address!r}"
        elif self.address is not None:
            where = f"address={self.address!r} (not connected)"
        else:
            where = "LocalCluster on first use"
        return f"DaskScheduler({where}, resources={self.resources})"

    # --- running --------------------------------------------------------------------------

    def _declared_resources(self, client: Client) -> dict[str, float]:
        """Largest amount of each resource any current worker declares."""
        if not self.resources:
            return {}
        declared: dict[str, float] = {}
        for worker in client.scheduler_info(n_workers=-1)["workers"].values():
            for name, amount in (worker.get("resources") or {}).items():
                declared[name] = max(declared.get(name, 0.0), float(amount))
        return declared

    def execute(
        self, tasks: Sequence[NodeTask], available: Mapping[str, State], hooks: RunHooks
    ) -> None:
        """Run ``tasks`` (topologically ordered) given the ``available`` parent states."""
        if not tasks:  # an all-hit rerun must not start or touch a cluster
            return
        client = self.client
        by_id = {t.node_id: t for t in tasks}
        for task in tasks:
            for dep in task.deps:
                if dep not in by_id and dep not in available:
                    raise DagError(
                        f"node {task.node_id!r} depends on {dep!r}, which is neither scheduled "
                        "nor available"
                    )
        declared = self._declared_resources(client)
        requests = {t.node_id: dask_resources(t.node_id, t.resources, declared) for t in tasks}
        submitter = _DaskSubmitter(client, tasks, requests)
        engine = RunEngine(
            tasks, available, hooks, release=submitter.release, abandon=submitter.abandon
        )
        submitter.engine = engine
        try:
            submitter.scatter_inputs(available)
            engine.run(submitter.submit)
        finally:
            # on an interrupt or a failing hook, stop the work still queued on the cluster
            submitter.close()


class _DaskSubmitter:
    """Submits one run's nodes to the cluster for the run engine, and reports each back to
    it (``finish_task``, from Dask's callback thread) once the driver has its result.

    The engine submits a node only once every parent succeeded, so a failure never reaches
    Dask's own error propagation, and a node early cutoff reused is never submitted. Parents
    reach a node as futures: a computed parent's state future, cache hits and initial states
    scattered together before the run, a reused node's state shipped once on first need. The
    driver drops its hold on a state future once the engine says no child will ask for it, so
    the cluster frees each intermediate state as soon as Dask no longer needs it.
    """

    engine: RunEngine  # set once the engine, which calls ``release``, is made

    def __init__(
        self,
        client: Client,
        tasks: Sequence[NodeTask],
        requests: dict[str, dict[str, float] | None],
    ) -> None:
        self.client, self.requests = client, requests
        self.token = uuid.uuid4().hex[:8]  # fresh keys per run: reruns never collide
        self.tasks = tasks
        self.has_children = {dep for task in tasks for dep in task.deps}
        self.state_futures: dict[str, Future] = {}
        self.running: dict[str, Future] = {}  # future key -> future, to cancel on an abort
        self.root_futures: dict[int, Future] = {}  # id(root state) -> its data on the cluster
        self.roots_left: dict[int, int] = {}  # id(root state) -> roots not yet submitted

    def scatter_inputs(self, available: Mapping[str, State]) -> None:
        """Ship cache-hit parents and initial states to the workers once each, as futures."""
        names = {t.node_id for t in self.tasks}
        needed = sorted({d for t in self.tasks for d in t.deps if d not in names})
        roots: dict[int, State] = {}
        for task in self.tasks:
            if _is_root(task):
                root_id = id(task.root_state)
                roots[root_id] = task.root_state
                self.roots_left[root_id] = self.roots_left.get(root_id, 0) + 1
        values = [available[d] for d in needed] + list(roots.values())
        if not values:
            return
        futures = self.client.scatter(values, hash=False)
        self.state_futures.update(zip(needed, futures[: len(needed)], strict=True))
        self.root_futures = dict(zip(roots, futures[len(needed) :], strict=True))

    def submit(self, task: NodeTask, parents: Mapping[str, State]) -> None:
        """Submit one node, plus a task extracting its state when children will need it."""
        try:
            # pickled here first, so an unpicklable stage fails its node with pickle's own
            # message, rather than Dask's opaque one logged along with a traceback that pins
            # this run
            cloudpickle.dumps(dataclasses.replace(task, root_state=None))
            future = self._submit(task, parents)
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable stage: this node fails
            self.engine.finish_task(task, _detached(exc))
            return
        self.running[future.key] = future
        if task.node_id in self.has_children:
            self.state_futures[task.node_id] = self.client.submit(
                _state_of, future, key=f"{task.node_id}-state-{self.token}", pure=False
            )
        if task.filing is not None:  # the driver hears of the receipt, not of the output
            node = future
            future = self.client.submit(
                _file, task, node, key=f"{task.node_id}-file-{self.token}", pure=False
            )
            self.running[future.key] = future
            future.add_done_callback(partial(self._finished, task, node.key))
        else:
            future.add_done_callback(partial(self._finished, task, None))

    def _submit(self, task: NodeTask, parents: Mapping[str, State]) -> Future:
        key = f"{task.node_id}-{self.token}"
        resources = self.requests[task.node_id]
        if _is_root(task):
            root_id = id(task.root_state)
            root = self.root_futures[root_id]
            self.roots_left[root_id] -= 1
            if not self.roots_left[root_id]:  # Dask keeps it for the tasks that need it
                del self.root_futures[root_id]
            bare = dataclasses.replace(task, root_state=None)
            return self.client.submit(
                _run_root, bare, root, key=key, pure=False, resources=resources
            )
        inputs = {dep: self._state_future(dep, parents) for dep in task.deps}
        digests = getattr(parents, "digests", {})
        expected = {dep: digests[dep] for dep in task.deps if dep in digests}
        if expected:  # parents several nodes read: the worker checks its input against them
            task = dataclasses.replace(task, expected=expected)
        return self.client.submit(_run_node, task, inputs, key=key, pure=False, resources=resources)

    def _state_future(self, dep: str, parents: Mapping[str, State]) -> Future:
        """A parent's state on the cluster; a reused parent's state is shipped on first need."""
        future = self.state_futures.get(dep)
        if future is None:
            [future] = self.client.scatter([parents[dep]], hash=False)
            self.state_futures[dep] = future
        return future

    def _finished(self, task: NodeTask, node_key: str | None, future: Future) -> None:
        """Dask's callback thread: fetch the outcome, hand it to the engine. (``node_key``:
        the node's own task when ``future`` is the one filing its result.)"""
        self.running.pop(future.key, None)
        if node_key is not None:
            self.running.pop(node_key, None)
        try:
            outcome = _outcome(future)
        except BaseException as exc:  # noqa: BLE001 - the engine's thread must hear of it
            outcome = _detached(exc)
        del future  # the outcome is all the driver keeps; the future must not stay pinned
        self.engine.finish_task(task, outcome)

    def abandon(self, node_id: str) -> None:
        """A node timed out: cancel its tasks on the cluster (the engine's thread)."""
        keys = (f"{node_id}-{self.token}", f"{node_id}-file-{self.token}")
        doomed = [self.running.pop(key) for key in keys if key in self.running]
        if doomed:
            self.client.cancel(doomed)

    def release(self, node_id: str) -> None:
        """No child will ask for this state again: drop the driver's hold on it."""
        self.state_futures.pop(node_id, None)

    def close(self) -> None:
        if self.running:
            self.client.cancel(list(self.running.values()))
        self.running.clear()
        self.state_futures.clear()
        self.root_futures.clear()


def _is_root(task: NodeTask) -> bool:
    return not task.deps and task.root_state is not None
