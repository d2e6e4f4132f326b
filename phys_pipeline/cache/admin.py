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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .codec import EntryRejected
from .disk import META_MAX_BYTES, DiskStore, EntryUntrusted, entry_parts, open_dirs

__all__ = ["EntryInfo", "Usage", "VerifyReport", "entries", "prune", "usage", "verify"]

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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


def _subdirs(dir_fd: int) -> Iterator[tuple[str, int]]:
    """The real directories in ``dir_fd``, each with a descriptor of its own (closed once the
    caller moves on); symlinks and anything else are skipped, never followed."""
    with os.scandir(dir_fd) as listing:
        names = [item.name for item in listing if item.is_dir(follow_symlinks=False)]
    for name in names:
        try:
            fd = open_dirs((name,), dir_fd)
        except (OSError, EntryUntrusted):  # removed or swapped for a link meanwhile
            continue
        try:
            yield name, fd
        finally:
            os.close(fd)


def _claims(entry_fd: int) -> tuple[str, str]:
    """The node and stage an entry's metadata names, read as plain JSON, never trusted."""
    try:
        fd = os.open("meta.json", _READ_FLAGS, dir_fd=entry_fd)
    except OSError:
        return "?", "?"
    try:
        with os.fdopen(fd, "rb") as fh:
            text = fh.read(META_MAX_BYTES + 1)
        provenance = json.loads(text)["body"]["provenance"] if len(text) <= META_MAX_BYTES else {}
    except (OSError, ValueError, KeyError, TypeError):
        return "?", "?"
    if not isinstance(provenance, dict):
        return "?", "?"
    node, stage = provenance.get("node_id"), provenance.get("stage")
    return (node if isinstance(node, str) else "?", stage if isinstance(stage, str) else "?")


def _entry_bytes(entry_fd: int) -> int:
    with os.scandir(entry_fd) as files:
        return sum(
            f.stat(follow_symlinks=False).st_size for f in files if f.is_file(follow_symlinks=False)
        )


def entries(store: DiskStore, *, claims: bool = True) -> Iterator[EntryInfo]:
    """Every entry directory of ``store``, in no particular order, walked by directory
    descriptors (nothing below the root is followed). ``claims=False`` skips reading
    metadata (node and stage are then "?"), which is all eviction needs."""
    layout = entry_parts("0" * 32)[0]
    try:
        top = open_dirs((str(store.root), layout))
    except (OSError, EntryUntrusted):
        return
    try:
        for shard, shard_fd in _subdirs(top):
            for sub, sub_fd in _subdirs(shard_fd):
                for key, entry_fd in _subdirs(sub_fd):
                    try:
                        used = os.fstat(entry_fd).st_mtime
                        nbytes = _entry_bytes(entry_fd)
                    except OSError:
                        continue
                    node, stage = _claims(entry_fd) if claims else ("?", "?")
                    path = store.root / layout / shard / sub / key
                    yield EntryInfo(key, path, nbytes, used, node, stage)
    finally:
        os.close(top)


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
