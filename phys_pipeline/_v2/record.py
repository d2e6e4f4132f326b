"""2.0.0's recorder API: ``record_figure`` and ``record_blob`` on ``ArtifactRecorder`` (saved
by our ``record``, so they land in its manifest), and a JSON-lines log."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from .._deprecation import warn_once
from ..errors import PhysPipelineError

# served from phys_pipeline.record; FigureApi is ArtifactRecorder's base
__all__ = ["AxesLike", "FigureLike", "JSONLRecorder", "is_axes", "is_figure"]

_STANDALONE = "standalone"  # the run id of artifacts saved outside a run


class FigureLike(Protocol):
    """What can be saved as a picture: a matplotlib Figure, or anything with ``savefig``."""

    def savefig(self, *args: Any, **kwargs: Any) -> Any: ...


class AxesLike(Protocol):
    """Axes: what a plot is drawn on, saved as the figure holding it."""

    @property
    def figure(self) -> FigureLike: ...


def is_figure(value: Any) -> TypeGuard[FigureLike]:
    return callable(getattr(value, "savefig", None))


def is_axes(value: Any) -> TypeGuard[AxesLike]:
    return is_figure(getattr(value, "figure", None))


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

    def record_figure(self, key: str, fig_factory: Callable[[], FigureLike | AxesLike]) -> str:
        """Save the figure (or the figure of the Axes) ``fig_factory`` returns; its PNG path."""
        warn_once("ArtifactRecorder.record_figure", "use ArtifactRecorder.record(figure, ...)")
        made = fig_factory()
        if is_figure(made):
            figure: FigureLike = made
        elif is_axes(made):
            figure = made.figure
        else:
            raise ArtifactError(key, made, "fig_factory must return a Figure or Axes-like object")
        paths = self.record(figure, stage="figures", key=key, run_id=_STANDALONE)
        return os.fspath(next(p for p in paths if p.suffix == ".png"))

    def record_blob(self, key: str, data: Any) -> str:
        """Save ``data`` (as JSON, or an array as ``.npy``, bytes as ``.bin``); its path."""
        warn_once("ArtifactRecorder.record_blob", "use ArtifactRecorder.record(data, ...)")
        return os.fspath(self.record(data, stage="blobs", key=key, run_id=_STANDALONE)[0])


DEPRECATED = {
    "JSONLRecorder": "write rows with json.dumps yourself; runs keep theirs in provenance",
    "FigureLike": "ArtifactRecorder.record takes any object with savefig",
    "AxesLike": "pass the figure (ax.figure) to ArtifactRecorder.record",
    "is_figure": "test hasattr(value, 'savefig')",
    "is_axes": "test hasattr(value, 'figure')",
}
