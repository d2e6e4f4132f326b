"""Redis going away in the middle of a run: the run finishes, computing what it cannot fetch,
within a bound set by the timeout and with one CacheWarning; strict mode raises instead."""

from __future__ import annotations

import os
import signal
import time
import warnings

import numpy as np
import pytest
from redis_server import RedisServer, free_port

from phys_pipeline.cache import CacheConfig, CacheWarning, MemoryStore, RedisStore, TieredStore
from phys_pipeline.errors import CacheError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

pytestmark = [pytest.mark.usefixtures("isolated_cache_key"), pytest.mark.timeout(60)]

TIMEOUT_S = 0.5
CHAIN = 8
KILLER = 3  # the 4th node of the chain stops the server from inside the run
# how the server goes away: gone (connections refused) or frozen (nothing ever answers)
OUTAGES = {"killed": signal.SIGKILL, "frozen": signal.SIGSTOP}


class AmplifierCfg(StageConfig):
    gain: float = 1.5


class Amplifier(PipelineStage[SimpleState, AmplifierCfg]):
    """One amplifier of a chain: scales the field (50k samples) and reports its energy."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        field = np.linspace(0.0, 1.0, 50_000) if state.payload is None else state.payload
        out = SimpleState(field * self.cfg.gain, {"stage": self.cfg.name})
        return StageResult(out, metrics={"energy": float(np.sum(out.payload**2))})


class SaboteurCfg(AmplifierCfg):
    pid: int
    signal: int


class SaboteurAmplifier(Amplifier):
    """An amplifier that first sends ``signal`` to the Redis server (0: just checks it)."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        os.kill(self.cfg.pid, self.cfg.signal)
        return super().process(state, policy=policy)


def chain(saboteur: tuple[int, int] | None = None) -> list[NodeSpec]:
    """``a0 -> a1 -> ... -> a7``; with ``saboteur=(pid, signal)``, node a3 sends it."""
    nodes = []
    for i in range(CHAIN):
        stage: Amplifier = Amplifier(AmplifierCfg(name=f"a{i}", gain=1.0 + i / 10))
        if saboteur is not None and i == KILLER:
            pid, sig = saboteur
            stage = SaboteurAmplifier(
                SaboteurCfg(name=f"a{i}", gain=1.0 + i / 10, pid=pid, signal=sig)
            )
        nodes.append(NodeSpec(id=f"a{i}", deps=[f"a{i - 1}"] if i else [], stage=stage))
    return nodes


def timed_run(executor: DagExecutor, nodes: list[NodeSpec]) -> tuple[DagRunResult, float, list]:
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")  # so that repeated warnings are counted, not merged
        started = time.monotonic()
        out = executor.run(SimpleState(None), nodes)
        seconds = time.monotonic() - started
    return out, seconds, recorded


def reference_run() -> tuple[DagRunResult, float]:
    started = time.monotonic()
    out = DagExecutor().run(SimpleState(None), chain())
    return out, time.monotonic() - started


def cache_warnings(recorded: list[warnings.WarningMessage]) -> list[str]:
    assert {w.category for w in recorded} <= {CacheWarning}, [str(w.message) for w in recorded]
    return [str(w.message) for w in recorded]


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_server_lost_mid_run_costs_one_warning_and_at_most_one_timeout(
    own_redis: RedisServer, outage: int
) -> None:
    reference, compute_s = reference_run()
    store = RedisStore(own_redis.url, "outage", timeout_s=TIMEOUT_S, retry_after_s=60.0)
    executor = DagExecutor(cache=store)
    out, seconds, recorded = timed_run(executor, chain((own_redis.process.pid, outage)))

    assert out.ok and out.ran == [f"a{i}" for i in range(CHAIN)]
    assert out.metrics == reference.metrics
    [message] = cache_warnings(recorded)
    assert f"127.0.0.1:{own_redis.port}" in message and "unavailable" in message
    # one timeout at most (a frozen server), not one per node; a refused connection is instant
    assert seconds < compute_s + 2 * TIMEOUT_S + 1.0
    if outage == signal.SIGSTOP:
        assert seconds > 0.8 * TIMEOUT_S  # the frozen server really did cost the timeout

    # still down: the rerun fetches nothing, computes everything, warns no more, waits no more
    again, seconds, recorded = timed_run(executor, chain((own_redis.process.pid, 0)))
    assert again.ran == [f"a{i}" for i in range(CHAIN)]
    assert again.metrics == reference.metrics
    assert cache_warnings(recorded) == []
    assert seconds < compute_s + 1.0

    if outage == signal.SIGSTOP:  # thawed, the server holds what was written before the outage
        os.kill(own_redis.process.pid, signal.SIGCONT)
        thawed = RedisStore(own_redis.url, "outage", timeout_s=5.0)
        keys = out.plan.keys
        assert all(thawed.contains(keys[f"a{i}"]) for i in range(KILLER))
        assert not any(thawed.contains(keys[f"a{i}"]) for i in range(KILLER + 1, CHAIN))


class KillOnPlan:
    """A run callback that stops the server once the run has planned and looked up its nodes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stale: dict | None = None

    def on_plan(self, plan: object, stale: dict) -> None:
        self.stale = dict(stale)
        os.kill(self.pid, signal.SIGKILL)


def test_a_server_lost_after_the_look_up_costs_the_run_nothing(own_redis: RedisServer) -> None:
    """A run reads its cached nodes while it looks them up (one round trip each), before it
    reports its plan: a server lost after that has served them all already. (Runs used to
    look up, report, then read; the reads failed and every node was computed.)"""
    reference, _ = reference_run()
    store = RedisStore(own_redis.url, "fetch", timeout_s=TIMEOUT_S, retry_after_s=60.0)
    DagExecutor(cache=store).run(SimpleState(None), chain())
    assert len(store) == CHAIN

    saboteur = KillOnPlan(own_redis.process.pid)
    executor = DagExecutor(cache=store, callbacks=[saboteur])
    out, _, recorded = timed_run(executor, chain())
    assert saboteur.stale == {}  # planned as all hits ...
    assert out.ran == [] and len(out.hits) == CHAIN  # ... and all were loaded by then
    assert out.metrics == reference.metrics
    assert cache_warnings(recorded) == []  # the dead server was not asked for anything


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_strict_cache_raises_a_cache_error_naming_the_server(
    own_redis: RedisServer, outage: int
) -> None:
    config = CacheConfig(backend="redis", redis_url=own_redis.url, timeout_s=TIMEOUT_S, strict=True)
    executor = DagExecutor(cache=config)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strict: an error, not a warning
        with pytest.raises(CacheError) as caught:
            executor.run(SimpleState(None), chain((own_redis.process.pid, outage)))
    assert time.monotonic() - started < 2 * TIMEOUT_S + 2.0
    message = str(caught.value)
    assert f"redis://127.0.0.1:{own_redis.port}/0" in message
    assert "SET failed" in message  # the write of the node that stopped the server


@pytest.mark.parametrize("tiered", [False, True], ids=["store", "behind a memory tier"])
def test_strict_store_passed_directly_raises_a_cache_error_naming_the_server(
    tiered: bool,
) -> None:
    """No CacheConfig: the store's own strict=True must reach the run, not become a warning."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisStore(url, timeout_s=TIMEOUT_S, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CacheError, match=f"Redis cache at {url}"):
            DagExecutor(cache=TieredStore([MemoryStore(), store]) if tiered else store).run(
                SimpleState(None), chain()
            )
