"""Tests never touch the developer's home: the session runs with a throwaway one (conftest.py
at the top of the repository), so a cache signing key is never written to ~/.config."""

from __future__ import annotations

import os
from pathlib import Path

from phys_pipeline.cache import DiskStore
from phys_pipeline.types import SimpleState, StageResult


def test_the_session_home_is_a_throwaway_directory():
    home = Path.home()
    assert home.name.startswith("phys-pipeline-tests-home-")
    assert os.environ["XDG_CONFIG_HOME"].startswith(str(home))
    assert "PHYS_PIPELINE_CACHE_KEY" not in os.environ


def test_a_disk_cache_keeps_its_signing_key_under_the_throwaway_home(tmp_path):
    cache = DiskStore(tmp_path / "cache")
    cache.put("ab" * 16, StageResult(state=SimpleState(payload=1.0)))
    key_file = Path(os.environ["XDG_CONFIG_HOME"]) / "phys-pipeline" / "cache.key"
    assert key_file.is_file()
    assert key_file.is_relative_to(Path.home())
