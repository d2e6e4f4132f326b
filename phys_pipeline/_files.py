"""Files by content: what a ``pathlib.Path`` in a config or state stands for in a cache key.

A file digests its bytes, streamed in chunks (a 1 GB file is never loaded whole); a directory
its tree (sorted relative names, each file's content; ``__pycache__`` and
``.ipynb_checkpoints`` left out); a missing path a 'missing' marker.
Symlinks are followed: a link digests its target's content, so retargeting a link or editing
its target both change the digest. Sockets, FIFOs and devices digest their kind only (reading a
FIFO would block).

A file's digest is memoised on its resolved path and stat signature (device, inode, size,
mtime, ctime), so an unchanged large file is not re-read at every plan. A stat taken within
:data:`RACY_WINDOW_NS` of its mtime or ctime is not trusted (git's "racy git" rule): a file
rewritten with the same size within the filesystem's timestamp granularity keeps its times.
"""

from __future__ import annotations

import io
import os
import stat
import time
from collections.abc import Iterator

import xxhash

__all__ = [
    "CHUNK_BYTES",
    "RACY_WINDOW_NS",
    "file_digest",
]

CHUNK_BYTES = 1 << 20
RACY_WINDOW_NS = 2_000_000_000  # coarser than any filesystem's timestamp granularity

_Signature = tuple[int, int, int, int, int]
# resolved path -> (stat signature, digest) of files whose stat was not racy when hashed
_MEMO: dict[str, tuple[_Signature, bytes]] = {}


def file_digest(path: str | os.PathLike[str]) -> bytes:
    """The 16-byte digest of what ``path`` holds now: a file's bytes, a directory's tree or a
    'missing' marker. Raises ``OSError`` for a file that exists but cannot be read."""
    return _digest(os.fspath(path), frozenset())


def _digest(path: str, ancestors: frozenset[tuple[int, int]]) -> bytes:
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return xxhash.xxh3_128_digest(b"missing")
    if stat.S_ISDIR(info.st_mode):
        identity = (info.st_dev, info.st_ino)
        if identity in ancestors:  # a symlink back up the tree: walking it would never end
            return xxhash.xxh3_128_digest(b"loop")
        return _tree_digest(path, ancestors | {identity})
    if not stat.S_ISREG(info.st_mode):
        return xxhash.xxh3_128_digest(b"special\0%d" % stat.S_IFMT(info.st_mode))
    resolved = os.path.realpath(path)
    known = _MEMO.get(resolved)
    if known is not None and known[0] == _signature(info):
        return known[1]
    return _content_digest(path, resolved)


def _signature(info: os.stat_result) -> _Signature:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _content_digest(path: str, resolved: str) -> bytes:
    """Hash the file's bytes; memoise the digest only if the file's stat did not change while
    it was read and is old enough that a same-size rewrite would have changed it."""
    h = xxhash.xxh3_128(b"file\0")
    with open(path, "rb") as handle:
        before = _signature(os.fstat(handle.fileno()))
        for chunk in _read_chunks(handle):
            h.update(chunk)
        after = _signature(os.fstat(handle.fileno()))
    digest = h.digest()
    if before == after and time.time_ns() - max(after[3], after[4]) >= RACY_WINDOW_NS:
        _MEMO[resolved] = (after, digest)
    return digest


def _read_chunks(handle: io.BufferedReader) -> Iterator[memoryview]:
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    while n := handle.readinto(buffer):
        yield view[:n]


# written by tools as a side effect of running, never data a result depends on
_GENERATED = frozenset({"__pycache__", ".ipynb_checkpoints"})


def _tree_digest(path: str, ancestors: frozenset[tuple[int, int]]) -> bytes:
    """Each entry's name (sorted) and digest; subdirectories fold in their own trees."""
    h = xxhash.xxh3_128(b"dir\0")
    for name in sorted(os.listdir(path)):
        if name in _GENERATED:
            continue
        encoded = name.encode("utf-8", "surrogateescape")
        h.update(len(encoded).to_bytes(8, "little") + encoded)
        h.update(_digest(os.path.join(path, name), ancestors))
    return h.digest()
