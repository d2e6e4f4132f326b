"""Retries: a node whose stage fails for a reason that goes away runs again, per the executor's
or its own ``RetryPolicy``, with backoff that never holds up other nodes, and records how many
attempts it took; what is not to be retried fails at once, with its own exception."""

from __future__ import annotations

import time
from typing import Any

import pytest

from phys_pipeline.engine import _Events
from phys_pipeline.errors import ConfigError, NodeFailedError, NodeTimeoutError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.retry import RetryPolicy
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

START = SimpleState(None)
FAILURES: dict[str, int] = {}  # stage name -> failures still to come


class StepCfg(StageConfig):
    seconds: float = 0.0


class LicenceCfg(StageConfig):
    error: str = "OSError"


class NeedsLicence(PipelineStage[SimpleState, LicenceCfg]):
    """A solver whose licence server answers only after a few tries."""

    untracked = ("FAILURES",)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        if FAILURES.get(self.cfg.name, 0) > 0:
            FAILURES[self.cfg.name] -= 1
            raise {"OSError": OSError, "ValueError": ValueError}[self.cfg.error](
                "licence server busy"
            )
        return StageResult(SimpleState(1.0), metrics={"solved": 1.0})


class Quick(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(2.0), metrics={"t": time.monotonic()})


class Events:
    """Callbacks recording (event, node, monotonic time)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, float]] = []

    def on_start(self, node_id: str) -> None:
        self.log.append(("start", node_id, time.monotonic()))

    def on_retry(self, node_id: str, attempt: int, error: BaseException) -> None:
        self.log.append(("retry", node_id, time.monotonic()))


def solver(name: str = "solve", fails: int = 0, error: str = "OSError", **node: Any) -> NodeSpec:
    FAILURES[name] = fails
    return NodeSpec(name, stage=NeedsLicence(LicenceCfg(name=name, error=error)), **node)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_node_that_fails_twice_succeeds_on_its_third_attempt(workers: int) -> None:
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=workers), retry=RetryPolicy(max_retries=2)
    )
    result = executor.run(START, [solver(fails=2)])
    assert result.metrics == {"solve.solved": 1.0}
    assert result.runs["solve"].attempts == 3
    assert result.results["solve"].provenance["attempts"] == 3


def test_a_node_out_of_retries_fails_with_its_own_exception_and_attempt_count() -> None:
    executor = DagExecutor(retry=RetryPolicy(max_retries=1))
    with pytest.raises(NodeFailedError) as caught:
        executor.run(START, [solver(fails=5)])
    assert isinstance(caught.value.failures["solve"], OSError)
    assert caught.value.partial.runs["solve"].attempts == 2


def test_only_the_exception_types_named_are_retried() -> None:
    executor = DagExecutor(retry=RetryPolicy(max_retries=3, retry_on=(OSError,)))
    result = executor.run(START, [solver(fails=1, error="ValueError")], raise_on_error=False)
    assert isinstance(result.failures["solve"], ValueError)
    assert result.runs["solve"].attempts == 1


def test_a_nodes_own_policy_wins_over_the_executors() -> None:
    executor = DagExecutor(retry=RetryPolicy(max_retries=0))
    node = solver(fails=1, retry=RetryPolicy(max_retries=1))
    assert executor.run(START, [node]).runs["solve"].attempts == 2
    assert DagExecutor().run(START, [solver(fails=1)], raise_on_error=False).failures


def test_without_a_policy_a_failure_is_final() -> None:
    result = DagExecutor().run(START, [solver(fails=1)], raise_on_error=False)
    assert result.runs["solve"].attempts == 1 and "solve" in result.failures


@pytest.mark.parametrize("workers", [1, 2])
def test_a_backoff_never_holds_up_other_nodes(workers: int) -> None:
    """One worker too: the quick node runs while the solver waits out its backoff."""
    events = Events()
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=workers),
        retry=RetryPolicy(max_retries=1, backoff_s=0.5, jitter=0.0),
        callbacks=[events],
    )
    nodes = [solver(fails=1), NodeSpec("quick", stage=Quick(StageConfig(name="quick")))]
    result = executor.run(START, nodes)
    assert result.runs["solve"].attempts == 2
    retry_at = next(t for e, n, t in events.log if e == "retry" and n == "solve")
    second_start = [t for e, n, t in events.log if e == "start" and n == "solve"][1]
    assert second_start - retry_at >= 0.45  # waited out its backoff ...
    assert result.metrics["quick.t"] < second_start  # ... while the other node ran


def test_contract_errors_are_never_retried() -> None:
    class Scribbler(PipelineStage[SimpleState, StageConfig]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
            return {"not": "a StageResult"}

    executor = DagExecutor(retry=RetryPolicy(max_retries=3))
    result = executor.run(
        START, [NodeSpec("bad", stage=Scribbler(StageConfig()))], raise_on_error=False
    )
    assert result.runs["bad"].attempts == 1


def test_backoff_doubles_up_to_its_cap_and_jitter_stays_within_bounds() -> None:
    policy = RetryPolicy(max_retries=9, backoff_s=1.0, max_backoff_s=5.0, jitter=0.0)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = RetryPolicy(backoff_s=1.0, jitter=0.2)
    assert all(0.8 <= jittered.delay_s(1) <= 1.2 for _ in range(200))


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_retries", -1), ("backoff_s", float("nan")), ("jitter", 2.0), ("retry_on", (42,))],
)
def test_a_bad_policy_is_a_config_error_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        RetryPolicy(**{field: value})
    assert caught.value.field == field


# --- timeouts ---------------------------------------------------------------------------------


class Hang(PipelineStage[SimpleState, StepCfg]):
    """An ill-conditioned fit that hangs the first ``hangs`` times it is called."""

    untracked = ("FAILURES",)

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        if FAILURES.get(self.cfg.name, 0) > 0:
            FAILURES[self.cfg.name] -= 1
            time.sleep(self.cfg.seconds)
        return StageResult(SimpleState(3.0), metrics={"fit": 3.0})


def hanging(name: str, hangs: int, seconds: float, **node: Any) -> NodeSpec:
    FAILURES[name] = hangs
    return NodeSpec(name, stage=Hang(StepCfg(name=name, seconds=seconds)), **node)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_node_past_its_timeout_is_reported_and_abandoned(workers: int) -> None:
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=workers), retry=RetryPolicy(timeout_s=0.5)
    )
    nodes = [hanging("fit", hangs=1, seconds=5.0), NodeSpec("quick", stage=Quick(StageConfig()))]
    started = time.perf_counter()
    result = executor.run(START, nodes, raise_on_error=False)
    assert time.perf_counter() - started < 4.0  # not the 5 s the fit hangs for
    assert isinstance(result.failures["fit"], NodeTimeoutError)
    assert "quick.t" in result.metrics


@pytest.mark.timeout(60)
def test_a_deadline_set_on_a_worker_thread_is_kept_by_the_calling_thread(monkeypatch) -> None:
    """``fit`` is taken by the worker that finished ``prep`` (0.3 s: the calling thread is
    asleep by then); the calling thread, which keeps the time, must learn its deadline then,
    not at its next look (made 30 s here)."""
    monkeypatch.setattr(_Events, "LOOK_S", 30.0)
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=2))
    nodes = [
        hanging("prep", hangs=1, seconds=0.3),  # no deadline of its own
        hanging("fit", hangs=1, seconds=5.0, deps=["prep"], retry=RetryPolicy(timeout_s=0.5)),
    ]
    started = time.perf_counter()
    result = executor.run(START, nodes, raise_on_error=False)
    assert time.perf_counter() - started < 4.0  # not the 5 s the fit hangs for
    assert isinstance(result.failures["fit"], NodeTimeoutError)


@pytest.mark.timeout(60)
def test_a_timed_out_attempt_is_retried_and_its_late_result_ignored() -> None:
    executor = DagExecutor(
        scheduler=LocalScheduler(max_workers=2),
        retry=RetryPolicy(timeout_s=0.5, max_retries=1),
    )
    result = executor.run(START, [hanging("fit", hangs=1, seconds=1.5)])
    assert result.runs["fit"].attempts == 2 and result.metrics == {"fit.fit": 3.0}
    time.sleep(1.5)  # the abandoned first attempt finishes now: nothing changes
    assert result.runs["fit"].status == "ran"


@pytest.mark.timeout(60)
def test_a_node_on_dask_past_its_timeout_is_cancelled_there() -> None:
    pytest.importorskip("distributed")
    from distributed import Client, LocalCluster

    from phys_pipeline.dask import DaskScheduler

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        executor = DagExecutor(scheduler=DaskScheduler(client), retry=RetryPolicy(timeout_s=1.0))
        nodes = [hanging("fit", hangs=1, seconds=20.0)]
        started = time.perf_counter()
        result = executor.run(START, nodes, raise_on_error=False)
        assert time.perf_counter() - started < 10.0
        assert isinstance(result.failures["fit"], NodeTimeoutError)
