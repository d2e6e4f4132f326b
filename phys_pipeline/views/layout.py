"""Where a DAG's boxes and edges go: Graphviz ``dot`` (through pygraphviz in-process, else the
``graphviz`` package and its ``dot`` binary, else a plain layered layout) only places boxes and
routes edges (``plain`` output), so every engine yields the same structure for ``svg`` to draw.
A layout is memoised per graph *structure* (ids, labels, edges), never per status. A big sweep
can be folded first: the variants of one node become one stacked box (``sweep_groups``, ``fold``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ..types import NodeSpec, stage_name

__all__ = [
    "DrawnNode",
    "EdgePath",
    "Engine",
    "Layout",
    "NodeBox",
    "Structure",
    "box_text",
    "fold",
    "layout",
    "structure_of",
    "sweep_groups",
]

Engine = Literal["auto", "pygraphviz", "graphviz", "layered"]

_PT = 72.0  # Graphviz works in inches; SVG user units here are points
ID_FONT, LABEL_FONT = 12.0, 10.0
_PAD = 8.0
_ARROW = 10.0
_MARGIN = 6.0  # around a Graphviz drawing, whose bounding box hugs the node boxes
STACK = 3.0  # offset of each card behind a folded group's front box


class DrawnNode(NamedTuple):
    """One box of a picture: a node (``count`` 1) or a folded sweep group of ``count`` nodes,
    whose id is the id the sweep cloned them from."""

    id: str
    label: str
    count: int = 1


Structure = tuple[tuple[DrawnNode, ...], tuple[tuple[str, str], ...]]


def _specs(plan_or_nodes: Any) -> list[NodeSpec]:
    """The NodeSpecs of a Plan (in its order) or of a list of NodeSpecs."""
    specs = getattr(plan_or_nodes, "specs", None)
    order = getattr(plan_or_nodes, "order", None)
    if isinstance(specs, Mapping) and order is not None:  # a Plan
        return [specs[nid] for nid in order]
    return list(plan_or_nodes)


def structure_of(plan_or_nodes: Any) -> Structure:
    """``(DrawnNode, ...), ((parent, child), ...)``: all a layout depends on, hashable."""
    nodes = getattr(plan_or_nodes, "nodes", None)
    order = getattr(plan_or_nodes, "order", None)
    if isinstance(nodes, Mapping) and order is not None:  # a Plan
        drawn = [DrawnNode(nid, nodes[nid].label) for nid in order]
        edges = [(dep, nid) for nid in order for dep in nodes[nid].deps]
        return tuple(drawn), tuple(edges)
    specs: Sequence[NodeSpec] = list(plan_or_nodes)
    drawn = [DrawnNode(s.id, s.op_name or stage_name(s.stage)) for s in specs]
    edges = [(dep, s.id) for s in specs for dep in s.deps]
    return tuple(drawn), tuple(edges)


def sweep_groups(plan_or_nodes: Any) -> dict[str, tuple[str, ...]]:
    """The variants a sweep cloned from one node (``NodeSpec.sweep.base_id`` -> their ids, in
    order): what a picture may fold into one box. A group has two variants at least, and its
    base id names no node outside it (so a folded box never shares an id with a drawn node)."""
    specs = _specs(plan_or_nodes)
    members: dict[str, list[str]] = {}
    for spec in specs:
        if spec.sweep is not None:
            members.setdefault(spec.sweep.base_id, []).append(spec.id)
    ids = {spec.id for spec in specs}
    return {
        base: tuple(group)
        for base, group in members.items()
        if len(group) > 1 and (base not in ids or base in group)
    }


def fold(structure: Structure, groups: Mapping[str, Sequence[str]]) -> Structure:
    """``structure`` with each group (id -> member ids) drawn as one box where its first
    member was; the members' edges become the box's, each drawn once."""
    if not groups:
        return structure
    owner = {member: gid for gid, members in groups.items() for member in members}
    drawn: dict[str, DrawnNode] = {}
    for node in structure[0]:
        gid = owner.get(node.id)
        if gid is None:
            drawn[node.id] = node
        elif gid not in drawn:
            drawn[gid] = DrawnNode(gid, node.label, len(groups[gid]))
    edges = {
        (owner.get(src, src), owner.get(dst, dst)): None
        for src, dst in structure[1]
        if owner.get(src, src) != owner.get(dst, dst)
    }
    return tuple(drawn.values()), tuple(edges)


def box_text(node: DrawnNode) -> str:
    """The first line of a box: the node id, or a folded group's id, a multiplication sign and
    its count (the badge a physicist reads as "seven glass variants")."""
    return node.id if node.count == 1 else f"{node.id} \u00d7{node.count}"


# --- layout ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeBox:
    """A node's box, centre ``(x, y)`` in SVG points; ``count`` > 1: a folded sweep group,
    whose box holds its stacked cards."""

    id: str
    label: str
    x: float
    y: float
    w: float
    h: float
    count: int = 1


@dataclass(frozen=True)
class EdgePath:
    src: str
    dst: str
    d: str  # SVG path data
    arrow: str  # polygon points of the arrowhead


@dataclass(frozen=True)
class Layout:
    """Positions only; colours come later, so one layout serves every status."""

    width: float
    height: float
    nodes: tuple[NodeBox, ...]
    edges: tuple[EdgePath, ...]
    engine: str


def _box_size(node: DrawnNode) -> tuple[float, float]:
    """Box size from a text-width estimate, so every engine draws boxes the text fits in; a
    folded group's box also holds the two cards stacked behind its front card."""
    width = len(box_text(node)) * ID_FONT * 0.6
    height = ID_FONT + 2 * _PAD
    if node.label and node.label != node.id:
        width = max(width, len(node.label) * LABEL_FONT * 0.58)
        height += LABEL_FONT + 2
    stack = 2 * STACK if node.count > 1 else 0.0
    return max(width + 2 * _PAD + 4, 48.0) + stack, height + stack


def _arrow(tip_from: tuple[float, float], end: tuple[float, float]) -> str:
    """Extend a path by an arrowhead pointing from ``tip_from`` through ``end``."""
    dx, dy = end[0] - tip_from[0], end[1] - tip_from[1]
    norm = math.hypot(dx, dy) or 1.0
    ux, uy = dx / norm, dy / norm
    tip = (end[0] + ux * _ARROW, end[1] + uy * _ARROW)
    left = (end[0] - uy * _ARROW * 0.35, end[1] + ux * _ARROW * 0.35)
    right = (end[0] + uy * _ARROW * 0.35, end[1] - ux * _ARROW * 0.35)
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in (tip, left, right))


def _bezier_path(points: Sequence[tuple[float, float]]) -> str:
    """SVG path of a Graphviz spline: a start point then cubic Bezier triples."""
    first, rest = points[0], points[1:]
    out = [f"M{first[0]:.1f},{first[1]:.1f}"]
    for i in range(0, len(rest) - len(rest) % 3, 3):
        (ax, ay), (bx, by), (cx, cy) = rest[i : i + 3]
        out.append(f"C{ax:.1f},{ay:.1f} {bx:.1f},{by:.1f} {cx:.1f},{cy:.1f}")
    return " ".join(out)


def _edge_from_points(src: str, dst: str, points: Sequence[tuple[float, float]]) -> EdgePath:
    end = points[-1]
    before = next((p for p in reversed(points[:-1]) if p != end), points[0])
    return EdgePath(src, dst, _bezier_path(points), _arrow(before, end))


def _parse_plain(text: str, structure: Structure, engine: str) -> Layout:
    """Read Graphviz ``plain`` output (nodes named ``n<index>``; inches, y up)."""
    ids, _ = structure
    height_in = 0.0
    boxes: dict[int, NodeBox] = {}
    edges: list[EdgePath] = []
    lines = [line.split() for line in text.splitlines()]
    for parts in lines:
        if parts and parts[0] == "graph":
            height_in = float(parts[3])
    width = 0.0

    def x(value: str) -> float:
        return float(value) * _PT + _MARGIN

    def y(value: str) -> float:
        return (height_in - float(value)) * _PT + _MARGIN

    for parts in lines:
        if not parts:
            continue
        if parts[0] == "graph":
            width = float(parts[2]) * _PT + 2 * _MARGIN
        elif parts[0] == "node":
            index = int(parts[1][1:])
            node = ids[index]
            w, h = _box_size(node)
            boxes[index] = NodeBox(node.id, node.label, x(parts[2]), y(parts[3]), w, h, node.count)
        elif parts[0] == "edge":
            src, dst, count = int(parts[1][1:]), int(parts[2][1:]), int(parts[3])
            coords = parts[4 : 4 + 2 * count]
            points = [(x(coords[i]), y(coords[i + 1])) for i in range(0, len(coords), 2)]
            edges.append(_edge_from_points(ids[src].id, ids[dst].id, points))
    nodes = tuple(boxes[i] for i in range(len(ids)))
    return Layout(width, height_in * _PT + 2 * _MARGIN, nodes, tuple(edges), engine)


def _graph_attrs() -> dict[str, str]:
    return {"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.4", "margin": "0.08"}


def _layout_pygraphviz(structure: Structure) -> Layout:
    import pygraphviz

    ids, edges = structure
    index = {node.id: i for i, node in enumerate(ids)}
    graph = pygraphviz.AGraph(directed=True, strict=False, **_graph_attrs())
    graph.node_attr.update(shape="box", fixedsize="true", label="")
    for i, node in enumerate(ids):
        w, h = _box_size(node)
        graph.add_node(f"n{i}", width=f"{w / _PT:.3f}", height=f"{h / _PT:.3f}")
    for src, dst in edges:
        graph.add_edge(f"n{index[src]}", f"n{index[dst]}")
    graph.layout("dot")
    return _parse_plain(graph.draw(format="plain").decode(), structure, "pygraphviz")


def _layout_graphviz(structure: Structure) -> Layout:
    import graphviz

    ids, edges = structure
    index = {node.id: i for i, node in enumerate(ids)}
    dot = graphviz.Digraph(graph_attr=_graph_attrs())
    dot.attr("node", shape="box", fixedsize="true", label="")
    for i, node in enumerate(ids):
        w, h = _box_size(node)
        dot.node(f"n{i}", width=f"{w / _PT:.3f}", height=f"{h / _PT:.3f}")
    for src, dst in edges:
        dot.edge(f"n{index[src]}", f"n{index[dst]}")
    return _parse_plain(dot.pipe(format="plain", engine="dot").decode(), structure, "graphviz")


def _layout_layered(structure: Structure) -> Layout:
    """No Graphviz: nodes in rows by longest path from a root, ordered by their parents'
    mean position (one barycentre pass keeps most crossings away), straight-ish edges."""
    ids, edges = structure
    drawn = {node.id: node for node in ids}
    parents: dict[str, list[str]] = {nid: [] for nid in drawn}
    for src, dst in edges:
        parents[dst].append(src)
    layer: dict[str, int] = {}

    def depth(nid: str) -> int:
        if nid not in layer:
            layer[nid] = 0  # guards against cycles, which a validated plan never has
            layer[nid] = 1 + max((depth(p) for p in parents[nid]), default=-1)
        return layer[nid]

    rows: dict[int, list[str]] = {}
    for nid in drawn:
        rows.setdefault(depth(nid), []).append(nid)
    sizes = {nid: _box_size(node) for nid, node in drawn.items()}
    gap_x, gap_y, margin = 18.0, 30.0, _MARGIN
    centre_x: dict[str, float] = {}
    row_widths = {}
    for r in sorted(rows):
        if r:
            rows[r].sort(
                key=lambda n: sum(centre_x[p] for p in parents[n]) / max(len(parents[n]), 1)
            )
        x = 0.0
        for nid in rows[r]:
            centre_x[nid] = x + sizes[nid][0] / 2
            x += sizes[nid][0] + gap_x
        row_widths[r] = x - gap_x
    width = max(row_widths.values()) + 2 * margin
    row_height = {r: max(sizes[n][1] for n in rows[r]) for r in rows}
    boxes: dict[str, NodeBox] = {}
    y = margin
    for r in sorted(rows):
        shift = margin + (width - 2 * margin - row_widths[r]) / 2
        for nid in rows[r]:
            w, h = sizes[nid]
            node = drawn[nid]
            x = centre_x[nid] + shift
            boxes[nid] = NodeBox(nid, node.label, x, y + row_height[r] / 2, w, h, node.count)
        y += row_height[r] + gap_y
    paths = []
    for src, dst in edges:
        a, b = boxes[src], boxes[dst]
        start, end = (a.x, a.y + a.h / 2), (b.x, b.y - b.h / 2 - _ARROW)
        mid = (start[1] + end[1]) / 2
        points = [start, (start[0], mid), (end[0], mid), end]
        paths.append(_edge_from_points(src, dst, points))
    nodes = tuple(boxes[nid] for nid in drawn)
    return Layout(width, y - gap_y + margin, nodes, tuple(paths), "layered")


_ENGINES = {
    "pygraphviz": _layout_pygraphviz,
    "graphviz": _layout_graphviz,
    "layered": _layout_layered,
}


@functools.lru_cache(maxsize=128)
def layout(structure: Structure, engine: Engine = "auto") -> Layout:
    """The memoised layout of a structure. ``"auto"`` tries pygraphviz, then the ``graphviz``
    package, then the layered fallback; a named engine is used as is (errors propagate)."""
    if engine != "auto":
        return _ENGINES[engine](structure)
    for name in ("pygraphviz", "graphviz"):
        try:
            return _ENGINES[name](structure)
        except Exception:  # noqa: BLE001 - missing module, missing binary or a Graphviz error
            continue
    return _layout_layered(structure)
