"""ArtifactRecorder: turns lazy artifacts into files plus a JSON manifest."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: only recorders within one process are kept apart
    fcntl = None  # type: ignore[assignment]

import numpy as np

from ._v2 import served_from
from ._v2.record import FigureApi

__all__ = [
    "ArtifactRecorder",
    "atomic_write",
    "resolve_artifact",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._=\-\[\]]+")
_NOT_FLAT = re.compile(r"[^A-Za-z0-9=\-\[\]]+")


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("._") or "_"


def resolve_artifact(artifact: Any) -> Any:
    """The artifact's value: call it if it is lazy (a zero-argument callable)."""
    return artifact() if callable(artifact) else artifact


# one lock for every recorder in the process: two recorders may share a root
_MANIFEST_THREAD_LOCK = threading.Lock()


@contextmanager
def _manifest_lock(root: Path) -> Iterator[None]:
    """Hold the manifest of ``root`` exclusively, against other threads (the module lock) and
    other processes (``flock`` on ``root/.manifest.lock``), for a read-modify-write."""
    with _MANIFEST_THREAD_LOCK:
        if fcntl is None:
            yield
            return
        with open(root / ".manifest.lock", "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` at once: a reader sees the old file or the new one, never a
    part (a temporary file beside it is renamed over it). Run histories are saved this way too."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _link_latest(path: Path, latest: Path) -> None:
    """Make ``latest`` the same file as ``path`` at once (a hard link renamed over it; a copy
    where the filesystem has no hard links)."""
    tmp = latest.parent / f".{latest.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.link(path, tmp)
    except OSError:
        atomic_write(latest, path.read_bytes())
        return
    try:
        os.replace(tmp, latest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ArtifactRecorder(FigureApi):
    """Saves artifacts under ``root/<run id>/<stage>/``: figures as PNG and SVG, arrays as .npy,
    bytes as .bin, text as .txt, other JSON-able values as .json. ``root/manifest.json`` lists
    every file with its stage, key, run id and config hash; recorders in several threads or
    processes may share a root without losing manifest entries. ``root/<stage>_<key>.<ext>``
    (dots made underscores, as phys-pipeline 2.0.0 named its files) is the latest recording of
    each artifact: a hard link to its file in the run's folder, so it costs no space."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> list[dict[str, Any]]:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return []

    def record(
        self, artifact: Any, *, stage: str, key: str, run_id: str, config_hash: str | None = None
    ) -> list[Path]:
        """Produce ``artifact`` (calling it if lazy), save it and add it to the manifest."""
        value = resolve_artifact(artifact)
        folder = self.root / _safe(run_id) / _safe(stage)
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / _safe(key)
        paths = self._save(value, base)
        flat = _NOT_FLAT.sub("_", f"{stage}.{key}")
        for path in paths:
            _link_latest(path, self.root / f"{flat}{path.suffix}")
        entries = [
            {
                "stage": stage,
                "key": key,
                "run_id": run_id,
                "config_hash": config_hash,
                "path": str(p.relative_to(self.root)),
                "kind": p.suffix.lstrip("."),
                "time": time.time(),
            }
            for p in paths
        ]
        with _manifest_lock(self.root):
            manifest = self.manifest() + entries
            atomic_write(self.manifest_path, json.dumps(manifest, indent=1).encode())
        return paths

    @staticmethod
    def _save(value: Any, base: Path) -> list[Path]:
        if hasattr(value, "savefig"):
            paths = [_with_ext(base, ".png"), _with_ext(base, ".svg")]
            for path in paths:
                value.savefig(path, bbox_inches="tight")
            _close_figure(value)
            return paths
        if isinstance(value, np.ndarray):
            path = _with_ext(base, ".npy")
            np.save(path, value, allow_pickle=False)
            return [path]
        if isinstance(value, bytes | bytearray | memoryview):
            path = _with_ext(base, ".bin")
            atomic_write(path, bytes(value))
            return [path]
        if isinstance(value, str):
            path = _with_ext(base, ".txt")
            atomic_write(path, value.encode())
            return [path]
        try:
            data = json.dumps(value, indent=1, default=_json_default).encode()
        except TypeError as exc:
            raise TypeError(
                f"artifact {base.name!r}: cannot save a {type(value).__name__}; return a "
                "matplotlib figure, an ndarray, bytes, str or JSON-able data"
            ) from exc
        path = _with_ext(base, ".json")
        atomic_write(path, data)
        return [path]


def _with_ext(base: Path, ext: str) -> Path:
    # not Path.with_suffix: artifact keys such as "fit.plot" contain dots
    return base.parent / f"{base.name}{ext}"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _close_figure(fig: Any) -> None:
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # noqa: BLE001 - closing is best effort; the files are written
        pass


__getattr__ = served_from(__name__, "record")
