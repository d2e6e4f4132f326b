"""Deprecated: the static pictures moved to ``phys_pipeline.views`` (layout, svg, html, plots).
This module re-exports them, with a DeprecationWarning when first imported."""

from __future__ import annotations

import warnings

from . import views
from .views import *  # noqa: F403 - the old names, re-exported as they were

__all__ = views.__all__

warnings.warn(
    "phys_pipeline.render is deprecated: import from phys_pipeline.views",
    DeprecationWarning,
    stacklevel=2,
)
