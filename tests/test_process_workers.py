"""Worker processes you can trust (#14): in process mode a worker that dies (``os._exit``, a
segfault in a C extension) fails only the node it was computing, with WorkerDiedError naming
the node and how the process ended, while the other nodes run in new workers; a node past its
timeout, and every node of a cancelled or interrupted run, has its worker process killed rather
than left computing; a stage's exception that cannot travel comes back as a stand-in."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from phys_pipeline.cache import MemoryStore
from phys_pipeline.errors import NodeTimeoutError, RemoteStageError, WorkerDiedError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.retry import RetryPolicy
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import (
    NodeSpec,
    NodeStatus,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

START = SimpleState(None)


def processes(workers: int = 2) -> LocalScheduler:
    return LocalScheduler(max_workers=workers, mode="process")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(path: Path, seconds: float = 30.0) -> int:
    """The first pid a stage wrote to ``path``, once it has."""
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.read_text().endswith("\n"):
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    return pids(path)[0]


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


class GainCfg(StageConfig):
    gain: float = 2.0


class Amplify(PipelineStage[SimpleState, GainCfg]):
    """Multiplies the pulse energy by ``gain``."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        energy = (state.payload or 1.0) * self.cfg.gain
        return StageResult(SimpleState(energy), metrics={"energy": energy})


class CrashCfg(StageConfig):
    how: str = "exit"  # or "stop", "segv"
    armed: str = ""  # while this file exists, the solver crashes (removing it)


class FortranSolver(PipelineStage[SimpleState, CrashCfg]):
    """A wrapped legacy solver that takes its process down once: by exiting (status 3, or 0 as
    a Fortran ``STOP`` does), or by reading address 0 (what a C extension's bad pointer does)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        if os.path.exists(self.cfg.armed):
            os.remove(self.cfg.armed)
            if self.cfg.how == "segv":
                ctypes.string_at(0)
            os._exit({"exit": 3, "stop": 0}[self.cfg.how])
        return StageResult(SimpleState(5.0), metrics={"solved": 5.0})


class SlowCfg(StageConfig):
    seconds: float = 60.0
    pid_file: str = ""
    armed: str = ""  # with a file named here: slow only while it exists (removing it)


class SlowFit(PipelineStage[SimpleState, SlowCfg]):
    """A fit that adds its process id to ``pid_file``, then hangs for ``seconds``."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        with open(self.cfg.pid_file, "a") as pid_file:
            pid_file.write(f"{os.getpid()}\n")
        if not self.cfg.armed or os.path.exists(self.cfg.armed):
            if self.cfg.armed:
                os.remove(self.cfg.armed)
            time.sleep(self.cfg.seconds)
        return StageResult(SimpleState(7.0), metrics={"fit": 7.0})


def slow_fit(tmp_path: Path, *, once: bool = False, **node: Any) -> NodeSpec:
    armed = ""
    if once:
        armed = str(tmp_path / "armed")
        Path(armed).touch()
    cfg = SlowCfg(name="fit", pid_file=str(tmp_path / "fit.pid"), armed=armed)
    return NodeSpec("fit", ["seed"], SlowFit(cfg), **node)


def beamline(solver: NodeSpec) -> list[NodeSpec]:
    """seed -> solver, and the independent branches seed -> side and probe (a second root)."""
    return [
        NodeSpec("seed", stage=Amplify(GainCfg(name="seed"))),
        solver,
        NodeSpec("side", ["seed"], Amplify(GainCfg(name="side", gain=3.0))),
        NodeSpec("probe", stage=Amplify(GainCfg(name="probe", gain=4.0))),
    ]


# --- a worker that dies -------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("how", "ended"), [("exit", "exit code 3"), ("segv", "signal SIGSEGV")])
def test_a_dead_worker_fails_only_its_node_and_the_next_run_reruns_only_it(
    how: str, ended: str, tmp_path: Path
) -> None:
    armed = tmp_path / "armed"
    armed.touch()
    solver = NodeSpec("solve", ["seed"], FortranSolver(CrashCfg(how=how, armed=str(armed))))
    store = MemoryStore()
    executor = DagExecutor(scheduler=processes(), cache=store)
    result = executor.run(START, beamline(solver), raise_on_error=False)
    assert list(result.failures) == ["solve"]
    error = result.failures["solve"]
    assert type(error) is WorkerDiedError
    assert str(error) == f"node 'solve': its worker process died ({ended})"
    assert {nid: run.status for nid, run in result.runs.items()} == {
        "seed": NodeStatus.RAN,
        "solve": NodeStatus.FAILED,
        "side": NodeStatus.RAN,
        "probe": NodeStatus.RAN,
    }
    assert result.metrics == {"seed.energy": 2.0, "side.energy": 6.0, "probe.energy": 4.0}

    rerun = DagExecutor(scheduler=processes(), cache=store).run(START, beamline(solver))
    assert sorted(rerun.hits) == ["probe", "seed", "side"]
    assert rerun.runs["solve"].status is NodeStatus.RAN
    assert rerun.metrics["solve.solved"] == 5.0


@pytest.mark.timeout(120)
def test_a_node_whose_worker_died_is_retried_when_its_policy_allows(tmp_path: Path) -> None:
    """A crash may pass (the out-of-memory killer, a flaky driver), as a hang may."""
    armed = tmp_path / "armed"
    armed.touch()
    retry = RetryPolicy(max_retries=1, jitter=0.0)
    cfg = CrashCfg(how="segv", armed=str(armed))
    solver = NodeSpec("solve", ["seed"], FortranSolver(cfg), retry=retry)
    result = DagExecutor(scheduler=processes()).run(START, beamline(solver))
    assert result.runs["solve"].attempts == 2
    assert result.metrics["solve.solved"] == 5.0


def kill_idle_siblings() -> None:
    """Kill the other worker processes of this one's pool (children of the same forkserver)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == os.getppid() and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)


class OomKiller(PipelineStage[SimpleState, CrashCfg]):
    """Fails once (a licence server busy) and, half a second later, when no node runs, does
    what the out-of-memory killer does: kills the other, idle, worker processes."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        if os.path.exists(self.cfg.armed):
            os.remove(self.cfg.armed)
            threading.Timer(0.5, kill_idle_siblings).start()
            raise OSError("licence server busy")
        return StageResult(SimpleState(9.0), metrics={"survived": 9.0})


@pytest.mark.timeout(60)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads siblings from /proc")
def test_a_worker_killed_while_no_node_runs_fails_no_node(tmp_path: Path) -> None:
    """Pebble then gives up on its whole pool: the retry runs on a new one."""
    armed = tmp_path / "armed"
    armed.touch()
    retry = RetryPolicy(max_retries=1, backoff_s=2.0, jitter=0.0)
    nodes = [
        NodeSpec("seed", stage=Amplify(GainCfg(name="seed"))),
        NodeSpec("oom", ["seed"], OomKiller(CrashCfg(armed=str(armed))), retry=retry),
        NodeSpec("after", ["oom"], Amplify(GainCfg(name="after"))),
    ]
    result = DagExecutor(scheduler=processes()).run(START, nodes)
    assert result.runs["oom"].attempts == 2
    assert result.metrics == {"seed.energy": 2.0, "oom.survived": 9.0, "after.energy": 18.0}


@pytest.mark.timeout(60)
def test_a_worker_that_exits_with_status_0_is_ended_by_its_timeout(tmp_path: Path) -> None:
    """Pebble does not see a worker that exits cleanly as dead (what LocalScheduler says)."""
    armed = tmp_path / "armed"
    armed.touch()
    stage = FortranSolver(CrashCfg(how="stop", armed=str(armed)))
    solver = NodeSpec("solve", ["seed"], stage, retry=RetryPolicy(timeout_s=2.0))
    result = DagExecutor(scheduler=processes()).run(START, beamline(solver), raise_on_error=False)
    assert list(result.failures) == ["solve"]
    assert isinstance(result.failures["solve"], NodeTimeoutError)
    assert result.metrics == {"seed.energy": 2.0, "side.energy": 6.0, "probe.energy": 4.0}


def test_a_worker_died_error_names_a_signal_python_has_no_name_for_by_its_number() -> None:
    assert str(WorkerDiedError("fit", -200)) == "node 'fit': its worker process died (signal 200)"


# --- timeouts -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_node_past_its_timeout_has_its_worker_killed_and_is_retried(tmp_path: Path) -> None:
    """One worker process: the retry (and the other nodes) can only run once the hung
    worker is gone."""
    retry = RetryPolicy(timeout_s=4.0, max_retries=1)
    executor = DagExecutor(scheduler=processes(workers=1))
    started = time.perf_counter()
    result = executor.run(START, beamline(slow_fit(tmp_path, once=True, retry=retry)))
    assert time.perf_counter() - started < 40.0  # not the 60 s the first attempt hangs for
    assert result.runs["fit"].attempts == 2 and result.metrics["fit.fit"] == 7.0
    assert result.metrics["side.energy"] == 6.0 and result.metrics["probe.energy"] == 4.0
    hung, retried = pids(tmp_path / "fit.pid")
    assert retried != hung and not alive(hung)


@pytest.mark.timeout(60)
def test_a_node_out_of_retries_times_out_and_its_worker_is_gone(tmp_path: Path) -> None:
    executor = DagExecutor(scheduler=processes())
    nodes = beamline(slow_fit(tmp_path, retry=RetryPolicy(timeout_s=1.0)))
    result = executor.run(START, nodes, raise_on_error=False)
    assert list(result.failures) == ["fit"]
    assert isinstance(result.failures["fit"], NodeTimeoutError)
    assert result.metrics["side.energy"] == 6.0 and result.metrics["probe.energy"] == 4.0
    assert not alive(wait_for(tmp_path / "fit.pid"))


# --- cancel and interrupt -----------------------------------------------------------------------


class StopOnceRunning:
    """Presses Stop from another thread once the fit's worker has written its pid."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self.executor: DagExecutor | None = None

    def on_start(self, node_id: str) -> None:
        if node_id == "fit":
            threading.Thread(target=self._stop).start()

    def _stop(self) -> None:
        wait_for(self.pid_file)
        self.executor.cancel()  # type: ignore[union-attr]


@pytest.mark.timeout(60)
def test_cancel_mid_run_kills_the_running_worker_processes(tmp_path: Path) -> None:
    stopper = StopOnceRunning(tmp_path / "fit.pid")
    executor = DagExecutor(scheduler=processes(), callbacks=[stopper])
    stopper.executor = executor
    started = time.perf_counter()
    result = executor.run(START, beamline(slow_fit(tmp_path)), raise_on_error=False)
    assert time.perf_counter() - started < 40.0
    assert result.runs["fit"].status is NodeStatus.CANCELLED
    assert result.runs["seed"].status is NodeStatus.RAN
    assert not alive(wait_for(tmp_path / "fit.pid"))


class InterruptOnceRunning:
    """Ctrl-C (on the thread running the hooks) once the fit's worker has written its pid."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file

    def on_start(self, node_id: str) -> None:
        if node_id == "fit":
            wait_for(self.pid_file)
            raise KeyboardInterrupt


@pytest.mark.timeout(60)
def test_an_interrupt_kills_the_running_worker_processes(tmp_path: Path) -> None:
    executor = DagExecutor(
        scheduler=processes(), callbacks=[InterruptOnceRunning(tmp_path / "fit.pid")]
    )
    with pytest.raises(KeyboardInterrupt) as caught:
        executor.run(START, beamline(slow_fit(tmp_path)))
    assert caught.value.partial.runs["fit"].status is NodeStatus.CANCELLED  # type: ignore[attr-defined]
    assert not alive(wait_for(tmp_path / "fit.pid"))


# --- an exception that cannot travel ------------------------------------------------------------


class LockedDetectorError(RuntimeError):
    """Holds the detector's lock, which cannot be pickled, and its message says whether the
    lock is held: without the lock it cannot be told (an exception that merely holds one
    arrives as itself, without it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()

    def __str__(self) -> str:
        return f"{self.args[0]} (lock {'held' if self.lock.locked() else 'free'})"


class Detector(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        raise LockedDetectorError("detector busy")


def test_an_exception_that_cannot_travel_comes_back_as_a_stand_in_naming_its_type() -> None:
    out = DagExecutor(scheduler=processes()).run(
        START, [NodeSpec("ccd", stage=Detector(StageConfig(name="detector")))], raise_on_error=False
    )
    error = out.failures["ccd"]
    assert type(error) is RemoteStageError
    assert error.type_name == f"{__name__}.LockedDetectorError"
    assert str(error) == f"{__name__}.LockedDetectorError: detector busy (lock free)"
