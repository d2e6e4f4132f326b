"""Optical media as nested config models: a base model and a subclass with more fields, for
tests of configs whose values must survive edits exactly (a subclass held in a base-typed
field must keep its class and fields)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Medium(BaseModel):
    model_config = ConfigDict(frozen=True)
    index: float = 1.0


class Glass(Medium):
    dispersion_fs2_per_mm: float = 36.0
