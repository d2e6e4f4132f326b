"""Views that fail while being built leave no subscription behind and close quietly
(phys_pipeline.widgets._subscribe)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

import ipywidgets as w

from phys_pipeline.session import LiveSession
from phys_pipeline.widgets import ArtifactView, ConfigEditor, PipelineApp, PolicyEditor, RunControls


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Exceptions raised where Python can only print them (``__del__`` of a half-built widget)."""
    import sys

    seen: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(repr(u.exc_value)))
    return seen


def test_a_widget_whose_init_failed_closes_quietly(
    session: LiveSession, unraisable: list[str]
) -> None:
    import gc

    from phys_pipeline.errors import UnknownNodeError

    with pytest.raises(UnknownNodeError):
        ConfigEditor(session, "no-such-node")
    with pytest.raises(KeyError):  # the DAG view fails after subscribing to the session
        PipelineApp.from_session(session, engine="no-such-engine")  # type: ignore[arg-type]
    gc.collect()
    assert unraisable == []  # no AttributeError from close() in __del__
    assert session._listeners == []  # nothing half-built still listens


@pytest.mark.parametrize(
    "make_view, broken",
    [
        (RunControls, "ipywidgets.IntProgress"),  # before the view's comm opens
        (RunControls, "phys_pipeline.widgets.run_controls.RunControls._show_stale"),  # after
        (PolicyEditor, "ipywidgets.HTML"),
        (PolicyEditor, "phys_pipeline.widgets.policy_editor.PolicyEditor.refresh"),
        (ArtifactView, "ipywidgets.HTML"),
        (ArtifactView, "phys_pipeline.widgets.artifact_view.ArtifactView.refresh"),
    ],
)
def test_a_view_whose_init_fails_leaves_no_subscription_and_closes_quietly(
    session: LiveSession,
    unraisable: list[str],
    monkeypatch: pytest.MonkeyPatch,
    make_view: Callable[[LiveSession], w.Widget],
    broken: str,
) -> None:
    import gc

    half_built: list[w.Widget] = []

    def fail(*args: object, **kwargs: object) -> None:
        if args and isinstance(args[0], make_view):  # type: ignore[arg-type]
            half_built.append(args[0])
        raise RuntimeError("broken on purpose")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="on purpose") as raised:
        patch.setattr(broken, fail)
        make_view(session)
    del raised  # its traceback would keep the half-built view alive
    assert session._listeners == []
    for view in half_built:  # the methods get the view: close it again, as a user might
        view.close()
        assert view.comm is None
    half_built.clear()
    w.Widget.close_all()  # as at kernel shutdown: its child widgets no longer hold the view
    gc.collect()
    assert unraisable == []  # no AttributeError from close() in __del__
