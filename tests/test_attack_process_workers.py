"""Attacks on process-mode workers: exceptions that cannot travel as they are must still be
retried exactly as the same failure is in thread mode (never a stand-in retried where the
original is not, nor the reverse), and a timed-out attempt's late result is never what the run
shows or the cache keeps."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from phys_pipeline.cache import DiskStore, MemoryStore
from phys_pipeline.dag_cache import DagCache
from phys_pipeline.errors import ConfigError, NodeTimeoutError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.retry import RetryPolicy
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

START = SimpleState(None)
MODES = ["thread", "process"]


def scheduler(mode: str) -> LocalScheduler:
    return LocalScheduler(max_workers=2, mode=mode)


class LicenceBusy(OSError):
    """The licence server is busy, retrying may pass; holds the server's socket lock, which
    cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class BadGeometry(ValueError):
    """A mesh that can never be solved: retrying cannot help. Holds the mesher's lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class BadSetting(ConfigError):
    """One of our contract errors, raised by a stage, with a lock: never retried."""

    def __init__(self, message: str) -> None:
        super().__init__("mesh", "cells", -1, message)
        self.lock = threading.Lock()


class FlakyCfg(StageConfig):
    attempts_file: str
    fails: str = "licence"  # which error the first attempt raises
    times: int = 1  # how many attempts fail


class Solver(PipelineStage[SimpleState, FlakyCfg]):
    """Counts its attempts in a file; the first ``times`` fail with the configured error."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        path = Path(self.cfg.attempts_file)
        attempt = len(path.read_text().split()) + 1 if path.exists() else 1
        with path.open("a") as out:
            out.write(f"{attempt}\n")
        if attempt <= self.cfg.times:
            error = {
                "licence": LicenceBusy,
                "geometry": BadGeometry,
                "setting": BadSetting,
            }[self.cfg.fails]
            raise error(f"attempt {attempt} failed")
        return StageResult(SimpleState(float(attempt)), metrics={"attempt": float(attempt)})


def attempts(path: Path) -> int:
    return len(path.read_text().split())


def solve(mode: str, tmp_path: Path, fails: str, retry: RetryPolicy) -> tuple[Any, int]:
    counter = tmp_path / f"{mode}-attempts"
    cfg = FlakyCfg(attempts_file=str(counter), fails=fails)
    node = NodeSpec("solve", stage=Solver(cfg), retry=retry)
    result = DagExecutor(scheduler=scheduler(mode)).run(START, [node], raise_on_error=False)
    return result, attempts(counter)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
def test_an_error_retry_on_names_is_retried_though_it_cannot_travel_as_it_is(mode, tmp_path):
    """retry_on=(OSError,): the busy licence server (an OSError holding a lock) is retried in
    both modes; a stand-in that is no OSError would fail the node in process mode only."""
    retry = RetryPolicy(max_retries=1, retry_on=(OSError,), jitter=0.0)
    result, tried = solve(mode, tmp_path, "licence", retry)
    assert tried == 2 and result.ok and result.metrics["solve.attempt"] == 2.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
def test_an_error_retry_on_does_not_name_is_not_retried_though_it_cannot_travel(mode, tmp_path):
    """retry_on=(RuntimeError,): a bad geometry (a ValueError) must fail at once in both
    modes; a stand-in that is a RuntimeError would run the solver again in process mode."""
    retry = RetryPolicy(max_retries=2, retry_on=(RuntimeError,), jitter=0.0)
    result, tried = solve(mode, tmp_path, "geometry", retry)
    assert tried == 1 and list(result.failures) == ["solve"]
    assert isinstance(result.failures["solve"], ValueError)
    assert "attempt 1 failed" in str(result.failures["solve"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
def test_a_contract_error_is_never_retried_though_it_cannot_travel(mode, tmp_path):
    retry = RetryPolicy(max_retries=2, jitter=0.0)  # retry_on=(Exception,)
    result, tried = solve(mode, tmp_path, "setting", retry)
    assert tried == 1 and isinstance(result.failures["solve"], ConfigError)


@pytest.mark.timeout(120)
def test_an_error_class_defined_in_a_cell_is_retried_as_itself_in_process_mode(tmp_path):
    """A class defined in a notebook travels by value: it must come back as the driver's
    own class, so that retry_on naming it matches."""

    class Glitch(RuntimeError):
        pass

    class Glitchy(PipelineStage[SimpleState, FlakyCfg]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
            path = Path(self.cfg.attempts_file)
            attempt = len(path.read_text().split()) + 1 if path.exists() else 1
            path.write_text("x\n" * attempt)
            if attempt == 1:
                raise Glitch("first read glitched")
            return StageResult(SimpleState(1.0), metrics={"attempt": float(attempt)})

    counter = tmp_path / "attempts"
    retry = RetryPolicy(max_retries=1, retry_on=(Glitch,), jitter=0.0)
    node = NodeSpec("read", stage=Glitchy(FlakyCfg(attempts_file=str(counter))), retry=retry)
    result = DagExecutor(scheduler=scheduler("process")).run(START, [node], raise_on_error=False)
    assert result.ok and attempts(counter) == 2


class StuckShutter(ValueError):
    """A shutter that cannot open: retrying cannot help. Its message reads the lock it holds,
    so it cannot come back as itself even without it: a stand-in (a RemoteStageError, which
    is a RuntimeError) comes instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()

    def __str__(self) -> str:
        return f"{self.args[0]} (lock {'held' if self.lock.locked() else 'free'})"


class Shutter(PipelineStage[SimpleState, FlakyCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        path = Path(self.cfg.attempts_file)
        with path.open("a") as out:
            out.write("1\n")
        raise StuckShutter("shutter stuck")


@pytest.mark.timeout(120)
def test_a_stand_in_is_not_retried_where_its_original_would_not_be(tmp_path):
    counter = tmp_path / "attempts"
    retry = RetryPolicy(max_retries=2, retry_on=(RuntimeError,), jitter=0.0)
    node = NodeSpec("shutter", stage=Shutter(FlakyCfg(attempts_file=str(counter))), retry=retry)
    result = DagExecutor(scheduler=scheduler("process")).run(START, [node], raise_on_error=False)
    assert "shutter stuck" in str(result.failures["shutter"])
    assert attempts(counter) == 1


# --- a timed-out attempt's late result ----------------------------------------------------------


class TwoShotCfg(StageConfig):
    attempts_file: str
    hang_s: float = 3.0


class TwoShot(PipelineStage[SimpleState, TwoShotCfg]):
    """Its first attempt hangs ``hang_s`` then returns 1.0; the next returns 2.0 at once (a
    result that differs by attempt: which one the cache keeps shows)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        path = Path(self.cfg.attempts_file)
        attempt = len(path.read_text().split()) + 1 if path.exists() else 1
        with path.open("a") as out:
            out.write(f"{os.getpid()}\n")
        if attempt == 1:
            time.sleep(self.cfg.hang_s)
        return StageResult(SimpleState(float(attempt)), metrics={"shot": float(attempt)})


@pytest.mark.timeout(120)
def test_a_timed_out_attempts_late_result_is_never_kept_or_shown_in_process_mode(tmp_path):
    """The hung attempt's worker is killed, so what it would return after the retry's never
    reaches the store (held): the run shows the retry's result, and the cache keeps it."""
    counter = tmp_path / "attempts"
    store = DiskStore(tmp_path / "cache")
    # the clock includes a new worker's start-up, which takes over a second on a loaded machine
    retry = RetryPolicy(max_retries=1, timeout_s=4.0, jitter=0.0)
    cfg = TwoShotCfg(attempts_file=str(counter), hang_s=6.0)
    node = NodeSpec("shot", stage=TwoShot(cfg), retry=retry)
    executor = DagExecutor(scheduler=scheduler("process"), cache=store)
    started = time.monotonic()
    result = executor.run(START, [node])
    assert result.metrics["shot.shot"] == 2.0 and result.runs["shot"].attempts == 2
    time.sleep(max(0.0, started + 7.0 - time.monotonic()))  # past the hung attempt's end
    key = result.plan.nodes["shot"].key
    assert DagCache(store).get(key).state.payload == 2.0
    rerun = DagExecutor(scheduler=scheduler("process"), cache=store).run(START, [node])
    assert rerun.hits == ["shot"] and rerun.metrics["shot.shot"] == 2.0


@pytest.mark.timeout(120)
def test_a_node_out_of_time_is_failed_and_its_late_result_never_filed_in_process_mode(tmp_path):
    counter = tmp_path / "attempts"
    store = DiskStore(tmp_path / "cache")
    node = NodeSpec(
        "shot",
        stage=TwoShot(TwoShotCfg(attempts_file=str(counter), hang_s=6.0)),
        retry=RetryPolicy(timeout_s=4.0),
    )
    started = time.monotonic()
    result = DagExecutor(scheduler=scheduler("process"), cache=store).run(
        START, [node], raise_on_error=False
    )
    assert isinstance(result.failures["shot"], NodeTimeoutError)
    assert counter.exists()  # the stage did start: its result would have come
    time.sleep(max(0.0, started + 7.0 - time.monotonic()))
    assert len(store) == 0


@pytest.mark.timeout(60)
def test_a_timed_out_attempts_late_result_is_never_kept_in_thread_mode(tmp_path):
    counter = tmp_path / "attempts"
    store = MemoryStore()
    retry = RetryPolicy(max_retries=1, timeout_s=0.5, jitter=0.0)
    cfg = TwoShotCfg(attempts_file=str(counter), hang_s=1.5)
    node = NodeSpec("shot", stage=TwoShot(cfg), retry=retry)
    started = time.monotonic()
    result = DagExecutor(scheduler=scheduler("thread"), cache=store).run(START, [node])
    assert result.metrics["shot.shot"] == 2.0
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))  # the hung attempt has returned
    rerun = DagExecutor(scheduler=scheduler("thread"), cache=store).run(START, [node])
    assert rerun.hits == ["shot"] and rerun.metrics["shot.shot"] == 2.0
