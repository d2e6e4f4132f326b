"""2.0.0's recorder API: ``record_figure`` and ``record_blob`` on ``ArtifactRecorder`` (saved
by our ``record``, so they land in its manifest), and a JSON-lines log."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._deprecation import warn_once
from ..errors import PhysPipelineError

__all__ = ["JSONLRecorder"]  # served from phys_pipeline.record; FigureApi is a base

_STANDALONE = "standalone"  # the run id of artifacts saved outside a run


class ArtifactError(PhysPipelineError, TypeError):
    """An artifact cannot be saved as asked; names its key and what it was."""

    def __init__(self, key: str, got: Any, expected: str) -> None:
        self.key, self.got = key, got
        super().__init__(f"artifact {key!r}: got {type(got).__name__} ({got!r:.80}); {expected}")


@dataclass
class JSONLRecorder:
    """Appends rows to ``path`` as JSON lines (values JSON cannot hold as their ``str``)."""

    path: Path

    def write(self, row: Mapping[str, Any]) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(row), ensure_ascii=False, default=str) + "\n")


class FigureApi:
    """``record_figure`` / ``record_blob`` for a recorder with our ``record`` method."""

    record: Callable[..., list[Path]]

    def record_figure(self, key: str, fig_factory: Callable[[], Any]) -> str:
        """Save the figure (or the figure of the Axes) ``fig_factory`` returns; its PNG path."""
        warn_once("ArtifactRecorder.record_figure", "use ArtifactRecorder.record(figure, ...)")
        made = fig_factory()
        figure = made if hasattr(made, "savefig") else getattr(made, "figure", None)
        if not callable(getattr(figure, "savefig", None)):
            raise ArtifactError(key, made, "fig_factory must return a Figure or Axes-like object")
        paths = self.record(figure, stage="figures", key=key, run_id=_STANDALONE)
        return os.fspath(next(p for p in paths if p.suffix == ".png"))

    def record_blob(self, key: str, data: Any) -> str:
        """Save ``data`` (as JSON, or an array as ``.npy``, bytes as ``.bin``); its path."""
        warn_once("ArtifactRecorder.record_blob", "use ArtifactRecorder.record(data, ...)")
        return os.fspath(self.record(data, stage="blobs", key=key, run_id=_STANDALONE)[0])


DEPRECATED = {
    "JSONLRecorder": "write rows with json.dumps yourself; runs keep theirs in provenance",
}
