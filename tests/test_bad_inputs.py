"""A catalogue of bad inputs: each one raises a typed error whose message names the culprit
(node id, stage, field, key or value), so a user can fix it without reading our code."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from dag_stages import (
    FailCfg,
    FailStage,
    GridCfg,
    GridStage,
    PhaseCfg,
    PhaseStage,
    diamond,
    with_stage,
)
from pydantic import ValidationError

from phys_pipeline.cache import CacheConfig, CacheWarning, DiskStore
from phys_pipeline.dag import build_graph
from phys_pipeline.errors import (
    CacheConfigError,
    CacheError,
    ConfigError,
    CycleError,
    DagError,
    DuplicateNodeError,
    EmptyDagError,
    MetricError,
    MissingDependencyError,
    MissingStageError,
    NodeFailedError,
    NotAStateError,
    PhysPipelineError,
    PolicyError,
    StageOutputError,
    StateMutationError,
    SweepError,
    UnhashableValueError,
    UnknownNodeError,
)
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    NodeResources,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

pytestmark = pytest.mark.usefixtures("isolated_cache_key")


# --- stages that misbehave -------------------------------------------------------------------


class ReturnsNumber(PipelineStage):
    """Returns the pulse energy itself instead of a state holding it."""

    def process(self, state, *, policy=None):
        return StageResult(state=42.0)


class ReturnsDict(PipelineStage):
    def process(self, state, *, policy=None):
        return {"state": state.deepcopy()}


class ReturnsNone(PipelineStage):
    def process(self, state, *, policy=None):
        state.deepcopy()


class SpectrumMetric(PipelineStage):
    """Puts a whole spectrum where a scalar metric belongs."""

    def process(self, state, *, policy=None):
        return StageResult(state=state.deepcopy(), metrics={"spectrum": np.ones(3)})


class NanMetric(PipelineStage):
    def process(self, state, *, policy=None):
        return StageResult(state=state.deepcopy(), metrics={"energy_J": math.nan})


class Vandal(PipelineStage):
    """Writes to the grid it was given instead of a copy."""

    def process(self, state, *, policy=None):
        state.meta["omega"][0] = 99.0
        return StageResult(state=state.deepcopy())


class Nosy(PipelineStage):
    """Declares one policy key and reads another."""

    policy_keys = ("phase.scale",)

    def process(self, state, *, policy=None):
        policy["solver.tolerance"]
        return StageResult(state=state.deepcopy())


class DetectorCfg(StageConfig):
    detector: object = None


def grid() -> NodeSpec:
    return NodeSpec(id="grid", stage=GridStage(GridCfg(name="grid")))


def after_grid(node_id: str, stage: PipelineStage) -> list[NodeSpec]:
    return [grid(), NodeSpec(id=node_id, deps=["grid"], stage=stage)]


def raise_failure(nodes: list[NodeSpec], node_id: str, policy: dict | None = None) -> None:
    """Run ``nodes``; the run must fail at ``node_id`` alone, whose error is re-raised."""
    with pytest.raises(NodeFailedError) as caught:
        DagExecutor().run(SimpleState(None), nodes, policy)
    [failure] = caught.value.failures.values()
    assert list(caught.value.failures) == [node_id]
    assert str(caught.value).startswith(f"1 node(s) failed: {node_id} ({type(failure).__name__}: ")
    raise failure


def fails_after_grid(
    node_id: str, stage: PipelineStage, policy: dict | None = None
) -> Callable[[Path], None]:
    """A catalogue trigger: ``stage`` runs after the grid as ``node_id``, which alone fails."""
    return lambda _: raise_failure(after_grid(node_id, stage), node_id, policy)


def session() -> LiveSession:
    return LiveSession(diamond(), SimpleState(None))


def sweep(*specs: SweepSpec, gather: tuple[str, ...] = ()) -> None:
    expand_sweep(diamond(), specs, gather=gather)


def phase_sweep(**grid_values: list) -> SweepSpec:
    return SweepSpec("p1", grid_values)


def not_a_file_dir(tmp_path: Path) -> Path:
    """A directory no one can create, root included: its parent is a regular file."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file, not a directory")
    return blocker / "cache"


# --- the catalogue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    trigger: Callable[[Path], object]
    error: type[BaseException]
    names: tuple[str, ...]  # what the message must mention


def node(node_id: str, *deps: str) -> NodeSpec:
    return NodeSpec(id=node_id, deps=list(deps), stage=GridStage(GridCfg(name=node_id)))


CATALOGUE = {
    # graphs
    "cycle": Bad(
        lambda _: build_graph([node("a", "c"), node("b", "a"), node("c", "b")]),
        CycleError,
        ("a -> b -> c -> a",),
    ),
    "self-loop": Bad(lambda _: build_graph([node("fibre", "fibre")]), CycleError, ("fibre",)),
    "duplicate ids": Bad(
        lambda _: build_graph([node("pulse"), node("pulse")]), DuplicateNodeError, ("'pulse'",)
    ),
    "duplicate deps": Bad(
        lambda _: build_graph([node("a"), node("b", "a", "a")]), DuplicateNodeError, ("b", "a")
    ),
    "unknown dep": Bad(
        lambda _: build_graph([node("fibre", "laser")]),
        MissingDependencyError,
        ("'fibre'", "'laser'"),
    ),
    "empty DAG": Bad(lambda _: build_graph([]), EmptyDagError, ("no nodes",)),
    "node without stage": Bad(
        lambda _: build_graph([NodeSpec(id="lonely")]), MissingStageError, ("'lonely'", "None")
    ),
    "stage without process": Bad(
        lambda _: build_graph([NodeSpec(id="odd", stage=GridCfg())]),
        MissingStageError,
        ("'odd'", ".process"),
    ),
    "node id not a string": Bad(
        lambda _: build_graph([NodeSpec(id=7, stage=GridStage(GridCfg()))]), DagError, ("7",)
    ),
    "empty node id": Bad(
        lambda _: build_graph([NodeSpec(id="", stage=GridStage(GridCfg()))]), DagError, ("''",)
    ),
    "targets name an unknown node": Bad(
        lambda _: DagExecutor().run(SimpleState(None), diamond(), targets=["p3"]),
        UnknownNodeError,
        ("'p3'", "'p1'"),
    ),
    "initial state is not a State": Bad(
        lambda _: DagExecutor().run(np.zeros(4), diamond()),
        NotAStateError,
        ("initial state", "ndarray"),
    ),
    # sweeps
    "sweep over an unknown node": Bad(
        lambda _: sweep(SweepSpec("compressor", {"gdd": [1.0]})),
        SweepError,
        ("'compressor'",),
    ),
    "sweep over an unknown field": Bad(
        lambda _: sweep(phase_sweep(gdd_fs2=[1.0, 2.0])), SweepError, ("'p1'", "'gdd_fs2'")
    ),
    "sweep with an empty grid": Bad(lambda _: sweep(SweepSpec("p1", {})), SweepError, ("'p1'",)),
    "sweep with no values": Bad(
        lambda _: sweep(phase_sweep(gdd=[])), SweepError, ("'p1'", "'gdd'")
    ),
    "sweep values given as a string": Bad(
        lambda _: sweep(SweepSpec("p1", {"window": "hann"})), SweepError, ("'window'", "'hann'")
    ),
    "zipped sweep of unequal lengths": Bad(
        lambda _: sweep(SweepSpec("p1", {"gdd": [1.0, 2.0], "window": ["none"]}, mode="zip")),
        SweepError,
        ("'p1'", "'gdd'", "'window'"),
    ),
    "sweep value out of range": Bad(
        lambda _: sweep(phase_sweep(gdd=[1.0, 1e9])), ConfigError, ("'p1'", "'gdd'", "1000000000.0")
    ),
    "node swept twice": Bad(
        lambda _: sweep(phase_sweep(gdd=[1.0]), phase_sweep(window=["hann"])),
        SweepError,
        ("'p1'", "twice"),
    ),
    "gather names an unknown node": Bad(
        lambda _: sweep(phase_sweep(gdd=[1.0]), gather=("summary",)), SweepError, ("'summary'",)
    ),
    # configs
    "config value out of range": Bad(lambda _: GridCfg(N=2), ValidationError, ("N", "4")),
    "config field misspelt": Bad(lambda _: GridCfg(n_points=64), ValidationError, ("n_points",)),
    "session update out of range": Bad(
        lambda _: session().update("p2", gdd=-1e6), ConfigError, ("'p2'", "'gdd'", "-1000000")
    ),
    "session update of an unknown field": Bad(
        lambda _: session().update("p2", chirp=1.0), ConfigError, ("'p2'", "'chirp'")
    ),
    "session update of an unknown node": Bad(
        lambda _: session().update("p9", gdd=1.0), UnknownNodeError, ("'p9'",)
    ),
    "config holding an unhashable object": Bad(
        lambda _: DagExecutor().plan(
            SimpleState(None), [NodeSpec(id="ccd", stage=GridStage(DetectorCfg(detector=object())))]
        ),
        UnhashableValueError,
        ("'ccd'", "object"),
    ),
    # what stages return or do
    "stage returns a non-State": Bad(
        fails_after_grid("energy", ReturnsNumber(StageConfig())),
        StageOutputError,
        ("'energy'", "ReturnsNumber", "float", "42.0"),
    ),
    "stage returns a dict": Bad(
        fails_after_grid("fit", ReturnsDict(StageConfig(name="fit"))),
        StageOutputError,
        ("'fit'", "dict", "StageResult"),
    ),
    "stage returns None": Bad(
        fails_after_grid("lost", ReturnsNone(StageConfig())),
        StageOutputError,
        ("'lost'", "ReturnsNone", "NoneType"),
    ),
    "non-scalar metric": Bad(
        fails_after_grid("spec", SpectrumMetric(StageConfig(name="spectrometer"))),
        MetricError,
        ("'spectrometer'", "'spectrum'"),
    ),
    "NaN metric": Bad(
        fails_after_grid("meter", NanMetric(StageConfig())),
        MetricError,
        ("'NanMetric'", "'energy_J'", "NaN"),
    ),
    "stage mutates its input": Bad(
        fails_after_grid("vandal", Vandal(StageConfig())),
        StateMutationError,
        ("'vandal'", "'Vandal'", "deepcopy"),
    ),
    "stage reads an undeclared policy key": Bad(
        fails_after_grid("nosy", Nosy(StageConfig()), {"solver.tolerance": 1e-9}),
        PolicyError,
        ("'solver.tolerance'", "'nosy'", "phase.scale"),
    ),
    # policies
    "unhashable policy value": Bad(
        lambda _: PolicyBag({"solver": object()}), PolicyError, ("'solver'", "object")
    ),
    "policy key not a string": Bad(lambda _: PolicyBag({3: "x"}), PolicyError, ("3",)),
    "policy not a mapping": Bad(
        lambda _: DagExecutor().run(SimpleState(None), diamond(), policy=["phase.scale", 2.0]),
        PolicyError,
        ("'phase.scale'", "mapping"),
    ),
    # schedulers and resources
    "scheduler with no workers": Bad(
        lambda _: LocalScheduler(max_workers=0), ConfigError, ("LocalScheduler", "max_workers", "0")
    ),
    "scheduler in an unknown mode": Bad(
        lambda _: LocalScheduler(mode="gpu"), ConfigError, ("LocalScheduler", "mode", "'gpu'")
    ),
    "negative cpu count": Bad(
        lambda _: NodeResources(cpu=-1), ConfigError, ("NodeResources", "cpu", "-1")
    ),
    "node needs more GPUs than there are": Bad(
        lambda _: DagExecutor(scheduler=LocalScheduler(max_gpu=1)).run(
            SimpleState(None),
            [NodeSpec(id="fdtd", stage=GridStage(GridCfg()), resources=NodeResources(gpu=2))],
        ),
        DagError,
        ("'fdtd'", "gpu=2", "max_gpu=1"),
    ),
    # caches
    "cache config timeout not positive": Bad(
        lambda _: CacheConfig(timeout_s=-1.0), CacheConfigError, ("timeout_s", "-1.0")
    ),
    "cache config unknown backend": Bad(
        lambda _: CacheConfig(backend="tape"), CacheConfigError, ("backend", "'tape'")
    ),
    "strict disk cache in an unwritable directory": Bad(
        lambda tmp: DagExecutor(cache=CacheConfig(disk_root=not_a_file_dir(tmp), strict=True)).run(
            SimpleState(None), diamond()
        ),
        CacheError,
        ("file.txt/cache", "cannot write entry"),
    ),
}


@pytest.mark.parametrize("bad", CATALOGUE.values(), ids=CATALOGUE.keys())
def test_bad_input_raises_a_typed_error_naming_the_culprit(bad: Bad, tmp_path: Path) -> None:
    with pytest.raises(bad.error) as caught:
        bad.trigger(tmp_path)
    error = caught.value
    assert type(error) is bad.error, f"{type(error).__name__}: {error}"  # not a subclass
    if bad.error is not ValidationError:  # pydantic's own, raised by the config class itself
        assert isinstance(error, PhysPipelineError)
    for name in bad.names:
        assert name in str(error), f"{name!r} not in: {error}"


def test_a_stage_that_raises_keeps_its_error_and_a_note_names_node_stage_and_config() -> None:
    """Not one of ours, so not in the catalogue: the stage's own error, noted with the culprit."""
    fibre = FailStage(FailCfg(name="fibre", message="bad GDD"))
    with pytest.raises(RuntimeError) as caught:
        raise_failure(with_stage(diamond(), "p2", fibre), "p2")
    assert type(caught.value) is RuntimeError and str(caught.value) == "bad GDD"
    assert caught.value.__notes__ == [
        "raised by stage 'fibre' in node 'p2', config "
        "FailCfg(name='fibre', tags={}, message='bad GDD')"
    ]


def test_config_validation_error_locates_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        PhaseCfg(gdd=1e5, window="hann")
    assert [e["loc"] for e in caught.value.errors()] == [("gdd",)]


def test_failed_session_update_changes_nothing() -> None:
    live = session()
    before = live.plan().keys
    with pytest.raises(ConfigError):
        live.update("p1", gdd=float("nan"), window="hann")
    assert live.plan().keys == before
    assert live.config("p1").window == "none"


# --- not errors: inputs that look odd but mean one thing --------------------------------------


def test_a_single_target_id_is_one_target_not_its_characters() -> None:
    out = DagExecutor().run(SimpleState(None), diamond(), targets="p1")
    assert out.execution_order == ["grid", "p1"]


def test_a_single_dependency_id_is_one_dependency_not_its_characters() -> None:
    nodes = [grid(), NodeSpec(id="p1", deps="grid", stage=PhaseStage(PhaseCfg(gdd=2.0)))]
    assert nodes[1].deps == ["grid"]
    assert DagExecutor().run(SimpleState(None), nodes).execution_order == ["grid", "p1"]


def test_unwritable_cache_directory_warns_and_the_run_still_completes(tmp_path: Path) -> None:
    root = not_a_file_dir(tmp_path)
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        out = DagExecutor(cache=DiskStore(root)).run(SimpleState(None), diamond())
    messages = [str(w.message) for w in recorded if issubclass(w.category, CacheWarning)]
    assert messages and all(str(root) in m and "cannot write entry" in m for m in messages)
    assert len(messages) == len(out.ran) == 5
    assert out.metrics == DagExecutor().run(SimpleState(None), diamond()).metrics
    assert not root.exists()
