"""ConfigEditor: one control per config field, chosen from its type and bounds; edits go through
the session's validation."""

from __future__ import annotations

import math

import pytest
from pydantic import ConfigDict, Field

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

import ipywidgets as w
from stages.optics import GridCfg, Shape

from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult
from phys_pipeline.widgets import ConfigEditor, config_controls
from phys_pipeline.widgets.config_editor import LogSlider, make_control, slider_step


def test_bounded_int_field_gets_a_slider_with_its_bounds(session: LiveSession) -> None:
    slider = ConfigEditor(session, "grid").controls["N"]
    assert isinstance(slider, w.IntSlider)
    assert (slider.min, slider.max, slider.value) == (16, 4096, 256)
    assert slider.continuous_update is False
    assert slider.tooltip == "number of frequency samples"


def test_bounded_float_field_gets_a_float_slider(session: LiveSession) -> None:
    slider = ConfigEditor(session, "pulse").controls["fwhm_ps"]
    assert isinstance(slider, w.FloatSlider)
    assert (slider.min, slider.max) == (0.05, 10.0)


def test_literal_gets_a_dropdown_and_bool_a_checkbox(session: LiveSession) -> None:
    controls = ConfigEditor(session, "grid").controls
    assert isinstance(controls["window"], w.Dropdown)
    assert list(controls["window"].options) == [("none", "none"), ("hann", "hann")]
    assert isinstance(controls["centred"], w.Checkbox)


def test_enum_gets_a_dropdown_of_members(session: LiveSession) -> None:
    session.run()
    dropdown = ConfigEditor(session, "pulse").controls["shape"]
    assert isinstance(dropdown, w.Dropdown)
    assert list(dropdown.options) == [("GAUSSIAN", Shape.GAUSSIAN), ("SECH", Shape.SECH)]
    dropdown.value = Shape.SECH
    assert session.config("pulse").shape is Shape.SECH
    assert set(session.stale()) == {"pulse", "fibre", "duration"}


class RawShapeCfg(StageConfig):
    model_config = ConfigDict(use_enum_values=True)

    shape: Shape = Shape.SECH


class RawShapeStage(PipelineStage[SimpleState, RawShapeCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=state.deepcopy(), metrics={"sech": self.cfg.shape == "sech"})


def test_enum_stored_as_its_value_shows_and_edits_as_the_member() -> None:
    live = LiveSession([NodeSpec("pulse", [], RawShapeStage(RawShapeCfg()))], SimpleState())
    assert live.config("pulse").shape == "sech"  # use_enum_values: the raw value is stored
    dropdown = ConfigEditor(live, "pulse").controls["shape"]
    assert dropdown.value is Shape.SECH
    dropdown.value = Shape.GAUSSIAN
    assert live.config("pulse").shape == "gaussian"
    live.update("pulse", shape="sech")  # an edit elsewhere is shown as the member too
    assert dropdown.value is Shape.SECH


def test_half_bounded_numbers_get_text_boxes_and_arrays_are_skipped(session: LiveSession) -> None:
    controls = ConfigEditor(session, "grid").controls
    assert isinstance(controls["span"], w.FloatText)
    assert isinstance(ConfigEditor(session, "pulse").controls["units"], w.Text)
    assert {"name", "tags", "weights"}.isdisjoint(controls)
    assert [c.name for c in config_controls(GridCfg())] == ["N", "span", "window", "centred"]


class FilterCfg(StageConfig):
    cutoff_thz: float | None = Field(None, gt=0, description="low-pass cutoff; None: no filter")
    max_iter: int | None = None
    label: str | None = "raw"


class FilterStage(PipelineStage[SimpleState, FilterCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=state.deepcopy(), metrics={"filtered": self.cfg.cutoff_thz or 0})


def test_optional_fields_get_a_text_box_where_empty_means_none() -> None:
    live = LiveSession([NodeSpec("filter", [], FilterStage(FilterCfg()))], SimpleState())
    live.run()
    editor = ConfigEditor(live, "filter")
    cutoff = editor.controls["cutoff_thz"]
    assert isinstance(cutoff, w.Text) and cutoff.value == ""
    assert editor.controls["label"].value == "raw"
    cutoff.value = "2.5"
    assert live.config("filter").cutoff_thz == 2.5
    assert list(live.stale()) == ["filter"]
    editor.controls["max_iter"].value = " 40 "
    assert live.config("filter").max_iter == 40
    editor.controls["label"].value = ""
    assert live.config("filter").label is None
    cutoff.value = ""
    assert live.config("filter").cutoff_thz is None


def test_a_bad_optional_value_shows_the_models_message_and_changes_nothing() -> None:
    live = LiveSession(
        [NodeSpec("filter", [], FilterStage(FilterCfg(cutoff_thz=3.0)))], SimpleState()
    )
    editor = ConfigEditor(live, "filter")
    assert editor.controls["cutoff_thz"].value == "3.0"
    editor.controls["cutoff_thz"].value = "-1"
    assert "greater than 0" in editor.errors["cutoff_thz"].value
    editor.controls["cutoff_thz"].value = "fast"
    assert "valid number" in editor.errors["cutoff_thz"].value
    assert live.config("filter").cutoff_thz == 3.0


def test_fields_without_a_control_are_named_in_a_note(session: LiveSession) -> None:
    editor = ConfigEditor(session, "grid")
    assert editor.skipped == ["weights"]
    notes = [c for c in editor.children if "pp-skipped-fields" in c._dom_classes]
    assert len(notes) == 1 and "weights" in notes[0].value
    assert not [
        c for c in ConfigEditor(session, "pulse").children if "pp-skipped-fields" in c._dom_classes
    ]


def test_open_bounds_become_a_slider_too(session: LiveSession) -> None:
    slider = ConfigEditor(session, "duration").controls["threshold"]
    assert isinstance(slider, w.FloatSlider)
    assert (slider.min, slider.max) == (0.0, 1.0)


def example_configs() -> list[StageConfig]:
    """A default instance of every config class the shipped examples define."""
    import phys_pipeline.demo
    import phys_pipeline.examples.soliton
    import phys_pipeline.examples.ultrafast

    modules = (phys_pipeline.demo, phys_pipeline.examples.soliton, phys_pipeline.examples.ultrafast)
    return [
        cls()
        for module in modules
        for cls in vars(module).values()
        if isinstance(cls, type)
        and issubclass(cls, StageConfig)
        and cls.__module__ == module.__name__
    ]


def test_float_sliders_of_the_examples_hold_their_defaults_exactly() -> None:
    """The default is a slider position (min + k * step) and its readout reads back as it."""
    sliders = 0
    for cfg in example_configs():
        for spec in config_controls(cfg):
            if spec.kind != "float-slider":
                continue
            default = getattr(cfg, spec.name)
            slider = make_control(spec, default)
            where = f"{type(cfg).__name__}.{spec.name}={default!r} (step {slider.step})"
            assert isinstance(slider, w.FloatSlider), where
            assert slider.value == default, where
            index = round((default - slider.min) / slider.step)
            assert slider.min + index * slider.step == pytest.approx(default, abs=1e-12), where
            assert (slider.max - slider.min) / slider.step >= 1000, where  # still fine-grained
            assert float(format(default, slider.readout_format)) == default, where
            sliders += 1
    assert sliders >= 10  # the examples do have bounded float fields


def test_slider_step_puts_an_off_grid_default_on_the_grid() -> None:
    # 0..100 m with a 1 cm default: a span/100 step (1 m) could never show it
    step = slider_step(0.0, 100.0, 0.01)
    assert step == 0.01
    assert slider_step(10.0, 1e6, 2000.0) == 10.0  # (2000 - 10) / 10 positions from min


@pytest.fixture
def demo_session() -> LiveSession:
    """The ultrafast demo DAG: grid (window_fs 10 .. 1e6 fs, default 2000) -> pulse -> ..."""
    from phys_pipeline.demo import build_nodes

    session = LiveSession(build_nodes(), SimpleState(payload=None))
    session.update("grid", window_fs=2000.0)
    return session


def slid_to(control: LogSlider, value: float) -> float:
    """What the browser sends when the handle is dragged to the position nearest ``value``."""
    slider = control.slider
    position = slider.min + round((math.log10(value) - slider.min) / slider.step) * slider.step
    slider.value = 10**position
    return 10**position


def test_a_wide_positive_float_range_gets_a_log_slider(demo_session: LiveSession) -> None:
    control = ConfigEditor(demo_session, "grid").controls["window_fs"]
    assert isinstance(control, LogSlider)
    slider = control.slider
    assert isinstance(slider, w.FloatLogSlider)
    assert (slider.base, slider.min, slider.max) == (10.0, 1.0, 6.0)
    assert (slider.max - slider.min) / slider.step >= 1000  # fine enough to drag
    assert slider.continuous_update is False
    assert control.value == control.text.value == slider.value == 2000.0
    assert isinstance(
        ConfigEditor(demo_session, "glass").controls["beta2_fs2_per_mm"], w.FloatSlider
    )


def test_log_sliders_of_the_examples_hold_their_defaults_exactly() -> None:
    """Dragged away and back to its position, the default comes back unchanged."""
    sliders = 0
    for cfg in example_configs():
        for spec in config_controls(cfg):
            if spec.kind != "log-slider":
                continue
            default = getattr(cfg, spec.name)
            control = make_control(spec, default)
            assert isinstance(control, LogSlider)
            assert control.value == control.text.value == default
            slid_to(control, default * 3.0 if default * 3.0 <= spec.high else default / 3.0)
            assert control.value != default
            sent = slid_to(control, default)
            where = f"{type(cfg).__name__}.{spec.name}={default!r} (slider sent {sent!r})"
            assert control.value == control.text.value == default, where
            sliders += 1
    assert sliders >= 3  # window_fs, fwhm_fs, t0_ps


def test_a_log_slider_shows_a_value_outside_its_bounds_as_it_is() -> None:
    """A policy value set in code is not checked by the policy model until edited."""
    from phys_pipeline.examples.ultrafast import FrequencyGridCfg

    (spec,) = [s for s in config_controls(FrequencyGridCfg) if s.name == "window_fs"]
    for value in (0.0, -5.0, 2e6, 10.0):
        control = make_control(spec, value)
        assert control.value == control.text.value == value
        assert control.slider.value == min(max(value, 10.0), 1e6)


def test_moving_a_log_slider_updates_the_config_through_the_model(
    demo_session: LiveSession,
) -> None:
    demo_session.run()
    control = ConfigEditor(demo_session, "grid").controls["window_fs"]
    sent = slid_to(control, 8000.0)
    value = demo_session.config("grid").window_fs
    assert value == float(f"{sent:.3g}") != sent  # 10**3.90... rounded to the step's digits
    assert value == pytest.approx(8000.0, rel=0.01)
    assert control.value == control.text.value == value
    assert set(demo_session.stale()) == set(demo_session.status)  # grid is every node's root
    assert demo_session.stale()["grid"].reasons == ("config field window_fs changed",)


def test_out_of_range_text_beside_a_log_slider_is_rejected_not_clamped(
    demo_session: LiveSession,
) -> None:
    demo_session.run()
    editor = ConfigEditor(demo_session, "grid")
    control = editor.controls["window_fs"]
    control.text.value = 5e7  # typed into the readout
    assert "less than or equal to 1000000" in editor.errors["window_fs"].value
    assert demo_session.config("grid").window_fs == 2000.0
    assert demo_session.stale() == {}
    assert control.text.value == 5e7  # the rejected value stays visible beside its message
    control.text.value = 1234.5  # a valid value, not on any slider position, is kept exactly
    assert editor.errors["window_fs"].value == ""
    assert demo_session.config("grid").window_fs == 1234.5


def test_slider_edit_updates_config_and_marks_node_and_descendants_stale(
    session: LiveSession,
) -> None:
    session.run()
    ConfigEditor(session, "pulse").controls["fwhm_ps"].value = 2.5
    assert session.config("pulse").fwhm_ps == 2.5
    assert set(session.stale()) == {"pulse", "fibre", "duration"}
    assert session.stale()["pulse"].reasons == ("config field fwhm_ps changed",)


def test_below_lower_bound_shows_error_and_changes_nothing(session: LiveSession) -> None:
    session.run()
    editor = ConfigEditor(session, "grid")
    editor.controls["span"].value = -3.0
    assert "greater than 0" in editor.errors["span"].value
    assert session.config("grid").span == 20.0
    assert session.stale() == {}
    assert all(s == "ran" for s in session.status.values())


def test_text_failing_its_validator_shows_the_message(session: LiveSession) -> None:
    editor = ConfigEditor(session, "pulse")
    stale_before = set(session.stale())
    editor.controls["units"].value = "furlongs"
    assert "should match pattern" in editor.errors["units"].value
    assert session.config("pulse").units == "ps"
    assert set(session.stale()) == stale_before
    editor.controls["units"].value = "fs"  # a valid value clears the error
    assert editor.errors["units"].value == ""
    assert session.config("pulse").units == "fs"


def test_editor_follows_edits_made_elsewhere(session: LiveSession) -> None:
    editor = ConfigEditor(session, "grid")
    session.update("grid", N=512)
    assert editor.controls["N"].value == 512
