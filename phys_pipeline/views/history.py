"""A session's run history drawn: the cells of a row per run, a pinned run compared with the
last one (metric deltas, setup differences), a metric plotted over the runs, and two runs'
kept figures side by side. Records in, HTML or PNG bytes out; colours are left to the
stylesheet of the view that shows them (classes ``pp-*``)."""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..history import Change, RunRecord
from .plots import figure_png

__all__ = [
    "MetricDelta",
    "changes_html",
    "comparison_html",
    "counts_html",
    "figures_html",
    "format_value",
    "metric_deltas",
    "metric_history_png",
    "metric_series",
    "plottable_metrics",
    "seconds_text",
    "started_html",
]

Figures = Mapping[str, tuple[str, bytes]]  # name -> (MIME type, bytes), as a cache keeps them
MISSING = "\N{EM DASH}"
_CHANGED = ' class="pp-changed"'


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (text, booleans, absent, NaN)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def format_value(value: Any) -> str:
    """A metric or config value, short: floats to 6 significant digits, absent as a dash."""
    if value is None:
        return MISSING
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def seconds_text(seconds: float) -> str:
    """A run's duration: milliseconds below a second (a run of cache hits takes a few)."""
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.2f} s"


def started_html(record: RunRecord) -> str:
    """The run's start as a local clock time, the full date in its tooltip."""
    local = time.localtime(record.started)
    full = time.strftime("%Y-%m-%d %H:%M:%S", local)
    return f'<span title="{full}">{time.strftime("%H:%M:%S", local)}</span>'


def changes_html(record: RunRecord, *, limit: int = 3) -> str:
    """What changed since the run before, one change a line, at most ``limit`` lines (all of
    them in the tooltip)."""
    if record.number == 1 and not record.changes:
        return '<span class="pp-muted">first run</span>'
    if not record.changes:
        return '<span class="pp-muted">no change</span>'
    lines = [html.escape(str(c)) for c in record.changes]
    shown = [f'<span class="pp-change">{_arrowed(line)}</span>' for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f'<span class="pp-muted">+{len(lines) - limit} more</span>')
    return f'<span title="{"&#10;".join(lines)}">{"".join(shown)}</span>'


def _arrowed(change: str) -> str:
    """A change's text with its " -> " as one arrow, so a narrow column never breaks a line
    between the arrow's two halves."""
    return change.replace(" -&gt; ", " \N{RIGHTWARDS ARROW} ")


def counts_html(record: RunRecord) -> str:
    """How many nodes ran, were loaded (hit), failed, were skipped or cancelled."""
    parts = [f"{len(record.ran)} ran", f"{len(record.hits)} hit"]
    trouble = [
        f"{len(nodes)} {word}"
        for nodes, word in (
            (record.failed, "failed"),
            (record.skipped, "skipped"),
            (record.cancelled, "cancelled"),
        )
        if nodes
    ]
    shown = ", ".join(parts)
    if trouble:
        shown += f', <span class="pp-error">{", ".join(trouble)}</span>'
    return shown


@dataclass(frozen=True, slots=True)
class MetricDelta:
    """One metric in two runs: ``delta`` is current - pinned, ``relative`` that over
    ``|pinned|`` (None: not two numbers, or a relative change from 0)."""

    key: str
    pinned: Any
    current: Any

    @property
    def delta(self) -> float | None:
        a, b = _number(self.pinned), _number(self.current)
        return None if a is None or b is None else b - a

    @property
    def relative(self) -> float | None:
        a, delta = _number(self.pinned), self.delta
        return None if a is None or delta is None or a == 0 else delta / abs(a)

    @property
    def changed(self) -> bool:
        return self.pinned != self.current


def metric_deltas(pinned: RunRecord, current: RunRecord) -> list[MetricDelta]:
    """Every metric of either run (the current run's order first), with its change."""
    keys = dict.fromkeys([*current.metrics, *pinned.metrics])
    return [MetricDelta(k, pinned.metrics.get(k), current.metrics.get(k)) for k in keys]


def _signed(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def comparison_html(pinned: RunRecord, current: RunRecord) -> str:
    """The pinned run beside the last one: each metric's two values and its change, then the
    setup values (config fields, policy entries, stage, code, state) that differ."""
    head = (
        f"<b>run {pinned.number}</b> (pinned) against <b>run {current.number}</b> (last)"
        if pinned is not current
        else f"<b>run {pinned.number}</b> (pinned) is the last run: edit and run to compare"
    )
    rows = "".join(
        f"<tr{_CHANGED if d.changed else ''}><td>{html.escape(d.key)}</td>"
        f"<td>{html.escape(format_value(d.pinned))}</td>"
        f"<td>{html.escape(format_value(d.current))}</td>"
        f"<td>{_signed(d.delta, '+.4g')}</td><td>{_signed(d.relative, '+.2%')}</td></tr>"
        for d in metric_deltas(pinned, current)
    )
    metrics = (
        '<table class="pp-comparison"><thead><tr><th>metric</th>'
        f"<th>run {pinned.number}</th><th>run {current.number}</th>"
        f"<th>change</th><th>relative</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else '<p class="pp-muted">neither run has metrics</p>'
    )
    return (
        f'<div class="pp-comparison-head">{head}</div>'
        f'<div class="pp-scroll">{metrics}</div>{_setup_html(current.changes_since(pinned))}'
    )


def _setup_html(changes: Sequence[Change]) -> str:
    if not changes:
        return '<p class="pp-muted">same configs and policy</p>'
    items = "".join(f"<li>{_arrowed(html.escape(str(c)))}</li>" for c in changes)
    head = "setup (pinned \N{RIGHTWARDS ARROW} last):"
    return f'<div class="pp-setup-diff">{head}<ul>{items}</ul></div>'


def plottable_metrics(records: Iterable[RunRecord]) -> list[str]:
    """The metrics that are a number in some run, in the order they first came."""
    seen = (k for r in records for k, v in r.metrics.items() if _number(v) is not None)
    return list(dict.fromkeys(seen))


def metric_series(records: Iterable[RunRecord], key: str) -> list[tuple[int, float]]:
    """``(run number, value)`` of the runs where metric ``key`` is a number."""
    points = [(r.number, _number(r.metrics.get(key))) for r in records]
    return [(n, y) for n, y in points if y is not None]


def metric_history_png(
    records: Iterable[RunRecord], key: str, *, pinned: int | None = None
) -> bytes | None:
    """Metric ``key`` against the run number, the pinned run marked, as PNG bytes (drawn
    dark on white: shown on a light card of its own); None when no run has it as a number."""
    points = metric_series(records, key)
    if not points:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(4.4, 2.4), layout="constrained")
    axes = figure.add_subplot()
    runs, values = zip(*points, strict=True)
    axes.plot(runs, values, marker="o", markersize=4, color="#1f77b4")
    marked = [(n, y) for n, y in points if n == pinned]
    if marked:
        axes.axvline(marked[0][0], color="#d62728", linewidth=1, linestyle=":")
        axes.plot(
            *marked[0], marker="*", markersize=13, color="#d62728", label=f"run {pinned} (pinned)"
        )
        axes.legend(loc="best", fontsize=8, frameon=False)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("run")
    axes.set_title(key, fontsize=9)
    axes.tick_params(labelsize=8)
    return figure_png(figure)


def _figure_card(caption: str, figure: tuple[str, bytes] | None) -> str:
    if figure is None:
        body = '<div class="pp-muted pp-figure-missing">not kept</div>'
    else:
        mime, data = figure
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        body = f'<img src="{url}" alt="{html.escape(caption)}">'
    return (
        f'<figure class="pp-history-figure"><figcaption>{html.escape(caption)}</figcaption>'
        f'<div class="pp-figure-card">{body}</div></figure>'
    )


def figures_html(
    figures: Mapping[str, tuple[Figures | None, Figures | None]], pinned: int, current: int
) -> str:
    """Each node's figures kept for the pinned run beside the current run's, one pair per
    figure name; ``figures`` maps node id to (pinned run's, current run's), None: none kept.
    A short note where no figure is kept for either run."""
    blocks, bare = [], []
    for node_id, (old, new) in figures.items():
        names = dict.fromkeys([*(old or {}), *(new or {})])
        if not names:
            bare.append(node_id)
            continue
        for name in names:
            pair = _figure_card(f"run {pinned} (pinned)", (old or {}).get(name)) + _figure_card(
                f"run {current} (last)", (new or {}).get(name)
            )
            blocks.append(
                f'<div class="pp-figure-pair-head">{html.escape(f"{node_id}.{name}")}</div>'
                f'<div class="pp-figure-pair">{pair}</div>'
            )
    if bare:
        nodes = ", ".join(html.escape(n) for n in bare)
        blocks.append(
            f'<p class="pp-muted">no figures kept for {nodes} in run {pinned} or run {current} '
            "(the artifact view keeps a node's figures when it draws them)</p>"
        )
    return "".join(blocks)
