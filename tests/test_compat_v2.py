"""Code written for phys-pipeline 2.0.0 runs unchanged: every name and call signature 2.0.0
offered that we serve (``phys_pipeline._v2``), at the module path 2.0.0 code imports it from,
as a thin layer over our own design. Names for old code warn once (DeprecationWarning) unless
they are ours too; nothing the user guide uses warns."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import pickle
import subprocess
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from test_deprecated_names import deprecations, fresh_process  # noqa: F401 - autouse fixture

import phys_pipeline
from phys_pipeline._v2 import served_from
from phys_pipeline._v2.accumulator import RunAccumulator
from phys_pipeline._v2.cache import (
    SharedDiskCache,
    deserialize_cache_entry,
    serialize_cache_entry,
)
from phys_pipeline._v2.cache_redis import RedisCache
from phys_pipeline._v2.dag import Dag, PipelineGraph, build_dag
from phys_pipeline._v2.errors import SchedulerError, SchedulerRetryError, SchedulerTimeoutError
from phys_pipeline._v2.executor import MpiRunner, RetryPolicy
from phys_pipeline._v2.record import (
    ArtifactError,
    FigureApi,
    JSONLRecorder,
    is_axes,
    is_figure,
)
from phys_pipeline._v2.scheduler import JobApi, JobHandle
from phys_pipeline.cache import (
    CacheConfig,
    CacheWarning,
    DiskCache,
    DiskStore,
    MemoryStore,
    RedisStore,
    TieredStore,
    build_cache_backend,
)
from phys_pipeline.dag import make_plan
from phys_pipeline.dag_cache import DagCache
from phys_pipeline.errors import (
    CacheConfigError,
    CacheError,
    ConfigError,
    CycleError,
    DagError,
    DuplicateNodeError,
    MetricError,
    MetricKeyCollisionError,
    MissingDependencyError,
    MissingRecorderError,
    PhysPipelineError,
    StaleCodeError,
    UnhashableValueError,
)
from phys_pipeline.executor import DagExecutor
from phys_pipeline.hashing import config_hash
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.policy import PolicyBag
from phys_pipeline.record import ArtifactRecorder
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    NodeResources,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

# --- small optics stages --------------------------------------------------------------------


class GainCfg(StageConfig):
    gain: float = 2.0


class Amplifier(PipelineStage[SimpleState, GainCfg]):
    """Multiplies the pulse energy (the payload) by the gain; reports it as a metric."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = state.deepcopy()
        out.payload = (out.payload or 1.0) * self.cfg.gain
        return StageResult(state=out, metrics={"energy": out.payload})


class LossCfg(StageConfig):
    transmission: float = 0.5


class Attenuator(PipelineStage[SimpleState, LossCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = state.deepcopy()
        out.payload = out.payload * self.cfg.transmission
        if policy is not None and "coating" in policy:
            out.meta["coating"] = policy["coating"]
        return StageResult(state=out)


def amplifier_chain(gain: float = 2.0) -> SequentialPipeline:
    return SequentialPipeline(
        [Amplifier(GainCfg(name="amp", gain=gain)), Attenuator(LossCfg(name="loss"))],
        name="chain",
    )


# --- warnings -------------------------------------------------------------------------------


def assert_warned_once_here(caught: list[warnings.WarningMessage], old: str, advice: str) -> None:
    """One warning, about ``old``, advising ``advice``, pointing at this file's line."""
    assert [(str(w.message).partition(" is deprecated")[0], w.filename) for w in caught] == [
        (old, __file__)
    ]
    assert advice in str(caught[0].message)


def quietly(action: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return action()


# --- serving 2.0.0 names from our modules ---------------------------------------------------

# 2.0.0 module path -> names served there, and whether each warns (False: ours too)
SERVED = {
    "phys_pipeline.errors": {
        "PipelineError": True,
        "StageContractError": True,
        "DagValidationError": True,
        "DagDuplicateNodeError": True,
        "DagMissingDependencyError": True,
        "DagCycleError": True,
        "MissingPortError": True,
        "SchedulerError": False,
        "SchedulerTimeoutError": False,
        "SchedulerRetryError": False,
    },
    "phys_pipeline.hashing": dict.fromkeys(
        ["hash_model", "hash_policy", "hash_state", "hash_dag_node", "digest_many", "stable_json"],
        True,
    ),
    "phys_pipeline.pipeline": {"PipelineStageWrapper": True},
    "phys_pipeline.dag": dict.fromkeys(["Dag", "PipelineGraph", "build_dag"], True),
    "phys_pipeline.executor": {"RetryPolicy": False, "MpiRunner": False},
    "phys_pipeline.scheduler": {"JobHandle": True},
    "phys_pipeline.record": dict.fromkeys(
        ["JSONLRecorder", "FigureLike", "AxesLike", "is_figure", "is_axes"], True
    ),
    "phys_pipeline.cache": dict.fromkeys(
        ["SharedDiskCache", "serialize_cache_entry", "deserialize_cache_entry", "CacheBackend"],
        True,
    ),
    "phys_pipeline.cache_redis": dict.fromkeys(
        ["RedisCache", "serialize_cache_entry", "deserialize_cache_entry", "CacheBackend"], True
    ),
    "phys_pipeline": {
        "RetryPolicy": False,
        "SharedDiskCache": True,
        "JSONLRecorder": True,
        "RunAccumulator": True,
    },
}


def served_names() -> list[tuple[str, str, bool]]:
    return [(m, name, warns) for m, names in SERVED.items() for name, warns in names.items()]


@pytest.mark.parametrize(("module", "name", "warns"), served_names())
def test_a_2_0_0_name_imports_from_its_2_0_0_module(module: str, name: str, warns: bool) -> None:
    def import_it() -> None:
        namespace: dict[str, Any] = {}
        exec(f"from {module} import {name}", namespace)  # as 2.0.0 code spells it
        assert namespace[name] is not None

    caught = deprecations(import_it)
    if warns:
        assert len(caught) == 1 and str(caught[0].message).startswith(f"{module}.{name} is")
    else:
        assert caught == []


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"'phys_pipeline\.errors' has no attribute 'Nope'"):
        phys_pipeline.errors.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_a_dunder_lookup_does_not_load_the_2_0_0_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "phys_pipeline._v2.hashing", raising=False)
    assert not hasattr(phys_pipeline.hashing, "__wrapped__")
    assert "phys_pipeline._v2.hashing" not in sys.modules


def test_served_from_serves_one_modules_names_to_another() -> None:
    module = types.ModuleType("lab.optics")
    module.__getattr__ = served_from("lab.optics", "dag")  # type: ignore[attr-defined]
    caught = deprecations(lambda: module.build_dag)
    assert_warned_once_here(caught, "lab.optics.build_dag", "validate")
    assert quietly(lambda: module.build_dag) is build_dag


def test_the_user_guides_names_never_warn() -> None:
    guide = [
        ("phys_pipeline.types", "State SimpleState PipelineStage StageConfig StageResult"),
        ("phys_pipeline.types", "DagState NodeSpec NodeResources"),
        ("phys_pipeline.policy", "PolicyBag"),
        ("phys_pipeline.pipeline", "SequentialPipeline"),
        ("phys_pipeline.executor", "DagExecutor"),
        ("phys_pipeline.scheduler", "LocalScheduler"),
        ("phys_pipeline.record", "ArtifactRecorder"),
        ("phys_pipeline.cache", "CacheConfig build_cache_backend DiskCache"),
        ("phys_pipeline.dag_cache", "DagCache"),
        ("phys_pipeline.sweep", "SweepSpec expand_sweep"),
    ]

    def use_them() -> None:
        for module, names in guide:
            for name in names.split():
                getattr(importlib.import_module(module), name)
        NodeResources(cpu=2, gpu=0, mem_gb=1.0)
        amplifier_chain().run(SimpleState(1.0), policy=PolicyBag({"coating": "AR"}))

    assert deprecations(use_them) == []


# --- 2.0.0's signatures: every call 2.0.0 code makes binds to ours alike ----------------------


def v2_signature(
    module: str,
    name: str,
    params: str,
    *,
    renamed: dict[str, str] | None = None,
    own_defaults: frozenset[str] = frozenset(),
) -> Any:
    """2.0.0's ``params`` (facts read from 2.0.0 with inspect.signature) for ``module.name``;
    ``renamed``: 2.0.0 parameter -> our positional parameter in its place; ``own_defaults``:
    parameters whose default is ours."""
    return pytest.param(module, name, params, renamed or {}, own_defaults, id=f"{module}.{name}")


CACHE_METHODS = [
    ("put", "self, key, meta, arrays, *, ttl_s=None", {"meta": "result"}),
    ("get", "self, key", None),
    ("exists", "self, key", None),
]

SIGNATURES = [
    v2_signature(
        "phys_pipeline.cache_redis", "RedisCache", "url, *, prefix='phys-pipeline', ttl_s=None"
    ),
    v2_signature("phys_pipeline.cache", "DiskCache", "root"),
    v2_signature("phys_pipeline.cache", "SharedDiskCache", "root, *, lock_suffix='.lock'"),
    *[
        v2_signature(module, f"{cls}.{method}", params, renamed=renamed)
        for module, cls in [
            ("phys_pipeline.cache_redis", "RedisCache"),
            ("phys_pipeline.cache", "DiskCache"),
            ("phys_pipeline.cache", "SharedDiskCache"),
        ]
        for method, params, renamed in CACHE_METHODS
    ],
    v2_signature(
        "phys_pipeline.cache",
        "CacheConfig",
        "*, backend='disk', disk_root='.phys_pipeline_cache', shared_lock_suffix='.lock', "
        "redis_url=None, redis_prefix='phys-pipeline', redis_ttl_s=None",
        own_defaults=frozenset({"disk_root"}),  # ours is .cache/phys-pipeline: the user guide's
    ),
    v2_signature("phys_pipeline.cache", "build_cache_backend", "config"),
    v2_signature("phys_pipeline.cache_redis", "serialize_cache_entry", "meta, arrays"),
    v2_signature(
        "phys_pipeline.cache_redis", "deserialize_cache_entry", "meta_payload, arrays_payload"
    ),
]


@pytest.mark.parametrize(("module", "name", "params", "renamed", "own_defaults"), SIGNATURES)
def test_a_call_2_0_0_code_makes_binds_to_our_name_alike(
    module: str, name: str, params: str, renamed: dict[str, str], own_defaults: frozenset[str]
) -> None:
    """2.0.0's positional parameters in its order, each 2.0.0 name taken by keyword, 2.0.0's
    defaults (unless ours are documented as ours), and nothing we add required."""
    ours: Any = quietly(lambda: importlib.import_module(module))
    for part in name.split("."):
        ours = quietly(lambda ours=ours, part=part: getattr(ours, part))
    theirs = inspect.signature(eval(f"lambda {params}: None")).parameters
    mine = inspect.signature(ours).parameters
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    their_order = [renamed.get(old, old) for old, p in theirs.items() if p.kind in positional]
    our_order = [new for new, p in mine.items() if p.kind in positional]
    assert our_order[: len(their_order)] == their_order
    for old, param in theirs.items():
        assert mine[old].kind != inspect.Parameter.POSITIONAL_ONLY, old
        if param.default is not param.empty and old not in own_defaults:
            assert mine[old].default == param.default, old
    required = [
        new
        for new, p in mine.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    assert set(required) <= set(theirs) | set(renamed.values())


# --- phys_pipeline.errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "ours"),
    [
        ("PipelineError", PhysPipelineError),
        ("StageContractError", MetricError),
        ("DagValidationError", DagError),
        ("DagDuplicateNodeError", DuplicateNodeError),
        ("DagMissingDependencyError", MissingDependencyError),
        ("DagCycleError", CycleError),
        ("MissingPortError", DagError),
    ],
)
def test_a_2_0_0_error_is_the_error_we_raise_for_the_same_failure(old: str, ours: type) -> None:
    caught = deprecations(lambda: getattr(phys_pipeline.errors, old))
    assert_warned_once_here(caught, f"phys_pipeline.errors.{old}", ours.__name__)
    assert quietly(lambda: getattr(phys_pipeline.errors, old)) is ours


def test_a_metric_that_is_not_a_scalar_is_caught_as_a_stage_contract_error() -> None:
    from phys_pipeline.errors import StageContractError  # type: ignore[attr-defined]

    class Spectrometer(PipelineStage[SimpleState, StageConfig]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            return StageResult(state=state, metrics={"spectrum": np.ones(3)})

    with pytest.raises(StageContractError, match=r"'spectrum'.*must be a scalar"):
        SequentialPipeline([Spectrometer(StageConfig(name="spec"))]).run(SimpleState(1.0))


@pytest.mark.parametrize(
    ("nodes", "words"),
    [
        ([NodeSpec(id="laser"), NodeSpec(id="laser")], ("Duplicate node id", "'laser'")),
        ([NodeSpec(id="lens", deps=["laser"])], ("Missing dependency", "'lens'", "'laser'")),
        (
            [NodeSpec(id="a", deps=["b"]), NodeSpec(id="b", deps=["a"])],
            ("Cycle detected", "a -> b"),
        ),
    ],
)
def test_graph_errors_say_what_2_0_0_said_and_name_the_nodes(
    nodes: list[NodeSpec], words: tuple[str, ...]
) -> None:
    with pytest.raises(DagError) as caught:
        build_dag(nodes)
    assert all(word in str(caught.value) for word in words)


@pytest.mark.parametrize(
    "error",
    [
        SchedulerError("node 'pump'", "needs gpu=1 but the scheduler has max_gpu=0"),
        SchedulerTimeoutError("nodes 'pump'", "none finished within 0.1 s"),
        SchedulerRetryError("node 'pump'", "failed 3 times"),
    ],
)
def test_scheduler_errors_are_typed_name_the_node_and_survive_pickling(error: Any) -> None:
    assert isinstance(error, PhysPipelineError) and "'pump'" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.where == error.where


def test_a_scheduler_timeout_is_a_timeout_error() -> None:
    assert issubclass(SchedulerTimeoutError, TimeoutError)
    assert issubclass(SchedulerRetryError, SchedulerError)


# --- phys_pipeline.types: NodeResources -----------------------------------------------------


def test_node_resources_accept_and_read_2_0_0_memory_gb_warning_once() -> None:
    caught = deprecations(lambda: NodeResources(memory_gb=8.0))
    assert_warned_once_here(caught, "NodeResources(memory_gb=...)", "mem_gb")
    resources = quietly(lambda: NodeResources(memory_gb=8.0))
    assert resources.mem_gb == 8.0 and resources == NodeResources(mem_gb=8.0)
    caught = deprecations(lambda: resources.memory_gb)
    assert_warned_once_here(caught, "NodeResources.memory_gb", "mem_gb")
    assert quietly(lambda: resources.memory_gb) == 8.0


def test_node_resources_given_memory_gb_are_validated_and_replaceable() -> None:
    with pytest.raises(ConfigError, match="mem_gb"):
        quietly(lambda: NodeResources(memory_gb=-1.0))
    with pytest.raises(ConfigError, match="memory_gb"):
        quietly(lambda: NodeResources(mem_gb=1.0, memory_gb=2.0))
    resources = quietly(lambda: NodeResources(memory_gb=2.0))
    assert deprecations(lambda: dataclasses.replace(resources, mem_gb=5.0)) == []
    assert dataclasses.replace(resources, mem_gb=5.0).mem_gb == 5.0
    assert dataclasses.replace(resources, cpu=2).mem_gb == 2.0
    assert pickle.loads(pickle.dumps(resources)) == resources


# --- phys_pipeline.hashing ------------------------------------------------------------------


def test_hash_model_is_the_config_hash_a_pipeline_records() -> None:
    from phys_pipeline.hashing import hash_model  # type: ignore[attr-defined]

    pipe = amplifier_chain()
    out = pipe.run(SimpleState(1.0))
    assert hash_model(GainCfg(name="amp", gain=2.0)) == config_hash(pipe.stages[0].cfg)
    assert quietly(lambda: out.provenance["stages"][0]["cfg_hash"]) == hash_model(
        pipe.stages[0].cfg
    )
    assert hash_model(GainCfg(gain=2.0)) != hash_model(GainCfg(gain=3.0))


def test_hash_policy_is_the_runs_policy_hash_in_any_order() -> None:
    from phys_pipeline.hashing import hash_policy  # type: ignore[attr-defined]

    policy = PolicyBag({"coating": "AR", "grid.N": 512})
    out = amplifier_chain().run(SimpleState(1.0), policy=policy)
    assert hash_policy(policy) == out.provenance["policy_hash"]
    assert hash_policy({"grid.N": 512, "coating": "AR"}) == hash_policy(policy)
    assert hash_policy({"grid.N": 1024, "coating": "AR"}) != hash_policy(policy)


def test_hash_state_hashes_the_states_content() -> None:
    from phys_pipeline.hashing import hash_state  # type: ignore[attr-defined]

    pulse = SimpleState(payload=np.linspace(0, 1, 8), meta={"fwhm_fs": 30})
    assert hash_state(pulse) == hash_state(pulse.deepcopy())
    assert hash_state(pulse) != hash_state(SimpleState(np.linspace(0, 1, 8), {"fwhm_fs": 31}))


NODE = {
    "node_id": "amp",
    "op_name": "amplify",
    "version": "v2",
    "cfg_hash": "c0",
    "input_hash": "i0",
    "dep_hashes": {"seed": "1", "pump": "2"},
    "policy_hash": None,
}


def test_hash_dag_node_ignores_the_order_of_dependencies() -> None:
    from phys_pipeline.hashing import hash_dag_node  # type: ignore[attr-defined]

    reordered = {**NODE, "dep_hashes": {"pump": "2", "seed": "1"}}
    assert hash_dag_node(**NODE) == hash_dag_node(**reordered)


@pytest.mark.parametrize(
    "change",
    [
        {"node_id": "amp2"},
        {"op_name": "attenuate"},
        {"version": "v3"},
        {"cfg_hash": None},
        {"input_hash": "i1"},
        {"dep_hashes": {"seed": "1"}},
        {"policy_hash": "p"},
        {"cache_version": "v3"},
    ],
)
def test_hash_dag_node_changes_with_each_ingredient(change: dict[str, Any]) -> None:
    from phys_pipeline.hashing import hash_dag_node  # type: ignore[attr-defined]

    assert hash_dag_node(**NODE) != hash_dag_node(**{**NODE, **change})


def test_digest_many_cannot_collide_by_moving_text_between_parts() -> None:
    from phys_pipeline.hashing import digest_many  # type: ignore[attr-defined]

    assert digest_many("ab", "c") == digest_many("ab", "c") != digest_many("a", "bc")


def test_stable_json_sorts_keys_and_refuses_what_json_cannot_hold() -> None:
    from phys_pipeline.hashing import stable_json  # type: ignore[attr-defined]

    assert stable_json({"b": 1, "a": [2.5, "x"]}) == b'{"a":[2.5,"x"],"b":1}'
    with pytest.raises(UnhashableValueError, match="stable_json"):
        stable_json({"beam": object()})


# --- phys_pipeline.dag ----------------------------------------------------------------------


def diamond() -> list[NodeSpec]:
    return [
        NodeSpec(id="seed", op_name="oscillator", version="v1"),
        NodeSpec(id="stretch", deps=["seed"]),
        NodeSpec(id="pump", deps=["seed"]),
        NodeSpec(id="amp", deps=["stretch", "pump"]),
    ]


def test_build_dag_gives_parents_children_and_an_order_without_stages() -> None:
    dag = build_dag(diamond())
    assert isinstance(dag, Dag)
    assert dag.topo_order == ["seed", "stretch", "pump", "amp"]
    assert dag.deps == {
        "seed": [],
        "stretch": ["seed"],
        "pump": ["seed"],
        "amp": ["stretch", "pump"],
    }
    assert dag.reverse_deps == {
        "seed": ["stretch", "pump"],
        "stretch": ["amp"],
        "pump": ["amp"],
        "amp": [],
    }
    assert dag.nodes_by_id["seed"].op_name == "oscillator"


def test_build_dag_orders_nodes_listed_children_first() -> None:
    assert build_dag(list(reversed(diamond()))).topo_order == ["seed", "pump", "stretch", "amp"]


def test_build_dag_of_no_nodes_is_an_empty_graph() -> None:
    assert build_dag([]) == Dag({}, {}, {}, [])


def test_pipeline_graph_holds_the_nodes_and_their_graph() -> None:
    graph = PipelineGraph.from_nodes(diamond())
    assert [node.id for node in graph.nodes] == ["seed", "stretch", "pump", "amp"]
    assert graph.dag == build_dag(diamond())


# --- phys_pipeline.sweep --------------------------------------------------------------------


def test_sweep_variants_are_named_and_tagged_as_2_0_0_named_them() -> None:
    nodes = [
        NodeSpec(id="amp", stage=Amplifier(GainCfg())),
        NodeSpec(id="loss", deps=["amp"], stage=Attenuator(LossCfg())),
    ]
    grid = {"transmission": [0.5, 1], "name": ["AR coated"]}
    swept = expand_sweep(nodes, [SweepSpec(node_id="loss", param_grid=grid)])
    assert [(node.id, node.metadata["sweep"]) for node in swept[1:]] == [
        ("loss__name-AR coated_transmission-0.5", {"name": "AR coated", "transmission": 0.5}),
        ("loss__name-AR coated_transmission-1", {"name": "AR coated", "transmission": 1}),
    ]


# --- phys_pipeline.executor: RetryPolicy and MpiRunner -------------------------------------


def test_retry_policy_defaults_retry_nothing_and_time_out_never() -> None:
    assert RetryPolicy() == RetryPolicy(max_retries=0, timeout_s=None, backoff_s=0.0)
    policy = RetryPolicy(max_retries=2, timeout_s=30.0, backoff_s=0.5)
    assert (policy.max_retries, policy.timeout_s, policy.backoff_s) == (2, 30.0, 0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_retries", -1),
        ("max_retries", 1.5),
        ("max_retries", True),
        ("timeout_s", 0.0),
        ("timeout_s", float("inf")),
        ("backoff_s", -0.1),
        ("backoff_s", float("nan")),
    ],
)
def test_a_retry_policy_value_that_makes_no_sense_is_a_config_error(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        RetryPolicy(**{field: value})
    assert caught.value.field == field


def test_an_mpi_runner_is_an_object_with_a_run_method() -> None:
    class MockRunner:
        def run(self, stage: Any, state: Any, *, resources: NodeResources) -> StageResult:
            return stage.process(state)

    runner: MpiRunner = MockRunner()
    stage = Amplifier(GainCfg(gain=3.0))
    assert runner.run(stage, SimpleState(1.0), resources=NodeResources(cpu=2)).state.payload == 3.0


class CountingRunner:
    """Stands in for mpirun: runs the stage here, as one rank, noting the ranks asked for."""

    def __init__(self) -> None:
        self.ranks: list[int] = []

    def run(self, stage: Any, state: Any, *, resources: NodeResources) -> StageResult:
        self.ranks.append(resources.mpi_ranks)
        result = stage.process(state)
        result.metrics["pid"] = os.getpid()
        return result


def mpi_chain(ranks: int) -> list[NodeSpec]:
    return [
        NodeSpec(id="amp", stage=Amplifier(GainCfg(gain=3.0))),
        NodeSpec(
            id="loss",
            deps=["amp"],
            stage=Attenuator(LossCfg(transmission=0.5)),
            resources=NodeResources(mpi_ranks=ranks),
        ),
    ]


def test_node_resources_ask_for_one_mpi_rank_unless_told() -> None:
    assert NodeResources().mpi_ranks == 1
    assert NodeResources(cpu=2, mpi_ranks=4) == NodeResources(2, 0, 0.0, 4)


@pytest.mark.parametrize("ranks", [0, -2, 1.5, True, "4"])
def test_mpi_ranks_not_a_whole_number_from_one_up_are_a_config_error(ranks: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        NodeResources(mpi_ranks=ranks)
    assert caught.value.field == "mpi_ranks"


def test_a_node_asking_for_mpi_ranks_runs_through_the_executors_mpi_runner() -> None:
    runner = CountingRunner()
    policy = PolicyBag({"coating": "AR"})
    out = DagExecutor(mpi_runner=runner).run(SimpleState(1.0), mpi_chain(4), policy=policy)
    assert runner.ranks == [4]  # only "loss" asked for ranks
    assert out.results["loss"].state.payload == 1.5
    assert out.results["loss"].state.meta["coating"] == "AR"  # the policy the node's key covers
    assert out.metrics["loss.pid"] == os.getpid()


def test_one_rank_or_no_runner_runs_the_stage_as_any_other() -> None:
    runner = CountingRunner()
    out = DagExecutor(mpi_runner=runner).run(SimpleState(1.0), mpi_chain(1))
    assert runner.ranks == [] and out.results["loss"].state.payload == 1.5
    assert DagExecutor().run(SimpleState(1.0), mpi_chain(4)).results["loss"].state.payload == 1.5


def test_an_mpi_nodes_result_is_cached_like_any_other(tmp_path: Path) -> None:
    runner = CountingRunner()
    first = DagExecutor(cache=DiskStore(tmp_path), mpi_runner=runner).run(
        SimpleState(1.0), mpi_chain(2)
    )
    again = DagExecutor(cache=DiskStore(tmp_path), mpi_runner=runner).run(
        SimpleState(1.0), mpi_chain(2)
    )
    assert first.ran == ["amp", "loss"] and again.hits == ["amp", "loss"] and runner.ranks == [2]


def test_an_mpi_node_in_a_worker_process_reaches_the_runner_there() -> None:
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=1, mode="process"), mpi_runner=CountingRunner()
    )
    out = executor.run(SimpleState(1.0), mpi_chain(2))
    assert out.results["loss"].state.payload == 1.5 and out.metrics["loss.pid"] != os.getpid()


def test_an_mpi_node_sent_to_a_process_with_other_code_refuses_to_run() -> None:
    from phys_pipeline._v2.executor import OnMpiRanks

    planned = make_plan(mpi_chain(2), SimpleState(1.0)).nodes["loss"].fingerprint
    # the plan's code, as a process that imported an older Attenuator would differ from it
    other = dataclasses.replace(
        planned, digest="0" * 32, parts={label: "older" for label in planned.parts}
    )
    stage, runner = Attenuator(LossCfg()), CountingRunner()
    here = OnMpiRanks(stage, runner, NodeResources(mpi_ranks=2), "loss", other)
    assert here.process(SimpleState(1.0)).state.payload == 0.5  # this process: no check
    arrived = dataclasses.replace(here, made_in=os.getpid() + 1)  # as unpickled elsewhere
    with pytest.raises(StaleCodeError, match="'loss'"):
        arrived.process(SimpleState(1.0))
    assert runner.ranks == [2]


# --- phys_pipeline.pipeline -----------------------------------------------------------------


def wrapped(gain: float = 2.0) -> Any:
    from phys_pipeline.pipeline import PipelineStageWrapper  # type: ignore[attr-defined]

    return PipelineStageWrapper("front-end", amplifier_chain(gain))


def test_a_wrapped_pipeline_runs_as_one_stage_under_its_name() -> None:
    outer = SequentialPipeline(
        [quietly(wrapped), Amplifier(GainCfg(name="booster", gain=10.0))], name="laser"
    )
    out = outer.run(SimpleState(1.0))
    assert out.state.payload == 10.0  # 1 * 2 (amp) * 0.5 (loss) * 10 (booster)
    assert out.metrics == {"laser.front-end.chain.amp.energy": 2.0, "laser.booster.energy": 10.0}


def test_a_wrapped_pipeline_keeps_the_state_class() -> None:
    class Pulse(SimpleState):
        """Copied by SimpleState.deepcopy, which it does not override."""

    out = SequentialPipeline([quietly(wrapped)], name="laser").run(Pulse(1.0))
    assert type(out.state) is Pulse and out.state.payload == 1.0


def test_a_simple_state_subclass_copies_as_itself_with_what_it_adds() -> None:
    class Pulse(SimpleState):
        pass

    pulse = Pulse(1.0, {"shots": [1, 2]})
    pulse.carrier_nm = [800.0]  # type: ignore[attr-defined]
    twin = pulse.deepcopy()
    assert type(twin) is Pulse and twin == pulse
    assert twin.carrier_nm == [800.0] and twin.carrier_nm is not pulse.carrier_nm
    assert twin.meta["shots"] is not pulse.meta["shots"]
    assert type(SimpleState(1.0).deepcopy()) is SimpleState


def test_a_wrapped_pipelines_config_and_version_are_its_pipelines() -> None:
    wrapper = quietly(wrapped)
    assert wrapper.cfg.name == "front-end"
    assert wrapper.cfg.stages == wrapper.pipeline.cfg.stages
    assert wrapper.version == wrapper.pipeline.version
    assert quietly(lambda: wrapped(3.0)).cfg != wrapper.cfg


def test_a_dag_node_holding_a_wrapped_pipeline_goes_stale_when_an_inner_stage_does() -> None:
    def key(gain: float) -> str:
        node = NodeSpec(id="front", stage=quietly(lambda: wrapped(gain)))
        return make_plan([node], SimpleState(1.0)).nodes["front"].key

    assert key(2.0) == key(2.0) != key(3.0)


def test_the_wrapper_warns_once_where_it_is_imported() -> None:
    def import_it() -> None:
        from phys_pipeline.pipeline import PipelineStageWrapper  # noqa: F401

    caught = deprecations(import_it)
    assert_warned_once_here(caught, "phys_pipeline.pipeline.PipelineStageWrapper", "is a stage")


def test_a_pipeline_stage_record_answers_2_0_0_keys_warning_once_each() -> None:
    policy = PolicyBag({"coating": "AR"})
    out = amplifier_chain().run(SimpleState(1.0), policy=policy)
    first = out.provenance["stages"][0]
    old = {
        "stage": first["name"],
        "cfg_hash": first["config_hash"],
        "wall_time_s": first["duration_s"],
        "policy_hash": policy.hash(),
    }
    for key, value in old.items():
        caught = deprecations(lambda key=key: first[key])
        assert_warned_once_here(
            caught,
            f"SequentialPipeline stage record[{key!r}]",
            "provenance" if key == "policy_hash" else "read",
        )
        assert quietly(lambda key=key: (first[key], first.get(key), key in first)) == (
            value,
            value,
            True,
        )


def test_a_pipeline_stage_record_holds_only_its_current_keys() -> None:
    record = amplifier_chain().run(SimpleState(1.0)).provenance["stages"][0]
    current = {"name", "class", "config_hash", "version", "duration_s"}
    assert set(record) == current
    assert set(json.loads(json.dumps(record))) == current
    assert set(pickle.loads(pickle.dumps(record))) == current
    assert record.get("nothing", "none") == "none" and "nothing" not in record
    with pytest.raises(KeyError):
        record["nothing"]


def test_a_pipelines_policy_can_be_set_as_an_attribute() -> None:
    pipe = amplifier_chain()
    pipe.policy = {"coating": "HR"}
    assert pipe.policy == PolicyBag({"coating": "HR"})
    assert pipe.run(SimpleState(1.0)).state.meta["coating"] == "HR"


def test_a_pipeline_node_is_still_a_cache_hit_with_2_0_0_records(tmp_path: Path) -> None:
    node = [NodeSpec(id="chain", stage=amplifier_chain())]
    DagExecutor(cache=DiskStore(tmp_path)).run(SimpleState(1.0), node)
    again = DagExecutor(cache=DiskStore(tmp_path)).run(SimpleState(1.0), node)
    assert again.hits == ["chain"]


class Beamline(PipelineStage[SimpleState, StageConfig]):
    """Offers artifacts of every kind: a lazy figure, a figure, a long and a short trace, a
    number, a note, settings and a list."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(
            state=state,
            artifacts={
                "profile": FakeFigure,  # a figure factory: drawn only when recording
                "spot": FakeFigure(),
                "trace": np.arange(3000.0).reshape(30, 100),
                "peaks": np.array([1.5, 2.5]),
                "energy": 2.0,
                "note": "aligned",
                "settings": {"gain": 2.0},
                "shots": [1, 2],
            },
        )


def beamline_run(**recording: Any) -> Any:
    return SequentialPipeline([Beamline(StageConfig(name="bl"))], name="lab").run(
        SimpleState(1.0), **recording
    )


def test_a_pipelines_artifacts_are_shown_as_2_0_0_showed_them_when_not_recorded() -> None:
    out = beamline_run()
    shown = {key.removeprefix("lab.bl."): value for key, value in out.artifacts.items()}
    assert shown.pop("trace") == {
        "dtype": "float64",
        "shape": [30, 100],
        "head": [float(i) for i in range(16)],
    }
    np.testing.assert_array_equal(shown.pop("peaks"), [1.5, 2.5])  # short: as it is
    assert shown == {
        "profile": "<class 'type'>",  # lazy: not called, shown by its type
        "spot": f"<class '{__name__}.FakeFigure'>",
        "energy": 2.0,
        "note": "aligned",
        "settings": {"gain": 2.0},
        "shots": "<class 'list'>",
    }


def test_a_pipelines_recorded_artifacts_are_json_records_naming_the_figures(
    tmp_path: Path,
) -> None:
    out = beamline_run(record_artifacts=True, recorder=ArtifactRecorder(tmp_path))
    shown = json.loads(json.dumps(out.artifacts))  # JSON-friendly: every one of them
    for figure in ("profile", "spot"):
        png = Path(shown.pop(f"lab.bl.{figure}")["figure"])
        assert png.suffix == ".png" and png.read_bytes() == b"png"
    assert shown.pop("lab.bl.trace")["preview"]["shape"] == [30, 100]
    assert shown.pop("lab.bl.peaks") == {
        "preview": {"dtype": "float64", "shape": [2], "head": [1.5, 2.5]}
    }
    assert shown["lab.bl.energy"] == {"preview": "<class 'float'>"}
    assert set(shown) == {"lab.bl.energy", "lab.bl.note", "lab.bl.settings", "lab.bl.shots"}


def test_a_pipelines_artifact_values_are_what_its_stages_returned(tmp_path: Path) -> None:
    for out in (
        beamline_run(),
        beamline_run(record_artifacts=True, recorder=ArtifactRecorder(tmp_path)),
    ):
        values = out.artifact_values
        assert values.keys() == out.artifacts.keys()
        assert values["lab.bl.profile"] is FakeFigure and values["lab.bl.shots"] == [1, 2]


def test_a_pipeline_inside_a_pipeline_or_a_dag_hands_on_the_values_themselves() -> None:
    inner = SequentialPipeline([Beamline(StageConfig(name="bl"))], name="lab")
    outer = SequentialPipeline([inner], name="site").run(SimpleState(1.0))
    assert outer.artifact_values["site.lab.bl.profile"] is FakeFigure
    assert outer.artifacts["site.lab.bl.shots"] == "<class 'list'>"
    dag = DagExecutor().run(SimpleState(1.0), [NodeSpec(id="lab", stage=inner)])
    assert dag.results["lab"].artifacts["bl.profile"] is FakeFigure
    wrapper = quietly(lambda: phys_pipeline.pipeline.PipelineStageWrapper("front", inner))
    assert wrapper.process(SimpleState(1.0)).artifacts["lab.bl.profile"] is FakeFigure


# --- phys_pipeline.cache --------------------------------------------------------------------


def test_a_shared_disk_cache_is_our_disk_store_and_serves_a_dag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache_key: Path
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "0f" * 32)
    cache = SharedDiskCache(tmp_path, lock_suffix=".lck")
    assert isinstance(cache, DiskStore) and cache.name == "shared-disk" and cache.shared
    nodes = [NodeSpec(id="amp", stage=Amplifier(GainCfg(gain=2.0)))]
    first = DagExecutor(cache=DagCache(cache)).run(SimpleState(1.0), nodes)
    second = DagExecutor(cache=DagCache(SharedDiskCache(tmp_path))).run(SimpleState(1.0), nodes)
    assert first.ran == ["amp"] and second.hits == ["amp"]
    assert second.results["amp"].state.payload == 2.0
    assert not isolated_cache_key.exists()  # signed with the shared key alone


@pytest.mark.parametrize(
    "build",
    [
        lambda root: SharedDiskCache(root),
        lambda root: build_cache_backend(CacheConfig(backend="shared-disk", disk_root=root)),
    ],
    ids=["SharedDiskCache", "CacheConfig"],
)
def test_a_shared_disk_cache_without_the_shared_key_is_this_users_with_a_warning(
    build: Callable[[Path], DiskStore],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    isolated_cache_key: Path,
) -> None:
    with pytest.warns(CacheWarning, match="PHYS_PIPELINE_CACHE_KEY is not set") as caught:
        cache = quietly(lambda: build(tmp_path / "shared"))
    assert len(caught) == 1 and "readable only by you" in str(caught[0].message)
    assert cache.name == "shared-disk"
    key = "0123456789abcdef0123456789abcdef"
    cache.put(key, StageResult(SimpleState(2.0)))
    assert cache.get(key).state.payload == 2.0
    assert isolated_cache_key.exists()  # signed with this user's own key
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))
    with pytest.warns(CacheWarning):
        other = quietly(lambda: build(tmp_path / "shared"))
    with pytest.warns(CacheWarning, match="does not authenticate"):
        assert other.get(key) is None  # another user's entry is still a miss


@pytest.fixture
def redis_cache(redis_url: str, isolated_cache_key: Path) -> Iterator[RedisCache]:
    """A RedisCache (against a real redis-server) under a prefix of its own, emptied after."""
    cache = RedisCache(redis_url, prefix=f"compat-{os.urandom(4).hex()}", ttl_s=3600)
    yield cache
    cache.clear()


@pytest.mark.parametrize("kind", ["DiskCache", "SharedDiskCache", "RedisCache"])
def test_a_2_0_0_cache_keeps_meta_and_arrays_under_a_text_key(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "0f" * 32)
    made = {"DiskCache": DiskCache, "SharedDiskCache": SharedDiskCache}
    cache = made[kind](tmp_path) if kind in made else request.getfixturevalue("redis_cache")
    meta, arrays = {"stage": "amp", "shots": 2}, {"field": np.array([1.0, 2.0]), "n": np.arange(3)}
    assert quietly(lambda: cache.exists("pulse 1")) is False and cache.get("pulse 1") is None
    quietly(lambda: cache.put("pulse 1", meta, arrays))
    assert quietly(lambda: cache.exists("pulse 1"))
    entry = cache.get("pulse 1")
    assert entry["meta"] == meta and entry["arrays"].keys() == arrays.keys()
    for name, array in arrays.items():
        np.testing.assert_array_equal(entry["arrays"][name], array)
        assert entry["arrays"][name].dtype == array.dtype
    entry["arrays"]["field"] *= 2  # arrays of its own, as 2.0.0 gave
    np.testing.assert_array_equal(cache.get("pulse 1")["arrays"]["field"], [1.0, 2.0])
    quietly(lambda: cache.put("pulse 1", {"stage": "amp", "shots": 3}, {}, ttl_s=60))
    assert cache.get("pulse 1") == {"meta": {"stage": "amp", "shots": 3}, "arrays": {}}


def test_a_disk_caches_own_results_are_kept_as_ever(tmp_path: Path) -> None:
    key = "0123456789abcdef0123456789abcdef"
    cache = DiskCache(tmp_path)
    cache.put(key, StageResult(SimpleState(2.0), metrics={"energy": 2.0}))
    cache.put(key, StageResult(SimpleState(3.0)))  # keys name content: the first entry stays
    assert cache.get(key).metrics == {"energy": 2.0} and cache.contains(key)
    with pytest.raises(ValueError, match="invalid cache key"):
        cache.put("pulse 1", StageResult(SimpleState(2.0)))  # our form keeps our keys
    quietly(lambda: cache.put(key, {"stage": "amp"}, {}))  # 2.0.0's form under it
    assert cache.get(key) == {"meta": {"stage": "amp"}, "arrays": {}}


@pytest.mark.parametrize(
    ("call", "old"),
    [
        (lambda cache: cache.put("k1", {}, {}), "DiskCache.put(key, meta, arrays)"),
        (lambda cache: cache.exists("k1"), "DiskCache.exists"),
    ],
)
def test_a_disk_caches_2_0_0_methods_warn_once(
    call: Callable[[Any], Any], old: str, tmp_path: Path
) -> None:
    cache = DiskCache(tmp_path)
    caught = deprecations(lambda: call(cache))
    assert_warned_once_here(caught, old, "put(key, StageResult" if "put" in old else "contains")


def test_a_disk_cache_takes_2_0_0_arguments_by_name_and_refuses_half_a_call(
    tmp_path: Path,
) -> None:
    cache = DiskCache(tmp_path)
    quietly(lambda: cache.put(key="pulse 1", meta={"stage": "amp"}, arrays={}, ttl_s=60))
    assert cache.get(key="pulse 1") == {"meta": {"stage": "amp"}, "arrays": {}}
    meta: dict[str, Any] = {"stage": "amp"}
    nothing, meta_alone, both = {}, {"meta": meta}, {"result": meta, "meta": meta, "arrays": {}}
    for call in (nothing, meta_alone, both):
        with pytest.raises(TypeError, match=r"a result, or 2\.0\.0's meta and arrays"):
            cache.put("0123456789abcdef0123456789abcdef", **call)
    with pytest.raises(CacheConfigError, match="ttl_s"):
        quietly(lambda: cache.put("pulse 1", {}, {}, ttl_s=0))


# --- phys_pipeline.cache_redis: RedisCache, against a real redis-server ------------------------


def redis_ttls(cache: RedisStore) -> list[int]:
    """The time to live of each of the cache's Redis keys, in seconds."""
    client = redis.Redis.from_url(cache.url)
    try:
        return [client.ttl(name) for name in client.scan_iter(match=f"{cache.prefix}:*")]
    finally:
        client.close()


def test_a_redis_caches_entries_live_for_its_ttl_or_their_own(redis_cache: RedisCache) -> None:
    quietly(lambda: redis_cache.put("pulse 1", {}, {}))
    assert 3000 < max(redis_ttls(redis_cache)) <= 3600  # the cache's ttl_s
    quietly(lambda: redis_cache.put("pulse 1", {}, {}, ttl_s=60))
    assert 0 < max(redis_ttls(redis_cache)) <= 60  # this entry's own
    with pytest.raises(CacheConfigError, match="ttl_s"):
        quietly(lambda: redis_cache.put("pulse 1", {}, {}, ttl_s=-1))
    assert redis_cache.get("pulse 1") == {"meta": {}, "arrays": {}}


def test_a_redis_cache_is_our_redis_store_and_serves_a_dag(redis_cache: RedisCache) -> None:
    assert isinstance(redis_cache, RedisStore) and redis_cache.name == "redis"
    nodes = [NodeSpec(id="amp", stage=Amplifier(GainCfg(gain=2.0)))]
    first = DagExecutor(cache=redis_cache).run(SimpleState(1.0), nodes)
    again = pickle.loads(pickle.dumps(redis_cache))  # as a worker process gets it
    second = DagExecutor(cache=again).run(SimpleState(1.0), nodes)
    assert first.ran == ["amp"] and second.hits == ["amp"]
    assert second.results["amp"].state.payload == 2.0


def test_a_redis_caches_2_0_0_methods_warn_once(redis_cache: RedisCache) -> None:
    caught = deprecations(lambda: redis_cache.put("k1", {}, {}))
    assert_warned_once_here(caught, "RedisCache.put(key, meta, arrays)", "put(key, StageResult")
    caught = deprecations(lambda: redis_cache.exists("k1"))
    assert_warned_once_here(caught, "RedisCache.exists", "contains")


def test_the_redis_cache_module_loads_no_redis_client_until_a_cache_is_made() -> None:
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "import phys_pipeline\n"
        "from phys_pipeline.cache_redis import RedisCache\n"
        "assert 'redis' not in sys.modules, 'imported'\n"
        "RedisCache('redis://127.0.0.1:1/0')\n"
        "assert 'redis' in sys.modules, 'made'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- build_cache_backend: what it builds takes 2.0.0 code's calls too ----------------------


@pytest.fixture(params=["disk", "shared-disk", "redis"])
def v2_config(request: pytest.FixtureRequest, tmp_path: Path) -> CacheConfig:
    """A config 2.0.0 code could write, for each backend 2.0.0 had."""
    if request.param == "shared-disk":
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "0f" * 32)
    if request.param != "redis":
        return CacheConfig(backend=request.param, disk_root=tmp_path / "cache")
    url = request.getfixturevalue("redis_url")
    request.getfixturevalue("isolated_cache_key")
    prefix = f"compat-{os.urandom(4).hex()}"
    request.addfinalizer(lambda: RedisStore(url, prefix=prefix).clear())
    return CacheConfig(backend="redis", redis_url=url, redis_prefix=prefix)


def test_2_0_0_code_puts_gets_and_asks_for_entries_in_what_build_cache_backend_builds(
    v2_config: CacheConfig,
) -> None:
    backend: Any = build_cache_backend(config=v2_config)
    assert backend.name == v2_config.backend
    assert quietly(lambda: backend.exists("run 7")) is False and backend.get("run 7") is None
    quietly(lambda: backend.put("run 7", {"energy_j": 2.5}, {"field": np.arange(4.0)}))
    assert quietly(lambda: backend.exists("run 7"))
    entry = backend.get("run 7")
    assert entry["meta"] == {"energy_j": 2.5}
    np.testing.assert_array_equal(entry["arrays"]["field"], np.arange(4.0))


def test_what_build_cache_backend_builds_is_still_our_store_with_our_api(
    v2_config: CacheConfig,
) -> None:
    backend = build_cache_backend(v2_config)
    assert isinstance(backend, RedisStore if v2_config.backend == "redis" else DiskStore)
    key = "0123456789abcdef0123456789abcdef"
    backend.put(key, StageResult(SimpleState(2.0), metrics={"energy": 2.0}))
    assert backend.contains(key) and backend.get(key).metrics == {"energy": 2.0}
    nodes = [NodeSpec(id="amp", stage=Amplifier(GainCfg(gain=2.0)))]
    first = DagExecutor(cache=v2_config).run(SimpleState(1.0), nodes)
    second = DagExecutor(cache=build_cache_backend(v2_config)).run(SimpleState(1.0), nodes)
    assert first.ran == ["amp"] and second.hits == ["amp"]
    backend.delete(key)
    assert not backend.contains(key)


def test_backends_2_0_0_never_had_are_our_stores_alone(tmp_path: Path) -> None:
    memory = build_cache_backend(CacheConfig(backend="memory"))
    tiered = build_cache_backend(CacheConfig(disk_root=tmp_path, memory_tier=True))
    assert type(memory) is MemoryStore and type(tiered) is TieredStore
    assert not hasattr(memory, "exists") and not hasattr(tiered, "exists")


# --- CacheConfig(shared_lock_suffix=...): 2.0.0's, accepted, of no effect ------------------


def test_a_shared_lock_suffix_is_accepted_with_one_warning_saying_it_has_no_effect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "0f" * 32)
    made: list[CacheConfig] = []
    caught = deprecations(
        lambda: made.append(
            CacheConfig(backend="shared-disk", disk_root=tmp_path, shared_lock_suffix=".lck")
        )
    )
    assert_warned_once_here(caught, "CacheConfig(shared_lock_suffix=...)", "no effect")
    assert "no lock file" in str(caught[0].message)
    config = made[0]
    assert config.shared_lock_suffix == ".lck"  # read back as 2.0.0 code gave it
    assert "shared_lock_suffix=" not in repr(config)  # not shown, not dumped: it does nothing
    assert "shared_lock_suffix" not in config.model_dump()
    backend = build_cache_backend(config)
    backend.put("0123456789abcdef0123456789abcdef", StageResult(SimpleState(2.0)))
    quietly(lambda: backend.put("run 7", {"shots": 1}, {}))
    assert backend.get("run 7") == {"meta": {"shots": 1}, "arrays": {}}
    assert not [path for path in tmp_path.rglob("*") if "lck" in path.name or "lock" in path.name]


def test_a_cache_config_without_a_shared_lock_suffix_does_not_warn(tmp_path: Path) -> None:
    assert deprecations(lambda: CacheConfig(backend="shared-disk", disk_root=tmp_path)) == []


def test_a_shared_lock_suffix_that_is_not_text_is_a_cache_config_error() -> None:
    with pytest.raises(CacheConfigError) as caught:
        quietly(lambda: CacheConfig(shared_lock_suffix=3))
    assert caught.value.field == "shared_lock_suffix"


def test_a_store_is_named_as_the_cache_config_backend_that_builds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache_key: Path
) -> None:
    assert build_cache_backend(CacheConfig(disk_root=tmp_path)).name == "disk"
    assert build_cache_backend(CacheConfig(backend="memory")).name == "memory"
    unconnected = CacheConfig(backend="redis", redis_url="redis://localhost:6379/0")
    assert build_cache_backend(unconnected).name == "redis"
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "0f" * 32)
    shared = CacheConfig(backend="shared-disk", disk_root=tmp_path)
    assert build_cache_backend(shared).name == "shared-disk"


@pytest.mark.parametrize("backend", ["tape", "mem"])
def test_an_unknown_cache_backend_is_unsupported_naming_the_choices(backend: str) -> None:
    with pytest.raises(ValueError, match="Unsupported cache backend") as caught:
        CacheConfig(backend=backend)
    assert isinstance(caught.value, CacheConfigError) and caught.value.field == "backend"
    assert all(f"'{name}'" in str(caught.value) for name in ("disk", "shared-disk", "redis"))


def test_a_redis_cache_config_without_a_url_says_it_must_be_set() -> None:
    with pytest.raises(ValueError, match="redis_url must be set") as caught:
        CacheConfig(backend="redis")
    assert isinstance(caught.value, CacheConfigError) and caught.value.field == "redis_url"


def test_a_nodes_provenance_records_the_policy_it_saw_and_its_format(tmp_path: Path) -> None:
    policy = PolicyBag({"coating": "AR", "pump_w": 3.0})
    nodes = [
        NodeSpec(id="amp", stage=Amplifier(GainCfg())),
        NodeSpec(id="loss", deps=["amp"], stage=Attenuator(LossCfg()), policy_keys=["coating"]),
    ]
    for run in ("ran", "hit"):
        out = DagExecutor(cache=DiskStore(tmp_path)).run(SimpleState(1.0), nodes, policy=policy)
        assert getattr(out, "ran" if run == "ran" else "hits") == ["amp", "loss"]
        amp, loss = (out.results[nid].provenance for nid in ("amp", "loss"))
        assert amp["policy_hash"] == out.provenance["policy_hash"] == policy.hash()
        assert loss["policy_hash"] == policy.hash_of(["coating"]) != policy.hash()
        assert amp["version"] == loss["version"] == "v2"


def test_a_cache_entry_serialises_to_json_and_npz_and_back() -> None:
    meta = {"stage": "amp", "shots": 2}
    arrays = {"field": np.array([1.0, 2.0]), "index": np.arange(3)}
    meta_bytes, array_bytes = serialize_cache_entry(meta, arrays)
    assert json.loads(meta_bytes) == meta
    back = deserialize_cache_entry(meta_bytes, array_bytes)
    assert back["meta"] == meta
    assert back["arrays"].keys() == arrays.keys()
    for name, array in arrays.items():
        np.testing.assert_array_equal(back["arrays"][name], array)


def test_a_cache_entry_never_holds_what_only_a_pickle_could() -> None:
    with pytest.raises(CacheError, match="'field'"):
        serialize_cache_entry({}, {"field": np.array([object()])})
    with pytest.raises(CacheError, match="not JSON"):
        serialize_cache_entry({"beam": object()}, {})


@pytest.mark.parametrize("payload", ["pickled", "object array", "npy", "junk"])
def test_a_cache_entry_that_would_need_unpickling_is_refused(payload: str) -> None:
    import io

    buffer = io.BytesIO()
    if payload == "pickled":
        pickle.dump({"x": 1}, buffer)
    elif payload == "object array":
        np.savez(buffer, field=np.array([object()]))
    elif payload == "npy":
        np.save(buffer, np.arange(3))
    else:
        buffer.write(b"not an npz")
    with pytest.raises(CacheError):
        deserialize_cache_entry(b"{}", buffer.getvalue())


# --- phys_pipeline.scheduler: the job API ---------------------------------------------------


def with_base(cls: type, base: type) -> Any:
    """``cls`` as it is once its class statement names ``base`` (its owner's one line)."""
    return cls if issubclass(cls, base) else type(cls.__name__, (base, cls), {})


JobScheduler = with_base(LocalScheduler, JobApi)


@pytest.fixture
def jobs() -> Any:
    scheduler = JobScheduler(max_workers=2, max_cpu=1, max_gpu=0)
    yield scheduler
    quietly(scheduler.shutdown)


def test_a_submitted_job_runs_and_is_waited_for(jobs: Any) -> None:
    handle = quietly(lambda: jobs.submit("amp", lambda: 2.0, NodeResources(), attempt=2))
    assert isinstance(handle, JobHandle) and (handle.node_id, handle.attempt) == ("amp", 2)
    assert quietly(lambda: jobs.wait_any([handle])) is handle
    assert handle.future.result() == 2.0


def test_jobs_wait_for_their_cpu_slots(jobs: Any) -> None:
    release, running = threading.Event(), []

    def first() -> None:
        running.append("first")
        release.wait(5)

    def second() -> None:
        running.append("second")

    one = quietly(lambda: jobs.submit("a", first, NodeResources(cpu=1)))
    threading.Timer(0.05, release.set).start()
    two = quietly(lambda: jobs.submit("b", second, NodeResources(cpu=1)))  # waits for a's slot
    assert running[0] == "first" and one.future.done()
    two.future.result(5)
    assert running == ["first", "second"]


def test_a_job_needing_resources_the_scheduler_lacks_is_a_scheduler_error(
    jobs: Any,
) -> None:
    with pytest.raises(SchedulerError, match=r"node 'pump'.*gpu=1"):
        quietly(lambda: jobs.submit("pump", lambda: 1, NodeResources(gpu=1)))


def test_waiting_too_long_is_a_scheduler_timeout_error(jobs: Any) -> None:
    release = threading.Event()
    handle = quietly(lambda: jobs.submit("slow", lambda: release.wait(5), NodeResources()))
    with pytest.raises(SchedulerTimeoutError, match="'slow'"):
        quietly(lambda: jobs.wait_any([handle], timeout_s=0.01))
    release.set()


def test_shutdown_leaves_no_job_thread_running() -> None:
    scheduler = JobScheduler(max_workers=2)
    quietly(lambda: scheduler.submit("amp", lambda: 1, NodeResources()))
    quietly(scheduler.shutdown)
    assert not [t for t in threading.enumerate() if t.name.startswith("phys-job")]
    quietly(scheduler.shutdown)  # twice: nothing left to stop


@pytest.mark.parametrize("method", ["submit", "wait_any", "shutdown"])
def test_the_job_api_warns_once(method: str) -> None:
    scheduler = JobScheduler()
    calls = {
        "submit": lambda: scheduler.submit("a", lambda: 1, NodeResources()),
        "wait_any": lambda: scheduler.wait_any([]),
        "shutdown": lambda: scheduler.shutdown(),
    }
    if method == "wait_any":
        handle = quietly(calls["submit"])
        calls["wait_any"] = lambda: scheduler.wait_any([handle])
    caught = deprecations(calls[method])
    quietly(scheduler.shutdown)
    assert_warned_once_here(caught, f"LocalScheduler.{method}", "DagExecutor")


# --- phys_pipeline.record -------------------------------------------------------------------


Recorder = with_base(ArtifactRecorder, FigureApi)


class FakeFigure:
    def savefig(self, path: Path, **kwargs: Any) -> None:
        Path(path).write_bytes(b"png")


class FakeAxes:
    figure = FakeFigure()


@pytest.mark.parametrize("made", [FakeFigure, FakeAxes], ids=["figure", "axes"])
def test_record_figure_saves_a_figure_or_an_axes_figure(tmp_path: Path, made: type) -> None:
    path = quietly(lambda: Recorder(tmp_path).record_figure("spectrum.plot", made))
    assert path.endswith("spectrum.plot.png") and Path(path).read_bytes() == b"png"
    assert {entry["key"] for entry in Recorder(tmp_path).manifest()} == {"spectrum.plot"}


def test_figures_and_axes_are_told_apart_by_what_they_have() -> None:
    assert is_figure(FakeFigure()) and not is_figure(FakeAxes())
    assert is_axes(FakeAxes()) and not is_axes(FakeFigure()) and not is_axes(object())


def test_record_figure_refuses_what_is_no_figure_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"'spectrum'.*Figure or Axes-like") as caught:
        quietly(lambda: Recorder(tmp_path).record_figure("spectrum", object))
    assert isinstance(caught.value, ArtifactError) and caught.value.key == "spectrum"


def test_record_blob_saves_data_and_gives_its_path(tmp_path: Path) -> None:
    path = quietly(lambda: Recorder(tmp_path).record_blob("fit", {"gdd_fs2": 120.0}))
    assert json.loads(Path(path).read_text()) == {"gdd_fs2": 120.0}


def test_a_jsonl_recorder_appends_one_json_line_per_row(tmp_path: Path) -> None:
    log = JSONLRecorder(tmp_path / "runs" / "log.jsonl")
    log.write({"shot": 1, "energy": 2.0})
    log.write({"shot": 2, "when": Path("now")})
    lines = (tmp_path / "runs" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"shot": 1, "energy": 2.0},
        {"shot": 2, "when": "now"},
    ]


# --- RunAccumulator -------------------------------------------------------------------------


def amplified(energy: float, **extra: Any) -> StageResult:
    return StageResult(SimpleState(energy), metrics={"energy": energy}, **extra)


def test_a_run_accumulator_files_results_under_namespaced_keys() -> None:
    acc = RunAccumulator(ns_stack=["laser"])
    acc.consume("amp", amplified(2.0, artifacts={"trace": [1, 2]}, provenance={"shots": 3}))
    assert acc.metrics == {"laser.amp.energy": 2.0}
    assert acc.artifacts == {"laser.amp.trace": [1, 2]}
    assert acc.provenance == {"stages": [{"shots": 3, "stage": "amp"}]}


def test_a_run_accumulator_checks_metrics_and_key_collisions() -> None:
    acc = RunAccumulator()
    with pytest.raises(MetricError, match="'spectrum'"):
        acc.consume("spec", StageResult(SimpleState(), metrics={"spectrum": np.ones(2)}))
    acc.consume("a", StageResult(SimpleState(), metrics={"b.c": 1.0}))
    with pytest.raises(MetricKeyCollisionError):
        acc.consume("a.b", StageResult(SimpleState(), metrics={"c": 2.0}))


def test_a_run_accumulator_records_artifacts_with_its_recorder(tmp_path: Path) -> None:
    acc = RunAccumulator(record_artifacts=True, recorder=ArtifactRecorder(tmp_path))
    acc.consume("amp", amplified(2.0, artifacts={"trace": np.arange(4)}))
    (path,) = acc.provenance["stages"][0]["artifacts"]["trace"]
    np.testing.assert_array_equal(np.load(path), np.arange(4))
    with pytest.raises(MissingRecorderError):
        RunAccumulator(record_artifacts=True)
