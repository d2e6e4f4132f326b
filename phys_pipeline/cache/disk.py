"""DiskStore: entries as directories of ``meta.json`` + one ``.npy`` per array + optional
``blob.pkl``, written atomically, so several processes can share one cache directory.

Layout::

    root/v1/ab/cd/<key>/meta.json, a0.npy, a1.npy, ..., blob.pkl
    root/tmp/               writers' scratch directories and entries being deleted

A writer fills a scratch directory under ``root/tmp`` (same filesystem) and renames it into
place; if an entry is already there another writer won and the scratch copy is dropped. Readers
only look under ``root/v1``, so a crashed writer's leftovers are never served; they are swept
after an hour. Every entry is signed (see ``codec``). The signing key file may not live under
the cache's root (see ``signing``).

**What is read is what was verified.** Each entry file is opened once, with ``O_NOFOLLOW`` (no
symlinks) and ``O_NONBLOCK`` (a FIFO cannot hang the reader), and ``fstat`` must show a regular
file, of the size the signed record gives, owned by the current user (any user in a
``shared`` cache) and writable by neither group nor others; anything else is a miss with one
:class:`CacheWarning`, and the entry is left alone (it was not put there by us, so it is not
ours to delete). An array's digest is then checked on the bytes read from that descriptor, or
on a read-only memory map of it (large files of ours), and the array is built on those very
bytes or that very mapping: the path is never opened twice.

**The trust boundary.** A read-only mapping is ``MAP_SHARED``: a later write to the file shows
through it, and ``MAP_PRIVATE`` would not help (Linux shares untouched private pages with the
file too). So entry files are written read-only (0o444, whatever the umask) and a file that
others could write is refused: once verified, a mapped array can change only if *the same user*
(or root) changes permissions and writes into, or truncates, their own cache file, which is
as much as any process of theirs could do to their memory anyway. Another user's files (in a
``shared`` cache, whose users all hold the signing secret) are read into private memory, so
that their owner cannot change an array after it was verified. Entry directories stay
writable by their owner: replacing a file makes a new inode, which never changes a mapping
already made, and must pass all the checks above to be read.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import shutil
import stat
import time
import warnings
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from ..errors import CacheError
from ..types import StageResult
from .base import CacheWarning, validate_key
from .codec import (
    EntryRejected,
    EntrySource,
    check_digest,
    decode_entry,
    entry_errors,
    load_npy,
    pack,
    read_header,
    seal,
    write_npy,
)
from .frozen import FrozenMapping
from .signing import EntrySigner

__all__ = ["DiskCache", "DiskStore", "EntryUntrusted"]

_LAYOUT = "v1"
_STALE_AFTER_S = 3600.0
_MMAP_MIN_BYTES = 256 * 1024  # smaller arrays are read into memory
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_ENTRY_FILE_MODE = 0o444  # read-only for everyone, the owner included


class EntryUntrusted(EntryRejected):
    """An entry file that is not a plain file of ours that only we can write (a FIFO, a
    symlink, another user's file, a group-writable file). A miss with a warning; the entry is
    left where it is, since whoever placed it is not us."""


def _open_entry_file(path: str, expected: int | None, *, shared: bool) -> tuple[int, int, bool]:
    """Open an entry file for reading without following a symlink or blocking on a FIFO, and
    return ``(fd, size, ours)`` once fstat shows a regular file (of the ``expected`` size),
    owned by us (by anyone when ``shared``), that neither group nor others can write."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # what O_NOFOLLOW gives for a symlink
            raise EntryUntrusted(f"{name} is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise EntryUntrusted(f"{name} is not a regular file")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise EntryUntrusted(f"{name} is writable by group or others")
        ours = info.st_uid == os.geteuid()
        if not (ours or shared):
            raise EntryUntrusted(f"{name} belongs to uid {info.st_uid}, not to us")
        if expected is not None and info.st_size != expected:
            raise EntryRejected(f"{name} has {info.st_size} bytes, expected {expected}")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size, ours


def _read_fd(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes of an open file (callers check the length they got)."""
    data = os.read(fd, size)  # a regular file gives it all at once
    while len(data) < size and (more := os.read(fd, size - len(data))):
        data += more
    return data


def _read_entry_file(path: str, expected: int | None, *, shared: bool) -> bytes:
    fd, size, _ = _open_entry_file(path, expected, shared=shared)
    try:
        return _read_fd(fd, size)
    finally:
        os.close(fd)


class _EntryDir(EntrySource):
    """Reads one entry directory's arrays and blob, checking every file and digest. An array
    comes from the very bytes or mapping its digest was checked on: a large file of ours is
    mapped read-only once and the array views that mapping; a small one (or, in a shared
    cache, another user's) is read into private memory."""

    def __init__(self, path: str, *, shared: bool) -> None:
        self.path = path  # a str: pathlib costs more than the reads on this hot path
        self.shared = shared

    def array(self, index: int, record: dict[str, Any], seed: int) -> np.ndarray:
        name = f"a{index}.npy"
        path = os.path.join(self.path, name)
        try:
            fd, size, ours = _open_entry_file(path, record["nbytes"], shared=self.shared)
            try:
                data: bytes | FrozenMapping
                if size <= _MMAP_MIN_BYTES or not ours:
                    data = _read_fd(fd, size)  # small, or another user's: private memory
                else:
                    data = FrozenMapping(fd, size, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)
            check_digest(record, data, name, seed)
            return load_npy(data, record)
        except OSError as exc:
            raise EntryRejected(f"cannot read {name}: {exc.strerror or exc}") from None
        except (TypeError, ValueError) as exc:
            raise EntryRejected(f"{name} is not a plain .npy array: {exc}") from None

    def blob(self, record: dict[str, Any]) -> bytes:
        try:
            path = os.path.join(self.path, "blob.pkl")
            return _read_entry_file(path, record["nbytes"], shared=self.shared)
        except OSError as exc:
            raise EntryRejected(f"cannot read blob.pkl: {exc.strerror or exc}") from None


def _entry_file(path: Path) -> BinaryIO:
    """A new entry file, read-only for everyone from the start (whatever the umask): once
    published, nobody without root rights writes to it in place, so a mapping of it that was
    verified stays what was verified."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _ENTRY_FILE_MODE)
    os.fchmod(fd, _ENTRY_FILE_MODE)  # the umask may have dropped read bits: shared caches read
    return os.fdopen(fd, "wb")


class DiskStore:
    """A directory of cache entries that processes on one machine (or, with ``shared=True``,
    the ``shared-disk`` config and a shared key, several users) can share. ``strict`` turns
    write failures into CacheError; unreadable entries are always a miss plus one CacheWarning
    (and are removed, unless a file is not ours to trust: see the module docs). A signing key
    that cannot be had is a CacheError when strict, else a miss and a warning."""

    # workers in other processes can open it by its path (and their own copy of the key)
    reachable_from_other_processes: ClassVar[bool] = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        signer: EntrySigner | None = None,
        strict: bool = False,
        shared: bool = False,
    ) -> None:
        self.root = Path(root).expanduser().absolute()  # later chdir()s must not move it
        self.signer = signer if signer is not None else EntrySigner()
        self.signer.refuse_key_file_under(self.root)
        self.strict = strict
        self.shared = shared
        self._swept = False

    def _entry_dir(self, key: str) -> Path:
        return Path(self._entry_path(key))

    def _entry_path(self, key: str) -> str:
        return os.path.join(self.root, _LAYOUT, key[:2], key[2:4], key)

    # --- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> StageResult | None:
        key = validate_key(key)
        path = self._entry_path(key)
        try:
            meta = _read_entry_file(os.path.join(path, "meta.json"), None, shared=self.shared)
        except EntryUntrusted as exc:
            self._distrust(key, str(exc))
            return None
        except (FileNotFoundError, NotADirectoryError):
            if os.path.isdir(path):
                self._reject(key, Path(path), "meta.json is missing")
            return None
        except OSError as exc:
            warnings.warn(
                f"disk cache {self.root}: cannot read entry {key}: {exc}",
                CacheWarning,
                stacklevel=2,
            )
            return None
        try:
            with entry_errors():
                entry = _EntryDir(path, shared=self.shared)
                return decode_entry(read_header(meta, key), entry, self.signer)
        except EntryUntrusted as exc:
            self._distrust(key, str(exc))
        except EntryRejected as exc:
            self._reject(key, Path(path), str(exc))
        except CacheError as exc:  # no usable key: the entry may be fine, so it stays
            self._fail(f"cannot check entry {key}: {exc}")
        return None

    def contains(self, key: str) -> bool:
        """Whether an entry directory is in place (one stat; its content is not checked)."""
        return os.path.exists(os.path.join(self._entry_path(validate_key(key)), "meta.json"))

    def _reject(self, key: str, path: Path, reason: str) -> None:
        warnings.warn(
            f"disk cache {self.root}: ignoring entry {key} ({reason}); it will be recomputed",
            CacheWarning,
            stacklevel=3,
        )
        self._remove(path)

    def _distrust(self, key: str, reason: str) -> None:
        warnings.warn(
            f"disk cache {self.root}: not trusting entry {key} ({reason}); it is left in place "
            "and recomputed; remove it if you did not put it there",
            CacheWarning,
            stacklevel=3,
        )

    # --- writing ----------------------------------------------------------------------------

    def put(self, key: str, result: StageResult) -> None:
        """Store ``result`` unless an entry for ``key`` exists (keys name content, so the
        existing entry is equivalent). Unpicklable states are skipped with a warning."""
        key = validate_key(key)
        final = self._entry_dir(key)
        if os.path.exists(final / "meta.json"):
            return
        try:
            packed = pack(key, result)
        except Exception as exc:  # noqa: BLE001 - whatever pickle raises, the result just isn't cached
            self._fail(
                f"cannot encode a result whose state is {type(result.state).__qualname__} "
                f"({type(exc).__name__}: {exc})"
            )
            return
        tmp: Path | None = None
        try:
            seed = self.signer.digest_seed()
            tmp = self._scratch_dir(key)
            records = []
            for index, arr in enumerate(packed.arrays):
                with _entry_file(tmp / f"a{index}.npy") as fh:
                    records.append(write_npy(arr, fh, seed))
            if packed.blob is not None:
                with _entry_file(tmp / "blob.pkl") as fh:
                    fh.write(packed.blob)
            with _entry_file(tmp / "meta.json") as fh:
                fh.write(seal(packed, records, self.signer))
            self._publish(tmp, final)
        except (OSError, ValueError, CacheError) as exc:
            self._fail(f"cannot write entry {key}: {exc}")
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _scratch_dir(self, key: str) -> Path:
        scratch = self.root / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        if not self._swept:
            self._swept = True
            self._sweep_stale(scratch)
        path = scratch / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
        path.mkdir()
        return path

    @staticmethod
    def _sweep_stale(scratch: Path) -> None:
        """Remove scratch dirs left by writers that crashed over an hour ago."""
        cutoff = time.time() - _STALE_AFTER_S
        for entry in os.scandir(scratch):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except OSError:
                pass

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        for _ in range(3):
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
                return
            except FileNotFoundError:  # clear() removed the shard meanwhile: make it again
                continue
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return  # another writer won; our copy is dropped
                raise

    def _fail(self, message: str) -> None:
        if self.strict:
            raise CacheError(f"disk cache {self.root}: {message}")
        warnings.warn(f"disk cache {self.root}: {message}", CacheWarning, stacklevel=3)

    # --- housekeeping -----------------------------------------------------------------------

    def _remove(self, path: Path) -> None:
        """Move ``path`` out of the readers' way in one rename, then delete it."""
        trash = self.root / "tmp" / f"trash.{secrets.token_hex(6)}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, trash)
        except OSError:
            return  # already gone
        shutil.rmtree(trash, ignore_errors=True)

    def delete(self, key: str) -> None:
        self._remove(self._entry_dir(validate_key(key)))

    def clear(self) -> None:
        self._remove(self.root / _LAYOUT)

    def __len__(self) -> int:
        count = 0
        top = self.root / _LAYOUT
        if not top.is_dir():
            return 0
        for shard in os.scandir(top):
            for sub in os.scandir(shard.path) if shard.is_dir() else ():
                count += sum(1 for e in os.scandir(sub.path) if e.is_dir()) if sub.is_dir() else 0
        return count

    def __repr__(self) -> str:
        return f"DiskStore({str(self.root)!r})"


# the name the user guide and 2.0 code import: the same class, kept without a warning
DiskCache = DiskStore
