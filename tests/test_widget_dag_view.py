"""DagView: the DAG picture, laid out once per structure and recoloured as a session runs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from stages.optics import ALL, optics_nodes

from phys_pipeline.session import LiveSession
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import SimpleState
from phys_pipeline.widgets import DagView

LENGTHS_M = [1.0, 2.0, 3.0, 4.0]
FIBRES = [f"fibre__length_m-{length}" for length in LENGTHS_M]


@pytest.fixture
def swept() -> LiveSession:
    """The optics DAG with the fibre length swept: fibre and duration get four variants."""
    nodes = expand_sweep(optics_nodes(), [SweepSpec("fibre", {"length_m": LENGTHS_M})])
    return LiveSession(nodes, SimpleState(), policy={"dispersion_scale": 1.0})


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


def test_dag_view_folds_each_sweep_into_one_box(swept: LiveSession) -> None:
    view = DagView(swept)
    assert set(view.node_ids) == set(swept.specs)  # every node, folded or not
    assert 'data-group="fibre"' in view.svg and 'data-group="duration"' in view.svg
    assert f'data-node="{FIBRES[0]}"' not in view.svg
    assert view.groups["fibre"] == {
        "count": 4,
        "status": "not run",
        "title": "fibre \u00d74 (sweep variants)\nstatus: not run\n4 not run\nwhy: not cached",
    }
    assert set(view.statuses) == set(swept.specs)  # statuses stay per node
    view.close()


def test_dag_view_unfolds_what_is_expanded_and_folds_it_again(swept: LiveSession) -> None:
    view = DagView(swept)
    folded = view.svg
    view.expanded = ["fibre"]
    assert all(f'data-node="{fid}"' in view.svg for fid in FIBRES)
    assert 'data-group="fibre"' not in view.svg and 'data-group="duration"' in view.svg
    view.expanded = []
    assert view.svg == folded
    view.close()


def test_a_folded_group_shows_the_worst_status_as_the_session_runs(swept: LiveSession) -> None:
    view = DagView(swept)
    seen: list[str] = []
    swept.subscribe(lambda event, _: seen.append(view.groups["fibre"]["status"]))
    swept.run()
    assert "running" in seen  # recoloured mid-run, with no new SVG
    assert view.groups["fibre"]["status"] == "ran"
    svg = view.svg
    swept.update(FIBRES[2], length_m=3.5)
    assert view.groups["fibre"]["status"] == "stale"  # one stale variant of four
    assert view.groups["duration"]["status"] == "stale"
    assert "1 stale, 3 ran" in view.groups["fibre"]["title"]  # the worst first
    assert "why: config field length_m changed (1 of 4)" in view.groups["fibre"]["title"]
    assert view.svg is svg
    view.close()


def test_selecting_a_folded_variant_unfolds_its_group(swept: LiveSession) -> None:
    view = DagView(swept)
    view.selected = FIBRES[1]  # from Python, or the app's node picker
    assert view.expanded == ["fibre"]
    assert f'data-node="{FIBRES[1]}"' in view.svg
    view.selected = "grid"
    assert view.expanded == ["fibre"]  # stays unfolded until folded again
    view.close()


def test_dag_view_front_end_is_one_es_module() -> None:
    source = Path(__import__("phys_pipeline.widgets").widgets.__file__).parent / "dag_view.js"
    text = source.read_text()
    assert "export default { render }" in text
    assert '"change:statuses"' in text and "save_changes()" in text
    assert "new Blob(" in text and "link.download" in text  # the SVG download
    assert DagView()._esm == text


def test_a_running_node_s_seconds_and_progress_reach_the_picture(session: LiveSession) -> None:
    """What the session hears from the executor as a node runs (``on_start``, then the stage's
    ``report_progress``), the view sends on for the browser to draw on the node."""
    view = DagView.from_session(session)
    session.on_start("fibre")
    assert view.running["fibre"]["fraction"] is None
    session.on_progress("fibre", 0.4, "step 4 of 10")
    fibre = view.running["fibre"]
    assert (fibre["fraction"], fibre["message"]) == (0.4, "step 4 of 10")
    assert fibre["elapsed_s"] >= 0.0
    session.on_done("fibre", None, cache_hit=False)
    assert view.running == {}
    view.close()
