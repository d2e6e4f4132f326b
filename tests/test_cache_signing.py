"""Entry signatures: where the secret comes from and how it is checked."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.errors import CacheError

pytestmark = pytest.mark.usefixtures("isolated_cache_key")


def test_key_file_is_created_once_with_owner_only_permissions(isolated_cache_key: Path) -> None:
    signature = EntrySigner().sign(b"body", b"blob")
    assert stat.S_IMODE(isolated_cache_key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(isolated_cache_key.read_text())) == 32
    assert EntrySigner().sign(b"body", b"blob") == signature  # same key next time


def test_racing_first_users_agree_on_one_key(isolated_cache_key: Path) -> None:
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
    assert len(set(signatures)) == 1
    assert [p.name for p in isolated_cache_key.parent.iterdir()] == ["cache.key"]


def test_environment_variable_wins_over_the_key_file(
    isolated_cache_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "ab" * 16)
    assert EntrySigner().sign(b"x") == EntrySigner(bytes.fromhex("ab" * 16)).sign(b"x")
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "correct horse battery staple")
    assert EntrySigner().sign(b"x") == EntrySigner(b"correct horse battery staple").sign(b"x")
    assert not isolated_cache_key.exists()


def test_env_only_signer_refuses_to_fall_back_to_the_key_file() -> None:
    with pytest.raises(CacheError, match="PHYS_PIPELINE_CACHE_KEY"):
        EntrySigner(env_only=True).sign(b"x")


def test_verify_accepts_only_the_exact_signature_of_the_exact_parts() -> None:
    signer = EntrySigner("secret")
    good = signer.sign(b"meta", b"blob")
    assert signer.verify(good, b"meta", b"blob")
    assert not signer.verify(good, b"meta", b"blob!")
    assert not signer.verify(good, b"metab", b"lob")  # part boundaries are signed too
    assert not EntrySigner("other").verify(good, b"meta", b"blob")
    assert not signer.verify(None, b"meta", b"blob")
    assert not signer.verify("é" * 64, b"meta", b"blob")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_other_users_can_access_is_refused(isolated_cache_key: Path, mode: int) -> None:
    EntrySigner().sign(b"x")
    isolated_cache_key.chmod(mode)
    with pytest.raises(CacheError) as caught:
        EntrySigner().sign(b"x")
    assert str(isolated_cache_key) in str(caught.value) and f"{mode:#o}" in str(caught.value)
    assert "chmod 600" in str(caught.value)


def test_repr_never_shows_the_secret() -> None:
    assert "hunter2" not in repr(EntrySigner("hunter2"))
