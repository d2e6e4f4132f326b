"""DagView: the DAG picture as an anywidget; Python sends the layout once, then statuses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..session import LiveSession
from ..views import Engine, Structure, dag_svg, structure_of
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "DagView",
]

_HERE = Path(__file__).parent


class DagView(SessionView, anywidget.AnyWidget):
    """The DAG as SVG. ``svg`` changes only when the graph's structure does; ``statuses`` and
    ``reasons`` (node id -> text) recolour nodes and rewrite tooltips in the browser by a CSS
    class switch. Clicking a node sets ``selected`` (two-way: set it from Python too).

    Give it a Plan or NodeSpecs to draw once, or a LiveSession (``DagView(session)``, or
    ``DagView.from_session``) to follow it: redrawn after edits and runs, recoloured on every
    status change."""

    _esm = _HERE / "dag_view.js"
    _css = _HERE / "dag_view.css"

    svg = traitlets.Unicode("").tag(sync=True)
    statuses = traitlets.Dict(value_trait=traitlets.Unicode()).tag(sync=True)
    reasons = traitlets.Dict(value_trait=traitlets.Unicode()).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)

    def __init__(self, plan_or_nodes: Any = None, *, engine: Engine = "auto", **kwargs: Any):
        self.session: LiveSession | None = None
        self.engine: Engine = engine
        self._structure: Structure | None = None
        with closed_on_failure(self):
            super().__init__(**kwargs)
            if isinstance(plan_or_nodes, LiveSession):
                self.follow(plan_or_nodes)
            elif plan_or_nodes is not None:
                self.show(plan_or_nodes)

    @classmethod
    def from_session(cls, session: LiveSession, **kwargs: Any) -> DagView:
        """A view that follows ``session`` until ``close()``."""
        return cls(session, **kwargs)

    def follow(self, session: LiveSession) -> None:
        """Draw ``session`` now and after each of its edits, runs and status changes."""
        self.session = session
        self._follow(session)
        self.redraw()

    def redraw(self) -> None:
        """Draw the followed session's plan with its statuses and reasons."""
        if self.session is not None:
            session = self.session
            self.show(session.current_plan, session.status, session.reasons())

    def show(
        self,
        plan_or_nodes: Any,
        statuses: Mapping[str, str] | None = None,
        reasons: Mapping[str, str] | None = None,
    ) -> None:
        """Draw a Plan (or NodeSpecs): re-layout only if its structure changed, else send
        just the statuses and reasons."""
        structure = structure_of(plan_or_nodes)
        if structure != self._structure:
            self._structure = structure
            self.svg = dag_svg(plan_or_nodes, statuses, reasons, engine=self.engine)
        self.statuses = dict(statuses or {})
        self.reasons = dict(reasons or {})

    @property
    def node_ids(self) -> list[str]:
        return [nid for nid, _ in self._structure[0]] if self._structure else []

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "status":  # mid-run: a class switch in the browser, no plan needed
            self.statuses = dict(session.status)
        else:
            self.redraw()
