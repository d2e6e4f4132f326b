"""Attacks on namespaced metric and artifact keys: every way one value could overwrite another
(a dotted node id or stage name, a nested pipeline, a cache hit) or two keys could merge
(``1`` and ``"1"``) ends in a typed error naming both sources, never in a lost value."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np
import pytest
from dag_stages import PhaseCfg, PhaseStage, diamond, with_stage
from pydantic import Field

from phys_pipeline.cache import MemoryStore
from phys_pipeline.errors import (
    MetricError,
    MetricKeyCollisionError,
    NodeFailedError,
    StageOutputError,
    SweepError,
)
from phys_pipeline.executor import DagExecutor
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.sweep import SweepSpec, expand_sweep, sweep_table
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult


class ReadoutCfg(StageConfig):
    readings: dict[str, float] = Field(default_factory=dict)
    plots: tuple[str, ...] = ()


class Readout(PipelineStage[SimpleState, ReadoutCfg]):
    """A detector: reports ``cfg.readings`` as metrics and a plot per name in ``cfg.plots``."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        plots = {name: f"plot of {name}" for name in self.cfg.plots}
        return StageResult(state=state, metrics=dict(self.cfg.readings), artifacts=plots)


class Reports(PipelineStage[SimpleState, StageConfig]):
    """Returns exactly the metrics and artifacts it was built with (keys of any type)."""

    def __init__(self, metrics: dict[Any, Any], artifacts: dict[Any, Any] | None = None) -> None:
        super().__init__(StageConfig(name="meter"))
        self.metrics, self.artifacts = metrics, artifacts or {}

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state=state, metrics=self.metrics, artifacts=self.artifacts)


def readout(name: str, plots: tuple[str, ...] = (), **readings: float) -> Readout:
    return Readout(ReadoutCfg(name=name, readings=readings, plots=plots))


def node(node_id: str, stage: Any, *deps: str) -> NodeSpec:
    return NodeSpec(id=node_id, deps=list(deps), stage=stage)


def dotted_pair(kind: str = "metric") -> list[NodeSpec]:
    """Node ``a`` reports ``b.c`` and its child ``a.b`` reports ``c``: both ``a.b.c``."""
    if kind == "metric":
        first, second = readout("a", **{"b.c": 1.0}), readout("ab", c=2.0)
    else:
        first, second = readout("a", plots=("b.c",)), readout("ab", plots=("c",))
    return [node("a", first), node("a.b", second, "a")]


def collision(error: NodeFailedError, node_id: str) -> MetricKeyCollisionError:
    assert list(error.failures) == [node_id]
    exc = error.failures[node_id]
    assert isinstance(exc, MetricKeyCollisionError)
    return exc


# --- DAG runs ---------------------------------------------------------------------------------


def test_dotted_node_id_collision_fails_the_later_node_naming_both_sources():
    with pytest.raises(NodeFailedError) as info:
        DagExecutor().run(SimpleState(None), dotted_pair())
    exc = collision(info.value, "a.b")
    assert (exc.key, exc.first, exc.second) == (
        "a.b.c",
        "node 'a' metric 'b.c'",
        "node 'a.b' metric 'c'",
    )
    assert "node 'a' metric 'b.c'" in str(info.value) and "node 'a.b' metric 'c'" in str(exc)


def test_collision_keeps_the_first_value_and_reports_the_second_node_failed():
    out = DagExecutor().run(SimpleState(None), dotted_pair(), raise_on_error=False)
    assert out.metrics == {"a.b.c": 1.0}
    assert out.runs["a.b"].status == "failed" and "MetricKeyCollisionError" in out.runs["a.b"].error
    assert out.results["a.b"].metrics == {"c": 2.0}  # the stage's own value is still there
    assert not out.ok and "failed 1" in out.summary()


def test_collision_between_independent_roots_names_both_whichever_is_blamed():
    nodes = [node("a.b", readout("ab", c=2.0)), node("a", readout("a", **{"b.c": 1.0}))]
    out = DagExecutor().run(SimpleState(None), nodes, raise_on_error=False)
    [(blamed, exc)] = out.failures.items()
    assert isinstance(exc, MetricKeyCollisionError)
    assert {exc.first, exc.second} == {"node 'a' metric 'b.c'", "node 'a.b' metric 'c'"}
    assert f"node {blamed!r}" in exc.second


def test_collision_callbacks_hear_the_failure():
    class Listener:
        def __init__(self) -> None:
            self.errors: list[tuple[str, BaseException]] = []

        def on_error(self, node_id: str, error: BaseException) -> None:
            self.errors.append((node_id, error))

    listener = Listener()
    DagExecutor(callbacks=[listener]).run(SimpleState(None), dotted_pair(), raise_on_error=False)
    assert [(nid, type(e)) for nid, e in listener.errors] == [("a.b", MetricKeyCollisionError)]


def test_thread_pool_blames_the_same_node_every_run():
    nodes = [node("src", readout("src"))]
    for i in range(6):  # six colliding pairs finishing in whatever order the threads pick
        nodes += [
            node(f"d{i}", readout(f"d{i}", **{"x.y": float(i)}), "src"),
            node(f"d{i}.x", readout(f"d{i}x", y=-float(i)), "src"),
        ]
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=4))
    for _ in range(3):
        out = executor.run(SimpleState(None), nodes, raise_on_error=False)
        assert sorted(out.failures) == [f"d{i}.x" for i in range(6)]
        assert out.metrics == {f"d{i}.x.y": float(i) for i in range(6)}


def test_cache_hit_of_the_second_run_collides_again():
    executor = DagExecutor(cache=MemoryStore(max_bytes=1 << 24))
    first = executor.run(SimpleState(None), dotted_pair(), raise_on_error=False)
    assert list(first.failures) == ["a.b"]
    with pytest.raises(NodeFailedError) as info:
        executor.run(SimpleState(None), dotted_pair())
    second = info.value.partial
    assert second.hits == ["a"] and second.runs["a.b"].reason == "cached"
    exc = collision(info.value, "a.b")
    assert (exc.first, exc.second) == ("node 'a' metric 'b.c'", "node 'a.b' metric 'c'")
    assert second.metrics == {"a.b.c": 1.0}


def test_nested_pipeline_node_collides_with_a_dotted_node():
    lab = SequentialPipeline([readout("det", power=1.0)], name="lab")
    nodes = [node("lab", lab), node("lab.det", readout("det2", power=2.0), "lab")]
    with pytest.raises(NodeFailedError) as info:
        DagExecutor().run(SimpleState(None), nodes)
    exc = collision(info.value, "lab.det")
    assert (exc.key, exc.first, exc.second) == (
        "lab.det.power",
        "node 'lab' metric 'det.power'",
        "node 'lab.det' metric 'power'",
    )


def test_collision_inside_a_pipeline_node_fails_that_node_naming_its_stages():
    pipe = SequentialPipeline([readout("a", **{"b.c": 1.0}), readout("a.b", c=2.0)], name="p")
    with pytest.raises(NodeFailedError) as info:
        DagExecutor().run(SimpleState(None), [node("n", pipe)])
    exc = collision(info.value, "n")
    assert (exc.first, exc.second) == (
        "pipeline 'p' stage 'a' metric 'b.c'",
        "pipeline 'p' stage 'a.b' metric 'c'",
    )


def test_dotted_ids_without_a_shared_key_run():
    nodes = [node("a", readout("a", **{"b.c": 1.0})), node("a.b", readout("ab", d=2.0), "a")]
    assert DagExecutor().run(SimpleState(None), nodes).metrics == {"a.b.c": 1.0, "a.b.d": 2.0}


def test_dotted_artifact_keys_collide_like_metrics():
    with pytest.raises(NodeFailedError) as info:
        DagExecutor().run(SimpleState(None), dotted_pair("artifact"))
    exc = collision(info.value, "a.b")
    assert (exc.key, exc.first, exc.second) == (
        "a.b.c",
        "node 'a' artifact 'b.c'",
        "node 'a.b' artifact 'c'",
    )
    assert info.value.partial.artifacts == {"a.b.c": "plot of b.c"}


# --- SequentialPipeline -----------------------------------------------------------------------


def dotted_stage_names() -> SequentialPipeline:
    return SequentialPipeline([readout("a", **{"b.c": 1.0}), readout("a.b", c=2.0)], name="p")


def nested_pipeline_and_dotted_stage() -> SequentialPipeline:
    inner = SequentialPipeline([readout("s", k=1.0)], name="i")
    return SequentialPipeline([inner, readout("i.s", k=2.0)], name="o")


@pytest.mark.parametrize(
    ("pipeline", "key", "first", "second"),
    [
        (dotted_stage_names, "p.a.b.c", "stage 'a' metric 'b.c'", "stage 'a.b' metric 'c'"),
        (
            nested_pipeline_and_dotted_stage,
            "o.i.s.k",
            "stage 'i' metric 's.k'",
            "stage 'i.s' metric 'k'",
        ),
    ],
    ids=["dotted stage name", "nested pipeline"],
)
def test_pipeline_collision_names_both_stages(pipeline, key, first, second):
    pipe = pipeline()
    with pytest.raises(MetricKeyCollisionError) as info:
        pipe.run(SimpleState(None))
    where = f"pipeline {pipe.name!r} "
    assert (info.value.key, info.value.first, info.value.second) == (
        key,
        where + first,
        where + second,
    )


def test_pipeline_same_named_stages_cannot_overwrite_an_artifact():
    pipe = SequentialPipeline([readout("cam", plots=("img",)), readout("cam", plots=("img",))])
    with pytest.raises(MetricKeyCollisionError, match="artifact 'img'") as info:
        pipe.run(SimpleState(None))
    assert info.value.first == info.value.second == "pipeline 'pipeline' stage 'cam' artifact 'img'"


# --- keys that are not strings ----------------------------------------------------------------


def test_int_and_str_metric_keys_never_merge():
    pipe = SequentialPipeline([Reports({1: 1.0, "1": 2.0})], name="p")
    with pytest.raises(MetricError, match=r"metric 1 = 1\.0: metric keys must be strings") as info:
        pipe.run(SimpleState(None))
    assert (info.value.stage, info.value.key) == ("meter", 1)


def test_non_string_metric_key_fails_its_dag_node():
    out = DagExecutor().run(
        SimpleState(None), [node("m", Reports({("x", 1): 1.0}))], raise_on_error=False
    )
    assert isinstance(out.failures["m"], MetricError)
    assert out.failures["m"].key == ("x", 1) and "'meter'" in str(out.failures["m"])


def test_int_and_str_artifact_keys_never_merge():
    with pytest.raises(StageOutputError, match=r"'meter'.*keys to be strings, not 1"):
        SequentialPipeline([Reports({}, {1: "a", "1": "b"})]).run(SimpleState(None))


class Channel(str, enum.Enum):  # noqa: UP042 -- str() of a member is "Channel.POWER"
    POWER = "power"


@pytest.mark.parametrize("key", [np.str_("power"), Channel.POWER], ids=["np.str_", "str enum"])
def test_string_subclass_metric_keys_are_their_plain_string(key: str):
    metrics = SequentialPipeline([Reports({key: 1.0})], name="p").run(SimpleState(None)).metrics
    assert metrics == {"p.meter.power": 1.0}
    assert all(type(k) is str for k in metrics)


# --- sweep tables -----------------------------------------------------------------------------


class ColumnNamedPhase(PhaseStage):
    """Reports a metric named like the column that ``gdd`` (swept) is moved to."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = super().process(state, policy=policy)
        out.metrics = {"metric.gdd": -1.0, "gdd": 2 * self.cfg.gdd}
        return out


def test_sweep_table_metric_cannot_take_a_moved_metrics_column():
    nodes = with_stage(diamond(), "p1", ColumnNamedPhase(PhaseCfg(name="p1")))
    nodes = expand_sweep(nodes, [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    out = DagExecutor().run(SimpleState(None), nodes)
    with pytest.raises(SweepError, match=r"metric 'gdd' clashes with column 'metric.gdd'"):
        sweep_table(out, node="p1")
