"""DagExecutor: plan, load what the cache has, run the stale rest on a scheduler, report."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import display
from ._invoke import NamespacedKeys
from ._v2 import served_from
from ._v2.executor import MpiRunner, OnMpiRanks
from .dag import Plan, Staleness, ancestors_closure, make_plan, policy_seen_by
from .dag_cache import DagCache, node_provenance, open_cache, stamp
from .engine import Cancellation
from .errors import MetricKeyCollisionError, NodeFailedError, StateMutationError
from .policy import EMPTY_POLICY_HASH, PolicyBag, PolicyLike, as_policy
from .retry import RetryPolicy
from .scheduler import DEFAULT_RESOURCES, LocalScheduler, NodeTask, Scheduler
from .types import NodeSpec, NodeStatus, StageResult, State

__all__ = [
    "DagExecutor",
    "DagRunResult",
    "NodeRun",
    "PreparedRun",
]

_log = logging.getLogger("phys_pipeline.run")
# read per node: a member read through the class costs ~70 ns in Python 3.11 (EnumType's
# __getattr__ hook), a global a few
_RAN, _HIT = NodeStatus.RAN, NodeStatus.HIT


@dataclass(slots=True)
class NodeRun:
    """What happened to one node in one run, and why."""

    node_id: str
    status: NodeStatus  # HIT, RAN, FAILED or SKIPPED
    cache_key: str
    reason: str
    duration_s: float = 0.0
    error: str | None = None
    attempts: int = 1  # more than one: it was retried

    @property
    def cache_hit(self) -> bool:
        return self.status is _HIT

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "status": self.status,
            "cache_hit": self.cache_hit,
            "cache_key": self.cache_key,
            "reason": self.reason,
            "duration_s": self.duration_s,
            "error": self.error,
            "attempts": self.attempts,
        }


@dataclass
class DagRunResult:
    """Results by node id, namespaced metrics (``"<node>.<key>"``), lazy artifacts and
    provenance (``node_runs``: one record per node with ``cache_hit``, ``reason``, ...).

    Two nodes landing on one metric or artifact key (node ``a`` metric ``b.c``, node ``a.b``
    metric ``c``) fail the later of them in plan order with a MetricKeyCollisionError."""

    plan: Plan
    execution_order: list[str]
    results: dict[str, StageResult]
    metrics: dict[str, float]
    artifacts: dict[str, Any]
    provenance: dict[str, Any]
    runs: dict[str, NodeRun]
    failures: dict[str, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.cancelled

    @property
    def ran(self) -> list[str]:
        return [nid for nid, r in self.runs.items() if r.status is NodeStatus.RAN]

    @property
    def hits(self) -> list[str]:
        return [nid for nid, r in self.runs.items() if r.status is NodeStatus.HIT]

    @property
    def cancelled(self) -> list[str]:
        """Nodes the run did not get to: it was cancelled or interrupted (their parents'
        results are cached, so the next run starts from there)."""
        return [nid for nid, r in self.runs.items() if r.status is NodeStatus.CANCELLED]

    @property
    def sinks(self) -> list[str]:
        return [nid for nid in self.plan.order if self.plan.graph.out_degree(nid) == 0]

    @property
    def state(self) -> State:
        """The state of the DAG's single sink (ambiguous DAGs: use ``results[id].state``)."""
        sinks = self.sinks
        if len(sinks) != 1:
            raise ValueError(f"the DAG has {len(sinks)} sinks ({sinks}); use results[node_id]")
        return self.results[sinks[0]].state

    def _repr_html_(self) -> str | None:
        """Notebooks and docs show the coloured DAG, summary and metrics (no widget needed;
        drawn by the view layer, see ``display``)."""
        return display.draw(self, display.HTML)

    def summary(self) -> str:
        seconds = self.provenance.get("duration_s", 0.0)
        parts = [f"ran {len(self.ran)}", f"hit {len(self.hits)}"]
        if self.failures:
            parts.append(f"failed {len(self.failures)}")
        skipped = sum(r.status is NodeStatus.SKIPPED for r in self.runs.values())
        if skipped:
            parts.append(f"skipped {skipped}")
        if self.cancelled:
            parts.append(f"cancelled {len(self.cancelled)}")
        return f"{', '.join(parts)}, {seconds:.2f} s"


def _tell_each(listeners: list[Any], *args: Any) -> None:
    for listener in listeners:
        listener(*args)


class _RunRecorder:
    """Scheduler hooks for one run: keeps results, files them in the cache, forwards to
    callbacks."""

    _EVENTS = (
        "on_plan",
        "on_start",
        "on_done",
        "on_error",
        "on_skip",
        "on_retry",
        "on_progress",
        "on_finish",
    )
    # what stages report of their progress (``report_progress``): only asked for, and so only
    # collected, when a callback listens
    on_progress: Callable[[str, float, str], None] | None = None

    def __init__(
        self,
        plan: Plan,
        reasons: dict[str, Staleness],
        cache: DagCache,
        callbacks: Sequence[Any],
        early_cutoff: bool,
        cancellation: Cancellation,
    ) -> None:
        self.plan, self.reasons, self.cache = plan, reasons, cache
        self.cancellation = cancellation  # the engine subscribes: executor.cancel() presses it
        # schedulers call ``reuse`` (from worker threads) before running a node, when present
        cutoff = cache.early_cutoff(plan, reasons) if early_cutoff else None
        self.reuse = cutoff.reuse if cutoff is not None else None
        self.results: dict[str, StageResult] = {}
        self.runs: dict[str, NodeRun] = {}
        self.failures: dict[str, BaseException] = {}
        self.corrupted: set[str] = set()  # nodes whose results a stage's write may have spoilt
        self.retried: dict[str, int] = {}  # node -> its last failed attempt, when retried
        # each event's listeners, looked up once: most runs have none, and hooks fire per node
        self.listeners: dict[str, list[Any]] = {
            event: [m for m in (getattr(cb, event, None) for cb in callbacks) if m is not None]
            for event in self._EVENTS
        }
        if self.listeners["on_progress"]:
            # not a bound method of this recorder: kept on it, that would make a reference
            # cycle, and every run's results would wait for the garbage collector to go
            self.on_progress = partial(_tell_each, self.listeners["on_progress"])

    def _notify(self, event: str, *args: Any) -> None:
        _tell_each(self.listeners[event], *args)

    def _reason(self, node_id: str) -> str:
        staleness = self.reasons.get(node_id)
        return ", ".join(staleness.reasons) if staleness else "forced"

    def hit(
        self, node_id: str, result: StageResult, seconds: float, reason: str = "cached"
    ) -> None:
        self.results[node_id] = result
        key = self.plan.nodes[node_id].key
        self.runs[node_id] = NodeRun(node_id, _HIT, key, reason, seconds)
        self._notify("on_done", node_id, result, True)

    def on_reused(self, node_id: str, result: StageResult) -> None:
        """Early cutoff: the node's inputs equal last run's, so its cached result stands."""
        self.hit(node_id, result, 0.0, "cached: upstream output unchanged")

    def on_start(self, node_id: str) -> None:
        if self.listeners["on_start"]:
            self._notify("on_start", node_id)

    def file(self, node_id: str, result: StageResult, duration_s: float) -> None:
        """Stamp and store a computed result; called by the engine on the thread that has it,
        before any child can read (and perhaps write to) its state."""
        planned = self.plan.nodes[node_id]
        stamp(result, node_provenance(planned), duration_s)
        if node_id not in self.corrupted:
            self.cache.file(planned, result)

    def on_done(self, node_id: str, result: StageResult, duration_s: float) -> None:
        planned = self.plan.nodes[node_id]
        if self.corrupted and node_id in self.corrupted:  # computed from a state a stage
            self.cache.forget([planned])  # wrote to: never kept (filed before the quarantine)
        self.results[node_id] = result
        # positional, the status a global: one per node of every run
        self.runs[node_id] = NodeRun(
            node_id,
            _RAN,
            planned.key,
            self._reason(node_id),
            duration_s,
            None,
            result.provenance.get("attempts", 1) if self.retried else 1,
        )
        if self.listeners["on_done"]:
            self._notify("on_done", node_id, result, False)

    def on_retry(self, node_id: str, attempt: int, error: BaseException) -> None:
        """Attempt ``attempt`` failed with ``error``; the node will run again."""
        self.retried[node_id] = attempt
        _log.info(
            "node %r: attempt %d failed (%s: %s), retrying",
            node_id,
            attempt,
            type(error).__name__,
            error,
        )
        self._notify("on_retry", node_id, attempt, error)

    def on_error(self, node_id: str, error: BaseException) -> None:
        key = self.plan.nodes[node_id].key
        self.failures[node_id] = error
        self.runs[node_id] = NodeRun(
            node_id,
            NodeStatus.FAILED,
            key,
            self._reason(node_id),
            error=f"{type(error).__name__}: {error}",
            attempts=self.retried.get(node_id, 0) + 1,
        )
        if isinstance(error, StateMutationError):
            self._quarantine(node_id)
        self._notify("on_error", node_id, error)

    def _quarantine(self, node_id: str) -> None:
        """A stage that wrote to its input changed a parent's state in place: the object a
        memory tier holds, and the input of any sibling that ran after it. Drop, now (an
        interrupt may end the run any moment), the entries of those parents (roots: of every
        node reading the initial state) and of all they feed, and file none of them later in
        this run, so that the next run recomputes them instead of serving what was corrupted."""
        plan = self.plan
        for parent in plan.nodes[node_id].deps or tuple(plan.roots()):
            self.corrupted |= {parent, *plan.descendants(parent)}
        self.cache.forget(plan.nodes[nid] for nid in self.corrupted & self.results.keys())

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        key = self.plan.nodes[node_id].key
        reason = f"skipped: upstream node {failed_dep!r} failed"
        self.runs[node_id] = NodeRun(node_id, NodeStatus.SKIPPED, key, reason)
        self._notify("on_skip", node_id, failed_dep)

    def cancelled(self, order: Sequence[str], why: str) -> None:
        """The run stopped early: every node it did not settle is recorded as cancelled."""
        for node_id in order:
            if node_id not in self.runs:
                key = self.plan.nodes[node_id].key
                self.runs[node_id] = NodeRun(node_id, NodeStatus.CANCELLED, key, why)


@dataclass(slots=True)
class PreparedRun:
    """A run ``DagExecutor.prepare`` has planned and loaded, ready for ``execute``: the plan,
    the node ids it covers in order, its policy, the recorder holding the cached results and
    the tasks of the nodes that must compute."""

    plan: Plan
    order: list[str]
    policy: PolicyBag | None
    recorder: _RunRecorder
    tasks: list[NodeTask]
    started: float  # perf_counter at the start of prepare


class DagExecutor:
    """Runs a DAG of ``NodeSpec``s: nodes whose key is cached load, the rest run on
    ``scheduler``. Reusable: interactive sessions rerun the same executor constantly, and its
    ``cache`` (a ``DagCache``, built by ``open_cache`` from whatever ``cache=`` is, store-less
    for None) remembers the last plan, so that a rerun can say *why* each node is stale.

    ``callbacks`` are objects with any of ``on_plan(plan, stale)``, ``on_start(node_id)``,
    ``on_done(node_id, result, cache_hit)``, ``on_error(node_id, exc)``, ``on_skip(node_id,
    failed_dep)``, ``on_retry(node_id, attempt, error)``, ``on_progress(node_id, fraction,
    message)`` (what a stage reports with ``report_progress``), ``on_finish(result)``; progress
    bars and widgets hook in here. They are called on the thread that called ``run``, in the
    order things happened; with worker threads, a short node's events reach them together,
    once its worker has nothing more to take or within 0.05 s (see ``engine._Events``).

    With a cache, ``early_cutoff`` (default) lets a node that is stale only because an upstream
    node changed load its previous result when that upstream node, rerun, produced the same
    output as before (see ``DagCache.early_cutoff``).
    """

    def __init__(
        self,
        scheduler: Scheduler | None = None,
        cache: Any = None,
        *,
        callbacks: Iterable[Any] = (),
        check_mutation: bool = True,
        early_cutoff: bool = True,
        retry: RetryPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        mpi_runner: MpiRunner | None = None,
    ) -> None:
        self.scheduler = scheduler if scheduler is not None else LocalScheduler()
        self.cache: DagCache = open_cache(cache)
        self.callbacks = list(callbacks)
        self.check_mutation = check_mutation
        self.early_cutoff = early_cutoff
        self._running: Cancellation | None = None  # the run in flight's stop button
        # how often a failing node runs again, and how long one attempt may take (a node's
        # own NodeSpec.retry wins); retry_policy is 2.0.0's name for it
        self.retry = retry if retry is not None else retry_policy
        self.mpi_runner = mpi_runner  # runs the stages of nodes asking for resources.mpi_ranks

    def plan(self, state: State, nodes: Sequence[NodeSpec], policy: PolicyLike = None) -> Plan:
        """Keys for every node, computed without running anything."""
        return make_plan(nodes, state, as_policy(policy))

    def stale(
        self, state: State, nodes: Sequence[NodeSpec], policy: PolicyLike = None
    ) -> dict[str, Staleness]:
        """The nodes a run would compute, with the reasons, without running anything."""
        return self.cache.stale(self.plan(state, nodes, policy))

    @property
    def last_plan(self) -> Plan | None:
        """The plan of the last run (kept by the cache, which compares the next run with it)."""
        return self.cache.previous

    def run(
        self,
        state: State,
        nodes: Sequence[NodeSpec],
        policy: PolicyLike = None,
        *,
        targets: Iterable[str] | None = None,
        raise_on_error: bool = True,
        callbacks: Iterable[Any] = (),
    ) -> DagRunResult:
        """Run the DAG (or only what ``targets`` need). On failure, raises NodeFailedError
        naming the failed nodes (``.partial`` holds the result; completed nodes stay cached),
        or with ``raise_on_error=False`` returns the result with ``.failures`` set."""
        # the stop button exists from the start: a cancel while the run plans or loads from the
        # cache stops it before anything computes
        stop = self._running = Cancellation()
        try:
            prepared = self.prepare(
                state, nodes, policy, targets=targets, callbacks=callbacks, cancellation=stop
            )
        except BaseException:
            self._running = None
            raise
        result = self.execute(prepared)  # with the same button, until it returns
        if result.failures and raise_on_error:
            raise NodeFailedError(result.failures, partial=result)
        return result

    def prepare(
        self,
        state: State,
        nodes: Sequence[NodeSpec],
        policy: PolicyLike = None,
        *,
        targets: Iterable[str] | None = None,
        callbacks: Iterable[Any] = (),
        cancellation: Cancellation | None = None,
    ) -> PreparedRun:
        """The first half of ``run``: plan, staleness, cached nodes loaded, tasks for the rest
        (what profilers time apart; nothing is computed yet). ``cancellation``: the run's stop
        button, if it has one already (``run`` makes it first, so that a cancel meanwhile
        counts)."""
        started = time.perf_counter()
        bag = as_policy(policy)
        # the key parts early cutoff compares, only when it can happen (a store to load from)
        cutoff = self.early_cutoff and self.cache.backend is not None
        plan = make_plan(nodes, state, bag, cutoff=cutoff)
        wanted = ancestors_closure(plan.graph, targets) if targets is not None else None
        order = [nid for nid in plan.order if wanted is None or nid in wanted]
        reasons, loaded = self.cache.look_up(plan, order)
        listeners = [*self.callbacks, *callbacks]
        recorder = _RunRecorder(
            plan, reasons, self.cache, listeners, self.early_cutoff, cancellation or Cancellation()
        )
        recorder._notify("on_plan", plan, reasons)
        for nid, (cached, seconds) in loaded.items():
            recorder.hit(nid, cached, seconds)
        to_run = [nid for nid in order if nid not in loaded]
        tasks = self._tasks(plan, to_run, bag, state)
        return PreparedRun(plan, order, bag, recorder, tasks, started)

    def execute(self, prepared: PreparedRun) -> DagRunResult:
        """The second half of ``run``: compute the prepared tasks on the scheduler and
        assemble the result (failures are in it, never raised)."""
        plan, recorder = prepared.plan, prepared.recorder
        available = {nid: r.state for nid, r in recorder.results.items()}
        self._running = recorder.cancellation
        interrupt: BaseException | None = None
        try:
            self.scheduler.execute(prepared.tasks, available, recorder)
        except KeyboardInterrupt as exc:  # the kernel's interrupt button: as cancel, then raise
            interrupt = exc
        finally:
            self._running = None
        if interrupt is not None or recorder.cancellation.requested:
            why = "cancelled: the run was interrupted" if interrupt else "cancelled"
            recorder.cancelled(prepared.order, why)
        self.cache.finished(plan)
        seconds = time.perf_counter() - prepared.started
        result = self._assemble(plan, prepared.order, recorder, prepared.policy, seconds)
        if _log.isEnabledFor(logging.DEBUG):  # the summary walks every node: only when seen
            _log.debug("run %s: %s", result.provenance["run_id"], result.summary())
        recorder._notify("on_finish", result)
        if interrupt is not None:
            interrupt.partial = result  # type: ignore[attr-defined]
            interrupt.add_note(
                f"phys-pipeline: run interrupted; {len(result.cancelled)} node(s) not run "
                "(KeyboardInterrupt.partial holds the result; completed nodes are cached)"
            )
            raise interrupt
        return result

    def cancel(self) -> None:
        """Stop the run in flight, from any thread (a widget's Stop button): nothing more is
        started, what can be stopped is (worker processes killed, Dask tasks cancelled; a
        thread finishes its node, whose outcome is dropped), completed nodes stay cached, and
        the run returns a result whose ``cancelled`` lists the nodes it did not get to. No run
        in flight: nothing happens."""
        running = self._running
        if running is not None:
            running.cancel()

    @property
    def scheduler_files_results(self) -> bool:
        """Whether the scheduler's workers file results in the cache themselves
        (``DaskScheduler(file_on_workers=True)``, the default there)."""
        return bool(getattr(self.scheduler, "file_on_workers", False))

    def _tasks(
        self, plan: Plan, to_run: list[str], policy: PolicyBag | None, state: State
    ) -> list[NodeTask]:
        """What a worker needs to compute each node of ``to_run`` (one loop: a run of many
        trivial nodes spends a good part of its time here)."""
        # workers that reach the store file results themselves: states skip the driver
        shared = self.cache.worker_store() if self.scheduler_files_results else None
        # run from a thread other than the main one, a cell may run meanwhile: recheck code
        background = threading.current_thread() is not threading.main_thread()
        check_mutation, default_retry, mpi_runner = self.check_mutation, self.retry, self.mpi_runner
        specs, planned_nodes = plan.specs, plan.nodes
        tasks = []
        for nid in to_run:
            spec, planned = specs[nid], planned_nodes[nid]
            inputs = spec.inputs
            names = inputs.names if inputs else None
            resources = spec.resources or DEFAULT_RESOURCES
            stage, code = spec.stage, planned.fingerprint
            pinned = planned.code_version if planned.code_version != code.digest else None
            if mpi_runner is not None and resources.mpi_ranks > 1:
                # the engine checks the wrapper's code, not the stage's: the wrapper checks that
                stage = OnMpiRanks(stage, mpi_runner, resources, nid, code, pinned)
                code = None
            deps = planned.deps
            tasks.append(
                NodeTask(
                    nid,
                    deps,
                    stage,
                    policy_seen_by(spec, policy),
                    None if deps else state,
                    resources,
                    check_mutation,
                    tuple(names.get(d, d) for d in deps) if names else None,
                    inputs.gather if inputs else False,
                    self.cache.filing(shared, planned) if shared is not None else None,
                    code,
                    pinned,
                    None,
                    spec.retry if spec.retry is not None else default_retry,
                    background,
                )
            )
        return tasks

    def _assemble(
        self,
        plan: Plan,
        order: list[str],
        recorder: _RunRecorder,
        policy: PolicyBag | None,
        seconds: float,
    ) -> DagRunResult:
        metrics: NamespacedKeys[float] = NamespacedKeys("metric", "node")
        artifacts: NamespacedKeys[Any] = NamespacedKeys("artifact", "node")
        completed = [nid for nid in order if nid in recorder.results]
        for nid in completed:
            result = recorder.results[nid]
            try:
                if result.metrics:
                    metrics.add(nid, f"{nid}.", result.metrics)
                if result.artifacts:
                    artifacts.add(nid, f"{nid}.", result.artifacts)
            except MetricKeyCollisionError as exc:
                # "a" metric "b.c" and "a.b" metric "c": the later node in plan order fails
                # (its result stays cached and in ``results``), so the run is never silent
                run = recorder.runs[nid]
                run.status, run.error = NodeStatus.FAILED, f"{type(exc).__name__}: {exc}"
                recorder.failures[nid] = exc
                recorder._notify("on_error", nid, exc)
        runs = {nid: recorder.runs[nid] for nid in order if nid in recorder.runs}
        provenance = {
            "run_id": uuid.uuid4().hex[:12],
            "policy_hash": policy.hash() if policy is not None else EMPTY_POLICY_HASH,
            "node_runs": [r.as_dict() for r in runs.values()],
            "duration_s": seconds,
            "scheduler": repr(self.scheduler),
        }
        return DagRunResult(
            plan=plan,
            execution_order=completed,
            results=recorder.results,
            metrics=metrics.entries,
            artifacts=artifacts.entries,
            provenance=provenance,
            runs=runs,
            failures=recorder.failures,
        )


__getattr__ = served_from(__name__, "executor")
