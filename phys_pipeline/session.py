"""LiveSession: the model behind interactive exploration; widgets are only views of it.

It holds the nodes, the initial state, a policy, a cache and the last results. Edits are
validated through the node's config model and only mark what they invalidate; ``run`` computes
just the stale nodes. Every status change is announced to subscribers (the widgets).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._deprecation import deprecated_function, warn_once
from ._edit import replace_config, replace_stage_config
from .dag import Plan, Staleness, make_plan
from .dag_cache import DagCache, open_cache
from .errors import UnknownNodeError
from .executor import DagExecutor, DagRunResult
from .policy import PolicyBag, PolicyLike, as_policy
from .scheduler import LocalScheduler, Scheduler
from .types import NodeSpec, NodeStatus, State

__all__ = [
    "Listener",
    "LiveSession",
    "default_session_cache",
]

Listener = Callable[[str, "LiveSession"], None]


def _default_session_cache(cache: Any, memory_bytes: int) -> DagCache:
    return open_cache(cache, memory_bytes=memory_bytes)


default_session_cache = deprecated_function(
    "phys_pipeline.session.default_session_cache",
    _default_session_cache,
    "use phys_pipeline.dag_cache.open_cache(cache, memory_bytes=...)",
)


class LiveSession:
    """A DAG you can play with: ``update`` a node's config, ``stale()`` says what that
    invalidated and why, ``run()`` reruns only that. Listeners get ``(event, session)`` with
    event in ``"edit"``, ``"status"``, ``"run"``; they are called from the running thread."""

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
            scheduler=scheduler or LocalScheduler(max_workers=1),
            cache=open_cache(cache, memory_bytes=memory_bytes),
            callbacks=[self],
        )
        self.last_result: DagRunResult | None = None
        self.status: dict[str, NodeStatus] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        plan = self.plan()
        # the plan and stale nodes as of the last edit or run: what views draw, without
        # planning again on every event (a run always plans afresh); after a run the stale
        # nodes are worked out when first asked for
        self._current: tuple[Plan, dict[str, Staleness] | None] = (plan, self._stale_in(plan))
        self._refresh_status(plan, self.current_stale)

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

    def update(self, node_id: str, **changes: Any) -> dict[str, Staleness]:
        """Change config fields of one node, validated by its config model. An invalid value
        raises ConfigError (naming node, field and value) and changes nothing. Returns the
        stale nodes after the edit."""
        spec = self.node(node_id)
        cfg = replace_config(spec.stage.cfg, changes, f"node {node_id!r}")
        return self._replace(spec.replace(stage=replace_stage_config(spec.stage, cfg)))

    def set_stage(self, node_id: str, stage: Any) -> dict[str, Staleness]:
        """Swap in another stage (e.g. a class redefined in a notebook cell)."""
        return self._replace(self.node(node_id).replace(stage=stage))

    def set_policy(self, policy: PolicyLike = None, **changes: Any) -> dict[str, Staleness]:
        """Replace the policy, or with keywords only, update entries of the current one."""
        if policy is None and changes:
            self.policy = (self.policy or PolicyBag()).updated(changes)
        else:
            bag = as_policy(policy)
            self.policy = bag.updated(changes) if bag is not None and changes else bag
        return self._edited()

    def set_state(self, state: State) -> dict[str, Staleness]:
        self.state = state
        return self._edited()

    def _replace(self, spec: NodeSpec) -> dict[str, Staleness]:
        with self._lock:
            self._nodes[spec.id] = spec
        return self._edited()

    def _edited(self) -> dict[str, Staleness]:
        plan = self.plan()
        stale = self._stale_in(plan)
        self._current = (plan, stale)
        self._refresh_status(plan, stale)
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

    def _refresh_status(self, plan: Plan, stale: dict[str, Staleness]) -> None:
        previous = self.last_result.runs if self.last_result is not None else {}
        with self._lock:
            for nid in self._order_hint:
                failure = self._unchanged_failure(nid, plan)
                if failure is not None:
                    self.status[nid] = failure.status
                elif nid in stale:
                    self.status[nid] = NodeStatus.STALE if nid in previous else NodeStatus.NOT_RUN
                else:  # CACHED: in the cache but not loaded by a run with this key yet
                    last = previous.get(nid)
                    same = last is not None and last.cache_key == plan.nodes[nid].key
                    self.status[nid] = last.status if same else NodeStatus.CACHED

    def _set_status(self, node_id: str, status: NodeStatus) -> None:
        with self._lock:
            self.status[node_id] = status
        self._emit("status")

    # executor callbacks
    def on_start(self, node_id: str) -> None:
        self._set_status(node_id, NodeStatus.RUNNING)

    def on_done(self, node_id: str, result: Any, cache_hit: bool) -> None:
        self._set_status(node_id, NodeStatus.HIT if cache_hit else NodeStatus.RAN)

    def on_error(self, node_id: str, error: BaseException) -> None:
        self._set_status(node_id, NodeStatus.FAILED)

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self._set_status(node_id, NodeStatus.SKIPPED)

    # --- running -----------------------------------------------------------------------------

    def run(self, targets: Iterable[str] | None = None) -> DagRunResult:
        """Run the stale nodes (or what ``targets`` need); failures are reported in the
        result (``.failures``) and in node statuses, never raised."""
        try:
            result = self.executor.run(
                self.state,
                list(self._nodes.values()),
                self.policy,
                targets=targets,
                raise_on_error=False,
            )
        except KeyboardInterrupt as exc:  # the kernel's interrupt: statuses first, then raise
            partial = getattr(exc, "partial", None)
            if partial is not None:
                self._ran(partial)
            raise
        return self._ran(result)

    def cancel(self) -> None:
        """Stop the run in flight (thread-safe: a Stop button's callback): nodes not run yet
        are shown cancelled, completed ones stay cached. See ``DagExecutor.cancel``."""
        self.executor.cancel()

    def _ran(self, result: DagRunResult) -> DagRunResult:
        self.last_result = result
        self._current = (result.plan, None)
        with self._lock:
            for nid, run in result.runs.items():
                self.status[nid] = run.status
        self._emit("run")
        return result

    def rerun(self, node_id: str) -> DagRunResult:
        """Run again with ``node_id`` recomputed though it is cached, e.g. to draw its plots
        (lazy artifacts are not cached, so a result loaded from disk has none). Its entry is
        dropped and written anew; every other node loads from the cache as usual."""
        self.node(node_id)  # an unknown id raises UnknownNodeError naming it
        self.executor.cache.forget([self.plan().nodes[node_id]])
        return self.run()

    def reasons(self) -> dict[str, str]:
        """A one-line explanation per node, for tooltips, as of the last edit or run (views
        ask on every event: no planning)."""
        plan, stale = self.current_plan, self.current_stale
        out = {}
        for nid in self._order_hint:
            failure = self._unchanged_failure(nid, plan)
            if failure is not None:
                out[nid] = failure.error or failure.reason
            elif nid in stale:
                out[nid] = ", ".join(stale[nid].reasons)
            else:
                out[nid] = "cached"
        return out

    # --- observers ---------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event, session)`` on every change; returns an unsubscribe function."""
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
