"""Units of config fields: declared beside a field, read by field_unit, and part of no key."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import pytest
from pydantic import Field

from phys_pipeline.fingerprint import Fingerprinter
from phys_pipeline.hashing import config_hash
from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import PipelineStage, SimpleState, StageConfig, StageResult
from phys_pipeline.units import Unit, field_unit


class FibreCfg(StageConfig):
    length_m: float = Field(0.5, ge=0.0, json_schema_extra={"unit": "m"})
    fwhm: Annotated[float, Unit("fs")] = 30.0
    both: Annotated[float, Unit("ps")] = Field(1.0, json_schema_extra={"unit": "fs"})
    gain: float = 2.0


@dataclasses.dataclass(frozen=True)
class GratingCfg:
    separation: float = dataclasses.field(default=100.0, metadata={"unit": "mm"})
    incidence: Annotated[float, Unit("deg")] = 30.0
    passes: int = 2


def test_a_unit_is_declared_in_the_field_or_its_annotation() -> None:
    assert field_unit(FibreCfg, "length_m") == "m"
    assert field_unit(FibreCfg(), "fwhm") == "fs"
    assert field_unit(FibreCfg, "both") == "ps"  # the annotation's marker comes first
    assert field_unit(FibreCfg, "gain") is None


def test_dataclass_configs_declare_units_in_field_metadata_or_annotation() -> None:
    assert field_unit(GratingCfg, "separation") == "mm"
    assert field_unit(GratingCfg(), "incidence") == "deg"
    assert field_unit(GratingCfg, "passes") is None


def test_an_unknown_field_or_a_non_config_is_an_error() -> None:
    with pytest.raises(KeyError):
        field_unit(FibreCfg, "lenght_m")
    with pytest.raises(KeyError):
        field_unit(GratingCfg, "separatoin")
    with pytest.raises(TypeError, match="pydantic model or a dataclass"):
        field_unit(dict, "x")


def test_a_pint_quantity_carries_its_own_units() -> None:
    pint = pytest.importorskip("pint")
    ureg = pint.UnitRegistry()

    class PintCfg(StageConfig):
        length: Any = ureg.Quantity(1.5, "m")
        gdd: Any = ureg.Quantity(36.0, "fs**2/mm")

    assert field_unit(PintCfg, "length") == "m"  # the class's default
    assert field_unit(PintCfg(gdd=ureg.Quantity(1.0, "ps**2/km")), "gdd") == "ps²/km"


def test_the_shipped_examples_declare_the_units_their_names_carry() -> None:
    from phys_pipeline.examples.soliton import SechPulseCfg
    from phys_pipeline.examples.ultrafast import DispersiveFibreCfg, GaussianPulseCfg

    assert field_unit(DispersiveFibreCfg, "length_m") == "m"
    assert field_unit(DispersiveFibreCfg, "beta2_fs2_per_mm") == "fs²/mm"
    assert field_unit(GaussianPulseCfg, "fwhm_fs") == "fs"
    assert field_unit(GaussianPulseCfg, "chirp") is None
    assert field_unit(SechPulseCfg, "t0_ps") == "ps"


def stage_and_config(unit: str | None) -> tuple[PipelineStage, StageConfig]:
    """The same stage and config class (same module and qualified name) with or without a
    declared unit on ``length``, by both spellings."""
    extra = {"unit": unit} if unit else None
    marker = Unit(unit) if unit else None

    class LengthCfg(StageConfig):
        length: Annotated[float, marker] = Field(0.5, ge=0.0, json_schema_extra=extra)

    class LengthStage(PipelineStage[SimpleState, LengthCfg]):
        policy_keys = ()

        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            return StageResult(state=state.deepcopy(), metrics={"length": self.cfg.length})

    return LengthStage(LengthCfg()), LengthCfg()


def test_declaring_a_unit_changes_no_cache_key() -> None:
    (plain, plain_cfg), (metres, metres_cfg) = stage_and_config(None), stage_and_config("m")
    assert field_unit(metres_cfg, "length") == "m" and field_unit(plain_cfg, "length") is None
    assert config_hash(plain_cfg) == config_hash(metres_cfg)
    code = Fingerprinter().stage(plain, plain_cfg).digest
    assert Fingerprinter().stage(metres, metres_cfg).digest == code
