"""Calling one stage and checking what it returns (``phys_pipeline._invoke``): what a stage may
return, what is refused with which typed error, and how metrics and artifacts of many nodes or
stages are flattened under one namespace without ever overwriting each other."""

from __future__ import annotations

import enum
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from dag_stages import FailCfg, FailStage, GridCfg, GridStage, PhaseCfg, PhaseStage

from phys_pipeline._invoke import (
    NamespacedKeys,
    call_stage,
    check_metrics,
    is_state,
    scalar_metric,
)
from phys_pipeline.errors import (
    ConfigError,
    MetricError,
    MetricKeyCollisionError,
    StageOutputError,
)
from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import (
    DagState,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

OWNER = ("node", "detector")
WHERE = "node 'detector'"  # how messages name OWNER


class Returns(PipelineStage[SimpleState, StageConfig]):
    """A detector that returns exactly ``output``, whatever it is (most tests: a misbehaving
    one)."""

    def __init__(self, output: Any, name: str = "detector") -> None:
        super().__init__(StageConfig(name=name))
        self.output = output

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
        return self.output


class Raises(PipelineStage[SimpleState, StageConfig]):
    """A stage that raises ``error`` (one of ours, for the pass-through test)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(StageConfig(name="lens"))
        self.error = error

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        raise self.error


class Wavefront:
    """A user state that does not derive from State but has its two methods."""

    def __init__(self, amplitude: np.ndarray) -> None:
        self.amplitude = amplitude

    def deepcopy(self) -> Wavefront:
        return Wavefront(self.amplitude.copy())

    def hashable_repr(self) -> bytes:
        return self.amplitude.tobytes()


def readout(metrics: Any = None, artifacts: Any = None) -> Returns:
    """A detector returning a proper StageResult with these metrics and artifacts."""
    return Returns(
        StageResult(
            SimpleState(),
            metrics={} if metrics is None else metrics,
            artifacts={} if artifacts is None else artifacts,
        )
    )


def call(stage: Any, policy: PolicyBag | None = None) -> StageResult:
    return call_stage(stage, SimpleState(), policy, OWNER)


def on_a_grid() -> SimpleState:
    return GridStage(GridCfg(N=16)).process(SimpleState()).state


# --- is_state -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [SimpleState(), DagState({"grid": SimpleState()}), Wavefront(np.ones(4))],
    ids=["SimpleState", "DagState", "duck-typed"],
)
def test_core_and_duck_typed_states_are_states(state: Any) -> None:
    assert is_state(state)


class Mislabelled:
    deepcopy = "not a method"
    hashable_repr = "not a method"


@pytest.mark.parametrize(
    "value",
    [{"omega": np.ones(4)}, np.ones(4), None, Mislabelled()],
    ids=["dict", "array", "None", "attributes-not-methods"],
)
def test_plain_data_is_not_a_state(value: Any) -> None:
    assert not is_state(value)


# --- scalar metrics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (2.5, 2.5),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7.0),
        (np.bool_(True), 1.0),
        (np.array(1.25), 1.25),
        (np.array(2.0, dtype=object), 2.0),
        (Fraction(1, 4), 0.25),
    ],
    ids=["int", "float", "float32", "int64", "bool_", "0-d array", "0-d object", "Fraction"],
)
def test_real_scalars_become_python_floats(value: Any, expected: float) -> None:
    number = scalar_metric("detector", "energy", value)
    assert type(number) is float and number == expected


def test_an_infinite_metric_is_kept() -> None:
    assert scalar_metric("detector", "gain", np.float64("inf")) == float("inf")


def test_a_nan_metric_is_a_metric_error_naming_stage_and_key() -> None:
    with pytest.raises(MetricError, match="NaN") as caught:
        scalar_metric("detector", "energy", float("nan"))
    assert (caught.value.stage, caught.value.key) == ("detector", "energy")


@pytest.mark.parametrize(
    "value",
    [
        np.ones(3),
        1 + 2j,
        np.complex128(1.0),
        np.str_("1.5"),
        "1.5",
        None,
        np.array("bright", dtype=object),
    ],
    ids=["array", "complex", "complex128", "np.str_", "str", "None", "0-d object str"],
)
def test_a_value_that_is_not_a_real_scalar_is_a_metric_error(value: Any) -> None:
    with pytest.raises(MetricError, match="real scalars") as caught:
        scalar_metric("detector", "spectrum", value)
    assert (caught.value.stage, caught.value.key) == ("detector", "spectrum")
    assert caught.value.value is value


def test_an_int_too_large_for_a_float_is_a_metric_error() -> None:
    with pytest.raises(MetricError, match="not a real scalar") as caught:
        scalar_metric("detector", "photons", 10**400)
    assert isinstance(caught.value.__cause__, OverflowError)


# --- metric dicts ---------------------------------------------------------------------------


def test_metrics_that_are_not_a_mapping_are_a_metric_error() -> None:
    with pytest.raises(MetricError, match="dict of scalars") as caught:
        check_metrics("detector", [("energy", 1.0)])
    assert (caught.value.stage, caught.value.key) == ("detector", "<metrics>")


def test_any_mapping_of_metrics_is_read_into_a_dict_of_floats() -> None:
    checked = check_metrics("detector", MappingProxyType({"energy": np.float32(0.5), "N": 8}))
    assert type(checked) is dict and checked == {"energy": 0.5, "N": 8.0}
    assert all(type(value) is float for value in checked.values())


class Channel(str, enum.Enum):  # noqa: UP042 -- str() of a member is "Channel.POWER", not its value
    POWER = "power"


@pytest.mark.parametrize("key", [np.str_("power"), Channel.POWER], ids=["np.str_", "str-enum"])
def test_string_subclass_metric_keys_become_their_plain_string(key: str) -> None:
    (name,) = check_metrics("detector", {key: 1.0})
    assert type(name) is str and name == "power"


def test_a_non_string_metric_key_is_a_metric_error_naming_the_key() -> None:
    with pytest.raises(MetricError, match="must be strings, got int") as caught:
        check_metrics("detector", {1: 0.5})
    assert (caught.value.stage, caught.value.key) == ("detector", 1)


# --- calling a stage ------------------------------------------------------------------------


def test_a_valid_result_comes_back_with_float_metrics() -> None:
    result = call(GridStage(GridCfg(name="grid", N=16)))
    assert result.state.meta["omega"].shape == (16,)
    assert result.metrics == {"N": 16.0} and type(result.metrics["N"]) is float


def test_the_stage_gets_the_policy_by_keyword() -> None:
    phase = PhaseStage(PhaseCfg(gdd=10.0))
    plain = call_stage(phase, on_a_grid(), None, OWNER).metrics["max_phase"]
    scaled = call_stage(phase, on_a_grid(), PolicyBag({"phase.scale": 2.0}), OWNER)
    assert scaled.metrics["max_phase"] == pytest.approx(2.0 * plain)


def test_an_exception_in_the_stage_keeps_its_type_and_a_note_names_where_stage_and_config() -> None:
    with pytest.raises(RuntimeError) as caught:
        call(FailStage(FailCfg(name="fibre", message="fibre snapped")))
    error = caught.value
    assert type(error) is RuntimeError and str(error) == "fibre snapped"
    assert error.__notes__ == [
        f"raised by stage 'fibre' in {WHERE}, config "
        "FailCfg(name='fibre', tags={}, message='fibre snapped')"
    ]


def test_a_stage_without_a_name_is_named_by_its_class() -> None:
    with pytest.raises(RuntimeError) as caught:
        call(FailStage(FailCfg()))
    [note] = caught.value.__notes__
    assert note.startswith(f"raised by stage 'FailStage' in {WHERE}, ")


def test_the_note_truncates_a_long_config_to_its_first_200_characters() -> None:
    cfg = FailCfg(name="fibre", message="x" * 1000)
    with pytest.raises(RuntimeError) as caught:
        call(FailStage(cfg))
    [note] = caught.value.__notes__
    assert note == f"raised by stage 'fibre' in {WHERE}, config {repr(cfg)[:200]}"


def test_our_own_typed_errors_pass_through_unwrapped_and_without_a_note() -> None:
    error = ConfigError("node 'lens'", "focal_mm", -1.0, "must be positive")
    with pytest.raises(ConfigError) as caught:
        call(Raises(error))
    assert caught.value is error
    assert not hasattr(error, "__notes__")


@pytest.mark.parametrize(
    "output",
    [SimpleState(), None, {"state": SimpleState()}],
    ids=["bare-state", "None", "dict"],
)
def test_a_return_that_is_not_a_stage_result_is_a_stage_output_error(output: Any) -> None:
    with pytest.raises(StageOutputError, match="expected a StageResult") as caught:
        call(Returns(output))
    assert (caught.value.where, caught.value.stage) == (WHERE, "detector")
    assert caught.value.got is output


def test_a_result_whose_state_is_not_a_state_is_a_stage_output_error() -> None:
    spectrum = np.ones(8)
    with pytest.raises(StageOutputError, match=r"StageResult\.state to be a State") as caught:
        call(Returns(StageResult(state=spectrum)))
    assert caught.value.got is spectrum and caught.value.stage == "detector"


def test_a_duck_typed_state_is_accepted() -> None:
    front = Wavefront(np.ones(4))
    assert call(Returns(StageResult(state=front))).state is front


def test_a_bad_metric_is_a_metric_error_naming_the_stage_and_key() -> None:
    with pytest.raises(MetricError) as caught:
        call(readout(metrics={"energy": 1.0, "spectrum": np.ones(8)}))
    assert (caught.value.stage, caught.value.key) == ("detector", "spectrum")


@pytest.mark.parametrize("metrics", [None, [("energy", 1.0)]], ids=["None", "list"])
def test_metrics_that_are_not_a_dict_are_a_metric_error(metrics: Any) -> None:
    stage = Returns(StageResult(SimpleState(), metrics=metrics))
    with pytest.raises(MetricError, match="dict of scalars"):
        call(stage)


@pytest.mark.parametrize("artifacts", [None, ["phase plot"]], ids=["None", "list"])
def test_artifacts_that_are_not_a_mapping_are_a_stage_output_error(artifacts: Any) -> None:
    stage = Returns(StageResult(SimpleState(), artifacts=artifacts))
    with pytest.raises(StageOutputError, match=r"StageResult\.artifacts to be a dict") as caught:
        call(stage)
    assert caught.value.got is artifacts and caught.value.where == WHERE


def test_a_non_string_artifact_key_is_a_stage_output_error_naming_the_key() -> None:
    with pytest.raises(StageOutputError, match="keys to be strings, not 1"):
        call(readout(artifacts={"phase": "plot", 1: "another plot"}))


def test_lazy_artifacts_are_handed_back_uncalled() -> None:
    calls: list[str] = []

    def phase_plot() -> str:
        calls.append("phase")
        return "a figure"

    result = call(readout(artifacts=MappingProxyType({"phase": phase_plot})))
    assert result.artifacts["phase"] is phase_plot and calls == []


# --- namespaced keys ------------------------------------------------------------------------


def test_entries_are_flattened_under_each_sources_prefix() -> None:
    metrics: NamespacedKeys[float] = NamespacedKeys("metric", "node")
    metrics.add("grid", "grid.", {"N": 64.0})
    metrics.add("p1", "p1.", {"max_phase": 1.5, "N": 64.0})
    assert metrics.entries == {"grid.N": 64.0, "p1.max_phase": 1.5, "p1.N": 64.0}


def test_two_stages_of_one_name_collide_naming_both() -> None:
    metrics: NamespacedKeys[float] = NamespacedKeys("metric", "pipeline 'optics' stage")
    metrics.add("phase", "optics.phase.", {"gdd": 10.0})
    with pytest.raises(MetricKeyCollisionError) as caught:
        metrics.add("phase", "optics.phase.", {"gdd": -20.0})
    label = "pipeline 'optics' stage 'phase' metric 'gdd'"
    assert (caught.value.key, caught.value.first, caught.value.second) == (
        "optics.phase.gdd",
        label,
        label,
    )


def test_dotted_names_collide_naming_the_source_that_owns_the_key() -> None:
    metrics: NamespacedKeys[float] = NamespacedKeys("metric", "node")
    metrics.add("grid", "grid.", {"N": 64.0})
    metrics.add("a", "a.", {"b.c": 1.0})
    with pytest.raises(MetricKeyCollisionError, match="rename one of them") as caught:
        metrics.add("a.b", "a.b.", {"c": 2.0})
    assert caught.value.key == "a.b.c"
    assert caught.value.first == "node 'a' metric 'b.c'"
    assert caught.value.second == "node 'a.b' metric 'c'"


def test_a_colliding_source_adds_none_of_its_entries() -> None:
    metrics: NamespacedKeys[float] = NamespacedKeys("metric", "node")
    metrics.add("a", "a.", {"b.c": 1.0})
    with pytest.raises(MetricKeyCollisionError):
        metrics.add("a.b", "a.b.", {"energy": 3.0, "c": 2.0})
    assert metrics.entries == {"a.b.c": 1.0}


def test_artifact_collisions_name_the_artifact_kind() -> None:
    artifacts: NamespacedKeys[Any] = NamespacedKeys("artifact", "node")
    artifacts.add("fibre", "fibre.", {"phase": "plot"})
    with pytest.raises(MetricKeyCollisionError) as caught:
        artifacts.add("fibre", "fibre.", {"phase": "another plot"})
    assert caught.value.first == "node 'fibre' artifact 'phase'"
