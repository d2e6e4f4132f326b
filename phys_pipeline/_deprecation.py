"""Deprecated names: each warns once per process (a DeprecationWarning pointing at the caller)
and keeps working, so code written against an older spelling runs unchanged."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["deprecated_function", "module_aliases", "warn_once"]

_given: set[str] = set()
_F = TypeVar("_F", bound=Callable[..., Any])


def warn_once(old: str, instead: str, stacklevel: int = 2) -> None:
    """Say, the first time only, that ``old`` is deprecated and what to use ``instead``.
    ``stacklevel`` counts from the caller of this function, as ``warnings.warn`` does."""
    if old in _given:
        return
    _given.add(old)
    warnings.warn(f"{old} is deprecated: {instead}", DeprecationWarning, stacklevel=stacklevel + 1)


def deprecated_function(old: str, new: _F, instead: str) -> _F:
    """``new`` under its old name ``old``, warning once when first called."""

    @functools.wraps(new)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warn_once(old, instead, stacklevel=2)
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old.rpartition(".")[2]
    return alias  # type: ignore[return-value]


def module_aliases(
    module: str, aliases: dict[str, tuple[Callable[[], Any], str]]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving old names: ``aliases`` maps each old name to a
    function returning the object it now stands for, and the advice the warning gives."""

    def __getattr__(name: str) -> Any:
        if name not in aliases:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, instead = aliases[name]
        warn_once(f"{module}.{name}", instead, stacklevel=2)
        return target()

    return __getattr__
