"""Configs, arrays and files hash by their whole value: each test tries to make two different
values share a digest, or one value change its digest, and checks that it cannot."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field, field_serializer

from phys_pipeline import DagExecutor, NodeSpec, PipelineStage, SimpleState
from phys_pipeline import _files as files_module
from phys_pipeline._files import file_digest
from phys_pipeline.cache import DiskStore
from phys_pipeline.errors import NodeFailedError, UnhashableValueError
from phys_pipeline.hashing import (
    config_field_digests,
    config_hash,
    digest,
    file_references,
    hash_ndarray,
)
from phys_pipeline.types import StageConfig, StageResult

# --- configs by their whole value -----------------------------------------------------------


class StepCfg(StageConfig):
    dt: float = 0.1

    @field_serializer("dt")
    def _rounded(self, dt: float) -> float:
        return round(dt, 1)


def test_a_rounding_serializer_does_not_merge_two_time_steps():
    assert StepCfg(dt=0.104).model_dump() == StepCfg(dt=0.1).model_dump()
    assert config_hash(StepCfg(dt=0.104)) != config_hash(StepCfg(dt=0.1))


class SolverCfg(StageConfig):
    tolerance: float = Field(1e-6, exclude=True)


def test_an_excluded_field_is_part_of_the_hash():
    assert config_hash(SolverCfg(tolerance=1e-3)) != config_hash(SolverCfg(tolerance=1e-9))


class Medium(BaseModel):
    model_config = ConfigDict(frozen=True)
    index: float = 1.0


class Crystal(Medium):
    chi2_pm_per_v: float = 2.0


class SampleCfg(StageConfig):
    medium: Medium = Medium()


def test_a_base_typed_field_holding_a_subclass_hashes_the_subclass_fields():
    thin, thick = Crystal(chi2_pm_per_v=2.0), Crystal(chi2_pm_per_v=20.0)
    assert SampleCfg(medium=thin).model_dump() == SampleCfg(medium=thick).model_dump()
    assert config_hash(SampleCfg(medium=thin)) != config_hash(SampleCfg(medium=thick))
    assert config_hash(SampleCfg(medium=Crystal())) != config_hash(SampleCfg(medium=Medium()))


class OpenCfg(BaseModel):
    model_config = ConfigDict(extra="allow")
    gain: float = 1.0


def test_extra_fields_are_part_of_the_hash():
    assert config_hash(OpenCfg(note=1)) != config_hash(OpenCfg(note=2))
    assert config_hash(OpenCfg(note=1)) != config_hash(OpenCfg())


@dataclasses.dataclass
class DataclassStepCfg(StageConfig):
    dt: float = 0.1
    scheme: str = dataclasses.field(default="rk4", repr=False)


def test_a_dataclass_stage_config_hashes_every_field():
    assert config_hash(DataclassStepCfg(scheme="euler")) != config_hash(DataclassStepCfg())
    assert config_hash(DataclassStepCfg(dt=0.2)) != config_hash(DataclassStepCfg())


@dataclasses.dataclass(frozen=True)
class PlainGrid:
    n: int
    spacing: float = dataclasses.field(default=1.0, compare=False)


def test_a_stdlib_dataclass_config_hashes_fields_left_out_of_eq():
    assert PlainGrid(8, 1.0) == PlainGrid(8, 2.0)
    assert config_hash(PlainGrid(8, 1.0)) != config_hash(PlainGrid(8, 2.0))


def test_config_field_digests_name_the_changed_field():
    before = config_field_digests(StepCfg(dt=0.1, name="step"))
    after = config_field_digests(StepCfg(dt=0.104, name="step"))
    assert set(before) == {"name", "tags", "dt"}
    assert [name for name in before if before[name] != after[name]] == ["dt"]


# --- arrays ---------------------------------------------------------------------------------


def test_structured_dtypes_of_the_same_size_differ():
    a = np.zeros(2, dtype=[("x", "<f8"), ("y", "<f8")])
    b = np.zeros(2, dtype=[("u", "<f8"), ("v", "<f8")])
    c = np.zeros(2, dtype=[("x", "<i8"), ("y", "<f8")])
    assert a.dtype.str == b.dtype.str == c.dtype.str == "|V16"
    assert len({hash_ndarray(a), hash_ndarray(b), hash_ndarray(c)}) == 3


def test_structured_dtypes_differing_in_offsets_or_sub_arrays_differ():
    packed = np.dtype({"names": ["x"], "formats": ["<f4"], "offsets": [0], "itemsize": 8})
    shifted = np.dtype({"names": ["x"], "formats": ["<f4"], "offsets": [4], "itemsize": 8})
    pair = np.dtype([("x", "<f4", (2,))])
    nested = np.dtype([("x", [("a", "<f4"), ("b", "<f4")])])
    arrays = [np.zeros(3, dtype=d) for d in (packed, shifted, pair, nested)]
    assert len({hash_ndarray(a) for a in arrays}) == 4


def test_byte_order_is_part_of_the_hash():
    little, big = np.zeros(3, dtype="<f8"), np.zeros(3, dtype=">f8")
    assert little.tobytes() == big.tobytes()
    assert hash_ndarray(little) != hash_ndarray(big)
    fields_little = np.zeros(2, dtype=[("x", "<i4")])
    fields_big = np.zeros(2, dtype=[("x", ">i4")])
    assert hash_ndarray(fields_little) != hash_ndarray(fields_big)


def test_a_masked_array_hashes_its_mask_and_fill_value():
    data = np.arange(4.0)
    base = np.ma.MaskedArray(data, mask=[0, 0, 1, 0])
    assert digest(base) != digest(np.ma.MaskedArray(data, mask=[0, 1, 0, 0]))
    assert digest(base) != digest(np.ma.MaskedArray(data, mask=[0, 0, 1, 0], fill_value=-1.0))
    assert digest(base) != digest(data)


class Field2D(np.ndarray):
    """An array subclass whose operators could behave differently from a plain array's."""


def test_an_ndarray_subclass_differs_from_a_plain_array():
    plain = np.array([[1.0, 2.0]])
    assert digest(plain.view(Field2D)) != digest(plain)


class CatalogCfg(StageConfig):
    table: dict[str, Any] = Field(default_factory=dict)


def test_an_object_array_in_a_config_is_refused_naming_its_field():
    cfg = CatalogCfg(table={"labels": np.array(["a", 1], dtype=object)})
    with pytest.raises(UnhashableValueError) as info:
        config_hash(cfg, "catalog config")
    assert info.value.field == "table.labels"
    assert "catalog config field 'table.labels'" in str(info.value)


class Emit(PipelineStage):
    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        return StageResult(SimpleState({"spectra": np.array([np.ones(2), None], dtype=object)}))


class Read(PipelineStage):
    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        return StageResult(SimpleState(1.0))


def test_a_state_holding_an_object_array_fails_its_node_naming_the_field():
    nodes = [NodeSpec("emit", stage=Emit(StageConfig())), NodeSpec("read", ["emit"], Read(None))]
    with pytest.raises(NodeFailedError) as info:
        DagExecutor().run(SimpleState(1.0), nodes)
    error = info.value.failures["read"]
    assert isinstance(error, UnhashableValueError)
    assert error.field == "spectra"


# --- files by content -----------------------------------------------------------------------


class BeamCfg(StageConfig):
    profile: Path = Path("beam.npy")


def test_a_path_hashes_by_its_file_content(tmp_path):
    beam = tmp_path / "beam.npy"
    beam.write_bytes(b"gaussian")
    before = config_hash(BeamCfg(profile=beam))
    beam.write_bytes(b"top-hat!")
    assert config_hash(BeamCfg(profile=beam)) != before


def test_a_same_size_rewrite_with_its_mtime_restored_is_caught(tmp_path):
    beam = tmp_path / "beam.npy"
    beam.write_bytes(b"A" * 64)
    times = os.stat(beam)
    before = file_digest(beam)
    beam.write_bytes(b"B" * 64)
    os.utime(beam, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert os.stat(beam).st_size == times.st_size
    assert os.stat(beam).st_mtime_ns == times.st_mtime_ns
    assert file_digest(beam) != before


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files whose content ``file_digest`` reads."""
    reads: list[str] = []
    read_chunks = files_module._read_chunks

    def counting(handle: Any) -> Any:
        reads.append(handle.name)
        return read_chunks(handle)

    monkeypatch.setattr(files_module, "_read_chunks", counting)
    return reads


def test_an_unchanged_old_file_is_read_once(tmp_path, counted_reads, monkeypatch):
    monkeypatch.setattr(files_module, "RACY_WINDOW_NS", 0)  # as if the file were old
    field = tmp_path / "field.bin"
    with open(field, "wb") as handle:  # larger than one chunk
        handle.write(os.urandom(3 * files_module.CHUNK_BYTES + 5))
    first = [file_digest(field) for _ in range(3)]
    assert len(set(first)) == 1
    assert counted_reads == [str(field)]


def test_a_recently_written_file_is_not_trusted_from_its_stat(tmp_path, counted_reads):
    # within the racy window a same-size rewrite may keep every timestamp: read again
    field = tmp_path / "field.bin"
    field.write_bytes(b"fresh")
    file_digest(field)
    file_digest(field)
    assert counted_reads == [str(field)] * 2


def test_a_directory_hashes_its_tree(tmp_path):
    data = tmp_path / "data"
    (data / "runs").mkdir(parents=True)
    (data / "runs" / "a.txt").write_text("1")
    first = file_digest(data)
    (data / "runs" / "a.txt").write_text("2")
    second = file_digest(data)
    (data / "runs" / "a.txt").rename(data / "runs" / "b.txt")
    third = file_digest(data)
    (data / "empty").mkdir()
    assert len({first, second, third, file_digest(data)}) == 4


def test_a_symlink_loop_in_a_tree_ends(tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "up").symlink_to(tmp_path / "tree")
    assert file_digest(tmp_path / "tree") == file_digest(tmp_path / "tree")


def test_a_symlink_hashes_its_target_content(tmp_path):
    (tmp_path / "a").write_text("1")
    (tmp_path / "b").write_text("2")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "a")
    before = digest(link)
    link.unlink()
    link.symlink_to(tmp_path / "b")
    assert digest(link) != before


def test_a_missing_file_hashes_by_its_path(tmp_path):
    missing = tmp_path / "nowhere.npy"
    assert digest(missing) == digest(tmp_path / "nowhere.npy")
    assert digest(missing) != digest(tmp_path / "elsewhere.npy")
    missing_digest = digest(missing)
    missing.write_bytes(b"")  # an empty file is not a missing one
    assert digest(missing) != missing_digest
    missing.unlink()
    assert digest(missing) == missing_digest


def test_a_pure_path_hashes_by_its_text_only():
    assert digest(PurePosixPath("data/beam.npy")) == digest(PurePosixPath("data/beam.npy"))
    assert digest(PurePosixPath("data/beam.npy")) != digest("data/beam.npy")
    assert digest(PurePosixPath("data/beam.npy")) != digest(Path("data/beam.npy"))


def test_file_references_find_paths_in_a_field():
    cfg = BeamCfg(profile=Path("beam.npy"), tags={"darks": [Path("d1"), PurePosixPath("d2")]})
    assert file_references(cfg.profile) == [Path("beam.npy")]
    assert file_references(cfg.tags) == [Path("d1")]
    assert file_references(cfg.name) == []


def test_a_file_digest_is_the_same_in_another_process(tmp_path):
    beam = tmp_path / "beam.npy"
    beam.write_bytes(b"gaussian")
    script = (
        "from pathlib import Path; from phys_pipeline.hashing import digest; "
        f"print(digest(Path({str(beam)!r})).hex())"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == digest(beam).hex(), out.stderr


# --- end to end -----------------------------------------------------------------------------


class LoadBeam(PipelineStage):
    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        return StageResult(SimpleState(self.cfg.profile.read_bytes()))


class Step(PipelineStage):
    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        return StageResult(SimpleState(self.cfg.dt * 10))


def test_a_run_reruns_a_node_whose_file_changed(tmp_path, isolated_cache_key):
    beam = tmp_path / "beam.npy"
    beam.write_bytes(b"gaussian")
    nodes = [NodeSpec("load", stage=LoadBeam(BeamCfg(profile=beam)))]
    cache = DiskStore(tmp_path / "cache")
    assert DagExecutor(cache=cache).run(SimpleState(), nodes).ran == ["load"]
    assert DagExecutor(cache=cache).run(SimpleState(), nodes).ran == []
    beam.write_bytes(b"top-hat!")
    out = DagExecutor(cache=cache).run(SimpleState(), nodes)
    assert out.ran == ["load"]
    assert out.results["load"].state.payload == b"top-hat!"


def test_a_rounding_serializer_does_not_serve_another_time_step(tmp_path, isolated_cache_key):
    cache = DiskStore(tmp_path / "cache")
    coarse = DagExecutor(cache=cache).run(SimpleState(), [NodeSpec("s", stage=Step(StepCfg()))])
    fine = DagExecutor(cache=cache).run(
        SimpleState(), [NodeSpec("s", stage=Step(StepCfg(dt=0.104)))]
    )
    assert fine.ran == ["s"]
    assert fine.results["s"].state.payload != coarse.results["s"].state.payload
