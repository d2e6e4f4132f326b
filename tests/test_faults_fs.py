"""A co-user who can write the cache directory but does not hold the key attacks the disk store
through the filesystem: symlinks at the root, a shard, an entry and each file; FIFOs, devices
and huge files where entry files belong; a planted ``tmp``; and simply a second key. Every
attack must end in right answers, no hang, nothing outside the cache read, written or removed,
and no entry deleted by a reader (removing entries is an explicit act: delete, clear, prune).

The sentinel outside the cache is old (two hours), like the scratch directories the writer's
sweep removes, so a sweep that wandered out of the cache would take it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xxhash
from dag_stages import diamond

from phys_pipeline.cache import CacheWarning, DiskStore
from phys_pipeline.cache import disk as disk_module
from phys_pipeline.cache.disk import META_MAX_BYTES, entry_path, is_scratch_name
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.errors import CacheError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.types import SimpleState, StageResult, State

pytestmark = [pytest.mark.usefixtures("isolated_cache_key"), pytest.mark.timeout(20)]

KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"
TWO_HOURS_AGO = time.time() - 7200
FIELD = np.linspace(0.0, 1.0, 100_000)  # 800 kB: read through a memory map
SPECTRUM = np.arange(16.0)  # read into memory
HUGE = 64 << 30  # a sparse file: no disk space, but reading it would take minutes and memory


@dataclass(slots=True)
class PulseState(State):
    """A user state: its entry has a pickle blob and two .npy files (one mapped)."""

    field: np.ndarray
    spectrum: np.ndarray
    units: tuple[str, str]

    def deepcopy(self) -> PulseState:
        return PulseState(self.field.copy(), self.spectrum.copy(), self.units)

    def hashable_repr(self) -> bytes:
        return self.field.tobytes() + self.spectrum.tobytes() + repr(self.units).encode()


def pulse() -> StageResult:
    return StageResult(PulseState(FIELD, SPECTRUM, ("V/m", "fs")), metrics={"energy": 1.0})


def assert_is_pulse(result: StageResult | None) -> None:
    assert result is not None and result.metrics == {"energy": 1.0}
    np.testing.assert_array_equal(result.state.field, FIELD)
    np.testing.assert_array_equal(result.state.spectrum, SPECTRUM)


def tree(top: Path) -> dict[str, object]:
    """Everything under ``top`` as found without following a symlink: each file's bytes and
    mtime, each symlink's target, each directory's mtime (which any change inside moves)."""
    seen: dict[str, object] = {}
    for here, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(here, name)
            info = path.lstat()
            rel = str(path.relative_to(top))
            if stat.S_ISLNK(info.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):  # a huge (sparse) planted file by its size
                data = path.read_bytes() if info.st_size < HUGE else info.st_size
                seen[rel] = ("file", data, info.st_mtime_ns)
            else:
                seen[rel] = (stat.S_IFMT(info.st_mode), info.st_mtime_ns)
    return seen


def cache_warnings(recorded: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in recorded if issubclass(w.category, CacheWarning)]


class Outside:
    """A precious old directory tree next to the cache: it must survive every attack as it is
    (its names look like scratch and entry directories, to tempt a sweep)."""

    def __init__(self, path: Path, genuine_entry: Path) -> None:
        self.path = path
        (path / "notes").mkdir(parents=True)
        (path / "notes" / "thesis.tex").write_text("\\section{Results}")
        (path / f"{OTHER_KEY}.4242.deadbeef").mkdir()
        (path / f"{OTHER_KEY}.4242.deadbeef" / "a0.npy").write_bytes(b"precious")
        self.entry = path / "copy" / KEY  # a genuine entry, for symlinks to point at
        shutil.copytree(genuine_entry, self.entry)
        for here, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.utime(Path(here, name), (TWO_HOURS_AGO, TWO_HOURS_AGO))
        os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO))
        self.before = tree(path)

    def untouched(self) -> bool:
        return tree(self.path) == self.before


@pytest.fixture
def store(tmp_path: Path) -> DiskStore:
    """A cache holding one genuine pulse entry."""
    made = DiskStore(tmp_path / "cache")
    made.put(KEY, pulse())
    return made


@pytest.fixture
def outside(tmp_path: Path, store: DiskStore) -> Outside:
    return Outside(tmp_path / "precious", entry_path(store.root, KEY))


def assert_miss_left_alone(
    store: DiskStore, recwarn: pytest.WarningsRecorder, outside: Outside, why: str
) -> None:
    """A get is a miss with one warning saying ``why``, and nothing anywhere changed."""
    before = tree(store.root)
    assert store.get(KEY) is None
    messages = cache_warnings(recwarn.list)
    assert len(messages) == 1 and why in messages[0], messages
    assert tree(store.root) == before and outside.untouched()


def replace_with_symlink(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


# --- symlinks at the root, a shard and an entry ---------------------------------------------------


def test_a_symlinked_tmp_is_never_written_into_or_swept(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder
) -> None:
    replace_with_symlink(store.root / "tmp", outside.path)
    fresh = DiskStore(store.root)  # a new process: it has not swept yet
    fresh.put(OTHER_KEY, pulse())
    [message] = cache_warnings(recwarn.list)
    assert "not writing entry" in message and "tmp is a symbolic link" in message
    assert not fresh.contains(OTHER_KEY) and outside.untouched()
    fresh.delete(KEY)  # deleting needs tmp too: refused, not followed
    assert_is_pulse(fresh.get(KEY))
    with pytest.raises(CacheError, match="tmp is a symbolic link"):
        DiskStore(store.root, strict=True).put(OTHER_KEY, pulse())
    assert outside.untouched()


@pytest.mark.parametrize("level", [1, 2, 3], ids=["layout dir", "shard", "sub-shard"])
def test_a_symlinked_layout_or_shard_dir_is_never_followed(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder, level: int
) -> None:
    """The symlink leads to a genuine copy of the entries: still a miss, since nothing below
    the root is reached through a link; writes through it are refused."""
    real = entry_path(store.root, KEY).parents[3 - level]
    copy = outside.path / "layout"
    shutil.copytree(real, copy)
    outside.before = tree(outside.path)
    replace_with_symlink(real, copy)
    assert_miss_left_alone(store, recwarn, outside, "is a symbolic link")
    assert not store.contains(KEY) and len(store) == 0
    store.put(KEY, pulse())
    [_, refused] = cache_warnings(recwarn.list)
    assert "not writing entry" in refused and outside.untouched()
    with pytest.raises(CacheError, match="is a symbolic link"):
        DiskStore(store.root, strict=True).put(KEY, pulse())
    store.clear()  # removes the link, never what it points at
    assert outside.untouched()


def test_a_symlinked_entry_dir_is_never_followed_and_delete_removes_only_the_link(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder
) -> None:
    replace_with_symlink(entry_path(store.root, KEY), outside.entry)
    assert_miss_left_alone(store, recwarn, outside, f"{KEY} is a symbolic link")
    assert not store.contains(KEY)
    with pytest.raises(CacheError, match="is a symbolic link"):
        DiskStore(store.root, strict=True).put(KEY, pulse())
    store.delete(KEY)
    assert not entry_path(store.root, KEY).is_symlink() and outside.untouched()
    store.put(KEY, pulse())
    assert_is_pulse(store.get(KEY))


def test_a_root_reached_through_a_symlink_is_the_users_choice(tmp_path: Path) -> None:
    (tmp_path / "scratch-disk").mkdir()
    (tmp_path / "cache").symlink_to(tmp_path / "scratch-disk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DiskStore(tmp_path / "cache").put(KEY, pulse())
        assert_is_pulse(DiskStore(tmp_path / "cache").get(KEY))
    assert entry_path(tmp_path / "scratch-disk", KEY).is_dir()


# --- what stands where an entry file belongs ---------------------------------------------------

FILES = ["meta.json", "a0.npy", "a1.npy", "blob.pkl"]


@pytest.mark.parametrize("target", ["the genuine file", "/dev/zero"])
@pytest.mark.parametrize("name", FILES)
def test_a_symlink_is_refused_wherever_it_points(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder, name: str, target: str
) -> None:
    aim = outside.entry / name if target == "the genuine file" else Path(target)
    replace_with_symlink(entry_path(store.root, KEY) / name, aim)
    assert_miss_left_alone(store, recwarn, outside, f"{name} is a symbolic link")


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a device node")


@pytest.mark.parametrize("kind", ["fifo", pytest.param("device", marks=ROOT_ONLY), "directory"])
@pytest.mark.parametrize("name", FILES)
def test_what_is_not_a_regular_file_is_never_read(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder, name: str, kind: str
) -> None:
    """A FIFO must not block the reader; a device node like /dev/zero (what a hard link to it
    would be, were links able to cross filesystems) must not be read without end."""
    path = entry_path(store.root, KEY) / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path, 0o400)
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o444, os.stat("/dev/zero").st_rdev)
    else:
        path.mkdir()
    assert_miss_left_alone(store, recwarn, outside, f"{name} is not a regular file")


def test_an_entry_dir_that_is_a_fifo_never_blocks(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder
) -> None:
    path = entry_path(store.root, KEY)
    shutil.rmtree(path)
    os.mkfifo(path, 0o600)
    assert_miss_left_alone(store, recwarn, outside, f"{KEY} is not a directory")
    assert not store.contains(KEY)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the reads the disk store asks for."""
    asked: list[int] = []
    real = disk_module._read_fd

    def spy(fd: int, size: int) -> bytes:
        asked.append(size)
        return real(fd, size)

    monkeypatch.setattr(disk_module, "_read_fd", spy)
    return asked


@pytest.mark.parametrize("name", FILES)
def test_a_huge_file_is_never_read(
    store: DiskStore,
    outside: Outside,
    recwarn: pytest.WarningsRecorder,
    reads: list[int],
    name: str,
) -> None:
    path = entry_path(store.root, KEY) / name
    path.unlink()
    with open(path, "wb") as fh:
        fh.truncate(HUGE)
    path.chmod(0o444)
    why = f"more than the {META_MAX_BYTES} allowed" if name == "meta.json" else "expected"
    assert_miss_left_alone(store, recwarn, outside, why)
    assert max(reads, default=0) <= META_MAX_BYTES


def test_a_blob_claimed_huge_is_not_read_before_the_signature_fails(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder, reads: list[int]
) -> None:
    """The attacker records the huge size (checksums are public); only the signature, checked
    first, stands between the reader and a 64 GiB read."""
    entry = entry_path(store.root, KEY)
    meta = (entry / "meta.json").read_text()
    size = json.loads(meta)["body"]["blob"]["nbytes"]
    head, _, body = meta.replace(
        f'"blob":{{"nbytes":{size},', f'"blob":{{"nbytes":{HUGE},'
    ).partition(',"body":')
    old_digest = json.loads(head + "}")["xxh3"]
    head = head.replace(old_digest, xxhash.xxh3_128_hexdigest(body[:-1].encode()))
    assert str(HUGE) in body
    (entry / "meta.json").unlink()
    (entry / "meta.json").write_text(f'{head},"body":{body}')
    (entry / "blob.pkl").unlink()
    with open(entry / "blob.pkl", "wb") as fh:
        fh.truncate(HUGE)
    assert_miss_left_alone(store, recwarn, outside, "bad signature")
    assert max(reads) <= META_MAX_BYTES


@pytest.fixture(params=["chown", "other-euid"])
def not_ours(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Makes files someone else's: a real chown as root, else a reader that runs as another
    uid (its key read first, as that uid would have its own)."""

    def make(store: DiskStore, *paths: Path) -> None:
        if request.param == "chown":
            if os.geteuid() != 0:
                pytest.skip("only root can give a file away")
            for path in paths:
                os.chown(path, os.geteuid() + 4242, -1, follow_symlinks=False)
        else:
            store.signer.digest_seed()
            uid = os.geteuid() + 4242
            monkeypatch.setattr(disk_module.os, "geteuid", lambda: uid)

    yield make


def test_a_hard_link_to_another_users_file_is_refused(
    store: DiskStore,
    outside: Outside,
    recwarn: pytest.WarningsRecorder,
    not_ours: object,
) -> None:
    """A hard link to someone else's copy of meta.json: the same bytes, but not ours."""
    theirs = outside.path / "their-meta.json"
    shutil.copy(outside.entry / "meta.json", theirs)
    meta = entry_path(store.root, KEY) / "meta.json"
    meta.unlink()
    os.link(theirs, meta)
    not_ours(store, meta)  # type: ignore[operator]
    outside.before = tree(outside.path)  # their file, linked and given away: as it is now
    assert_miss_left_alone(store, recwarn, outside, "belongs to uid")


# --- the scratch sweep -------------------------------------------------------------------------


def old(path: Path) -> Path:
    os.utime(path, (TWO_HOURS_AGO, TWO_HOURS_AGO), follow_symlinks=False)
    return path


def test_the_sweep_removes_only_old_scratch_dirs_of_ours(
    store: DiskStore, outside: Outside, tmp_path: Path
) -> None:
    tmp = store.root / "tmp"
    crashed = tmp / f"{OTHER_KEY}.4242.0badf00d"  # a crashed writer's: swept
    crashed.mkdir()
    (crashed / "meta.json").write_text("{}")
    (crashed / "escape").symlink_to(outside.path)  # unlinked, never followed
    (crashed / "a0.npy").symlink_to(outside.path / "notes" / "thesis.tex")
    old(crashed)
    trash = tmp / "trash.0123456789ab"  # a deletion that died: swept
    trash.mkdir()
    old(trash)
    fresh = tmp / f"{OTHER_KEY}.4243.0badf00d"  # a writer at work: kept
    fresh.mkdir()
    stranger = tmp / "results-of-bob"  # not a name the store makes: kept
    stranger.mkdir()
    old(stranger)
    link = tmp / f"{OTHER_KEY}.4244.0badf00d"  # a link with a scratch name: kept, not followed
    link.symlink_to(outside.path / f"{OTHER_KEY}.4242.deadbeef")
    old(link)
    DiskStore(store.root).put(OTHER_KEY, pulse())
    assert sorted(p.name for p in tmp.iterdir()) == sorted([fresh.name, stranger.name, link.name])
    assert outside.untouched()


def test_the_sweep_keeps_old_scratch_dirs_of_other_users(
    store: DiskStore, outside: Outside, not_ours: object
) -> None:
    theirs = store.root / "tmp" / f"{OTHER_KEY}.4242.0badf00d"
    theirs.mkdir()
    (theirs / "a0.npy").write_bytes(b"another user's write in progress")
    not_ours(store, theirs)  # type: ignore[operator]
    old(theirs)
    DiskStore(store.root, signer=store.signer).put(OTHER_KEY, pulse())  # a new process sweeps
    assert (theirs / "a0.npy").exists() and outside.untouched()


def test_scratch_names_are_recognised() -> None:
    assert is_scratch_name(f"{KEY}.123.0badf00d") and is_scratch_name("trash.0123456789ab")
    for name in (
        "tmp",
        "notes",
        f"{KEY}.123",
        f"{KEY}.x.0badf00d",
        "trash.",
        f"../{KEY}.1.abcdef01",
    ):
        assert not is_scratch_name(name), name


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_a_tmp_that_is_not_a_directory_refuses_writes_without_hanging(
    store: DiskStore, outside: Outside, recwarn: pytest.WarningsRecorder, kind: str
) -> None:
    tmp = store.root / "tmp"
    shutil.rmtree(tmp)
    if kind == "fifo":
        os.mkfifo(tmp, 0o600)
    else:
        tmp.write_text("not a directory")
    store.put(OTHER_KEY, pulse())
    [message] = cache_warnings(recwarn.list)
    assert "tmp is not a directory" in message
    assert not store.contains(OTHER_KEY) and outside.untouched()
    assert_is_pulse(store.get(KEY))


# --- our own key, and other users' keys ---------------------------------------------------------


def test_a_key_problem_of_ours_comes_out_before_any_entry_is_touched(
    store: DiskStore, recwarn: pytest.WarningsRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def touched(*args: object, **kwargs: object) -> int:
        raise AssertionError("an entry was opened without a key to check it")

    monkeypatch.setattr(disk_module, "open_dirs", touched)
    keyless = EntrySigner(env_only=True)  # a shared cache's signer, with no key in the env
    assert DiskStore(store.root, signer=keyless).get(KEY) is None
    [message] = cache_warnings(recwarn.list)
    assert "cannot check entry" in message and "PHYS_PIPELINE_CACHE_KEY" in message
    with pytest.raises(CacheError, match="PHYS_PIPELINE_CACHE_KEY"):
        DiskStore(store.root, signer=keyless, strict=True).get(KEY)
    monkeypatch.undo()
    assert_is_pulse(store.get(KEY))


ALICE = EntrySigner("alice's secret, never shared with bob")
BOB = EntrySigner("bob's secret, never shared with alice")


def entries_on_disk(root: Path) -> dict[str, dict[str, object]]:
    return {p.name: tree(p) for p in (root / "v2").glob("*/*/*")}


def test_two_keys_on_one_cache_never_erase_each_others_entries(tmp_path: Path) -> None:
    """Alice and Bob share a directory with different keys. Each run (a new process: a new
    store) gets right results, warns at most once however many of the other's entries it met,
    and leaves every entry on disk as it was."""
    root = tmp_path / "shared"
    starts = {"march": SimpleState("march data"), "april": SimpleState("april data")}
    want = {name: DagExecutor().run(start, diamond()) for name, start in starts.items()}
    owners: dict[str, EntrySigner] = {}  # entry key -> whose key signed it
    runs = [  # who, which data, whether the entries there are the other's, nodes that ran
        (ALICE, "march", False, 5),  # fills the cache
        (BOB, "march", True, 5),  # meets Alice's 5 entries
        (BOB, "april", False, 5),  # files his own
        (ALICE, "april", True, 5),
        (ALICE, "march", False, 0),  # her entries are still there, and hers
        (BOB, "april", False, 0),
        (BOB, "march", True, 5),
    ]
    for signer, month, foreign, ran in runs:
        store = DiskStore(root, signer=signer)
        kept = entries_on_disk(root)
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            got = DagExecutor(cache=store).run(starts[month], diamond())
        assert got.metrics == want[month].metrics and len(got.ran) == ran
        assert len(cache_warnings(recorded)) == foreign
        assert store.skipped.get("unauthenticated", 0) == (5 if foreign else 0)
        now = entries_on_disk(root)
        assert {k: now[k] for k in kept} == kept  # nothing removed or changed
        for key in set(now) - set(kept):
            owners[key] = signer
    assert len(owners) == 10
    for key, signer in owners.items():  # and each still reads back for its owner
        assert DiskStore(root, signer=signer).load(key) is not None


# --- what the writer keeps within bounds -------------------------------------------------------


def test_json_too_large_for_meta_json_is_pickled_instead(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "cache")
    samples = [float(i) / 7 for i in range(200_000)]  # ~4 MB as JSON
    store.put(KEY, StageResult(SimpleState({"samples": samples}), {"n": 200_000.0}))
    entry = entry_path(store.root, KEY)
    assert (entry / "meta.json").stat().st_size <= META_MAX_BYTES
    assert (entry / "blob.pkl").exists()
    back = store.get(KEY)
    assert back.state.payload["samples"] == samples and back.metrics == {"n": 200_000.0}


def test_an_entry_whose_meta_json_cannot_fit_is_not_written(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    store = DiskStore(tmp_path / "cache")
    lazy = {f"figure-{i:06d}-{'x' * 60}": (lambda: None) for i in range(20_000)}
    store.put(KEY, StageResult(SimpleState(1.0), artifacts=lazy))  # their names are listed
    [message] = cache_warnings(recwarn.list)
    assert f"over {META_MAX_BYTES} bytes" in message
    assert not store.contains(KEY) and list((store.root / "tmp").iterdir()) == []
