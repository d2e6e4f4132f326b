"""DiskStore: entries as directories of ``meta.json`` + one ``.npy`` per array + optional
``blob.pkl``, written atomically, so several processes can share one cache directory.

Layout (the helpers below compute and recognise it, for the store and for tools that look
after a cache)::

    root/v2/ab/cd/<key>/meta.json, a0.npy, a1.npy, ..., blob.pkl      entry_parts(key)
    root/tmp/<key>.<pid>.<8 hex>     a writer's scratch directory        is_scratch_name
    root/tmp/trash.<12 hex>          an entry (or all of v2) being deleted

A writer fills a scratch directory under ``root/tmp`` (same filesystem) and renames it into
place; if an entry is already there another writer won and the scratch copy is dropped. Readers
only look under ``root/v2``, so a crashed writer's leftovers are never served; they are swept
after an hour. Every entry is signed (see ``codec``). The signing key file may not live under
the cache's root (see ``signing``). ``root/v1`` held entries of an earlier format; it is never
read, and may be deleted by hand.

The attacker in mind is another user who can write the cache directory but does not hold the
key: they can make us miss, never make us use, read or write anything outside the root, hang,
or delete anything.

**Nothing below the root is followed.** The root itself may be reached through symlinks (the
user chose it), but every path below it is opened one component at a time, relative to its
parent's descriptor, with ``O_NOFOLLOW | O_DIRECTORY | O_NONBLOCK``, and files are opened,
created, renamed and removed by ``dir_fd``. A symlink (or anything but a directory) where a
directory belongs makes a read a miss and a write refused (one :class:`CacheWarning`, a
CacheError when ``strict``).

**What is read is what was verified.** Each entry file is opened once, with ``O_NOFOLLOW`` (no
symlinks) and ``O_NONBLOCK`` (a FIFO cannot hang the reader), and ``fstat`` must show a regular
file owned by the current user (any user in a ``shared`` cache) and writable by neither group
nor others. ``meta.json`` is read only if it is at most :data:`META_MAX_BYTES`; its signature is
then checked, and every other file must have exactly the size the signed metadata gives before
a byte of it is read. An array's digest is checked on the bytes read from that descriptor, or on
a read-only memory map of it (large files of ours), and the array is built on those very bytes
or that very mapping: the path is never opened twice.

**A reader never deletes.** An entry that fails a check (written with another key, corrupt,
tampered with, planted) is a miss and stays on disk, so users with different keys can share a
directory without erasing each other's entries; a writer does not replace it either. One
CacheWarning per store and kind of problem says so; :attr:`DiskStore.skipped` counts them all.
Removing such entries is for ``delete``, ``clear`` and ``python -m phys_pipeline.cache``.

**Housekeeping removes only its own.** The sweep of ``root/tmp`` removes only directories
whose names it makes, owned by us and older than an hour; removing a tree never follows a
symlink (one met is unlinked, its target untouched) or goes deeper than an entry can be.

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

import contextlib
import errno
import json
import mmap
import os
import re
import secrets
import stat
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from ..errors import CacheError
from ..types import StageResult
from .base import CacheWarning, validate_key
from .budget import DiskBudget
from .codec import (
    EntryRejected,
    EntrySource,
    EntryUnauthenticated,
    PackedResult,
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

__all__ = [
    "META_MAX_BYTES",
    "DiskStore",
    "EntryInfo",
    "EntryUntrusted",
    "entry_parts",
    "entry_path",
    "is_scratch_name",
    "open_dirs",
    "remove_tree",
]

# a new name with any format readers cannot read: readers never delete, so old entries move aside
_LAYOUT = "v2"
_SCRATCH = "tmp"
META_MAX_BYTES = 1 << 20  # a meta.json is never larger (the writer pickles what would not fit)
_STALE_AFTER_S = 3600.0
_MMAP_MIN_BYTES = 256 * 1024  # smaller arrays are read into memory
_MAX_TREE_DEPTH = 4  # layout dir / shard / shard / entry / files: nothing we remove is deeper
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the root's own path is followed
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ENTRY_FILE_MODE = 0o444  # read-only for everyone, the owner included
_NOT_FOLLOWED = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)  # O_NOFOLLOW/O_DIRECTORY refusals
_SCRATCH_NAME = re.compile(r"[0-9a-f]{16,128}\.[0-9]+\.[0-9a-f]{8}|trash\.[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One entry as the directory shows it: ``used`` is its last use as recorded (seconds
    since the epoch), ``node``/``stage`` what its metadata claims ("?" when it does not say,
    or was not read): shown for orientation, never trusted."""

    key: str
    path: Path
    nbytes: int
    used: float
    node: str
    stage: str


class EntryUntrusted(EntryRejected):
    """Something in the cache that is not a plain file or directory of ours that only we can
    write (a FIFO, a symlink, another user's file, a group-writable file). A miss with a
    warning; it is left where it is, since whoever placed it is not us."""


# --- the layout: what the store, eviction and the command line share ---------------------------


def entry_parts(key: str) -> tuple[str, str, str, str]:
    """The components of ``key``'s entry directory below the cache root (``key`` validated)."""
    return (_LAYOUT, key[:2], key[2:4], key)


def entry_path(root: str | os.PathLike[str], key: str) -> Path:
    """Where ``key``'s entry directory is (for messages and tests: open it with ``open_dirs``)."""
    return Path(root).joinpath(*entry_parts(key))


def is_scratch_name(name: str) -> bool:
    """Whether ``name`` in ``root/tmp`` is a writer's scratch or a deletion's trash directory,
    as this module names them (nothing else there is ours to sweep)."""
    return _SCRATCH_NAME.fullmatch(name) is not None


def _scratch_name(key: str) -> str:
    return f"{key}.{os.getpid()}.{secrets.token_hex(4)}"


def _trash_name() -> str:
    return f"trash.{secrets.token_hex(6)}"


def _open_dir(name: str, dir_fd: int | None, *, create: bool = False) -> int:
    """Open directory ``name`` without following a symlink there (see ``open_dirs``); the
    EntryUntrusted it raises says what is there instead, without naming it."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
            os.mkdir(name, dir_fd=dir_fd)
        return _open_dir(name, dir_fd)
    except OSError as exc:
        if exc.errno not in _NOT_FOLLOWED:
            raise
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            raise exc from None  # a component above it is missing or not a directory
        raise EntryUntrusted(
            "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
        ) from None


def open_dirs(parts: Sequence[str], dir_fd: int | None = None, *, create: bool = False) -> int:
    """A descriptor of the directory ``parts[0]/parts[1]/...`` (relative to ``dir_fd``),
    opened one component at a time with no symlink followed (``parts[0]`` may be a path whose
    leading components, the user's choice of root, are followed); missing components are made
    when ``create``. FileNotFoundError if one is missing, EntryUntrusted naming the first that
    is a symlink or not a directory."""
    index = 0
    try:
        fd = _open_dir(parts[0], dir_fd, create=create)
        for index in range(1, len(parts)):
            try:
                child = _open_dir(parts[index], fd, create=create)
            finally:
                os.close(fd)
            fd = child
    except EntryUntrusted as exc:
        path = "/".join([os.path.basename(parts[0]), *parts[1 : index + 1]])
        raise EntryUntrusted(f"{path} is {exc}") from None
    return fd


def remove_tree(dir_fd: int, name: str, depth: int = _MAX_TREE_DEPTH) -> None:
    """Delete ``name`` in the directory ``dir_fd``, with what it holds, never following a
    symlink (one met is unlinked, its target untouched), blocking on a FIFO or going more than
    ``depth`` levels down; what cannot be removed stays. Only for names this module chose."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _NOT_FOLLOWED:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
        return
    try:
        with os.scandir(fd) as listing:
            children = [(item.name, item.is_dir(follow_symlinks=False)) for item in listing]
        for child, is_dir in children:
            if is_dir and depth > 0:
                remove_tree(fd, child, depth - 1)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(child, dir_fd=fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=dir_fd)


def _subdirs(dir_fd: int) -> Iterator[tuple[str, int]]:
    """The real directories in ``dir_fd``, each with a descriptor (closed once the caller
    moves on); symlinks and anything else are skipped, never followed."""
    with os.scandir(dir_fd) as listing:
        names = [item.name for item in listing if item.is_dir(follow_symlinks=False)]
    for name in names:
        try:
            fd = _open_dir(name, dir_fd)
        except (OSError, EntryUntrusted):  # removed or swapped for a link meanwhile
            continue
        try:
            yield name, fd
        finally:
            os.close(fd)


def _dir_bytes(dir_fd: int) -> int:
    with os.scandir(dir_fd) as files:
        sizes = [f.stat(follow_symlinks=False).st_size for f in files if f.is_file()]
    return sum(sizes)


def _claims(entry_fd: int) -> tuple[str, str]:
    """The node and stage an entry's metadata names, read as plain JSON, never trusted."""
    try:
        fd = os.open("meta.json", _OPEN_FLAGS, dir_fd=entry_fd)
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


def _sweep_stale(tmp_fd: int) -> None:
    """Remove scratch and trash directories of ours left over an hour ago (crashed writers)."""
    cutoff = time.time() - _STALE_AFTER_S
    uid = os.geteuid()
    try:
        with os.scandir(tmp_fd) as listing:
            items = [item for item in listing if is_scratch_name(item.name)]
    except OSError:
        return
    for item in items:
        try:
            info = item.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == uid and info.st_mtime < cutoff:
            remove_tree(tmp_fd, item.name)


def _count_dirs(fd: int, depth: int) -> int:
    """Directories ``depth`` levels below ``fd`` (which is closed), symlinks neither counted
    nor followed."""
    try:
        with os.scandir(fd) as listing:
            names = [item.name for item in listing if item.is_dir(follow_symlinks=False)]
        if depth == 1:
            return len(names)
        total = 0
        for name in names:
            try:
                child = _open_dir(name, fd)
            except (OSError, EntryUntrusted):
                continue
            total += _count_dirs(child, depth - 1)
        return total
    finally:
        os.close(fd)


# --- reading entry files -----------------------------------------------------------------------


def _open_entry_file(
    dir_fd: int, name: str, expected: int | None, *, shared: bool, cap: int | None = None
) -> tuple[int, int, bool]:
    """Open entry file ``name`` for reading without following a symlink or blocking on a FIFO,
    and return ``(fd, size, ours)`` once fstat shows a regular file (of the ``expected`` size,
    or at most ``cap`` bytes), owned by us (by anyone when ``shared``), that neither group nor
    others can write."""
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # what O_NOFOLLOW gives for a symlink
            raise EntryUntrusted(f"{name} is a symbolic link") from None
        raise EntryRejected(f"cannot read {name}: {exc.strerror or exc}") from None
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
        if cap is not None and info.st_size > cap:
            raise EntryRejected(f"{name} has {info.st_size} bytes, more than the {cap} allowed")
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


def _read_entry_file(
    dir_fd: int, name: str, expected: int | None, *, shared: bool, cap: int | None = None
) -> bytes:
    fd, size, _ = _open_entry_file(dir_fd, name, expected, shared=shared, cap=cap)
    try:
        return _read_fd(fd, size)
    except OSError as exc:
        raise EntryRejected(f"cannot read {name}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


class _EntryDir(EntrySource):
    """Reads one entry directory's arrays and blob (through the directory's descriptor),
    checking every file and digest. An array comes from the very bytes or mapping its digest
    was checked on: a large file of ours is mapped read-only once and the array views that
    mapping; a small one (or, in a shared cache, another user's) is read into private memory."""

    def __init__(self, fd: int, *, shared: bool) -> None:
        self.fd = fd
        self.shared = shared

    def array(self, index: int, record: dict[str, Any], seed: int) -> np.ndarray:
        name = f"a{index}.npy"
        fd, size, ours = _open_entry_file(self.fd, name, record["nbytes"], shared=self.shared)
        try:
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
        return _read_entry_file(self.fd, "blob.pkl", record["nbytes"], shared=self.shared)


def _entry_file(dir_fd: int, name: str) -> BinaryIO:
    """A new entry file, read-only for everyone from the start (whatever the umask): once
    published, nobody without root rights writes to it in place, so a mapping of it that was
    verified stays what was verified."""
    fd = os.open(name, _CREATE_FLAGS, _ENTRY_FILE_MODE, dir_fd=dir_fd)
    os.fchmod(fd, _ENTRY_FILE_MODE)  # the umask may have dropped read bits: shared caches read
    return os.fdopen(fd, "wb")


# --- the store ---------------------------------------------------------------------------------

_PRUNE = "`python -m phys_pipeline.cache verify` lists such entries, `verify --remove` deletes them"
_SKIPPED = {  # the kinds of entry a reader skips: (kind, warning)
    EntryUntrusted: (
        "untrusted",
        "not trusting entry {key} ({why}): it is left in place and recomputed; remove it if "
        "you did not put it there",
    ),
    EntryUnauthenticated: (
        "unauthenticated",
        "entry {key} does not authenticate ({why}): it is left on disk and recomputed; " + _PRUNE,
    ),
    EntryRejected: (
        "unreadable",
        "ignoring entry {key} ({why}): it is left on disk and recomputed; " + _PRUNE,
    ),
}


class DiskStore:
    """A directory of cache entries that processes on one machine (or, with ``shared=True``,
    the ``shared-disk`` config and a shared key, several users) can share. ``strict`` turns
    write failures (and writes refused because the cache's directories are not ours) into
    CacheError; an entry that cannot be used is always a miss, left on disk, with one
    CacheWarning per store and kind of problem (see the module docs). A signing key that
    cannot be had is a CacheError when strict, else a miss and a warning, before any entry is
    touched. ``max_bytes`` keeps it within a size budget, least recently used entries going
    first (see ``budget``)."""

    # workers in other processes can open it by its path (and their own copy of the key)
    reachable_from_other_processes: ClassVar[bool] = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        signer: EntrySigner | None = None,
        strict: bool = False,
        shared: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        self.root = Path(root).expanduser().absolute()  # later chdir()s must not move it
        self._layout = os.path.join(self.root, _LAYOUT)  # a str: joined on every read
        self.signer = signer if signer is not None else EntrySigner()
        self.signer.refuse_key_file_under(self.root)
        self.strict = strict
        self.shared = shared
        self.skipped: dict[str, int] = {}  # entries (and writes) skipped, by kind of problem
        self._lock = threading.Lock()
        self._swept = False
        self.max_bytes = max_bytes
        self.budget = DiskBudget(self, max_bytes) if max_bytes is not None else None

    @property
    def name(self) -> str:
        """The ``CacheConfig.backend`` this store is."""
        return "shared-disk" if self.shared else "disk"

    # --- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> StageResult | None:
        """``load``, with a miss and a warning (the first of its kind) for an entry that
        cannot be used, or for a key we cannot have (CacheError when strict)."""
        try:
            result = self.load(key)
            if result is not None and self.budget is not None:
                self.budget.note_hit(key)
            return result
        except CacheError as exc:  # no usable key: the entries may be fine, and none was touched
            if self.strict:
                raise CacheError(
                    f"disk cache {self.root}: cannot check entry {key}: {exc}"
                ) from exc
            self._skip("no key", f"cannot check entry {key}: {exc}")
        except EntryRejected as exc:
            kind, message = next(v for t, v in _SKIPPED.items() if isinstance(exc, t))
            self._skip(kind, message.format(key=key, why=exc))
        return None

    def load(self, key: str) -> StageResult | None:
        """The entry for ``key`` once it authenticates, None if there is none; raises
        EntryRejected (EntryUntrusted, EntryUnauthenticated) saying why an entry cannot be
        used, CacheError if the signing key cannot be had. ``get`` is this plus a warning;
        neither deletes anything."""
        key = validate_key(key)
        self.signer.digest_seed()  # our key's problems come out before any entry is touched
        try:
            fd = self._open_entry(key)
        except (FileNotFoundError, NotADirectoryError):
            # no entry; or the root lies under a file, so none can be there (a component of
            # the store's own tree that is not a directory is EntryUntrusted instead)
            return None
        except OSError as exc:
            raise EntryRejected(f"cannot open its directory: {exc.strerror or exc}") from None
        try:
            with entry_errors():
                meta = _read_entry_file(
                    fd, "meta.json", None, shared=self.shared, cap=META_MAX_BYTES
                )
                entry = _EntryDir(fd, shared=self.shared)
                return decode_entry(read_header(meta, key), entry, self.signer)
        finally:
            os.close(fd)

    def contains(self, key: str) -> bool:
        """Whether an entry directory with a meta.json is in place, reached without following
        a symlink (a few opens and a stat; its content is not checked)."""
        try:
            return self._in_place(validate_key(key))
        except (OSError, EntryUntrusted):
            return False

    def _open_entry(self, key: str, root_fd: int | None = None) -> int:
        """A descriptor of ``key``'s entry directory (see ``open_dirs``)."""
        if root_fd is None:
            return open_dirs((self._layout, key[:2], key[2:4], key))
        return open_dirs(entry_parts(key), root_fd)

    def _in_place(self, key: str, root_fd: int | None = None) -> bool:
        try:
            fd = self._open_entry(key, root_fd)
        except FileNotFoundError:
            return False
        try:
            os.stat("meta.json", dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)
        return True

    def _skip(self, kind: str, message: str) -> None:
        """Count a skipped entry (or write); warn only about the first of each kind."""
        with self._lock:
            count = self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if count == 1:
            warnings.warn(
                f"disk cache {self.root}: {message} (this store warns once of each kind; "
                "DiskStore.skipped counts them all)",
                CacheWarning,
                stacklevel=3,
            )

    # --- writing ----------------------------------------------------------------------------

    def put(self, key: str, result: StageResult) -> None:
        """Store ``result`` unless an entry for ``key`` exists (keys name content, so the
        existing entry is equivalent; one we cannot read is not ours to replace). Unpicklable
        states are skipped with a warning."""
        key = validate_key(key)
        root_fd = None
        try:
            seed = self.signer.digest_seed()
            root_fd = self._open_root()
            if not self._in_place(key, root_fd):
                self._write(root_fd, key, result, seed)
                if self.budget is not None:
                    self.budget.note_put(key, self._entry_bytes(key, root_fd))
        except EntryUntrusted as exc:
            message = (
                f"not writing entry {key}: {exc}; the store follows no link out of its "
                "directory, remove it if you did not put it there"
            )
            if self.strict:
                raise CacheError(f"disk cache {self.root}: {message}") from None
            self._skip("write refused", message)
        except (OSError, ValueError, CacheError) as exc:
            self._fail(f"cannot write entry {key}: {exc}")
        finally:
            if root_fd is not None:
                os.close(root_fd)

    def _open_root(self) -> int:
        """A descriptor of the root, made if missing (its path is the user's: followed)."""
        try:
            return os.open(self.root, _ROOT_FLAGS)
        except FileNotFoundError:
            self.root.mkdir(parents=True, exist_ok=True)
            return os.open(self.root, _ROOT_FLAGS)

    def _write(self, root_fd: int, key: str, result: StageResult, seed: int) -> None:
        tmp_fd = open_dirs((_SCRATCH,), root_fd, create=True)
        try:
            if not self._swept:
                self._swept = True
                _sweep_stale(tmp_fd)
            for as_json in (True, False):  # the second time, JSON too large for meta.json
                try:
                    packed = pack(key, result, as_json=as_json)
                except Exception as exc:  # noqa: BLE001 - whatever pickle raises, the result just isn't cached
                    raise ValueError(
                        f"cannot encode a result whose state is "
                        f"{type(result.state).__qualname__} ({type(exc).__name__}: {exc})"
                    ) from None
                name = self._fill(tmp_fd, key, packed, seed)
                if name is not None:
                    self._publish(root_fd, tmp_fd, name, key)
                    return
            raise ValueError(f"its meta.json would be over {META_MAX_BYTES} bytes, pickled or not")
        finally:
            os.close(tmp_fd)

    def _fill(self, tmp_fd: int, key: str, packed: PackedResult, seed: int) -> str | None:
        """A new scratch directory in ``root/tmp`` holding the entry, by name; None (and
        nothing left behind) if its meta.json would be over the cap."""
        name = _scratch_name(key)
        os.mkdir(name, dir_fd=tmp_fd)
        filled = False
        try:
            fd = _open_dir(name, tmp_fd)
            try:
                records = []
                for index, arr in enumerate(packed.arrays):
                    with _entry_file(fd, f"a{index}.npy") as fh:
                        records.append(write_npy(arr, fh, seed))
                if packed.blob is not None:
                    with _entry_file(fd, "blob.pkl") as fh:
                        fh.write(packed.blob)
                meta = seal(packed, records, self.signer)
                if len(meta) > META_MAX_BYTES:
                    return None
                with _entry_file(fd, "meta.json") as fh:
                    fh.write(meta)
            finally:
                os.close(fd)
            filled = True
            return name
        finally:
            if not filled:
                remove_tree(tmp_fd, name)

    @staticmethod
    def _publish(root_fd: int, tmp_fd: int, name: str, key: str) -> None:
        """Rename the scratch directory into place (or drop it: another writer won)."""
        try:
            for _ in range(3):
                shard_fd = open_dirs(entry_parts(key)[:-1], root_fd, create=True)
                try:
                    os.rename(name, key, src_dir_fd=tmp_fd, dst_dir_fd=shard_fd)
                    return
                except FileNotFoundError:  # clear() removed the shard meanwhile: make it again
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        return  # another writer won; our copy is dropped
                    raise
                finally:
                    os.close(shard_fd)
        finally:
            remove_tree(tmp_fd, name)  # gone already if it was published

    def _fail(self, message: str) -> None:
        if self.strict:
            raise CacheError(f"disk cache {self.root}: {message}")
        warnings.warn(f"disk cache {self.root}: {message}", CacheWarning, stacklevel=3)

    # --- housekeeping -----------------------------------------------------------------------

    def _discard(self, parts: Sequence[str]) -> None:
        """Move ``root/parts`` out of the readers' way in one rename, then delete it; nothing
        is reached through a symlink (a symlink itself is removed, never its target)."""
        try:
            root_fd = os.open(self.root, _ROOT_FLAGS)
        except OSError:
            return
        try:
            parent_fd = open_dirs(parts[:-1], root_fd) if len(parts) > 1 else os.dup(root_fd)
            try:
                tmp_fd = open_dirs((_SCRATCH,), root_fd, create=True)
                try:
                    trash = _trash_name()
                    os.rename(parts[-1], trash, src_dir_fd=parent_fd, dst_dir_fd=tmp_fd)
                    remove_tree(tmp_fd, trash)
                finally:
                    os.close(tmp_fd)
            finally:
                os.close(parent_fd)
        except (OSError, EntryUntrusted):
            return  # already gone, or the way to it is not ours to follow
        finally:
            os.close(root_fd)

    def delete(self, key: str) -> None:
        self._discard(entry_parts(validate_key(key)))

    def clear(self) -> None:
        self._discard((_LAYOUT,))

    def __len__(self) -> int:
        try:
            fd = open_dirs((self._layout,))
        except (OSError, EntryUntrusted):
            return 0
        return _count_dirs(fd, 3)

    # --- listing (eviction and the command line) -------------------------------------------

    def entries(self, *, claims: bool = True) -> Iterator[EntryInfo]:
        """Every entry directory, in no particular order, walked by directory descriptors
        (nothing below the root is followed). ``claims=False`` skips reading metadata (node
        and stage are then "?"), which is all eviction needs."""
        try:
            top = open_dirs((self._layout,))
        except (OSError, EntryUntrusted):
            return
        try:
            for shard, shard_fd in _subdirs(top):
                for sub, sub_fd in _subdirs(shard_fd):
                    for key, entry_fd in _subdirs(sub_fd):
                        try:
                            used = os.fstat(entry_fd).st_mtime
                            nbytes = _dir_bytes(entry_fd)
                        except OSError:
                            continue
                        node, stage = _claims(entry_fd) if claims else ("?", "?")
                        path = self.root / _LAYOUT / shard / sub / key
                        yield EntryInfo(key, path, nbytes, used, node, stage)
        finally:
            os.close(top)

    def touch(self, key: str, when: float) -> None:
        """Record that ``key``'s entry was used at ``when`` (its directory's times)."""
        with contextlib.suppress(OSError, EntryUntrusted):  # gone meanwhile, or a link
            fd = self._open_entry(validate_key(key))
            try:
                os.utime(fd, (when, when))
            finally:
                os.close(fd)

    def _entry_bytes(self, key: str, root_fd: int) -> int:
        try:
            fd = self._open_entry(key, root_fd)
        except (OSError, EntryUntrusted):
            return 0
        try:
            return _dir_bytes(fd)
        finally:
            os.close(fd)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"], state["budget"]
        state.update(skipped={}, _swept=False)  # another process warns and sweeps afresh
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.budget = DiskBudget(self, self.max_bytes) if self.max_bytes is not None else None

    def __repr__(self) -> str:
        return f"DiskStore({str(self.root)!r})"
