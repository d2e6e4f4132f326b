"""Editing configs: a validated copy of a config, and of a stage holding it. Internal: users
edit through ``LiveSession.update`` and sweeps."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .errors import ConfigError

__all__ = [
    "raw_values",
    "replace_config",
    "replace_stage_config",
    "settable_fields",
]


def settable_fields(cfg: Any) -> set[str]:
    """The field names ``cfg`` accepts, so that an edit naming another field fails early."""
    fields = getattr(type(cfg), "model_fields", None)
    if fields is not None:
        return set(fields)
    if dataclasses.is_dataclass(cfg):
        return {f.name for f in dataclasses.fields(cfg)}
    return set(cfg) if isinstance(cfg, Mapping) else set()


def raw_values(cfg: Any) -> dict[str, Any]:
    """A pydantic config's field values as they are, extra fields included: not
    ``model_dump``, which drops ``exclude=True`` fields, applies serializers (one that rounds
    would change a value the user did not edit) and turns a subclass held in a base-typed
    field back into the base class."""
    values = {name: getattr(cfg, name) for name in type(cfg).model_fields}
    values.update(getattr(cfg, "__pydantic_extra__", None) or {})
    return values


def replace_config(cfg: Any, changes: Mapping[str, Any], where: str) -> Any:
    """A validated copy of ``cfg`` with ``changes``; errors name ``where``, field and value."""
    fields = settable_fields(cfg)
    for name in changes:
        if name not in fields:
            raise ConfigError(
                where,
                name,
                changes[name],
                f"{type(cfg).__name__} has no such field; fields: {', '.join(sorted(fields))}",
            )
    if hasattr(type(cfg), "model_validate"):  # pydantic, and stdlib dataclass StageConfigs
        try:
            return type(cfg).model_validate({**raw_values(cfg), **changes})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "?"
            value = changes.get(field, first.get("input"))
            raise ConfigError(where, field, value, first["msg"]) from exc
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as exc:
        name = next(iter(changes), "?")
        raise ConfigError(where, name, changes.get(name), str(exc)) from exc


def replace_stage_config(stage: Any, cfg: Any) -> Any:
    """A shallow copy of ``stage`` holding ``cfg`` (works for dataclass stages too)."""
    clone = copy.copy(stage)
    try:
        clone.cfg = cfg
    except AttributeError:  # frozen dataclass stage
        object.__setattr__(clone, "cfg", cfg)
    return clone
