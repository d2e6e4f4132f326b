"""Deprecated: early cutoff is internal now, in ``phys_pipeline._cutoff``, made by the cache
owner (``DagCache.early_cutoff``). This module re-exports the old name, warning once."""

from __future__ import annotations

from ._cutoff import EarlyCutoff
from ._deprecation import warn_once

__all__ = ["EarlyCutoff"]

warn_once(
    "phys_pipeline.cutoff",
    "early cutoff is internal (phys_pipeline._cutoff); DagExecutor(early_cutoff=...) and "
    "DagCache.early_cutoff are its public face",
)
