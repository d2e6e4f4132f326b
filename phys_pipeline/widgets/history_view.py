"""HistoryView: the session's runs, newest first, to compare and go back to.

One row per run: its number and time, a Pin toggle and a Restore button, what changed since
the run before, what its nodes did, how long it took and the watched metrics. With a run
pinned, the view compares it with the last run (metric deltas, setup differences), marks it on
the plot of a metric over the runs, and shows the figures the cache keeps for both runs side by
side. Figures are kept by the artifact view when it draws them: made after it, this view hears
a run after the artifact view has kept the run's figures.

Rows are made once per run and kept (a long history is capped at ``max_rows``); everything
else is redrawn on each run. The view follows the runs while it is ``shown`` (in the app's
History tab, when that tab is picked): hidden, it notes that it is out of date and catches up
when shown, so that a run seen in the Results tab does not wait for its rows (a dozen new
widgets and thirty messages a run, which the run's figures would share the kernel, the server
and the page with: 10 ms of the edit → plot benchmark) nor for its metric plot (matplotlib,
most of the view's time). Colours come from the JupyterLab theme (``history_view.css``).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

import ipywidgets as w
import traitlets

from ..dag import Plan
from ..errors import CacheError
from ..history import RunHistory, RunRecord
from ..session import LiveSession
from ..views.history import (
    Figures,
    changes_html,
    comparison_html,
    counts_html,
    figures_html,
    format_value,
    metric_history_png,
    plottable_metrics,
    seconds_text,
    started_html,
)
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "HistoryView",
]

_CSS = (Path(__file__).parent / "history_view.css").read_text(encoding="utf-8")
# Pin and Restore come right after the run's number and time: a row with many metrics
# scrolls sideways in its box, and they stay in view at its start.
_HEADERS = ("run", "time", "", "", "changed since the run before", "nodes", "took")


def _sinks(plan: Plan) -> list[str]:
    """The nodes no other node reads: what a DAG computes in the end."""
    return [nid for nid in plan.order if plan.graph.out_degree(nid) == 0]


def _close_tree(widget: w.Widget) -> None:
    """Close a widget and every widget in it (closing a box leaves its children open)."""
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def _metric_header(key: str) -> str:
    node, _, name = key.rpartition(".")
    return f"{html.escape(node)}<br>{html.escape(name)}" if node else html.escape(key)


def _cell(value: str, *classes: str) -> w.HTML:
    cell = w.HTML(value)
    for css_class in classes:
        cell.add_class(css_class)
    return cell


class _Row:
    """One run in the table: its cells, its Pin toggle and its Restore button."""

    def __init__(
        self,
        record: RunRecord,
        metrics: list[str],
        on_pin: Callable[[int, bool], None],
        on_restore: Callable[[int], None],
    ) -> None:
        self.number = record.number
        self.record = record
        self.pin_button = w.ToggleButton(
            value=False,
            description="pin",
            icon="thumb-tack",
            tooltip=f"compare run {record.number} with the last run",
            layout=w.Layout(width="auto"),
        )
        self.restore_button = w.Button(
            description="restore",
            icon="undo",
            tooltip=f"put run {record.number}'s configs and policy back "
            "(the next run loads them from the cache)",
            layout=w.Layout(width="auto"),
        )
        self.cells: list[w.Widget] = [
            _cell(f"{record.number}", "pp-run-number"),
            _cell(started_html(record)),
            self.pin_button,
            self.restore_button,
            _cell(changes_html(record), "pp-run-changes"),
            _cell(counts_html(record)),
            _cell(seconds_text(record.duration_s)),
            *(_cell(html.escape(format_value(record.metrics.get(k)))) for k in metrics),
        ]
        self.pin_button.observe(lambda change: on_pin(self.number, change["new"]), "value")
        self.restore_button.on_click(lambda _: on_restore(self.number))

    def mark(self, *, pinned: bool, last: bool) -> None:
        """Highlight the pinned run and the last one; the toggle follows ``pinned``."""
        self.pin_button.value = pinned
        self.pin_button.description = "pinned" if pinned else "pin"
        for cell in self.cells:
            for css_class, on in (("pp-pinned", pinned), ("pp-last", last)):
                if on:
                    cell.add_class(css_class)
                else:
                    cell.remove_class(css_class)

    def close(self) -> None:
        for cell in self.cells:
            cell.close()


class HistoryView(SessionView, w.VBox):
    """The runs of ``session.history``, newest first (at most ``max_rows``), refreshed after
    each run. ``rows`` are the rows shown (``number``, ``record``, ``cells``, ``pin_button``,
    ``restore_button``); ``watched`` the metrics they show (default: every metric of the DAG's
    sink nodes). ``pinned`` (a run number or None) is the run compared with the last one in
    ``comparison``; ``metric_picker`` chooses the metric ``metric_plot`` draws over the runs
    (both in ``metric_box``); ``figures`` shows the pinned and the last run's kept figures of
    ``figure_nodes`` (default: the sinks). ``message`` says what Restore did, or why it was
    refused. While ``shown`` is False (a tab not picked) runs are not drawn, and the metric
    plot is hidden and not redrawn; the view catches up when ``shown`` turns True."""

    pinned = traitlets.Int(None, allow_none=True, help="the run compared with the last one")
    shown = traitlets.Bool(True, help="on screen: runs are drawn only then")

    def __init__(
        self,
        session: LiveSession,
        *,
        watched: Iterable[str] | None = None,
        figure_nodes: Iterable[str] | None = None,
        max_rows: int = 50,
        **kwargs: Any,
    ) -> None:
        self.session = session
        self.max_rows = max_rows
        self.rows: list[_Row] = []
        self._metrics: list[str] | None = None  # the columns the rows were made with
        self._headers: list[w.HTML] = []
        self._choosing = False  # the metric picker's options are being replaced
        self._plot_due = False  # the metric plot is out of date, to draw when shown
        self._runs_due = False  # runs came while hidden: everything is drawn again when shown
        self._watched = None if watched is None else list(dict.fromkeys(watched))
        self._lock = threading.RLock()  # runs refresh from their thread, clicks from the UI's
        with closed_on_failure(self):
            self._sinks = _sinks(session.current_plan)
            self.figure_nodes = self._sinks if figure_nodes is None else list(figure_nodes)
            for nid in self.figure_nodes:
                session.node(nid)  # an unknown id raises UnknownNodeError naming it
            style = w.HTML(f"<style>{_CSS}</style>", layout=w.Layout(display="none"))
            self.title = w.HTML("")
            self.message = w.HTML("")
            self.message.add_class("pp-history-message")
            self.table = w.GridBox()
            self.table.add_class("pp-history-table")
            self.older = w.HTML("")
            self.older.add_class("pp-muted")
            scroll = w.Box([self.table], layout=w.Layout(overflow="auto", max_width="100%"))
            scroll.add_class("pp-history-scroll")
            self.comparison = w.HTML("")
            self.comparison.add_class("pp-comparison-box")
            self.metric_picker = w.Dropdown(description="metric", options=[])
            self.metric_plot = w.Image(format="png", layout=w.Layout(display="none"))
            card = w.Box([self.metric_plot])  # light, as the plot: the picker stays outside
            card.add_class("pp-plot-card")
            self.metric_box = w.VBox([self.metric_picker, card])
            self.figures = w.HTML("")
            self.figures.add_class("pp-history-figures")
            plots = w.HBox([self.metric_box, self.figures])
            plots.add_class("pp-plots")
            super().__init__(
                [style, self.title, self.message, scroll, self.older, self.comparison, plots],
                **kwargs,
            )
            self.layout.max_width = "100%"
            self.layout.overflow = "auto"
            self.add_class("pp-history-view")
            self.metric_picker.observe(self._metric_picked, "value")
            self.refresh()
            self._follow(session)

    # --- what is shown ------------------------------------------------------------------------

    @property
    def history(self) -> RunHistory:
        return self.session.history

    @property
    def watched(self) -> list[str]:
        """The metrics the rows show: as set, or every metric of the DAG's sinks so far."""
        if self._watched is not None:
            return list(self._watched)
        prefixes = tuple(f"{nid}." for nid in self._sinks)
        seen = (key for record in self.history for key in record.metrics)
        return [key for key in dict.fromkeys(seen) if key.startswith(prefixes)]

    @watched.setter
    def watched(self, metrics: Iterable[str] | None) -> None:
        """Metric keys (``"<node>.<key>"``) to show in the rows; None: the sinks' metrics."""
        self._watched = None if metrics is None else list(dict.fromkeys(metrics))
        self.refresh()

    @traitlets.validate("pinned")
    def _valid_pin(self, proposal: dict[str, Any]) -> int | None:
        number = proposal["value"]
        if number is not None:
            try:
                self.history.run(number)
            except KeyError as exc:
                raise traitlets.TraitError(str(exc.args[0])) from None
        return number

    def refresh(self) -> None:
        """Redraw from ``session.history`` (also after assigning a loaded one to it)."""
        with self._lock:
            records = list(self.history)
            if self.pinned is not None and self.pinned not in {r.number for r in records}:
                self.pinned = None  # a history assigned since has no such run
            self._show_rows(records)
            self._show_comparison()
            self._show_picker()
            self._show_plot()

    def _show_rows(self, records: list[RunRecord]) -> None:
        count = len(records)
        self.title.value = (
            f"<b>run history</b> ({count} run{'s' * (count != 1)})"
            if count
            else "<b>run history</b> <i>no runs yet: each run adds a row here</i>"
        )
        metrics = self.watched
        if metrics != self._metrics:  # other columns: the header and every row made again
            self._drop_rows()
            self._metrics = metrics
            self._headers = [
                _cell(h, "pp-history-head")
                for h in [*_HEADERS, *(_metric_header(k) for k in metrics)]
            ]
        shown = records[::-1][: self.max_rows]
        made = {(row.number, row.record.run_id): row for row in self.rows}
        self.rows = [
            made.pop((r.number, r.run_id), None)
            or _Row(r, metrics, self._pin_toggled, self.restore)
            for r in shown
        ]
        for row in made.values():  # no longer listed
            row.close()
        hidden = count - len(shown)
        self.older.value = (
            f"{hidden} older run(s) not listed: session.history has them all" if hidden else ""
        )
        self._mark_rows()
        self.table.children = [*self._headers, *(cell for row in self.rows for cell in row.cells)]
        self.table.layout.grid_template_columns = (
            f"repeat(4, max-content) minmax(12em, 28em) repeat({len(metrics) + 2}, max-content)"
        )
        self.table.layout.display = None if self.rows else "none"

    def _mark_rows(self) -> None:
        last = self.history[-1].number if len(self.history) else None
        for row in self.rows:
            row.mark(pinned=row.number == self.pinned, last=row.number == last)

    def _drop_rows(self) -> None:
        for widget in [*self.rows, *self._headers]:
            widget.close()
        self.rows = []

    def _show_comparison(self) -> None:
        """The pinned run against the last one, and their kept figures side by side."""
        if self.pinned is None:
            self.comparison.value = (
                '<span class="pp-muted">pin a run to compare it with the last run</span>'
                if len(self.history) > 1
                else ""
            )
            self.comparison.layout.display = None if len(self.history) > 1 else "none"
            self.figures.value = ""
            self.figures.layout.display = "none"
            return
        pinned, last = self.history.run(self.pinned), self.history[-1]
        self.comparison.value = comparison_html(pinned, last)
        self.comparison.layout.display = None
        kept = {
            nid: (self._kept_figures(pinned, nid), self._kept_figures(last, nid))
            for nid in self.figure_nodes
        }
        self.figures.value = figures_html(kept, pinned.number, last.number)
        self.figures.layout.display = None if self.figures.value else "none"

    def _kept_figures(self, record: RunRecord, node_id: str) -> Figures | None:
        """The figures the cache keeps for ``node_id`` as it was in ``record``'s run."""
        node = record.nodes.get(node_id)
        if node is None or node.status is None:
            return None
        with suppress(CacheError):  # a strict cache's failure: shown as not kept
            return self.session.executor.cache.figures(node.cache_key)
        return None

    def _show_picker(self) -> None:
        """The metrics to plot: those that are numbers, watched ones first."""
        numeric = plottable_metrics(self.history)
        options = [*(k for k in self.watched if k in numeric), *numeric]
        options = list(dict.fromkeys(options))
        if list(self.metric_picker.options) != options:
            chosen = self.metric_picker.value
            self._choosing = True  # the plot is drawn once, by refresh, not on each step
            try:
                self.metric_picker.options = options
                self.metric_picker.value = (
                    chosen if chosen in options else next(iter(options), None)
                )
            finally:
                self._choosing = False
        self.metric_box.layout.display = None if options else "none"

    def _metric_picked(self, _: dict[str, Any]) -> None:
        if not self._choosing:
            with self._lock:
                self._show_plot()

    def _show_plot(self) -> None:
        if not self.shown:  # hidden, not drawn: it would show another history when shown
            self._plot_due = True
            self.metric_plot.layout.display = "none"
            return
        self._plot_due = False
        key = self.metric_picker.value
        png = metric_history_png(self.history, key, pinned=self.pinned) if key else None
        self.metric_plot.value = png or b""
        self.metric_plot.layout.display = None if png else "none"

    @traitlets.observe("shown")
    def _shown_changed(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            return
        with self._lock:
            if self._runs_due:
                self._follow_run()
            elif self._plot_due:
                self._show_plot()

    # --- pin and restore ----------------------------------------------------------------------

    def _pin_toggled(self, number: int, on: bool) -> None:
        if on:
            self.pinned = number
        elif self.pinned == number:
            self.pinned = None

    @traitlets.observe("pinned")
    def _show_pinned(self, _: dict[str, Any]) -> None:
        with self._lock:
            self._mark_rows()
            self._show_comparison()
            self._show_plot()

    def restore(self, number: int) -> None:
        """The Restore button: put run ``number``'s configs and policy back in the session.
        What happened is shown in ``message``; a refusal is shown there, never raised."""
        try:
            stale = self.session.restore(number)
        except Exception as exc:  # noqa: BLE001 - a button callback: show, never raise
            said = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # unquoted
            self.message.value = (
                f'<span class="pp-error">cannot restore run {number}: '
                f"{html.escape(type(exc).__name__)}: {html.escape(str(said))}</span>"
            )
            return
        after = (
            "the next run loads every node from the cache"
            if not stale
            else f"the next run computes {len(stale)} node(s): {html.escape(', '.join(stale))}"
        )
        self.message.value = f"restored run {number}'s configs and policy: {after}"

    # --- following the session ----------------------------------------------------------------

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "edit":  # what a restore said the next run does is no longer known
            self.message.value = ""
            return
        if event != "run":
            return
        with self._lock:
            if self.shown:
                self._follow_run()
            else:  # drawn when shown; the plot of fewer runs is hidden meanwhile
                self._runs_due = True
                self._show_plot()

    def _follow_run(self) -> None:
        """Redraw for the runs since the last one drawn (lock held)."""
        self._runs_due = False
        try:
            self.message.value = ""
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a listener must not break session.run()
            self.message.value = (
                f'<span class="pp-error">history unavailable: {html.escape(repr(exc))}</span>'
            )

    def close(self) -> None:
        for child in self.children:  # the rows' cells are in the table
            _close_tree(child)
        super().close()
