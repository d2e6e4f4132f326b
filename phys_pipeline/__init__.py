"""phys-pipeline: physics simulations as pipelines and DAGs of typed, cached stages."""

from __future__ import annotations

import importlib
from typing import Any

from ._v2 import served_from
from ._version import __version__
from .pipeline import SequentialPipeline
from .policy import PolicyBag
from .record import ArtifactRecorder
from .types import (
    DagState,
    NodeInputs,
    NodeResources,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    State,
)

# heavier parts load on first use, so `import phys_pipeline` stays quick
_LAZY = {
    "DagExecutor": "executor",
    "LocalScheduler": "scheduler",
    "Scheduler": "scheduler",
    "CacheConfig": "cache",
    "build_cache_backend": "cache",
    "DiskCache": "cache",
    "DiskStore": "cache",
    "DagCache": "dag_cache",
    "SweepSpec": "sweep",
    "expand_sweep": "sweep",
    "sweep_table": "sweep",
    "NodeList": "sweep",
    "report_progress": "progress",
}
# names phys-pipeline 2.0.0 offered here, from the phys_pipeline._v2 module holding them
_V2 = {
    "RetryPolicy": "executor",
    "SharedDiskCache": "cache",
    "JSONLRecorder": "record",
    "RunAccumulator": "accumulator",
}

__all__ = [
    "ArtifactRecorder",
    "DagState",
    "NodeInputs",
    "NodeResources",
    "NodeSpec",
    "PipelineStage",
    "PolicyBag",
    "RetryPolicy",
    "SequentialPipeline",
    "SimpleState",
    "StageConfig",
    "StageResult",
    "State",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    if name in _V2:
        return served_from(__name__, _V2[name])(name)
    raise AttributeError(f"module 'phys_pipeline' has no attribute {name!r}")
