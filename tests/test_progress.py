"""A running stage says how far it has got (``report_progress``): the run's listeners hear it
as ``on_progress(node_id, fraction, message)`` on the thread that called ``run``, thinned to one
report per interval; outside a run the call does nothing; a nonsense fraction is a typed error
naming it."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

import phys_pipeline
from phys_pipeline.errors import ConfigError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.progress import report_progress
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult


class StepsCfg(StageConfig):
    steps: int = 3


class Steps(PipelineStage[SimpleState, StepsCfg]):
    """Reports after each of its steps, as a solver reports its iterations."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        for step in range(1, self.cfg.steps + 1):
            report_progress(step / self.cfg.steps, f"step {step} of {self.cfg.steps}")
        return StageResult(state=state)


class Listener:
    def __init__(self) -> None:
        self.heard: list[tuple[str, float, str]] = []
        self.threads: set[int] = set()

    def on_progress(self, node_id: str, fraction: float, message: str) -> None:
        self.heard.append((node_id, fraction, message))
        self.threads.add(threading.get_ident())


def two_nodes(steps: int = 3) -> list[NodeSpec]:
    return [
        NodeSpec(id="solve", stage=Steps(StepsCfg(name="solve", steps=steps))),
        NodeSpec(id="fit", deps=["solve"], stage=Steps(StepsCfg(name="fit", steps=steps))),
    ]


def test_progress_outside_a_run_does_nothing() -> None:
    report_progress(0.5, "halfway")  # no run, no listener: no error, nothing to hear


@pytest.mark.parametrize("workers", [1, 2])
def test_listeners_hear_each_node_s_progress_on_the_run_s_thread(workers: int) -> None:
    listener = Listener()
    executor = DagExecutor(scheduler=LocalScheduler(max_workers=workers), callbacks=[listener])
    executor.run(SimpleState(None), two_nodes())
    for node in ("solve", "fit"):
        heard = [(fraction, message) for nid, fraction, message in listener.heard if nid == node]
        # the first report and the last (done) always pass; the middle one is within the interval
        assert heard[0] == (1 / 3, "step 1 of 3")
        assert heard[-1] == (1.0, "step 3 of 3")
    assert listener.threads == {threading.get_ident()}


def test_a_tight_loop_of_reports_is_thinned() -> None:
    listener = Listener()
    DagExecutor(callbacks=[listener]).run(SimpleState(None), two_nodes(steps=100_000))
    per_node = [sum(nid == node for nid, _, _ in listener.heard) for node in ("solve", "fit")]
    assert all(2 <= count < 100 for count in per_node), per_node


def test_progress_is_also_a_name_of_the_package() -> None:
    assert phys_pipeline.report_progress is report_progress


@pytest.mark.parametrize("fraction", [math.nan, 1.5, -0.1, "half"])
def test_a_nonsense_fraction_fails_its_node_naming_the_value(fraction: Any) -> None:
    class Bad(Steps):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            report_progress(fraction)
            return StageResult(state=state)

    out = DagExecutor().run(
        SimpleState(None), [NodeSpec(id="bad", stage=Bad(StepsCfg()))], raise_on_error=False
    )
    error = out.failures["bad"]
    assert isinstance(error, ConfigError)
    assert "fraction" in str(error) and repr(fraction) in str(error)


def test_without_a_listener_nothing_is_collected() -> None:
    out = DagExecutor().run(SimpleState(None), two_nodes())
    assert sorted(out.results) == ["fit", "solve"]


def test_worker_processes_report_nothing_and_do_not_fail() -> None:
    listener = Listener()
    scheduler = LocalScheduler(max_workers=2, mode="process")
    out = DagExecutor(scheduler=scheduler, callbacks=[listener]).run(SimpleState(None), two_nodes())
    assert not out.failures
    assert listener.heard == []


def test_a_progress_bar_scheduler_passes_the_reports_on() -> None:
    listener = Listener()
    scheduler = LocalScheduler(max_workers=2, progress=True)
    DagExecutor(scheduler=scheduler, callbacks=[listener]).run(SimpleState(None), two_nodes())
    assert {nid for nid, _, _ in listener.heard} == {"solve", "fit"}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_session_keeps_each_running_node_s_progress_and_start_and_drops_them_after(
    workers: int,
) -> None:
    live = LiveSession(two_nodes(), SimpleState(None), scheduler=LocalScheduler(workers))
    seen: list[tuple[str, dict[str, tuple[float, str]], set[str]]] = []
    live.subscribe(lambda event, s: seen.append((event, dict(s.progress), set(s.running_since))))
    live.run()
    progress = [(p, running) for event, p, running in seen if event == "progress"]
    assert progress[0] == ({"solve": (1 / 3, "step 1 of 3")}, {"solve"})
    assert ({"fit": (1.0, "step 3 of 3")}, {"fit"}) in progress
    assert live.progress == {} and live.running_since == {}
