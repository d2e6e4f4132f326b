"""Looking after a disk cache: what is in it, how big it is and who filled it, which entries
authenticate, and removing entries by age, by budget or by node (the ``python -m
phys_pipeline.cache`` command line is a thin layer over these functions).

Listing reads each entry's ``meta.json`` (bounded, never unpickled) for the node and stage that
wrote it: that text is what the entry *claims*, shown for orientation; only ``verify`` checks
signatures. Removing an entry renames it out of the readers' way first (``DiskStore.delete``),
so a reader that has an entry open finishes reading it, and one that comes later misses.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import CacheWarning
from .disk import _LAYOUT, DiskStore

__all__ = ["EntryInfo", "Usage", "VerifyReport", "entries", "prune", "usage", "verify"]

_META_CAP = 1 << 20  # a meta.json larger than this is not read for a listing


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One entry as the directory shows it: ``used`` is the last use recorded (seconds since
    the epoch), ``node``/``stage`` what its metadata claims ("?" when it does not say)."""

    key: str
    path: Path
    nbytes: int
    used: float
    node: str
    stage: str


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


def _subdirs(path: str) -> Iterator[os.DirEntry[str]]:
    """The real directories in ``path`` (symlinks are never followed, only skipped)."""
    try:
        with os.scandir(path) as listing:
            yield from (e for e in listing if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return


def _claims(meta: str) -> tuple[str, str]:
    """The node and stage an entry's metadata names, read as plain JSON, never trusted."""
    try:
        fd = os.open(meta, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return "?", "?"
    try:
        with os.fdopen(fd, "rb") as fh:
            text = fh.read(_META_CAP + 1)
        provenance = json.loads(text)["body"]["provenance"] if len(text) <= _META_CAP else {}
    except (OSError, ValueError, KeyError, TypeError):
        return "?", "?"
    if not isinstance(provenance, dict):
        return "?", "?"
    node, stage = provenance.get("node_id"), provenance.get("stage")
    return (node if isinstance(node, str) else "?", stage if isinstance(stage, str) else "?")


def entries(store: DiskStore, *, claims: bool = True) -> Iterator[EntryInfo]:
    """Every entry directory of ``store``, in no particular order. ``claims=False`` skips
    reading metadata (node and stage are then "?"), which is all eviction needs."""
    for shard in _subdirs(str(store.root / _LAYOUT)):
        for sub in _subdirs(shard.path):
            for entry in _subdirs(sub.path):
                try:
                    used = entry.stat(follow_symlinks=False).st_mtime
                    with os.scandir(entry.path) as files:
                        nbytes = sum(
                            f.stat(follow_symlinks=False).st_size
                            for f in files
                            if f.is_file(follow_symlinks=False)
                        )
                except OSError:  # removed meanwhile
                    continue
                node, stage = (
                    _claims(os.path.join(entry.path, "meta.json")) if claims else ("?", "?")
                )
                yield EntryInfo(entry.name, Path(entry.path), nbytes, used, node, stage)


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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ok = store.get(info.key) is not None
        if not ok:
            reasons = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
            bad[info.key] = reasons[0] if reasons else "unreadable"
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
    for info in entries(store, claims=bool(doomed_nodes)):
        too_old = older_than_s is not None and now - info.used > older_than_s
        (removed if too_old or info.node in doomed_nodes else kept).append(info)
    if max_bytes is not None:
        total = sum(info.nbytes for info in kept)
        for info in sorted(kept, key=lambda i: i.used):
            if total <= max_bytes:
                break
            removed.append(info)
            total -= info.nbytes
    for info in removed:
        store.delete(info.key)
    return removed
