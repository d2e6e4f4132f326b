"""SequentialPipeline: running stages in order, metrics, provenance, errors and nesting."""

from __future__ import annotations

import inspect
import pickle
import time
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np
import pytest

from phys_pipeline import errors
from phys_pipeline.cache import MemoryStore
from phys_pipeline.errors import (
    MetricError,
    MetricKeyCollisionError,
    NotAStateError,
    PhysPipelineError,
    PolicyError,
    StageError,
    StageOutputError,
)
from phys_pipeline.executor import DagExecutor
from phys_pipeline.fingerprint import code_version
from phys_pipeline.hashing import config_hash
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

# --- a small wave-optics pipeline: grid -> gaussian beam -> absorber ------------------------


class GridCfg(StageConfig):
    n: int = 65
    half_width_mm: float = 2.0


class Grid(PipelineStage[SimpleState, GridCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = state.deepcopy()
        out.meta["x"] = np.linspace(-self.cfg.half_width_mm, self.cfg.half_width_mm, self.cfg.n)
        dx = out.meta["x"][1] - out.meta["x"][0]
        return StageResult(state=out, metrics={"dx_mm": dx, "points": self.cfg.n})


class BeamCfg(StageConfig):
    waist_mm: float = 0.5


class GaussianBeam(PipelineStage[SimpleState, BeamCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = state.deepcopy()
        x = out.meta["x"]
        out.payload = np.exp(-((x / self.cfg.waist_mm) ** 2))
        power = np.sum(np.abs(out.payload) ** 2) * (x[1] - x[0])
        return StageResult(state=out, metrics={"power": power})


class AbsorberCfg(StageConfig):
    optical_depth: float = 1.0


class Absorber(PipelineStage[SimpleState, AbsorberCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = state.deepcopy()
        out.payload = out.payload * np.exp(-self.cfg.optical_depth / 2)
        return StageResult(state=out, metrics={"transmission": np.exp(-self.cfg.optical_depth)})


def optics(depth: float = 1.0, name: str = "optics") -> SequentialPipeline:
    return SequentialPipeline(
        [
            Grid(GridCfg(name="grid")),
            GaussianBeam(BeamCfg(name="beam")),
            Absorber(AbsorberCfg(name="absorber", optical_depth=depth)),
        ],
        name=name,
    )


class Probe(PipelineStage[SimpleState, StageConfig]):
    """Records what it is called with; returns a given result (or its state unchanged)."""

    def __init__(self, cfg: StageConfig, returns: Any = None, metrics: Any = None) -> None:
        super().__init__(cfg)
        self.returns, self.metrics = returns, metrics or {}
        self.calls: list[tuple[tuple, dict]] = []

    def process(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.returns is not None:
            return self.returns
        return StageResult(state=args[0], metrics=self.metrics)


def reading(value: Any, key: str = "power") -> SequentialPipeline:
    """A one-stage pipeline "lab" whose stage "detector" reports ``{key: value}``."""
    return SequentialPipeline([Probe(StageConfig(name="detector"), metrics={key: value})], "lab")


# --- construction -----------------------------------------------------------------------------


def test_pipeline_keeps_the_stage_list_it_was_given():
    stages = [Grid(GridCfg())]
    assert SequentialPipeline(stages, name="p").stages is stages


def test_pipeline_accepts_stages_as_keyword():
    stages = [Grid(GridCfg())]
    assert SequentialPipeline(stages=stages, name="p").stages is stages


def test_pipeline_is_subscriptable_at_run_time():
    pipe = SequentialPipeline[SimpleState]([Grid(GridCfg(name="grid"))], name="p")
    assert isinstance(pipe, SequentialPipeline)
    assert "p.grid.points" in pipe.run(SimpleState()).metrics


def test_pipeline_name_defaults_to_pipeline():
    assert SequentialPipeline([]).name == "pipeline"


def test_pipeline_has_a_config_named_after_it():
    assert SequentialPipeline([], name="optics").cfg.name == "optics"


def test_pipeline_repr_lists_stage_names():
    assert repr(optics()) == "SequentialPipeline(name='optics', stages=[grid, beam, absorber])"


# --- running ----------------------------------------------------------------------------------


def test_first_stage_receives_the_callers_state_object():
    probe = Probe(StageConfig(name="probe"))
    initial = SimpleState(np.zeros(3))
    SequentialPipeline([probe]).run(initial)
    ((args, _),) = probe.calls
    assert args[0] is initial


def test_process_is_called_with_the_state_and_policy_only():
    probe = Probe(StageConfig(name="probe"))
    bag = PolicyBag({"solver": "rk4"})
    state = SimpleState()
    SequentialPipeline([probe]).run(state, policy=bag)
    assert probe.calls == [((state,), {"policy": bag})]


def test_stage_with_the_minimal_process_signature_runs():
    class Minimal(PipelineStage[SimpleState, StageConfig]):
        def process(self, state, *, policy=None):
            return StageResult(state=state)

    initial = SimpleState(1.0)
    assert SequentialPipeline([Minimal(StageConfig())]).run(initial).state is initial


def test_each_stage_receives_the_previous_stages_state():
    first = Probe(StageConfig(name="first"), returns=StageResult(state=SimpleState("after")))
    second = Probe(StageConfig(name="second"))
    SequentialPipeline([first, second]).run(SimpleState("before"))
    assert second.calls[0][0][0] is first.returns.state


def test_run_returns_the_last_stages_state():
    out = optics(depth=0.0).run(SimpleState())
    np.testing.assert_allclose(out.state.payload, np.exp(-((out.state.meta["x"] / 0.5) ** 2)))


def test_run_does_not_modify_the_callers_state():
    initial = SimpleState()
    optics().run(initial)
    assert initial.payload is None
    assert initial.meta == {}


def test_empty_pipeline_returns_the_input_state():
    initial = SimpleState(1.0)
    out = SequentialPipeline([], name="nothing").run(initial)
    assert out.state is initial
    assert out.metrics == {}


def test_dataclass_stage_that_never_calls_the_base_init_runs():
    @dataclass
    class Lens(PipelineStage[SimpleState, AbsorberCfg]):
        cfg: AbsorberCfg
        focal_mm: float = 50.0

        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            return StageResult(state=SimpleState(self.focal_mm), metrics={"f": self.focal_mm})

    out = SequentialPipeline([Lens(AbsorberCfg(name="lens"))], name="p").run(SimpleState())
    assert out.metrics == {"p.lens.f": 50.0}


def test_unhashable_stages_run():
    class Mirror(PipelineStage[SimpleState, StageConfig]):
        def __eq__(self, other: object) -> bool:
            return isinstance(other, Mirror) and self.cfg == other.cfg

        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            return StageResult(state=SimpleState(-state.payload))

    mirrors = [Mirror(StageConfig(name="m1")), Mirror(StageConfig(name="m2"))]
    with pytest.raises(TypeError):
        hash(mirrors[0])
    assert SequentialPipeline(mirrors).run(SimpleState(1.0)).state.payload == 1.0


@pytest.mark.parametrize(
    "given", [3, None, np.zeros(2), {"payload": 1.0}], ids=["int", "None", "array", "dict"]
)
def test_run_on_a_non_state_raises_not_a_state_error_naming_the_pipeline(given):
    probe = Probe(StageConfig(name="probe"))
    with pytest.raises(NotAStateError, match="pipeline 'optics'") as info:
        SequentialPipeline([probe], name="optics").run(given)
    assert info.value.got is given
    assert probe.calls == []


def test_the_same_pipeline_runs_twice():
    pipe = optics()
    assert pipe.run(SimpleState()).metrics == pipe.run(SimpleState()).metrics


# --- metrics ----------------------------------------------------------------------------------


def test_metric_keys_are_pipeline_stage_key():
    assert set(optics().run(SimpleState()).metrics) == {
        "optics.grid.dx_mm",
        "optics.grid.points",
        "optics.beam.power",
        "optics.absorber.transmission",
    }


def test_metric_keys_use_the_stage_class_when_the_config_has_no_name():
    pipe = SequentialPipeline([Absorber(AbsorberCfg(optical_depth=0.0))], name="p")
    assert list(pipe.run(SimpleState(np.ones(2))).metrics) == ["p.Absorber.transmission"]


def test_metric_values_follow_the_physics():
    metrics = optics(depth=2.0).run(SimpleState()).metrics
    assert metrics["optics.grid.dx_mm"] == pytest.approx(4.0 / 64)
    assert metrics["optics.beam.power"] == pytest.approx(0.5 * np.sqrt(np.pi / 2), rel=1e-3)
    assert metrics["optics.absorber.transmission"] == pytest.approx(np.exp(-2.0))


@pytest.mark.parametrize(
    "value",
    [np.float64(0.5), np.float32(0.5), np.int64(3), 3, np.array(2.5), True, np.bool_(False)],
    ids=["float64", "float32", "int64", "int", "0-d array", "bool", "numpy bool"],
)
def test_metric_values_are_python_floats(value):
    (metric,) = reading(value).run(SimpleState()).metrics.values()
    assert type(metric) is float
    assert metric == float(value)


def test_metrics_are_identical_across_runs():
    first = optics().run(SimpleState()).metrics
    time.sleep(0.01)
    assert optics().run(SimpleState()).metrics == first


def test_infinite_metric_is_kept():
    assert reading(float("inf")).run(SimpleState()).metrics == {"lab.detector.power": np.inf}


@pytest.mark.parametrize(
    "value",
    [np.ones(3), "1.5", [1.0], np.str_("1.5"), 1 + 2j, np.complex128(1 + 0j), None],
    ids=["array", "string", "list", "numpy string", "complex", "numpy complex", "None"],
)
def test_non_scalar_metric_raises_metric_error_naming_stage_and_key(value):
    with pytest.raises(MetricError, match=r"'detector'.*'power'") as info:
        reading(value).run(SimpleState())
    assert (info.value.stage, info.value.key) == ("detector", "power")


@pytest.mark.parametrize("value", [float("nan"), np.float32("nan"), np.array(np.nan)])
def test_nan_metric_raises_metric_error(value):
    with pytest.raises(MetricError, match="NaN"):
        reading(value).run(SimpleState())


def test_metrics_that_are_not_a_dict_raise_metric_error():
    stage = Probe(StageConfig(name="detector"), returns=StageResult(SimpleState(), metrics=[1.0]))
    with pytest.raises(MetricError, match="'detector'"):
        SequentialPipeline([stage]).run(SimpleState())


def test_duplicate_metric_key_from_same_named_stages_raises_collision_naming_both():
    pipe = SequentialPipeline(
        [Absorber(AbsorberCfg(name="cell")), Absorber(AbsorberCfg(name="cell"))], name="p"
    )
    with pytest.raises(MetricKeyCollisionError, match=r"p\.cell\.transmission") as info:
        pipe.run(SimpleState(np.ones(2)))
    assert (
        info.value.first == info.value.second == "pipeline 'p' stage 'cell' metric 'transmission'"
    )


def test_same_named_stages_with_different_metric_keys_run():
    pipe = SequentialPipeline(
        [
            Probe(StageConfig(name="det"), metrics={"power": 1.0}),
            Probe(StageConfig(name="det"), metrics={"phase": 0.5}),
        ],
        name="p",
    )
    assert pipe.run(SimpleState()).metrics == {"p.det.power": 1.0, "p.det.phase": 0.5}


# --- stage output errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "returned", [SimpleState(), {"state": SimpleState()}, 1.0], ids=["state", "dict", "float"]
)
def test_stage_returning_a_non_result_raises_stage_output_error_naming_it(returned):
    pipe = SequentialPipeline([Probe(StageConfig(name="solver"), returns=returned)], "p")
    with pytest.raises(StageOutputError, match="'solver'") as info:
        pipe.run(SimpleState())
    assert info.value.stage == "solver"


def test_stage_returning_none_raises_stage_output_error():
    class Forgetful(PipelineStage[SimpleState, StageConfig]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
            state.deepcopy()  # forgot to return

    with pytest.raises(StageOutputError, match=r"'forgetful'.*NoneType"):
        SequentialPipeline([Forgetful(StageConfig(name="forgetful"))]).run(SimpleState())


def test_result_holding_a_non_state_raises_stage_output_error():
    returned = StageResult(state=np.zeros(3))
    pipe = SequentialPipeline([Probe(StageConfig(name="solver"), returns=returned)], "p")
    with pytest.raises(StageOutputError, match=r"'solver'.*State"):
        pipe.run(SimpleState())


def test_result_holding_a_duck_typed_state_is_accepted():
    class Wavefunction:
        def deepcopy(self) -> Wavefunction:
            return Wavefunction()

        def hashable_repr(self) -> bytes:
            return b"psi"

    psi = Wavefunction()
    pipe = SequentialPipeline([Probe(StageConfig(), returns=StageResult(state=psi))])
    assert pipe.run(SimpleState()).state is psi


def test_result_with_non_dict_artifacts_raises_stage_output_error():
    returned = StageResult(state=SimpleState(), artifacts=["plot"])
    pipe = SequentialPipeline([Probe(StageConfig(name="plotter"), returns=returned)])
    with pytest.raises(StageOutputError, match=r"'plotter'.*artifacts"):
        pipe.run(SimpleState())


# --- stage failures ---------------------------------------------------------------------------


class Diverging(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        raise FloatingPointError("energy diverged at t=3.2 ps")


def test_stage_exception_keeps_its_type_and_a_note_names_pipeline_and_stage():
    pipe = SequentialPipeline([Diverging(StageConfig(name="solver"))], name="md")
    with pytest.raises(FloatingPointError) as info:
        pipe.run(SimpleState())
    assert type(info.value) is FloatingPointError
    assert str(info.value) == "energy diverged at t=3.2 ps"
    assert info.value.__notes__ == [
        "raised by stage 'solver' in pipeline 'md', config StageConfig(name='solver', tags={})"
    ]


def test_stage_exception_is_the_very_object_the_stage_raised():
    """Nothing wraps it (2.0.0's StageError did): what the stage raised is what the caller gets."""
    diverged = FloatingPointError("energy diverged at t=3.2 ps")

    class Raising(PipelineStage[SimpleState, StageConfig]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            raise diverged

    with pytest.raises(FloatingPointError) as info:
        SequentialPipeline([Raising(StageConfig(name="solver"))], name="md").run(SimpleState())
    assert info.value is diverged and info.value.__cause__ is None


@pytest.mark.parametrize(
    ("error", "builtin"),
    [(MetricError, ValueError), (StageOutputError, TypeError), (StageError, RuntimeError)],
)
def test_pipeline_errors_refine_builtin_errors(error, builtin):
    assert issubclass(error, PhysPipelineError)
    assert issubclass(error, builtin)


def test_library_errors_raised_by_a_stage_pass_through_unwrapped():
    class Misconfigured(PipelineStage[SimpleState, StageConfig]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            PolicyBag({"callback": object()})
            return StageResult(state=state)

    with pytest.raises(PolicyError):
        SequentialPipeline([Misconfigured(StageConfig())]).run(SimpleState())


# one plausible instance of every error class, as the library raises it
ERROR_EXAMPLES: dict[type, tuple] = {
    errors.PhysPipelineError: ("something went wrong",),
    errors.ConfigError: ("node 'beam'", "waist_mm", -1.0, "must be positive"),
    errors.UnhashableValueError: ("node 'beam' config", print, "lens.coating"),
    errors.PolicyError: ("dt", object, "value cannot be hashed canonically"),
    errors.StageError: ("node 'md'", "solver", FloatingPointError("energy diverged")),
    errors.StageOutputError: ("node 'md'", "solver", 3.0, "a StageResult"),
    errors.StaleCodeError: ("lens", "ThinLens", ["method optics.ThinLens.process"]),
    errors.CodeChangedDuringRunError: ("lens", "ThinLens", ["global FOCAL_LENGTH"]),
    errors.CorruptedInputError: ("peak", "grid"),
    errors.NodeTimeoutError: ("fit", 30.0),
    errors.WorkerDiedError: ("fit", -11),
    errors.MetricError: ("solver", "energy", np.ones(2), "metrics must be real scalars"),
    errors.MetricKeyCollisionError: ("a.b.c", "node 'a' metric 'b.c'", "node 'a.b' metric 'c'"),
    errors.NotAStateError: ("initial state", [1, 2]),
    errors.MissingRecorderError: ("lab",),
    errors.StateMutationError: ("md", "solver"),
    errors.DagError: ("node id '': node ids must be non-empty strings",),
    errors.EmptyDagError: (),
    errors.DuplicateNodeError: (["grid", "grid"],),
    errors.MissingDependencyError: ("beam", ["grid"]),
    errors.CycleError: (["a", "b"],),
    errors.MissingStageError: ("beam", None),
    errors.UnknownNodeError: ("bem", ["beam", "grid"]),
    errors.SweepError: ("sweep over node 'beam': no parameters",),
    errors.NodeFailedError: ({"beam": ValueError("bad waist")}, {"grid": 1.0}),
    errors.CacheError: ("redis at localhost:6379 is unavailable",),
    errors.CacheConfigError: ("backend", "tape", "unknown backend"),
}


def error_classes() -> list[type]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.PhysPipelineError) and cls.__module__ == errors.__name__
    ]


def test_every_error_class_has_a_pickling_example():
    assert set(error_classes()) == set(ERROR_EXAMPLES)


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("cls", list(ERROR_EXAMPLES), ids=lambda cls: cls.__name__)
def test_errors_survive_pickling_with_message_and_attributes(cls, dumps):
    error = cls(*ERROR_EXAMPLES[cls])
    copy = pickle.loads(dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error)
    # args and attribute values by repr: exceptions held (causes, a group's members) compare
    # by identity
    assert repr(copy.args) == repr(error.args)
    assert {k: repr(v) for k, v in vars(copy).items()} == {
        k: repr(v) for k, v in vars(error).items()
    }


def test_stages_after_a_failing_stage_do_not_run():
    after = Probe(StageConfig(name="after"))
    with pytest.raises(FloatingPointError):
        SequentialPipeline([Diverging(StageConfig()), after]).run(SimpleState())
    assert after.calls == []


# --- provenance -------------------------------------------------------------------------------


def test_provenance_has_one_record_per_stage_in_order():
    stages = optics().run(SimpleState()).provenance["stages"]
    assert [record["name"] for record in stages] == ["grid", "beam", "absorber"]


def test_provenance_stage_record_fields():
    pipe = optics()
    record = pipe.run(SimpleState()).provenance["stages"][2]
    absorber = pipe.stages[2]
    assert record["class"] == "Absorber"
    assert record["config_hash"] == config_hash(absorber.cfg)
    assert record["version"] == code_version(absorber)
    assert isinstance(record["duration_s"], float)
    assert record["duration_s"] >= 0.0


def test_provenance_config_hash_is_stable_for_the_same_config():
    first = optics(depth=1.0).run(SimpleState()).provenance["stages"][2]["config_hash"]
    assert optics(depth=1.0).run(SimpleState()).provenance["stages"][2]["config_hash"] == first


def test_provenance_config_hash_changes_when_a_config_value_changes():
    first = optics(depth=1.0).run(SimpleState()).provenance["stages"]
    second = optics(depth=1.5).run(SimpleState()).provenance["stages"]
    assert first[2]["config_hash"] != second[2]["config_hash"]
    assert first[0]["config_hash"] == second[0]["config_hash"]


def test_provenance_version_uses_an_explicit_stage_version():
    class PinnedAbsorber(Absorber):
        version = "2024.1"

    pipe = SequentialPipeline([PinnedAbsorber(AbsorberCfg())])
    assert pipe.run(SimpleState(np.ones(2))).provenance["stages"][0]["version"] == "2024.1"


def test_provenance_keeps_what_a_stage_reports():
    returned = StageResult(state=SimpleState(), provenance={"solver": "rk45", "steps": 120})
    pipe = SequentialPipeline([Probe(StageConfig(name="ode"), returns=returned)])
    assert pipe.run(SimpleState()).provenance["stages"][0]["provenance"] == returned.provenance


def test_provenance_names_the_pipeline_and_has_a_run_id():
    provenance = optics().run(SimpleState()).provenance
    assert provenance["pipeline"] == "optics"
    assert isinstance(provenance["run_id"], str)
    assert provenance["run_id"]


def test_each_run_gets_a_new_run_id():
    pipe = optics()
    first, second = pipe.run(SimpleState()), pipe.run(SimpleState())
    assert first.provenance["run_id"] != second.provenance["run_id"]


def test_provenance_has_the_total_duration():
    assert optics().run(SimpleState()).provenance["duration_s"] >= 0.0


# --- nesting ----------------------------------------------------------------------------------


def test_nested_pipeline_metrics_are_outer_inner_stage_key():
    outer = SequentialPipeline([optics(name="inner")], name="outer")
    assert set(outer.run(SimpleState()).metrics) == {
        "outer.inner.grid.dx_mm",
        "outer.inner.grid.points",
        "outer.inner.beam.power",
        "outer.inner.absorber.transmission",
    }


def test_nested_pipeline_state_flows_to_the_next_outer_stage():
    outer = SequentialPipeline(
        [optics(name="inner", depth=0.0), Absorber(AbsorberCfg(name="filter"))], name="outer"
    )
    out = outer.run(SimpleState())
    assert out.metrics["outer.filter.transmission"] == pytest.approx(np.exp(-1.0))
    assert out.state.payload.max() == pytest.approx(np.exp(-0.5))


def test_nested_pipeline_stages_receive_the_outer_policy():
    probe = Probe(StageConfig(name="probe"))
    outer = SequentialPipeline([SequentialPipeline([probe], name="inner")], name="outer")
    outer.run(SimpleState(), policy={"dt": 0.1})
    assert probe.calls[0][1] == {"policy": PolicyBag({"dt": 0.1})}


def test_nested_pipeline_artifacts_are_outer_inner_stage_key():
    returned = StageResult(state=SimpleState(), artifacts={"log": "converged"})
    inner = SequentialPipeline([Probe(StageConfig(name="ode"), returns=returned)], name="inner")
    out = SequentialPipeline([inner], name="outer").run(SimpleState())
    assert out.artifacts == {"outer.inner.ode.log": "converged"}


def test_nested_pipeline_stage_exception_notes_the_inner_pipeline_then_the_outer():
    inner = SequentialPipeline([Diverging(StageConfig(name="solver"))], name="inner")
    with pytest.raises(FloatingPointError) as info:
        SequentialPipeline([inner], name="outer").run(SimpleState())
    solver, pipeline = info.value.__notes__
    assert solver.startswith("raised by stage 'solver' in pipeline 'inner', config ")
    assert pipeline.startswith("raised by stage 'inner' in pipeline 'outer', config ")


# --- a pipeline as a DAG node: its cache key follows its inner stages -------------------------


def run_as_node(executor: DagExecutor, pipe: SequentialPipeline, policy: Any = None) -> Any:
    return executor.run(SimpleState(), [NodeSpec(id="chain", stage=pipe)], policy=policy)


def amplifier_class(gain: float) -> type:
    """A stage class as a notebook cell defines it; redefining the cell changes its code."""
    cell = f"""
class Amplifier(PipelineStage):
    def process(self, state, *, policy=None):
        return StageResult(state=state, metrics={{"gain": {gain}}})
"""
    namespace = {"__name__": "notebook_cell", "PipelineStage": PipelineStage}
    namespace["StageResult"] = StageResult
    exec(cell, namespace)
    return namespace["Amplifier"]


def test_pipeline_node_is_a_hit_when_nothing_changed():
    executor = DagExecutor(cache=MemoryStore())
    run_as_node(executor, optics(depth=1.0))
    assert run_as_node(executor, optics(depth=1.0)).runs["chain"].status == "hit"


def test_pipeline_node_reruns_when_an_inner_config_changes():
    executor = DagExecutor(cache=MemoryStore())
    first = run_as_node(executor, optics(depth=1.0))
    second = run_as_node(executor, optics(depth=2.0))
    assert second.runs["chain"].status == "ran"
    # the pipeline holds its stages as an attribute too (pinned version: attributes by value)
    assert second.runs["chain"].reason == "attribute stages changed, config field stages changed"
    assert second.metrics["chain.absorber.transmission"] == pytest.approx(np.exp(-2.0))
    assert first.metrics["chain.absorber.transmission"] == pytest.approx(np.exp(-1.0))


def test_pipeline_node_reruns_when_an_inner_stage_class_is_redefined():
    executor = DagExecutor(cache=MemoryStore())
    run_as_node(executor, SequentialPipeline([amplifier_class(2.0)(StageConfig(name="amp"))]))
    out = run_as_node(executor, SequentialPipeline([amplifier_class(3.0)(StageConfig(name="amp"))]))
    assert out.runs["chain"].status == "ran"
    assert "method notebook_cell.Amplifier.process changed" in out.runs["chain"].reason
    assert out.metrics["chain.amp.gain"] == 3.0


def test_pipeline_node_reruns_when_the_pipelines_own_policy_changes():
    executor = DagExecutor(cache=MemoryStore())
    pipe = optics()
    run_as_node(executor, pipe)
    pipe.set_policy({"dt": 0.1})
    assert run_as_node(executor, pipe).runs["chain"].status == "ran"


def test_pipeline_node_reruns_when_a_stage_of_a_nested_pipeline_changes():
    executor = DagExecutor(cache=MemoryStore())
    run_as_node(executor, SequentialPipeline([optics(depth=1.0, name="inner")], name="outer"))
    out = run_as_node(executor, SequentialPipeline([optics(depth=2.0, name="inner")], name="outer"))
    assert out.runs["chain"].status == "ran"
    assert out.metrics["chain.inner.absorber.transmission"] == pytest.approx(np.exp(-2.0))


def test_pipeline_node_reruns_when_a_nested_pipelines_stage_class_is_redefined():
    def nested(gain: float) -> SequentialPipeline:
        inner = SequentialPipeline([amplifier_class(gain)(StageConfig(name="amp"))], "inner")
        return SequentialPipeline([inner], name="outer")

    executor = DagExecutor(cache=MemoryStore())
    run_as_node(executor, nested(2.0))
    out = run_as_node(executor, nested(3.0))
    assert "method notebook_cell.Amplifier.process changed" in out.runs["chain"].reason
    assert out.metrics["chain.inner.amp.gain"] == 3.0


def test_pipeline_config_names_each_inner_stage_class_and_config_hash():
    pipe = optics()
    expected = tuple(
        (f"{type(s).__module__}.{type(s).__qualname__}", config_hash(s.cfg)) for s in pipe.stages
    )
    assert pipe.cfg.stages == expected


class CallbackCfg(StageConfig):
    on_step: Any = None


def test_unhashable_inner_config_of_a_pipeline_node_names_node_stage_and_field():
    pipe = SequentialPipeline(
        [Grid(GridCfg(name="grid")), Probe(CallbackCfg(name="logger", on_step=print))], "optics"
    )
    with pytest.raises(errors.UnhashableValueError, match="node 'chain' config") as info:
        DagExecutor().plan(SimpleState(), [NodeSpec(id="chain", stage=pipe)])
    assert info.value.field == "logger.on_step"


def test_unhashable_config_of_a_nested_pipelines_stage_names_the_path_through_it():
    inner = SequentialPipeline([Probe(CallbackCfg(name="logger", on_step=print))], "inner")
    with pytest.raises(errors.UnhashableValueError) as info:
        SequentialPipeline([inner], name="outer").run(SimpleState())
    assert info.value.where == "pipeline 'inner' config field 'logger.on_step'"
