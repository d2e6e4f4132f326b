"""HMAC-SHA256 signatures for cache entries, and the keyed digests of their arrays.

Every entry is signed, so nothing read from a cache is trusted (and no pickle is loaded) unless
its signature checks out against a secret kept outside the cache: the ``PHYS_PIPELINE_CACHE_KEY``
environment variable, else a per-user key file, ``cache.key`` in the user config directory that
platformdirs names for ``phys-pipeline`` (on Linux ``$XDG_CONFIG_HOME/phys-pipeline/cache.key``,
default ``~/.config/...``), created on first use with 32 random bytes written as hex.

The secret is a string's bytes: surrounding whitespace dropped, 32 or more hex digits (an even
number) decode to bytes, any other text is taken as UTF-8. A key file that is not UTF-8 is a binary
key and its bytes are the secret as they are. Either way the secret must be at least 16 bytes long:
a short one is guessable, and whoever guesses it can forge entries.

Whoever can read the key file can forge entries, and whoever can replace it can make you sign
with their key, so on POSIX it is used only if it is a regular file (not a symlink, FIFO or
directory) owned by you with no group or other permission bits, in a directory owned by you (or
root) that neither group nor others may write, and not inside the directory of a cache using it.
Anything else is a CacheError naming the file and what is wrong, raised before any entry is
checked. A cache shared between users needs ``PHYS_PIPELINE_CACHE_KEY``, set to the same secret
for everyone; without it, ``shared_signer`` falls back on the user's own key, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import struct
import threading
import warnings
from pathlib import Path

import platformdirs

from ..errors import CacheError
from .base import CacheWarning

__all__ = ["KEY_ENV_VAR", "EntrySigner", "key_file_path", "secret_from_env", "shared_signer"]

KEY_ENV_VAR = "PHYS_PIPELINE_CACHE_KEY"
_MIN_SECRET_BYTES = 16
_MAKE_A_SECRET = 'python -c "import secrets; print(secrets.token_hex(32))"'
_DOMAIN = b"phys-pipeline cache entry v1\0"
_pack_len = struct.Struct("<Q").pack
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def key_file_path() -> Path:
    """Where the per-user secret lives when the environment variable is not set."""
    return Path(platformdirs.user_config_dir("phys-pipeline", appauthor=False)) / "cache.key"


def _secret_from_text(text: str) -> bytes:
    text = text.strip()
    if len(text) >= 32 and len(text) % 2 == 0:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return text.encode("utf-8")


def _long_enough(secret: bytes, source: str, remedy: str) -> bytes:
    if len(secret) < _MIN_SECRET_BYTES:
        raise CacheError(
            f"{source} holds a secret of {len(secret)} bytes, but at least {_MIN_SECRET_BYTES} are "
            f"needed: a short secret can be guessed, and with it cache entries forged; {remedy}"
        )
    return secret


def secret_from_env() -> bytes | None:
    """The secret from ``PHYS_PIPELINE_CACHE_KEY``, or None when it is unset or empty; a
    CacheError if it is shorter than 16 bytes."""
    text = os.environ.get(KEY_ENV_VAR, "").strip()
    if not text:
        return None
    return _long_enough(
        _secret_from_text(text),
        f"the {KEY_ENV_VAR} environment variable",
        f"set it to the output of `{_MAKE_A_SECRET}`",
    )


def _create_key_file(path: Path) -> None:
    """Write a fresh random key next to ``path`` and hard-link it into place: a link never
    replaces a file, so if another process got there first its key wins and ours is dropped,
    and all processes agree on one key (with no lock file left behind)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")  # hex text: what earlier versions read too
            fh.flush()
            os.fsync(fh.fileno())  # never a linked but empty key after a crash
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _refuse_if_others_control(
    path: Path,
    info: os.stat_result,
    owners: tuple[int, ...],
    open_bits: int,
    *,
    what: str,
    owner_risk: str,
    mode_risk: str,
    chmod: str,
) -> None:
    """A CacheError naming ``what`` if it belongs to a uid not in ``owners`` or its mode has any
    of ``open_bits``: either way someone else could read, replace or change the key."""
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in owners:
        raise CacheError(f"{what} belongs to uid {info.st_uid}, {owner_risk} or set {KEY_ENV_VAR}")
    if mode & open_bits:
        raise CacheError(
            f"{what} has mode {mode:#o}: other users can {mode_risk}; run `chmod {chmod} {path}` "
            f"(or set {KEY_ENV_VAR})"
        )


def _check_key_dir(directory: Path, info: os.stat_result) -> None:
    _refuse_if_others_control(
        directory,
        info,
        (os.geteuid(), 0),
        stat.S_IWGRP | stat.S_IWOTH,
        what=f"the directory {directory} of the cache key file",
        owner_risk="who could replace the key with their own; keep the key in a directory of "
        "yours (XDG_CONFIG_HOME)",
        mode_risk="write it, so they could replace the key with their own",
        chmod="go-w",
    )


def _check_key_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise CacheError(
            f"cache key file {path} is {kind}, not a regular file; remove it (a new key is "
            f"made on first use) or set {KEY_ENV_VAR}"
        )
    _refuse_if_others_control(
        path,
        info,
        (os.geteuid(),),
        stat.S_IRWXG | stat.S_IRWXO,
        what=f"cache key file {path}",
        owner_risk=f"not to you (uid {os.geteuid()}): its owner could read it and forge cache "
        "entries; remove it (a new key is made on first use)",
        mode_risk="read or change it, so they could forge cache entries",
        chmod="600",
    )


def _read_own_file(path: Path) -> bytes:
    """The bytes of the key file, once the checks above pass for what was actually opened
    (never blocks: a FIFO is opened non-blocking and refused unread)."""
    if os.name != "posix":  # no FIFOs or uids; the profile directory's ACLs keep others out
        return path.read_bytes()
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _check_key_dir(path.parent, os.fstat(dir_fd))
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(path.name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if os.path.islink(path):  # O_NOFOLLOW refuses it (ELOOP, or EMLINK on BSDs)
                raise CacheError(
                    f"cache key file {path} is a symbolic link: whoever controls where it "
                    f"points controls the key; put the key file itself there (or set "
                    f"{KEY_ENV_VAR})"
                ) from exc
            raise
    finally:
        os.close(dir_fd)
    try:
        _check_key_file(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _read_key_file(path: Path) -> bytes:
    """The secret in the key file at ``path``, made first if there is none."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        data = _read_own_file(path)
    except FileNotFoundError:
        _create_key_file(path)
        data = _read_own_file(path)
    try:
        secret = _secret_from_text(data.decode("utf-8"))  # a text key, read as it always was
    except UnicodeDecodeError:
        secret = data  # a binary key
    return _long_enough(
        secret, f"cache key file {path}", f"delete it to get a new key (or set {KEY_ENV_VAR})"
    )


class EntrySigner:
    """Signs and verifies cache entries. The secret is resolved on first use (a store that is
    never used never touches the key file). ``env_only`` insists on the environment variable
    (shared caches, where every user must hold the same secret)."""

    def __init__(self, secret: bytes | str | None = None, *, env_only: bool = False) -> None:
        if isinstance(secret, str):
            secret = _secret_from_text(secret)
        if secret is not None and not secret:
            raise ValueError("EntrySigner: the secret must not be empty")
        self._secret = secret
        self._given = secret is not None  # else read from the environment or the key file
        self._env_only = env_only
        self._key_file: Path | None = None  # the file the secret was read from, if any
        self._cache_roots: list[Path] = []
        self._seed: int | None = None
        self._lock = threading.Lock()

    def refuse_key_file_under(self, root: Path) -> None:
        """Refuse (CacheError) a key file inside ``root``: a cache directory must never hold
        the key that authenticates it. Checked now if the secret came from a file, else when
        it is read."""
        with self._lock:
            self._cache_roots.append(root)
            if self._key_file is not None:
                self._check_outside_roots(self._key_file)

    def _check_outside_roots(self, path: Path) -> None:
        real = path.resolve()
        for root in self._cache_roots:
            if real.is_relative_to(root.resolve()):
                raise CacheError(
                    f"cache key file {path} is inside the cache directory {root}, where whoever "
                    f"can write the cache can read the key; keep it elsewhere (XDG_CONFIG_HOME) "
                    f"or set {KEY_ENV_VAR}"
                )

    def _resolve(self) -> bytes:
        with self._lock:
            if self._secret is None:
                secret = secret_from_env()
                if secret is None:
                    if self._env_only:
                        raise CacheError(
                            f"this cache is shared: set the {KEY_ENV_VAR} environment variable "
                            "to a secret that every user of the cache shares"
                        )
                    path = key_file_path()
                    self._check_outside_roots(path)
                    try:
                        secret = _read_key_file(path)
                    except OSError as exc:
                        raise CacheError(
                            f"cannot read or create the cache key file {path}: {exc}; "
                            f"set {KEY_ENV_VAR} instead"
                        ) from exc
                    self._key_file = path
                self._secret = secret
            return self._secret

    def sign(self, *parts: bytes | memoryview) -> str:
        """Hex HMAC-SHA256 over the parts (each length-prefixed, so boundaries cannot shift)."""
        mac = hmac.new(self._resolve(), _DOMAIN, hashlib.sha256)
        for part in parts:
            mac.update(_pack_len(len(part)))
            mac.update(part)
        return mac.hexdigest()

    def verify(self, signature: object, *parts: bytes | memoryview) -> bool:
        """True only if ``signature`` is the signature of ``parts`` (constant-time compare)."""
        if not isinstance(signature, str) or not signature.isascii():
            return False
        return hmac.compare_digest(self.sign(*parts), signature)

    def digest_seed(self) -> int:
        """A 64-bit seed derived from the secret, for the arrays' xxh3 digests: without the
        key nobody can compute the digest of data they substitute (and xxh3 keeps its speed)."""
        if self._seed is None:
            derived = hmac.new(self._resolve(), b"array-digest-seed", hashlib.sha256).digest()
            self._seed = int.from_bytes(derived[:8], "little")
        return self._seed

    def key_id(self) -> str:
        """Names the secret without revealing it (an HMAC of a constant): two processes
        whose ids differ cannot read each other's entries."""
        return self.sign(b"phys-pipeline key id")[:32]

    def __getstate__(self) -> dict[str, object]:
        # a secret from the environment or the key file is never shipped: the process that
        # unpickles (a Dask worker) reads its own, so the key does not travel over the network
        secret = self._secret if self._given else None
        return {"secret": secret, "env_only": self._env_only, "roots": self._cache_roots}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["secret"], env_only=bool(state["env_only"]))  # type: ignore[misc, arg-type]
        self._cache_roots = list(state.get("roots", ()))  # type: ignore[call-overload]

    def __repr__(self) -> str:
        source = "given" if self._given else "env" if self._env_only else "env/file"
        return f"EntrySigner(secret={source})"


def shared_signer(root: Path) -> EntrySigner:
    """The signer of the cache at ``root`` that several users share: the secret of
    ``PHYS_PIPELINE_CACHE_KEY``, read by each process itself (a store sent to Dask workers carries
    no secret). Without it, this user's own key and one CacheWarning: entries are still signed
    and other users' entries are still misses, but only this user can read what is written."""
    if secret_from_env() is not None:
        return EntrySigner(env_only=True)
    warnings.warn(
        f"shared cache {root}: {KEY_ENV_VAR} is not set, so its entries are signed with your own "
        f"key and readable only by you; to share them, every user of the cache sets {KEY_ENV_VAR} "
        f"to the same secret (make one with `{_MAKE_A_SECRET}`)",
        CacheWarning,
        stacklevel=3,
    )
    return EntrySigner()
