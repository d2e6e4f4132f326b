"""Units of config fields, for editors and plot labels.

A unit is declared beside a field, never inside its value, so declaring one changes no cache
key: ``Field(0.5, json_schema_extra={"unit": "m"})`` or ``Annotated[float, Unit("m")]`` on a
pydantic config, ``field(metadata={"unit": "m"})`` on a dataclass. A field holding a pint
Quantity carries its own units (pint itself is never imported here).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

__all__ = ["Unit", "field_unit"]


@dataclass(frozen=True)
class Unit:
    """A field's unit in its annotation: ``length: Annotated[float, Unit("m")] = 1.0``."""

    symbol: str


def field_unit(config: Any, name: str) -> str | None:
    """The unit of field ``name`` of a pydantic model or dataclass (class or instance): its
    ``Unit`` marker, else its declared ``"unit"``, else the short units of the pint Quantity it
    holds (an instance's value, a class's default); None when it has none. Raises KeyError
    for a field the config does not have."""
    cls = config if isinstance(config, type) else type(config)
    model_fields = getattr(cls, "model_fields", None)
    if model_fields is not None:
        info = model_fields[name]
        markers: list[Any] = list(info.metadata)
        extra = info.json_schema_extra
        declared = extra.get("unit") if isinstance(extra, dict) else None
        default = info.default
    elif dataclasses.is_dataclass(cls):
        found = {f.name: f for f in dataclasses.fields(cls)}[name]
        hint = typing.get_type_hints(cls, include_extras=True).get(name, found.type)
        markers = list(getattr(hint, "__metadata__", ()))
        declared = found.metadata.get("unit")
        default = found.default
    else:
        raise TypeError(f"field_unit needs a pydantic model or a dataclass, not {cls!r}")
    unit = next((m.symbol for m in markers if isinstance(m, Unit)), declared)
    if unit is not None:
        return str(unit)
    value = default if config is cls else getattr(config, name, default)
    units = getattr(value, "units", None)
    if units is not None and type(value).__module__.partition(".")[0] == "pint":
        return f"{units:~P}"
    return None
