"""DiskStore serves the bytes it verified: arrays are built on the very descriptor and mapping
whose digest was checked, entry files are read-only, and files that are not plain files of ours
that only we can write (FIFOs, symlinks, group-writable or foreign files) are a miss with one
warning, without hanging and without being deleted.

Root ignores file modes, so nothing here relies on a write being *refused*: the tests check the
modes and owners the reader sees, changing them with chmod and chown (or, as a normal user, by
making the reader believe it runs under another uid)."""

from __future__ import annotations

import os
import shutil
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from phys_pipeline.cache import CacheWarning, DiskStore
from phys_pipeline.cache import disk as disk_module
from phys_pipeline.cache.frozen import FrozenMapping
from phys_pipeline.types import SimpleState, StageResult

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"
BIG = np.linspace(0.0, 1.0, 100_000)  # 800 kB: over the mmap threshold
SMALL = np.arange(16.0)


def result() -> StageResult:
    return StageResult(SimpleState({"big": BIG, "small": SMALL}), metrics={"norm": 1.0})


def entry(cache: DiskStore) -> Path:
    return disk_module.entry_path(cache.root, KEY)


def array_file(cache: DiskStore, name: str) -> Path:
    """The .npy file holding the payload array ``name`` (arrays are numbered as met)."""
    return entry(cache) / {"big": "a0.npy", "small": "a1.npy"}[name]


@pytest.fixture
def cache(tmp_path: Path) -> DiskStore:
    store = DiskStore(tmp_path / "cache")
    store.put(KEY, result())
    return store


def cache_warnings(recorded: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in recorded if issubclass(w.category, CacheWarning)]


def assert_refused_and_left(cache: DiskStore, recwarn: pytest.WarningsRecorder, why: str) -> None:
    assert cache.get(KEY) is None
    messages = cache_warnings(recwarn.list)
    assert len(messages) == 1 and why in messages[0], messages
    assert "not trusting" in messages[0] and (entry(cache) / "meta.json").exists()


def owner_copy(path: Path) -> None:
    """Replace ``path`` by a copy of itself as its owner would (new inode, owner-writable)."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    path.chmod(0o644)


# --- what is written ------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_entry_files_are_written_read_only_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        store = DiskStore(tmp_path / "cache")
        store.put(KEY, result())
    finally:
        os.umask(old)
    files = sorted(entry(store).iterdir())
    assert [f.name for f in files] == ["a0.npy", "a1.npy", "meta.json"]
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o444, file.name
    assert store.get(KEY) is not None


# --- the array is built on what was verified ------------------------------------------------


def test_a_large_array_views_the_mapping_its_digest_was_checked_on(
    cache: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[object] = []
    real_check = disk_module.check_digest

    def spy(record: dict, data: object, what: str, seed: int) -> None:
        real_check(record, data, what, seed)
        checked.append(data)

    monkeypatch.setattr(disk_module, "check_digest", spy)
    payload = cache.get(KEY).state.payload
    big, small = payload["big"], payload["small"]
    assert isinstance(big.base, FrozenMapping) and big.base is checked[0]
    assert np.shares_memory(small, np.frombuffer(checked[1], dtype=np.uint8))
    assert not big.flags.writeable and not small.flags.writeable


@pytest.mark.parametrize("name", ["big", "small"])
def test_a_file_swapped_after_its_digest_check_never_reaches_the_array(
    cache: DiskStore, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    target = array_file(cache, name)
    forged = np.full_like(BIG if name == "big" else SMALL, 666.0)
    real_check = disk_module.check_digest

    def check_then_swap(record: dict, data: object, what: str, seed: int) -> None:
        real_check(record, data, what, seed)
        if what == target.name:  # the race: swap the path right after the check
            target.unlink()
            np.save(target, forged)

    monkeypatch.setattr(disk_module, "check_digest", check_then_swap)
    got = cache.get(KEY).state.payload[name]
    np.testing.assert_array_equal(got, BIG if name == "big" else SMALL)


def test_a_later_in_place_write_is_caught_by_the_next_get(
    cache: DiskStore, recwarn: pytest.WarningsRecorder
) -> None:
    assert cache.get(KEY) is not None
    target = array_file(cache, "big")
    target.chmod(0o644)  # only the owner (or root) can undo the read-only mode
    with open(target, "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(np.float64(666.0).tobytes())
    assert cache.get(KEY) is None
    assert len(cache_warnings(recwarn.list)) == 1


def test_a_file_others_can_write_is_refused_even_after_a_hit(
    cache: DiskStore, recwarn: pytest.WarningsRecorder
) -> None:
    assert cache.get(KEY) is not None
    array_file(cache, "big").chmod(0o664)  # someone in the group could now write into it
    assert_refused_and_left(cache, recwarn, "writable by group or others")


# --- files that are not plain files of ours -------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["a0.npy", "a1.npy", "meta.json"])
def test_a_fifo_is_refused_without_hanging(
    cache: DiskStore, recwarn: pytest.WarningsRecorder, name: str
) -> None:
    path = entry(cache) / name
    path.unlink()
    os.mkfifo(path, 0o400)
    assert_refused_and_left(cache, recwarn, "not a regular file")


@pytest.mark.parametrize("name", ["a0.npy", "meta.json"])
def test_a_symlink_is_refused_even_to_the_genuine_file(
    cache: DiskStore, recwarn: pytest.WarningsRecorder, tmp_path: Path, name: str
) -> None:
    path = entry(cache) / name
    genuine = tmp_path / f"genuine-{name}"
    shutil.copy2(path, genuine)
    path.unlink()
    path.symlink_to(genuine)
    assert_refused_and_left(cache, recwarn, "symbolic link")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
@pytest.mark.parametrize("name", ["a0.npy", "a1.npy", "meta.json"])
def test_a_group_or_world_writable_file_is_refused(
    cache: DiskStore, recwarn: pytest.WarningsRecorder, name: str, mode: int
) -> None:
    (entry(cache) / name).chmod(mode)
    assert_refused_and_left(cache, recwarn, "writable by group or others")


@pytest.fixture(params=["chown", "other-euid"])
def foreign_owner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Makes a file belong to someone else: a real chown as root; otherwise (and also as root)
    by making the reader run under another uid."""

    def make_foreign(path: Path) -> None:
        if request.param == "chown":
            if os.geteuid() != 0:
                pytest.skip("only root can give a file away")
            os.chown(path, os.geteuid() + 4242, -1, follow_symlinks=False)
        else:
            uid = os.geteuid() + 4242
            monkeypatch.setattr(disk_module.os, "geteuid", lambda: uid)

    yield make_foreign


@pytest.mark.parametrize("name", ["a0.npy", "meta.json"])
def test_another_users_file_is_refused(
    cache: DiskStore, recwarn: pytest.WarningsRecorder, foreign_owner: object, name: str
) -> None:
    foreign_owner(entry(cache) / name)  # type: ignore[operator]
    assert_refused_and_left(cache, recwarn, "belongs to uid")


def test_a_shared_cache_reads_another_users_array_into_private_memory(
    cache: DiskStore, foreign_owner: object
) -> None:
    foreign_owner(array_file(cache, "big"))  # type: ignore[operator]
    shared = DiskStore(cache.root, shared=True, signer=cache.signer)  # its key read as us
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        big = shared.get(KEY).state.payload["big"]
    np.testing.assert_array_equal(big, BIG)
    assert not isinstance(big.base, FrozenMapping) and not big.flags.writeable


def test_an_owner_rewritten_file_of_the_right_size_but_wrong_bytes_is_a_miss(
    cache: DiskStore, recwarn: pytest.WarningsRecorder
) -> None:
    target = array_file(cache, "small")
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.unlink()
    target.write_bytes(bytes(data))
    target.chmod(0o444)
    assert cache.get(KEY) is None
    assert len(cache_warnings(recwarn.list)) == 1 and "checksum" in recwarn.list[0].message.args[0]


def test_an_owner_copy_of_the_genuine_file_is_still_served(cache: DiskStore) -> None:
    owner_copy(array_file(cache, "big"))  # owner-writable only: nobody else could write it
    np.testing.assert_array_equal(cache.get(KEY).state.payload["big"], BIG)
