"""The names phys-pipeline 2.0.0 offered, so that code written for it runs unchanged.

Each module here holds what one 2.0.0 module offered (``_v2.dag``: what ``phys_pipeline.dag``
had), as thin layers over our own design. Our modules serve them lazily, with one line,
``__getattr__ = served_from(__name__, "dag")``, so nothing here loads until old code asks for
it and our modules read as if 2.0.0 never was; the one exception is ``build_cache_backend``,
whose disk and Redis stores are ``_v2``'s, so that 2.0.0 code can use what it builds. A name a
module lists in ``DEPRECATED`` warns once, saying what to use instead; the others are ours too
and stay quiet.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .._deprecation import warn_once

__all__ = ["served_from"]


def served_from(module: str, source: str) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``module`` serving the names of ``phys_pipeline._v2.<source>``
    (its ``__all__``); dunder lookups (``__path__``, ...) never load it."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            names = importlib.import_module(f"{__name__}.{source}")
            if name in names.__all__:
                advice = names.DEPRECATED.get(name)
                if advice is not None:
                    warn_once(f"{module}.{name}", advice, stacklevel=2)
                return getattr(names, name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
