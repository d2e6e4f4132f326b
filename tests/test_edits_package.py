"""Edits to a user package reach the next run after a kernel restart, and nothing else reruns.

The package ``mypkg`` (constants, physics helpers, a base class, stages, data files) lives in a
project directory with a run script. Each run is a FRESH ``python`` process (a restarted
kernel) that builds the beamline, runs it against a disk cache in the project and prints JSON:
every node's answer, which nodes ran and which hit. The first run happens once per module; each
test starts from a copy of that project and its cache, restored to the same path, edits one
file, runs once more and checks the answer against the physics worked out by hand.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from user_project import run_fresh_process

PACKAGE = {
    "mypkg/__init__.py": '"""A toy beamline: constants, physics helpers, stages."""\n',
    "mypkg/consts.py": '''\
"""Constants of the toy beamline (units chosen to keep the numbers round)."""

C = 3.0  # wave speed in the medium, m/ns
PLANCK = 2.0  # action quantum
ALPHA = 0.5  # absorption coefficient of the glass, per metre
MOLAR_MASS = {"N2": 28.0, "O2": 32.0, "Ar": 40.0, "He": 4.0, "Ne": 20.0}
SPECIES = {"N2", "O2", "Ar", "He", "Ne"}  # gases in the chamber
''',
    "mypkg/materials.py": '''\
"""Material models."""

from mypkg import consts


def optical_depth(thickness_m):
    """Optical depth of a slab of glass."""
    return consts.ALPHA * thickness_m
''',
    "mypkg/physics.py": '''\
"""Physics helpers shared by the stages."""

import numpy as np

from mypkg.materials import optical_depth


def gain(power_w):
    """Output power of the amplifier."""
    return 2.0 * power_w


def transmission(thickness_m):
    """Beer-Lambert transmission of a slab."""
    return float(np.exp(-optical_depth(thickness_m)))


def brightness_temperature(power_w):
    """Used by the plots only: no stage calls it."""
    return 300.0 * power_w
''',
    "mypkg/plotting.py": '''\
"""Labels for plots; no stage reads anything here."""


def label(value):
    return f"{value:.3f}"
''',
    "mypkg/base.py": '''\
"""A user-defined base class for optical elements."""

from phys_pipeline import PipelineStage


class Element(PipelineStage):
    """An optical element; each surface reflects a fraction of the light."""

    def surface_loss(self):
        return 0.04  # uncoated glass
''',
    "mypkg/stages.py": '''\
"""The beamline's stages; each reads one kind of thing the cache key must cover."""

from pathlib import Path

import numpy as np

from mypkg import consts, plotting
from mypkg.base import Element
from mypkg.consts import PLANCK
from mypkg.physics import gain, transmission
from phys_pipeline import PipelineStage, SimpleState, StageConfig, StageResult

THRESHOLD = 2.0  # detector threshold, counts


def reading(value):
    return StageResult(state=SimpleState(float(value)), metrics={"value": float(value)})


def describe(value):
    """For the plots, not the stages."""
    return plotting.label(value)


class LengthCfg(StageConfig):
    length_m: float = 6.0


class TransitTime(PipelineStage[SimpleState, LengthCfg]):
    def process(self, state, *, policy=None):
        return reading(self.cfg.length_m / consts.C)


class PhotonCfg(StageConfig):
    frequency: float = 1.5


class PhotonEnergy(PipelineStage[SimpleState, PhotonCfg]):
    def process(self, state, *, policy=None):
        return reading(PLANCK * self.cfg.frequency)


class CountsCfg(StageConfig):
    counts: float = 7.0


class AboveThreshold(PipelineStage[SimpleState, CountsCfg]):
    def process(self, state, *, policy=None):
        return reading(self.cfg.counts - THRESHOLD)


class PowerCfg(StageConfig):
    power_w: float = 1.5


class Amplifier(PipelineStage[SimpleState, PowerCfg]):
    def process(self, state, *, policy=None):
        return reading(gain(self.cfg.power_w))


class SlabCfg(StageConfig):
    thickness_m: float = 2.0


class Slab(PipelineStage[SimpleState, SlabCfg]):
    def process(self, state, *, policy=None):
        return reading(transmission(self.cfg.thickness_m))


class Window(Element):
    """Two uncoated surfaces."""

    def process(self, state, *, policy=None):
        return reading((1.0 - self.surface_loss()) ** 2)


class BeamCfg(StageConfig):
    path: Path = Path("data/beam.npy")


class BeamPower(PipelineStage[SimpleState, BeamCfg]):
    def process(self, state, *, policy=None):
        return reading(np.load(self.cfg.path).sum())


class SpectraCfg(StageConfig):
    folder: Path = Path("data/spectra")


class SpectraTotal(PipelineStage[SimpleState, SpectraCfg]):
    def process(self, state, *, policy=None):
        files = sorted(self.cfg.folder.rglob("*.npy"))
        return reading(sum(np.load(f).sum() for f in files))


class MeanMolarMass(PipelineStage[SimpleState, StageConfig]):
    def process(self, state, *, policy=None):
        masses = [consts.MOLAR_MASS[gas] for gas in consts.SPECIES]
        return reading(sum(masses) / len(masses))
''',
    "run.py": '''\
"""A fresh kernel: build the beamline, run it against the disk cache, report as JSON."""

import json
import warnings
from pathlib import Path

from mypkg import consts, stages
from phys_pipeline import DagExecutor, LocalScheduler, NodeSpec, SimpleState, StageConfig
from phys_pipeline.cache import DiskStore

nodes = [
    NodeSpec(id="transit", stage=stages.TransitTime(stages.LengthCfg())),
    NodeSpec(id="photon", stage=stages.PhotonEnergy(stages.PhotonCfg())),
    NodeSpec(id="signal", stage=stages.AboveThreshold(stages.CountsCfg())),
    NodeSpec(id="amplified", stage=stages.Amplifier(stages.PowerCfg())),
    NodeSpec(id="slab", stage=stages.Slab(stages.SlabCfg())),
    NodeSpec(id="window", stage=stages.Window(StageConfig())),
    NodeSpec(id="beam", stage=stages.BeamPower(stages.BeamCfg())),
    NodeSpec(id="spectra", stage=stages.SpectraTotal(stages.SpectraCfg())),
    NodeSpec(id="gas", stage=stages.MeanMolarMass(StageConfig())),
]
executor = DagExecutor(scheduler=LocalScheduler(max_workers=1), cache=DiskStore(Path("cache")))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = executor.run(SimpleState(), nodes)
report = {
    "answers": {node.id: result.metrics[node.id + ".value"] for node in nodes},
    "ran": result.ran,
    "hits": result.hits,
    "reasons": {node_id: run.reason for node_id, run in result.runs.items()},
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "species_order": list(consts.SPECIES),
}
print(json.dumps(report))
''',
}
DATA = {
    "data/beam.npy": np.array([0.0, 1.0, 2.0, 3.0]),
    "data/spectra/visible/red.npy": np.array([1.0, 2.0]),
    "data/spectra/visible/green.npy": np.array([3.0]),
    "data/spectra/infrared/near.npy": np.array([4.0, 5.0]),
}
FIRST_ANSWERS = {
    "transit": 2.0,  # 6 m at 3 m/ns
    "photon": 3.0,  # h f = 2 * 1.5
    "signal": 5.0,  # 7 counts above a threshold of 2
    "amplified": 3.0,  # 1.5 W doubled
    "slab": math.exp(-1.0),  # exp(-0.5 per metre * 2 m)
    "window": 0.96**2,  # two surfaces losing 4 % each
    "beam": 6.0,
    "spectra": 15.0,
    "gas": 24.8,  # (28 + 32 + 40 + 4 + 20) / 5
}
NODES = list(FIRST_ANSWERS)
BASELINE_HASH_SEED = "0"


def run_fresh_kernel(root: Path, hash_seed: str = BASELINE_HASH_SEED) -> dict[str, Any]:
    """One run in a new ``python`` process, as after a kernel restart."""
    return run_fresh_process(root / "run.py", paths=[str(root)], cwd=root, PYTHONHASHSEED=hash_seed)


def write_project(root: Path) -> None:
    for name, text in PACKAGE.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name, array in DATA.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array)


class Project:
    """The project directory, as the first run left it; edits are made in place."""

    def __init__(self, root: Path, first_report: dict[str, Any]) -> None:
        self.root, self.first_report = root, first_report

    def replace(self, name: str, old: str, new: str) -> None:
        path = self.root / name
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} is not in {name} exactly once"
        path.write_text(text.replace(old, new))

    def save_keeping_mtime(self, name: str, array: np.ndarray) -> None:
        """Overwrite an .npy file with an array of the same size and put its old timestamps
        back: an edit within the same second looks exactly like this."""
        path = self.root / name
        before = path.stat()
        np.save(path, array)
        assert path.stat().st_size == before.st_size
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    def touch(self, name: str) -> None:
        path = self.root / name
        later = path.stat().st_mtime_ns + 10**10
        os.utime(path, ns=(later, later))

    def run(self, hash_seed: str = BASELINE_HASH_SEED) -> dict[str, Any]:
        return run_fresh_kernel(self.root, hash_seed)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path, dict[str, Any]]:
    """The project after its first run (in a fresh process), and a pristine copy of it."""
    base = tmp_path_factory.mktemp("beamline")
    live, pristine = base / "project", base / "pristine"
    write_project(live)
    report = run_fresh_kernel(live)
    assert report["ran"] == NODES
    shutil.copytree(live, pristine)  # copy2: contents and timestamps
    return live, pristine, report


@pytest.fixture
def project(first_run) -> Project:
    """The project as its first run left it, at the path that run used."""
    live, pristine, report = first_run
    shutil.rmtree(live)
    shutil.copytree(pristine, live)
    return Project(live, report)


def test_first_run_gives_the_physics_worked_out_by_hand(project):
    assert project.first_report["answers"] == pytest.approx(FIRST_ANSWERS)


# --- edits: the next run gives the new answer -----------------------------------------------

# (file, old text, new text, node, new answer)
SOURCE_EDITS = {
    "constant read as consts.C": ("mypkg/consts.py", "C = 3.0", "C = 2.0", "transit", 3.0),
    "constant imported by name": (
        "mypkg/consts.py",
        "PLANCK = 2.0",
        "PLANCK = 4.0",
        "photon",
        6.0,
    ),
    "constant in the stage's own module": (
        "mypkg/stages.py",
        "THRESHOLD = 2.0",
        "THRESHOLD = 3.0",
        "signal",
        4.0,
    ),
    "helper imported from another module": (
        "mypkg/physics.py",
        "return 2.0 * power_w",
        "return 4.0 * power_w",
        "amplified",
        6.0,
    ),
    "helper of a helper across modules": (
        "mypkg/materials.py",
        "return consts.ALPHA * thickness_m",
        "return 2.0 * consts.ALPHA * thickness_m",  # light passes twice
        "slab",
        math.exp(-2.0),
    ),
    "constant read only by a helper of a helper": (
        "mypkg/consts.py",
        "ALPHA = 0.5",
        "ALPHA = 1.0",
        "slab",
        math.exp(-2.0),
    ),
    "base class method in another module": (
        "mypkg/base.py",
        "return 0.04  # uncoated glass",
        "return 0.01  # anti-reflection coated",
        "window",
        0.99**2,
    ),
    "stage method": (
        "mypkg/stages.py",
        "reading(self.cfg.length_m / consts.C)",
        "reading(2.0 * self.cfg.length_m / consts.C)",  # there and back
        "transit",
        4.0,
    ),
    "config default": (
        "mypkg/stages.py",
        "length_m: float = 6.0",
        "length_m: float = 9.0",
        "transit",
        3.0,
    ),
    "set of strings": (
        "mypkg/consts.py",
        'SPECIES = {"N2", "O2", "Ar", "He", "Ne"}',
        'SPECIES = {"N2", "O2", "Ar"}',
        "gas",
        100.0 / 3,
    ),
}


@pytest.mark.parametrize("edit", list(SOURCE_EDITS))
def test_source_edit_gives_the_new_answer_after_a_restart(project, edit):
    name, old, new, node, expected = SOURCE_EDITS[edit]
    project.replace(name, old, new)
    report = project.run()
    assert report["answers"][node] == pytest.approx(expected)


def test_data_file_changed_in_content_gives_the_new_answer_after_a_restart(project):
    project.save_keeping_mtime("data/beam.npy", np.array([0.0, 1.0, 2.0, 4.0]))
    assert project.run()["answers"]["beam"] == pytest.approx(7.0)


def test_file_deep_in_a_directory_field_changed_gives_the_new_answer(project):
    project.save_keeping_mtime("data/spectra/infrared/near.npy", np.array([4.0, 6.0]))
    assert project.run()["answers"]["spectra"] == pytest.approx(16.0)


def test_file_added_to_a_directory_field_gives_the_new_answer(project):
    (project.root / "data/spectra/ultraviolet").mkdir()
    np.save(project.root / "data/spectra/ultraviolet/far.npy", np.array([10.0]))
    assert project.run()["answers"]["spectra"] == pytest.approx(25.0)


# --- not edits: a restart reruns nothing ----------------------------------------------------


def test_restart_with_nothing_changed_reruns_nothing(project):
    report = project.run()
    assert report["ran"] == []
    assert report["answers"] == pytest.approx(FIRST_ANSWERS)


def test_set_of_strings_under_another_hash_seed_reruns_nothing(project):
    report = project.run(hash_seed="1")
    assert report["species_order"] != project.first_report["species_order"]  # it did change
    assert report["ran"] == []
    assert report["answers"]["gas"] == pytest.approx(24.8)


# (file, old text, new text): none changes what any stage computes
UNRELATED_EDITS = {
    "module no stage reads": (
        "mypkg/plotting.py",
        'return f"{value:.3f}"',
        'return f"{value:.2e}"',
    ),
    "function no stage calls, beside one that is called": (
        "mypkg/physics.py",
        "return 300.0 * power_w",
        "return 290.0 * power_w",
    ),
    "comment in a helper": (
        "mypkg/physics.py",
        '    """Output power of the amplifier."""\n',
        '    """Output power of the amplifier."""\n    # a 3 dB amplifier: see the lab book\n',
    ),
}


@pytest.mark.parametrize("edit", list(UNRELATED_EDITS))
def test_unrelated_source_edit_reruns_nothing_after_a_restart(project, edit):
    project.replace(*UNRELATED_EDITS[edit])
    report = project.run()
    assert report["ran"] == []
    assert report["answers"] == pytest.approx(FIRST_ANSWERS)


def test_data_files_touched_rerun_nothing(project):
    project.touch("data/beam.npy")
    project.touch("data/spectra/visible/green.npy")
    report = project.run()
    assert report["ran"] == []
    assert report["answers"] == pytest.approx(FIRST_ANSWERS)
