"""How a result is encoded, whatever the store: a JSON metadata document, arrays as ``.npy`` data
and, only for objects JSON cannot describe, one pickle whose arrays live out of band; every
entry is signed.

An entry is ``meta`` (JSON) + arrays (one ``.npy`` byte stream each) + an optional ``blob``.
``meta`` holds ``{"format", "body", "xxh3", "hmac"}``; the body holds the key, the state,
metrics, provenance and materialised artifacts as tagged JSON trees, plus the size and digest of
every array and the size and SHA-256 of the blob. ``xxh3`` (of the body) catches plain
corruption; ``hmac`` (HMAC-SHA256 with a secret kept outside the cache, see ``signing``)
authenticates the body of *every* entry, data-only or not, and through the body the size and
digest of everything else. An array's digest is xxh3-128 seeded with a value derived from the
secret, so it cannot be recomputed for substituted data without the key, yet checks at xxh3's
speed; the blob, which is unpickled, has a cryptographic digest. The signature is checked
before anything else of the entry is read, and then each part is read at the size the signed
body gives (so a planted huge file is never read), checked against its digest, and only then
decoded; the blob is written by cloudpickle (so classes defined in a notebook or a function, and
lambdas, are kept) and read by plain pickle.

What is kept: a :class:`SimpleState` whose payload and meta are JSON data (nested
dict/list/tuple/str/int/float/bool/None/complex/bytes, numpy scalars, ndarrays, and the physics
data types of ``datatypes``: masked and record arrays, pandas, xarray, pint and astropy
quantities, scipy.sparse) is stored as JSON + arrays with no pickle; any other state (user
classes, ``DagState``, SimpleState subclasses) is pickled, its ndarrays moved out of the
pickle. Metrics and provenance are JSON when they can be, else pickled. Artifacts: lazy
(callable) artifacts are dropped, as are materialised values JSON cannot describe (e.g.
figures); arrays, bytes, str and JSON data are kept. Decoded arrays are read-only. ``pack(...,
as_json=False)`` pickles what would have been JSON, for stores that cap the metadata's size.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import mmap
import pickle
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import cloudpickle
import numpy as np
import xxhash

from ..errors import CacheError
from ..types import SimpleState, StageResult, State
from .datatypes import NotJsonable, decode_data, encode_data
from .signing import EntrySigner

__all__ = [
    "FORMAT_VERSION",
    "EntryHeader",
    "EntryRejected",
    "EntrySource",
    "EntryUnauthenticated",
    "PackedResult",
    "check_digest",
    "check_size",
    "decode_entry",
    "entry_errors",
    "from_frame",
    "load_npy",
    "pack",
    "read_header",
    "seal",
    "to_frame",
    "write_npy",
]

# 2: every entry signed, keyed array digests; 3: read-only entry files; 4: the signature covers
# the body only, which records the blob's SHA-256, so it is checked before the blob is read
FORMAT_VERSION = 4
_FRAME_MAGIC = b"PPCACHE1"
_BODY_MARK = b',"body":'  # in a meta document as ``seal`` writes it, the body follows this
_frame_len = struct.Struct(">I")
_MAX_JSON_INT_BITS = 10_000  # ~3000 digits, safely below Python's int->str digit limit


class EntryRejected(Exception):
    """An entry failed a check (format, checksum, key, signature, decoding); stores turn this
    into a miss plus one CacheWarning, never into an exception for the caller."""


class EntryUnauthenticated(EntryRejected):
    """An entry whose signature is missing or does not verify with our key: written with
    another key (another user's, in a shared directory) or tampered with."""


@contextmanager
def entry_errors() -> Iterator[None]:
    """Whatever breaks while decoding an entry's bytes (RecursionError on absurd nesting,
    MemoryError on absurd sizes, ...) becomes EntryRejected, so a bad entry is a miss. A
    CacheError (no usable key) is not the entry's fault and passes, as do KeyboardInterrupt
    and SystemExit."""
    try:
        yield
    except (EntryRejected, CacheError):
        raise
    except Exception as exc:  # noqa: BLE001 - the protocol: a bad entry never raises
        raise EntryRejected(f"undecodable entry ({type(exc).__name__})") from None


def _xxh3(data: bytes | memoryview, seed: int = 0) -> str:
    return xxhash.xxh3_128_hexdigest(data, seed)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(body: Any) -> bytes:
    """The bytes that are checksummed and signed: compact JSON in the document's own key order
    (dict order is part of the data, and ``json.loads`` keeps it, so a re-dump matches)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _plain_array(obj: Any) -> bool:
    """An ndarray that ``.npy`` stores without pickle (no objects, no user-defined dtype)."""
    return (
        type(obj) in (np.ndarray, np.memmap)
        and not obj.dtype.hasobject
        and getattr(type(obj.dtype), "_legacy", True)
    )


class _ArrayTable:
    """Arrays gathered while encoding, deduplicated by identity so aliases stay aliases."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self._index: dict[int, int] = {}

    def add(self, arr: np.ndarray) -> int:
        index = self._index.get(id(arr))
        if index is None:
            index = self._index[id(arr)] = len(self.arrays)
            self.arrays.append(arr)
        return index

    def rollback(self, size: int) -> None:
        """Forget arrays added after the table had ``size`` entries (a failed JSON attempt)."""
        for arr in self.arrays[size:]:
            del self._index[id(arr)]
        del self.arrays[size:]


# --- JSON trees -----------------------------------------------------------------------------
# Plain dicts never have keys starting with "$", so a "$" key always marks a tagged value.


def _to_tree(obj: Any, table: _ArrayTable) -> Any:
    kind = type(obj)
    if obj is None or kind in (bool, str):
        return obj
    if kind is int:
        if obj.bit_length() > _MAX_JSON_INT_BITS:
            raise NotJsonable(kind)
        return obj
    if kind is float:
        return obj if math.isfinite(obj) else {"$float": repr(obj)}
    if kind is list:
        return [_to_tree(item, table) for item in obj]
    if kind is dict:
        if all(type(k) is str and not k.startswith("$") for k in obj):
            return {k: _to_tree(v, table) for k, v in obj.items()}
        return {"$items": [[_to_tree(k, table), _to_tree(v, table)] for k, v in obj.items()]}
    if kind is tuple:
        return {"$tuple": [_to_tree(item, table) for item in obj]}
    if kind is complex:
        return {"$complex": [_to_tree(obj.real, table), _to_tree(obj.imag, table)]}
    if kind is bytes:
        return {"$bytes": table.add(np.frombuffer(obj, dtype=np.uint8))}
    if _plain_array(obj):
        return {"$array": table.add(obj)}
    if isinstance(obj, np.generic):
        dtype = obj.dtype
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise NotJsonable(kind)
        return {"$scalar": dtype.str, "hex": obj.tobytes().hex()}
    data = encode_data(obj, lambda child: _to_tree(child, table))
    if data is None:
        raise NotJsonable(kind)
    return data


def _try_tree(obj: Any, table: _ArrayTable) -> Any:
    """The JSON tree of ``obj``, or raise NotJsonable leaving ``table`` as it was."""
    size = len(table.arrays)
    try:
        return _to_tree(obj, table)
    except (NotJsonable, RecursionError) as exc:
        table.rollback(size)
        raise NotJsonable(type(obj)) from exc


def _index(value: Any, arrays: list[np.ndarray]) -> np.ndarray:
    if type(value) is not int or not 0 <= value < len(arrays):
        raise EntryRejected(f"array reference {value!r} out of range")
    return arrays[value]


def _from_tree(node: Any, arrays: list[np.ndarray]) -> Any:
    kind = type(node)
    if node is None or kind in (bool, str, int, float):
        return node
    if kind is list:
        return [_from_tree(item, arrays) for item in node]
    if kind is not dict:
        raise EntryRejected(f"unexpected JSON value of type {kind.__name__}")
    tag = next((k for k in node if k.startswith("$")), None)
    if tag is None:
        return {k: _from_tree(v, arrays) for k, v in node.items()}
    value = node[tag]
    if tag == "$float" and value in ("nan", "inf", "-inf"):
        return float(value)
    if tag == "$tuple":
        return tuple(_from_tree(item, arrays) for item in value)
    if tag == "$items":
        return {_from_tree(k, arrays): _from_tree(v, arrays) for k, v in value}
    if tag == "$complex":
        real, imag = (_from_tree(part, arrays) for part in value)
        return complex(real, imag)
    if tag == "$array":
        return _index(value, arrays)
    if tag == "$bytes":
        return _index(value, arrays).tobytes()
    if tag == "$scalar":
        dtype = np.dtype(value)
        data = bytes.fromhex(node["hex"])
        if dtype.hasobject or dtype.fields is not None or len(data) != dtype.itemsize:
            raise EntryRejected(f"bad numpy scalar {node!r:.80}")
        return np.frombuffer(data, dtype=dtype)[0]
    if tag == "$data":
        return decode_data(value, node.get("v"), lambda child: _from_tree(child, arrays))
    raise EntryRejected(f"unknown tag {tag!r}")


# --- pickles with out-of-band arrays --------------------------------------------------------


class _OutOfBandPickler(cloudpickle.Pickler):
    """Moves plain ndarrays out of the pickle into the entry's arrays (big data stays .npy).
    cloudpickle stores what has no importable name (notebook classes, lambdas) by value."""

    def __init__(self, file: BinaryIO, table: _ArrayTable) -> None:
        super().__init__(file, protocol=5)
        self._table = table

    def persistent_id(self, obj: Any) -> Any:
        return ("ndarray", self._table.add(obj)) if _plain_array(obj) else None


class _OutOfBandUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, arrays: list[np.ndarray]) -> None:
        super().__init__(file)
        self._arrays = arrays

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple and len(pid) == 2 and pid[0] == "ndarray":
            return _index(pid[1], self._arrays)
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")


# --- encoding -------------------------------------------------------------------------------


@dataclass
class PackedResult:
    """A result split into its JSON body, its arrays and its (unsigned) pickle blob."""

    body: dict[str, Any]
    arrays: list[np.ndarray]
    blob: bytes | None


def pack(key: str, result: StageResult, *, as_json: bool = True) -> PackedResult:
    """Split ``result`` into JSON, arrays and, only if needed, a pickle (see module docs);
    ``as_json=False`` pickles the state, metrics, provenance and kept artifacts even where
    JSON could hold them (arrays still go out of band), which keeps the body small.

    Raises whatever pickle raises for an object that cannot be pickled at all.
    """
    table = _ArrayTable()
    pickled: list[Any] = []

    def to_pickle(value: Any) -> dict[str, int]:
        pickled.append(value)
        return {"$pickled": len(pickled) - 1}

    def slot(value: Any, as_tree: Callable[[], Any]) -> Any:
        if not as_json:
            return to_pickle(value)
        size = len(table.arrays)
        try:
            return as_tree()
        except NotJsonable:
            table.rollback(size)
            return to_pickle(value)

    state = result.state

    def state_tree() -> Any:
        if type(state) is not SimpleState:
            raise NotJsonable(type(state))
        return {
            "$simple": {
                "payload": _try_tree(state.payload, table),
                "meta": _try_tree(state.meta, table),
            }
        }

    artifacts: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in result.artifacts.items():
        if type(name) is str and not callable(value):
            size = len(table.arrays)
            try:
                artifacts[name] = _try_tree(value, table)  # what JSON cannot hold is dropped
                if not as_json:
                    table.rollback(size)
                    artifacts[name] = to_pickle(value)
                continue
            except NotJsonable:
                pass
        dropped.append(str(name))

    body: dict[str, Any] = {
        "key": key,
        "state": slot(state, state_tree),
        "metrics": slot(result.metrics, lambda: _try_tree(dict(result.metrics), table)),
        "provenance": slot(result.provenance, lambda: _try_tree(dict(result.provenance), table)),
        "artifacts": artifacts,
        "dropped_artifacts": dropped,
    }
    blob = None
    if pickled:
        buffer = io.BytesIO()
        _OutOfBandPickler(buffer, table).dump(pickled)
        blob = buffer.getvalue()
    return PackedResult(body, table.arrays, blob)


class _HashingWriter:
    """A write-only file that hashes what passes through, so arrays are written and
    checksummed in one pass without a second copy in memory."""

    def __init__(self, fh: BinaryIO, seed: int) -> None:
        self._fh = fh
        self._hash = xxhash.xxh3_128(seed=seed)
        self.nbytes = 0

    def write(self, data: bytes | memoryview) -> int:
        self._hash.update(data)
        self.nbytes += len(data)
        return self._fh.write(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def write_npy(arr: np.ndarray, fh: BinaryIO, seed: int) -> dict[str, Any]:
    """Write ``arr`` as ``.npy`` data to ``fh``; return its record (size, digest, dtype, shape),
    the digest being xxh3-128 seeded with ``seed`` (``EntrySigner.digest_seed``)."""
    writer = _HashingWriter(fh, seed)
    np.lib.format.write_array(writer, arr, allow_pickle=False)  # type: ignore[arg-type]
    return {
        "nbytes": writer.nbytes,
        "digest": writer.hexdigest(),
        "dtype": arr.dtype.str,
        "shape": list(arr.shape),
    }


def seal(packed: PackedResult, array_records: list[dict[str, Any]], signer: EntrySigner) -> bytes:
    """The entry's meta document: the body with its array records and the blob's size and
    SHA-256, the body's xxh3, and the HMAC that authenticates the body (and through it all)."""
    blob = packed.blob
    body = dict(packed.body)
    body["arrays"] = array_records
    body["blob"] = None if blob is None else {"nbytes": len(blob), "sha256": _sha256(blob)}
    body_bytes = _canonical(body)
    head = {"format": FORMAT_VERSION, "xxh3": _xxh3(body_bytes), "hmac": signer.sign(body_bytes)}
    # compact JSON with the body last, verbatim: a reader slices out the signed bytes
    return _canonical(head)[:-1] + _BODY_MARK + body_bytes + b"}"


# --- decoding -------------------------------------------------------------------------------


@dataclass
class EntryHeader:
    """A parsed meta document whose format, checksum and key have been checked."""

    body: dict[str, Any]
    body_bytes: bytes
    signature: Any
    arrays: list[dict[str, Any]]
    blob: dict[str, Any] | None


def _check_record(record: Any, what: str, digest: str = "digest") -> dict[str, Any]:
    if (
        not isinstance(record, dict)
        or type(record.get("nbytes")) is not int
        or record["nbytes"] < 0
        or not isinstance(record.get(digest), str)
    ):
        raise EntryRejected(f"malformed record for {what}")
    return record


def read_header(meta: bytes, key: str) -> EntryHeader:
    """Parse and check ``meta`` (format version, metadata checksum, recorded key); the
    signature is checked by ``decode_entry``. The checked and signed bytes of a document in
    ``seal``'s layout are sliced out, and the body is parsed from them; any other layout of
    the same JSON (a document a tool rewrote) is parsed whole and its body serialised again."""
    try:
        head, mark, rest = meta.partition(_BODY_MARK)
        if mark and rest.endswith(b"}"):
            body_bytes = rest[:-1]
            doc, body = json.loads(head + b"}"), json.loads(body_bytes)
        else:
            doc = json.loads(meta)
            body = doc["body"]
            body_bytes = _canonical(body)
    except (ValueError, TypeError, KeyError) as exc:
        raise EntryRejected(f"unreadable metadata ({type(exc).__name__})") from None
    if doc.get("format") != FORMAT_VERSION:
        raise EntryRejected(f"format {doc.get('format')!r}, expected {FORMAT_VERSION}")
    if not isinstance(body, dict) or doc.get("xxh3") != _xxh3(body_bytes):
        raise EntryRejected("metadata checksum mismatch")
    if body.get("key") != key:
        raise EntryRejected(f"foreign entry: it records key {body.get('key')!r}")
    records = body.get("arrays")
    if not isinstance(records, list):
        raise EntryRejected("malformed array records")
    arrays = [_check_record(r, f"array {i}") for i, r in enumerate(records)]
    blob = body.get("blob")
    blob = None if blob is None else _check_record(blob, "blob", "sha256")
    return EntryHeader(body, body_bytes, doc.get("hmac"), arrays, blob)


def check_size(record: dict[str, Any], data: bytes | memoryview, what: str) -> None:
    """Raise EntryRejected unless ``data`` has the recorded size."""
    if len(data) != record["nbytes"]:
        raise EntryRejected(f"{what} has {len(data)} bytes, expected {record['nbytes']}")


def check_digest(record: dict[str, Any], data: bytes | memoryview, what: str, seed: int) -> None:
    """Raise EntryRejected unless ``data`` has the recorded size and keyed digest."""
    check_size(record, data, what)
    if _xxh3(data, seed) != record["digest"]:
        raise EntryRejected(f"{what} checksum mismatch")


def load_npy(data: bytes | mmap.mmap, record: dict[str, Any]) -> np.ndarray:
    """A read-only array viewing checked ``.npy`` data in place: immutable bytes, or the very
    mapping whose digest was checked (never re-read, never unpickled). Data that begins with
    exactly the header numpy writes for the ``record``'s dtype and shape (see ``write_npy``)
    skips the header parser, which costs more than reading a small file."""
    header = _npy_header(record.get("dtype"), tuple(record.get("shape") or ()))
    if header is not None and data[: len(header)] == header:
        dtype, shape, order, offset = np.dtype(record["dtype"]), record["shape"], "C", len(header)
    else:
        dtype, shape, order, offset = _parse_npy_header(data)
    arr = np.ndarray(shape, dtype, buffer=data, offset=offset, order=order)
    arr.flags.writeable = False  # already so for bytes and read-only maps; a promise either way
    return arr


def _parse_npy_header(data: bytes | mmap.mmap) -> tuple[np.dtype, tuple, str, int]:
    """dtype, shape, order and data offset from a ``.npy`` header (numpy's own parser)."""
    fh: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    fh.seek(0)
    version = np.lib.format.read_magic(fh)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise EntryRejected(f".npy format {version} is not supported")
    shape, fortran_order, dtype = readers[version](fh)
    if dtype.hasobject:
        raise EntryRejected("an array of Python objects is never loaded from .npy data")
    return dtype, shape, "F" if fortran_order else "C", fh.tell()


@functools.lru_cache(maxsize=256)
def _npy_header(dtype: Any, shape: tuple) -> bytes | None:
    """The .npy header numpy writes for a C-ordered array of ``dtype`` and ``shape``."""
    try:
        descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
        if not isinstance(descr, str) or not all(type(n) is int and n >= 0 for n in shape):
            return None  # structured dtypes and odd records take np.load's path
        buffer = io.BytesIO()
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(buffer, header)
    except (TypeError, ValueError):
        return None
    return buffer.getvalue()


class EntrySource:
    """Where a store's arrays (checked against their keyed digest) and blob (checked for
    size; ``decode_entry`` checks its SHA-256) come from: disk files, a Redis frame. Each is
    asked for only once the signature over the records it is given has verified."""

    def array(self, index: int, record: dict[str, Any], seed: int) -> np.ndarray:
        raise NotImplementedError

    def blob(self, record: dict[str, Any]) -> bytes:
        raise NotImplementedError


def decode_entry(header: EntryHeader, source: EntrySource, signer: EntrySigner) -> StageResult:
    """Decode a checked entry once its HMAC verifies: the blob and arrays are read only after
    that, each at its signed size and checked against its signed digest, and the blob is
    unpickled last. A bad entry raises EntryRejected (EntryUnauthenticated when the signature
    fails); a key that cannot be had, CacheError."""
    objects: list[Any] = []
    if header.signature is None:
        raise EntryUnauthenticated("unsigned entry")
    if not signer.verify(header.signature, header.body_bytes):
        raise EntryUnauthenticated("bad signature (written with another key, or tampered with)")
    blob = None
    if header.blob is not None:
        blob = source.blob(header.blob)
        check_size(header.blob, blob, "pickle blob")
        if _sha256(blob) != header.blob["sha256"]:
            raise EntryRejected("pickle blob checksum mismatch")
    seed = signer.digest_seed()
    arrays = [source.array(i, record, seed) for i, record in enumerate(header.arrays)]
    if blob is not None:
        try:
            objects = _OutOfBandUnpickler(io.BytesIO(blob), arrays).load()
        except Exception as exc:  # noqa: BLE001 - e.g. a class that no longer imports
            raise EntryRejected(f"cannot unpickle: {type(exc).__name__}: {exc}") from None
        if type(objects) is not list:
            raise EntryRejected("malformed pickle")
    try:
        return _build_result(header.body, arrays, objects)
    except EntryRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed body is a miss, whatever breaks
        raise EntryRejected(f"malformed body: {type(exc).__name__}: {exc}") from None


def _build_result(
    body: dict[str, Any], arrays: list[np.ndarray], objects: list[Any]
) -> StageResult:
    def slot(node: Any) -> Any:
        if isinstance(node, dict) and "$pickled" in node:
            index = node["$pickled"]
            if type(index) is not int or not 0 <= index < len(objects):
                raise EntryRejected(f"pickled object reference {index!r} out of range")
            return objects[index]
        return _from_tree(node, arrays)

    state_node = body["state"]
    if isinstance(state_node, dict) and "$simple" in state_node:
        simple = state_node["$simple"]
        state = SimpleState(
            _from_tree(simple["payload"], arrays), _from_tree(simple["meta"], arrays)
        )
    else:
        state = slot(state_node)
        if not isinstance(state, State):
            raise EntryRejected(f"the pickled state is a {type(state).__name__}, not a State")
    metrics, provenance = slot(body["metrics"]), slot(body["provenance"])
    if not isinstance(metrics, dict) or not isinstance(provenance, dict):
        raise EntryRejected("metrics or provenance is not a dict")
    artifacts = {name: slot(node) for name, node in body["artifacts"].items()}
    return StageResult(state=state, metrics=metrics, artifacts=artifacts, provenance=provenance)


# --- single-value frames (Redis) ------------------------------------------------------------


def to_frame(key: str, result: StageResult, signer: EntrySigner) -> bytes:
    """One bytes value: magic, meta length, meta, the arrays' .npy data, then the blob."""
    packed = pack(key, result)
    data = io.BytesIO()
    seed = signer.digest_seed()
    records = [write_npy(arr, data, seed) for arr in packed.arrays]
    if packed.blob is not None:
        data.write(packed.blob)
    meta = seal(packed, records, signer)
    return b"".join((_FRAME_MAGIC, _frame_len.pack(len(meta)), meta, data.getbuffer()))


class _FrameSource(EntrySource):
    def __init__(self, data: memoryview, header: EntryHeader) -> None:
        self._data = data
        offsets = [0]
        for record in header.arrays:
            offsets.append(offsets[-1] + record["nbytes"])
        self._offsets = offsets
        expected = offsets[-1] + (header.blob["nbytes"] if header.blob else 0)
        if len(data) != expected:
            raise EntryRejected(f"frame has {len(data)} data bytes, expected {expected}")

    def array(self, index: int, record: dict[str, Any], seed: int) -> np.ndarray:
        data = self._data[self._offsets[index] : self._offsets[index + 1]]
        check_digest(record, data, f"array {index}", seed)
        return load_npy(bytes(data), record)  # one copy, so the frame can be freed

    def blob(self, record: dict[str, Any]) -> bytes:
        return bytes(self._data[self._offsets[-1] :])


def from_frame(key: str, frame: bytes, signer: EntrySigner) -> StageResult:
    """Decode a frame made by :func:`to_frame`; raises EntryRejected on any problem with the
    frame, CacheError if the signing key cannot be had."""
    with entry_errors():
        view = memoryview(frame)
        start = len(_FRAME_MAGIC) + _frame_len.size
        if len(view) < start or bytes(view[: len(_FRAME_MAGIC)]) != _FRAME_MAGIC:
            raise EntryRejected("not a phys-pipeline cache frame")
        (meta_len,) = _frame_len.unpack(view[len(_FRAME_MAGIC) : start])
        meta = bytes(view[start : start + meta_len])
        header = read_header(meta, key)
        return decode_entry(header, _FrameSource(view[start + meta_len :], header), signer)
