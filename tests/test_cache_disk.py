"""DiskStore: layout, corruption, forgery and concurrent writers."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xxhash
from stages.states import Trace
from tripwire import Tripwire

from phys_pipeline.cache import CacheWarning, DiskStore
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.cache.frozen import FrozenMapping
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.errors import CacheError
from phys_pipeline.types import SimpleState, StageResult

pytestmark = pytest.mark.usefixtures("isolated_cache_key")

KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"


def rewrite(path: Path, data: bytes | str) -> None:
    """Replace an entry file's content, as its owner could (entry files are written read-only,
    so this works as a normal user too)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o644)


def json_result() -> StageResult:
    arrays = {"psi": np.linspace(0, 1, 50_000), "k": np.arange(8, dtype=np.int32)}
    return StageResult(SimpleState(arrays, {"N": 8}), metrics={"norm": 1.0})


def pickle_result() -> StageResult:
    return StageResult(Trace(np.arange(6.0), {"unit": ("V", "m")}), metrics={"peak": 5.0})


def entry(cache: DiskStore, key: str = KEY) -> Path:
    return entry_path(cache.root, key)


def canonical(body: dict) -> bytes:
    """The documented form that checksums and signatures cover."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def reseal(meta_path: Path, edit: Callable[[dict], None], blob: bytes | None = None) -> None:
    """Edit an entry's body as an attacker would: everything but the HMAC (and the keyed array
    digests) can be recomputed, since the format, the body's xxh3 and the blob's SHA-256 are
    public."""
    doc = json.loads(meta_path.read_bytes())
    if blob is not None:
        doc["body"]["blob"] = {"nbytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        rewrite(meta_path.parent / "blob.pkl", blob)
    edit(doc)
    doc["xxh3"] = xxhash.xxh3_128_hexdigest(canonical(doc["body"]))
    rewrite(meta_path, json.dumps(doc))


def cache_warnings(recorded: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in recorded if issubclass(w.category, CacheWarning)]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: what a reader must leave as it found it."""
    return {str(f.relative_to(path)): f.read_bytes() for f in path.rglob("*") if f.is_file()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A cache directory beside (never around) the test's key file."""
    return tmp_path / "cache"


# --- layout and basics ----------------------------------------------------------------------


def test_entries_are_sharded_directories_of_meta_and_npy(root: Path) -> None:
    cache = DiskStore(root)
    cache.put(KEY, json_result())
    path = entry(cache)
    assert path.relative_to(root).parts == ("v2", "01", "23", KEY)
    assert sorted(p.name for p in path.iterdir()) == ["a0.npy", "a1.npy", "meta.json"]
    assert np.load(path / "a0.npy", allow_pickle=False).shape == (50_000,)


def test_contains_delete_clear_and_len(root: Path) -> None:
    cache = DiskStore(root)
    assert not cache.contains(KEY) and cache.get(KEY) is None and len(cache) == 0
    cache.put(KEY, json_result())
    cache.put(OTHER_KEY, pickle_result())
    assert cache.contains(KEY) and cache.contains(OTHER_KEY) and len(cache) == 2
    cache.delete(KEY)
    assert not cache.contains(KEY) and cache.get(KEY) is None and len(cache) == 1
    cache.clear()
    assert len(cache) == 0 and cache.get(OTHER_KEY) is None
    cache.put(KEY, json_result())  # usable after clear
    assert cache.get(KEY) is not None


def test_root_is_fixed_at_construction_and_the_store_pickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cache = DiskStore("cache")
    monkeypatch.chdir("/")
    cache.put(KEY, pickle_result())
    assert entry(cache).is_relative_to(tmp_path / "cache")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.get(KEY).metrics == {"peak": 5.0}


def test_large_arrays_come_back_memory_mapped(root: Path) -> None:
    cache = DiskStore(root)
    cache.put(KEY, json_result())
    psi = cache.get(KEY).state.payload["psi"]
    assert type(psi) is np.ndarray and isinstance(psi.base, FrozenMapping)


def test_put_keeps_the_first_entry_for_a_key(root: Path) -> None:
    cache = DiskStore(root)
    cache.put(KEY, StageResult(SimpleState(1.0)))
    cache.put(KEY, StageResult(SimpleState(2.0)))
    assert cache.get(KEY).state.payload == 1.0


def test_write_failure_warns_or_raises_when_strict(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(CacheWarning, match="cannot write entry"):
        DiskStore(blocker / "cache").put(KEY, json_result())
    with pytest.raises(CacheError, match="cannot write entry"):
        DiskStore(blocker / "cache", strict=True).put(KEY, json_result())


# --- corruption: a miss, one warning, never an exception or a wrong result -------------------


def truncate_array(path: Path) -> None:
    npy = path / "a0.npy"
    rewrite(npy, npy.read_bytes()[: npy.stat().st_size // 2])


def flip_array_byte(path: Path) -> None:
    npy = path / "a0.npy"
    data = bytearray(npy.read_bytes())
    data[-3] ^= 0x01
    rewrite(npy, bytes(data))


def edit_meta_value(path: Path) -> None:
    meta = path / "meta.json"
    text = meta.read_text()
    assert '"norm":1.0' in text  # the edit below must change something
    rewrite(meta, text.replace('"norm":1.0', '"norm":2.0'))


def truncate_meta(path: Path) -> None:
    meta = path / "meta.json"
    rewrite(meta, meta.read_bytes()[:40])


def bump_format(path: Path) -> None:
    meta = path / "meta.json"
    doc = json.loads(meta.read_bytes())
    doc["format"] = 99
    rewrite(meta, json.dumps(doc))


def nest_meta_100k_deep(path: Path) -> None:
    rewrite(path / "meta.json", "[" * 100_000 + "]" * 100_000)


def swap_arrays(path: Path) -> None:
    a0, a1 = (path / "a0.npy").read_bytes(), (path / "a1.npy").read_bytes()
    rewrite(path / "a0.npy", a1)
    rewrite(path / "a1.npy", a0)


CORRUPTIONS = {
    "truncated npy": truncate_array,
    "flipped byte in array": flip_array_byte,
    "edited meta.json": edit_meta_value,
    "truncated meta.json": truncate_meta,
    "100k-deep nested meta.json": nest_meta_100k_deep,
    "wrong format version": bump_format,
    "swapped array files": swap_arrays,
    "deleted npy": lambda path: (path / "a1.npy").unlink(),
    "deleted meta.json": lambda path: (path / "meta.json").unlink(),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_entry_is_a_miss_with_one_warning_and_stays_until_deleted(
    corrupt: Callable[[Path], None], root: Path, recwarn: pytest.WarningsRecorder
) -> None:
    cache = DiskStore(root)
    cache.put(KEY, json_result())
    corrupt(entry(cache))
    before = snapshot(root)
    assert cache.get(KEY) is None
    assert len(cache_warnings(recwarn.list)) == 1
    # a reader deletes nothing, and warns once: the next miss is only counted
    assert cache.get(KEY) is None and len(cache_warnings(recwarn.list)) == 1
    assert sum(cache.skipped.values()) == 2
    cache.put(KEY, json_result())  # nor does a writer replace what it cannot read
    assert snapshot(root) == before and cache.get(KEY) is None
    cache.delete(KEY)  # removing it is an explicit act
    cache.put(KEY, json_result())
    assert cache.get(KEY).metrics == {"norm": 1.0}


def test_missing_blob_is_a_miss_with_one_warning(
    root: Path, recwarn: pytest.WarningsRecorder
) -> None:
    cache = DiskStore(root)
    cache.put(KEY, pickle_result())
    (entry(cache) / "blob.pkl").unlink()
    assert cache.get(KEY) is None
    assert len(cache_warnings(recwarn.list)) == 1


def test_entry_copied_to_another_keys_path_is_foreign(
    root: Path, recwarn: pytest.WarningsRecorder
) -> None:
    cache = DiskStore(root)
    cache.put(KEY, pickle_result())
    foreign = entry(cache, OTHER_KEY)
    foreign.parent.mkdir(parents=True)
    shutil.copytree(entry(cache), foreign)
    assert cache.get(OTHER_KEY) is None
    [message] = cache_warnings(recwarn.list)
    assert "foreign" in message
    assert cache.get(KEY) is not None  # the original is untouched


# --- forgery: nothing is unpickled unless the entry is authenticated -------------------------


def tripwire_result(marker: Path) -> StageResult:
    return StageResult(Trace(np.ones(2), Tripwire(marker)))


def test_tripwire_fires_when_a_genuine_entry_is_read(tmp_path: Path) -> None:
    """Control for the forgery tests: reading this entry does run the tripwire."""
    marker = tmp_path / "pwned"
    cache = DiskStore(tmp_path / "cache")
    cache.put(KEY, tripwire_result(marker))
    assert not marker.exists()  # pickling only recorded the call
    assert cache.get(KEY) is not None
    assert marker.exists()


def test_entry_signed_with_another_key_is_never_unpickled(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    marker = tmp_path / "pwned"
    attacker = EntrySigner("the attacker's own signing key")
    DiskStore(tmp_path / "cache", signer=attacker).put(KEY, tripwire_result(marker))
    assert not marker.exists()
    assert DiskStore(tmp_path / "cache").get(KEY) is None
    [message] = cache_warnings(recwarn.list)
    assert "signature" in message
    assert not marker.exists()


@pytest.mark.parametrize("resigned", [False, True], ids=["old signature", "control: re-signed"])
def test_blob_replaced_by_malicious_pickle_runs_only_if_re_signed(
    resigned: bool, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """Checksums are public, so the attacker fixes them; only the HMAC, which needs the
    secret, stands between the blob and pickle (the control shows the blob would run)."""
    marker = tmp_path / "pwned"
    cache = DiskStore(tmp_path / "cache")
    cache.put(KEY, pickle_result())
    blob = pickle.dumps([Tripwire(marker)])

    reseal(entry(cache) / "meta.json", lambda doc: None, blob=blob)
    if resigned:  # the body, which records the blob's digest, is all the HMAC covers
        doc = json.loads((entry(cache) / "meta.json").read_bytes())
        doc["hmac"] = EntrySigner().sign(canonical(doc["body"]))
        rewrite(entry(cache) / "meta.json", json.dumps(doc))
    assert cache.get(KEY) is None
    assert len(cache_warnings(recwarn.list)) == 1
    assert marker.exists() == resigned


@pytest.mark.parametrize("signature", ["kept", "removed"])
def test_json_entry_turned_into_a_pickle_is_never_unpickled(
    signature: str, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    marker = tmp_path / "pwned"
    cache = DiskStore(tmp_path / "cache")
    cache.put(KEY, json_result())

    def point_state_at_pickle(doc: dict) -> None:
        doc["body"]["state"] = {"$pickled": 0}
        if signature == "removed":
            doc["hmac"] = None

    reseal(entry(cache) / "meta.json", point_state_at_pickle, blob=pickle.dumps([Tripwire(marker)]))
    assert cache.get(KEY) is None
    [message] = cache_warnings(recwarn.list)
    assert ("bad signature" if signature == "kept" else "unsigned entry") in message
    assert not marker.exists()


def test_keyboard_interrupt_while_decoding_is_not_swallowed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phys_pipeline.cache.disk as disk

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    cache = DiskStore(root)
    cache.put(KEY, json_result())
    monkeypatch.setattr(disk, "read_header", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.get(KEY)
    monkeypatch.undo()
    assert cache.get(KEY).metrics == {"norm": 1.0}  # and the entry was left alone


# --- the signing key's file: private, and outside the cache ---------------------------------


def test_key_file_readable_by_others_is_refused_and_nothing_is_unpickled(
    root: Path, isolated_cache_key: Path, recwarn: pytest.WarningsRecorder
) -> None:
    marker = root.parent / "pwned"
    DiskStore(root).put(KEY, tripwire_result(marker))  # a genuine entry, made with the key
    isolated_cache_key.chmod(0o644)
    assert DiskStore(root).get(KEY) is None
    [message] = cache_warnings(recwarn.list)
    assert str(isolated_cache_key) in message and "0o644" in message
    assert not marker.exists()
    with pytest.raises(CacheError, match="0o644"):
        DiskStore(root, strict=True).get(KEY)
    isolated_cache_key.chmod(0o600)
    assert DiskStore(root).get(KEY) is not None  # the entry was kept: it was not at fault
    assert marker.exists()


def test_key_file_inside_the_cache_directory_is_refused(
    tmp_path: Path, isolated_cache_key: Path, recwarn: pytest.WarningsRecorder
) -> None:
    around_the_key = tmp_path  # the key file lives in tmp_path/config/...
    DiskStore(around_the_key).put(KEY, json_result())
    [message] = cache_warnings(recwarn.list)
    assert str(isolated_cache_key) in message and "inside the cache directory" in message
    assert not isolated_cache_key.exists()  # and none was created there
    with pytest.raises(CacheError, match="inside the cache directory"):
        DiskStore(around_the_key, strict=True).put(KEY, json_result())
    assert len(DiskStore(around_the_key)) == 0


def test_signer_that_read_its_key_inside_the_cache_directory_is_refused(
    tmp_path: Path, isolated_cache_key: Path
) -> None:
    signer = EntrySigner()
    DiskStore(tmp_path / "cache", signer=signer).put(KEY, json_result())
    assert isolated_cache_key.exists()
    with pytest.raises(CacheError, match=str(isolated_cache_key)):
        DiskStore(tmp_path, signer=signer)


def test_key_from_the_environment_may_serve_any_cache_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "shared team secret")
    cache = DiskStore(tmp_path)
    cache.put(KEY, json_result())
    assert cache.get(KEY).metrics == {"norm": 1.0}


# --- atomicity and sharing ------------------------------------------------------------------


def test_leftover_scratch_dir_of_a_crashed_writer_is_not_served(root: Path) -> None:
    cache = DiskStore(root)
    cache.put(KEY, json_result())
    scratch = root / "tmp" / f"{OTHER_KEY}.4242.deadbeef"
    shutil.copytree(entry(cache), scratch)  # complete content, never renamed into place
    reseal(scratch / "meta.json", lambda doc: doc["body"].update(key=OTHER_KEY))
    assert not cache.contains(OTHER_KEY)
    assert cache.get(OTHER_KEY) is None


def test_stale_scratch_dirs_are_swept_fresh_ones_kept(root: Path) -> None:
    stale = root / "tmp" / f"{OTHER_KEY}.4242.deadbeef"
    fresh = root / "tmp" / f"{OTHER_KEY}.4243.deadbeef"
    for path in (stale, fresh):
        path.mkdir(parents=True)
        rewrite(path / "a0.npy", b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    DiskStore(root).put(KEY, json_result())
    assert not stale.exists() and fresh.exists()


def test_writer_failing_midway_leaves_nothing_behind(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phys_pipeline.cache.disk as disk

    def crash(*args: object) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(disk, "seal", crash)
    cache = DiskStore(root)
    with pytest.raises(KeyboardInterrupt):
        cache.put(KEY, json_result())
    assert not cache.contains(KEY) and list((root / "tmp").iterdir()) == []


def expected_result(index: int) -> StageResult:
    rng = np.random.default_rng(index)
    if index % 2:
        return StageResult(Trace(rng.normal(size=40_000), ("T", index)), {"i": index})
    return StageResult(SimpleState({"psi": rng.normal(size=40_000), "i": index}), {"i": index})


def key_of(index: int) -> str:
    return xxhash.xxh3_128_hexdigest(str(index).encode())


def hammer(root: str, rounds: int) -> tuple[int, int, list[str]]:
    """Child process: read-or-write the same keys as its sibling; count hits and wrong hits."""
    cache = DiskStore(root)
    hits = wrong = 0
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        for _ in range(rounds):
            for index in range(12):
                got = cache.get(key_of(index))
                if got is None:
                    cache.put(key_of(index), expected_result(index))
                    continue
                hits += 1
                want = expected_result(index)
                payload = got.state.samples if index % 2 else got.state.payload["psi"]
                good = np.array_equal(
                    payload, want.state.samples if index % 2 else want.state.payload["psi"]
                )
                wrong += not (good and got.metrics == want.metrics)
    return hits, wrong, [str(w.message) for w in recorded]


def test_two_processes_sharing_a_cache_only_see_correct_hits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHYS_PIPELINE_CACHE_KEY", "shared by both processes")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        outcomes = pool.starmap(hammer, [(str(tmp_path), 4), (str(tmp_path), 4)])
    for hits, wrong, messages in outcomes:
        assert wrong == 0 and messages == []
        assert hits >= 12 * 3  # every key was written by round 1 at the latest
    cache = DiskStore(tmp_path)
    assert len(cache) == 12
    assert cache.get(key_of(3)).metrics == {"i": 3}
    assert list((tmp_path / "tmp").iterdir()) == []
