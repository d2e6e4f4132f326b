"""DiskCache: entries as directories of ``meta.json`` + one ``.npy`` per array + optional
``blob.pkl``, written atomically, so several processes can share one cache directory.

Layout::

    root/v1/ab/cd/<key>/meta.json, a0.npy, a1.npy, ..., blob.pkl
    root/tmp/               writers' scratch directories and entries being deleted

A writer fills a scratch directory under ``root/tmp`` (same filesystem) and renames it into
place; if an entry is already there another writer won and the scratch copy is dropped. Readers
only look under ``root/v1``, so a crashed writer's leftovers are never served; they are swept
after an hour. Every entry is signed (see ``codec``); arrays come back memory-mapped and
read-only, after the signature and their keyed digest are verified. The signing key file may
not live under the cache's root (see ``signing``).
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CacheError
from ..types import StageResult
from .base import CacheWarning, validate_key
from .codec import (
    EntryRejected,
    EntrySource,
    check_digest,
    check_size,
    decode_entry,
    entry_errors,
    load_npy_bytes,
    pack,
    read_header,
    seal,
    write_npy,
)
from .signing import EntrySigner

__all__ = ["DiskCache"]

_LAYOUT = "v1"
_STALE_AFTER_S = 3600.0
_MMAP_MIN_BYTES = 256 * 1024  # smaller arrays are read into memory


class _EntryDir(EntrySource):
    """Reads one entry directory's arrays (memory-mapped) and blob, checking every digest."""

    def __init__(self, path: str) -> None:
        self.path = path  # a str: pathlib costs more than the reads on this hot path

    def _open_checked(self, name: str, record: dict[str, Any]) -> int:
        fd = os.open(os.path.join(self.path, name), os.O_RDONLY)
        size = os.fstat(fd).st_size
        if size != record["nbytes"]:
            os.close(fd)
            raise EntryRejected(f"{name} has {size} bytes, expected {record['nbytes']}")
        return fd

    def array(self, index: int, record: dict[str, Any], seed: int) -> np.ndarray:
        name = f"a{index}.npy"
        try:
            fd = self._open_checked(name, record)
            with os.fdopen(fd, "rb") as fh:
                if record["nbytes"] <= _MMAP_MIN_BYTES:  # mapping small files costs more
                    data = fh.read()
                    check_digest(record, data, name, seed)
                    return load_npy_bytes(data, record)
                with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                    check_digest(record, mapped, name, seed)
            arr = np.load(os.path.join(self.path, name), mmap_mode="r", allow_pickle=False)
        except OSError as exc:
            raise EntryRejected(f"cannot read {name}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise EntryRejected(f"{name} is not a plain .npy array: {exc}") from None
        return arr.view(np.ndarray)

    def blob(self, record: dict[str, Any]) -> bytes:
        try:
            fd = self._open_checked("blob.pkl", record)
            with os.fdopen(fd, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise EntryRejected(f"cannot read blob.pkl: {exc.strerror or exc}") from None
        check_size(record, data, "blob.pkl")
        return data


class DiskCache:
    """A directory of cache entries that processes on one machine (or, with ``shared-disk``
    config and a shared key, several users) can share. ``strict`` turns write failures into
    CacheError; unreadable entries are always a miss plus one CacheWarning (and are removed).
    A signing key that cannot be had is a CacheError when strict, else a miss and a warning."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        signer: EntrySigner | None = None,
        strict: bool = False,
    ) -> None:
        self.root = Path(root).expanduser().absolute()  # later chdir()s must not move it
        self.signer = signer if signer is not None else EntrySigner()
        self.signer.refuse_key_file_under(self.root)
        self.strict = strict
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
            with open(os.path.join(path, "meta.json"), "rb") as fh:
                meta = fh.read()
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
                return decode_entry(read_header(meta, key), _EntryDir(path), self.signer)
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
                with open(tmp / f"a{index}.npy", "wb") as fh:
                    records.append(write_npy(arr, fh, seed))
            if packed.blob is not None:
                (tmp / "blob.pkl").write_bytes(packed.blob)
            (tmp / "meta.json").write_bytes(seal(packed, records, self.signer))
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
        return f"DiskCache({str(self.root)!r})"
