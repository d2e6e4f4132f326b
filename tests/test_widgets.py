"""Notebook widgets driven without a browser: edit, run, recolour, show plots and errors."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

import ipywidgets as w

from phys_pipeline.errors import CacheError
from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)
from phys_pipeline.widgets import (
    ArtifactView,
    ConfigEditor,
    DagView,
    PipelineApp,
    PolicyEditor,
    RunControls,
    config_controls,
    parse_policy_value,
)
from phys_pipeline.widgets.config_editor import LogSlider, make_control, slider_step

# --- a small ultrafast-optics DAG: grid -> pulse -> fibre -> duration, grid -> spectrum ----


class GridCfg(StageConfig):
    N: int = Field(256, ge=16, le=4096, description="number of frequency samples")
    span: float = Field(20.0, gt=0, description="frequency half span, rad/ps")
    window: Literal["none", "hann"] = "none"
    centred: bool = True
    weights: np.ndarray = np.ones(3)  # not editable in a widget


class GridStage(PipelineStage[SimpleState, GridCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        st = state.deepcopy()
        st.meta["omega"] = np.linspace(-self.cfg.span, self.cfg.span, self.cfg.N)
        return StageResult(state=st, metrics={"N": self.cfg.N})


class Shape(enum.Enum):
    GAUSSIAN = "gaussian"
    SECH = "sech"


class PulseCfg(StageConfig):
    fwhm_ps: float = Field(1.0, ge=0.05, le=10.0, description="intensity FWHM, ps")
    shape: Shape = Shape.GAUSSIAN
    units: str = Field("ps", pattern=r"^(fs|ps)$", description="time unit label")


class PulseStage(PipelineStage[SimpleState, PulseCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        st = state.deepcopy()
        t0 = self.cfg.fwhm_ps / 1.665
        st.meta["spectrum"] = np.exp(-((st.meta["omega"] * t0) ** 2) / 2)
        return StageResult(state=st, metrics={"t0_ps": t0})


class FibreCfg(StageConfig):
    length_m: float = Field(1.0, ge=0.0, le=100.0)
    beta2_ps2_per_m: float = -0.02
    broken: bool = False


class FibreStage(PipelineStage[SimpleState, FibreCfg]):
    """Applies quadratic spectral phase; plots it lazily; fails on purpose when ``broken``."""

    policy_keys = ("dispersion_scale",)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        if self.cfg.broken:
            raise RuntimeError("fibre snapped")
        scale = float(policy.get("dispersion_scale", 1.0)) if policy else 1.0
        st = state.deepcopy()
        omega = st.meta["omega"]
        st.meta["phase"] = 0.5 * scale * self.cfg.beta2_ps2_per_m * self.cfg.length_m * omega**2
        return StageResult(
            state=st,
            metrics={"gdd_ps2": scale * self.cfg.beta2_ps2_per_m * self.cfg.length_m},
            artifacts={"phase": lambda: phase_figure(omega, st.meta["phase"])},
        )


def phase_figure(omega: np.ndarray, phase: np.ndarray) -> object:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot(omega, phase)
    ax.set_xlabel("omega (rad/ps)")
    return fig


class DurationCfg(StageConfig):
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


class DurationStage(PipelineStage[SimpleState, DurationCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        gdd = float(np.ptp(state.meta["phase"]))
        return StageResult(state=state.deepcopy(), metrics={"phase_span": gdd})


class SpectrumCfg(StageConfig):
    floor_db: float = -40.0


class SpectrumStage(PipelineStage[SimpleState, SpectrumCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=state.deepcopy(), metrics={"bins": len(state.meta["omega"])})


def optics_nodes() -> list[NodeSpec]:
    return [
        NodeSpec("grid", [], GridStage(GridCfg())),
        NodeSpec("pulse", ["grid"], PulseStage(PulseCfg())),
        NodeSpec("fibre", ["pulse"], FibreStage(FibreCfg())),
        NodeSpec("duration", ["fibre"], DurationStage(DurationCfg())),
        NodeSpec("spectrum", ["grid"], SpectrumStage(SpectrumCfg())),
    ]


ALL = {"grid", "pulse", "fibre", "duration", "spectrum"}


@pytest.fixture
def session() -> LiveSession:
    return LiveSession(optics_nodes(), SimpleState(), policy={"dispersion_scale": 1.0})


@pytest.fixture
def app(session: LiveSession) -> Iterator[PipelineApp]:
    app = PipelineApp.from_session(session, debounce_s=0.05)
    yield app
    app.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll a condition a background thread will make true; bounded, never hangs a test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --- ConfigEditor ---------------------------------------------------------------------------


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


def test_an_editor_that_cannot_be_built_shows_an_error_box(
    app: PipelineApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phys_pipeline.widgets.app as app_module

    class BrokenEditor(ConfigEditor):
        def _build(self) -> None:
            raise ValueError("no control for a tensor field")

    monkeypatch.setattr(app_module, "ConfigEditor", BrokenEditor)
    app.dag.selected = "fibre"  # must not raise into the kernel
    (box,) = app._editor_box.children
    assert "pp-editor-error" in box._dom_classes
    assert "fibre" in box.value and "no control for a tensor field" in box.value
    assert "fibre" not in app.editors
    assert app.artifacts.node_id == "fibre"  # the rest of the selection still happens


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


# --- PolicyEditor ---------------------------------------------------------------------------


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
        assert app.policy.model is FibrePolicy
        assert isinstance(app.policy.fields["dispersion_scale"], w.FloatSlider)
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


# --- RunControls and DagView ----------------------------------------------------------------


def test_run_button_reruns_only_stale_nodes_and_recolours_the_dag(app: PipelineApp) -> None:
    assert app.controls.run_button.description == "Run"
    app.controls.run_button.click()
    assert app.dag.statuses == dict.fromkeys(ALL, "ran")
    app.editor("fibre").controls["length_m"].value = 3.0
    assert app.dag.statuses["fibre"] == "stale"
    assert app.dag.reasons["fibre"] == "config field length_m changed"
    app.controls.run_button.click()
    result = app.session.last_result
    assert result is not None
    assert set(result.ran) == {"fibre", "duration"}
    assert app.dag.statuses == {
        "grid": "hit",
        "pulse": "hit",
        "fibre": "ran",
        "duration": "ran",
        "spectrum": "hit",
    }


def test_status_line_matches_the_summary(app: PipelineApp) -> None:
    app.controls.run_button.click()
    result = app.session.last_result
    assert result is not None
    assert app.controls.status_line.value == result.summary()
    assert app.controls.status_line.value.startswith("ran 5, hit 0, ")
    assert "pp-status-line" in app.controls.status_line._dom_classes


def test_progress_counts_the_nodes_that_had_to_run(app: PipelineApp) -> None:
    app.controls.run()
    app.session.update("duration", threshold=0.25)
    seen: list[tuple[int, int]] = []
    app.session.subscribe(
        lambda event, _: seen.append((app.controls.progress.value, app.controls.progress.max))
    )
    app.controls.run()
    assert seen[-1] == (1, 1)
    assert app.controls.progress.bar_style == "success"


def test_auto_run_reruns_after_an_edit(app: PipelineApp) -> None:
    app.controls.run()
    app.controls.auto_run.value = True
    app.editor("grid").controls["N"].value = 128
    assert wait_for(lambda: app.session.status["grid"] == "ran" and not app.controls.run_pending)
    assert app.session.stale() == {}
    assert app.session.last_result is not None
    assert set(app.session.last_result.ran) == ALL
    assert app.dag.statuses == dict.fromkeys(ALL, "ran")


def test_auto_run_debounces_a_burst_of_edits_into_one_run(app: PipelineApp) -> None:
    app.controls.run()
    runs: list[str] = []
    app.session.subscribe(lambda event, _: runs.append(event) if event == "run" else None)
    app.controls.debounce_s = 0.2
    app.controls.auto_run.value = True
    for length in (2.0, 3.0, 4.0):
        app.editor("fibre").controls["length_m"].value = length
    assert wait_for(lambda: bool(runs) and not app.controls.run_pending)
    assert runs == ["run"]
    assert app.session.config("fibre").length_m == 4.0


def test_failing_node_is_named_in_the_panel_and_coloured(app: PipelineApp) -> None:
    app.editor("fibre").controls["broken"].value = True
    app.controls.run_button.click()
    errors = app.controls.errors.value
    assert "node &#x27;fibre&#x27; failed" in errors
    assert "fibre snapped" in errors
    assert app.dag.statuses["fibre"] == "failed"
    assert app.dag.statuses["duration"] == "skipped"
    assert app.dag.statuses["spectrum"] == "ran"
    assert app.controls.status_line.value.startswith("ran 3, hit 0, failed 1, skipped 1")


def test_a_run_that_cannot_start_is_reported_not_raised(
    session: LiveSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable_cache() -> None:
        raise CacheError("cache backend 'redis://lab:6379' unreachable")

    monkeypatch.setattr(session, "run", unreachable_cache)
    controls = RunControls(session)
    controls.run_button.click()
    assert "run failed" in controls.errors.value
    assert "unreachable" in controls.errors.value
    assert not controls.run_pending


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


# --- ArtifactView and the app ---------------------------------------------------------------


def test_artifact_view_shows_an_image_after_a_run(session: LiveSession) -> None:
    view = ArtifactView(session, "fibre")
    assert view.output.outputs == ()
    session.run()
    images = [o for o in view.output.outputs if "image/png" in o["data"]]
    assert len(images) == 1
    assert "gdd_ps2" in view.metrics.value
    session.update("fibre", length_m=2.0)
    session.run()
    assert len([o for o in view.output.outputs if "image/png" in o["data"]]) == 1  # replaced


def test_plots_missing_after_disk_hits_are_explained_and_one_click_redraws_them(
    tmp_path: Path,
) -> None:
    from phys_pipeline.cache import DiskCache

    LiveSession(optics_nodes(), SimpleState(), cache=DiskCache(tmp_path)).run()
    live = LiveSession(optics_nodes(), SimpleState(), cache=DiskCache(tmp_path))
    view, overview = ArtifactView(live, "fibre"), ArtifactView(live)
    assert view.note.value == "" and view.rerun_button.layout.display == "none"
    live.run()  # everything from disk: lazy plots are not cached
    assert not [o for o in view.output.outputs if "image/png" in o["data"]]
    assert "plots are not cached" in view.note.value
    assert view.rerun_button.layout.display != "none"
    assert view.rerun_button.description == "Rerun fibre"
    assert "5 node(s) loaded from the cache" in overview.note.value
    view.rerun_button.click()
    result = live.last_result
    assert result is not None and result.ran == ["fibre"] and len(result.hits) == 4
    assert len([o for o in view.output.outputs if "image/png" in o["data"]]) == 1
    assert view.note.value == "" and view.rerun_button.layout.display == "none"
    assert overview.note.value == ""  # a plot is shown now


def test_selecting_a_node_shows_its_editor_and_artifacts(app: PipelineApp) -> None:
    app.controls.run()
    app.dag.selected = "fibre"  # what a click in the browser does
    assert app._editor_box.children == (app.editors["fibre"],)
    assert app.node_picker.value == "fibre"
    assert app.artifacts.node_id == "fibre"
    assert any("image/png" in o["data"] for o in app.artifacts.output.outputs)
    app.node_picker.value = ""
    assert app.dag.selected == "" and app.artifacts.node_id is None


def test_sweeps_show_a_sweep_table(app: PipelineApp) -> None:
    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"fwhm_ps": [0.5, 2.0]})])
    swept = PipelineApp(nodes, SimpleState())
    try:
        swept.controls.run()
        assert "pulse[fwhm_ps=0.5]" in swept.dag.statuses
        assert "phase_span" in swept.artifacts.sweep.value
        assert "fwhm_ps" in swept.artifacts.sweep.value
    finally:
        swept.close()


def test_a_one_parameter_sweep_is_plotted_metric_against_parameter() -> None:
    from phys_pipeline.views import sweep_series
    from phys_pipeline.widgets.artifact_view import PNG_MAGIC

    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"fwhm_ps": [0.5, 2.0, 1.0]})])
    live = LiveSession(nodes, SimpleState())
    view = ArtifactView(live)
    assert view.sweep_plot.layout.display == "none"
    result = live.run()
    assert bytes(view.sweep_plot.value).startswith(PNG_MAGIC)
    assert view.sweep_plot.layout.display != "none"
    param, series = sweep_series(result)  # type: ignore[misc]
    assert param == "fwhm_ps"
    assert [x for x, _ in series["pulse.t0_ps"]] == [0.5, 1.0, 2.0]  # sorted by the parameter
    assert series["pulse.t0_ps"][2][1] == pytest.approx(2.0 / 1.665)
    view.show("pulse[fwhm_ps=2]")  # one variant selected: that base node's sweep
    assert bytes(view.sweep_plot.value).startswith(PNG_MAGIC)
    assert set(sweep_series(result, "pulse")[1]) == {"pulse.t0_ps"}  # type: ignore[index]


def test_a_sweep_over_text_values_gets_its_table_but_no_plot() -> None:
    nodes = expand_sweep(optics_nodes(), [SweepSpec("pulse", {"units": ["fs", "ps"]})])
    live = LiveSession(nodes, SimpleState())
    view = ArtifactView(live)
    live.run()
    assert "units" in view.sweep.value
    assert bytes(view.sweep_plot.value) == b"" and view.sweep_plot.layout.display == "none"


def test_closing_the_app_unsubscribes_its_views(session: LiveSession) -> None:
    app = PipelineApp.from_session(session)
    app.editor("grid")
    app.close()
    app.close()  # closing twice is harmless
    assert session._listeners == []


def test_app_uses_the_cache_a_cache_config_describes(tmp_path: Path) -> None:
    import warnings

    from phys_pipeline.cache import CacheConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CacheWarning would mean the cache is not used
        first = PipelineApp(optics_nodes(), SimpleState(), cache=CacheConfig(disk_root=tmp_path))
        first.controls.run()
        first.close()
        second = PipelineApp(optics_nodes(), SimpleState(), cache=CacheConfig(disk_root=tmp_path))
        result = second.controls.run()
        second.close()
    assert result is not None and result.ran == [] and set(result.hits) == ALL


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
