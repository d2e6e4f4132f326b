"""Notebook views over a LiveSession (needs the ``jupyter`` extra: ipywidgets, anywidget).

Views hold no business logic: they read ``session.plan()``, ``status``, ``reasons()`` and
``last_result``, and send edits through ``update`` / ``set_policy`` / ``run``.
"""

from __future__ import annotations

from .app import PipelineApp
from .artifact_view import ArtifactView
from .config_editor import ConfigEditor, FieldControl, config_controls
from .dag_view import DagView
from .history_view import HistoryView
from .policy_editor import PolicyEditor, parse_policy_value
from .run_controls import RunControls

__all__ = [
    "ArtifactView",
    "ConfigEditor",
    "DagView",
    "FieldControl",
    "HistoryView",
    "PipelineApp",
    "PolicyEditor",
    "RunControls",
    "config_controls",
    "parse_policy_value",
]
