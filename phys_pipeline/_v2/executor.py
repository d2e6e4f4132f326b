"""What 2.0.0's ``DagExecutor`` took beside a scheduler and a cache: how often to retry a
failing node and how long one may run (``RetryPolicy``), and a runner for MPI nodes. The run
engine applies them (``DagExecutor(retry_policy=..., mpi_runner=...)``)."""

from __future__ import annotations

from typing import Any, Protocol

from ..retry import RetryPolicy
from ..types import NodeResources, StageResult, State

__all__ = ["MpiRunner", "RetryPolicy"]


class MpiRunner(Protocol):
    """Runs a stage on MPI ranks (2.0.0 ran a node asking for more than one rank with it)."""

    def run(self, stage: Any, state: State, *, resources: NodeResources) -> StageResult: ...


DEPRECATED: dict[str, str] = {}  # the engine's own vocabulary for retries and MPI runs
