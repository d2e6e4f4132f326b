"""What 2.0.0's ``DagExecutor`` took beside a scheduler and a cache: how often to retry a
failing node and how long one may run (``RetryPolicy``), and a runner for MPI nodes. The run
engine applies them (``DagExecutor(retry_policy=..., mpi_runner=...)``): a node whose
``resources.mpi_ranks`` is above one runs as ``OnMpiRanks``, which hands its stage to the
runner."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import StaleCodeError
from ..fingerprint import Fingerprint, stale_parts
from ..policy import PolicyBag
from ..retry import RetryPolicy
from ..types import NodeResources, StageResult, State, stage_name

__all__ = ["MpiRunner", "RetryPolicy"]


class MpiRunner(Protocol):
    """Runs a stage on MPI ranks (2.0.0 ran a node asking for more than one rank with it)."""

    def run(self, stage: Any, state: State, *, resources: NodeResources) -> StageResult: ...


@dataclass(frozen=True, slots=True)
class WithPolicy:
    """``stage`` with the policy its node sees applied, for a runner that passes none: the
    node's key covers that policy, so the result must be computed with it."""

    stage: Any
    policy: PolicyBag

    @property
    def cfg(self) -> Any:
        return self.stage.cfg

    def process(self, state: State, *, policy: PolicyBag | None = None) -> StageResult:
        return self.stage.process(state, policy=self.policy)


@dataclass(frozen=True, slots=True)
class OnMpiRanks:
    """A node's stage as the engine calls it when the node asks for MPI ranks: ``runner``
    runs it on them. Sent to another process, it first checks that the stage's code there is
    the code the plan keyed (``code``, ``pinned``), as the engine does for any stage, since
    the engine sees this wrapper, not the stage."""

    stage: Any
    runner: MpiRunner
    resources: NodeResources
    node_id: str
    code: Fingerprint | None = None
    pinned: str | None = None
    made_in: int = field(default_factory=os.getpid)

    @property
    def cfg(self) -> Any:
        return self.stage.cfg

    def process(self, state: State, *, policy: PolicyBag | None = None) -> StageResult:
        if self.code is not None and os.getpid() != self.made_in:
            stale = stale_parts(self.stage, self.code, self.pinned)
            if stale:
                raise StaleCodeError(self.node_id, stage_name(self.stage), stale)
        stage = self.stage if policy is None else WithPolicy(self.stage, policy)
        return self.runner.run(stage, state, resources=self.resources)


DEPRECATED: dict[str, str] = {}  # the engine's own vocabulary for retries and MPI runs
