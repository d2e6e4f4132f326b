"""LiveSession: the model behind interactive exploration; widgets are only views of it.

It holds the nodes, the initial state, a policy, a cache, the last results and the run
history. Edits are all or nothing: validated through the node's config model and planned before
the session takes them, so one that fails leaves the session as it was. They only mark what
they invalidate; ``run`` computes just the stale nodes, and a node edited while a run is in
flight is stale when it ends. Every status change is announced to subscribers (the widgets).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._deprecation import deprecated_function, warn_once
from ._edit import replace_config, replace_stage_config
from .dag import Plan, Staleness, make_plan
from .dag_cache import DagCache, open_cache
from .errors import UnknownNodeError
from .executor import DagExecutor, DagRunResult
from .history import RunHistory
from .policy import PolicyBag, PolicyLike, as_policy
from .scheduler import LocalScheduler, Scheduler
from .types import NodeSpec, NodeStatus, State

__all__ = [
    "Listener",
    "LiveSession",
    "default_session_cache",
]

Listener = Callable[[str, "LiveSession"], None]
# what an edit changes: the nodes by id, the initial state and the policy
_Setup = tuple[dict[str, NodeSpec], State, PolicyBag | None]


def _default_session_cache(cache: Any, memory_bytes: int) -> DagCache:
    return open_cache(cache, memory_bytes=memory_bytes)


default_session_cache = deprecated_function(
    "phys_pipeline.session.default_session_cache",
    _default_session_cache,
    "use phys_pipeline.dag_cache.open_cache(cache, memory_bytes=...)",
)


@dataclass
class _RunInFlight:
    """The run in progress: the edit count it started at, its plan once made, the nodes whose
    key an edit since has changed (what the run computes for them is outdated), and the last
    status it reported of each node (shown again when an edit is undone)."""

    edits: int
    started: float  # Unix time
    plan: Plan | None = None
    pending: tuple[str, ...] | None = None  # what the run has to compute, once planned
    outdated: frozenset[str] = frozenset()
    reported: dict[str, NodeStatus] = field(default_factory=dict)


def _changed_keys(before: Plan, now: Plan) -> frozenset[str]:
    return frozenset(
        nid
        for nid, node in now.nodes.items()
        if nid not in before.nodes or before.nodes[nid].key != node.key
    )


class LiveSession:
    """A DAG you can play with: ``update`` a node's config, ``stale()`` says what that
    invalidated and why, ``run()`` reruns only that; ``history`` records every run and
    ``restore`` goes back to one. Listeners get ``(event, session)`` with event in ``"edit"``,
    ``"status"``, ``"run"``; they are called from the thread that edits or runs."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        state: State,
        *,
        policy: PolicyLike = None,
        cache: Any = None,
        scheduler: Scheduler | None = None,
        memory_bytes: int = 1 << 30,
    ) -> None:
        self._nodes: dict[str, NodeSpec] = {n.id: n for n in nodes}
        self._order_hint = [n.id for n in nodes]
        self.state = state
        self.policy: PolicyBag | None = as_policy(policy)
        self.executor = DagExecutor(
            # one node at a time, on a thread of its own: Stop ends a run while a node computes
            scheduler=scheduler or LocalScheduler(max_workers=1, inline=False),
            cache=open_cache(cache, memory_bytes=memory_bytes),
            callbacks=[self],
        )
        self.last_result: DagRunResult | None = None
        self.history = RunHistory()
        self.status: dict[str, NodeStatus] = {}
        # of the nodes running now: since when (time.monotonic()), and what each stage last
        # reported of its progress (fraction, message; ``report_progress``)
        self.running_since: dict[str, float] = {}
        self.progress: dict[str, tuple[float, str]] = {}
        self._listeners: list[Listener] = []
        # held while an edit plans and commits and while a status changes: widget callbacks
        # edit and a run reports from other threads than the one running
        self._lock = threading.RLock()
        # held for a whole run: a run asked for while one is in flight (an auto-run and a
        # click) waits for it, then plans afresh, so runs, results and records keep one order
        self._run_lock = threading.RLock()
        self._edits = 0  # edits committed: a run tells by it that it was edited meanwhile
        self._in_flight: _RunInFlight | None = None
        plan = self.plan()
        # the plan and stale nodes as of the last edit or run: what views draw, without
        # planning again on every event (a run always plans afresh); after a run the stale
        # nodes are worked out when first asked for
        self._current: tuple[Plan, dict[str, Staleness] | None] = (plan, self._stale_in(plan))
        self.status.update(self._statuses(plan, self.current_stale))

    # --- the spec -----------------------------------------------------------------------------

    @property
    def specs(self) -> dict[str, NodeSpec]:
        """The nodes as they are now, by id, in the order they were given (as ``Plan.specs``)."""
        return dict(self._nodes)

    @property
    def nodes(self) -> list[NodeSpec]:
        """Deprecated: ``list(session.specs.values())``; ``Plan.nodes`` holds keys, not specs."""
        warn_once("LiveSession.nodes", "use LiveSession.specs (a dict by node id, as Plan.specs)")
        return list(self._nodes.values())

    def node(self, node_id: str) -> NodeSpec:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise UnknownNodeError(node_id, self._nodes) from None

    def config(self, node_id: str) -> Any:
        return self.node(node_id).stage.cfg

    def plan(self) -> Plan:
        return make_plan(list(self._nodes.values()), self.state, self.policy)

    # --- edits: each is all or nothing (see ``_edit``) and returns the stale nodes after it ---

    def update(self, node_id: str, **changes: Any) -> dict[str, Staleness]:
        """Change config fields of one node, validated by its config model. A value the model
        refuses raises ConfigError, one that cannot be hashed UnhashableValueError (each naming
        node, field and value); either way nothing changes."""

        def edit(nodes: dict[str, NodeSpec], state: State, policy: PolicyBag | None) -> _Setup:
            spec = self.node(node_id)
            cfg = replace_config(spec.stage.cfg, changes, f"node {node_id!r}")
            stage = replace_stage_config(spec.stage, cfg)
            return {**nodes, node_id: spec.replace(stage=stage)}, state, policy

        return self._edit(edit)

    def set_stage(self, node_id: str, stage: Any) -> dict[str, Staleness]:
        """Swap in another stage (e.g. a class redefined in a notebook cell); one the plan
        cannot use (MissingStageError, UnhashableValueError) changes nothing."""

        def edit(nodes: dict[str, NodeSpec], state: State, policy: PolicyBag | None) -> _Setup:
            return {**nodes, node_id: self.node(node_id).replace(stage=stage)}, state, policy

        return self._edit(edit)

    def set_policy(self, policy: PolicyLike = None, **changes: Any) -> dict[str, Staleness]:
        """Replace the policy, or with keywords only, update entries of the current one. A
        value that cannot be hashed raises PolicyError naming key and value; nothing changes."""

        def edit(nodes: dict[str, NodeSpec], state: State, current: PolicyBag | None) -> _Setup:
            if policy is None and changes:
                return nodes, state, (current or PolicyBag()).updated(changes)
            bag = as_policy(policy)
            return nodes, state, bag.updated(changes) if bag is not None and changes else bag

        return self._edit(edit)

    def set_state(self, state: State) -> dict[str, Staleness]:
        """Replace the initial state; anything but a State (NotAStateError) changes nothing."""
        return self._edit(lambda nodes, _, policy: (nodes, state, policy))

    def restore(self, run_number: int) -> dict[str, Staleness]:
        """Put every node's config and the policy back as they were for run ``run_number``
        of ``history``, as one edit (all or nothing, announced as ``"edit"``), so the next run
        loads every node the cache still holds. Stage code and the initial state are not
        restored: a node whose code or state changed since stays stale, saying so. A record
        loaded from JSON has its values validated by the configs' models (ConfigError)."""
        record = self.history.run(run_number)

        def edit(nodes: dict[str, NodeSpec], state: State, policy: PolicyBag | None) -> _Setup:
            restored = dict(nodes)
            for nid in record.nodes:
                spec = self.node(nid)  # a record of another DAG: UnknownNodeError
                cfg = record.config_for(nid, spec.stage.cfg)
                if cfg is not spec.stage.cfg:
                    restored[nid] = spec.replace(stage=replace_stage_config(spec.stage, cfg))
            return restored, state, record.policy_bag()

        return self._edit(edit)

    def _edit(
        self, edit: Callable[[dict[str, NodeSpec], State, PolicyBag | None], _Setup]
    ) -> dict[str, Staleness]:
        """Apply ``edit`` (the current nodes, state and policy -> the new ones) all or
        nothing: the new setup is planned, and its stale nodes and statuses worked out, before
        the session takes it, so whatever raises on the way leaves the session exactly as it
        was. During a run, only nodes whose key the edit moves off the run's change status."""
        with self._lock:
            nodes, state, policy = edit(self._nodes, self.state, self.policy)
            plan = make_plan(list(nodes.values()), state, policy)
            stale = self._stale_in(plan)
            statuses = self._statuses(plan, stale)
            flight = self._in_flight
            if flight is not None and flight.plan is not None:
                outdated = _changed_keys(flight.plan, plan)
                # an edit undone shows the run's news of its nodes again (running, ran, ...)
                statuses = {
                    nid: s if nid in outdated else flight.reported.get(nid, s)
                    for nid, s in statuses.items()
                    if nid in outdated or nid in flight.outdated
                }
                flight.outdated = outdated
            # nothing below raises: the session takes the edit
            self._nodes, self.state, self.policy = nodes, state, policy
            self._edits += 1
            self._current = (plan, stale)
            self.status.update(statuses)
        self._emit("edit")
        return stale

    # --- status ------------------------------------------------------------------------------

    def stale(self) -> dict[str, Staleness]:
        """Nodes a run would compute, each with the reasons (config/code/policy/upstream):
        planned now, so it sees globals changed since the last edit."""
        return self._stale_in(self.plan())

    @property
    def current_plan(self) -> Plan:
        """The plan as of the last edit or run (what the DAG view draws)."""
        return self._current[0]

    @property
    def current_stale(self) -> dict[str, Staleness]:
        """The stale nodes as of the last edit or run; ``stale()`` plans afresh."""
        plan, stale = self._current
        if stale is None:
            stale = self._stale_in(plan)
            self._current = (plan, stale)
        return stale

    def _stale_in(self, plan: Plan) -> dict[str, Staleness]:
        return self.executor.cache.stale(plan)

    def _unchanged_failure(self, node_id: str, plan: Plan) -> Any:
        """The last run's record of ``node_id`` if it failed (or was skipped) and nothing it
        depends on has changed since: it would fail the same way, so say so."""
        if self.last_result is None:
            return None
        run = self.last_result.runs.get(node_id)
        if run is None or run.status not in (NodeStatus.FAILED, NodeStatus.SKIPPED):
            return None
        return run if run.cache_key == plan.nodes[node_id].key else None

    def _statuses(self, plan: Plan, stale: dict[str, Staleness]) -> dict[str, NodeStatus]:
        """Every node's status for ``plan`` after the last run (worked out, not applied)."""
        previous = self.last_result.runs if self.last_result is not None else {}
        statuses = {}
        for nid in self._order_hint:
            failure = self._unchanged_failure(nid, plan)
            if failure is not None:
                statuses[nid] = failure.status
            elif nid in stale:  # stale if it has a result (a run left it out, say), else not run
                shown = self.status.get(nid, NodeStatus.NOT_RUN)
                had = nid in previous or shown is not NodeStatus.NOT_RUN
                statuses[nid] = NodeStatus.STALE if had else NodeStatus.NOT_RUN
            else:  # CACHED: in the cache but not loaded by a run with this key yet
                last = previous.get(nid)
                same = last is not None and last.cache_key == plan.nodes[nid].key
                statuses[nid] = last.status if same else NodeStatus.CACHED
        return statuses

    def _set_status(self, node_id: str, status: NodeStatus) -> None:
        """A run's news about a node, unless an edit since has outdated what the run computes
        for it: then the node stays as the edit showed it (stale)."""
        with self._lock:
            flight = self._in_flight
            if flight is not None:
                flight.reported[node_id] = status
                if node_id in flight.outdated:
                    return
            self.status[node_id] = status
        self._emit("status")

    # executor callbacks
    def on_plan(self, plan: Plan, stale: dict[str, Staleness]) -> None:
        """The run's plan: nodes edited since the run took its setup are outdated already."""
        with self._lock:
            flight = self._in_flight
            if flight is None:
                return
            flight.plan = plan
            flight.pending = tuple(nid for nid in plan.order if nid in stale)
            if flight.edits != self._edits:
                flight.outdated = _changed_keys(plan, self._current[0])

    def on_start(self, node_id: str) -> None:
        self.running_since[node_id] = time.monotonic()
        self._set_status(node_id, NodeStatus.RUNNING)

    def on_progress(self, node_id: str, fraction: float, message: str) -> None:
        """A running stage's report (``report_progress``): listeners hear ``"progress"``. One
        from a node that is not running (a timed-out attempt's thread, which Python cannot
        stop) is dropped."""
        if node_id not in self.running_since:
            return
        self.progress[node_id] = (fraction, message)
        self._emit("progress")

    def on_done(self, node_id: str, result: Any, cache_hit: bool) -> None:
        self._stopped(node_id)
        self._set_status(node_id, NodeStatus.HIT if cache_hit else NodeStatus.RAN)

    def on_error(self, node_id: str, error: BaseException) -> None:
        self._stopped(node_id)
        self._set_status(node_id, NodeStatus.FAILED)

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self._set_status(node_id, NodeStatus.SKIPPED)

    def _stopped(self, node_id: str) -> None:
        self.running_since.pop(node_id, None)
        self.progress.pop(node_id, None)

    # --- running -----------------------------------------------------------------------------

    def run(self, targets: Iterable[str] | None = None) -> DagRunResult:
        """Run the stale nodes (or what ``targets`` need); failures are reported in the
        result (``.failures``) and in node statuses, never raised. The run is in ``history``
        before listeners hear ``"run"``. Edits may come meanwhile (from another thread): the
        run computes the setup it started with, and nodes edited since are stale when it ends.
        A run asked for while another is in flight waits for it. A run that raises (a strict
        cache's CacheError, the kernel's interrupt) leaves no node shown running."""
        with self._run_lock:
            with self._lock:
                nodes, state, policy = list(self._nodes.values()), self.state, self.policy
                flight = self._in_flight = _RunInFlight(self._edits, time.time())
            try:
                result = self.executor.run(
                    state, nodes, policy, targets=targets, raise_on_error=False
                )
            except BaseException as exc:
                self._ended()
                # the kernel's interrupt holds what the run did; anything else, nothing
                partial = getattr(exc, "partial", None)
                if isinstance(exc, KeyboardInterrupt) and partial is not None:
                    self._took(partial, flight)
                    self._emit("run")
                else:
                    self._restatus()
                raise
            self._ended()
            self._took(result, flight)
        self._emit("run")
        return result

    def _ended(self) -> None:
        """The run is over: no run in flight, no node running (cancelled or abandoned nodes
        run no more)."""
        with self._lock:
            self._in_flight = None
        self.running_since.clear()
        self.progress.clear()

    def _restatus(self) -> None:
        """After a run that ended without a result: every node as the setup and the cache
        say (as after an edit)."""
        with self._lock:
            plan = self._current[0]
            stale = self._stale_in(plan)
            self._current = (plan, stale)
            self.status.update(self._statuses(plan, stale))
        self._emit("status")

    @property
    def pending(self) -> tuple[str, ...] | None:
        """The nodes the run in flight has to compute (not load), as its plan found them;
        None while no run is in flight or before it has planned."""
        flight = self._in_flight
        return None if flight is None else flight.pending

    def cancel(self) -> None:
        """Stop the run in flight (thread-safe: a Stop button's callback): nodes not run yet
        are shown cancelled, completed ones stay cached. See ``DagExecutor.cancel``."""
        self.executor.cancel()

    def _took(self, result: DagRunResult, flight: _RunInFlight) -> None:
        """Take a finished run's result: statuses, the kept plan, its history record. When
        edited during the run, the session keeps the last edit's plan and statuses follow it
        (the edited nodes stale), not the run's."""
        with self._lock:
            self.last_result = result
            if flight.edits == self._edits:
                self._current = (result.plan, None)
                statuses = {nid: run.status for nid, run in result.runs.items()}
            else:
                plan = self._current[0]
                stale = self._stale_in(plan)
                self._current = (plan, stale)
                statuses = self._statuses(plan, stale)
            self.status.update(statuses)
            self.history.add(result, flight.started)

    def rerun(self, node_id: str) -> DagRunResult:
        """Run again with ``node_id`` recomputed though it is cached, e.g. to draw its plots
        (lazy artifacts are not cached, so a result loaded from disk has none). Its entry is
        dropped and written anew; every other node loads from the cache as usual."""
        self.node(node_id)  # an unknown id raises UnknownNodeError naming it
        with self._run_lock:  # not while another run may file it again
            self.executor.cache.forget([self.plan().nodes[node_id]])
            return self.run()

    def reasons(self) -> dict[str, str]:
        """A one-line explanation per node, for tooltips, as of the last edit or run (views
        ask on every event: no planning): why each stale node is stale; for a node whose key
        the last run computed, why that run ran or loaded it (as its status says); else
        "cached". ``last_run_reasons`` keeps the run's reasons across edits."""
        plan, stale = self.current_plan, self.current_stale
        runs = self.last_result.runs if self.last_result is not None else {}
        out = {}
        for nid in self._order_hint:
            failure = self._unchanged_failure(nid, plan)
            last = runs.get(nid)
            if failure is not None:
                out[nid] = failure.error or failure.reason
            elif nid in stale:
                out[nid] = ", ".join(stale[nid].reasons)
            elif last is not None and last.cache_key == plan.nodes[nid].key:
                out[nid] = last.reason  # the run's, also after an edit undone meanwhile
            else:
                out[nid] = "cached"
        return out

    def last_run_reasons(self) -> dict[str, str]:
        """Why the last run ran, loaded, failed, skipped or cancelled each node it covered
        (e.g. "config field gdd changed", "cached"), kept until the next run whatever is
        edited meanwhile; empty before the first run. ``history[-1].reasons`` holds the same."""
        if self.last_result is None:
            return {}
        return {nid: run.reason for nid, run in self.last_result.runs.items()}

    # --- observers ---------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, session)`` on every change; returns an unsubscribe function.
        Events: ``"edit"`` (an edit was taken), ``"status"`` (a node's status changed during a
        run), ``"progress"`` (a running stage reported, see ``progress``), ``"run"`` (a run
        ended: ``last_result`` and ``history`` have it)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: str) -> None:
        """Tell every listener; one that raises is reported as a RuntimeWarning and skipped,
        because a broken view must not abort a run or an edit (``run`` never raises)."""
        for listener in list(self._listeners):
            try:
                listener(event, self)
            except Exception as exc:  # noqa: BLE001 - isolate views from the model
                name = getattr(listener, "__qualname__", None) or repr(listener)
                warnings.warn(
                    f"session listener {name} failed on the {event!r} event: "
                    f"{type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
