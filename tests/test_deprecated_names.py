"""Renamed public names: the new name works, and the old one still does, warning once per
process with a DeprecationWarning that points at the caller's line and names the new spelling."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import phys_pipeline
from phys_pipeline import _deprecation
from phys_pipeline.session import LiveSession


class PulseCfg(BaseModel):
    fwhm_fs: float = 30.0
    energy_nj: float = 1.0


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every deprecated name warns again, as in a fresh process."""
    monkeypatch.setattr(_deprecation, "_given", set())


def deprecations(action: Callable[[], Any], times: int = 3) -> list[warnings.WarningMessage]:
    """The DeprecationWarnings given while ``action`` runs ``times`` times."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(times):
            action()
    return [w for w in caught if issubclass(w.category, DeprecationWarning)]


def assert_warned_once_here(caught: list[warnings.WarningMessage], old: str, new: str) -> None:
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert message.startswith(f"{old} is deprecated") and new in message
    assert caught[0].filename == __file__


# --- DiskCache is a DiskStore, under the user guide's name: no warning ----------------------


def test_disk_cache_is_a_disk_store_without_a_warning(tmp_path: Path) -> None:
    from phys_pipeline.cache import DiskStore

    def use_the_guides_name() -> None:
        from phys_pipeline.cache import DiskCache

        assert issubclass(DiskCache, DiskStore) and DiskCache is phys_pipeline.DiskCache
        assert repr(DiskCache(tmp_path)) == f"DiskStore({str(tmp_path)!r})"

    assert deprecations(use_the_guides_name) == []


# --- internal modules that were public: phys_pipeline.edit and phys_pipeline.cutoff --------

MOVED = {
    # old module: (what the warning advises, names it must still give)
    "edit": ("phys_pipeline._edit", ("replace_config", "replace_stage_config")),
    "cutoff": ("DagCache.early_cutoff", ("EarlyCutoff",)),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_still_imports_and_warns_once(
    old: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"phys_pipeline.{old}"
    monkeypatch.delitem(sys.modules, name, raising=False)  # as if never imported; undone after
    monkeypatch.delattr(phys_pipeline, old, raising=False)
    advice, names = MOVED[old]

    def import_it() -> None:
        sys.modules.pop(name, None)  # so that every time really imports it
        __import__(name)

    caught = deprecations(import_it)
    assert_warned_once_here(caught, name, advice)
    internal = importlib.import_module(f"phys_pipeline._{old}")
    for exported in names:
        assert getattr(sys.modules[name], exported) is getattr(internal, exported)


def test_settable_fields_names_the_fields_a_config_accepts() -> None:
    from phys_pipeline._edit import settable_fields

    assert settable_fields(PulseCfg()) == {"fwhm_fs", "energy_nj"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the module's own warning
        from phys_pipeline.edit import config_fields
    caught = deprecations(lambda: config_fields(PulseCfg()))
    assert_warned_once_here(caught, "phys_pipeline.edit.config_fields", "settable_fields")
    assert config_fields(PulseCfg()) == settable_fields(PulseCfg())


# --- the config editor's (name, control) list -----------------------------------------------


def test_fields_with_controls_lists_every_field_with_its_control() -> None:
    pytest.importorskip("ipywidgets")
    from phys_pipeline.widgets.config_editor import config_fields, fields_with_controls

    names = [name for name, control in fields_with_controls(PulseCfg) if control is not None]
    assert names == ["fwhm_fs", "energy_nj"]
    caught = deprecations(lambda: config_fields(PulseCfg))
    assert_warned_once_here(
        caught, "phys_pipeline.widgets.config_editor.config_fields", "fields_with_controls"
    )
    assert config_fields(PulseCfg) == fields_with_controls(PulseCfg)


# --- topological_order reads only the nodes -------------------------------------------------


def test_topological_order_needs_only_the_nodes() -> None:
    from dag_stages import diamond

    from phys_pipeline.dag import build_graph, topological_order

    nodes = list(reversed(diamond()))  # listed children first: the order has to be worked out
    order = topological_order(nodes)
    assert order == ["grid", "solo", "p2", "p1", "merge"]  # ties: the order they are listed in
    caught = deprecations(lambda: topological_order(build_graph(nodes), nodes))
    assert_warned_once_here(
        caught, "phys_pipeline.dag.topological_order(graph, nodes)", "topological_order(nodes)"
    )
    assert topological_order(build_graph(nodes), nodes) == order


# --- PipelineApp.policy_editor: the widget, not the session's PolicyBag ---------------------


def test_the_apps_policy_editor_is_named_so(session: LiveSession) -> None:
    pytest.importorskip("anywidget")
    from phys_pipeline.widgets import PipelineApp, PolicyEditor

    app = PipelineApp.from_session(session)
    try:
        assert isinstance(app.policy_editor, PolicyEditor)
        caught = deprecations(lambda: app.policy)
        assert_warned_once_here(caught, "PipelineApp.policy", "PipelineApp.policy_editor")
        assert app.policy is app.policy_editor
        with pytest.raises(AttributeError):
            app.policy = app.policy_editor  # type: ignore[misc]  # read-only
    finally:
        app.close()


# --- LiveSession.nodes (a list of specs) beside Plan.nodes (keys): LiveSession.specs ---------


def test_a_sessions_specs_are_by_id_like_a_plans(session: LiveSession) -> None:
    assert list(session.specs) == list(session.plan().specs)
    assert session.specs == session.plan().specs
    caught = deprecations(lambda: session.nodes)
    assert_warned_once_here(caught, "LiveSession.nodes", "LiveSession.specs")
    assert session.nodes == list(session.specs.values())
