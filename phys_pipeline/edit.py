"""Deprecated: editing configs is internal now, in ``phys_pipeline._edit`` (users edit through
``LiveSession.update`` and sweeps). This module re-exports the old names, warning once."""

from __future__ import annotations

from ._deprecation import deprecated_function, warn_once
from ._edit import raw_values, replace_config, replace_stage_config, settable_fields

__all__ = ["config_fields", "raw_values", "replace_config", "replace_stage_config"]

config_fields = deprecated_function(
    "phys_pipeline.edit.config_fields", settable_fields, "use phys_pipeline._edit.settable_fields"
)

warn_once(
    "phys_pipeline.edit",
    "import from phys_pipeline._edit (internal: LiveSession.update and sweeps edit configs)",
)
