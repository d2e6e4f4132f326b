"""ArtifactRecorder: lazy artifacts become files listed in a manifest."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phys_pipeline.errors import MissingRecorderError
from phys_pipeline.hashing import config_hash
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.policy import PolicyBag
from phys_pipeline.record import ArtifactRecorder
from phys_pipeline.types import PipelineStage, SimpleState, StageConfig, StageResult

os.environ["MPLBACKEND"] = "Agg"  # read when matplotlib is first imported, on the next line
plt = importlib.import_module("matplotlib.pyplot")


class SpectrumCfg(StageConfig):
    n: int = 32


class Spectrum(PipelineStage[SimpleState, SpectrumCfg]):
    """Computes a Lorentzian line and offers a plot and the raw data as lazy artifacts."""

    def __init__(self, cfg: SpectrumCfg) -> None:
        super().__init__(cfg)
        self.plots_made = 0

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        omega = np.linspace(-5.0, 5.0, self.cfg.n)
        line = 1.0 / (1.0 + omega**2)

        def plot() -> Any:
            self.plots_made += 1
            fig, ax = plt.subplots()
            ax.plot(omega, line)
            return fig

        return StageResult(
            state=SimpleState(line),
            metrics={"peak": line.max()},
            artifacts={"fit.plot": plot, "line": lambda: line},
        )


def spectroscopy() -> tuple[SequentialPipeline, Spectrum]:
    stage = Spectrum(SpectrumCfg(name="spectrum"))
    return SequentialPipeline([stage], name="lab"), stage


def record(tmp_path: Path, value: Any, key: str = "data") -> tuple[ArtifactRecorder, list[Path]]:
    recorder = ArtifactRecorder(tmp_path / "artifacts")
    paths = recorder.record(value, stage="lab.spectrum", key=key, run_id="run1", config_hash="c0")
    return recorder, paths


# --- laziness ---------------------------------------------------------------------------------


def test_lazy_artifacts_are_not_called_without_recording():
    pipe, stage = spectroscopy()
    out = pipe.run(SimpleState())
    assert stage.plots_made == 0
    assert callable(out.artifact_values["lab.spectrum.fit.plot"])
    assert out.artifacts["lab.spectrum.fit.plot"] == "<class 'function'>"  # shown, not called


def test_lazy_artifacts_are_called_once_when_recording(tmp_path):
    pipe, stage = spectroscopy()
    pipe.run(SimpleState(), record_artifacts=True, recorder=ArtifactRecorder(tmp_path))
    assert stage.plots_made == 1


def test_a_recorder_alone_does_not_turn_recording_on(tmp_path):
    pipe, stage = spectroscopy()
    pipe.run(SimpleState(), recorder=ArtifactRecorder(tmp_path))
    assert stage.plots_made == 0
    assert not (tmp_path / "manifest.json").exists()


def test_recording_without_a_recorder_raises_a_typed_error_naming_the_pipeline():
    pipe, _ = spectroscopy()
    with pytest.raises(MissingRecorderError, match="'lab'") as info:
        pipe.run(SimpleState(), record_artifacts=True)
    assert info.value.pipeline == "lab"


def test_recording_without_a_recorder_is_still_a_value_error():
    pipe, _ = spectroscopy()
    with pytest.raises(ValueError, match=r"'lab'.*recorder"):
        pipe.run(SimpleState(), record_artifacts=True)


# --- file formats -----------------------------------------------------------------------------


def test_figure_is_saved_as_png_and_svg(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    _, paths = record(tmp_path, fig, key="plot")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    assert "<svg" in paths[1].read_text()


def test_figure_is_closed_after_saving(tmp_path):
    fig, _ = plt.subplots()
    record(tmp_path, fig, key="plot")
    assert not plt.fignum_exists(fig.number)


def test_array_is_saved_as_npy_that_loads_back_equal(tmp_path):
    field = np.exp(1j * np.linspace(0, np.pi, 7))
    _, (path,) = record(tmp_path, field)
    assert path.suffix == ".npy"
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), field)


def test_bytes_are_saved_as_bin(tmp_path):
    _, (path,) = record(tmp_path, b"\x00\x01raw detector frame")
    assert path.suffix == ".bin"
    assert path.read_bytes() == b"\x00\x01raw detector frame"


def test_text_is_saved_as_txt(tmp_path):
    _, (path,) = record(tmp_path, "converged after 12 iterations")
    assert path.suffix == ".txt"
    assert path.read_text() == "converged after 12 iterations"


def test_json_able_value_is_saved_as_json(tmp_path):
    _, (path,) = record(tmp_path, {"T_K": np.float64(300.0), "modes": np.arange(3)})
    assert path.suffix == ".json"
    assert json.loads(path.read_text()) == {"T_K": 300.0, "modes": [0, 1, 2]}


def test_unsaveable_value_raises_type_error_naming_the_artifact(tmp_path):
    with pytest.raises(TypeError, match="'trajectory'"):
        record(tmp_path, object(), key="trajectory")


def test_lazy_value_is_produced_before_saving(tmp_path):
    _, (path,) = record(tmp_path, lambda: "from a callable")
    assert path.read_text() == "from a callable"


def test_artifact_keys_with_dots_keep_their_full_name(tmp_path):
    fig, _ = plt.subplots()
    _, paths = record(tmp_path, fig, key="fit.plot")
    assert [p.name for p in paths] == ["fit.plot.png", "fit.plot.svg"]


def test_artifact_keys_cannot_escape_the_stage_folder(tmp_path):
    _, (path,) = record(tmp_path, "x", key="../../etc/passwd")
    assert path.parent == tmp_path / "artifacts" / "run1" / "lab.spectrum"


def test_files_are_grouped_by_run_and_stage(tmp_path):
    _, (path,) = record(tmp_path, "x")
    assert path.parent == tmp_path / "artifacts" / "run1" / "lab.spectrum"


# --- manifest ---------------------------------------------------------------------------------


def test_manifest_is_empty_before_anything_is_recorded(tmp_path):
    assert ArtifactRecorder(tmp_path).manifest() == []


def test_manifest_lists_stage_key_run_id_config_hash_and_relative_path(tmp_path):
    recorder, (path,) = record(tmp_path, "x", key="log")
    (entry,) = json.loads(recorder.manifest_path.read_text())
    assert entry["stage"] == "lab.spectrum"
    assert entry["key"] == "log"
    assert entry["run_id"] == "run1"
    assert entry["config_hash"] == "c0"
    assert not Path(entry["path"]).is_absolute()
    assert recorder.root / entry["path"] == path


def test_manifest_accumulates_across_records(tmp_path):
    recorder, _ = record(tmp_path, "first", key="a")
    recorder.record("second", stage="lab.other", key="b", run_id="run2")
    assert [entry["key"] for entry in recorder.manifest()] == ["a", "b"]


WRITERS, FRAMES = 4, 25


def record_frames(root: str, writer: int, start: Any) -> None:
    """One camera's recorder, started together with the others on the same root."""
    recorder = ArtifactRecorder(root)
    start.wait()
    for frame in range(FRAMES):
        recorder.record(f"frame {frame}", stage="camera", key=f"{writer}-{frame}", run_id="run1")


def run_cameras(root: Path, worker: Any, barrier: Any) -> list[Any]:
    """Start WRITERS cameras as ``worker``s (threads or processes) on one root; wait for all."""
    cameras = [
        worker(target=record_frames, args=(str(root), writer, barrier)) for writer in range(WRITERS)
    ]
    for camera in cameras:
        camera.start()
    for camera in cameras:
        camera.join(timeout=120)
    return cameras


def assert_every_frame_is_in_the_manifest(root: Path) -> None:
    entries = ArtifactRecorder(root).manifest()
    assert len(entries) == WRITERS * FRAMES
    assert {entry["key"] for entry in entries} == {
        f"{writer}-{frame}" for writer in range(WRITERS) for frame in range(FRAMES)
    }


def test_recorders_in_several_threads_sharing_a_root_keep_every_manifest_entry(tmp_path):
    run_cameras(tmp_path, threading.Thread, threading.Barrier(WRITERS))
    assert_every_frame_is_in_the_manifest(tmp_path)


def test_recorders_in_several_processes_sharing_a_root_keep_every_manifest_entry(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    cameras = run_cameras(tmp_path, spawn.Process, spawn.Barrier(WRITERS))
    assert [camera.exitcode for camera in cameras] == [0] * WRITERS
    assert_every_frame_is_in_the_manifest(tmp_path)


def test_pipeline_run_records_every_artifact_in_the_manifest(tmp_path):
    pipe, stage = spectroscopy()
    recorder = ArtifactRecorder(tmp_path)
    out = pipe.run(SimpleState(), record_artifacts=True, recorder=recorder)
    entries = recorder.manifest()
    assert sorted(Path(e["path"]).name for e in entries) == [
        "fit.plot.png",
        "fit.plot.svg",
        "line.npy",
    ]
    assert {e["stage"] for e in entries} == {"lab.spectrum"}
    assert {e["run_id"] for e in entries} == {out.provenance["run_id"]}
    assert {e["config_hash"] for e in entries} == {config_hash(stage.cfg)}
    assert all((tmp_path / e["path"]).is_file() for e in entries)


def test_pipeline_provenance_lists_recorded_files(tmp_path):
    pipe, _ = spectroscopy()
    out = pipe.run(SimpleState(), record_artifacts=True, recorder=ArtifactRecorder(tmp_path))
    files = out.provenance["stages"][0]["artifacts"]
    assert [Path(p).name for p in files["line"]] == ["line.npy"]
    assert [Path(p).name for p in files["fit.plot"]] == ["fit.plot.png", "fit.plot.svg"]


def test_pipeline_result_names_the_recorded_figure_and_previews_the_rest(tmp_path):
    pipe, stage = spectroscopy()
    out = pipe.run(SimpleState(), record_artifacts=True, recorder=ArtifactRecorder(tmp_path))
    png = Path(out.artifacts["lab.spectrum.fit.plot"]["figure"])
    assert png.name == "fit.plot.png" and png.is_file()
    assert str(png) in out.provenance["stages"][0]["artifacts"]["fit.plot"]
    preview = out.artifacts["lab.spectrum.line"]["preview"]
    assert preview == {"dtype": "float64", "shape": [32], "head": out.state.payload[:16].tolist()}
    assert stage.plots_made == 1  # drawn once, for the file; the value stays lazy
    assert callable(out.artifact_values["lab.spectrum.fit.plot"])


# --- the latest recording at the root, named as 2.0.0 named its files --------------------------


def test_the_latest_recording_of_each_artifact_is_at_the_root_under_its_flat_name(tmp_path):
    _, (path,) = record(tmp_path, "first", key="fit.note")
    latest = tmp_path / "artifacts" / "lab_spectrum_fit_note.txt"
    assert latest.read_text() == "first"
    assert os.path.samefile(latest, path)  # a link to the run's file, not a copy


def test_a_later_run_replaces_the_latest_recording_and_keeps_the_earlier_one(tmp_path):
    rec = ArtifactRecorder(tmp_path)
    first = rec.record("first", stage="lab.spectrum", key="note", run_id="run1")
    rec.record("second", stage="lab.spectrum", key="note", run_id="run2")
    assert (tmp_path / "lab_spectrum_note.txt").read_text() == "second"
    assert first[0].read_text() == "first"


def test_a_figure_is_linked_at_the_root_as_png_and_svg(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    _, paths = record(tmp_path, fig, key="plot")
    for path in paths:
        latest = tmp_path / "artifacts" / f"lab_spectrum_plot{path.suffix}"
        assert latest.read_bytes() == path.read_bytes()


def test_the_root_names_are_not_listed_in_the_manifest(tmp_path):
    rec, (path,) = record(tmp_path, "x", key="note")
    assert [entry["path"] for entry in rec.manifest()] == [str(path.relative_to(rec.root))]
