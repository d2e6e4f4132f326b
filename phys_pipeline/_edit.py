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
    """A validated copy of ``cfg`` with ``changes``; errors name ``where``, field and value.

    Only the changed fields are validated (``validate_assignment`` on a copy), with the
    model-level checks after each: validating the unchanged values again would apply a
    converting validator (degrees to radians, say) a second time and silently change them.
    Field names are used, never aliases."""
    fields = settable_fields(cfg)
    for name in changes:
        if name not in fields:
            raise ConfigError(
                where,
                name,
                changes[name],
                f"{type(cfg).__name__} has no such field; fields: {', '.join(sorted(fields))}",
            )
    validator = getattr(type(cfg), "__pydantic_validator__", None)
    if validator is not None and hasattr(type(cfg), "model_copy"):
        return _assigned(cfg, validator, changes, where)
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as exc:
        name = next(iter(changes), "?")
        raise ConfigError(where, name, changes.get(name), str(exc)) from exc


def _assigned(cfg: Any, validator: Any, changes: Mapping[str, Any], where: str) -> Any:
    """``cfg`` with each change validated as an assignment. A cross-field check that only an
    intermediate step breaks (``low`` moved above the old ``high`` before ``high`` moves too)
    defers that change to a second pass, when the others are in place."""
    edited = cfg.model_copy()
    deferred = []
    for name, value in changes.items():
        try:
            validator.validate_assignment(edited, name, value)
        except ValidationError as exc:
            if any(error["loc"] for error in exc.errors()):  # the value itself is refused
                raise _config_error(exc, name, value, where) from exc
            deferred.append((name, value))
    for name, value in deferred:
        try:
            validator.validate_assignment(edited, name, value)
        except ValidationError as exc:
            raise _config_error(exc, name, value, where) from exc
    return edited


def _config_error(exc: ValidationError, name: str, value: Any, where: str) -> ConfigError:
    """The first error, named by its field path, or by the edited field when the error is the
    model's own (a cross-field check has no path)."""
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    if path and path != name:
        return ConfigError(where, path, first.get("input"), first["msg"])
    return ConfigError(where, name, value, first["msg"])


def replace_stage_config(stage: Any, cfg: Any) -> Any:
    """A shallow copy of ``stage`` holding ``cfg`` (works for dataclass stages too)."""
    clone = copy.copy(stage)
    try:
        clone.cfg = cfg
    except AttributeError:  # frozen dataclass stage
        object.__setattr__(clone, "cfg", cfg)
    return clone
