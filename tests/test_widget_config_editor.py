"""ConfigEditor: one row per config field, its control chosen from type and bounds, its slider
centred on the value, its unit beside it; edits go through the session's validation, and a
refused value is never clamped or applied."""

from __future__ import annotations

import enum
import math
from typing import Any, Literal

import pytest
from pydantic import ConfigDict, Field, field_validator

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

import ipywidgets as w
from stages.optics import GridCfg, Shape

from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult
from phys_pipeline.widgets import ConfigEditor, config_controls
from phys_pipeline.widgets.config_editor import (
    NAME_WIDTH,
    SLIDER_WIDTH,
    UNIT_WIDTH,
    VALUE_WIDTH,
    FieldRow,
    IntegerSlider,
    LinearSlider,
    LogSlider,
    log_window,
    make_slider,
    slider_step,
    slides_in_log,
)


def test_narrow_int_range_gets_a_slider_over_its_bounds() -> None:
    from phys_pipeline.examples.ultrafast import PhaseFitCfg

    (spec,) = [s for s in config_controls(PhaseFitCfg) if s.name == "degree"]
    row = FieldRow(spec, 3, lambda name, value: None)
    slider = row.control
    assert isinstance(slider, IntegerSlider) and isinstance(slider, w.IntSlider)
    assert (slider.min, slider.max, slider.value) == (2, 4, 3)
    assert slider.continuous_update is False and slider.readout is False
    assert slider.tooltip == "degree of the polynomial fitted to phi(omega)"
    assert row.entry.value == "3"


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


def test_half_bounded_numbers_get_number_boxes_and_arrays_are_skipped(
    session: LiveSession,
) -> None:
    editor = ConfigEditor(session, "grid")
    assert isinstance(editor.controls["span"], w.FloatText)
    assert editor.rows["span"].slider is None
    assert isinstance(ConfigEditor(session, "pulse").controls["units"], w.Text)
    assert {"name", "tags", "weights"}.isdisjoint(editor.controls)
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
    assert editor.controls["max_iter"].value == "40"  # shown as the config holds it
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
    assert editor.controls["cutoff_thz"].value == "3.0"
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


def test_linear_sliders_of_the_examples_hold_their_defaults_exactly() -> None:
    """The default is a slider position (min + k * step) on a fine grid."""
    sliders = 0
    for cfg in example_configs():
        for spec in config_controls(cfg):
            default = getattr(cfg, spec.name)
            slider = make_slider(spec, default)
            if not isinstance(slider, LinearSlider):
                continue
            where = f"{type(cfg).__name__}.{spec.name}={default!r} (step {slider.step})"
            assert slider.value == default, where
            index = round((default - slider.min) / slider.step)
            assert slider.min + index * slider.step == pytest.approx(default, abs=1e-12), where
            assert (slider.max - slider.min) / slider.step >= 1000, where  # still fine-grained
            sliders += 1
    assert sliders >= 8  # the examples do have narrow bounded float fields


def test_slider_step_puts_an_off_grid_default_on_the_grid() -> None:
    # 0..100 m with a 1 cm default: a span/100 step (1 m) could never show it
    step = slider_step(0.0, 100.0, 0.01)
    assert step == 0.01
    assert slider_step(10.0, 1e6, 2000.0) == 10.0  # (2000 - 10) / 10 positions from min


# --- slider spans ------------------------------------------------------------------------------


def test_a_range_wide_around_its_value_slides_in_log_a_narrow_one_whole() -> None:
    assert slides_in_log(0.0, 100.0, 0.5)  # 0.5 m of fibre: not at the far left of 0..100 m
    assert slides_in_log(10.0, 1e6, 2000.0)
    assert slides_in_log(0.0, 1.0, 1e-3)
    assert not slides_in_log(0.0, 10.0, 1.0)  # a scale factor: its whole range fits
    assert not slides_in_log(0.0, 90.0, 30.0)  # an angle
    assert not slides_in_log(0.0, 100.0, 0.0)  # a log scale has no 0 to centre on
    assert not slides_in_log(-1000.0, 1000.0, 36.16)  # a log scale has no sign change


def test_a_log_window_centres_on_the_value_within_the_bounds() -> None:
    assert log_window(0.0, 100.0, 0.5) == (0.05, 5.0)
    assert log_window(10.0, 1e6, 20.0) == (10.0, 1000.0)  # held at the lower bound
    assert log_window(0.0, 100.0, 50.0) == (1.0, 100.0)  # and at the upper one


def test_a_slider_centres_on_the_value_instead_of_spanning_the_whole_range(
    session: LiveSession,
) -> None:
    session.update("fibre", length_m=0.5)
    slider = ConfigEditor(session, "fibre").controls["length_m"]  # bounded 0 .. 100 m
    assert isinstance(slider, LogSlider) and isinstance(slider, w.FloatLogSlider)
    assert (slider.base, slider.value) == (10.0, 0.5)
    assert (10**slider.min, 10**slider.max) == pytest.approx((0.05, 5.0))
    assert (slider.max - slider.min) / slider.step >= 1000  # fine enough to drag
    assert slider.continuous_update is False and slider.readout is False


def test_a_value_typed_far_away_recentres_the_slider(session: LiveSession) -> None:
    session.update("fibre", length_m=0.5)
    row = ConfigEditor(session, "fibre").rows["length_m"]
    row.entry.value = "0.001"
    assert session.config("fibre").length_m == 0.001
    assert (10**row.slider.min, 10**row.slider.max) == pytest.approx((1e-4, 1e-2))
    assert row.slider.value == 0.001
    row.entry.value = "0.002"  # inside the span: the slider stays put
    assert (10**row.slider.min, 10**row.slider.max) == pytest.approx((1e-4, 1e-2))
    assert row.slider.value == 0.002


def test_sliding_to_the_end_of_the_span_recentres_it_to_slide_further(
    session: LiveSession,
) -> None:
    session.update("fibre", length_m=0.5)
    row = ConfigEditor(session, "fibre").rows["length_m"]
    slid_to(row.slider, 5.0)
    assert session.config("fibre").length_m == 5.0
    assert (10**row.slider.min, 10**row.slider.max) == pytest.approx((0.5, 50.0))


def test_a_wide_int_range_slides_in_log_over_whole_numbers(session: LiveSession) -> None:
    row = ConfigEditor(session, "grid").rows["N"]  # 256 in 16 .. 4096
    assert isinstance(row.slider, LogSlider)
    assert (10**row.slider.min, 10**row.slider.max) == pytest.approx((25.6, 2560.0))
    slid_to(row.slider, 1000.0)
    n = session.config("grid").N
    assert type(n) is int and n == pytest.approx(1000, rel=0.01)
    assert row.entry.value == str(n)


def test_sliders_and_boxes_have_the_same_widths_on_every_row(session: LiveSession) -> None:
    """Names, sliders, values and units line up in columns: a number without a slider keeps
    its value in the value column; dropdowns, checkboxes and text span slider and value. A
    row wraps, name above the rest, where there is no room for one line."""
    rows = {**ConfigEditor(session, "grid").rows, **ConfigEditor(session, "pulse").rows}
    for name, row in rows.items():
        line = row.box.children[0]
        assert line.layout.flex_flow == "row wrap"
        label, controls = line.children
        assert label is row.name_label and label.value == name
        assert label.layout.width == NAME_WIDTH
        *cells, entry, unit = controls.children
        assert entry is row.entry and unit is row.unit_label
        assert unit.layout.width == UNIT_WIDTH
        if row.spec.number is not None:
            assert [cell.layout.width for cell in cells] == [SLIDER_WIDTH], name
            assert entry.layout.width == VALUE_WIDTH, name
        else:
            assert (
                cells == []
                and SLIDER_WIDTH in entry.layout.width
                and VALUE_WIDTH in (entry.layout.width)
            )
    span_cells = rows["span"].box.children[0].children[1].children
    assert isinstance(span_cells[0], w.HTML) and span_cells[0].value == ""  # no slider


def test_a_slid_linear_value_is_the_decimal_of_its_position(session: LiveSession) -> None:
    row = ConfigEditor(session, "pulse").rows["fwhm_ps"]  # 1.0 in 0.05 .. 10, step 0.005
    assert row.slider.step == 0.005
    sent = row.slider.min + 226 * row.slider.step  # what the browser sends
    assert sent == 1.1800000000000002
    row.slider.value = sent
    assert session.config("pulse").fwhm_ps == 1.18
    assert row.entry.value == "1.18"


@pytest.fixture
def demo_session() -> LiveSession:
    """The ultrafast demo DAG: grid (window_fs 10 .. 1e6 fs, default 2000) -> pulse -> ..."""
    from phys_pipeline.demo import build_nodes

    session = LiveSession(build_nodes(), SimpleState(payload=None))
    session.update("grid", window_fs=2000.0)
    return session


def slid_to(slider: LogSlider, value: float) -> float:
    """What the browser sends when the handle is dragged to the position nearest ``value``."""
    position = slider.min + round((math.log10(value) - slider.min) / slider.step) * slider.step
    slider.value = 10**position
    return 10**position


def test_a_log_slider_stands_beside_a_box_holding_the_exact_value(
    demo_session: LiveSession,
) -> None:
    editor = ConfigEditor(demo_session, "grid")
    slider, box = editor.controls["window_fs"], editor.entries["window_fs"]
    assert isinstance(slider, LogSlider)
    assert (10**slider.min, 10**slider.max) == pytest.approx((200.0, 20000.0))
    assert slider.value == 2000.0 and box.value == "2000.0"
    assert isinstance(box, w.Text) and box.continuous_update is False
    assert isinstance(
        ConfigEditor(demo_session, "glass").controls["beta2_fs2_per_mm"], w.FloatSlider
    )


def test_log_sliders_of_the_examples_hold_their_defaults_exactly() -> None:
    """Dragged away and back to its position, the default comes back unchanged."""
    sliders = 0
    for cfg in example_configs():
        for spec in config_controls(cfg):
            default = getattr(cfg, spec.name)
            slider = make_slider(spec, default)
            if not isinstance(slider, LogSlider):
                continue
            assert slider.value == default
            away = slider.proposal(slid_to(slider, default * 3.0))
            assert away != default
            sent = slid_to(slider, default)
            where = f"{type(cfg).__name__}.{spec.name}={default!r} (slider sent {sent!r})"
            assert slider.proposal(sent) == default, where
            sliders += 1
    assert sliders >= 8  # window_fs, fwhm_fs, t0_ps, length_m, separation_mm, ...


def test_a_log_slider_shows_a_value_outside_its_bounds_at_its_end() -> None:
    """A policy value set in code is not checked by the policy model until edited: its box
    shows it as it is, the slider sits at the nearer end."""
    from phys_pipeline.examples.ultrafast import FrequencyGridCfg

    (spec,) = [s for s in config_controls(FrequencyGridCfg) if s.name == "window_fs"]
    for value in (0.0, -5.0, 2e6, 10.0):
        row = FieldRow(spec, value, lambda name, value: None)
        assert row.entry.value == str(value)
        slider = row.slider
        log = isinstance(slider, LogSlider)
        low, high = (10**slider.min, 10**slider.max) if log else (slider.min, slider.max)
        assert slider.value == pytest.approx(min(max(value, low), high))


def test_moving_a_log_slider_updates_the_config_through_the_model(
    demo_session: LiveSession,
) -> None:
    demo_session.run()
    editor = ConfigEditor(demo_session, "grid")
    sent = slid_to(editor.controls["window_fs"], 8000.0)
    value = demo_session.config("grid").window_fs
    assert value == float(f"{sent:.4g}") != sent  # 10**3.90... rounded to the step's digits
    assert value == pytest.approx(8000.0, rel=0.01)
    assert editor.controls["window_fs"].value == value
    assert editor.entries["window_fs"].value == str(value)
    assert set(demo_session.stale()) == set(demo_session.status)  # grid is every node's root
    assert demo_session.stale()["grid"].reasons == ("config field window_fs changed",)


def test_a_value_typed_beside_a_log_slider_is_kept_exactly(demo_session: LiveSession) -> None:
    editor = ConfigEditor(demo_session, "grid")
    editor.entries["window_fs"].value = "1234.5"  # on no slider position
    assert editor.errors["window_fs"].value == ""
    assert demo_session.config("grid").window_fs == 1234.5
    assert editor.controls["window_fs"].value == 1234.5


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
    assert editor.controls["span"].value == 20.0
    assert session.stale() == {}
    assert all(s == "ran" for s in session.status.values())


def test_text_failing_its_validator_shows_the_message(session: LiveSession) -> None:
    editor = ConfigEditor(session, "pulse")
    stale_before = set(session.stale())
    editor.controls["units"].value = "furlongs"
    assert "should match pattern" in editor.errors["units"].value
    assert session.config("pulse").units == "ps"
    assert editor.controls["units"].value == "ps"
    assert set(session.stale()) == stale_before
    editor.controls["units"].value = "fs"  # a valid value clears the error
    assert editor.errors["units"].value == ""
    assert editor.errors["units"].layout.display == "none"
    assert session.config("pulse").units == "fs"


def test_editor_follows_edits_made_elsewhere(session: LiveSession) -> None:
    editor = ConfigEditor(session, "grid")
    session.update("grid", N=512)
    assert editor.controls["N"].value == 512
    assert editor.entries["N"].value == "512"


# --- refusals on every kind of field ------------------------------------------------------------


class Mount(enum.Enum):
    FIXED = "fixed"
    GIMBAL = "gimbal"


class BenchCfg(StageConfig):
    """One field of every kind a row is made for; each refuses some value."""

    count: int = Field(8, ge=1, le=64)
    gain: float = Field(2.0, ge=0.0, le=10.0)
    length_m: float = Field(0.5, ge=0.0, le=100.0, json_schema_extra={"unit": "m"})
    steps: int = Field(100, ge=1)
    span: float = Field(20.0, gt=0.0)
    cooled: bool = False
    laser: Literal["cw", "pulsed"] = "pulsed"
    mount: Mount = Mount.FIXED
    label: str = Field("bench", pattern=r"^[a-z]+$")
    cutoff_thz: float | None = Field(3.0, gt=0.0)

    @field_validator("cooled")
    @classmethod
    def _no_cooler(cls, cooled: bool) -> bool:
        if cooled:
            raise ValueError("no cooler is fitted")
        return cooled

    @field_validator("laser")
    @classmethod
    def _cw_laser_away(cls, laser: str) -> str:
        if laser == "cw":
            raise ValueError("the cw laser is away for repair")
        return laser

    @field_validator("mount")
    @classmethod
    def _no_gimbal(cls, mount: Mount) -> Mount:
        if mount is Mount.GIMBAL:
            raise ValueError("no gimbal on this bench")
        return mount


class BenchStage(PipelineStage[SimpleState, BenchCfg]):
    policy_keys = ()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=state.deepcopy(), metrics={"gain": self.cfg.gain})


@pytest.fixture
def bench() -> LiveSession:
    live = LiveSession([NodeSpec("bench", [], BenchStage(BenchCfg()))], SimpleState())
    live.run()
    return live


REFUSALS = [
    # field, widget ("entry" or "slider"), value set there, words of pydantic's message
    ("count", "entry", "0", "greater than or equal to 1"),
    ("count", "entry", "3.5", "fractional part"),
    ("count", "entry", "many", "valid integer"),
    ("count", "slider", 100, "less than or equal to 64"),
    ("gain", "entry", "-0.3", "greater than or equal to 0"),
    ("gain", "entry", "abc", "valid number"),
    ("gain", "slider", 12.0, "less than or equal to 10"),
    ("length_m", "entry", "-0.3", "greater than or equal to 0"),
    ("length_m", "entry", "abc", "valid number"),
    ("length_m", "entry", "", "valid number"),
    ("length_m", "slider", 250.0, "less than or equal to 100"),
    ("length_m", "slider", 500.0, "less than or equal to 100"),  # on the grid, past the span
    ("steps", "entry", 0, "greater than or equal to 1"),
    ("span", "entry", -3.0, "greater than 0"),
    ("cooled", "entry", True, "no cooler is fitted"),
    ("laser", "entry", "cw", "away for repair"),
    ("mount", "entry", Mount.GIMBAL, "no gimbal"),
    ("label", "entry", "Bench 2", "should match pattern"),
    ("cutoff_thz", "entry", "-1", "greater than 0"),
    ("cutoff_thz", "entry", "fast", "valid number"),
]


@pytest.mark.parametrize(("field", "where", "value", "message"), REFUSALS)
def test_a_refused_value_is_named_not_clamped_and_the_row_shows_the_config_again(
    bench: LiveSession, field: str, where: str, value: Any, message: str
) -> None:
    editor = ConfigEditor(bench, "bench")
    row = editor.rows[field]
    before = bench.config("bench")
    shown = (row.entry.value, None if row.slider is None else row.slider.value)
    events: list[str] = []
    bench.subscribe(lambda event, _: events.append(event))
    (row.entry if where == "entry" else row.slider).value = value
    assert message in editor.errors[field].value
    assert editor.errors[field].layout.display != "none"
    assert "pp-invalid" in row.entry._dom_classes
    assert bench.config("bench") == before  # nothing applied, not even a clamped value
    assert events == [] and bench.stale() == {}
    assert (row.entry.value, None if row.slider is None else row.slider.value) == shown


def test_the_next_accepted_value_clears_the_message(bench: LiveSession) -> None:
    editor = ConfigEditor(bench, "bench")
    editor.entries["length_m"].value = "-0.3"
    assert editor.errors["length_m"].value
    editor.entries["length_m"].value = "0.7"
    assert bench.config("bench").length_m == 0.7
    assert editor.errors["length_m"].value == ""
    assert editor.errors["length_m"].layout.display == "none"
    assert "pp-invalid" not in editor.entries["length_m"]._dom_classes


def test_the_unit_of_a_field_is_shown_beside_its_value(bench: LiveSession) -> None:
    rows = ConfigEditor(bench, "bench").rows
    assert rows["length_m"].spec.unit == "m"
    assert rows["length_m"].unit_label.value == "m"
    assert rows["gain"].unit_label.value == ""


def test_the_examples_show_the_units_their_field_names_carry(demo_session: LiveSession) -> None:
    assert ConfigEditor(demo_session, "glass").rows["length_m"].unit_label.value == "m"
    assert ConfigEditor(demo_session, "pulse").rows["fwhm_fs"].unit_label.value == "fs"
    assert ConfigEditor(demo_session, "grid").rows["window_fs"].unit_label.value == "fs"
