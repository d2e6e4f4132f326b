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
from ..render import figure_png, metrics_html, table_html
from ..session import LiveSession
from ._subscribe import subscribe

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


class ArtifactView(w.VBox):
    """Artifacts of ``node_id`` (None: every node, up to ``max_items``) from the session's
    last run, replaced after each run. ``output`` holds the figures, ``metrics`` the table,
    ``sweep`` the sweep table (when the DAG has swept nodes)."""

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
        self.title = w.HTML("")
        self.output = w.Output()
        self.output.add_class("pp-artifacts")
        self.metrics = w.HTML("")
        self.metrics.add_class("pp-metrics-panel")
        self.sweep = w.HTML("")
        self.sweep.add_class("pp-sweep-table")
        super().__init__(**kwargs)
        self.add_class("pp-artifact-view")
        self.children = [self.title, self.output, self.metrics, self.sweep]
        self.refresh()
        self._unsubscribe = subscribe(session, self._on_session)

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
            return
        self.title.value = f"<b>artifacts of {html.escape(where)}</b>"
        node_ids = [self.node_id] if self.node_id else result.execution_order
        self.output.outputs = tuple(self._outputs(result, node_ids))
        self.metrics.value = metrics_html(
            {
                f"{nid}.{key}": value
                for nid in node_ids
                if nid in result.results
                for key, value in result.results[nid].metrics.items()
            }
        )
        self.sweep.value = self._sweep_html(result)

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

    def _sweep_html(self, result: DagRunResult) -> str:
        specs = result.plan.specs
        if not any("sweep" in spec.metadata for spec in specs.values()):
            return ""
        from ..sweep import sweep_table

        base = None
        if self.node_id and self.node_id in specs:
            base = specs[self.node_id].metadata.get("sweep", {}).get("base_id")
        return "<b>sweep</b>" + table_html(sweep_table(result, base))

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event != "run":
            return
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a listener must not break session.run()
            self.title.value = f"<b>artifacts unavailable</b>: {html.escape(repr(exc))}"

    def close(self) -> None:
        self._unsubscribe()
        super().close()
