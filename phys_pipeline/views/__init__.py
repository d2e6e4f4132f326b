"""The view layer's static pictures: where a DAG's boxes go (``layout``), SVG coloured by
status (``svg``), HTML of results (``html``) and plots as PNG (``plots``). The core never
imports this package; importing it registers the reprs of plans, node lists and run results
with ``phys_pipeline.display`` (which loads it, as an installed view plugin, on first display).
"""

from __future__ import annotations

from .. import display
from ..dag import Plan
from ..executor import DagRunResult
from ..sweep import NodeList
from .html import failures_html, metrics_html, result_html, run_statuses, table_html
from .layout import DrawnNode, Engine, Layout, Structure, fold, layout, structure_of, sweep_groups
from .plots import figure_png, sweep_png, sweep_series
from .svg import (
    DEFAULT_STATUS,
    LEGEND_TEXT,
    SEVERITY,
    STATUS_COLOURS,
    dag_svg,
    dom_id,
    group_title,
    layout_svg,
    node_title,
    nodes_svg,
    recolour,
    status_class,
    status_slug,
    worst_status,
)

__all__ = [
    "DEFAULT_STATUS",
    "LEGEND_TEXT",
    "SEVERITY",
    "STATUS_COLOURS",
    "DrawnNode",
    "Engine",
    "Layout",
    "Structure",
    "dag_svg",
    "dom_id",
    "failures_html",
    "figure_png",
    "fold",
    "group_title",
    "layout",
    "layout_svg",
    "metrics_html",
    "node_title",
    "nodes_svg",
    "recolour",
    "result_html",
    "run_statuses",
    "status_class",
    "status_slug",
    "structure_of",
    "sweep_groups",
    "sweep_png",
    "sweep_series",
    "table_html",
    "worst_status",
]

display.register(Plan, display.SVG, dag_svg)
display.register(NodeList, display.SVG, nodes_svg)
display.register(DagRunResult, display.HTML, result_html)
