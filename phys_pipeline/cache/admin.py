"""Looking after a disk cache: what is in it, how big it is and who filled it, which entries
authenticate, and removing entries by age, by budget or by node (the ``python -m
phys_pipeline.cache`` command line is a thin layer over these functions).

Listing reads each entry's ``meta.json`` (bounded, never unpickled) for the node and stage that
wrote it: that text is what the entry *claims*, shown for orientation; only ``verify`` checks
signatures. Removing an entry renames it out of the readers' way first (``DiskStore.delete``),
so a reader that has an entry open finishes reading it, and one that comes later misses.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .budget import least_recently_used
from .codec import EntryRejected
from .disk import DiskStore, EntryInfo

__all__ = ["EntryInfo", "Usage", "VerifyReport", "entries", "prune", "usage", "verify"]


@dataclass(frozen=True, slots=True)
class Usage:
    """How many entries and bytes one node, stage or the whole cache holds."""

    name: str
    entries: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """``bad`` maps each entry that does not authenticate to why; ``removed`` lists those
    deleted (only when asked)."""

    checked: int
    bad: dict[str, str]
    removed: tuple[str, ...]


def entries(store: DiskStore, *, claims: bool = True) -> Iterator[EntryInfo]:
    """Every entry of ``store`` (see ``DiskStore.entries``)."""
    return store.entries(claims=claims)


def usage(store: DiskStore, by: str = "node") -> list[Usage]:
    """Entries and bytes per node (``by="node"``), per stage (``"stage"``) or in all
    (``"total"``), largest first."""
    if by not in ("node", "stage", "total"):
        raise ValueError(f"usage by {by!r}: choose node, stage or total")
    totals: dict[str, list[int]] = {}
    for info in entries(store, claims=by != "total"):
        name = "all" if by == "total" else getattr(info, by)
        count = totals.setdefault(name, [0, 0])
        count[0] += 1
        count[1] += info.nbytes
    rows = [Usage(name, n, size) for name, (n, size) in totals.items()]
    return sorted(rows, key=lambda row: (-row.nbytes, row.name))


def verify(store: DiskStore, *, remove: bool = False) -> VerifyReport:
    """Read every entry as a run would (signature, digests, decoding) and say which do not
    authenticate and why. Nothing is deleted unless ``remove=True``."""
    bad: dict[str, str] = {}
    checked = 0
    for info in entries(store, claims=False):
        checked += 1
        try:
            if store.load(info.key) is None:
                bad[info.key] = "gone while checked"
        except EntryRejected as exc:
            bad[info.key] = str(exc)
    removed = tuple(bad) if remove else ()
    for key in removed:
        store.delete(key)
    return VerifyReport(checked, bad, removed)


def prune(
    store: DiskStore,
    *,
    older_than_s: float | None = None,
    max_bytes: int | None = None,
    nodes: Iterable[str] = (),
) -> list[EntryInfo]:
    """Remove entries last used more than ``older_than_s`` ago, entries of the given nodes,
    and then the least recently used until at most ``max_bytes`` remain; returns what was
    removed."""
    now = time.time()
    doomed_nodes = set(nodes)
    kept: list[EntryInfo] = []
    removed: list[EntryInfo] = []
    for info in store.entries(claims=bool(doomed_nodes)):
        too_old = older_than_s is not None and now - info.used > older_than_s
        (removed if too_old or info.node in doomed_nodes else kept).append(info)
    if max_bytes is not None:
        removed += least_recently_used(kept, max_bytes)
    for info in removed:
        store.delete(info.key)
    return removed
