"""HTML snippets of results: a run at a glance, metrics, failures, tables."""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping
from typing import Any

from .layout import Engine
from .svg import dag_svg

__all__ = ["failures_html", "metrics_html", "result_html", "run_statuses", "table_html"]


def run_statuses(result: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Statuses and reasons of a DagRunResult's nodes (nodes outside the run: "not run")."""
    statuses = {nid: run.status for nid, run in result.runs.items()}
    reasons = {nid: run.error or run.reason for nid, run in result.runs.items()}
    return statuses, reasons


def metrics_html(
    metrics: Mapping[Any, Any], *, css_class: str = "pp-metrics", stale: Collection[str] = ()
) -> str:
    """A table of metrics, one row per metric, keyed by ``(node, metric)`` or namespaced
    (``"node.key"``); rows of the nodes in ``stale`` have the class ``pp-stale`` (views grey
    them). Each header is aligned as its column."""
    if not metrics:
        return f'<p class="{css_class} pp-empty">no metrics</p>'
    rows = []
    for key, value in metrics.items():
        if isinstance(key, tuple):
            node, name = key
        else:
            node, _, name = key.rpartition(".") if "." in key else ("", "", key)
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        marked = ' class="pp-stale"' if node in stale else ""
        rows.append(
            f"<tr{marked}><td>{html.escape(node)}</td><td>{html.escape(name)}</td>"
            f'<td style="text-align:right">{html.escape(shown)}</td></tr>'
        )
    return (
        f'<table class="{css_class}"><thead><tr><th style="text-align:left">node</th>'
        '<th style="text-align:left">metric</th><th style="text-align:right">value</th>'
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
