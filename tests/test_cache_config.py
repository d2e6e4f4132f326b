"""CacheConfig, build_cache_backend and DagCache: what users and the executor see."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phys_pipeline.cache import (
    CacheConfig,
    CacheStore,
    CacheWarning,
    DiskStore,
    MemoryStore,
    RedisStore,
    TieredStore,
    build_cache_backend,
)
from phys_pipeline.dag_cache import DagCache
from phys_pipeline.errors import CacheConfigError, CacheError
from phys_pipeline.types import SimpleState, StageResult

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"


# --- CacheConfig ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backend", "s3"),
        ("redis_url", "http://localhost:6379"),
        ("redis_prefix", ""),
        ("redis_prefix", "has space"),
        ("redis_ttl_s", 0),
        ("redis_ttl_s", -5),
        ("memory_max_bytes", 0),
        ("memory_max_bytes", "lots"),
        ("timeout_s", 0),
        ("timeout_s", float("inf")),
        ("strict", "maybe"),
        ("disk_rot", "typo"),
    ],
)
def test_invalid_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(CacheConfigError, match=f"CacheConfig.{field} ") as caught:
        CacheConfig(**{field: value})
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_defaults() -> None:
    cfg = CacheConfig()
    assert cfg.backend == "disk" and cfg.disk_root == Path(".cache/phys-pipeline")
    assert cfg.memory_max_bytes == 2 * 1024**3 and cfg.timeout_s == 0.5
    assert cfg.redis_ttl_s is None and not cfg.strict and not cfg.memory_tier


def test_redis_needs_a_url_naming_the_field() -> None:
    with pytest.raises(CacheConfigError, match="redis_url must be set") as caught:
        CacheConfig(backend="redis")
    assert caught.value.field == "redis_url" and isinstance(caught.value, ValueError)
    assert CacheConfig().redis_url is None  # only the redis backend needs one


def test_seed_guide_snippet_builds_both_backends_without_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    disk_cache = build_cache_backend(CacheConfig(disk_root=Path(".cache/phys")))
    redis_cache = build_cache_backend(
        CacheConfig(
            backend="redis",
            redis_url="redis://localhost:6379/0",
            redis_prefix="phys-pipeline",
            redis_ttl_s=3600,
        )
    )
    assert time.monotonic() - start < 0.5
    assert isinstance(disk_cache, DiskStore) and disk_cache.root == tmp_path / ".cache/phys"
    assert isinstance(redis_cache, RedisStore) and redis_cache.ttl_s == 3600
    assert list(tmp_path.iterdir()) == []  # building touches nothing


def test_memory_backend_and_memory_tier(tmp_path: Path) -> None:
    assert isinstance(build_cache_backend(CacheConfig(backend="memory")), MemoryStore)
    tiered = build_cache_backend(
        CacheConfig(disk_root=tmp_path, memory_tier=True, memory_max_bytes=1000)
    )
    assert isinstance(tiered, TieredStore)
    fast, slow = tiered.tiers
    assert isinstance(fast, MemoryStore) and fast.max_bytes == 1000
    assert isinstance(slow, DiskStore) and slow.root == tmp_path


def test_shared_disk_without_the_shared_key_signs_with_the_users_own_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache_key: Path
) -> None:
    cfg = CacheConfig(backend="shared-disk", disk_root=tmp_path / "shared")
    with pytest.warns(CacheWarning, match="readable only by you") as caught:
        store = build_cache_backend(cfg)
    assert len(caught) == 1 and "sets PHYS_PIPELINE_CACHE_KEY to the same" in str(caught[0].message)
    assert caught[0].filename == __file__
    assert store.name == "shared-disk"
    store.put(KEY, StageResult(SimpleState({1, 2})))  # a set: pickled, so signed as ever
    assert store.get(KEY).state.payload == {1, 2}
    assert isolated_cache_key.exists()  # the user's own key signed it
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))
    with pytest.warns(CacheWarning):
        other = build_cache_backend(cfg)
    with pytest.warns(CacheWarning, match="does not authenticate"):
        assert other.get(KEY) is None  # another user's entry: a miss, left in place
    assert store.get(KEY).state.payload == {1, 2}


def test_shared_disk_entries_are_readable_by_another_user_with_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache_key: Path
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "shared team secret")
    cfg = CacheConfig(backend="shared-disk", disk_root=tmp_path / "shared")
    build_cache_backend(cfg).put(KEY, StageResult(SimpleState({1, 2})))  # a set: pickled
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-user"))
    assert build_cache_backend(cfg).get(KEY).state.payload == {1, 2}
    assert not isolated_cache_key.exists()  # the per-user key file was never needed


def test_importing_the_cache_package_does_not_import_redis() -> None:
    code = "import sys, phys_pipeline.cache; assert 'redis' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_redis_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    with pytest.raises(ImportError, match=re.escape("pip install phys-pipeline[redis]")):
        build_cache_backend(CacheConfig(backend="redis", redis_url="redis://localhost:6379/0"))


def test_config_is_frozen() -> None:
    with pytest.raises(ValueError):
        CacheConfig().backend = "memory"  # type: ignore[misc]


# --- the store protocol ---------------------------------------------------------------------


def test_every_store_satisfies_the_protocol(tmp_path: Path) -> None:
    stores = [MemoryStore(), DiskStore(tmp_path), RedisStore(), TieredStore([MemoryStore()])]
    assert all(isinstance(store, CacheStore) for store in stores)


# --- DagCache -------------------------------------------------------------------------------


class BrokenStore:
    """A store whose every call fails, like a backend with a bug or a dead server."""

    def get(self, key: str) -> StageResult | None:
        raise RuntimeError("store is broken")

    put = contains = delete = clear = get  # type: ignore[assignment]


def result() -> StageResult:
    return StageResult(SimpleState(np.ones(3)), metrics={"e": 1.0})


def test_dag_cache_counts_hits_misses_and_puts(tmp_path: Path) -> None:
    cache = DagCache(DiskStore(tmp_path / "cache"))
    assert cache.get(KEY) is None
    cache.put(KEY, result())
    assert cache.contains(KEY)
    assert cache.get(KEY).metrics == {"e": 1.0}
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["puts"], stats["errors"]) == (1, 1, 1, 0)
    assert stats["hit_rate"] == 0.5 and "DiskStore" in stats["backend"]
    cache.clear()
    assert cache.get(KEY) is None and (cache.hits, cache.misses) == (1, 2)
    cache.reset_stats()
    assert cache.stats()["hits"] == cache.stats()["misses"] == 0


def test_dag_cache_turns_backend_failures_into_warned_misses() -> None:
    cache = DagCache(BrokenStore())
    with pytest.warns(CacheWarning, match="store is broken"):
        assert cache.get(KEY) is None
    with pytest.warns(CacheWarning):
        cache.put(KEY, result())
    with pytest.warns(CacheWarning):
        assert cache.contains(KEY) is False
    with pytest.warns(CacheWarning):
        cache.clear()
    assert (cache.misses, cache.puts, cache.errors) == (1, 0, 4)


def test_strict_dag_cache_raises_cache_error() -> None:
    cache = DagCache(BrokenStore(), strict=True)
    with pytest.raises(CacheError, match=KEY):
        cache.get(KEY)
    with pytest.raises(CacheError):
        cache.put(KEY, result())


def test_dag_cache_refuses_bad_keys_before_the_backend_sees_them() -> None:
    cache = DagCache(BrokenStore())
    with pytest.raises(ValueError, match="invalid cache key"):
        cache.get("../../etc/passwd")


def test_cache_traffic_is_logged_at_debug_level(caplog):
    from phys_pipeline.cache import MemoryStore
    from phys_pipeline.dag_cache import DagCache
    from phys_pipeline.types import SimpleState, StageResult

    cache = DagCache(MemoryStore())
    key = "ab" * 16
    with caplog.at_level("DEBUG", logger="phys_pipeline.cache"):
        cache.get(key)
        cache.put(key, StageResult(state=SimpleState(payload=1.0)))
        cache.get(key)
        cache.delete(key)
    assert [r.getMessage() for r in caplog.records] == [
        f"miss {key}",
        f"store {key}",
        f"hit {key}",
        f"evict {key}",
    ]


def test_plans_and_runs_are_logged_at_debug_level(caplog):
    from dag_stages import diamond

    from phys_pipeline.executor import DagExecutor
    from phys_pipeline.types import SimpleState

    with caplog.at_level("DEBUG", logger="phys_pipeline"):
        DagExecutor().run(SimpleState(payload=None), diamond())
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("phys_pipeline.plan", "plan: 5 nodes, 0 not cacheable") in messages
    assert any(name == "phys_pipeline.run" and "ran 5, hit 0" in text for name, text in messages)
