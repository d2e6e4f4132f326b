"""Tampered, forged and replayed cache entries, on disk and in Redis, seen through a real run:
the node is recomputed with one CacheWarning, the result is right, and no forged pickle ever
reaches an unpickler (its payload would run a shell command that creates a marker file)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shlex
import shutil
import struct
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import xxhash
from dag_stages import GridCfg, GridStage, PhaseCfg, PhaseStage

import phys_pipeline.cache.codec as codec
from phys_pipeline.cache import CacheWarning, DiskStore, RedisStore
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.types import (
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    State,
)

pytestmark = pytest.mark.usefixtures("isolated_cache_key")


# --- a small DAG with JSON entries and signed-pickle entries ----------------------------------


def rewrite(path: Path, data: bytes | str) -> None:
    """Replace an entry file's content, as its owner could (entry files are written read-only,
    so this works as a normal user too)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o644)


class Detector:
    def __init__(self, name: str, efficiency: float) -> None:
        self.name, self.efficiency = name, efficiency


@dataclass(slots=True)
class BeamState(State):
    """A user state holding an arbitrary object: cached as a signed pickle."""

    field: np.ndarray
    detector: Any

    def deepcopy(self) -> BeamState:
        return BeamState(self.field.copy(), self.detector)

    def hashable_repr(self) -> bytes:
        return self.field.tobytes() + repr(vars(self.detector)).encode()


class BeamCfg(StageConfig):
    waist: float = 0.2


class Beam(PipelineStage[SimpleState, BeamCfg]):
    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        field = np.exp(-((state.meta["omega"] / self.cfg.waist) ** 2))
        return StageResult(BeamState(field, Detector("ccd", 0.8)), {"power": float(field.sum())})


def nodes() -> list[NodeSpec]:
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(name="grid", N=4096))),
        NodeSpec(id="p1", deps=["grid"], stage=PhaseStage(PhaseCfg(name="p1", gdd=3.0))),
        NodeSpec(id="beam", deps=["grid"], stage=Beam(BeamCfg(name="beam"))),
        NodeSpec(id="wide", deps=["grid"], stage=Beam(BeamCfg(name="wide", waist=0.5))),
    ]


def same_results(got: DagRunResult, want: DagRunResult) -> None:
    assert got.metrics == want.metrics
    for nid, result in want.results.items():
        assert bytes(got.results[nid].state.hashable_repr()) == bytes(result.state.hashable_repr())


# --- what an attacker writes ------------------------------------------------------------------


class ShellOut:
    """Unpickling this runs a shell command creating ``marker``: an attacker's code running."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def shell_result(marker: Path) -> StageResult:
    return StageResult(BeamState(np.ones(4096), ShellOut(marker)), {"power": 1.0})


def reseal(doc: dict, blob: bytes | None) -> None:
    """Put ``blob`` in, then recompute every public checksum; only the HMAC stays stale."""
    if blob is not None:
        doc["body"]["blob"] = {"nbytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    body = json.dumps(doc["body"], separators=(",", ":"), ensure_ascii=True).encode()
    doc["xxh3"] = xxhash.xxh3_128_hexdigest(body)


def npy_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return buffer.getvalue()


def record_unkeyed(index: int, data: bytes) -> Callable[[dict], None]:
    """Describe ``data`` as array ``index`` with the digest anyone can compute (unseeded xxh3),
    then reseal: what an attacker without the key can do."""

    def edit(doc: dict) -> None:
        doc["body"]["arrays"][index].update(
            nbytes=len(data), digest=xxhash.xxh3_128_hexdigest(data)
        )
        reseal(doc, None)

    return edit


def double_a_metric(doc: dict) -> None:
    """An edit by hand: a metric value changed, the checksums left alone."""
    metrics = doc["body"]["metrics"]
    name = next(iter(metrics))
    metrics[name] = 2 * metrics[name] + 1


# --- the two stores, seen as raw bytes ----------------------------------------------------------


class DiskSlots:
    keeps_bad_entries = True  # readers never delete, writers never replace: only prune does

    def __init__(self, tmp_path: Path) -> None:
        self.store = DiskStore(tmp_path / "cache")

    def files(self, key: str) -> dict[str, bytes]:
        return {f.name: f.read_bytes() for f in self.path(key).iterdir()}

    def forger(self, signer: EntrySigner) -> DiskStore:
        return DiskStore(self.store.root, signer=signer)

    def path(self, key: str) -> Path:
        return entry_path(self.store.root, key)

    def edit_meta(self, key: str, edit: Callable[[dict], None], blob: bytes | None = None) -> None:
        meta = self.path(key) / "meta.json"
        doc = json.loads(meta.read_bytes())
        edit(doc)
        if blob is not None:
            rewrite(meta.parent / "blob.pkl", blob)
        rewrite(meta, json.dumps(doc))

    def flip_last_array_byte(self, key: str) -> None:
        npy = self.path(key) / "a0.npy"
        data = bytearray(npy.read_bytes())
        data[-1] ^= 0x40
        rewrite(npy, bytes(data))

    def read_first_array(self, key: str) -> np.ndarray:
        return np.load(self.path(key) / "a0.npy", allow_pickle=False)

    def write_first_array(self, key: str, data: bytes) -> None:
        rewrite(self.path(key) / "a0.npy", data)

    def copy(self, source: str, target: str) -> None:
        shutil.rmtree(self.path(target))
        shutil.copytree(self.path(source), self.path(target))


class RedisSlots:
    keeps_bad_entries = False  # readers leave a bad value, and the next put overwrites it

    def __init__(self, url: str) -> None:
        self.store = RedisStore(url, prefix=f"tamper-{uuid.uuid4().hex[:8]}")
        self.client = redis.Redis.from_url(url)

    def forger(self, signer: EntrySigner) -> RedisStore:
        return RedisStore(self.store.url, self.store.prefix, signer=signer)

    def name(self, key: str) -> str:
        return f"{self.store.prefix}:v1:{key}"

    def split(self, key: str) -> tuple[dict, bytes, bytes]:
        """The frame's meta document, its arrays' bytes and its blob."""
        frame = self.client.get(self.name(key))
        assert frame[:8] == b"PPCACHE1"
        (meta_len,) = struct.unpack(">I", frame[8:12])
        doc = json.loads(frame[12 : 12 + meta_len])
        data = frame[12 + meta_len :]
        array_bytes = sum(record["nbytes"] for record in doc["body"]["arrays"])
        return doc, data[:array_bytes], data[array_bytes:]

    def join(self, key: str, doc: dict, arrays: bytes, blob: bytes) -> None:
        meta = json.dumps(doc, indent=1).encode()
        frame = b"PPCACHE1" + struct.pack(">I", len(meta)) + meta + arrays + blob
        self.client.set(self.name(key), frame)

    def edit_meta(self, key: str, edit: Callable[[dict], None], blob: bytes | None = None) -> None:
        doc, arrays, old_blob = self.split(key)
        edit(doc)
        self.join(key, doc, arrays, old_blob if blob is None else blob)

    def flip_last_array_byte(self, key: str) -> None:
        doc, arrays, blob = self.split(key)
        self.join(key, doc, arrays[:-1] + bytes([arrays[-1] ^ 0x40]), blob)

    def read_first_array(self, key: str) -> np.ndarray:
        doc, arrays, _ = self.split(key)
        return np.load(io.BytesIO(arrays[: doc["body"]["arrays"][0]["nbytes"]]))

    def write_first_array(self, key: str, data: bytes) -> None:
        doc, arrays, blob = self.split(key)
        self.join(key, doc, data + arrays[doc["body"]["arrays"][0]["nbytes"] :], blob)

    def copy(self, source: str, target: str) -> None:
        self.client.set(self.name(target), self.client.get(self.name(source)))

    def close(self) -> None:
        self.store.clear()
        self.client.close()


@pytest.fixture(params=["disk", "redis"])
def slots(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DiskSlots | RedisSlots]:
    if request.param == "disk":
        yield DiskSlots(tmp_path)
        return
    made = RedisSlots(request.getfixturevalue("redis_url"))
    yield made
    made.close()


@pytest.fixture
def unpickled(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every byte string handed to an unpickler while the test runs: the codec's own
    out-of-band unpickler and the pickle module's entry points."""
    seen: list[bytes] = []

    class SpyUnpickler(codec._OutOfBandUnpickler):
        def __init__(self, file: Any, *args: Any) -> None:
            data = file.read()
            seen.append(data)
            super().__init__(io.BytesIO(data), *args)

    real_loads, real_load, real_unpickler = pickle.loads, pickle.load, pickle.Unpickler

    def loads(data: bytes, *args: Any, **kwargs: Any) -> Any:
        seen.append(bytes(data))
        return real_loads(data, *args, **kwargs)

    def load(file: Any, *args: Any, **kwargs: Any) -> Any:
        data = file.read()
        seen.append(data)
        return real_load(io.BytesIO(data), *args, **kwargs)

    class Unpickler(real_unpickler):  # type: ignore[misc, valid-type]
        def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
            data = file.read()
            seen.append(data)
            super().__init__(io.BytesIO(data), *args, **kwargs)

    monkeypatch.setattr(codec, "_OutOfBandUnpickler", SpyUnpickler)
    monkeypatch.setattr(pickle, "loads", loads)
    monkeypatch.setattr(pickle, "load", load)
    monkeypatch.setattr(pickle, "Unpickler", Unpickler)
    return seen


# --- tampering --------------------------------------------------------------------------------


def edit_metadata_value(slots: Any, keys: dict[str, str], marker: Path) -> str:
    slots.edit_meta(keys["p1"], double_a_metric)
    return "p1"


def change_array_bytes(slots: Any, keys: dict[str, str], marker: Path) -> str:
    slots.flip_last_array_byte(keys["beam"])
    return "beam"


def forge_with_another_signing_key(slots: Any, keys: dict[str, str], marker: Path) -> str:
    slots.store.delete(keys["beam"])
    slots.forger(EntrySigner("the attacker's own key")).put(keys["beam"], shell_result(marker))
    return "beam"


def swap_in_a_malicious_pickle(slots: Any, keys: dict[str, str], marker: Path) -> str:
    blob = pickle.dumps([ShellOut(marker)], protocol=5)
    slots.edit_meta(keys["beam"], lambda doc: reseal(doc, blob), blob=blob)
    return "beam"


def replay_another_nodes_signed_entry(slots: Any, keys: dict[str, str], marker: Path) -> str:
    slots.copy(keys["beam"], keys["wide"])  # genuinely signed, but for another key
    return "wide"


def rewrite_data_array_with_public_digest(slots: Any, keys: dict[str, str], marker: Path) -> str:
    """A data-only entry (no pickle): its grid rewritten and described by unseeded xxh3."""
    forged = npy_bytes(2.0 * slots.read_first_array(keys["p1"]))
    slots.write_first_array(keys["p1"], forged)
    slots.edit_meta(keys["p1"], record_unkeyed(0, forged))
    return "p1"


def forge_data_entry_with_another_signing_key(
    slots: Any, keys: dict[str, str], marker: Path
) -> str:
    omega = np.linspace(-1.0, 1.0, 4096)
    forged = StageResult(SimpleState(None, {"omega": omega, "phase": 0 * omega}), {"max_phase": 0})
    slots.store.delete(keys["p1"])
    slots.forger(EntrySigner("the attacker's own key")).put(keys["p1"], forged)
    return "p1"


def strip_the_signature_of_a_data_entry(slots: Any, keys: dict[str, str], marker: Path) -> str:
    slots.edit_meta(keys["p1"], lambda doc: doc.update(hmac=None))
    return "p1"


TAMPERING = {
    "metadata value edited": (edit_metadata_value, "checksum"),
    "array bytes changed": (change_array_bytes, "checksum"),
    "forged with another signing key": (forge_with_another_signing_key, "signature"),
    "malicious pickle, checksums redone": (swap_in_a_malicious_pickle, "signature"),
    "entry copied from another key's slot": (replay_another_nodes_signed_entry, "foreign"),
    "data array rewritten, public digests redone": (
        rewrite_data_array_with_public_digest,
        "signature",
    ),
    "data entry forged with another signing key": (
        forge_data_entry_with_another_signing_key,
        "signature",
    ),
    "data entry with its signature removed": (strip_the_signature_of_a_data_entry, "unsigned"),
}


@pytest.mark.parametrize(("tamper", "reason"), TAMPERING.values(), ids=TAMPERING.keys())
def test_tampered_entry_is_recomputed_and_never_unpickled(
    slots: Any,
    tamper: Callable[..., str],
    reason: str,
    tmp_path: Path,
    unpickled: list[bytes],
) -> None:
    marker = tmp_path / "pwned"
    first = DagExecutor(cache=slots.store).run(SimpleState(None), nodes())
    victim = tamper(slots, first.plan.keys, marker)
    assert not marker.exists()  # writing the forgery ran nothing
    unpickled.clear()
    bad = slots.files(first.plan.keys[victim]) if slots.keeps_bad_entries else None

    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        second = DagExecutor(cache=slots.store).run(SimpleState(None), nodes())
    messages = [str(w.message) for w in recorded]
    assert len(messages) == 1 and issubclass(recorded[0].category, CacheWarning), messages
    assert reason in messages[0] and first.plan.keys[victim] in messages[0]
    assert second.ran == [victim]
    assert second.runs[victim].reason == "cache entry unreadable"
    same_results(second, first)

    assert not marker.exists()
    assert not any(str(marker).encode() in data for data in unpickled)

    with warnings.catch_warnings():  # this store has warned about this kind of entry already
        warnings.simplefilter("error")
        third = DagExecutor(cache=slots.store).run(SimpleState(None), nodes())
    same_results(third, first)
    if not slots.keeps_bad_entries:  # the recomputed node replaced the bad entry
        assert third.ran == []
        return
    assert third.ran == [victim]  # the bad entry is still there, as it was
    assert slots.files(first.plan.keys[victim]) == bad
    with warnings.catch_warnings(record=True) as recorded:  # a new store (process) warns again
        warnings.simplefilter("always")
        fourth = DagExecutor(cache=DiskStore(slots.store.root)).run(SimpleState(None), nodes())
    assert fourth.ran == [victim] and len(recorded) == 1 and reason in str(recorded[0].message)
    same_results(fourth, first)


def test_a_genuine_shell_out_entry_would_run(slots: Any, tmp_path: Path, unpickled: list) -> None:
    """Control: the same payload, written with our own key, does reach pickle and run, so the
    spy sees unpickling and the marker would show it."""
    marker = tmp_path / "pwned"
    key = "0123456789abcdef0123456789abcdef"
    slots.store.put(key, shell_result(marker))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)  # os.system's result is not a Detector
        slots.store.get(key)
    assert marker.exists()
    assert any(str(marker).encode() in data for data in unpickled)
