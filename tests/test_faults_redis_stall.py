"""A stalled Redis (SIGSTOP) never makes a run much slower than no cache: every command has a
deadline that grows with its payload up to a low ceiling, the first failure costs one warning,
and the store backs off (1 s doubling to 30 s) before trying again, then recovers by itself."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
import time
import uuid
import warnings

import numpy as np
import pytest
import redis
from redis_server import RedisServer, free_port

import phys_pipeline.cache.redis as redis_module
from phys_pipeline.cache import CacheConfig, CacheWarning, RedisStore, build_cache_backend
from phys_pipeline.errors import CacheError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

pytestmark = [pytest.mark.usefixtures("isolated_cache_key"), pytest.mark.timeout(120)]

KEY = "0123456789abcdef0123456789abcdef"
MIB = 1024**2
LONG_GRID = 2**17  # complex128 samples: a 2 MiB state, more than one piece on the wire
AMPLIFIERS = 4


# --- a small chirped-pulse amplifier: the 2 MiB states travel in pieces ----------------------


class PulseCfg(StageConfig):
    samples: int = 4096
    width: float = 0.05


class GaussianPulse(PipelineStage[SimpleState, PulseCfg]):
    """A transform-limited Gaussian pulse on a short time grid (64 KiB)."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        t = np.linspace(-1.0, 1.0, self.cfg.samples)
        field = np.exp(-((t / self.cfg.width) ** 2)).astype(complex)
        return StageResult(SimpleState(field), metrics={"energy": float(np.sum(abs(field) ** 2))})


class StretcherCfg(StageConfig):
    samples: int = LONG_GRID
    gdd: float = 4e4


class Stretcher(PipelineStage[SimpleState, StretcherCfg]):
    """Pads the pulse onto the long grid and chirps it, so the amplifiers stay below damage."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        omega = 2 * np.pi * np.fft.fftfreq(self.cfg.samples)
        spectrum = np.fft.fft(state.payload, self.cfg.samples)
        field = np.fft.ifft(spectrum * np.exp(0.5j * self.cfg.gdd * omega**2))
        return StageResult(SimpleState(field), metrics={"peak": float(np.abs(field).max())})


class AmplifierCfg(StageConfig):
    gain: float = 2.0
    freeze_pid: int = 0  # when set, the amplifier first freezes that process (the server)


class Amplifier(PipelineStage[SimpleState, AmplifierCfg]):
    """Saturable gain on the stretched pulse (a 2 MiB state)."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        if self.cfg.freeze_pid:
            os.kill(self.cfg.freeze_pid, signal.SIGSTOP)
        intensity = np.abs(state.payload) ** 2
        field = state.payload * np.sqrt(self.cfg.gain / (1 + intensity / intensity.max()))
        return StageResult(SimpleState(field), metrics={"energy": float(np.sum(abs(field) ** 2))})


class SpectrometerCfg(StageConfig):
    channels: int = 256


class Spectrometer(PipelineStage[SimpleState, SpectrometerCfg]):
    """The power spectrum binned into a few channels (a small state) and its rms width."""

    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        power = np.abs(np.fft.fftshift(np.fft.fft(state.payload))) ** 2
        binned = power.reshape(self.cfg.channels, -1).sum(axis=1)
        channel = np.arange(self.cfg.channels)
        mean = np.sum(channel * binned) / binned.sum()
        width = np.sqrt(np.sum((channel - mean) ** 2 * binned) / binned.sum())
        return StageResult(SimpleState(binned), metrics={"rms_width": float(width)})


def amplifier_chain(freeze_pid: int = 0) -> list[NodeSpec]:
    """pulse -> stretcher -> four amplifiers side by side -> a spectrometer after each;
    with ``freeze_pid`` the second amplifier freezes the Redis server as it starts."""
    nodes = [
        NodeSpec(id="pulse", stage=GaussianPulse(PulseCfg(name="pulse"))),
        NodeSpec(id="stretcher", deps=["pulse"], stage=Stretcher(StretcherCfg(name="stretcher"))),
    ]
    for i in range(AMPLIFIERS):
        cfg = AmplifierCfg(name=f"amp{i}", gain=2.0 + i, freeze_pid=freeze_pid if i == 1 else 0)
        nodes.append(NodeSpec(id=f"amp{i}", deps=["stretcher"], stage=Amplifier(cfg)))
        spectrometer = Spectrometer(SpectrometerCfg(name=f"spectrum{i}"))
        nodes.append(NodeSpec(id=f"spectrum{i}", deps=[f"amp{i}"], stage=spectrometer))
    return nodes


def executor(cache: object = None) -> DagExecutor:
    return DagExecutor(LocalScheduler(max_workers=AMPLIFIERS), cache)


def timed_run(run: DagExecutor, nodes: list[NodeSpec]) -> tuple[DagRunResult, float, list[str]]:
    """The result, the seconds it took and the warnings' messages (all CacheWarnings)."""
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")  # so that repeated warnings are counted, not merged
        started = time.monotonic()
        out = run.run(SimpleState(None), nodes)
        seconds = time.monotonic() - started
    assert {w.category for w in recorded} <= {CacheWarning}, [str(w.message) for w in recorded]
    return out, seconds, [str(w.message) for w in recorded]


def assert_same_answers(out: DagRunResult, reference: DagRunResult) -> None:
    assert out.ok and out.metrics == reference.metrics
    for node in ("stretcher", "amp0", "spectrum3"):
        np.testing.assert_array_equal(
            out.results[node].state.payload, reference.results[node].state.payload
        )


def test_a_run_during_a_stall_costs_one_timeout_one_warning_and_recovers(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phys_pipeline.cache")
    reference, compute_s = timed_run(executor(), amplifier_chain())[:2]
    store = RedisStore(own_redis.url, f"stall-{uuid.uuid4().hex[:8]}")
    # a stall costs about one command's timeout, two when calls overlap; 3x that is generous
    bound_s = 3 * 2 * store.deadline_s(MIB)
    cached = executor(store)

    # amp1 freezes the server while the amplifiers' 2 MiB results are being written
    out, seconds, messages = timed_run(cached, amplifier_chain(own_redis.process.pid))
    assert_same_answers(out, reference)
    assert len(out.ran) == len(reference.ran)
    [message] = messages
    assert f"127.0.0.1:{own_redis.port}" in message and "unavailable" in message
    assert seconds < compute_s + bound_s

    # still frozen: the next run waits for no node (one retry at most, if a backoff ran out)
    again, seconds, messages = timed_run(cached, amplifier_chain())
    assert_same_answers(again, reference)
    assert messages == []
    assert seconds < compute_s + bound_s

    os.kill(own_redis.process.pid, signal.SIGCONT)
    waited = time.monotonic()
    while not store.contains(KEY):  # the put that retries when the backoff runs out lands
        assert time.monotonic() - waited < 3 * store.max_retry_after_s
        store.put(KEY, StageResult(SimpleState(1.0)))
        time.sleep(0.05)
    assert "is back" in caplog.text
    _, _, messages = timed_run(cached, amplifier_chain())  # fills in what the freeze dropped
    hits, _, more = timed_run(cached, amplifier_chain())
    assert messages == more == []
    assert hits.ran == [] and len(hits.hits) == len(reference.ran)
    assert_same_answers(hits, reference)


@pytest.mark.parametrize("megabytes", [0.25, 8], ids=["small entry", "8 MiB entry"])
def test_strict_store_raises_within_the_deadline_on_a_stalled_server(
    own_redis: RedisServer, megabytes: float
) -> None:
    store = build_cache_backend(CacheConfig(backend="redis", redis_url=own_redis.url, strict=True))
    result = StageResult(SimpleState(np.ones(int(megabytes * MIB / 8))))
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strict: an error, not a warning
        with pytest.raises(CacheError, match=f"127.0.0.1:{own_redis.port}/0: SET failed"):
            store.put(KEY, result)
    assert time.monotonic() - started < 3 * store.deadline_s(MIB)


# --- deadlines ------------------------------------------------------------------------------


def unreachable_store(**settings: float) -> RedisStore:
    """A store nothing answers for (building one does not connect)."""
    return RedisStore(f"redis://127.0.0.1:{free_port()}/0", **settings)


def test_deadline_is_the_timeout_plus_the_payload_at_50_mib_per_s_capped_at_5_s() -> None:
    store = unreachable_store()
    assert store.deadline_s(0) == store.timeout_s == 0.5
    assert store.deadline_s(MIB) == pytest.approx(0.52)
    assert store.deadline_s(100 * MIB) == pytest.approx(2.5)
    assert store.deadline_s(225 * MIB) == pytest.approx(5.0)
    assert store.deadline_s(512 * MIB) == store.max_deadline_s == 5.0


def test_deadline_ceiling_is_a_setting_but_never_below_the_timeout() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing answers: building does not connect
    config = CacheConfig(backend="redis", redis_url=url, redis_max_deadline_s=2.0, timeout_s=0.25)
    store = build_cache_backend(config)
    assert store.deadline_s(10 * MIB) == pytest.approx(0.45)
    assert store.deadline_s(512 * MIB) == 2.0
    assert unreachable_store(timeout_s=8.0).deadline_s(512 * MIB) == 8.0
    with pytest.raises(CacheError, match="redis_max_deadline_s"):
        unreachable_store(max_deadline_s=0.0)


class TickingClock:
    """Stands in for the module's ``time``: every reading is ``tick_s`` later than the last."""

    def __init__(self, tick_s: float) -> None:
        self.now, self.tick_s = 0.0, tick_s

    def monotonic(self) -> float:
        self.now += self.tick_s
        return self.now


def partial_and_whole_names(url: str, prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(client.scan_iter(match=f"{prefix}:*"))
    finally:
        client.close()


def test_big_entry_slower_than_its_deadline_is_dropped_whole(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    """A link where each 1 MiB piece takes a second: the 3 MiB put gives up, nothing shows."""
    prefix = f"slow-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, prefix)
    monkeypatch.setattr(redis_module, "time", TickingClock(1.0))
    store.put(KEY, StageResult(SimpleState(np.ones(3 * MIB // 8))))
    [message] = [str(w.message) for w in recwarn if w.category is CacheWarning]
    assert "SET of 3.0 MiB took over its 0.56 s deadline" in message
    names = partial_and_whole_names(redis_url, prefix)
    assert [n for n in names if b":v1:" in n] == []  # only a partial key, which expires
    client = redis.Redis.from_url(redis_url)
    assert all(0 < client.ttl(name) <= 60 for name in names)
    client.delete(*names)
    client.close()


def test_big_entry_slower_than_its_deadline_to_read_is_a_miss_and_stays(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    store = RedisStore(redis_url, f"slow-{uuid.uuid4().hex[:8]}")
    store.put(KEY, StageResult(SimpleState(np.ones(3 * MIB // 8))))
    with monkeypatch.context() as patched:
        patched.setattr(redis_module, "time", TickingClock(1.0))
        assert store.get(KEY) is None
    [message] = [str(w.message) for w in recwarn if w.category is CacheWarning]
    assert "GET of 3.0 MiB took over" in message
    assert RedisStore(redis_url, store.prefix).get(KEY) is not None  # a miss, not a deletion
    store.clear()


# --- backoff --------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    store = unreachable_store()
    assert [store.backoff_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert store.backoff_s(100_000) == 30  # months of outage: still a number
    assert unreachable_store(retry_after_s=60.0).backoff_s(3) == 60  # never below the first


class SettableClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class FlakyClient:
    """Stands in for the redis client: ``exists`` fails while ``down``; counts the attempts.
    With ``hold`` set, each attempt waits on it (after setting ``entered``)."""

    def __init__(self) -> None:
        self.down, self.attempts = True, 0
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self._counting = threading.Lock()

    def exists(self, name: str) -> int:
        with self._counting:
            self.attempts += 1
        if self.hold is not None:
            self.entered.set()
            assert self.hold.wait(30)
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return 1


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SettableClock:
    made = SettableClock()
    monkeypatch.setattr(redis_module, "time", made)
    return made


def flaky_store(monkeypatch: pytest.MonkeyPatch) -> tuple[RedisStore, FlakyClient]:
    store, client = unreachable_store(), FlakyClient()
    monkeypatch.setattr(store, "_client", client)
    return store, client


def test_down_store_tries_again_after_1_2_4_8_16_then_every_30_s_and_warns_once(
    clock: SettableClock,
    monkeypatch: pytest.MonkeyPatch,
    recwarn: pytest.WarningsRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="phys_pipeline.cache")
    store, client = flaky_store(monkeypatch)
    tried_at = []
    for step in range(200):  # a call every half second for 100 s
        clock.now = step / 2
        before = client.attempts
        assert store.contains(KEY) is False
        if client.attempts > before:
            tried_at.append(clock.now)
    assert tried_at == [0, 1, 3, 7, 15, 31, 61, 91]
    assert len(recwarn) == 1 and "next attempt in 1 s" in str(recwarn[0].message)

    client.down = False  # back: the next attempt finds it, and every call goes to it again
    clock.now = 121
    assert store.contains(KEY) and store.contains(KEY) and client.attempts == 10
    assert "is back after 121.0 s" in caplog.text

    client.down = True  # a new outage: warned about again, backing off from 1 s again
    assert not store.contains(KEY) and len(recwarn) == 2
    clock.now = 121.9
    assert not store.contains(KEY) and client.attempts == 11
    clock.now = 122
    assert not store.contains(KEY) and client.attempts == 12


def test_while_one_call_retries_the_others_answer_at_once(
    clock: SettableClock, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    store, client = flaky_store(monkeypatch)
    assert not store.contains(KEY)  # down: back off for 1 s
    clock.now = 1.0
    client.hold, client.down = threading.Event(), False
    answers: list[bool] = []
    probe = threading.Thread(target=lambda: answers.append(store.contains(KEY)))
    probe.start()
    assert client.entered.wait(30)  # the retry is at the server ...
    for _ in range(20):  # ... and the calls of other threads do not queue behind it
        assert not store.contains(KEY)
    store.put(KEY, StageResult(SimpleState(1)))  # dropped without encoding or sending
    assert client.attempts == 2
    client.hold.set()
    probe.join(30)
    assert answers == [True] and store.contains(KEY) and client.attempts == 3
    assert len(recwarn) == 1


def test_calls_in_flight_when_the_server_stalls_count_as_one_failure(
    clock: SettableClock, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    store, client = flaky_store(monkeypatch)
    client.hold = threading.Event()
    threads = [threading.Thread(target=store.contains, args=(KEY,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    while client.attempts < 4:  # all four are at the (stalled) server
        time.sleep(0.01)
    client.hold.set()
    for thread in threads:
        thread.join(30)
    assert len(recwarn) == 1
    client.hold = None
    clock.now = 1.0  # one failure: the first backoff (1 s), not four doublings (8 s)
    store.contains(KEY)
    assert client.attempts == 5


def test_a_store_unpickled_in_a_worker_finds_out_for_itself(
    clock: SettableClock, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    store, _ = flaky_store(monkeypatch)
    assert not store.contains(KEY)  # the driver is backing off ...
    clone = pickle.loads(pickle.dumps(store))  # ... but its clock means nothing elsewhere
    client = FlakyClient()
    client.down = False
    monkeypatch.setattr(clone, "_client", client)
    assert clone.contains(KEY) and client.attempts == 1
    assert (clone.max_deadline_s, clone.retry_after_s, clone.max_retry_after_s) == (5, 1, 30)
    assert clone.reachable_from_other_processes
