"""2.0.0's error names. Most are the error of ours raised for the same failure, so an
``except`` written for 2.0.0 catches what we raise; the scheduler errors are 2.0.0's job API's
(``LocalScheduler.submit`` / ``wait_any``) and the run engine's retries and timeouts."""

from __future__ import annotations

from ..errors import (
    CycleError,
    DagError,
    DuplicateNodeError,
    MetricError,
    MissingDependencyError,
    PhysPipelineError,
)

__all__ = [
    "DagCycleError",
    "DagDuplicateNodeError",
    "DagMissingDependencyError",
    "DagValidationError",
    "MissingPortError",
    "PipelineError",
    "SchedulerError",
    "SchedulerRetryError",
    "SchedulerTimeoutError",
    "StageContractError",
]

PipelineError = PhysPipelineError
StageContractError = MetricError  # 2.0.0 raised it for a metric that is not a scalar
DagValidationError = DagError
DagDuplicateNodeError = DuplicateNodeError
DagMissingDependencyError = MissingDependencyError
DagCycleError = CycleError
MissingPortError = DagError  # declared in 2.0.0 for an unwired node input, never raised


class SchedulerError(PhysPipelineError):
    """A scheduler cannot run a node as asked (resources it does not have, say); ``where``
    names the node or nodes."""

    def __init__(self, where: str, reason: str) -> None:
        self.where, self.reason = where, reason
        super().__init__(f"{where}: {reason}")


class SchedulerTimeoutError(SchedulerError, TimeoutError):
    """A node, or a wait for one, took longer than allowed."""


class SchedulerRetryError(SchedulerError):
    """A node still failed after every retry its ``RetryPolicy`` allows."""


DEPRECATED = {
    "PipelineError": "use PhysPipelineError, the base of every error phys-pipeline raises",
    "StageContractError": "use MetricError",
    "DagValidationError": "use DagError",
    "DagDuplicateNodeError": "use DuplicateNodeError",
    "DagMissingDependencyError": "use MissingDependencyError",
    "DagCycleError": "use CycleError",
    "MissingPortError": "use DagError",
}
