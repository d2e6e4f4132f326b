"""DaskScheduler: run the stale part of a plan on a ``dask.distributed`` cluster.

Same protocol and semantics as :class:`~phys_pipeline.scheduler.LocalScheduler`, so the executor
and its cache do not change: the executor does every cache read and write in the driver, this
scheduler only computes. Each node is one Dask task submitted once all of its parents succeeded;
parents reach it as futures, so states move worker to worker and the driver fetches each result
exactly once (for the cache and the run result). Hooks run in the thread that called
``execute``. Stages are shipped with cloudpickle, so classes defined in ``__main__`` or a
notebook work; classes from your own modules must be importable on the workers.

Dask is imported only here, so ``import phys_pipeline`` stays light.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import cloudpickle

try:
    import dask.system
    from distributed import Client, Future, LocalCluster, as_completed
except ImportError as exc:
    raise ImportError(
        "phys_pipeline.dask needs dask.distributed; install it with "
        'pip install "phys-pipeline[dask]"'
    ) from exc

from .errors import DagError
from .scheduler import NodeTask, RunHooks, run_node
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


def _run_root(task: NodeTask, root_state: State) -> tuple[StageResult, float]:
    """Worker side: a root node whose initial state was scattered once rather than embedded in
    every root's task (a big initial field would otherwise travel once per root)."""
    return run_node(dataclasses.replace(task, root_state=root_state), {})


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


def _outcome(future: Future) -> tuple[StageResult, float] | BaseException:
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
    workers declare them. ``close()`` (or leaving a ``with`` block) shuts down what this object
    started -- the LocalCluster or the connection to ``address`` -- never a client you passed.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        address: str | None = None,
        cluster_kwargs: Mapping[str, Any] | None = None,
        resources: bool = True,
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
        _DaskRun(client, by_id, requests, hooks).run(available)


class _DaskRun:
    """One ``execute`` call: submits nodes as their parents succeed and reports the outcomes.

    A node is submitted only once every parent succeeded, so a failure never reaches Dask's
    own error propagation: its descendants are skipped here, each naming the failed ancestor,
    exactly as LocalScheduler does, and ``on_start`` is only called for nodes that run. Before
    submitting a node, the hooks' ``reuse`` (early cutoff) may supply its result instead: the
    parents' states it compares are the ones the driver holds anyway (cache hits and fetched
    results).
    """

    def __init__(
        self,
        client: Client,
        tasks: dict[str, NodeTask],
        requests: dict[str, dict[str, float] | None],
        hooks: RunHooks,
    ) -> None:
        self.client, self.tasks, self.requests, self.hooks = client, tasks, requests, hooks
        self.token = uuid.uuid4().hex[:8]  # fresh keys per run: reruns never collide
        self.waiting_on = {nid: {d for d in t.deps if d in tasks} for nid, t in tasks.items()}
        self.children: dict[str, list[str]] = {}
        for nid, deps in self.waiting_on.items():
            for dep in deps:
                self.children.setdefault(dep, []).append(nid)
        # consumers not yet submitted or skipped; a state future is dropped at zero, so the
        # cluster frees each intermediate state as soon as Dask no longer needs it
        self.consumers: dict[str, int] = {}
        for task in tasks.values():
            for dep in task.deps:
                self.consumers[dep] = self.consumers.get(dep, 0) + 1
        self.state_futures: dict[str, Future] = {}
        self.failed: dict[str, str] = {}
        self.running: dict[str, tuple[str, Future]] = {}  # future key -> (node id, future)
        self.ready: deque[str] = deque()
        self.completed = as_completed()
        self.root_futures: dict[int, Future] = {}
        self.reuse = getattr(hooks, "reuse", None)
        self.local_states: dict[str, State] = {}  # what ``reuse`` compares, when there is one

    def run(self, available: Mapping[str, State]) -> None:
        """Submit the roots, then react to each completion until every node is resolved."""
        if self.reuse is not None:
            self.local_states.update(available)
        try:
            self._scatter_inputs(available)
            self.ready.extend(nid for nid, deps in self.waiting_on.items() if not deps)
            self._submit_ready()
            self.root_futures.clear()  # every root is submitted; Dask keeps what they need
            for future in self.completed:
                node_id = self.running.pop(future.key)[0]
                outcome = _outcome(future)
                # a hook may raise, and its traceback keeps this frame: it must not pin a future
                del future
                self._report(node_id, outcome)
                self._submit_ready()
        finally:
            # on an interrupt or a failing hook, stop the work still queued on the cluster
            if self.running:
                self.client.cancel([future for _, future in self.running.values()])
            self.running.clear()
            self.state_futures.clear()

    def _report(self, node_id: str, outcome: tuple[StageResult, float] | BaseException) -> None:
        """Tell the hooks, then release the node's children (to run, or to be skipped)."""
        if isinstance(outcome, BaseException):
            self.failed[node_id] = node_id
            self.hooks.on_error(node_id, outcome)
            self._resolve(node_id, node_id)
        else:
            result, duration = outcome
            if self.reuse is not None:
                self.local_states[node_id] = result.state
            self.hooks.on_done(node_id, result, duration)
            self._resolve(node_id, None)

    def _scatter_inputs(self, available: Mapping[str, State]) -> None:
        """Ship cache-hit parents and initial states to the workers once each, as futures."""
        needed = sorted({d for t in self.tasks.values() for d in t.deps if d not in self.tasks})
        roots = {id(t.root_state): t.root_state for t in self.tasks.values() if self._is_root(t)}
        values = [available[d] for d in needed] + list(roots.values())
        if not values:
            return
        futures = self.client.scatter(values, hash=False)
        self.state_futures.update(zip(needed, futures[: len(needed)], strict=True))
        self.root_futures = dict(zip(roots, futures[len(needed) :], strict=True))

    @staticmethod
    def _is_root(task: NodeTask) -> bool:
        return not task.deps and task.root_state is not None

    def _submit_ready(self) -> None:
        """Submit (or skip) every node whose parents are all resolved."""
        while self.ready:
            node_id = self.ready.popleft()
            task = self.tasks[node_id]
            culprit = self.failed.get(node_id)
            if culprit is not None:
                self._release_parents(task)
                self.hooks.on_skip(node_id, culprit)
                self._resolve(node_id, culprit)
                continue
            reused = self._reused(task)
            if reused is not None:
                self._release_parents(task)
                self.hooks.on_reused(node_id, reused)
                self._resolve(node_id, None)
                continue
            self.hooks.on_start(node_id)
            try:
                self._launch(task)
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable stage: this node fails
                self.failed[node_id] = node_id
                self.hooks.on_error(node_id, _detached(exc))
                self._resolve(node_id, node_id)
            finally:
                self._release_parents(task)

    def _reused(self, task: NodeTask) -> StageResult | None:
        """Early cutoff: the node's previous result when its inputs are unchanged; its state
        is shipped to the workers once if children will run on it."""
        if self.reuse is None:
            return None
        reused = self.reuse(task.node_id, self.local_states)
        if reused is not None:
            self.local_states[task.node_id] = reused.state
            if self.consumers.get(task.node_id):
                [future] = self.client.scatter([reused.state], hash=False)
                self.state_futures[task.node_id] = future
        return reused

    def _launch(self, task: NodeTask) -> None:
        """Submit one node, plus a task extracting its state when children will need it."""
        # pickled here first, so an unpicklable stage fails its node with pickle's own message,
        # rather than Dask's opaque one logged along with a traceback that pins this run
        cloudpickle.dumps(dataclasses.replace(task, root_state=None))
        future = self._submit(task)
        self.running[future.key] = (task.node_id, future)
        self.completed.add(future)
        if self.consumers.get(task.node_id):
            self.state_futures[task.node_id] = self.client.submit(
                _state_of, future, key=f"{task.node_id}-state-{self.token}", pure=False
            )

    def _submit(self, task: NodeTask) -> Future:
        key = f"{task.node_id}-{self.token}"
        resources = self.requests[task.node_id]
        if self._is_root(task):
            root = self.root_futures[id(task.root_state)]
            bare = dataclasses.replace(task, root_state=None)
            return self.client.submit(
                _run_root, bare, root, key=key, pure=False, resources=resources
            )
        parents = {dep: self.state_futures[dep] for dep in task.deps}
        return self.client.submit(run_node, task, parents, key=key, pure=False, resources=resources)

    def _release_parents(self, task: NodeTask) -> None:
        """Drop the driver's hold on parent states this node was the last consumer of; Dask
        keeps them alive for the submitted task, then frees them."""
        for dep in task.deps:
            self.consumers[dep] -= 1
            if self.consumers[dep] == 0:
                self.state_futures.pop(dep, None)

    def _resolve(self, node_id: str, culprit: str | None) -> None:
        for child in self.children.get(node_id, ()):
            if culprit is not None:
                self.failed.setdefault(child, culprit)
            self.waiting_on[child].discard(node_id)
            if not self.waiting_on[child]:
                self.ready.append(child)
