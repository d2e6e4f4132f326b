"""One node run over a cache, for the attacks on value keys: two values through one cache,
each run asserting its own answer."""

from __future__ import annotations

from typing import Any

from phys_pipeline.executor import DagExecutor
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig

START = SimpleState(None)


class AnyCfg(StageConfig):
    """A config holding one value of any type, the value under attack."""

    x: Any = None


def output(executor: DagExecutor, stage: PipelineStage) -> Any:
    """The payload a one-node DAG of ``stage`` gives (computed, or served by the cache)."""
    result = executor.run(START, [NodeSpec(id="node", stage=stage)])
    return result.results["node"].state.payload
