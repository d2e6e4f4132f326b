"""Crash safety: writers and runs killed with SIGKILL at random points never leave an entry that
reads back wrong or broken; a killed run resumes from the nodes it had finished."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage
from stages.states import Trace

from phys_pipeline.cache import CacheWarning, DiskStore
from phys_pipeline.executor import DagExecutor
from phys_pipeline.types import (
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    State,
)

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

TESTS_DIR = Path(__file__).parent
KEYSPACE = 1000  # more keys than the writers get through, so every kill lands in a fresh write
KILLS = 40


def key_of(index: int) -> str:
    return xxhash.xxh3_128_hexdigest(f"crash-{index}".encode())


def expected(index: int) -> StageResult:
    """What the writer of key ``index`` stores: derived from the index alone, 100-420 KB."""
    rng = np.random.default_rng(index)
    size = 12_500 + (index * 7919) % 40_000
    if index % 2:
        state: State = Trace(rng.normal(size=size), ("pulse", index))
    else:
        state = SimpleState({"psi": rng.normal(size=size), "k": np.arange(index % 7)}, {"i": index})
    return StageResult(state, metrics={"index": float(index)}, provenance={"writer": "crash"})


def is_expected(got: StageResult, index: int) -> bool:
    want = expected(index)
    if type(got.state) is not type(want.state) or got.metrics != want.metrics:
        return False
    if isinstance(want.state, Trace):
        return got.state.label == want.state.label and np.array_equal(
            got.state.samples, want.state.samples
        )
    return (
        got.state.meta == want.state.meta
        and got.state.payload.keys() == want.state.payload.keys()
        and all(np.array_equal(got.state.payload[k], v) for k, v in want.state.payload.items())
    )


# --- writers killed at random points ---------------------------------------------------------


def write_keys(root: str, seed: int, written: Any) -> None:
    """A writer: goes through the key space in its own random order, writing what is missing
    and counting the entries it has finished in ``written`` (shared memory)."""
    cache = DiskStore(root)
    order = list(range(KEYSPACE))
    random.Random(seed).shuffle(order)
    for index in order:
        if not cache.contains(key_of(index)):
            cache.put(key_of(index), expected(index))
            written.value += 1


def kill_writers(root: str, kills: int, seed: int) -> None:
    """Runs in a fresh interpreter (no pytest threads, so forking is safe and fast): starts a
    writer ``kills`` times and SIGKILLs it a random 0-10 ms after it finished a random number
    of entries (so the kill lands in a write however loaded the machine is); prints what
    happened as JSON."""
    with tempfile.TemporaryDirectory() as warm:  # lazy imports and the key file, done once
        DiskStore(warm).put(key_of(1), expected(1))
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(seed)
    outcomes = []
    for attempt in range(kills):
        written = ctx.RawValue("i", 0)
        writer = ctx.Process(target=write_keys, args=(root, seed * 1000 + attempt, written))
        finished_before_kill = rng.randint(1, 6)
        writer.start()
        deadline = time.monotonic() + 20.0
        while written.value < finished_before_kill and time.monotonic() < deadline:
            time.sleep(0.0002)
        time.sleep(rng.uniform(0.0, 0.01))
        writer.kill()
        writer.join()
        outcomes.append({"exitcode": writer.exitcode, "written": written.value})
    print(json.dumps(outcomes))


@pytest.mark.timeout(120)
def test_writers_killed_at_random_points_leave_only_correct_entries(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    driver = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        import test_faults_crash
        test_faults_crash.kill_writers({str(root)!r}, {KILLS}, seed=20240611)
        """
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", driver], capture_output=True, text=True, timeout=90, env=env
    )
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout.splitlines()[-1])
    # every writer was killed, none ran to completion
    assert [o["exitcode"] for o in outcomes] == [-signal.SIGKILL] * KILLS
    finished = sum(o["written"] for o in outcomes)
    leftovers = [p for p in (root / "tmp").iterdir() if "." in p.name]
    assert len(leftovers) >= KILLS // 4, "the kills should land inside writes"

    cache = DiskStore(root)
    hits = wrong = 0
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        for index in range(KEYSPACE):
            got = cache.get(key_of(index))  # an exception here fails the test
            if got is not None:
                hits += 1
                wrong += not is_expected(got, index)
    assert wrong == 0
    assert hits >= finished >= KILLS  # no finished entry was lost
    assert hits == len(cache)
    assert {i % 2 for i in range(KEYSPACE) if cache.contains(key_of(i))} == {0, 1}
    # a killed writer's scratch copy is never published, so no entry even needs rejecting
    assert [str(w.message) for w in recorded if issubclass(w.category, CacheWarning)] == []

    # the leftovers do not get in the way of later writers
    missing = [i for i in range(KEYSPACE) if not cache.contains(key_of(i))][:50]
    for index in missing:
        cache.put(key_of(index), expected(index))
    assert all(is_expected(cache.get(key_of(i)), i) for i in missing)


# --- a run killed mid-way resumes ------------------------------------------------------------


class HoldCfg(StageConfig):
    started_file: str
    release_file: str


class Hold(PipelineStage[SimpleState, HoldCfg]):
    """Signals that it started, then waits until ``release_file`` is gone (or 60 s pass)."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        Path(self.cfg.started_file).touch()
        deadline = time.monotonic() + 60.0
        while Path(self.cfg.release_file).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        st = state.deepcopy()
        st.meta["held"] = True
        return StageResult(state=st, metrics={"held": 1.0})


class ToPulse(PipelineStage[SimpleState, StageConfig]):
    """Turns the grid into a user state (a signed pickle in the cache)."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        omega = state.meta["omega"]
        field = np.exp(-(omega**2)) * np.exp(1j * omega)
        return StageResult(Trace(field, ("gauss", len(omega))), {"energy": float(omega.size)})


def resumable_nodes(workdir: Path) -> list[NodeSpec]:
    hold = HoldCfg(
        name="hold",
        started_file=str(workdir / "started"),
        release_file=str(workdir / "hold"),
    )
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(name="grid", N=40_000))),
        NodeSpec(id="p1", deps=["grid"], stage=PhaseStage(PhaseCfg(name="p1", gdd=5.0))),
        NodeSpec(id="pulse", deps=["grid"], stage=ToPulse(StageConfig(name="pulse"))),
        NodeSpec(id="solo", deps=["grid"], stage=PhaseStage(PhaseCfg(name="solo", gdd=1.0))),
        NodeSpec(id="hold", deps=["p1"], stage=Hold(hold)),
        NodeSpec(id="tail", deps=["hold"], stage=PhaseStage(PhaseCfg(name="tail", gdd=-3.0))),
    ]


def same_state(got: State, want: State) -> bool:
    if isinstance(want, Trace):
        return got.label == want.label and np.array_equal(got.samples, want.samples)
    return got == want  # SimpleState compares by canonical hash: arrays by content


@pytest.mark.timeout(60)
def test_run_killed_mid_way_resumes_with_completed_nodes_cached(tmp_path: Path) -> None:
    root, workdir = tmp_path / "cache", tmp_path / "work"
    workdir.mkdir()
    (workdir / "hold").touch()
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_faults_crash import resumable_nodes
        from phys_pipeline.cache import DiskStore
        from phys_pipeline.executor import DagExecutor
        from phys_pipeline.types import SimpleState
        nodes = resumable_nodes(Path({str(workdir)!r}))
        DagExecutor(cache=DiskStore({str(root)!r})).run(SimpleState(None), nodes)
        """
    )
    run = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30.0
        while not (workdir / "started").exists():
            assert run.poll() is None, run.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never reached the holding node"
            time.sleep(0.01)
    finally:
        run.kill()
        run.wait(timeout=10)
        run.stderr.close()
    assert run.returncode == -signal.SIGKILL

    (workdir / "hold").unlink()  # the rerun's holding node passes straight through
    nodes = resumable_nodes(workdir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        rerun = DagExecutor(cache=DiskStore(root)).run(SimpleState(None), nodes)
    assert sorted(rerun.hits) == ["grid", "p1", "pulse", "solo"]
    assert sorted(rerun.ran) == ["hold", "tail"]
    assert rerun.runs["hold"].reason == "not cached"

    reference = DagExecutor().run(SimpleState(None), nodes)
    assert rerun.metrics == reference.metrics
    for node_id, result in reference.results.items():
        assert same_state(rerun.results[node_id].state, result.state), node_id
