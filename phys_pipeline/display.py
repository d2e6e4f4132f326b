"""Rich display of core objects (a plan as SVG, a run as HTML) without the core importing the
view layer: views register how to draw a type here, the way anywidget attaches a view to a
model from outside. The first time an object is displayed, the view plugins installed under the
``phys_pipeline.views`` entry-point group are loaded (this package installs its own ``views``),
so a notebook shows plans and results without importing any view module by hand."""

from __future__ import annotations

import importlib.metadata
import threading
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["SVG", "HTML", "draw", "register"]

SVG, HTML = "image/svg+xml", "text/html"
PLUGIN_GROUP = "phys_pipeline.views"

_drawers: dict[tuple[type, str], Callable[[Any], str]] = {}
_plugins_loaded = False
_lock = threading.Lock()


def register(cls: type, mimetype: str, drawer: Callable[[Any], str]) -> None:
    """Draw instances of ``cls`` (and its subclasses) as ``mimetype`` with ``drawer``."""
    _drawers[(cls, mimetype)] = drawer


def draw(obj: Any, mimetype: str) -> str | None:
    """``obj`` drawn as ``mimetype`` by the view registered for its type, or None (notebooks
    then show its plain repr)."""
    _load_plugins()
    for cls in type(obj).__mro__:
        drawer = _drawers.get((cls, mimetype))
        if drawer is not None:
            return drawer(obj)
    return None


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _lock:
        if _plugins_loaded:
            return
        for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
            try:
                entry.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break display
                warnings.warn(
                    f"view plugin {entry.name!r} ({entry.value}) failed to load: "
                    f"{type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _plugins_loaded = True
