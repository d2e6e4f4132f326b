"""PolicyEditor: policy values edited with their types kept, optionally through a pydantic model."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

import ipywidgets as w
from stages.optics import optics_nodes

from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import SimpleState
from phys_pipeline.widgets import PipelineApp, PolicyEditor, parse_policy_value


def test_policy_values_keep_their_type() -> None:
    assert parse_policy_value("2", 1.0) == 2.0 and isinstance(parse_policy_value("2", 1.0), float)
    assert parse_policy_value("true", False) is True
    assert parse_policy_value("hann", "none") == "hann"
    assert parse_policy_value("[1, 2]") == [1, 2]
    assert parse_policy_value("fast") == "fast"  # a new key: bare words are strings
    with pytest.raises(ValueError, match="float"):
        parse_policy_value("fast", 1.0)


def test_policy_edit_goes_through_the_session(session: LiveSession) -> None:
    session.run()
    editor = PolicyEditor(session)
    editor.fields["dispersion_scale"].value = 2.0
    assert session.policy == PolicyBag(dispersion_scale=2.0)
    assert set(session.stale()) == {"fibre", "duration"}  # the others read no policy


def test_policy_controls_follow_the_value_types() -> None:
    policy = {"scale": 1.0, "adaptive": True, "max_steps": 100, "solver": "rk4", "orders": [2, 3]}
    live = LiveSession(optics_nodes(), SimpleState(), policy=policy)
    fields = PolicyEditor(live).fields
    assert isinstance(fields["scale"], w.FloatText)
    assert isinstance(fields["adaptive"], w.Checkbox) and fields["adaptive"].value is True
    assert isinstance(fields["max_steps"], w.IntText)
    assert type(fields["solver"]) is w.Text and fields["solver"].value == "rk4"
    assert type(fields["orders"]) is w.Text and fields["orders"].value == "[2, 3]"
    fields["adaptive"].value = False
    fields["orders"].value = "[2, 3, 4]"
    assert live.policy["adaptive"] is False and live.policy["orders"] == [2, 3, 4]


def test_bad_policy_text_shows_an_error_in_its_row_and_keeps_the_policy() -> None:
    live = LiveSession(optics_nodes(), SimpleState(), policy={"scale": 1.0, "orders": [2, 3]})
    live.run()
    editor = PolicyEditor(live)
    events: list[str] = []
    live.subscribe(lambda event, _: events.append(event))
    editor.fields["orders"].value = "[2,"
    assert "cannot read" in editor.errors["orders"].value
    assert editor.errors["scale"].value == ""
    assert live.policy == PolicyBag(scale=1.0, orders=[2, 3])
    assert events == [] and live.stale() == {}
    editor.fields["orders"].value = "[2]"  # fixing it clears the error
    assert editor.errors["orders"].value == "" and live.policy["orders"] == [2]


class FibrePolicy(BaseModel):
    dispersion_scale: float = Field(1.0, ge=0.0, le=10.0, description="scales every GDD")
    solver: Literal["rk4", "split-step"] = "split-step"
    adaptive: bool = False
    tolerance: float = Field(1e-6, gt=0)


def test_policy_model_generates_the_controls_and_validates_edits(session: LiveSession) -> None:
    session.run()
    editor = PolicyEditor(session, model=FibrePolicy)
    fields = editor.fields
    assert list(fields) == ["dispersion_scale", "solver", "adaptive", "tolerance"]
    assert isinstance(fields["dispersion_scale"], w.FloatSlider)
    assert (fields["dispersion_scale"].min, fields["dispersion_scale"].max) == (0.0, 10.0)
    assert fields["dispersion_scale"].tooltip == "scales every GDD"
    assert isinstance(fields["solver"], w.Dropdown) and fields["solver"].value == "split-step"
    assert isinstance(fields["adaptive"], w.Checkbox)
    assert isinstance(fields["tolerance"], w.FloatText)
    fields["dispersion_scale"].value = 2.5
    assert session.policy["dispersion_scale"] == 2.5
    assert set(session.stale()) == {"fibre", "duration"}
    fields["solver"].value = "rk4"
    assert session.policy["solver"] == "rk4"  # a key the policy did not have yet


def test_policy_model_rejects_an_invalid_value_and_changes_nothing(session: LiveSession) -> None:
    session.run()
    editor = PolicyEditor(session, model=FibrePolicy)
    events: list[str] = []
    session.subscribe(lambda event, _: events.append(event))
    editor.fields["tolerance"].value = -1.0
    assert "greater than 0" in editor.errors["tolerance"].value
    assert "pp-invalid" in editor.fields["tolerance"]._dom_classes
    assert editor.errors["dispersion_scale"].value == ""
    assert session.policy == PolicyBag(dispersion_scale=1.0)
    assert events == [] and session.stale() == {}


def test_app_passes_its_policy_model_to_the_policy_editor(session: LiveSession) -> None:
    app = PipelineApp.from_session(session, policy_model=FibrePolicy)
    try:
        assert app.policy_editor.model is FibrePolicy
        assert isinstance(app.policy_editor.fields["dispersion_scale"], w.FloatSlider)
    finally:
        app.close()


def test_policy_keys_can_be_added_and_removed(session: LiveSession) -> None:
    editor = PolicyEditor(session)
    editor.new_key.value, editor.new_value.value = "solver", "'rk4'"
    editor.add_button.click()
    assert session.policy["solver"] == "rk4"
    assert set(editor.fields) == {"dispersion_scale", "solver"}
    assert editor.remove("solver")
    assert "solver" not in session.policy
