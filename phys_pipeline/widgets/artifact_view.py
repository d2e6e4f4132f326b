"""ArtifactView: the last run's figures, metrics and sweep table, for one node or all.

Output is written as ready-made display-data dicts (``Output.outputs``), not captured with
``with output:``, because auto-runs refresh it from a timer thread where capturing does not
work; figures are rendered to PNG and closed, so inline backends do not show them again.
"""

from __future__ import annotations

import base64
import html
from typing import Any

import ipywidgets as w

from ..executor import DagRunResult
from ..record import resolve_artifact
from ..session import LiveSession
from ..types import NodeStatus
from ..views import figure_png, metrics_html, sweep_png, table_html
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "ArtifactView",
    "PNG_MAGIC",
    "display_data",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def display_data(value: Any) -> dict[str, Any]:
    """One artifact value as an nbformat display-data output: figures and PNG bytes as
    images, everything else as text."""
    if hasattr(value, "savefig"):
        value = figure_png(value)
    if isinstance(value, bytes) and value.startswith(PNG_MAGIC):
        data = {"image/png": base64.b64encode(value).decode("ascii"), "text/plain": "<image>"}
    elif hasattr(value, "_repr_html_"):
        data = {"text/html": value._repr_html_(), "text/plain": repr(value)}
    else:
        data = {"text/plain": value if isinstance(value, str) else repr(value)}
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _caption(text: str) -> dict[str, Any]:
    return {
        "output_type": "display_data",
        "data": {"text/html": f"<b>{html.escape(text)}</b>", "text/plain": text},
        "metadata": {},
    }


def _cached_without_plots(result: DagRunResult, node_ids: list[str]) -> list[str]:
    """Nodes of ``node_ids`` that hit the cache and came back without artifacts."""
    return [
        nid
        for nid in node_ids
        if nid in result.results
        and result.runs[nid].status is NodeStatus.HIT
        and not result.results[nid].artifacts
    ]


class ArtifactView(SessionView, w.VBox):
    """Artifacts of ``node_id`` (None: every node, up to ``max_items``) from the session's
    last run, replaced after each run. ``output`` holds the figures, ``metrics`` the table,
    ``sweep`` the sweep table (when the DAG has swept nodes). ``note`` says why plots are
    missing after cache hits; ``rerun_button`` (shown then) recomputes the selected node."""

    def __init__(
        self,
        session: LiveSession,
        node_id: str | None = None,
        *,
        max_items: int = 24,
        **kwargs: Any,
    ) -> None:
        self.session = session
        self.node_id = node_id
        self.max_items = max_items
        with closed_on_failure(self):
            self.title = w.HTML("")
            self.output = w.Output()
            self.output.add_class("pp-artifacts")
            self.metrics = w.HTML("")
            self.metrics.add_class("pp-metrics-panel")
            self.sweep = w.HTML("")
            self.sweep.add_class("pp-sweep-table")
            self.sweep_plot = w.Image(format="png", layout=w.Layout(display="none"))
            self.sweep_plot.add_class("pp-sweep-plot")
            self.note = w.HTML("")
            self.note.add_class("pp-artifact-note")
            self.rerun_button = w.Button(
                description="Rerun node", icon="refresh", layout=w.Layout(display="none")
            )
            self.rerun_button.add_class("pp-rerun-button")
            self.rerun_button.on_click(lambda _: self._rerun())
            super().__init__(**kwargs)
            self.add_class("pp-artifact-view")
            self.children = [
                self.title,
                w.HBox([self.note, self.rerun_button]),
                self.output,
                self.metrics,
                self.sweep,
                self.sweep_plot,
            ]
            self.refresh()
            self._follow(session)

    def show(self, node_id: str | None) -> None:
        """Switch to one node's artifacts (None or "": all nodes)."""
        self.node_id = node_id or None
        self.refresh()

    def refresh(self) -> None:
        result = self.session.last_result
        where = f"node {self.node_id!r}" if self.node_id else "all nodes"
        if result is None:
            self.title.value = f"<i>artifacts of {html.escape(where)}: run the DAG first</i>"
            self.output.outputs = ()
            self.metrics.value = self.sweep.value = ""
            self._explain([])
            self._show_sweep_plot(None)
            return
        self.title.value = f"<b>artifacts of {html.escape(where)}</b>"
        node_ids = [self.node_id] if self.node_id else result.execution_order
        self.output.outputs = tuple(self._outputs(result, node_ids))
        shown_any = any(nid in result.results and result.results[nid].artifacts for nid in node_ids)
        self._explain([] if shown_any else _cached_without_plots(result, node_ids))
        self.metrics.value = metrics_html(
            {
                f"{nid}.{key}": value
                for nid in node_ids
                if nid in result.results
                for key, value in result.results[nid].metrics.items()
            }
        )
        base = self._sweep_base(result)
        self.sweep.value = self._sweep_html(result, base)
        self._show_sweep_plot(sweep_png(result, base) if base != "" else None)

    def _explain(self, cached: list[str]) -> None:
        """Say why the area is empty when the shown nodes came from the cache without their
        plots, and offer to rerun the selected one."""
        self.rerun_button.layout.display = "none"
        if not cached:
            self.note.value = ""
        elif self.node_id:
            self.note.value = (
                "<i>loaded from the cache; plots are not cached: rerun this node to draw them</i>"
            )
            self.rerun_button.description = f"Rerun {self.node_id}"
            self.rerun_button.layout.display = None
        else:
            self.note.value = (
                f"<i>{len(cached)} node(s) loaded from the cache; plots are not cached: "
                "select a node and rerun it to draw its plots</i>"
            )

    def _rerun(self) -> None:
        """Button callback: recompute the selected node; a failure is shown, never raised."""
        if not self.node_id:
            return
        try:
            self.session.rerun(self.node_id)  # its "run" event refreshes this view
        except Exception as exc:  # noqa: BLE001 - a button callback: show, never raise
            self.note.value = (
                f"<span style='color:#b91c1c'>rerun failed: {html.escape(type(exc).__name__)}: "
                f"{html.escape(str(exc))}</span>"
            )

    def _outputs(self, result: DagRunResult, node_ids: list[str]) -> list[dict[str, Any]]:
        outputs: list[dict[str, Any]] = []
        items = [
            (nid, key, artifact)
            for nid in node_ids
            if nid in result.results
            for key, artifact in result.results[nid].artifacts.items()
        ]
        for nid, key, artifact in items[: self.max_items]:
            outputs.append(_caption(f"{nid}.{key}"))
            try:
                outputs.append(display_data(resolve_artifact(artifact)))
            except Exception as exc:  # noqa: BLE001 - one broken plot must not hide the rest
                outputs.append(display_data(f"artifact failed: {type(exc).__name__}: {exc}"))
        if len(items) > self.max_items:
            outputs.append(
                display_data(f"{len(items) - self.max_items} more; select a node to see its own")
            )
        if self.node_id and self.node_id not in result.results:
            run = result.runs.get(self.node_id)
            why = f"{run.status}: {run.error or run.reason}" if run else "not in the last run"
            outputs.append(display_data(f"node {self.node_id!r} has no result ({why})"))
        return outputs

    def _show_sweep_plot(self, png: bytes | None) -> None:
        self.sweep_plot.value = png or b""
        self.sweep_plot.layout.display = None if png else "none"

    def _sweep_base(self, result: DagRunResult) -> str | None:
        """The base node whose variants to show (None: all); "" when the DAG has no sweep."""
        specs = result.plan.specs
        if not any(spec.sweep is not None for spec in specs.values()):
            return ""
        if self.node_id and self.node_id in specs:
            sweep = specs[self.node_id].sweep
            return sweep.base_id if sweep else None
        return None

    def _sweep_html(self, result: DagRunResult, base: str | None) -> str:
        if base == "":
            return ""
        from ..sweep import sweep_table

        return "<b>sweep</b>" + table_html(sweep_table(result, base))

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event != "run":
            return
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a listener must not break session.run()
            self.title.value = f"<b>artifacts unavailable</b>: {html.escape(repr(exc))}"
