"""What 2.0.0's ``DagExecutor`` took beside a scheduler and a cache: how often to retry a
failing node and how long one may run (``RetryPolicy``), and a runner for MPI nodes. The run
engine applies them (``DagExecutor(retry_policy=..., mpi_runner=...)``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigError
from ..types import NodeResources, StageResult, State

__all__ = ["MpiRunner", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A failing node runs again up to ``max_retries`` times, ``backoff_s`` seconds apart;
    ``timeout_s`` (None: no limit) bounds one attempt."""

    max_retries: int = 0
    timeout_s: float | None = None
    backoff_s: float = 0.0

    def __post_init__(self) -> None:
        if not _is_number(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError("RetryPolicy", "max_retries", self.max_retries, "must be an int >= 0")
        if not _is_number(self.backoff_s) or self.backoff_s < 0:
            reason = "must be a finite number >= 0"
            raise ConfigError("RetryPolicy", "backoff_s", self.backoff_s, reason)
        if self.timeout_s is not None and not (_is_number(self.timeout_s) and self.timeout_s > 0):
            reason = "must be a finite number > 0, or None"
            raise ConfigError("RetryPolicy", "timeout_s", self.timeout_s, reason)


def _is_number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> bool:
    """A finite ``kind`` (not a bool, which is an int to Python)."""
    return isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)


class MpiRunner(Protocol):
    """Runs a stage on MPI ranks (2.0.0 ran a node asking for more than one rank with it)."""

    def run(self, stage: Any, state: State, *, resources: NodeResources) -> StageResult: ...


DEPRECATED: dict[str, str] = {}  # the engine's own vocabulary for retries and MPI runs
