"""DagView: the DAG picture as an anywidget; Python sends the layout once, then statuses."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..session import LiveSession
from ..views import (
    DEFAULT_STATUS,
    Engine,
    Structure,
    fold,
    group_title,
    layout,
    layout_svg,
    structure_of,
    sweep_groups,
    worst_status,
)
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "DagView",
]

_HERE = Path(__file__).parent


class DagView(SessionView, anywidget.AnyWidget):
    """The DAG as SVG. ``svg`` changes only when the drawn structure does; ``statuses`` and
    ``reasons`` (node id -> text) recolour nodes and rewrite tooltips in the browser by a CSS
    class switch. Clicking a node sets ``selected`` (two-way: set it from Python too).

    The variants of a swept node are drawn folded, as one stacked box with a count (``groups``:
    base id -> count, worst status of its variants, tooltip); clicking it adds it to
    ``expanded`` and draws its variants, and the toolbar folds it again. Selecting a variant of
    a folded group unfolds it. The picture scrolls in its box and zooms (toolbar, or pinch and
    Ctrl + wheel) at readable sizes, and downloads as an SVG file.

    A running node shows its seconds so far and, if its stage reports it (``report_progress``),
    a progress bar along its box and the stage's message in its tooltip (``running``).

    Give it a Plan or NodeSpecs to draw once, or a LiveSession (``DagView(session)``, or
    ``DagView.from_session``) to follow it: redrawn after edits and runs, recoloured on every
    status change."""

    _esm = _HERE / "dag_view.js"
    _css = _HERE / "dag_view.css"

    svg = traitlets.Unicode("").tag(sync=True)
    statuses = traitlets.Dict(value_trait=traitlets.Unicode()).tag(sync=True)
    reasons = traitlets.Dict(value_trait=traitlets.Unicode()).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    expanded = traitlets.List(traitlets.Unicode()).tag(sync=True)
    groups = traitlets.Dict(value_trait=traitlets.Dict()).tag(sync=True)
    # running node -> {"elapsed_s", "fraction" (None: not reported), "message"}, as of the
    # last event: the browser counts the seconds on from there itself (no clock is shared)
    running = traitlets.Dict(value_trait=traitlets.Dict()).tag(sync=True)

    def __init__(self, plan_or_nodes: Any = None, *, engine: Engine = "auto", **kwargs: Any):
        self.session: LiveSession | None = None
        self.engine: Engine = engine
        self._structure: Structure | None = None  # unfolded: what the plan is
        self._drawn: Structure | None = None  # folded: what the picture shows
        self._sweeps: dict[str, tuple[str, ...]] = {}
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
            self._sweeps = sweep_groups(plan_or_nodes)
        with self.hold_sync():  # one message: the browser never paints half an update
            self.statuses = dict(statuses or {})
            self.reasons = dict(reasons or {})
            self._draw()
            self._paint_groups()

    @property
    def node_ids(self) -> list[str]:
        return [node.id for node in self._structure[0]] if self._structure else []

    @property
    def folded(self) -> dict[str, tuple[str, ...]]:
        """The sweep groups drawn as one box (base id -> variant ids)."""
        return {gid: m for gid, m in self._sweeps.items() if gid not in self.expanded}

    def _draw(self) -> None:
        """Send the SVG if what is drawn changed (statuses in it are only the first paint)."""
        if self._structure is None:
            return
        folded = self.folded
        drawn = fold(self._structure, folded)
        if drawn != self._drawn:
            self._drawn = drawn
            self.svg = layout_svg(layout(drawn, self.engine), self.statuses, self.reasons, folded)

    def _paint_groups(self) -> None:
        """Each sweep group's count, worst status and tooltip, for the browser to paint."""
        statuses, reasons = self.statuses, self.reasons
        self.groups = {
            gid: {
                "count": len(members),
                "status": worst_status(statuses.get(m, DEFAULT_STATUS) for m in members),
                "title": group_title(gid, members, statuses, reasons),
            }
            for gid, members in self._sweeps.items()
        }

    @traitlets.observe("expanded")
    def _on_expanded(self, _: dict[str, Any]) -> None:
        self._draw()

    @traitlets.observe("selected")
    def _on_selected(self, change: dict[str, Any]) -> None:
        """A variant selected from Python or a node picker is shown: its group unfolds."""
        for gid, members in self.folded.items():
            if change["new"] in members:
                self.expanded = [*self.expanded, gid]

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "status":  # mid-run: a class switch in the browser, no plan needed
            with self.hold_sync():
                self.statuses = dict(session.status)
                self._paint_groups()
                self.running = running_of(session)
        elif event == "progress":
            self.running = running_of(session)
        else:
            with self.hold_sync():
                self.redraw()
                self.running = running_of(session)


def running_of(session: LiveSession) -> dict[str, dict[str, Any]]:
    """What each running node has been doing, for the picture: seconds so far and its last
    reported progress."""
    now = time.monotonic()
    progress = dict(session.progress)  # copies: a run's thread changes them meanwhile
    return {
        node_id: {
            "elapsed_s": round(now - since, 3),
            "fraction": progress[node_id][0] if node_id in progress else None,
            "message": progress[node_id][1] if node_id in progress else "",
        }
        for node_id, since in dict(session.running_since).items()
    }
