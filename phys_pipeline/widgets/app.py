"""PipelineApp: the DAG, run controls, config and policy editors, artifacts and the run history
around one LiveSession. Selecting a node (click it, or pick it in the list) shows its editor
and plots."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, TypeVar

import ipywidgets as w

from .._deprecation import warn_once
from ..scheduler import Scheduler
from ..session import LiveSession
from ..types import NodeSpec, State
from ..views import Engine
from ._subscribe import closed_on_failure
from .artifact_view import ArtifactView
from .config_editor import ConfigEditor
from .dag_view import DagView
from .history_view import HistoryView
from .policy_editor import PolicyEditor
from .run_controls import RunControls

__all__ = [
    "PipelineApp",
]

V = TypeVar("V", bound=w.Widget)

SIDE_WIDTH = "30em"
# In the side panel a row of plain controls wraps rather than widen it (a row holding a box
# lets that box shrink: it wraps its own row), and long words (paths in a failure) break.
# Scoped to the panel, in a hidden HTML widget: plain ipywidgets bring no stylesheet of theirs.
SIDE_PANEL_CSS = """<style>
.pp-side-panel .widget-hbox:not(:has(> .widget-box)) { flex-wrap: wrap; }
.pp-side-panel .widget-html-content { overflow-wrap: anywhere; }
</style>"""


class PipelineApp(w.VBox):
    """A notebook front end for a DAG. ``session`` is the model; ``dag`` (DagView),
    ``controls`` (RunControls), ``policy_editor`` (PolicyEditor), ``artifacts`` (ArtifactView),
    ``history`` (HistoryView: every run, pin one to compare, restore) and ``editors`` (node id
    -> ConfigEditor, made on first selection) are views of it; ``results`` is the tab holding
    the artifacts and the history. Beside the
    DAG, ``side_panel`` (``SIDE_WIDTH`` wide) holds the controls and editors.
    ``policy_model``, a pydantic model of the policy, gives the policy editor its controls."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec] | None = None,
        state: State | None = None,
        *,
        policy: Any = None,
        cache: Any = None,
        scheduler: Scheduler | None = None,
        session: LiveSession | None = None,
        engine: Engine = "auto",
        debounce_s: float = 0.3,
        policy_model: type | None = None,
        **kwargs: Any,
    ) -> None:
        self._views: list[w.Widget] = []  # closed by close(), also if __init__ fails
        self.editors: dict[str, ConfigEditor] = {}
        if session is None:
            if nodes is None or state is None:
                raise TypeError("PipelineApp needs nodes and an initial state (or session=)")
            session = LiveSession(nodes, state, policy=policy, cache=cache, scheduler=scheduler)
        self.session = session
        with closed_on_failure(self):  # no half-built view left subscribed to the session
            self.dag = self._own(DagView.from_session(session, engine=engine))
            self.controls = self._own(RunControls(session, debounce_s=debounce_s))
            self.policy_editor = self._own(PolicyEditor(session, model=policy_model))
            self.artifacts = self._own(ArtifactView(session))
            # after the artifacts: on a run's end they keep its figures, which history shows
            self.history = self._own(HistoryView(session, shown=False))  # see _tab_picked
            ids = list(session.specs)
            self.node_picker = w.Dropdown(
                options=[("(all nodes)", ""), *((nid, nid) for nid in ids)],
                value="",
                description="node",
            )
            self.node_picker.add_class("pp-node-picker")
            self._editor_box = w.VBox()
            self._editor_box.add_class("pp-editor-box")
            w.link((self.node_picker, "value"), (self.dag, "selected"))
            self.dag.observe(lambda change: self.select(change["new"]), "selected")
            # the side panel keeps its width whatever it shows (a long failure wraps inside
            # it, a wide row wraps or scrolls); the DAG takes the rest and may shrink to it
            self.side_panel = w.VBox(
                [
                    w.HTML(SIDE_PANEL_CSS, layout=w.Layout(display="none")),
                    self.controls,
                    self.node_picker,
                    self._editor_box,
                    self.policy_editor,
                ],
                layout=w.Layout(flex=f"0 0 {SIDE_WIDTH}", width=SIDE_WIDTH, overflow="auto"),
            )
            self.side_panel.add_class("pp-side-panel")
            self.dag.layout = w.Layout(flex="1 1 0", min_width="0")
            super().__init__(**kwargs)
            self.add_class("pp-pipeline-app")
            # results of the selected and watched nodes, or every run so far to compare with
            self.results = w.Tab(children=[self.artifacts, self.history])
            self.results.titles = ("Results", "History")
            self.results.add_class("pp-results-tabs")
            # the history's metric plot is drawn while its tab is picked, not on every run
            self.results.observe(self._tab_picked, "selected_index")
            self._tab_picked()
            self.children = [
                w.HBox([self.dag, self.side_panel], layout=w.Layout(width="100%")),
                self.results,
            ]
            self.select("")

    def _tab_picked(self, _: Any = None) -> None:
        picked = self.results.selected_index
        self.history.shown = picked is not None and self.results.children[picked] is self.history

    @property
    def policy(self) -> PolicyEditor:
        """Deprecated: the policy editor (``session.policy`` is the policy itself)."""
        warn_once("PipelineApp.policy", "use PipelineApp.policy_editor")
        return self.policy_editor

    def _own(self, view: V) -> V:
        """Remember a view for ``close()``."""
        self._views.append(view)
        return view

    @classmethod
    def from_session(cls, session: LiveSession, **kwargs: Any) -> PipelineApp:
        """An app over an existing session (its cache, results and policy included)."""
        return cls(session=session, **kwargs)

    def editor(self, node_id: str) -> ConfigEditor:
        """The node's config editor, made on first use (a big DAG need not build them all)."""
        if node_id not in self.editors:
            self.editors[node_id] = ConfigEditor(self.session, node_id)
        return self.editors[node_id]

    def _editor_or_error(self, node_id: str) -> w.Widget:
        """The node's editor, or a box saying why it could not be made (never raised into
        the kernel: the click that selected the node came from the browser)."""
        try:
            return self.editor(node_id)
        except Exception as exc:  # noqa: BLE001 - a UI callback: show it in the panel instead
            box = w.HTML(
                f"<div style='color:#b91c1c'>cannot edit node {html.escape(repr(node_id))}: "
                f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</div>"
            )
            box.add_class("pp-editor-error")
            return box

    def select(self, node_id: str) -> None:
        """Show ``node_id``'s editor and artifacts ("" for all artifacts and no editor)."""
        if self.dag.selected != node_id:
            self.dag.selected = node_id  # calls back here through the observer
            return
        if node_id:
            self._editor_box.children = [self._editor_or_error(node_id)]
        else:
            self._editor_box.children = [w.HTML("<i>select a node to edit its config</i>")]
        self.artifacts.show(node_id or None)

    def close(self) -> None:
        for widget in (*self._views, *self.editors.values()):
            widget.close()
        super().close()
