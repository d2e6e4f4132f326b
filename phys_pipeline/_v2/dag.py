"""2.0.0's graph description: ``build_dag(nodes)`` checks a node list as a graph and gives its
parents, children and a topological order. As in 2.0.0, nodes need no stage here (our plans,
``make_plan``, need one); the errors are ours, naming the nodes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx

from ..dag import topological_order
from ..errors import CycleError, DuplicateNodeError, MissingDependencyError
from ..types import NodeSpec

__all__ = ["Dag", "PipelineGraph", "build_dag"]


@dataclass(frozen=True, slots=True)
class Dag:
    """A checked graph: nodes by id, each node's parents (``deps``) and children
    (``reverse_deps``), and an order with every node after its parents."""

    nodes_by_id: dict[str, NodeSpec]
    deps: dict[str, list[str]]
    reverse_deps: dict[str, list[str]]
    topo_order: list[str]


@dataclass(frozen=True, slots=True)
class PipelineGraph:
    """A node list together with its checked graph."""

    nodes: list[NodeSpec]
    dag: Dag

    @classmethod
    def from_nodes(cls, nodes: Sequence[NodeSpec]) -> PipelineGraph:
        return cls(list(nodes), build_dag(nodes))


def build_dag(nodes: Sequence[NodeSpec]) -> Dag:
    """Check ``nodes`` as a graph: a repeated id is a DuplicateNodeError, a dependency on an
    unknown id a MissingDependencyError, a cycle a CycleError naming its nodes. Ties in the
    order keep the order the nodes were listed in."""
    duplicates = [node_id for node_id, n in Counter(node.id for node in nodes).items() if n > 1]
    if duplicates:
        raise DuplicateNodeError(duplicates)
    by_id = {node.id: node for node in nodes}
    children: dict[str, list[str]] = {node_id: [] for node_id in by_id}
    for node in nodes:
        missing = [dep for dep in node.deps if dep not in by_id]
        if missing:
            raise MissingDependencyError(node.id, missing)
        for dep in node.deps:
            children[dep].append(node.id)
    order = topological_order(nodes)
    if len(order) < len(nodes):
        edges = nx.find_cycle(nx.DiGraph((dep, n.id) for n in nodes for dep in n.deps))
        raise CycleError([parent for parent, _ in edges])
    return Dag(by_id, {node.id: list(node.deps) for node in nodes}, children, order)


DEPRECATED = {
    "Dag": "use phys_pipeline.dag.make_plan(nodes, state): Plan.order, Plan.specs, Plan.graph",
    "PipelineGraph": "use phys_pipeline.dag.make_plan(nodes, state) (Plan.graph: networkx)",
    "build_dag": "use phys_pipeline.dag.validate(nodes) (the order) or build_graph(nodes)",
}
