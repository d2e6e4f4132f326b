"""TieredStore: read through fast tiers to slow ones, backfilling the fast ones on a hit."""

from __future__ import annotations

from collections.abc import Sequence

from ..types import StageResult
from .base import CacheStore

__all__ = ["TieredStore"]


class TieredStore:
    """Stores in order of speed, e.g. ``TieredStore([MemoryStore(), DiskCache(root)])``.

    ``get`` asks each tier in turn and copies a hit into every faster tier; ``put`` writes to
    all tiers; ``contains`` is true if any tier has the key.
    """

    def __init__(self, tiers: Sequence[CacheStore]) -> None:
        if not tiers:
            raise ValueError("TieredStore needs at least one tier")
        self.tiers = list(tiers)

    @property
    def strict(self) -> bool:
        """Strict if any tier is: that tier's CacheErrors must reach the caller."""
        return any(getattr(tier, "strict", False) for tier in self.tiers)

    def get(self, key: str) -> StageResult | None:
        for depth, tier in enumerate(self.tiers):
            result = tier.get(key)
            if result is not None:
                for faster in self.tiers[:depth]:
                    faster.put(key, result)
                return result
        return None

    def put(self, key: str, result: StageResult) -> None:
        for tier in self.tiers:
            tier.put(key, result)

    def contains(self, key: str) -> bool:
        return any(tier.contains(key) for tier in self.tiers)

    def delete(self, key: str) -> None:
        for tier in self.tiers:
            tier.delete(key)

    def clear(self) -> None:
        for tier in self.tiers:
            tier.clear()

    def __repr__(self) -> str:
        return f"TieredStore([{', '.join(map(repr, self.tiers))}])"
