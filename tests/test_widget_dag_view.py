"""DagView: the DAG picture, laid out once per structure and recoloured as a session runs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import ALL

from phys_pipeline.session import LiveSession
from phys_pipeline.widgets import DagView


def test_dag_view_sends_the_layout_once_per_structure(session: LiveSession) -> None:
    view = DagView(session.plan())
    svg = view.svg
    assert 'data-node="fibre"' in svg
    view.show(session.plan(), {"fibre": "running"})
    assert view.svg is svg
    assert view.statuses == {"fibre": "running"}
    session.update("pulse", name="seed pulse")  # a new label: a new layout
    view.show(session.plan())
    assert view.svg != svg and "seed pulse" in view.svg


def test_dag_view_follows_a_session_on_its_own(session: LiveSession) -> None:
    view = DagView.from_session(session)
    assert set(view.node_ids) == ALL
    assert view.statuses == dict.fromkeys(ALL, "not run")
    seen: list[str] = []
    session.subscribe(lambda event, _: seen.append(view.statuses["fibre"]))
    session.run()
    assert "running" in seen  # recoloured on status events, mid-run
    assert view.statuses == dict.fromkeys(ALL, "ran")
    svg = view.svg
    session.update("fibre", length_m=3.0)
    assert (
        view.statuses["fibre"] == "stale"
        and view.reasons["fibre"] == "config field length_m changed"
    )
    assert view.svg is svg  # same structure: no re-layout
    session.update("fibre", name="hollow-core fibre")
    assert "hollow-core fibre" in view.svg
    view.close()
    session.run()
    assert view.statuses["fibre"] == "stale"  # closed: no longer follows
    listeners = len(session._listeners)
    same = DagView(session)  # DagView(session) means the same
    assert same.node_ids == view.node_ids and len(session._listeners) == listeners + 1
    same.close()
    assert len(session._listeners) == listeners


def test_dag_view_front_end_is_one_es_module() -> None:
    source = Path(__import__("phys_pipeline.widgets").widgets.__file__).parent / "dag_view.js"
    text = source.read_text()
    assert "export default { render }" in text
    assert 'model.on("change:statuses"' in text and "save_changes()" in text
    assert DagView()._esm == text
