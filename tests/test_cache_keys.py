"""Cache signing keys: where the secret comes from, how long it must be, and the key files a
co-user could read, replace or booby-trap, which are refused before any entry is checked."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest

from phys_pipeline.cache import CacheConfig, CacheWarning, DiskStore, build_cache_backend
from phys_pipeline.cache.signing import EntrySigner, key_file_path
from phys_pipeline.errors import CacheError
from phys_pipeline.types import SimpleState, StageResult

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"
NOBODY = 65534  # a uid that is not ours
# 32 bytes that are not UTF-8, with whitespace bytes at both ends (a binary key is not stripped)
BINARY_KEY = b"\n\xff\xfe" + bytes(range(3, 31)) + b" "

needs_root = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="giving a file away needs root"
)


def write_key(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(mode)


def refusal() -> str:
    """The CacheError a fresh signer raises on first use."""
    with pytest.raises(CacheError) as caught:
        EntrySigner().sign(b"x")
    return str(caught.value)


def result_with_field() -> StageResult:
    return StageResult(SimpleState({"field": np.linspace(0.0, 1.0, 8)}, {"units": "V/m"}))


# --- where the key lives --------------------------------------------------------------------


def test_key_file_stays_where_earlier_versions_put_it_on_linux(
    isolated_cache_key: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the XDG location is Linux's")
    assert key_file_path() == isolated_cache_key  # $XDG_CONFIG_HOME/phys-pipeline/cache.key
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert key_file_path() == tmp_path / "home" / ".config" / "phys-pipeline" / "cache.key"


def test_key_file_is_created_once_with_owner_only_permissions(isolated_cache_key: Path) -> None:
    signature = EntrySigner().sign(b"body", b"blob")
    assert stat.S_IMODE(isolated_cache_key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(isolated_cache_key.read_text())) == 32
    assert EntrySigner().sign(b"body", b"blob") == signature  # same key next time


# --- the environment variable ---------------------------------------------------------------


def test_environment_variable_wins_over_the_key_file(
    isolated_cache_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "ab" * 16)
    assert EntrySigner().sign(b"x") == EntrySigner(bytes.fromhex("ab" * 16)).sign(b"x")
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "correct horse battery staple")
    assert EntrySigner().sign(b"x") == EntrySigner(b"correct horse battery staple").sign(b"x")
    assert not isolated_cache_key.exists()


def test_env_only_signer_refuses_to_fall_back_to_the_key_file(isolated_cache_key: Path) -> None:
    with pytest.raises(CacheError, match="PHYS_PIPELINE_CACHE_KEY"):
        EntrySigner(env_only=True).sign(b"x")
    assert not isolated_cache_key.exists()


@pytest.mark.parametrize(("value", "length"), [("a", 1), ("hunter2", 7), ("x" * 15, 15)])
def test_short_env_key_is_refused_naming_its_length_and_the_minimum(
    isolated_cache_key: Path, monkeypatch: pytest.MonkeyPatch, value: str, length: int
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", value)
    message = refusal()
    assert "PHYS_PIPELINE_CACHE_KEY" in message
    assert f"a secret of {length} bytes" in message and "at least 16" in message
    assert "secrets.token_hex(32)" in message  # how to make a good one
    assert "hunter2" not in message  # the secret itself is never shown
    assert not isolated_cache_key.exists()  # no silent fall back to the key file


def test_shared_disk_cache_with_a_short_env_key_is_refused_when_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "team secret")
    with pytest.raises(CacheError, match="a secret of 11 bytes"):
        build_cache_backend(CacheConfig(backend="shared-disk", disk_root=tmp_path / "shared"))


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("x" * 16, b"x" * 16),  # text: its UTF-8 bytes
        ("é" * 8, "é".encode() * 8),  # 8 characters, 16 bytes
        ("ab" * 16, b"\xab" * 16),  # 32 hex digits: 16 bytes
        (f"  {'0f' * 32}\n", b"\x0f" * 32),  # surrounding whitespace is dropped
    ],
)
def test_env_key_of_16_bytes_or_more_is_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str, secret: bytes
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", value)
    assert EntrySigner().sign(b"x") == EntrySigner(secret).sign(b"x")


# --- what a key file holds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "signature", "key_id"),
    [  # computed by the code before binary key files were allowed: existing caches stay valid
        (
            b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
            "1a22b280b31a6d6e406af605d4f707c77cb0bff71a308fd863d1c4490a384375",
            "fc4e306985b099cfabaa6636d9365feb",
        ),
        (
            b"  correct horse battery staple\n",
            "48e8d556808c25d12f1ba0a442d9502e3e7bbc6e1248ff2df7f04e1943f9218d",
            "47583e4f413906784124b012e3b34a84",
        ),
    ],
)
def test_existing_text_key_file_yields_the_same_signatures(
    isolated_cache_key: Path, content: bytes, signature: str, key_id: str
) -> None:
    write_key(isolated_cache_key, content)
    signer = EntrySigner()
    assert signer.sign(b"body", b"blob") == signature
    assert signer.key_id() == key_id


def test_binary_key_file_is_used_byte_for_byte(isolated_cache_key: Path) -> None:
    write_key(isolated_cache_key, BINARY_KEY)
    assert EntrySigner().sign(b"x") == EntrySigner(BINARY_KEY).sign(b"x")


def test_non_utf8_key_file_round_trips_entries(isolated_cache_key: Path, tmp_path: Path) -> None:
    write_key(isolated_cache_key, BINARY_KEY)
    DiskStore(tmp_path / "cache").put(KEY, result_with_field())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        back = DiskStore(tmp_path / "cache").get(KEY)
    assert back is not None
    np.testing.assert_array_equal(back.state.payload["field"], np.linspace(0.0, 1.0, 8))
    forger = DiskStore(tmp_path / "cache", signer=EntrySigner(BINARY_KEY.strip()))
    with pytest.warns(CacheWarning, match="bad signature"):
        assert forger.get(KEY) is None  # the stripped bytes are another key


@pytest.mark.parametrize(("content", "length"), [(b"", 0), (b"short\n", 5), (b"\xff" * 15, 15)])
def test_short_key_file_is_refused(isolated_cache_key: Path, content: bytes, length: int) -> None:
    write_key(isolated_cache_key, content)
    message = refusal()
    assert str(isolated_cache_key) in message
    assert f"a secret of {length} bytes" in message and "at least 16" in message


# --- key files a co-user could read, replace or booby-trap ----------------------------------


@needs_root
def test_key_file_owned_by_someone_else_is_refused(isolated_cache_key: Path) -> None:
    write_key(isolated_cache_key, b"ab" * 32)
    os.chown(isolated_cache_key, NOBODY, NOBODY)
    message = refusal()
    assert str(isolated_cache_key) in message and f"uid {NOBODY}" in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602], ids=oct)
def test_key_file_other_users_can_access_is_refused(isolated_cache_key: Path, mode: int) -> None:
    EntrySigner().sign(b"x")
    isolated_cache_key.chmod(mode)
    message = refusal()
    assert str(isolated_cache_key) in message and f"{mode:#o}" in message
    assert "chmod 600" in message


@pytest.mark.timeout(20)
def test_fifo_key_file_is_refused_without_hanging(isolated_cache_key: Path) -> None:
    isolated_cache_key.parent.mkdir(parents=True, mode=0o700)
    os.mkfifo(isolated_cache_key, 0o600)  # nobody will ever write to it
    message = refusal()
    assert str(isolated_cache_key) in message and "is a FIFO, not a regular" in message


def test_directory_in_place_of_the_key_file_is_refused(isolated_cache_key: Path) -> None:
    isolated_cache_key.mkdir(parents=True, mode=0o700)
    message = refusal()
    assert str(isolated_cache_key) in message and "is a directory, not a regular" in message


@pytest.mark.parametrize("target_exists", [True, False], ids=["to-a-key", "dangling"])
def test_symlinked_key_file_is_refused(
    isolated_cache_key: Path, tmp_path: Path, target_exists: bool
) -> None:
    target = tmp_path / "elsewhere.key"
    if target_exists:
        write_key(target, b"ab" * 32)
    isolated_cache_key.parent.mkdir(parents=True, mode=0o700)
    isolated_cache_key.symlink_to(target)
    message = refusal()
    assert str(isolated_cache_key) in message and "symbolic link" in message
    assert target.exists() == target_exists  # no key was written through the link


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777], ids=oct)
def test_key_dir_writable_by_others_is_refused(isolated_cache_key: Path, mode: int) -> None:
    EntrySigner().sign(b"x")
    isolated_cache_key.parent.chmod(mode)
    message = refusal()
    assert str(isolated_cache_key.parent) in message and f"{mode:#o}" in message
    assert "chmod go-w" in message


@needs_root
def test_key_dir_owned_by_someone_else_is_refused(isolated_cache_key: Path) -> None:
    EntrySigner().sign(b"x")
    os.chown(isolated_cache_key.parent, NOBODY, NOBODY)
    message = refusal()
    assert str(isolated_cache_key.parent) in message and f"uid {NOBODY}" in message


def test_no_key_is_made_in_a_directory_others_can_write(isolated_cache_key: Path) -> None:
    isolated_cache_key.parent.mkdir(parents=True)
    isolated_cache_key.parent.chmod(0o777)
    refusal()
    assert list(isolated_cache_key.parent.iterdir()) == []


# --- a bad key is the key's fault, never the entries' ---------------------------------------


def test_disk_store_with_a_refused_key_misses_and_keeps_its_entries(
    isolated_cache_key: Path, tmp_path: Path
) -> None:
    DiskStore(tmp_path / "cache").put(KEY, result_with_field())
    isolated_cache_key.chmod(0o644)
    with pytest.warns(CacheWarning, match="chmod 600"):
        assert DiskStore(tmp_path / "cache").get(KEY) is None
    with pytest.raises(CacheError, match="chmod 600"):
        DiskStore(tmp_path / "cache", strict=True).get(KEY)
    isolated_cache_key.chmod(0o600)
    assert DiskStore(tmp_path / "cache").get(KEY) is not None  # the entry was left alone


def test_redis_store_with_a_refused_key_misses_and_keeps_its_entries(
    isolated_cache_key: Path, redis_url: str
) -> None:
    from phys_pipeline.cache import RedisStore

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    RedisStore(redis_url, prefix).put(KEY, result_with_field())
    isolated_cache_key.chmod(0o644)
    try:
        with pytest.warns(CacheWarning, match="chmod 600"):
            assert RedisStore(redis_url, prefix).get(KEY) is None
        with pytest.raises(CacheError, match="chmod 600"):
            RedisStore(redis_url, prefix, strict=True).get(KEY)
        isolated_cache_key.chmod(0o600)
        assert RedisStore(redis_url, prefix).get(KEY) is not None
    finally:
        isolated_cache_key.chmod(0o600)
        RedisStore(redis_url, prefix).clear()


# --- racing first users ---------------------------------------------------------------------


def test_racing_threads_agree_on_one_key(isolated_cache_key: Path) -> None:
    signatures: list[str] = []
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        signatures.append(EntrySigner().sign(b"x"))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(signatures) == 8 and len(set(signatures)) == 1
    assert [p.name for p in isolated_cache_key.parent.iterdir()] == ["cache.key"]


FIRST_USER = """
import secrets, sys, time
from pathlib import Path

make_token = secrets.token_hex


def slow_token_hex(nbytes=None):  # widens the gap between "no key yet" and "key in place"
    time.sleep(0.2)
    return make_token(nbytes)


secrets.token_hex = slow_token_hex
from phys_pipeline.cache.signing import EntrySigner

go = Path(sys.argv[1])
Path(sys.argv[2]).touch()
while not go.exists():
    time.sleep(0.002)
print(EntrySigner().key_id())
"""


@pytest.mark.timeout(60)
def test_processes_creating_the_key_at_once_end_with_one_key(
    isolated_cache_key: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    users = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_USER, str(go), str(tmp_path / f"ready{i}")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)):
        assert all(user.poll() is None for user in users), "a first user died early"
        time.sleep(0.01)
    go.touch()
    key_ids = {user.communicate(timeout=50)[0].strip() for user in users}
    assert all(user.returncode == 0 for user in users)
    assert key_ids == {EntrySigner().key_id()}  # one key, the one in the file
    assert [p.name for p in isolated_cache_key.parent.iterdir()] == ["cache.key"]
