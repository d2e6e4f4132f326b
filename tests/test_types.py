"""States, stage configs, stages, results and DAG node specs: the typed core."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import phys_pipeline
from phys_pipeline.hashing import config_hash
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import (
    DagState,
    NodeResources,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    State,
    hash_small,
)

# --- small physics: a point particle and a free-flight stage ---------------------------------


@dataclass(slots=True)
class Particle(State):
    """Position and velocity; a slots dataclass that never calls State.__init__."""

    x: float
    v: float

    def deepcopy(self) -> Particle:
        return Particle(self.x, self.v)

    def hashable_repr(self) -> bytes:
        return hash_small((self.x, self.v))


class FlightCfg(StageConfig):
    dt: float = 1.0


class FreeFlight(PipelineStage[Particle, FlightCfg]):
    """x <- x + v dt."""

    def process(self, state: Particle, *, policy: PolicyBag | None = None) -> StageResult:
        moved = Particle(state.x + state.v * self.cfg.dt, state.v)
        return StageResult(state=moved, metrics={"x": moved.x})


# --- State ------------------------------------------------------------------------------------


def test_state_is_abstract():
    with pytest.raises(TypeError):
        State()


def test_state_subclass_without_hashable_repr_cannot_be_instantiated():
    class HalfState(State):
        def deepcopy(self) -> HalfState:
            return self

    with pytest.raises(TypeError, match="hashable_repr"):
        HalfState()


def test_slots_dataclass_state_has_no_instance_dict():
    particle = Particle(0.0, 1.0)
    assert not hasattr(particle, "__dict__")
    assert isinstance(particle, State)


def test_slots_dataclass_state_flows_through_a_pipeline():
    pipe = SequentialPipeline([FreeFlight(FlightCfg(name="fly", dt=0.5))], name="ballistics")
    out = pipe.run(Particle(x=1.0, v=2.0))
    assert out.state == Particle(2.0, 2.0)
    assert out.metrics == {"ballistics.fly.x": 2.0}


# --- SimpleState ------------------------------------------------------------------------------


def test_simple_state_defaults_to_no_payload_and_empty_meta():
    state = SimpleState()
    assert state.payload is None
    assert state.meta == {}


def test_simple_states_do_not_share_a_default_meta_dict():
    first, second = SimpleState(), SimpleState()
    first.meta["T"] = 300.0
    assert second.meta == {}


def test_simple_state_deepcopy_is_independent_of_the_original():
    field = np.zeros(4)
    state = SimpleState(payload={"E": field}, meta={"omega": np.linspace(0, 1, 4)})
    clone = state.deepcopy()
    clone.payload["E"][0] = 1.0
    clone.meta["omega"][1] = 99.0
    clone.meta["new"] = True
    assert state.payload["E"][0] == 0.0
    assert state.meta["omega"][1] == pytest.approx(1 / 3)
    assert "new" not in state.meta


def test_simple_state_deepcopy_returns_a_simple_state():
    assert isinstance(SimpleState(1.0).deepcopy(), SimpleState)


def test_simple_state_hash_changes_when_one_array_element_changes():
    field = np.linspace(0.0, 1.0, 16)
    before = SimpleState(meta={"E": field}).hashable_repr()
    field = field.copy()
    field[7] += 1e-12
    assert SimpleState(meta={"E": field}).hashable_repr() != before


def test_simple_state_hash_distinguishes_large_arrays_differing_in_the_middle():
    # numpy's repr abbreviates arrays over 1000 elements with "...": a repr hash would collide
    field = np.zeros(100_000)
    bumped = field.copy()
    bumped[50_000] = 1.0
    assert repr(field) == repr(bumped)
    assert SimpleState(field).hashable_repr() != SimpleState(bumped).hashable_repr()


def test_simple_state_hash_depends_on_payload_and_meta():
    base = SimpleState(1.0, {"unit": "eV"}).hashable_repr()
    assert SimpleState(2.0, {"unit": "eV"}).hashable_repr() != base
    assert SimpleState(1.0, {"unit": "J"}).hashable_repr() != base


def test_simple_state_hash_is_stable_for_equal_content():
    first = SimpleState(np.arange(5.0), {"T": 300.0, "n": 3})
    second = SimpleState(np.arange(5.0), {"T": 300.0, "n": 3})
    assert first.hashable_repr() == second.hashable_repr()


def test_simple_state_hash_depends_on_the_order_of_its_meta():
    # a stage that iterates the meta sees its order
    first = SimpleState(np.arange(5.0), {"T": 300.0, "n": 3})
    second = SimpleState(np.arange(5.0), {"n": 3, "T": 300.0})
    assert first.hashable_repr() != second.hashable_repr()


def test_simple_state_hashable_repr_is_bytes():
    assert isinstance(SimpleState(1.0).hashable_repr(), bytes)


def test_simple_states_compare_equal_by_content():
    assert SimpleState(np.ones(3), {"T": 1.0}) == SimpleState(np.ones(3), {"T": 1.0})
    assert SimpleState(np.ones(3)) != SimpleState(np.zeros(3))


def test_simple_state_is_unhashable_because_it_is_mutable():
    with pytest.raises(TypeError):
        hash(SimpleState())


def test_simple_state_repr_lists_meta_keys():
    assert "omega" in repr(SimpleState(None, {"omega": 1.0}))


# --- DagState ---------------------------------------------------------------------------------


def test_dag_state_exposes_inputs_by_parent_id():
    left, right = SimpleState(1.0), SimpleState(2.0)
    merged = DagState({"left": left, "right": right})
    assert merged["left"] is left
    assert merged.inputs == {"left": left, "right": right}


def test_dag_state_deepcopy_copies_every_input():
    merged = DagState({"probe": SimpleState(np.zeros(3))})
    clone = merged.deepcopy()
    clone["probe"].payload[0] = 5.0
    assert merged["probe"].payload[0] == 0.0
    assert isinstance(clone, DagState)


def test_dag_state_hash_changes_when_one_input_changes():
    before = DagState({"a": SimpleState(1.0), "b": SimpleState(np.zeros(3))}).hashable_repr()
    after = DagState({"a": SimpleState(1.0), "b": SimpleState(np.array([0.0, 1.0, 0.0]))})
    assert after.hashable_repr() != before


def test_dag_state_hash_depends_on_parent_ids():
    same_state = SimpleState(1.0)
    assert (
        DagState({"a": same_state}).hashable_repr() != DagState({"b": same_state}).hashable_repr()
    )


def test_dag_state_hash_depends_on_input_order():
    # a merge that concatenates its inputs in order gives another array
    a, b = SimpleState(1.0), SimpleState(2.0)
    assert DagState({"a": a, "b": b}).hashable_repr() != DagState({"b": b, "a": a}).hashable_repr()


# --- StageConfig ------------------------------------------------------------------------------


class LaserCfg(StageConfig):
    wavelength_nm: float = 800.0
    power_w: float = 1.0


def test_config_name_defaults_to_empty():
    assert LaserCfg().name == ""


def test_config_tags_default_to_an_empty_dict():
    assert LaserCfg().tags == {}


def test_config_tags_default_is_not_shared_between_instances():
    first = LaserCfg()
    first.tags["lab"] = "B12"
    assert LaserCfg().tags == {}


def test_config_is_frozen():
    cfg = LaserCfg(power_w=2.0)
    with pytest.raises(ValidationError):
        cfg.power_w = 3.0
    assert cfg.power_w == 2.0


def test_config_invalid_value_raises_validation_error_naming_the_field():
    with pytest.raises(ValidationError) as info:
        LaserCfg(power_w="bright")
    assert [error["loc"] for error in info.value.errors()] == [("power_w",)]


def test_config_rejects_unknown_fields():
    with pytest.raises(ValidationError) as info:
        LaserCfg(powr_w=2.0)
    (error,) = info.value.errors()
    assert error["loc"] == ("powr_w",)
    assert error["type"] == "extra_forbidden"


def test_config_coerces_values_to_the_declared_type():
    assert LaserCfg(power_w=2).power_w == 2.0
    assert isinstance(LaserCfg(power_w=2).power_w, float)


class MaskCfg(StageConfig):
    transmission: np.ndarray


def test_config_accepts_ndarray_fields():
    mask = np.array([1.0, 0.5, 0.0])
    assert MaskCfg(transmission=mask).transmission is mask


def test_config_ndarray_fields_hash_by_content():
    base = config_hash(MaskCfg(transmission=np.array([1.0, 0.5, 0.0])))
    assert config_hash(MaskCfg(transmission=np.array([1.0, 0.5, 0.0]))) == base
    assert config_hash(MaskCfg(transmission=np.array([1.0, 0.5, 0.1]))) != base


class LenientCfg(StageConfig):
    model_config = ConfigDict(extra="ignore")
    gain: float = 1.0


def test_config_subclass_may_set_its_own_model_config():
    assert not hasattr(LenientCfg(gain=2.0, legacy_field=1), "legacy_field")


def test_config_subclass_own_model_config_stays_frozen():
    cfg = LenientCfg(gain=2.0)
    with pytest.raises(ValidationError):
        cfg.gain = 3.0


class GaussianPulse(BaseModel):
    kind: Literal["gaussian"] = "gaussian"
    fwhm_fs: float


class SechPulse(BaseModel):
    kind: Literal["sech"] = "sech"
    width_fs: float


class SourceCfg(StageConfig):
    pulse: GaussianPulse | SechPulse = Field(discriminator="kind")
    polarisation: Literal["s", "p"] = "p"


def test_config_literal_field_accepts_a_listed_value():
    pulse = GaussianPulse(fwhm_fs=30.0)
    assert SourceCfg(pulse=pulse, polarisation="s").polarisation == "s"


def test_config_literal_field_rejects_an_unlisted_value():
    with pytest.raises(ValidationError) as info:
        SourceCfg(pulse=GaussianPulse(fwhm_fs=30.0), polarisation="circular")
    assert info.value.errors()[0]["loc"] == ("polarisation",)


def test_config_discriminator_field_selects_the_model():
    cfg = SourceCfg(pulse={"kind": "sech", "width_fs": 12.0})
    assert isinstance(cfg.pulse, SechPulse)


def test_config_hash_differs_between_discriminated_variants():
    gauss = SourceCfg(pulse={"kind": "gaussian", "fwhm_fs": 12.0})
    sech = SourceCfg(pulse={"kind": "sech", "width_fs": 12.0})
    assert config_hash(gauss) != config_hash(sech)


@dataclasses.dataclass(frozen=True)
class DampingCfg(StageConfig):
    gamma: float


def test_stdlib_dataclass_config_gets_the_base_defaults():
    cfg = DampingCfg(gamma=0.1)
    assert cfg.name == ""
    assert cfg.tags == {}


def test_stdlib_dataclass_config_validates_its_fields():
    with pytest.raises(ValidationError) as info:
        DampingCfg(gamma="strong")
    assert info.value.errors()[0]["loc"] == ("gamma",)


def test_stdlib_dataclass_config_is_frozen():
    cfg = DampingCfg(gamma=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.gamma = 0.2


def test_stdlib_dataclass_config_survives_pickle_and_deepcopy():
    cfg = DampingCfg(gamma=0.1)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg


def test_stdlib_dataclass_config_hash_follows_its_values():
    assert config_hash(DampingCfg(gamma=0.1)) == config_hash(DampingCfg(gamma=0.1))
    assert config_hash(DampingCfg(gamma=0.1)) != config_hash(DampingCfg(gamma=0.2))


@dataclasses.dataclass(frozen=True)
class ResonatorCfg(StageConfig):
    gamma: float = 0.5
    modes: int = 3

    def __post_init__(self) -> None:
        if self.modes < 1:
            raise ValueError("a resonator needs at least one mode")


def test_stdlib_dataclass_config_keeps_its_defaults():
    cfg = ResonatorCfg()
    assert (cfg.gamma, cfg.modes, cfg.name) == (0.5, 3, "")


def test_stdlib_dataclass_config_takes_name_and_tags():
    cfg = ResonatorCfg(gamma=0.1, name="damp", tags={"run": 7})
    assert (cfg.gamma, cfg.name, cfg.tags) == (0.1, "damp", {"run": 7})


def test_stdlib_dataclass_config_converts_and_validates_given_values():
    assert ResonatorCfg(modes="4").modes == 4
    with pytest.raises(ValidationError) as info:
        ResonatorCfg(name="damp", modes="many")
    assert info.value.errors()[0]["loc"] == ("modes",)


def test_stdlib_dataclass_config_rejects_unknown_fields():
    with pytest.raises(ValidationError, match="gama"):
        ResonatorCfg(gama=0.1)


def test_stdlib_dataclass_config_runs_its_post_init_after_validation():
    with pytest.raises(ValidationError, match="at least one mode"):
        ResonatorCfg(modes="0")


def test_stdlib_dataclass_configs_differing_only_in_name_differ():
    assert ResonatorCfg(name="a") != ResonatorCfg(name="b")
    assert ResonatorCfg(name="a") == ResonatorCfg(name="a")
    assert config_hash(ResonatorCfg(name="a")) != config_hash(ResonatorCfg(name="b"))


def test_stdlib_dataclass_config_name_labels_its_stage_metrics():
    class Ringdown(PipelineStage[SimpleState, ResonatorCfg]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            return StageResult(state=state, metrics={"q": 1.0 / self.cfg.gamma})

    out = SequentialPipeline([Ringdown(ResonatorCfg(name="cavity"))], name="lab").run(SimpleState())
    assert out.metrics == {"lab.cavity.q": 2.0}


class Damping(PipelineStage[SimpleState, DampingCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=SimpleState(state.payload * np.exp(-self.cfg.gamma)))


def test_stdlib_dataclass_config_works_in_a_pipeline():
    out = SequentialPipeline([Damping(DampingCfg(gamma=np.log(2.0)))], name="ring").run(
        SimpleState(8.0)
    )
    assert out.state.payload == pytest.approx(4.0)
    assert out.provenance["stages"][0]["name"] == "Damping"


# --- PipelineStage ----------------------------------------------------------------------------


class Amplifier(PipelineStage[SimpleState, LaserCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=SimpleState(state.payload * self.cfg.power_w))


def test_stage_takes_its_config_positionally():
    cfg = LaserCfg(power_w=3.0)
    assert Amplifier(cfg).cfg is cfg


def test_stage_without_process_cannot_be_instantiated():
    class Idle(PipelineStage[SimpleState, LaserCfg]):
        pass

    with pytest.raises(TypeError, match="process"):
        Idle(LaserCfg())


def test_stage_default_estimated_cost_is_one():
    assert Amplifier(LaserCfg()).estimated_cost() == 1.0


def test_stage_default_can_parallelize_over_nothing():
    assert Amplifier(LaserCfg()).can_parallelize_over() == ()


def test_stage_hooks_can_be_overridden():
    class Solver(Amplifier):
        def estimated_cost(self) -> float:
            return 25.0

        def can_parallelize_over(self) -> tuple[str, ...]:
            return ("wavelength_nm",)

    solver = Solver(LaserCfg())
    assert solver.estimated_cost() == 25.0
    assert solver.can_parallelize_over() == ("wavelength_nm",)


def test_stage_version_and_policy_keys_default_to_none():
    assert Amplifier.version is None
    assert Amplifier.policy_keys is None


def test_stage_repr_names_class_and_config_name():
    assert repr(Amplifier(LaserCfg(name="amp"))) == "Amplifier(name='amp')"


def test_stage_repr_survives_a_stage_without_cfg():
    class Bare(PipelineStage[SimpleState, None]):
        def __init__(self) -> None:
            pass  # never sets cfg

        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            return StageResult(state=state)

    assert repr(Bare()) == "Bare(name='?')"


# --- StageResult ------------------------------------------------------------------------------


def test_stage_result_is_subscriptable_at_run_time():
    result = StageResult[SimpleState](state=SimpleState(1.0))
    assert isinstance(result, StageResult)


def test_stage_result_is_built_with_keywords():
    state = SimpleState(1.0)
    result = StageResult(state=state, metrics={"E": 1.0}, artifacts={"log": "ok"}, provenance={})
    assert result.state is state
    assert result.metrics == {"E": 1.0}
    assert result.artifacts == {"log": "ok"}


def test_stage_result_defaults_are_fresh_empty_dicts():
    first, second = StageResult(state=SimpleState()), StageResult(state=SimpleState())
    first.metrics["E"] = 1.0
    assert second.metrics == {}
    assert second.artifacts == {}
    assert second.provenance == {}


# --- NodeSpec and NodeResources ---------------------------------------------------------------


def test_node_resources_default_to_one_cpu():
    assert NodeResources() == NodeResources(cpu=1, gpu=0, mem_gb=0.0)


@pytest.mark.parametrize("field", ["cpu", "gpu", "mem_gb"])
def test_node_resources_reject_negative_values_naming_the_field(field):
    with pytest.raises(ValueError, match=f"NodeResources.{field}"):
        NodeResources(**{field: -1})


def test_node_spec_copies_deps_into_a_list():
    deps = ("grid",)
    node = NodeSpec(id="pulse", deps=deps, stage=Amplifier(LaserCfg()))
    assert node.deps == ["grid"]


def test_node_spec_does_not_alias_the_callers_deps_list():
    deps = ["grid"]
    node = NodeSpec(id="pulse", deps=deps, stage=Amplifier(LaserCfg()))
    deps.append("other")
    assert node.deps == ["grid"]


def test_node_spec_replace_returns_a_changed_copy():
    node = NodeSpec(id="pulse", stage=Amplifier(LaserCfg()))
    moved = node.replace(id="pulse2")
    assert (node.id, moved.id) == ("pulse", "pulse2")
    assert moved.stage is node.stage


def test_node_spec_label_prefers_op_name_then_stage_class():
    stage = Amplifier(LaserCfg())
    assert NodeSpec(id="a", stage=stage, op_name="amplify").label == "amplify"
    assert NodeSpec(id="a", stage=stage).label == "Amplifier"


# --- the package ------------------------------------------------------------------------------


def test_package_exports_the_core_types():
    assert phys_pipeline.SimpleState is SimpleState
    assert phys_pipeline.StageConfig is StageConfig
    assert phys_pipeline.SequentialPipeline is SequentialPipeline


def test_package_loads_dag_classes_on_first_use():
    from phys_pipeline.executor import DagExecutor

    assert phys_pipeline.DagExecutor is DagExecutor


def test_package_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="Reactor"):
        phys_pipeline.Reactor  # noqa: B018


def test_importing_the_package_stays_light():
    heavy = ["phys_pipeline.executor", "phys_pipeline.cache", "matplotlib", "redis", "dask"]
    code = f"import sys, phys_pipeline; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"
