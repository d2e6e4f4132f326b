"""Static pictures of plans and results: SVG and HTML strings, no widgets.

Graphviz ``dot`` (through pygraphviz in-process, else the ``graphviz`` package and its ``dot``
binary, else a plain layered layout) only places boxes and routes edges (``plain`` output); the
SVG is written here, so every engine yields the same addressable structure. The layout is
memoised per graph *structure*; a status change only rewrites the node groups (well under a
millisecond for 100 nodes). Every node is
``<g id="node-<dom id>" class="node pp-node status-<status>" data-node="<id>">``, so a browser
recolours it by switching one CSS class (see ``widgets/dag_view.js``).
"""

from __future__ import annotations

import functools
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .types import NodeSpec, NodeStatus, stage_name

Engine = Literal["auto", "pygraphviz", "graphviz", "layered"]

STATUS_COLOURS: dict[NodeStatus, tuple[str, str]] = {  # status -> (fill, stroke)
    NodeStatus.NOT_RUN: ("#e5e7eb", "#6b7280"),
    NodeStatus.STALE: ("#fcd34d", "#b45309"),
    NodeStatus.RUNNING: ("#93c5fd", "#1d4ed8"),
    NodeStatus.RAN: ("#86efac", "#15803d"),
    NodeStatus.CACHED: ("#ccfbf1", "#0f766e"),
    NodeStatus.HIT: ("#5eead4", "#0f766e"),
    NodeStatus.FAILED: ("#fca5a5", "#b91c1c"),
    NodeStatus.SKIPPED: ("#f3f4f6", "#9ca3af"),
}
LEGEND_TEXT = {NodeStatus.HIT: "cache hit"}
DEFAULT_STATUS = NodeStatus.NOT_RUN

_PT = 72.0  # Graphviz works in inches; SVG user units here are points
_ID_FONT, _LABEL_FONT = 12.0, 10.0
_PAD = 8.0
_LEGEND_WIDTH = 110.0
_ARROW = 10.0
_MARGIN = 6.0  # around a Graphviz drawing, whose bounding box hugs the node boxes


def status_slug(status: str) -> str:
    """The CSS class suffix of a status: ``"not run"`` -> ``"not-run"``."""
    return re.sub(r"[^a-z0-9]+", "-", status.lower()).strip("-") or "unknown"


def status_class(status: str) -> str:
    return f"status-{status_slug(status)}"


# Scoped under svg.pp-dag: inline SVG styles apply to the whole page, so nothing leaks out.
# Fill/stroke presentation attributes repeat the colours for renderers that strip <style>;
# CSS rules win over them, so the browser recolours by switching the status class alone.
SVG_STYLE = "".join(
    [
        ".pp-dag{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif}",
        ".pp-dag .pp-node rect{stroke-width:1.4}",
        ".pp-dag .pp-node text{fill:#111827;pointer-events:none}",
        ".pp-dag .pp-node .pp-label{fill:#374151}",
        ".pp-dag .pp-edge path{fill:none;stroke:#6b7280;stroke-width:1.2}",
        ".pp-dag .pp-edge polygon{fill:#6b7280;stroke:none}",
        ".pp-dag .pp-legend text{fill:#374151;font-size:10px}",
        *(
            f".pp-dag .{status_class(s)} rect{{fill:{fill};stroke:{stroke}}}"
            for s, (fill, stroke) in STATUS_COLOURS.items()
        ),
        ".pp-dag .pp-node.status-skipped rect{stroke-dasharray:4 3}",
        ".pp-dag .pp-node.status-running rect{animation:pp-pulse .8s infinite alternate}",
        "@keyframes pp-pulse{from{opacity:1}to{opacity:.45}}",
    ]
)


def dom_id(node_id: str) -> str:
    """An injective, CSS-safe id fragment: letters, digits and ``-`` stay, every other
    character (``_`` included) becomes ``_<hex>_``; so ``b[N=512]`` -> ``b_5b_N_3d_512_5d_``."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c == "-") else f"_{ord(c):x}_" for c in node_id
    )


def node_title(node_id: str, label: str, status: str, reason: str | None) -> str:
    """The tooltip text of a node (the browser view builds the same text)."""
    head = node_id if label in ("", node_id) else f"{node_id} ({label})"
    lines = [head, f"status: {status}"]
    if reason:
        lines.append(f"why: {reason}")
    return "\n".join(lines)


# --- structure ------------------------------------------------------------------------------

Structure = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


def structure_of(plan_or_nodes: Any) -> Structure:
    """``((id, label), ...), ((parent, child), ...)``: all a layout depends on, hashable."""
    nodes = getattr(plan_or_nodes, "nodes", None)
    order = getattr(plan_or_nodes, "order", None)
    if isinstance(nodes, Mapping) and order is not None:  # a Plan
        ids = [(nid, nodes[nid].label) for nid in order]
        edges = [(dep, nid) for nid in order for dep in nodes[nid].deps]
        return tuple(ids), tuple(edges)
    specs: Sequence[NodeSpec] = list(plan_or_nodes)
    ids = [(s.id, s.op_name or stage_name(s.stage)) for s in specs]
    edges = [(dep, s.id) for s in specs for dep in s.deps]
    return tuple(ids), tuple(edges)


# --- layout ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeBox:
    """A node's box, centre ``(x, y)`` in SVG points."""

    id: str
    label: str
    x: float
    y: float
    w: float
    h: float


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


def _box_size(node_id: str, label: str) -> tuple[float, float]:
    """Box size from a text-width estimate, so every engine draws boxes the text fits in."""
    width = len(node_id) * _ID_FONT * 0.6
    height = _ID_FONT + 2 * _PAD
    if label and label != node_id:
        width = max(width, len(label) * _LABEL_FONT * 0.58)
        height += _LABEL_FONT + 2
    return max(width + 2 * _PAD + 4, 48.0), height


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
            nid, label = ids[index]
            w, h = _box_size(nid, label)
            boxes[index] = NodeBox(nid, label, x(parts[2]), y(parts[3]), w, h)
        elif parts[0] == "edge":
            src, dst, count = int(parts[1][1:]), int(parts[2][1:]), int(parts[3])
            coords = parts[4 : 4 + 2 * count]
            points = [(x(coords[i]), y(coords[i + 1])) for i in range(0, len(coords), 2)]
            edges.append(_edge_from_points(ids[src][0], ids[dst][0], points))
    nodes = tuple(boxes[i] for i in range(len(ids)))
    return Layout(width, height_in * _PT + 2 * _MARGIN, nodes, tuple(edges), engine)


def _graph_attrs() -> dict[str, str]:
    return {"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.4", "margin": "0.08"}


def _layout_pygraphviz(structure: Structure) -> Layout:
    import pygraphviz

    ids, edges = structure
    index = {nid: i for i, (nid, _) in enumerate(ids)}
    graph = pygraphviz.AGraph(directed=True, strict=False, **_graph_attrs())
    graph.node_attr.update(shape="box", fixedsize="true", label="")
    for i, (nid, label) in enumerate(ids):
        w, h = _box_size(nid, label)
        graph.add_node(f"n{i}", width=f"{w / _PT:.3f}", height=f"{h / _PT:.3f}")
    for src, dst in edges:
        graph.add_edge(f"n{index[src]}", f"n{index[dst]}")
    graph.layout("dot")
    return _parse_plain(graph.draw(format="plain").decode(), structure, "pygraphviz")


def _layout_graphviz(structure: Structure) -> Layout:
    import graphviz

    ids, edges = structure
    index = {nid: i for i, (nid, _) in enumerate(ids)}
    dot = graphviz.Digraph(graph_attr=_graph_attrs())
    dot.attr("node", shape="box", fixedsize="true", label="")
    for i, (nid, label) in enumerate(ids):
        w, h = _box_size(nid, label)
        dot.node(f"n{i}", width=f"{w / _PT:.3f}", height=f"{h / _PT:.3f}")
    for src, dst in edges:
        dot.edge(f"n{index[src]}", f"n{index[dst]}")
    return _parse_plain(dot.pipe(format="plain", engine="dot").decode(), structure, "graphviz")


def _layout_layered(structure: Structure) -> Layout:
    """No Graphviz: nodes in rows by longest path from a root, ordered by their parents'
    mean position (one barycentre pass keeps most crossings away), straight-ish edges."""
    ids, edges = structure
    labels = dict(ids)
    parents: dict[str, list[str]] = {nid: [] for nid, _ in ids}
    for src, dst in edges:
        parents[dst].append(src)
    layer: dict[str, int] = {}

    def depth(nid: str) -> int:
        if nid not in layer:
            layer[nid] = 0  # guards against cycles, which a validated plan never has
            layer[nid] = 1 + max((depth(p) for p in parents[nid]), default=-1)
        return layer[nid]

    rows: dict[int, list[str]] = {}
    for nid, _ in ids:
        rows.setdefault(depth(nid), []).append(nid)
    sizes = {nid: _box_size(nid, labels[nid]) for nid in labels}
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
            boxes[nid] = NodeBox(
                nid, labels[nid], centre_x[nid] + shift, y + row_height[r] / 2, w, h
            )
        y += row_height[r] + gap_y
    paths = []
    for src, dst in edges:
        a, b = boxes[src], boxes[dst]
        start, end = (a.x, a.y + a.h / 2), (b.x, b.y - b.h / 2 - _ARROW)
        mid = (start[1] + end[1]) / 2
        points = [start, (start[0], mid), (end[0], mid), end]
        paths.append(_edge_from_points(src, dst, points))
    nodes = tuple(boxes[nid] for nid, _ in ids)
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


# --- writing SVG ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _static_parts(lay: Layout) -> tuple[str, str, str]:
    """Header, edges and legend: everything that does not depend on statuses."""
    width = lay.width + _LEGEND_WIDTH
    height = max(lay.height, 16.0 * len(STATUS_COLOURS) + 10)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pp-dag" data-engine="{lay.engine}" '
        f'width="{width:.0f}pt" height="{height:.0f}pt" viewBox="0 0 {width:.1f} {height:.1f}">'
        f"<style>{SVG_STYLE}</style>"
    )
    edges = "".join(
        f'<g class="edge pp-edge" data-src="{html.escape(e.src)}" data-dst="{html.escape(e.dst)}">'
        f'<path d="{e.d}"/><polygon points="{e.arrow}"/></g>'
        for e in lay.edges
    )
    items = []
    for i, (status, (fill, stroke)) in enumerate(STATUS_COLOURS.items()):
        y = 6 + 16 * i
        dash = ' stroke-dasharray="3 2"' if status == NodeStatus.SKIPPED else ""
        items.append(
            f'<g class="pp-legend-item legend-{status_slug(status)}" transform="translate(0,{y})">'
            f'<rect width="14" height="11" rx="3" fill="{fill}" stroke="{stroke}"{dash}/>'
            f'<text x="20" y="9.5">{LEGEND_TEXT.get(status, status)}</text></g>'
        )
    legend = (
        f'<g class="pp-legend" transform="translate({lay.width + 12:.1f},0)">{"".join(items)}</g>'
    )
    return head, edges, legend


def _node_svg(box: NodeBox, status: str, reason: str | None) -> str:
    fill, stroke = STATUS_COLOURS.get(status, STATUS_COLOURS[DEFAULT_STATUS])
    nid, label = html.escape(box.id), html.escape(box.label)
    title = html.escape(node_title(box.id, box.label, status, reason), quote=False)
    x, y = box.x - box.w / 2, box.y - box.h / 2
    two_lines = box.label and box.label != box.id
    id_y = box.y + (_ID_FONT * 0.35 - (6 if two_lines else 0))
    text = (
        f'<text class="pp-id" x="{box.x:.1f}" y="{id_y:.1f}" text-anchor="middle" '
        f'font-size="{_ID_FONT:.0f}">{nid}</text>'
    )
    if two_lines:
        text += (
            f'<text class="pp-label" x="{box.x:.1f}" y="{id_y + _LABEL_FONT + 3:.1f}" '
            f'text-anchor="middle" font-size="{_LABEL_FONT:.0f}">{label}</text>'
        )
    return (
        f'<g id="node-{dom_id(box.id)}" class="node pp-node {status_class(status)}" '
        f'data-node="{nid}" data-label="{label}"><title>{title}</title>'
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" rx="5" '
        f'fill="{fill}" stroke="{stroke}"/>{text}</g>'
    )


def layout_svg(
    lay: Layout,
    statuses: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
) -> str:
    """Colour a layout: only the node groups are written; edges and legend are memoised."""
    statuses, reasons = statuses or {}, reasons or {}
    head, edges, legend = _static_parts(lay)
    nodes = "".join(
        _node_svg(box, statuses.get(box.id, DEFAULT_STATUS), reasons.get(box.id))
        for box in lay.nodes
    )
    return f"{head}{edges}{nodes}{legend}</svg>"


def dag_svg(
    plan_or_nodes: Any,
    statuses: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
    *,
    engine: Engine = "auto",
) -> str:
    """An SVG picture of a Plan (or a list of NodeSpecs), nodes coloured by ``statuses``
    (node id -> one of ``STATUS_COLOURS``; default "not run"), ``reasons`` in tooltips."""
    return layout_svg(layout(structure_of(plan_or_nodes), engine), statuses, reasons)


def nodes_svg(nodes: Sequence[NodeSpec], *, engine: Engine = "auto") -> str:
    """The DAG of ``nodes`` before anything ran."""
    return dag_svg(nodes, engine=engine)


def recolour(svg: str, statuses: Mapping[str, str]) -> str:
    """Switch the status class (and fallback fill/stroke) of node groups in an SVG written
    here, by string substitution; for callers holding only the SVG text."""

    def swap(match: re.Match[str]) -> str:
        node_id = html.unescape(match.group("node"))
        status = statuses.get(node_id)
        if status is None:
            return match.group(0)
        fill, stroke = STATUS_COLOURS.get(status, STATUS_COLOURS[DEFAULT_STATUS])
        head = re.sub(r"status-[a-z0-9-]+", status_class(status), match.group("head"), count=1)
        rect = re.sub(
            r'fill="[^"]*" stroke="[^"]*"',
            f'fill="{fill}" stroke="{stroke}"',
            match.group("rect"),
            count=1,
        )
        return head + match.group("mid") + rect

    return _NODE_GROUP.sub(swap, svg)


_NODE_GROUP = re.compile(
    r'(?P<head><g id="node-[^"]*" class="node pp-node status-[a-z0-9-]+" '
    r'data-node="(?P<node>[^"]*)"[^>]*>)(?P<mid><title>.*?</title>)(?P<rect><rect [^>]*>)',
    re.S,
)


# --- results --------------------------------------------------------------------------------


def run_statuses(result: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Statuses and reasons of a DagRunResult's nodes (nodes outside the run: "not run")."""
    statuses = {nid: run.status for nid, run in result.runs.items()}
    reasons = {nid: run.error or run.reason for nid, run in result.runs.items()}
    return statuses, reasons


def metrics_html(metrics: Mapping[str, Any], *, css_class: str = "pp-metrics") -> str:
    """A table of namespaced metrics (``"node.key"``), one row per metric."""
    if not metrics:
        return f'<p class="{css_class} pp-empty">no metrics</p>'
    rows = []
    for key, value in metrics.items():
        node, _, name = key.rpartition(".") if "." in key else ("", "", key)
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        rows.append(
            f"<tr><td>{html.escape(node)}</td><td>{html.escape(name)}</td>"
            f'<td style="text-align:right">{html.escape(shown)}</td></tr>'
        )
    return (
        f'<table class="{css_class}"><thead><tr><th>node</th><th>metric</th><th>value</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def failures_html(failures: Mapping[str, BaseException]) -> str:
    """One line per failed node, naming it."""
    if not failures:
        return ""
    items = "".join(
        f"<li><b>node {html.escape(repr(nid))} failed</b>: "
        f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</li>"
        for nid, exc in failures.items()
    )
    return f'<ul class="pp-errors" style="color:#b91c1c">{items}</ul>'


def result_html(result: Any, *, engine: Engine = "auto") -> str:
    """A run at a glance: the coloured DAG, a summary line, failures and the metrics table."""
    statuses, reasons = run_statuses(result)
    svg = dag_svg(result.plan, statuses, reasons, engine=engine)
    return (
        f'<div class="pp-result">{svg}'
        f'<p class="pp-status-line">{html.escape(result.summary())}</p>'
        f"{failures_html(result.failures)}{metrics_html(result.metrics)}</div>"
    )


def table_html(table: Any) -> str:
    """A DataFrame or a list of dicts (what ``sweep_table`` returns) as an HTML table."""
    to_html = getattr(table, "to_html", None)
    if to_html is not None:
        return to_html(index=False, classes="pp-table", border=0)
    rows = list(table)
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f'<table class="pp-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def sweep_series(
    result: Any, node: str | None = None
) -> tuple[str, dict[str, list[tuple[float, float]]]] | None:
    """``(parameter, {"<base node>.<metric>": [(x, y), ...]})`` when the swept variants (of
    base node ``node``, or all) vary exactly one numeric parameter; numeric metrics only,
    points sorted by x. None when there is nothing to plot that way."""
    from .sweep import sweep_variants

    variants = [(sweep, metrics) for _, sweep, metrics in sweep_variants(result, node)]
    names = {name for sweep, _ in variants for name in sweep["params"]}
    if len(names) != 1:
        return None
    (param,) = names
    series: dict[str, list[tuple[float, float]]] = {}
    for sweep, metrics in variants:
        x = sweep["params"][param]
        if not _is_number(x):
            return None
        for key, y in metrics.items():
            if _is_number(y):
                series.setdefault(f"{sweep['base_id']}.{key}", []).append((float(x), float(y)))
    series = {key: sorted(points) for key, points in series.items() if len(points) > 1}
    return (param, series) if series else None


def sweep_png(result: Any, node: str | None = None, *, max_panels: int = 6) -> bytes | None:
    """Metric against the swept parameter, one small panel per metric (see ``sweep_series``),
    as PNG bytes; None when the sweep is not one numeric parameter with numeric metrics."""
    found = sweep_series(result, node)
    if found is None:
        return None
    from matplotlib.figure import Figure

    param, series = found
    panels = list(series.items())[:max_panels]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    figure = Figure(figsize=(3.2 * cols, 2.4 * rows), layout="constrained")
    for i, (key, points) in enumerate(panels):
        axes = figure.add_subplot(rows, cols, i + 1)
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, marker="o")
        axes.set_xlabel(param)
        axes.set_title(key, fontsize=9)
    return figure_png(figure)


def figure_png(figure: Any, *, dpi: int = 96) -> bytes:
    """PNG bytes of a matplotlib figure, which is then closed (so inline backends do not show
    it a second time and pyplot does not keep it alive)."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        try:
            import matplotlib.pyplot as plt

            plt.close(figure)
        except ImportError:
            pass
    return buffer.getvalue()
