"""The plan: a validated graph with a cache key for every node, computed before anything runs.

A node's key is Merkle style: it folds in the stage's identity and code version, its canonical
config, the policy entries it sees and its parents' keys (root nodes: the initial state's
``hashable_repr()``). So "what is stale?" is answered from the spec and the cache alone.
"""

from __future__ import annotations

import heapq
import logging
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import networkx as nx
import xxhash

from . import display
from ._deprecation import warn_once
from ._v2 import served_from
from .errors import (
    ConfigError,
    CycleError,
    DagError,
    DuplicateNodeError,
    EmptyDagError,
    MissingDependencyError,
    MissingStageError,
    NotAStateError,
    UncacheableWarning,
    UnhashableValueError,
    UnknownNodeError,
)
from .fingerprint import Fingerprint, Fingerprinter, untracked_of
from .hashing import config_field_digests, config_hash, file_references
from .policy import EMPTY_POLICY_HASH, PolicyBag, ScopedPolicy
from .types import NodeSpec, name_of

__all__ = [
    "KEY_SCHEMA",
    "NodePlan",
    "Plan",
    "Staleness",
    "ancestors_closure",
    "build_graph",
    "config_changes",
    "make_plan",
    "policy_keys_of",
    "policy_seen_by",
    "policy_view_hash",
    "topological_order",
    "validate",
]

_log = logging.getLogger("phys_pipeline.plan")
# 2: floats by their bits and dicts in order; an entry filed under /1 for -0.0 had 0.0's key
KEY_SCHEMA = b"phys-pipeline/node-key/2"


# --- graph building and validation ----------------------------------------------------------


def validate(nodes: Sequence[NodeSpec]) -> list[str]:
    """Check ``nodes`` (no empty DAG, no duplicate ids, no unknown dependencies, no cycles,
    every node with a usable stage) and return their topological order (dependencies first;
    ties keep the order the user listed nodes in, so the order is stable and readable)."""
    if not nodes:
        raise EmptyDagError()
    seen: set[str] = set()  # ids so far: while nodes are listed in order, what deps may name
    duplicates = []
    listed_in_order = True  # every node after its dependencies: that is the order itself
    for node in nodes:
        if not isinstance(node, NodeSpec):
            raise MissingStageError(repr(node), node)
        node_id = node.id
        if not isinstance(node_id, str) or not node_id:
            raise DagError(f"node id {node_id!r}: node ids must be non-empty strings")
        if node_id in seen:
            duplicates.append(node_id)
        if listed_in_order and node.deps:
            try:
                listed_in_order = seen.issuperset(node.deps)
            except TypeError:  # a dep that is no id (a list, a set): named as unknown below
                listed_in_order = False
        seen.add(node_id)
    if duplicates:
        raise DuplicateNodeError(duplicates)
    for node in nodes:  # in the order listed, so the first culprit is the one named
        resources = node.resources
        if resources is not None:
            for field, value, problem in resources.problems():
                raise ConfigError(f"node {node.id!r}", f"resources.{field}", value, problem)
        stage = node.stage
        # the class first: a property such as a pipeline's cfg is not evaluated just to check
        has_cfg = hasattr(type(stage), "cfg") or hasattr(stage, "cfg")
        if not (callable(getattr(stage, "process", None)) and has_cfg):
            raise MissingStageError(node.id, stage)
        deps = node.deps
        if deps:
            if not listed_in_order:  # listed in order, every dep named an earlier node
                missing = [dep for dep in deps if not _names_one_of(dep, seen)]
                if missing:
                    raise MissingDependencyError(node.id, missing)
            if len(deps) > 1 and len(set(deps)) != len(deps):
                raise DuplicateNodeError([f"{node.id}.deps: {d}" for d in deps])
    if listed_in_order:  # what Kahn's algorithm below would return for such a list
        return [node.id for node in nodes]
    order = _kahn_order(nodes)
    if len(order) != len(nodes):
        raise CycleError([edge[0] for edge in nx.find_cycle(_digraph(nodes))])
    return order


def _names_one_of(dep: Any, ids: set[str]) -> bool:
    """Whether ``dep`` is one of ``ids``; one that cannot be an id (a list) is none of them."""
    try:
        return dep in ids
    except TypeError:
        return False


def _kahn_order(nodes: Sequence[NodeSpec]) -> list[str]:
    """Kahn's algorithm over ``nodes``' deps, taking the earliest-listed ready node each time;
    shorter than ``nodes`` exactly when the deps form a cycle."""
    position = {node.id: i for i, node in enumerate(nodes)}
    waiting_on = [len(node.deps) for node in nodes]
    children: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for dep in node.deps:
            children[position[dep]].append(i)
    ready = [i for i, count in enumerate(waiting_on) if not count]  # sorted, so a valid heap
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i].id)
        for child in children[i]:
            waiting_on[child] -= 1
            if not waiting_on[child]:
                heapq.heappush(ready, child)
    return order


def _digraph(nodes: Sequence[NodeSpec]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from((node.id, {"spec": node}) for node in nodes)
    graph.add_edges_from((dep, node.id) for node in nodes for dep in node.deps)
    return graph


def build_graph(nodes: Sequence[NodeSpec]) -> nx.DiGraph:
    """A networkx DiGraph of ``nodes`` (edges parent -> child), validated (see ``validate``)."""
    validate(nodes)
    return _digraph(nodes)


def topological_order(
    nodes: Sequence[NodeSpec], _old_call_nodes: Sequence[NodeSpec] | None = None
) -> list[str]:
    """Dependencies first; ties keep the order the user listed nodes in (stable, readable).
    The old call ``topological_order(graph, nodes)`` still works: its graph was never read."""
    if _old_call_nodes is not None:
        warn_once(
            "phys_pipeline.dag.topological_order(graph, nodes)",
            "call topological_order(nodes): the graph was never read",
        )
        nodes = _old_call_nodes
    return _kahn_order(nodes)


# --- keys -----------------------------------------------------------------------------------


def policy_keys_of(node: NodeSpec) -> tuple[str, ...] | None:
    """The policy keys a node declares it reads (None: it may read any)."""
    declared = node.policy_keys
    if declared is None:
        declared = getattr(node.stage, "policy_keys", None)
    return None if declared is None else tuple(declared)


def policy_seen_by(node: NodeSpec, policy: PolicyBag | None) -> PolicyBag | None:
    """The policy handed to a node's stage: scoped to its declared keys, if it declares any."""
    if policy is None:
        return None
    declared = policy_keys_of(node)
    if declared is None:
        return policy
    return ScopedPolicy(policy, declared, f"node {node.id!r}")


def policy_view_hash(node: NodeSpec, policy: PolicyBag | None) -> str:
    """The hash of the part of the policy a node can see."""
    if policy is None or not len(policy):
        return EMPTY_POLICY_HASH
    declared = policy_keys_of(node)
    return policy.hash() if declared is None else policy.hash_of(declared)


class NodePlan(NamedTuple):
    """Everything that went into one node's key, so a change can be explained. (A named
    tuple: immutable, and plans make one per node on every run.) ``uncacheable`` says why
    the node cannot be cached (its key cannot cover something it reads), or is empty."""

    id: str
    deps: tuple[str, ...]
    key: str
    stage_type: str
    code_version: str
    config_hash: str
    policy_hash: str
    label: str
    fingerprint: Fingerprint
    uncacheable: str = ""
    # the key without the parents' keys, equal when only upstream changed ("": not made, see
    # make_plan's ``cutoff``)
    own: str = ""


class Staleness(NamedTuple):
    """Why a node must run: ``reasons`` such as "config changed" or "not cached"."""

    node_id: str
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.node_id}: {', '.join(self.reasons)}"


# plans make these for every node: ``tuple.__new__`` builds one in C, where calling the
# class runs the named tuple's ``__new__`` in Python (a third of a microsecond for a NodePlan);
# every field is given, in order
_node_plan = partial(tuple.__new__, NodePlan)
_staleness = partial(tuple.__new__, Staleness)


@dataclass
class Plan:
    """The validated nodes, a topological order and every node's key and key ingredients."""

    specs: dict[str, NodeSpec]
    order: list[str]
    nodes: dict[str, NodePlan]
    state_digest: bytes
    policy: PolicyBag | None = None
    _graph: nx.DiGraph | None = field(default=None, repr=False)
    _descendants: dict[str, set[str]] = field(default_factory=dict, repr=False)

    @property
    def graph(self) -> nx.DiGraph:
        """The DAG as a networkx graph (edges parent -> child), built when first asked for:
        planning and running do not need it."""
        if self._graph is None:
            self._graph = _digraph(list(self.specs.values()))
        return self._graph

    @property
    def keys(self) -> dict[str, str]:
        return {nid: p.key for nid, p in self.nodes.items()}

    def _repr_svg_(self) -> str | None:
        """Notebooks and docs show the DAG itself (drawn by the view layer, see ``display``)."""
        return display.draw(self, display.SVG)

    def roots(self) -> list[str]:
        return [nid for nid in self.order if not self.nodes[nid].deps]

    def descendants(self, node_id: str) -> set[str]:
        if node_id not in self.nodes:
            raise UnknownNodeError(node_id, self.nodes)
        if node_id not in self._descendants:
            self._descendants[node_id] = nx.descendants(self.graph, node_id)
        return self._descendants[node_id]

    def explain(self, node_id: str, previous: Plan | None) -> tuple[str, ...]:
        """Why ``node_id``'s key differs from the one it had in ``previous``, naming what
        changed: ``global SCALE changed``, ``config field dt changed``, ..."""
        now = self.nodes[node_id]
        if now.uncacheable:
            return (now.uncacheable,)
        before = previous.nodes.get(node_id) if previous is not None else None
        if before is None:
            return ("new node",) if previous is not None else ("not cached",)
        reasons: list[str] = []
        if now.stage_type != before.stage_type:
            reasons.append(f"stage class changed ({before.stage_type} -> {now.stage_type})")
        elif now.fingerprint.digest != before.fingerprint.digest:
            # a pinned version (NodeSpec.version) keeps code_version, not the attributes
            reasons += now.fingerprint.changes(before.fingerprint) or ["code changed"]
        if _input_shape(self.specs[node_id]) != _input_shape(previous.specs[node_id]):
            reasons.append("input names changed")
        if now.config_hash != before.config_hash:
            cfg, old = self.specs[node_id].stage.cfg, previous.specs[node_id].stage.cfg
            reasons += config_changes(cfg, old) or ["config changed"]
        if now.policy_hash != before.policy_hash:
            reasons.append("policy changed")
        if now.deps != before.deps:
            reasons.append("dependencies changed")
        elif not now.deps and self.state_digest != previous.state_digest:
            reasons.append("input state changed")
        elif any(self.nodes[d].key != previous.nodes[d].key for d in now.deps):
            reasons.append("upstream changed")
        return tuple(reasons) or ("not cached",)

    def stale(self, cache: Any = None, previous: Plan | None = None) -> dict[str, Staleness]:
        """Nodes whose key is not in ``cache`` (all, without a cache), in order, with reasons
        relative to ``previous`` (the plan of the last run) where one is given. A node that
        cannot be cached is always stale."""
        contains = getattr(cache, "contains", None)
        nodes = self.nodes
        return {
            nid: _staleness((nid, self.explain(nid, previous)))
            for nid in self.order
            if contains is None or nodes[nid].uncacheable or not contains(nodes[nid].key)
        }


def _input_shape(spec: NodeSpec) -> tuple[bool, Any] | None:
    """How a node receives its parents' states, as far as its key sees it."""
    inputs = spec.inputs
    if inputs is None or not (inputs.gather or inputs.names):
        return None
    return inputs.gather, dict(inputs.names or {})


def config_changes(cfg: Any, before: Any) -> list[str]:
    """``config field dt changed`` for each top-level field whose value hashes differently.
    A file is digested as it is now, so when no field did, a file a field names changed:
    ``file data/beam.npy changed``."""
    if type(cfg) is not type(before):
        return [f"config class changed ({type(before).__qualname__} -> {type(cfg).__qualname__})"]
    now, old = config_field_digests(cfg), config_field_digests(before)
    changed = sorted(name for name in now.keys() | old.keys() if now.get(name) != old.get(name))
    if changed:
        return [f"config field {name} changed" for name in changed]
    files = [str(path) for name in now for path in file_references(getattr(cfg, name, None))]
    if len(files) > 1:
        return [f"one of the files {', '.join(files)} changed"]
    return [f"file {path} changed" for path in files]


def make_plan(
    nodes: Sequence[NodeSpec],
    initial_state: Any,
    policy: PolicyBag | None = None,
    graph: nx.DiGraph | None = None,
    *,
    cutoff: bool = True,
) -> Plan:
    """Validate ``nodes`` and compute every node's cache key without running anything.
    ``graph``: the graph ``build_graph`` made of ``nodes``, when the caller has it already.
    ``cutoff=False``: no early cutoff will compare this plan (a run with nothing to load
    from), so ``NodePlan.own`` is left empty rather than hashed.

    A node whose code reads a value that cannot be hashed cannot be cached: it gets a key no
    cache holds and a reason saying why, and so do the nodes below it (their keys cannot
    cover what it will produce); a UncacheableWarning names the node and the value."""
    order = validate(nodes) if graph is None else topological_order(nodes)
    specs = {node.id: node for node in nodes}
    if not callable(getattr(initial_state, "hashable_repr", None)):
        raise NotAStateError("initial state", initial_state)
    walkers: dict[tuple[str, ...], Fingerprinter] = {(): Fingerprinter()}  # per untracked set
    # the state's class too: root stages call its methods (a library state: by version)
    state_code = walkers[()].code(type(initial_state)).digest.encode()
    state_digest = bytes(initial_state.hashable_repr()) + state_code
    # id of a stage class (not the class: a metaclass may make two classes equal) -> the
    # class, its name and its walker; the classes stay alive for the plan, in its nodes
    classes: dict[int, tuple[type, str, Fingerprinter]] = {}
    planned: dict[str, NodePlan] = {}
    not_cacheable: set[str] = set()
    for nid in order:
        spec = specs[nid]
        stage = spec.stage
        cls = type(stage)
        known = classes.get(id(cls))
        if known is None or known[0] is not cls:
            untracked = untracked_of(cls)
            walker = walkers.get(untracked) or walkers.setdefault(
                untracked, Fingerprinter(untracked)
            )
            known = classes[id(cls)] = (cls, f"{cls.__module__}.{cls.__qualname__}", walker)
        _, stage_type, fingerprinter = known
        explicit = spec.version or getattr(stage, "version", None)
        pinned = f"v:{explicit}" if isinstance(explicit, str) and explicit else None
        try:
            cfg = stage.cfg
            cfg_hash = config_hash(cfg)
        except UnhashableValueError as exc:
            raise exc.at(f"node {nid!r} config") from None
        fingerprint = fingerprinter.stage(stage, cfg, pinned)
        version = pinned or fingerprint.digest
        pol_hash = EMPTY_POLICY_HASH if not policy else policy_view_hash(spec, policy)
        # one buffer, one call: the same digest as feeding the parts in turn
        head = KEY_SCHEMA + "\0".join((stage_type, version, cfg_hash, pol_hash, "")).encode()
        if pinned:
            head += fingerprint.digest.encode()  # attributes beside cfg, still by value
        inputs = spec.inputs
        if inputs is not None and (inputs.gather or inputs.names):
            # the shape of the input (DagState keys) is part of what the stage sees; spelled
            # as when it was metadata["gather"] and ["input_names"], so keys stay the same
            head += repr((inputs.gather or None, inputs.names)).encode()
        deps = spec.deps
        # what the node is apart from its inputs' keys: early cutoff compares it
        own = xxhash.xxh3_128_hexdigest(head + "\1".join(deps).encode()) if cutoff else ""
        if len(deps) == 1:  # a chain's link, without building a list
            head += f"{deps[0]}\1{planned[deps[0]].key}".encode()
        elif deps:
            head += "".join([f"{dep}\1{planned[dep].key}" for dep in deps]).encode()
        else:
            head += b"root\0" + state_digest
        uncacheable = ""
        if fingerprint.uncacheable or (not_cacheable and not not_cacheable.isdisjoint(deps)):
            uncacheable = _uncacheable(nid, fingerprint, deps, not_cacheable)
            not_cacheable.add(nid)
            head += uuid.uuid4().bytes  # a key of its own: nothing is found or filed
        key = xxhash.xxh3_128_hexdigest(head)
        planned[nid] = _node_plan(
            (
                nid,
                tuple(deps),
                key,
                stage_type,
                version,
                cfg_hash,
                pol_hash,
                spec.op_name or name_of(cfg, cls),
                fingerprint,
                uncacheable,
                own,
            )
        )
    _log.debug("plan: %d nodes, %d not cacheable", len(planned), len(not_cacheable))
    return Plan(specs, order, planned, state_digest, policy, _graph=graph)


def _uncacheable(
    node_id: str, fingerprint: Fingerprint, deps: Sequence[str], not_cacheable: set[str]
) -> str:
    """Why a node cannot be cached, warning (once per node and plan) where it is the cause."""
    if fingerprint.uncacheable:
        culprits = ", ".join(fingerprint.uncacheable)
        warnings.warn(
            f"node {node_id!r} is not cached: its key cannot cover {culprits}, which cannot "
            "be hashed; it reruns every time. If it does not affect the result, name it in "
            "the stage's `untracked` class attribute (see docs/concepts.md).",
            UncacheableWarning,
            stacklevel=3,
        )
        return f"not cacheable: reads {culprits}, which cannot be hashed"
    dep = next(dep for dep in deps if dep in not_cacheable)
    return f"not cacheable: upstream node {dep!r} is not cacheable"


def ancestors_closure(graph: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """``targets`` (node ids; one id may be given as a plain string) and everything they depend
    on (what must exist to compute them)."""
    wanted = {targets} if isinstance(targets, str) else set(targets)
    for target in list(wanted):
        if target not in graph:
            raise UnknownNodeError(target, graph.nodes)
        wanted |= nx.ancestors(graph, target)
    return wanted


__getattr__ = served_from(__name__, "dag")
