"""A user's project on disk, run the way a kernel restart runs it: each run a fresh ``python``
process with the project on its path, printing one JSON report as its last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SECRET = "user-project-tests-signing-key-0"  # 32 characters


def run_fresh_process(
    script: Path, *, paths: Sequence[str], cwd: Path, **env: str | None
) -> dict[str, Any]:
    """Run ``script`` in a new interpreter with ``paths`` first on ``PYTHONPATH``; ``env``
    adds variables (None removes one). Bytecode is never written (an edit of the same size in
    the same second would run a stale .pyc), the hash seed is fixed unless ``env`` sets it,
    and the cache signing key is the tests' own."""
    inherited = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, *inherited]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PHYS_PIPELINE_CACHE_KEY": SECRET,
        **env,
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env={name: value for name, value in environ.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
