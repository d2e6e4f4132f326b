"""RedisStore against a real redis-server: round trips, TTL, forgeries and outages."""

from __future__ import annotations

import pickle
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from redis_server import RedisServer, free_port
from stages.states import Trace
from tripwire import Tripwire

from phys_pipeline.cache import CacheWarning, RedisStore
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.errors import CacheError
from phys_pipeline.types import DagState, SimpleState, StageResult

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    """A store under a fresh prefix, so tests sharing the server never see each other."""
    made = RedisStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    yield made
    made.clear()


def cache_warnings(recorder: pytest.WarningsRecorder) -> list[str]:
    return [str(w.message) for w in recorder if issubclass(w.category, CacheWarning)]


# --- round trips ----------------------------------------------------------------------------


def test_simple_state_with_arrays_round_trips(store: RedisStore) -> None:
    psi = (np.arange(6.0) + 0.5j).reshape(2, 3)
    result = StageResult(
        SimpleState({"psi": psi, "grid": (64, 0.1)}, {"units": "SI"}),
        metrics={"energy": 0.75},
        provenance={"node": "propagate"},
    )
    store.put(KEY, result)
    back = store.get(KEY)
    np.testing.assert_array_equal(back.state.payload["psi"], psi)
    assert back.state.payload["psi"].dtype == psi.dtype
    assert not back.state.payload["psi"].flags.writeable
    assert back.state.payload["grid"] == (64, 0.1) and back.state.meta == {"units": "SI"}
    assert back.metrics == {"energy": 0.75} and back.provenance == {"node": "propagate"}


def test_pickled_and_dag_states_round_trip(store: RedisStore) -> None:
    store.put(KEY, StageResult(Trace(np.arange(4.0), {("a", 1): "b"})))
    back = store.get(KEY)
    assert type(back.state) is Trace and back.state.label == {("a", 1): "b"}
    np.testing.assert_array_equal(back.state.samples, np.arange(4.0))
    store.put(OTHER_KEY, StageResult(DagState({"a": SimpleState(1), "b": SimpleState(2)})))
    dag = store.get(OTHER_KEY).state
    assert type(dag) is DagState and dag["a"] == SimpleState(1)


def test_contains_delete_clear_touch_only_this_prefix(store: RedisStore, redis_url: str) -> None:
    neighbour = RedisStore(redis_url, prefix=store.prefix + "-neighbour")
    neighbour.put(KEY, StageResult(SimpleState(0)))
    assert not store.contains(KEY) and store.get(KEY) is None
    store.put(KEY, StageResult(SimpleState(1)))
    store.put(OTHER_KEY, StageResult(SimpleState(2)))
    assert store.contains(KEY) and len(store) == 2
    store.delete(KEY)
    assert not store.contains(KEY) and len(store) == 1
    store.clear()
    assert len(store) == 0
    assert neighbour.get(KEY).state.payload == 0
    neighbour.clear()


def test_ttl_is_set_when_asked(redis_url: str) -> None:
    prefix = f"ttl-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    RedisStore(redis_url, prefix, ttl_s=120).put(KEY, StageResult(SimpleState(1)))
    RedisStore(redis_url, prefix).put(OTHER_KEY, StageResult(SimpleState(2)))
    assert 0 < client.ttl(f"{prefix}:v1:{KEY}") <= 120
    assert client.ttl(f"{prefix}:v1:{OTHER_KEY}") == -1  # no expiry
    client.delete(f"{prefix}:v1:{KEY}", f"{prefix}:v1:{OTHER_KEY}")
    client.close()


def big_result(seed: int = 0) -> StageResult:
    """3 MiB of noise: more than one 1 MiB piece on the wire."""
    return StageResult(SimpleState(np.random.default_rng(seed).normal(size=3 * 2**20 // 8)))


@pytest.mark.parametrize("ttl_s", [None, 120])
def test_big_entry_round_trips_in_pieces_with_its_ttl_and_no_leftovers(
    redis_url: str, ttl_s: int | None
) -> None:
    store = RedisStore(redis_url, f"big-{uuid.uuid4().hex[:8]}", ttl_s=ttl_s)
    store.put(KEY, big_result())
    np.testing.assert_array_equal(store.get(KEY).state.payload, big_result().state.payload)
    name = f"{store.prefix}:v1:{KEY}"
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(match=f"{store.prefix}:*")) == [name.encode()]  # no partials
    ttl = client.ttl(name)
    assert ttl == -1 if ttl_s is None else 0 < ttl <= ttl_s
    client.close()
    store.clear()


def test_big_entry_replaced_while_read_is_a_miss_not_a_torn_frame(
    store: RedisStore,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    recwarn: pytest.WarningsRecorder,
) -> None:
    store.put(KEY, big_result(1))
    checks_between_pieces = store._deadline

    def replaced_midway(what: str, nbytes: int) -> Callable[[], None]:
        check = checks_between_pieces(what, nbytes)
        pieces = iter(range(10))

        def check_and_replace() -> None:
            if next(pieces) == 1:  # another writer puts the entry anew after the first piece
                RedisStore(redis_url, store.prefix).put(KEY, big_result(2))
            check()

        return check_and_replace

    with monkeypatch.context() as patched:
        patched.setattr(store, "_deadline", replaced_midway)
        assert store.get(KEY) is None
    assert cache_warnings(recwarn) == []  # no torn frame, so nothing rejected or deleted
    np.testing.assert_array_equal(store.get(KEY).state.payload, big_result(2).state.payload)


# --- forgeries ------------------------------------------------------------------------------


def test_entry_signed_with_another_key_is_never_unpickled(
    store: RedisStore, redis_url: str, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    marker = tmp_path / "pwned"
    forger = RedisStore(redis_url, store.prefix, signer=EntrySigner("attacker"))
    forger.put(KEY, StageResult(Trace(np.ones(2), Tripwire(marker))))
    assert not marker.exists()
    assert store.get(KEY) is None
    [message] = cache_warnings(recwarn)
    assert "signature" in message
    assert not marker.exists()
    assert store.contains(KEY)  # left in place: a reader deletes nothing it cannot authenticate


def test_a_co_user_signing_with_another_key_never_wipes_our_entries(
    store: RedisStore, redis_url: str, recwarn: pytest.WarningsRecorder
) -> None:
    """Two users sharing one Redis prefix, each with a key of their own: reading the other's
    entry is a miss (with a warning), and the entry stays for its owner. (Readers used to
    delete an entry they could not authenticate, so each user's reads wiped the other's cache.)"""
    ours = StageResult(SimpleState(np.arange(3.0)))
    store.put(KEY, ours)
    co_user = RedisStore(redis_url, store.prefix, signer=EntrySigner("co-user's own key"))
    assert co_user.get(KEY) is None
    assert len(cache_warnings(recwarn)) == 1
    hit = store.get(KEY)
    assert hit is not None
    np.testing.assert_array_equal(hit.state.payload, np.arange(3.0))


def test_genuine_tripwire_entry_does_fire(store: RedisStore, tmp_path: Path) -> None:
    """Control for the forgery test above."""
    marker = tmp_path / "pwned"
    store.put(KEY, StageResult(Trace(np.ones(2), Tripwire(marker))))
    assert store.get(KEY) is not None and marker.exists()


def test_garbage_value_is_a_miss_with_one_warning(
    store: RedisStore, redis_url: str, recwarn: pytest.WarningsRecorder
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(f"{store.prefix}:v1:{KEY}", b"PPCACHE1\x00\x00\x00\x05hello")
    client.close()
    assert store.get(KEY) is None
    assert len(cache_warnings(recwarn)) == 1


def test_deeply_nested_meta_is_a_miss_with_one_warning(
    store: RedisStore, redis_url: str, recwarn: pytest.WarningsRecorder
) -> None:
    meta = b"[" * 100_000 + b"]" * 100_000
    client = redis.Redis.from_url(redis_url)
    client.set(f"{store.prefix}:v1:{KEY}", b"PPCACHE1" + len(meta).to_bytes(4, "big") + meta)
    client.close()
    assert store.get(KEY) is None
    [message] = cache_warnings(recwarn)
    assert KEY in message and "RecursionError" in message
    assert store.contains(KEY)  # left in place (readers delete nothing): the next put overwrites


# --- outages --------------------------------------------------------------------------------


def test_dead_server_costs_one_warning_and_no_waiting(
    own_redis: RedisServer, recwarn: pytest.WarningsRecorder
) -> None:
    store = RedisStore(own_redis.url, "outage", timeout_s=0.2)
    store.put(KEY, StageResult(SimpleState(1)))
    assert store.get(KEY) is not None
    own_redis.stop()

    start = time.monotonic()
    for _ in range(50):
        assert store.get(KEY) is None
        store.put(OTHER_KEY, StageResult(SimpleState(2)))
        assert not store.contains(KEY)
    assert time.monotonic() - start < 1.0
    [message] = cache_warnings(recwarn)
    assert f"127.0.0.1:{own_redis.port}" in message

    strict = RedisStore(own_redis.url, "outage", timeout_s=0.2, strict=True)
    with pytest.raises(CacheError, match=f"127.0.0.1:{own_redis.port}"):
        strict.get(KEY)
    with pytest.raises(CacheError, match=f"127.0.0.1:{own_redis.port}"):
        strict.put(KEY, StageResult(SimpleState(1)))


def test_hung_server_costs_one_timeout_then_backs_off(recwarn: pytest.WarningsRecorder) -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        store = RedisStore(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout_s=0.2)
        start = time.monotonic()
        assert store.get(KEY) is None
        first = time.monotonic() - start
        for _ in range(30):
            assert store.get(KEY) is None
            store.put(KEY, StageResult(SimpleState(1)))
        total = time.monotonic() - start
    assert 0.15 < first < 1.0  # bounded by the timeout
    assert total < first + 0.2  # later calls did not wait again
    assert len(cache_warnings(recwarn)) == 1


def test_store_retries_after_the_backoff_and_warns_again_on_a_new_outage(
    redis_binary: str, recwarn: pytest.WarningsRecorder
) -> None:
    port = free_port()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2, retry_after_s=0.3)
    assert store.get(KEY) is None  # nothing listening yet: outage 1
    server = RedisServer(redis_binary, port=port)
    try:
        store.put(KEY, StageResult(SimpleState(1)))  # still backing off: dropped
        assert not store.contains(KEY)
        time.sleep(0.35)
        store.put(KEY, StageResult(SimpleState(1)))
        assert store.get(KEY).state.payload == 1
    finally:
        server.stop()
    assert store.get(KEY) is None  # outage 2
    assert len(cache_warnings(recwarn)) == 2


def test_full_server_that_evicts_nothing_drops_writes_with_one_warning_and_serves_reads(
    own_redis: RedisServer, recwarn: pytest.WarningsRecorder
) -> None:
    store = RedisStore(own_redis.url, "full")
    store.put(KEY, big_result())
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("maxmemory", "1mb")  # less than it holds already
    client.config_set("maxmemory-policy", "noeviction")
    client.close()
    for seed in range(3):
        store.put(OTHER_KEY, big_result(seed))
        store.put(OTHER_KEY, StageResult(SimpleState(seed)))
    assert not store.contains(OTHER_KEY)
    np.testing.assert_array_equal(store.get(KEY).state.payload, big_result().state.payload)
    [message] = cache_warnings(recwarn)
    assert "refused SET" in message and "maxmemory" in message


def test_constructing_does_not_connect() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        RedisStore(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_passwords_never_appear_in_warnings(recwarn: pytest.WarningsRecorder) -> None:
    store = RedisStore(f"redis://user:hunter2@127.0.0.1:{free_port()}/0", timeout_s=0.2)
    assert store.get(KEY) is None
    [message] = cache_warnings(recwarn)
    assert "hunter2" not in message and "user:***@127.0.0.1" in message
    assert "hunter2" not in repr(store)


def test_store_survives_pickling_for_worker_processes(store: RedisStore) -> None:
    store.put(KEY, StageResult(SimpleState(3)))
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get(KEY).state.payload == 3
