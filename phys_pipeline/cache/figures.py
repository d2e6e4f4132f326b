"""Rendered figures kept beside a node's cache entry, as data.

Lazy artifacts (callables drawing matplotlib figures) are never cached: a result loaded from a
cache comes back without them. A view that has drawn them can keep the rendered bytes (PNG,
SVG) in an entry of their own, so that after a restart it shows them without rerunning. That
entry is an ordinary signed entry under ``figures_key(node_key)``, whose state holds only data:
the figures' names and MIME types as JSON and their bytes as arrays, never a pickle.
"""

from __future__ import annotations

from collections.abc import Mapping

import xxhash

from ..types import SimpleState, StageResult

__all__ = ["FIGURE_MIME_TYPES", "Figures", "figures_entry", "figures_from_entry", "figures_key"]

# what a view can show from bytes alone, as an <img>: no markup or script that could run
FIGURE_MIME_TYPES = frozenset({"image/png", "image/svg+xml"})

Figures = dict[str, tuple[str, bytes]]  # name -> (MIME type, rendered bytes)


def figures_key(node_key: str) -> str:
    """The key of ``node_key``'s figures: the node's key with a ``:figures`` suffix, hashed
    back into a hex digest (stores take hex keys only), so it never names a node's result."""
    return xxhash.xxh3_128_hexdigest(f"{node_key}:figures".encode())


def figures_entry(
    node_key: str, figures: Mapping[str, tuple[str, bytes]], node_id: str
) -> StageResult:
    """The entry that keeps ``figures`` for ``node_key``; ``node_id`` is what cache listings
    show it under (``python -m phys_pipeline.cache du``), beside the node's own entries.
    ValueError for a figure that is not (a MIME type of ``FIGURE_MIME_TYPES``, bytes)."""
    rows = []
    for name, (mime, data) in figures.items():
        if type(name) is not str or mime not in FIGURE_MIME_TYPES or type(data) is not bytes:
            raise ValueError(
                f"figure {name!r}: expected (a MIME type of {sorted(FIGURE_MIME_TYPES)}, bytes), "
                f"got ({mime!r}, {type(data).__name__})"
            )
        rows.append([name, mime, data])
    provenance = {"node_id": node_id, "stage": "figures", "figures_of": node_key}
    return StageResult(state=SimpleState({"figures": rows}), provenance=provenance)


def figures_from_entry(node_key: str, entry: StageResult) -> Figures | None:
    """The figures an entry read under ``figures_key(node_key)`` holds; None unless it has
    exactly the shape ``figures_entry`` gives, for that very node key."""
    state = entry.state
    if type(state) is not SimpleState or entry.provenance.get("figures_of") != node_key:
        return None
    payload = state.payload
    rows = payload.get("figures") if type(payload) is dict else None
    if type(rows) is not list:
        return None
    figures: Figures = {}
    for row in rows:
        if type(row) is not list or len(row) != 3:
            return None
        name, mime, data = row
        if type(name) is not str or mime not in FIGURE_MIME_TYPES or type(data) is not bytes:
            return None
        figures[name] = (mime, data)
    return figures
