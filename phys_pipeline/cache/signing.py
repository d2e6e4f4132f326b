"""HMAC-SHA256 signatures for cache entries, and the keyed digests of their arrays.

Every entry is signed, so nothing read from a cache is trusted (and no pickle is loaded) unless
its signature checks out against a secret kept outside the cache: the ``PHYS_PIPELINE_CACHE_KEY``
environment variable (hex or any string), else a per-user key file created with mode 0600 in
``$XDG_CONFIG_HOME/phys-pipeline/cache.key`` (default ``~/.config/...``).

A key file that other users can access (any group or other permission bit), or that lies inside
the directory of a cache using it, is refused with a CacheError: whoever can read the key can
forge entries. A cache shared between users needs ``PHYS_PIPELINE_CACHE_KEY``, set to the same
secret for everyone (``CacheConfig(backend="shared-disk")`` insists on it).
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
from pathlib import Path

from ..errors import CacheError

__all__ = ["KEY_ENV_VAR", "EntrySigner", "key_file_path", "secret_from_env"]

KEY_ENV_VAR = "PHYS_PIPELINE_CACHE_KEY"
_DOMAIN = b"phys-pipeline cache entry v1\0"
_pack_len = struct.Struct("<Q").pack


def key_file_path() -> Path:
    """Where the per-user secret lives when the environment variable is not set."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "phys-pipeline" / "cache.key"


def _secret_from_text(text: str) -> bytes:
    text = text.strip()
    if len(text) >= 32 and len(text) % 2 == 0:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return text.encode("utf-8")


def secret_from_env() -> bytes | None:
    """The secret from ``PHYS_PIPELINE_CACHE_KEY``, or None when it is unset or empty."""
    text = os.environ.get(KEY_ENV_VAR, "").strip()
    return _secret_from_text(text) if text else None


def _create_key_file(path: Path) -> None:
    """Write a fresh random key next to ``path`` and link it into place: if another process
    got there first, its key wins and ours is dropped, so all processes agree on one key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_key_file(path: Path) -> bytes:
    if not path.exists():
        _create_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CacheError(
            f"cache key file {path} has mode {mode:#o}: other users can read or change it, so "
            f"they could forge cache entries; run `chmod 600 {path}` (or set {KEY_ENV_VAR})"
        )
    secret = _secret_from_text(path.read_text())
    if not secret:
        raise CacheError(f"cache key file {path} is empty; delete it to get a new key")
    return secret


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
