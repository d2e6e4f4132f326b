"""Config edits (what ``LiveSession.update`` and sweeps go through): an edit is a copy of the
config validated by its model, an invalid value is a ConfigError naming node, field and value,
and every field the edit does not name keeps its exact value (no ``model_dump`` round trip).
A stage is edited by copying it around the new config; the user's own stage is never changed."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from stages import optics
from stages.media import Glass, Medium

from phys_pipeline import _edit as edit
from phys_pipeline.errors import ConfigError
from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

WHERE = "node 'grid'"


class PropagateCfg(StageConfig):
    """A config whose JSON dump is not its value: a step the JSON form rounds, an infinite
    cutoff (JSON null), an excluded seed, a nested medium, maybe a subclass of it."""

    dt_fs: float = 0.1
    cutoff_fs: float = math.inf
    seed: int = Field(0, exclude=True)
    medium: Medium = Medium()
    length_mm: float = 1.0

    @field_serializer("dt_fs", when_used="json")
    def _rounded(self, dt_fs: float) -> float:
        return round(dt_fs, 1)


def lengthened(cfg: PropagateCfg) -> PropagateCfg:
    """``cfg`` with only ``length_mm`` edited."""
    edited = edit.replace_config(cfg, {"length_mm": 2.0}, "node 'glass'")
    assert edited.length_mm == 2.0
    return edited


# --- replace_config: validation -------------------------------------------------------------


def test_an_edit_is_a_new_config_with_the_change() -> None:
    cfg = GridCfg(name="grid", N=64, span=2.0)
    edited = edit.replace_config(cfg, {"N": 128}, WHERE)
    assert type(edited) is GridCfg and edited is not cfg
    assert (edited.N, edited.span, edited.name) == (128, 2.0, "grid")
    assert cfg.N == 64


def test_an_edited_value_is_validated_by_the_model() -> None:
    edited = edit.replace_config(GridCfg(), {"N": "128"}, WHERE)
    assert edited.N == 128 and type(edited.N) is int


@pytest.mark.parametrize(
    ("cfg", "field", "value", "reason"),
    [
        (GridCfg(), "N", 2, "greater than or equal to 4"),
        (GridCfg(), "span", -1.0, "greater than 0"),
        (PhaseCfg(), "window", "kaiser", "'none' or 'hann'"),
    ],
    ids=["below-bound", "not-positive", "not-a-choice"],
)
def test_a_value_the_model_rejects_is_a_config_error_naming_node_field_and_value(
    cfg: StageConfig, field: str, value: Any, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        edit.replace_config(cfg, {field: value}, WHERE)
    error = caught.value
    assert (error.owner, error.field, error.value) == (WHERE, field, value)
    assert str(error).startswith(f"{WHERE}: invalid value for field {field!r}: {value!r}")
    assert isinstance(error.__cause__, ValidationError)


def test_an_unknown_field_is_a_config_error_listing_the_fields() -> None:
    with pytest.raises(ConfigError, match="fields: N, name, span, tags") as caught:
        edit.replace_config(GridCfg(), {"n": 32}, WHERE)
    assert (caught.value.owner, caught.value.field, caught.value.value) == (WHERE, "n", 32)


def test_a_rejected_nested_value_is_named_by_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        edit.replace_config(PropagateCfg(), {"medium": {"index": "glass"}}, "node 'glass'")
    assert (caught.value.field, caught.value.value) == ("medium.index", "glass")


class WindowCfg(StageConfig):
    """A spectral window: ``low_thz`` must stay below ``high_thz``."""

    low_thz: float = 100.0
    high_thz: float = 400.0

    @model_validator(mode="after")
    def _ordered(self) -> WindowCfg:
        if self.low_thz >= self.high_thz:
            raise ValueError("low_thz must be below high_thz")
        return self


def test_an_edit_breaking_a_cross_field_check_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="low_thz must be below high_thz") as caught:
        edit.replace_config(WindowCfg(), {"low_thz": 500.0}, "node 'window'")
    assert caught.value.owner == "node 'window'"


def test_an_edit_breaking_a_cross_field_check_names_the_edited_field_and_value() -> None:
    with pytest.raises(ConfigError) as caught:
        edit.replace_config(WindowCfg(), {"low_thz": 500.0}, "node 'window'")
    assert (caught.value.field, caught.value.value) == ("low_thz", 500.0)


# --- replace_config: unchanged fields keep their exact values -------------------------------


def test_a_value_the_json_form_rounds_is_kept_exactly() -> None:
    assert lengthened(PropagateCfg(dt_fs=0.104)).dt_fs == 0.104


def test_an_infinite_float_is_kept() -> None:
    assert lengthened(PropagateCfg(cutoff_fs=math.inf)).cutoff_fs == math.inf


def test_an_excluded_field_is_kept() -> None:
    assert lengthened(PropagateCfg(seed=7)).seed == 7


def test_a_nested_model_is_kept_as_it_is() -> None:
    cfg = PropagateCfg(medium=Medium(index=1.45))
    assert lengthened(cfg).medium is cfg.medium


def test_a_subclass_in_a_base_typed_field_keeps_its_class_and_values() -> None:
    medium = lengthened(PropagateCfg(medium=Glass(dispersion_fs2_per_mm=44.0))).medium
    assert type(medium) is Glass and medium.dispersion_fs2_per_mm == 44.0


def test_an_array_field_is_kept_as_the_same_array() -> None:
    cfg = optics.GridCfg(weights=np.array([0.5, 1.0, 0.5]))
    assert edit.replace_config(cfg, {"N": 512}, WHERE).weights is cfg.weights


class LooseSettings(BaseModel):
    """A policy model that keeps keys it does not describe."""

    model_config = ConfigDict(extra="allow", frozen=True)
    dispersion_scale: float = 1.0


def test_extra_values_of_a_model_that_allows_them_are_kept() -> None:
    settings = LooseSettings(dispersion_scale=1.0, lab="B")
    edited = edit.replace_config(settings, {"dispersion_scale": 2.0}, "policy")
    assert (edited.dispersion_scale, edited.lab) == (2.0, "B")


class FocusCfg(StageConfig):
    """``lambda`` is a Python keyword, so the wavelength field goes by an alias."""

    wavelength_nm: float = Field(800.0, alias="lambda")
    focal_mm: float = 50.0


def test_a_config_with_an_aliased_field_can_be_edited() -> None:
    cfg = FocusCfg(**{"lambda": 1030.0})
    edited = edit.replace_config(cfg, {"focal_mm": 75.0}, "node 'lens'")
    assert (edited.wavelength_nm, edited.focal_mm) == (1030.0, 75.0)


class TiltCfg(StageConfig):
    """An angle given in degrees and stored in radians."""

    angle: float = 0.0
    passes: int = 1

    @field_validator("angle")
    @classmethod
    def _to_radians(cls, degrees: float) -> float:
        return math.radians(degrees)


def test_a_converting_validator_is_not_applied_again_to_an_unchanged_field() -> None:
    cfg = TiltCfg(angle=90.0)
    assert edit.replace_config(cfg, {"passes": 2}, "node 'tilt'").angle == cfg.angle


def test_a_converting_validator_converts_the_new_value_once() -> None:
    edited = edit.replace_config(TiltCfg(angle=90.0), {"angle": 45.0}, "node 'tilt'")
    assert edited.angle == pytest.approx(math.radians(45.0))


def test_changes_judged_together_by_a_cross_field_check() -> None:
    """Moving a window up: ``low`` above the old ``high`` is fine once ``high`` moves too."""
    edited = edit.replace_config(
        WindowCfg(), {"low_thz": 500.0, "high_thz": 900.0}, "node 'window'"
    )
    assert (edited.low_thz, edited.high_thz) == (500.0, 900.0)


def test_changes_still_wrong_together_name_a_field_the_check_refuses() -> None:
    with pytest.raises(ConfigError, match="low_thz must be below high_thz") as caught:
        edit.replace_config(WindowCfg(), {"low_thz": 500.0, "high_thz": 450.0}, "node 'w'")
    assert (caught.value.field, caught.value.value) == ("low_thz", 500.0)


class TiltedWindowCfg(WindowCfg, TiltCfg):
    """A window with a tilt given in degrees and stored in radians."""


def test_changes_judged_together_leave_a_converted_unchanged_field_alone() -> None:
    cfg = TiltedWindowCfg(angle=30.0)
    edited = edit.replace_config(cfg, {"low_thz": 500.0, "high_thz": 900.0}, "node 'w'")
    assert edited.angle == cfg.angle == pytest.approx(math.radians(30.0))
    assert (edited.low_thz, edited.high_thz) == (500.0, 900.0)


def test_a_converted_field_judged_in_the_second_pass_is_converted_once() -> None:
    cfg = TiltedWindowCfg(angle=30.0)
    edited = edit.replace_config(
        cfg, {"low_thz": 500.0, "angle": 60.0, "high_thz": 900.0}, "node 'w'"
    )
    assert edited.angle == pytest.approx(math.radians(60.0))


def test_a_failed_edit_leaves_the_config_as_it_was() -> None:
    cfg = WindowCfg()
    with pytest.raises(ConfigError):
        edit.replace_config(cfg, {"low_thz": 500.0}, "node 'window'")
    assert (cfg.low_thz, cfg.high_thz) == (100.0, 400.0)


# --- replace_config: plain dataclass configs ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AmplifierCfg:
    """A stdlib dataclass config (no pydantic model): edited by ``dataclasses.replace``."""

    gain_db: float = 10.0
    noise_figure_db: float = dataclasses.field(init=False, default=3.0)


def test_a_plain_dataclass_config_is_edited_by_replace() -> None:
    cfg = AmplifierCfg()
    edited = edit.replace_config(cfg, {"gain_db": 20.0}, "node 'amp'")
    assert edited == AmplifierCfg(gain_db=20.0) and cfg.gain_db == 10.0


def test_a_dataclass_field_that_cannot_be_set_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="init=False") as caught:
        edit.replace_config(AmplifierCfg(), {"noise_figure_db": 5.0}, "node 'amp'")
    assert (caught.value.owner, caught.value.field, caught.value.value) == (
        "node 'amp'",
        "noise_figure_db",
        5.0,
    )


# --- replace_stage_config -------------------------------------------------------------------


def test_the_stage_is_copied_around_the_new_config() -> None:
    stage = PhaseStage(PhaseCfg(name="p1", gdd=10.0))
    cfg = edit.replace_config(stage.cfg, {"gdd": -20.0}, "node 'p1'")
    clone = edit.replace_stage_config(stage, cfg)
    assert type(clone) is PhaseStage and clone is not stage
    assert clone.cfg is cfg and stage.cfg.gdd == 10.0


@dataclasses.dataclass(frozen=True)
class Attenuator(PipelineStage[SimpleState, PhaseCfg]):
    """A frozen dataclass stage holding a calibration beside its config."""

    cfg: PhaseCfg
    calibration: np.ndarray

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=state.deepcopy())


def test_a_frozen_dataclass_stage_is_copied_with_its_other_attributes() -> None:
    stage = Attenuator(PhaseCfg(gdd=10.0), calibration=np.linspace(0.0, 1.0, 4))
    clone = edit.replace_stage_config(stage, PhaseCfg(gdd=5.0))
    assert type(clone) is Attenuator and clone.cfg.gdd == 5.0
    assert clone.calibration is stage.calibration
    assert stage.cfg.gdd == 10.0


def test_a_session_update_leaves_the_users_stage_untouched() -> None:
    phase = PhaseStage(PhaseCfg(name="p1", gdd=10.0))
    live = LiveSession(
        [
            NodeSpec(id="grid", stage=GridStage(GridCfg(N=16))),
            NodeSpec(id="p1", deps=["grid"], stage=phase),
        ],
        SimpleState(),
    )
    live.update("p1", gdd=-20.0)
    assert live.config("p1").gdd == -20.0
    assert phase.cfg.gdd == 10.0
