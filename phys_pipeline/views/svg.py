"""SVG pictures of plans and node lists, coloured by status, with no widget: a status change
only rewrites the node groups (well under a millisecond for 100 nodes). Every node is
``<g id="node-<dom id>" class="node pp-node status-<status>" data-node="<id>">``, so a browser
recolours it by switching one CSS class (see ``widgets/dag_view.js``); a folded sweep group is
``<g id="group-<dom id>" class="pp-group status-<worst status>" data-group="<base id>">``.

Every colour reads a JupyterLab theme variable (with the light theme's value as fallback), and a
box is filled with its status hue mixed into the page background: a light tint under dark text
in a light theme, a dark one under light text in a dark or high-contrast theme. Pictures shown
where no theme variables exist (an ``<img>``, a downloaded file) get the light theme."""

from __future__ import annotations

import functools
import html
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from ..types import NodeSpec, NodeStatus
from .layout import (
    ID_FONT,
    LABEL_FONT,
    STACK,
    Engine,
    Layout,
    NodeBox,
    box_text,
    layout,
    structure_of,
    sweep_groups,
)
from .layout import fold as fold_structure

__all__ = [
    "DEFAULT_STATUS",
    "LEGEND_TEXT",
    "SEVERITY",
    "STATUS_COLOURS",
    "SVG_STYLE",
    "dag_svg",
    "dom_id",
    "group_title",
    "layout_svg",
    "node_title",
    "nodes_svg",
    "recolour",
    "status_class",
    "status_slug",
    "worst_status",
]


class _Hue(NamedTuple):
    """Where a status takes its colour: a JupyterLab variable (``fallback``: its light-theme
    value), and how much of it goes into the box fill (the rest is the page background)."""

    var: str
    fallback: str
    percent: int
    dashed: bool = False


_HUES: dict[NodeStatus, _Hue] = {
    NodeStatus.NOT_RUN: _Hue("--jp-ui-font-color2", "#757575", 16),
    NodeStatus.STALE: _Hue("--jp-warn-color1", "#f57c00", 35),
    NodeStatus.RUNNING: _Hue("--jp-brand-color1", "#1976d2", 30),
    NodeStatus.RAN: _Hue("--jp-success-color1", "#388e3c", 35),
    NodeStatus.CACHED: _Hue("--jp-info-color1", "#0097a7", 12),
    NodeStatus.HIT: _Hue("--jp-info-color1", "#0097a7", 35),
    NodeStatus.FAILED: _Hue("--jp-error-color1", "#d32f2f", 40),
    NodeStatus.SKIPPED: _Hue("--jp-ui-font-color3", "#9e9e9e", 6, dashed=True),
    NodeStatus.CANCELLED: _Hue("--jp-ui-font-color2", "#757575", 6, dashed=True),
}


def _tint(colour: str, percent: int) -> str:
    """``percent`` of ``colour`` (``#rrggbb``) mixed into white: the light theme's box fill."""
    rgb = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round((c * percent + 255 * (100 - percent)) / 100):02x}" for c in rgb)


STATUS_COLOURS: dict[NodeStatus, tuple[str, str]] = {  # status -> light theme (fill, stroke)
    status: (_tint(hue.fallback, hue.percent), hue.fallback) for status, hue in _HUES.items()
}
LEGEND_TEXT = {NodeStatus.HIT: "cache hit"}
DEFAULT_STATUS = NodeStatus.NOT_RUN
# The status a folded group shows is its members' first in this order: what needs a look first.
SEVERITY: tuple[NodeStatus, ...] = (
    NodeStatus.FAILED,
    NodeStatus.RUNNING,
    NodeStatus.STALE,
    NodeStatus.CANCELLED,
    NodeStatus.SKIPPED,
    NodeStatus.NOT_RUN,
    NodeStatus.CACHED,
    NodeStatus.RAN,
    NodeStatus.HIT,
)
_RANK = {status: rank for rank, status in enumerate(SEVERITY)}

_LEGEND_WIDTH = 130.0
_LEGEND_STEP = 16.0


def status_slug(status: str) -> str:
    """The CSS class suffix of a status: ``"not run"`` -> ``"not-run"``."""
    return re.sub(r"[^a-z0-9]+", "-", status.lower()).strip("-") or "unknown"


def status_class(status: str) -> str:
    return f"status-{status_slug(status)}"


def worst_status(statuses: Iterable[str]) -> str:
    """The status a folded sweep group shows: its members' first in ``SEVERITY`` (a failed
    variant before a running one before a stale one ...); "not run" when there are none."""
    return min(statuses, key=lambda s: _RANK.get(s, len(SEVERITY)), default=DEFAULT_STATUS)


def _var(name: str, fallback: str) -> str:
    return f"var({name},{fallback})"


_BACKGROUND = _var("--jp-layout-color1", "#fff")
_TEXT = _var("--jp-ui-font-color1", "rgba(0,0,0,.87)")
_LINE = _var("--jp-ui-font-color2", "#757575")
_BOXES = (".pp-node", ".pp-group", ".pp-legend-item")


def _status_rules() -> list[str]:
    """Fill and stroke per status class: a plain tint first, the theme-aware mix where the
    browser has ``color-mix`` (elsewhere a ``var()`` inside it would paint black)."""
    plain, mixed = [], []
    for status, hue in _HUES.items():
        selector = ",".join(f".pp-dag {box}.{status_class(status)} rect" for box in _BOXES)
        colour = _var(hue.var, hue.fallback)
        fill, _ = STATUS_COLOURS[status]
        plain.append(f"{selector}{{fill:{fill};stroke:{colour}}}")
        mix = f"color-mix(in srgb,{colour} {hue.percent}%,{_BACKGROUND})"
        mixed.append(f"{selector}{{fill:{mix}}}")
        if hue.dashed:
            plain.append(f"{selector}{{stroke-dasharray:4 3}}")
    return [*plain, f"@supports (fill:color-mix(in srgb,red 50%,blue)){{{''.join(mixed)}}}"]


# Scoped under svg.pp-dag: inline SVG styles apply to the whole page, so nothing leaks out.
# Fill/stroke presentation attributes repeat the light colours for renderers that strip
# <style>; CSS rules win over them, so the browser recolours by switching the status class.
SVG_STYLE = "".join(
    [
        ".pp-dag{font-family:var(--jp-ui-font-family,system-ui,-apple-system,'Segoe UI',"
        "Helvetica,Arial,sans-serif)}",
        f".pp-dag .pp-bg{{fill:{_BACKGROUND}}}",
        ".pp-dag .pp-node rect,.pp-dag .pp-group rect{stroke-width:1.4}",
        f".pp-dag text{{fill:{_TEXT};pointer-events:none}}",
        f".pp-dag .pp-edge path{{fill:none;stroke:{_LINE};stroke-width:1.2}}",
        f".pp-dag .pp-edge polygon{{fill:{_LINE};stroke:none}}",
        ".pp-dag .pp-legend text{font-size:10px}",
        *_status_rules(),
        ".pp-dag :is(.pp-node,.pp-group).status-running rect"
        "{stroke-width:2.4;animation:pp-pulse .8s infinite alternate}",
        "@keyframes pp-pulse{from{stroke-opacity:1}to{stroke-opacity:.3}}",
        "@media (prefers-reduced-motion:reduce){.pp-dag rect{animation:none}}",
    ]
)


def dom_id(node_id: str) -> str:
    """An injective, CSS-safe id fragment: letters, digits and ``-`` stay, every other
    character (``_`` included) becomes ``_<hex>_``; so ``b__N-512`` -> ``b_5f__5f_N-512``."""
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


def group_title(
    group_id: str,
    members: Sequence[str],
    statuses: Mapping[str, str],
    reasons: Mapping[str, str],
) -> str:
    """The tooltip of a folded sweep group: its worst status, how many variants stand where,
    and each reason its variants give (with how many give it, when not all do)."""
    own = [statuses.get(m, DEFAULT_STATUS) for m in members]
    counts = Counter(own)
    ranked = sorted(counts, key=lambda s: _RANK.get(s, len(SEVERITY)))
    lines = [
        f"{group_id} \u00d7{len(members)} (sweep variants)",
        f"status: {worst_status(own)}",
        ", ".join(f"{counts[s]} {s}" for s in ranked),
    ]
    why = Counter(reasons[m] for m in members if reasons.get(m))
    for reason, n in why.most_common(3):
        lines.append(f"why: {reason}" + ("" if n == len(members) else f" ({n} of {len(members)})"))
    if len(why) > 3:
        lines.append(f"why: {len(why) - 3} more reasons")
    return "\n".join(lines)


def _cards(box: NodeBox) -> tuple[str, tuple[float, float, float, float]]:
    """The cards stacked behind a folded group's front card (up and to the right), and the
    front card's ``(x, y, w, h)``; a node is just its front card."""
    x, y, w, h = box.x - box.w / 2, box.y - box.h / 2, box.w, box.h
    if box.count == 1:
        return "", (x, y, w, h)
    w, h = w - 2 * STACK, h - 2 * STACK
    back = "".join(
        f'<rect class="pp-card" x="{x + k * STACK:.1f}" y="{y + (2 - k) * STACK:.1f}" '
        f'width="{w:.1f}" height="{h:.1f}" rx="5"/>'
        for k in (2, 1)
    )
    return back, (x, y + 2 * STACK, w, h)


def _box_svg(box: NodeBox, status: str, title: str) -> str:
    """A node's group (``pp-node``) or a folded sweep group's (``pp-group``): title, cards,
    front card, then its one or two lines of text."""
    fill, stroke = STATUS_COLOURS.get(status, STATUS_COLOURS[DEFAULT_STATUS])
    nid, label = html.escape(box.id), html.escape(box.label)
    back, (x, y, w, h) = _cards(box)
    cx, cy = x + w / 2, y + h / 2
    two_lines = box.label and box.label != box.id
    id_y = cy + (ID_FONT * 0.35 - (6 if two_lines else 0))
    text = (
        f'<text class="pp-id" x="{cx:.1f}" y="{id_y:.1f}" text-anchor="middle" '
        f'font-size="{ID_FONT:.0f}">{html.escape(box_text(box))}</text>'
    )
    if two_lines:
        text += (
            f'<text class="pp-label" x="{cx:.1f}" y="{id_y + LABEL_FONT + 3:.1f}" '
            f'text-anchor="middle" font-size="{LABEL_FONT:.0f}">{label}</text>'
        )
    if box.count == 1:
        head = (
            f'<g id="node-{dom_id(box.id)}" class="node pp-node {status_class(status)}" '
            f'data-node="{nid}" data-label="{label}">'
        )
    else:
        head = (
            f'<g id="group-{dom_id(box.id)}" class="pp-group {status_class(status)}" '
            f'data-group="{nid}" data-count="{box.count}" data-label="{label}">'
        )
    return (
        f"{head}<title>{html.escape(title, quote=False)}</title>{back}"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="5" '
        f'fill="{fill}" stroke="{stroke}"/>{text}</g>'
    )


def _legend(lay: Layout) -> str:
    """One swatch per status, and a stacked one for folded groups when the picture has any."""
    items = []
    for i, (status, (fill, stroke)) in enumerate(STATUS_COLOURS.items()):
        dash = ' stroke-dasharray="3 2"' if _HUES[status].dashed else ""
        items.append(
            f'<g class="pp-legend-item legend-{status_slug(status)} {status_class(status)}" '
            f'transform="translate(0,{6 + _LEGEND_STEP * i:.0f})">'
            f'<rect width="14" height="11" rx="3" fill="{fill}" stroke="{stroke}"{dash}/>'
            f'<text x="20" y="9.5">{LEGEND_TEXT.get(status, status)}</text></g>'
        )
    if any(box.count > 1 for box in lay.nodes):
        fill, stroke = STATUS_COLOURS[DEFAULT_STATUS]
        cards = "".join(
            f'<rect x="{k * 2}" y="{(2 - k) * 2}" width="10" height="8" rx="2" '
            f'fill="{fill}" stroke="{stroke}"/>'
            for k in (2, 1, 0)
        )
        y = 6 + _LEGEND_STEP * len(STATUS_COLOURS)
        items.append(
            f'<g class="pp-legend-item legend-group" transform="translate(0,{y:.0f})">{cards}'
            f'<text x="20" y="9.5">\u00d7n: sweep variants</text></g>'
        )
    return (
        f'<g class="pp-legend" transform="translate({lay.width + 12:.1f},0)">{"".join(items)}</g>'
    )


@functools.lru_cache(maxsize=128)
def _static_parts(lay: Layout) -> tuple[str, str, str]:
    """Header (with the background), edges and legend: all that does not depend on statuses."""
    width = lay.width + _LEGEND_WIDTH
    height = max(lay.height, _LEGEND_STEP * (len(STATUS_COLOURS) + 1) + 10)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pp-dag" data-engine="{lay.engine}" '
        f'width="{width:.0f}pt" height="{height:.0f}pt" viewBox="0 0 {width:.1f} {height:.1f}">'
        f'<style>{SVG_STYLE}</style><rect class="pp-bg" width="100%" height="100%" fill="#fff"/>'
    )
    edges = "".join(
        f'<g class="edge pp-edge" data-src="{html.escape(e.src)}" data-dst="{html.escape(e.dst)}">'
        f'<path d="{e.d}"/><polygon points="{e.arrow}"/></g>'
        for e in lay.edges
    )
    return head, edges, _legend(lay)


def layout_svg(
    lay: Layout,
    statuses: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Colour a layout: only the node groups are written; edges and legend are memoised. A
    folded box (``count`` > 1) shows the worst status of its ``groups`` members."""
    statuses, reasons, groups = statuses or {}, reasons or {}, groups or {}
    head, edges, legend = _static_parts(lay)
    boxes = []
    for box in lay.nodes:
        if box.count == 1:
            status = statuses.get(box.id, DEFAULT_STATUS)
            title = node_title(box.id, box.label, status, reasons.get(box.id))
        else:
            members = groups.get(box.id, ())
            status = worst_status(statuses.get(m, DEFAULT_STATUS) for m in members)
            title = group_title(box.id, members, statuses, reasons)
        boxes.append(_box_svg(box, status, title))
    return f"{head}{edges}{''.join(boxes)}{legend}</svg>"


def dag_svg(
    plan_or_nodes: Any,
    statuses: Mapping[str, str] | None = None,
    reasons: Mapping[str, str] | None = None,
    *,
    engine: Engine = "auto",
    fold: Collection[str] = (),
) -> str:
    """An SVG picture of a Plan (or a list of NodeSpecs), nodes coloured by ``statuses``
    (node id -> one of ``STATUS_COLOURS``; default "not run"), ``reasons`` in tooltips. The
    sweep groups named in ``fold`` (base ids, see ``sweep_groups``; pass all of them to fold
    every sweep) are drawn as one stacked box each."""
    structure = structure_of(plan_or_nodes)
    groups = {}
    if fold:
        groups = {gid: m for gid, m in sweep_groups(plan_or_nodes).items() if gid in fold}
        structure = fold_structure(structure, groups)
    return layout_svg(layout(structure, engine), statuses, reasons, groups)


def nodes_svg(nodes: Sequence[NodeSpec], *, engine: Engine = "auto") -> str:
    """The DAG of ``nodes`` before anything ran."""
    return dag_svg(nodes, engine=engine)


def recolour(svg: str, statuses: Mapping[str, str]) -> str:
    """Switch the status class (and fallback fill/stroke) of node groups in an SVG written
    here, by string substitution; for callers holding only the SVG text. A folded sweep group
    keeps its colour: the text does not say which nodes it holds."""

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
