"""Edits made in a notebook reach the next run: the cache never serves an answer the edit made
old, and serves everything an edit did not touch.

Each test opens a small notebook (see notebook_kernel.py: cells exec'd into one ``__main__``
namespace), runs it, edits ONE cell the way a user would, runs again and checks the answer
against the physics worked out by hand. The ``notebook`` fixture runs each test four ways:
through a DagExecutor over a DiskStore or a LiveSession (its memory tier answers first), with the
node list rebuilt by re-running its cell or with the very same stage objects. An edit to a class
or to the cell that builds the nodes only reaches new stage objects, so those tests run the
"rebuilt" ways; an edit made on the stage objects themselves runs the "same objects" ways.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from notebook_kernel import READING, REBUILT, SAME_OBJECTS, WAYS, Notebook, Opener, answer

from phys_pipeline.errors import UncacheableWarning

IMPORTS = (
    """
import dataclasses
import functools
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_serializer

from phys_pipeline import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

"""
    + READING
)

GRID = """
class GridCfg(StageConfig):
    n: int = 5


class Grid(PipelineStage[SimpleState, GridCfg]):
    '''Sample positions along a rod 1 m long.'''

    def process(self, state, *, policy=None):
        return StageResult(state=SimpleState(np.linspace(0.0, 1.0, self.cfg.n)))
"""

# the usual DAG: a grid, and the probe under test reading it
NODES = """
nodes = [
    NodeSpec(id="grid", stage=Grid(GridCfg())),
    NodeSpec(id="probe", deps=["grid"], stage=Probe(ProbeCfg())),
]
"""


@pytest.fixture(params=list(WAYS))
def notebook(request, tmp_path, isolated_cache_key, monkeypatch) -> Opener:
    """Opens a notebook of the given cells (after an imports cell and the grid, before the
    "nodes" cell), run the way the test's parameter says; data files live in its cwd."""
    monkeypatch.chdir(tmp_path)

    def open_notebook(cells: dict[str, str], nodes: str = NODES) -> Notebook:
        all_cells = {"imports": IMPORTS, "grid": GRID, **cells, "nodes": nodes}
        return Notebook(all_cells, request.param, tmp_path / "cache")

    return open_notebook


# --- edits to globals ----------------------------------------------------------------------

KINETIC_ENERGY = """
class ProbeCfg(StageConfig):
    mass: float = 1.5


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Energy of the mass scaled by the global SCALE.'''

    def process(self, state, *, policy=None):
        return reading(SCALE * self.cfg.mass)
"""


def test_global_float_edit_gives_the_new_answer(notebook):
    nb = notebook({"scale": "SCALE = 2.0", "stages": KINETIC_ENERGY})
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("scale", "SCALE = 3.0")
    assert answer(nb.run()) == pytest.approx(4.5)


def test_edit_then_revert_gives_each_answer_in_turn(notebook):
    nb = notebook({"scale": "SCALE = 2.0", "stages": KINETIC_ENERGY})
    nb.run()
    nb.execute("scale", "SCALE = 3.0")
    assert answer(nb.run()) == pytest.approx(4.5)
    nb.execute("scale", "SCALE = 2.0")
    assert answer(nb.run()) == pytest.approx(3.0)


QUADRATURE = """
class ProbeCfg(StageConfig):
    pass


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''The integral of x**2 over the rod with the global quadrature WEIGHTS.'''

    def process(self, state, *, policy=None):
        return reading(WEIGHTS @ state.payload**2)
"""
TRAPEZOID = "WEIGHTS = np.array([0.125, 0.25, 0.25, 0.25, 0.125])"
TRAPEZOID_X2 = 0.34375  # the trapezoid rule overestimates the integral of x**2
SIMPSON_X2 = 1 / 3  # Simpson's rule is exact for a parabola


def test_global_array_replaced_gives_the_new_answer(notebook):
    nb = notebook({"weights": TRAPEZOID, "stages": QUADRATURE})
    assert answer(nb.run()) == pytest.approx(TRAPEZOID_X2)
    nb.execute("weights", "WEIGHTS = np.array([1, 4, 2, 4, 1]) / 12")
    assert answer(nb.run()) == pytest.approx(SIMPSON_X2)


def test_global_array_mutated_in_place_gives_the_new_answer(notebook):
    nb = notebook({"weights": TRAPEZOID, "stages": QUADRATURE})
    nb.run()
    weights = nb["WEIGHTS"]
    nb.execute("switch to Simpson", "WEIGHTS[:] = np.array([1, 4, 2, 4, 1]) / 12")
    assert nb["WEIGHTS"] is weights
    assert answer(nb.run()) == pytest.approx(SIMPSON_X2)


OSCILLATOR = """
class ProbeCfg(StageConfig):
    pass


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Angular frequency of a mass on a spring, both from the global PARAMS dict.'''

    def process(self, state, *, policy=None):
        return reading(np.sqrt(PARAMS["k"] / PARAMS["m"]))
"""


def test_global_dict_changed_in_place_gives_the_new_answer(notebook):
    nb = notebook({"params": 'PARAMS = {"k": 4.0, "m": 1.0}', "stages": OSCILLATOR})
    assert answer(nb.run()) == pytest.approx(2.0)
    nb.execute("stiffer spring", 'PARAMS["k"] = 5')
    assert answer(nb.run()) == pytest.approx(math.sqrt(5.0))


PHASE_VELOCITY = """
class ProbeCfg(StageConfig):
    c: float = 3.0


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Phase velocity of light in a medium.'''

    def process(self, state, *, policy=None):
        return reading(phase_velocity(self.cfg.c))
"""


def test_global_read_only_by_a_helper_gives_the_new_answer(notebook):
    helper = "def phase_velocity(c):\n    return c / REFRACTIVE_INDEX\n"
    nb = notebook({"index": "REFRACTIVE_INDEX = 1.5", "helpers": helper, "stages": PHASE_VELOCITY})
    assert answer(nb.run()) == pytest.approx(2.0)
    nb.execute("index", "REFRACTIVE_INDEX = 2.0")
    assert answer(nb.run()) == pytest.approx(1.5)


def test_helper_redefined_gives_the_new_answer(notebook):
    nb = notebook(
        {"helpers": "def phase_velocity(c):\n    return c / 1.5\n", "stages": PHASE_VELOCITY}
    )
    assert answer(nb.run()) == pytest.approx(2.0)
    nb.execute("helpers", "def phase_velocity(c):\n    return c / 2.0\n")
    assert answer(nb.run()) == pytest.approx(1.5)


BEER_LAMBERT = """
class ProbeCfg(StageConfig):
    length: float = 2.0


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Fraction of light through an absorbing slab.'''

    def process(self, state, *, policy=None):
        return reading(attenuation(self.cfg.length))
"""


def test_helper_default_argument_changed_gives_the_new_answer(notebook):
    helper = "def attenuation(length, alpha={}):\n    return np.exp(-alpha * length)\n"
    nb = notebook({"helpers": helper.format(0.5), "stages": BEER_LAMBERT})
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))
    nb.execute("helpers", helper.format(0.75))
    assert answer(nb.run()) == pytest.approx(math.exp(-1.5))


def test_helper_two_levels_deep_redefined_gives_the_new_answer(notebook):
    outer = "def attenuation(length):\n    return np.exp(-optical_depth(length))\n"
    middle = "def optical_depth(length):\n    return absorption_coefficient() * length\n"
    inner = "def absorption_coefficient():\n    return {}\n"
    nb = notebook(
        {
            "inner": inner.format(0.5),
            "middle": middle,
            "outer": outer,
            "stages": BEER_LAMBERT,
        }
    )
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))
    nb.execute("inner", inner.format(1.0))
    assert answer(nb.run()) == pytest.approx(math.exp(-2.0))


def test_lru_cached_helper_redefined_gives_the_new_answer(notebook):
    helper = """
    @functools.lru_cache
    def attenuation(length):
        return np.exp(-{} * length)
    """
    nb = notebook({"helpers": helper.format(0.5), "stages": BEER_LAMBERT})
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))
    nb.execute("helpers", helper.format(1.0))
    assert answer(nb.run()) == pytest.approx(math.exp(-2.0))


BEAM_PROFILE = """
class ProbeCfg(StageConfig):
    radius: float = 1.0


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Relative intensity of the beam at a radius, from the global profile function.'''

    def process(self, state, *, policy=None):
        return reading(profile(self.cfg.radius))
"""


def test_lambda_global_redefined_gives_the_new_answer(notebook):
    nb = notebook({"profile": "profile = lambda r: np.exp(-(r**2))", "stages": BEAM_PROFILE})
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))
    nb.execute("profile", "profile = lambda r: np.exp(-2 * r**2)")
    assert answer(nb.run()) == pytest.approx(math.exp(-2.0))


def test_partial_global_with_new_arguments_gives_the_new_answer(notebook):
    gaussian = "def gaussian(r, waist):\n    return np.exp(-2 * r**2 / waist**2)\n"
    nb = notebook(
        {
            "gaussian": gaussian,
            "profile": "profile = functools.partial(gaussian, waist=1.0)",
            "stages": BEAM_PROFILE,
        }
    )
    assert answer(nb.run()) == pytest.approx(math.exp(-2.0))
    nb.execute("profile", "profile = functools.partial(gaussian, waist=2.0)")
    assert answer(nb.run()) == pytest.approx(math.exp(-0.5))


DETECTOR_CLASS = """
class Detector:
    '''Counts photons with a fixed quantum efficiency.'''

    def __init__(self, efficiency):
        self.efficiency = efficiency

    def __call__(self, photons):
        return self.efficiency * photons
"""
DETECTION = """
class ProbeCfg(StageConfig):
    photons: float = 100.0


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Photons counted by the global detector.'''

    def process(self, state, *, policy=None):
        return reading(detector(self.cfg.photons))
"""


def test_callable_instance_replaced_gives_the_new_answer(notebook):
    nb = notebook(
        {
            "detector class": DETECTOR_CLASS,
            "detector": "detector = Detector(efficiency=0.5)",
            "stages": DETECTION,
        }
    )
    assert answer(nb.run()) == pytest.approx(50.0)
    nb.execute("detector", "detector = Detector(efficiency=0.8)")
    assert answer(nb.run()) == pytest.approx(80.0)


def test_callable_instance_attribute_changed_in_place_gives_the_new_answer(notebook):
    nb = notebook(
        {
            "detector class": DETECTOR_CLASS,
            "detector": "detector = Detector(efficiency=0.5)",
            "stages": DETECTION,
        }
    )
    nb.run()
    nb.execute("cooled detector", "detector.efficiency = 0.8")
    assert answer(nb.run()) == pytest.approx(80.0)


LOSSES = """
def mirror_loss(bounces):
    return {} ** bounces


def lens_loss(passes):
    return 0.98 ** passes


LOSSES = {{"mirror": mirror_loss, "lens": lens_loss}}
"""
CAVITY = """
class ProbeCfg(StageConfig):
    element: str = "mirror"
    count: int = 2


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Power left after a number of mirrors or lenses, looked up in the dict LOSSES.'''

    def process(self, state, *, policy=None):
        return reading(LOSSES[self.cfg.element](self.cfg.count))
"""


def test_helper_reached_through_a_dict_of_callables_gives_the_new_answer(notebook):
    nb = notebook({"losses": LOSSES.format(0.9), "stages": CAVITY})
    assert answer(nb.run()) == pytest.approx(0.81)
    nb.execute("losses", LOSSES.format(0.5))
    assert answer(nb.run()) == pytest.approx(0.25)


DECAY_FACTORY = """
def make_decay(rate):
    def decay(t):
        return np.exp(-rate * TIME_DILATION * t)

    return decay
"""
RADIOACTIVE = """
class ProbeCfg(StageConfig):
    t: float = 2.0


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Surviving fraction of a sample after time t, by the global decay law.'''

    def process(self, state, *, policy=None):
        return reading(decay(self.cfg.t))
"""


def test_global_read_inside_a_closure_gives_the_new_answer(notebook):
    nb = notebook(
        {
            "dilation": "TIME_DILATION = 1.0",
            "factory": DECAY_FACTORY,
            "decay": "decay = make_decay(0.5)",
            "stages": RADIOACTIVE,
        }
    )
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))
    nb.execute("dilation", "TIME_DILATION = 0.5")
    assert answer(nb.run()) == pytest.approx(math.exp(-0.5))


def test_closure_cell_value_changed_gives_the_new_answer(notebook):
    nb = notebook(
        {
            "dilation": "TIME_DILATION = 1.0",
            "factory": DECAY_FACTORY,
            "decay": "decay = make_decay(0.5)",
            "stages": RADIOACTIVE,
        }
    )
    nb.run()
    nb.execute("decay", "decay = make_decay(1.5)")
    assert answer(nb.run()) == pytest.approx(math.exp(-3.0))


OPTICS_HELPERS = {
    "staticmethod": """
    class Optics:
        '''Thin-lens formulas.'''

        @staticmethod
        def power(radius):
            return {} * 2.0 / radius
    """,
    "classmethod": """
    class Optics:
        '''Thin-lens formulas for one glass.'''

        INDEX = 1.5

        @classmethod
        def power(cls, radius):
            return (cls.INDEX - 1.0) * 2.0 / radius * {} / 0.5
    """,
}
LENS = """
class ProbeCfg(StageConfig):
    radius: float = 0.5


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Refractive power (dioptres) of a symmetric biconvex lens.'''

    def process(self, state, *, policy=None):
        return reading(Optics.power(self.cfg.radius))
"""


@pytest.mark.parametrize("kind", list(OPTICS_HELPERS))
def test_static_or_class_method_helper_redefined_gives_the_new_answer(notebook, kind):
    nb = notebook({"optics": OPTICS_HELPERS[kind].format(0.5), "stages": LENS})
    assert answer(nb.run()) == pytest.approx(2.0)
    nb.execute("optics", OPTICS_HELPERS[kind].format(0.6))  # a denser glass
    assert answer(nb.run()) == pytest.approx(2.4)


FIBRE = """
@dataclasses.dataclass
class Fibre:
    length_m: float
    loss_db_per_m: float
"""
FIBRE_LINK = """
class ProbeCfg(StageConfig):
    power_mw: float = 10.0


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Power out of the global fibre.'''

    def process(self, state, *, policy=None):
        loss_db = fibre.loss_db_per_m * fibre.length_m
        return reading(self.cfg.power_mw * 10 ** (-loss_db / 10))
"""


def test_dataclass_global_with_a_changed_field_gives_the_new_answer(notebook):
    nb = notebook(
        {
            "fibre class": FIBRE,
            "fibre": "fibre = Fibre(length_m=5.0, loss_db_per_m=2.0)",
            "stages": FIBRE_LINK,
        }
    )
    assert answer(nb.run()) == pytest.approx(1.0)
    nb.execute("fibre", "fibre = Fibre(length_m=10.0, loss_db_per_m=2.0)")
    assert answer(nb.run()) == pytest.approx(0.1)


def test_dataclass_global_field_changed_in_place_gives_the_new_answer(notebook):
    nb = notebook(
        {
            "fibre class": FIBRE,
            "fibre": "fibre = Fibre(length_m=5.0, loss_db_per_m=2.0)",
            "stages": FIBRE_LINK,
        }
    )
    nb.run()
    nb.execute("longer fibre", "fibre.length_m = 10.0")
    assert answer(nb.run()) == pytest.approx(0.1)


# --- edits to stage classes (these reach new stage objects only) ----------------------------

ABSORBERS = """
class Absorber(PipelineStage[SimpleState, ProbeCfg]):
    '''A slab of absorbing material; subclasses set ALPHA (per metre).'''

    def transmission(self, length):
        return np.exp(-{base} * self.ALPHA * length)

    def process(self, state, *, policy=None):
        return reading(self.transmission(self.cfg.length))


class Probe(Absorber):
    ALPHA = {alpha}
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_base_class_method_redefined_gives_the_new_answer(notebook):
    cfg = "class ProbeCfg(StageConfig):\n    length: float = 2.0\n"
    nb = notebook({"config": cfg, "stages": ABSORBERS.format(base=1.0, alpha=0.5)})
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))
    nb.execute("stages", ABSORBERS.format(base=2.0, alpha=0.5))  # light passes twice
    assert answer(nb.run()) == pytest.approx(math.exp(-2.0))


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_class_attribute_constant_changed_gives_the_new_answer(notebook):
    cfg = "class ProbeCfg(StageConfig):\n    length: float = 2.0\n"
    nb = notebook({"config": cfg, "stages": ABSORBERS.format(base=1.0, alpha=0.5)})
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))
    nb.execute("stages", ABSORBERS.format(base=1.0, alpha=0.25))
    assert answer(nb.run()) == pytest.approx(math.exp(-0.5))


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_stage_process_method_edited_gives_the_new_answer(notebook):
    nb = notebook({"scale": "SCALE = 2.0", "stages": KINETIC_ENERGY})
    nb.run()
    nb.execute("stages", KINETIC_ENERGY.replace("SCALE * self.cfg.mass", "0.5 * self.cfg.mass"))
    assert answer(nb.run()) == pytest.approx(0.75)


# --- values kept on the stage instance beside its config ------------------------------------

AMPLIFIER = """
class ProbeCfg(StageConfig):
    power_mw: float = 1.5


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''An amplifier whose gain is given to the constructor, beside the config.'''

    def __init__(self, cfg, gain):
        super().__init__(cfg)
        self.gain = gain

    def process(self, state, *, policy=None):
        return reading(self.gain * self.cfg.power_mw)
"""
AMPLIFIER_NODES = """
nodes = [
    NodeSpec(id="grid", stage=Grid(GridCfg())),
    NodeSpec(id="probe", deps=["grid"], stage=Probe(ProbeCfg(), gain={})),
]
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_stage_attribute_beside_config_changed_gives_the_new_answer(notebook):
    nb = notebook({"stages": AMPLIFIER}, nodes=AMPLIFIER_NODES.format(2.0))
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("nodes", AMPLIFIER_NODES.format(3.0))
    assert answer(nb.run()) == pytest.approx(4.5)


@pytest.mark.parametrize("notebook", SAME_OBJECTS, indirect=True)
def test_stage_attribute_changed_in_place_gives_the_new_answer(notebook):
    nb = notebook({"stages": AMPLIFIER}, nodes=AMPLIFIER_NODES.format(2.0))
    nb.run()
    nb.execute("turn up the gain", "nodes[1].stage.gain = 3.0")
    assert answer(nb.run()) == pytest.approx(4.5)


INTERPOLATOR = """
class ProbeCfg(StageConfig):
    x: float = 0.5


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Reads a precomputed table (given to the constructor) at x, on the grid.'''

    def __init__(self, cfg, table):
        super().__init__(cfg)
        self.table = table

    def process(self, state, *, policy=None):
        return reading(np.interp(self.cfg.x, state.payload, self.table))
"""
TABLE_NODES = """
nodes = [
    NodeSpec(id="grid", stage=Grid(GridCfg())),
    NodeSpec(id="probe", deps=["grid"], stage=Probe(ProbeCfg(), table=np.array({}))),
]
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_precomputed_table_given_to_the_constructor_changed_gives_the_new_answer(notebook):
    nb = notebook({"stages": INTERPOLATOR}, nodes=TABLE_NODES.format([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert answer(nb.run()) == pytest.approx(2.0)
    nb.execute("nodes", TABLE_NODES.format([0.0, 1.0, 4.0, 9.0, 16.0]))
    assert answer(nb.run()) == pytest.approx(4.0)


GLASS = """
class Glass:
    '''Cauchy's dispersion model: n = a + b / wavelength**2 (wavelength in um).'''

    def __init__(self, a, b):
        self.a, self.b = a, b

    def index(self, wavelength_um):
        return self.a + self.b / wavelength_um**2


class ProbeCfg(StageConfig):
    wavelength_um: float = 0.5


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Refractive index of the material model given to the constructor.'''

    def __init__(self, cfg, material):
        super().__init__(cfg)
        self.material = material

    def process(self, state, *, policy=None):
        return reading(self.material.index(self.cfg.wavelength_um))
"""
MATERIAL_NODES = """
nodes = [
    NodeSpec(id="grid", stage=Grid(GridCfg())),
    NodeSpec(id="probe", deps=["grid"], stage=Probe(ProbeCfg(), material=Glass({}, 0.01))),
]
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_material_model_given_to_the_constructor_changed_gives_the_new_answer(notebook):
    nb = notebook({"stages": GLASS}, nodes=MATERIAL_NODES.format(1.45))
    assert answer(nb.run()) == pytest.approx(1.49)
    nb.execute("nodes", MATERIAL_NODES.format(1.5))  # a denser glass
    assert answer(nb.run()) == pytest.approx(1.54)


HEATER = """
class ProbeCfg(StageConfig):
    seconds: float = 3.0


@dataclasses.dataclass
class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''A heater: the energy it delivers, from a dataclass field beside the config.'''

    cfg: ProbeCfg
    power_w: float = 10.0

    def process(self, state, *, policy=None):
        return reading(self.power_w * self.cfg.seconds)
"""
HEATER_NODES = """
nodes = [
    NodeSpec(id="grid", stage=Grid(GridCfg())),
    NodeSpec(id="probe", deps=["grid"], stage=Probe(ProbeCfg(), power_w={})),
]
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_dataclass_stage_field_changed_gives_the_new_answer(notebook):
    nb = notebook({"stages": HEATER}, nodes=HEATER_NODES.format(10.0))
    assert answer(nb.run()) == pytest.approx(30.0)
    nb.execute("nodes", HEATER_NODES.format(20.0))
    assert answer(nb.run()) == pytest.approx(60.0)


# --- configs hash by their whole value ------------------------------------------------------

PROBE_NODES_WITH = """
nodes = [
    NodeSpec(id="grid", stage=Grid(GridCfg())),
    NodeSpec(id="probe", deps=["grid"], stage=Probe(ProbeCfg({}))),
]
"""
BALLISTIC = """
class ProbeCfg(StageConfig):
    velocity: float = 2.0
    dt: float = Field(0.1, exclude=True)


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Distance travelled in one time step.'''

    def process(self, state, *, policy=None):
        return reading(self.cfg.velocity * self.cfg.dt)
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_config_field_excluded_from_dumps_changed_gives_the_new_answer(notebook):
    nb = notebook({"stages": BALLISTIC}, nodes=PROBE_NODES_WITH.format("dt=0.1"))
    assert answer(nb.run()) == pytest.approx(0.2)
    nb.execute("nodes", PROBE_NODES_WITH.format("dt=0.25"))
    assert answer(nb.run()) == pytest.approx(0.5)


ROUNDED_STEP = """
class ProbeCfg(StageConfig):
    velocity: float = 2.0
    dt: float = 0.1

    @field_serializer("dt")
    def _dt_for_display(self, dt):
        return round(dt, 1)


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Distance travelled in one time step.'''

    def process(self, state, *, policy=None):
        return reading(self.cfg.velocity * self.cfg.dt)
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_config_field_serializer_that_rounds_does_not_serve_the_rounded_result(notebook):
    nb = notebook({"stages": ROUNDED_STEP}, nodes=PROBE_NODES_WITH.format("dt=0.1"))
    assert answer(nb.run()) == pytest.approx(0.2)
    nb.execute("nodes", PROBE_NODES_WITH.format("dt=0.104"))
    assert answer(nb.run()) == pytest.approx(0.208)


PLASMA = """
class Medium(BaseModel):
    model_config = ConfigDict(frozen=True)
    index: float = 1.0


class Plasma(Medium):
    density: float = 1.0  # electrons per cubic micrometre


class ProbeCfg(StageConfig):
    medium: Medium = Medium()


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Plasma frequency (arbitrary units) of the medium: sqrt(density), zero for a dielectric.'''

    def process(self, state, *, policy=None):
        return reading(np.sqrt(getattr(self.cfg.medium, "density", 0.0)))
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_config_subclass_in_a_base_typed_field_changed_gives_the_new_answer(notebook):
    nb = notebook({"stages": PLASMA}, nodes=PROBE_NODES_WITH.format("medium=Plasma(density=1.0)"))
    assert answer(nb.run()) == pytest.approx(1.0)
    nb.execute("nodes", PROBE_NODES_WITH.format("medium=Plasma(density=4.0)"))
    assert answer(nb.run()) == pytest.approx(2.0)


# --- arrays whose bytes are not the whole story ---------------------------------------------

PARTICLES = """
class ProbeCfg(StageConfig):
    table: object = None


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Total mass of a particle table: the config's, else the initial state's.'''

    def process(self, state, *, policy=None):
        table = self.cfg.table if self.cfg.table is not None else state.payload
        return reading(table["mass"].sum())
"""
SINGLE_PROBE = 'nodes = [NodeSpec(id="probe", stage=Probe(ProbeCfg({})))]'
PARTICLE_TABLE = 'np.array([(1.0, 4.0), (2.0, 8.0)], dtype=[("mass", "<f8"), ("charge", "<f8")])'
# the same 32 bytes under other field names, or other field types
RELABELLED = {
    "field names": PARTICLE_TABLE + '.view([("charge", "<f8"), ("mass", "<f8")])',
    "field types": PARTICLE_TABLE + '.view([("mass", "<i8"), ("charge", "<f8")])',
}


def particle_mass(change: str) -> float:
    table = eval(RELABELLED[change], {"np": np})
    return float(table["mass"].sum())


@pytest.mark.parametrize("change", list(RELABELLED))
def test_structured_initial_state_with_same_bytes_relabelled_gives_the_new_answer(notebook, change):
    nb = notebook(
        {"stages": PARTICLES, "start": f"start = SimpleState({PARTICLE_TABLE})"},
        nodes=SINGLE_PROBE.format(""),
    )
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("start", f"start = SimpleState({RELABELLED[change]})")
    assert answer(nb.run()) == pytest.approx(particle_mass(change))


@pytest.mark.parametrize("change", list(RELABELLED))
@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_structured_config_array_with_same_bytes_relabelled_gives_the_new_answer(notebook, change):
    nb = notebook(
        {"stages": PARTICLES, "particles": f"PARTICLES = {PARTICLE_TABLE}"},
        nodes=SINGLE_PROBE.format("table=PARTICLES"),
    )
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("particles", f"PARTICLES = {RELABELLED[change]}")
    assert answer(nb.run()) == pytest.approx(particle_mass(change))


DOSIMETER = """
class ProbeCfg(StageConfig):
    doses: object = None


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Total dose over the readings not masked as faulty: the config's, else the state's.'''

    def process(self, state, *, policy=None):
        doses = self.cfg.doses if self.cfg.doses is not None else state.payload
        return reading(doses.sum())
"""
DOSES = "np.ma.array([1.0, 2.0, 4.0], mask={})"


def test_masked_initial_state_with_a_new_mask_gives_the_new_answer(notebook):
    start = "start = SimpleState({})"
    nb = notebook(
        {"stages": DOSIMETER, "start": start.format(DOSES.format([False, False, True]))},
        nodes=SINGLE_PROBE.format(""),
    )
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("start", start.format(DOSES.format([True, False, False])))
    assert answer(nb.run()) == pytest.approx(6.0)


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_masked_config_array_with_a_new_mask_gives_the_new_answer(notebook):
    nb = notebook(
        {"stages": DOSIMETER, "doses": "DOSES = " + DOSES.format([False, False, True])},
        nodes=SINGLE_PROBE.format("doses=DOSES"),
    )
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("doses", "DOSES = " + DOSES.format([True, False, False]))
    assert answer(nb.run()) == pytest.approx(6.0)


@pytest.mark.parametrize("notebook", SAME_OBJECTS, indirect=True)
def test_config_array_written_in_place_gives_the_new_answer(notebook):
    nb = notebook(
        {"stages": DOSIMETER, "doses": "DOSES = np.array([1.0, 2.0, 4.0])"},
        nodes=SINGLE_PROBE.format("doses=DOSES"),
    )
    assert answer(nb.run()) == pytest.approx(7.0)
    nb.execute("recalibrate", "nodes[0].stage.cfg.doses[2] = 8.0")
    assert answer(nb.run()) == pytest.approx(11.0)


# --- values of other libraries in a config --------------------------------------------------

TRANSIT = """
import pint

ureg = pint.UnitRegistry()


class ProbeCfg(StageConfig):
    length: object = ureg.Quantity(1.0, "m")


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Time of flight of light over the length, in nanoseconds.'''

    def process(self, state, *, policy=None):
        return reading(self.cfg.length.to("m").magnitude / 0.299792458)
"""


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_pint_quantity_in_config_with_new_units_gives_the_new_answer(notebook):
    pytest.importorskip("pint", reason="pint is not installed: no quantity to put in a config")
    length = 'length=ureg.Quantity(3.0, "{}")'
    nb = notebook({"stages": TRANSIT}, nodes=PROBE_NODES_WITH.format(length.format("m")))
    assert answer(nb.run()) == pytest.approx(3.0 / 0.299792458)
    nb.execute("nodes", PROBE_NODES_WITH.format(length.format("cm")))
    assert answer(nb.run()) == pytest.approx(0.03 / 0.299792458)


QUANTUM_EFFICIENCY = """
import pandas as pd


class ProbeCfg(StageConfig):
    calibration: object = None


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Peak quantum efficiency in a camera's calibration table.'''

    def process(self, state, *, policy=None):
        return reading(self.cfg.calibration["qe"].max())
"""
CALIBRATION = 'CALIBRATION = pd.DataFrame({{"wavelength_nm": [400, 500, 600], "qe": {}}})'


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_pandas_table_in_config_changed_gives_the_new_answer(notebook):
    pytest.importorskip("pandas", reason="pandas is not installed: no table to put in a config")
    nb = notebook(
        {"stages": QUANTUM_EFFICIENCY, "calibration": CALIBRATION.format([0.2, 0.5, 0.3])},
        nodes=PROBE_NODES_WITH.format("calibration=CALIBRATION"),
    )
    assert answer(nb.run()) == pytest.approx(0.5)
    nb.execute("calibration", CALIBRATION.format([0.2, 0.6, 0.3]))
    assert answer(nb.run()) == pytest.approx(0.6)


# --- data files named by a config field -----------------------------------------------------

BEAM = """
class ProbeCfg(StageConfig):
    path: Path = Path("data/beam.npy")


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Total power of a measured beam profile.'''

    def process(self, state, *, policy=None):
        return reading(np.load(self.cfg.path).sum())
"""


def save_keeping_mtime(path: Path, array: np.ndarray) -> None:
    """Overwrite an .npy file with an array of the same shape and dtype (so the same size) and
    put its old timestamps back: an edit within the same second looks exactly like this."""
    before = path.stat()
    np.save(path, array)
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture
def beam_file(tmp_path) -> Path:
    path = tmp_path / "data" / "beam.npy"
    path.parent.mkdir()
    np.save(path, np.array([1.0, 2.0, 3.0]))
    return path


def test_data_file_changed_in_content_gives_the_new_answer(notebook, beam_file):
    nb = notebook({"stages": BEAM})
    assert answer(nb.run()) == pytest.approx(6.0)
    save_keeping_mtime(beam_file, np.array([1.0, 2.0, 5.0]))
    assert answer(nb.run()) == pytest.approx(8.0)


# --- what is not an edit reruns nothing -----------------------------------------------------


def test_unrelated_global_changed_reruns_nothing(notebook):
    nb = notebook({"scale": "SCALE = 2.0", "other": "OTHER = 1.0", "stages": KINETIC_ENERGY})
    nb.run()
    nb.execute("other", "OTHER = 2.0")
    result = nb.run()
    assert result.ran == []
    assert answer(result) == pytest.approx(3.0)


def test_every_cell_re_executed_unchanged_reruns_nothing(notebook):
    helper = "def phase_velocity(c):\n    return c / REFRACTIVE_INDEX\n"
    nb = notebook({"index": "REFRACTIVE_INDEX = 1.5", "helpers": helper, "stages": PHASE_VELOCITY})
    nb.run()
    defined = ["Probe", "ProbeCfg", "Grid", "phase_velocity", "reading"]
    before = [nb[name] for name in defined]
    for cell in [name for name in nb.cells if name != "nodes"]:
        nb.execute(cell)
    assert all(nb[name] is not old for name, old in zip(defined, before, strict=True))
    result = nb.run()
    assert result.ran == []
    assert answer(result) == pytest.approx(2.0)


LOGGED_ENERGY = """
class ProbeCfg(StageConfig):
    mass: float = 1.5


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Energy of the mass, logged and computed under a lock shared with other threads.'''

    def process(self, state, *, policy=None):
        with LOCK:
            log.debug("mass %s", self.cfg.mass)
            return reading(2.0 * self.cfg.mass)
"""
LOGGING_CELL = """
import logging
import threading

log = logging.getLogger("beamline")
LOCK = threading.Lock()
"""


def test_logger_global_reconfigured_reruns_nothing(notebook):
    nb = notebook({"logging": LOGGING_CELL, "stages": LOGGED_ENERGY})
    nb.run()
    nb.execute("verbose", "log.setLevel(logging.DEBUG)")
    try:
        result = nb.run()
    finally:
        nb["log"].setLevel(nb["logging"].NOTSET)
    assert result.ran == []
    assert answer(result) == pytest.approx(3.0)


def test_lock_global_created_anew_reruns_nothing(notebook):
    nb = notebook({"logging": LOGGING_CELL, "stages": LOGGED_ENERGY})
    nb.run()
    lock = nb["LOCK"]
    nb.execute("logging")
    assert nb["LOCK"] is not lock
    result = nb.run()
    assert result.ran == []
    assert answer(result) == pytest.approx(3.0)


HELPER_OBJECTS = {
    "tqdm bar": "from tqdm.auto import tqdm\n\nTOOL = tqdm(total=100, disable=True)\n",
    "thread pool": (
        "from concurrent.futures import ThreadPoolExecutor\n\n"
        "TOOL = ThreadPoolExecutor(max_workers=2)\n"
    ),
}
SPECTRUM = """
class ProbeCfg(StageConfig):
    pass


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Total intensity of a spectrum, through the global TOOL (a progress bar or a pool).'''

    def process(self, state, *, policy=None):
        if hasattr(TOOL, "submit"):
            total = TOOL.submit(np.sum, state.payload).result()
        else:
            total = np.sum(state.payload)
            TOOL.update(1)
        return reading(total)
"""


@pytest.mark.parametrize("kind", list(HELPER_OBJECTS))
def test_progress_bar_or_pool_global_created_anew_reruns_nothing(notebook, kind):
    nb = notebook({"helper": HELPER_OBJECTS[kind], "stages": SPECTRUM})
    nb.run()
    first = nb["TOOL"]
    nb.execute("helper")
    try:
        result = nb.run()
        assert result.ran == []
        assert answer(result) == pytest.approx(2.5)
    finally:
        for tool in (first, nb["TOOL"]):
            tool.shutdown() if hasattr(tool, "shutdown") else tool.close()


def test_comment_only_edit_in_a_helper_reruns_nothing(notebook):
    helper = "def attenuation(length):\n    return np.exp(-0.5 * length)\n"
    commented = (
        "# Beer-Lambert law for our slab\n\n"
        "def attenuation(length):\n"
        "    # alpha = 0.5 per metre, measured in March\n"
        "    return np.exp(-0.5 * length)  # fraction transmitted\n"
    )
    nb = notebook({"helpers": helper, "stages": BEER_LAMBERT})
    nb.run()
    nb.execute("helpers", commented)
    result = nb.run()
    assert result.ran == []
    assert answer(result) == pytest.approx(math.exp(-1.0))


def test_docstring_only_edit_in_a_helper_keeps_the_answer(notebook):
    """A docstring is a code constant: it may rerun the stage (not asserted), but the answer
    must stay right."""
    helper = "def attenuation(length):\n    return np.exp(-0.5 * length)\n"
    documented = (
        "def attenuation(length):\n"
        '    """Fraction of light through a slab (Beer-Lambert, 0.5 per metre)."""\n'
        "    return np.exp(-0.5 * length)\n"
    )
    nb = notebook({"helpers": helper, "stages": BEER_LAMBERT})
    nb.run()
    nb.execute("helpers", documented)
    assert answer(nb.run()) == pytest.approx(math.exp(-1.0))


def test_data_file_touched_reruns_nothing(notebook, beam_file):
    nb = notebook({"stages": BEAM})
    nb.run()
    later = beam_file.stat().st_mtime_ns + 10**10
    os.utime(beam_file, ns=(later, later))
    result = nb.run()
    assert result.ran == []
    assert answer(result) == pytest.approx(6.0)


# --- a value that cannot be hashed ----------------------------------------------------------

PHOTON_SOURCE = """
def photon_source():
    '''An endless stream of 2 eV photons.'''
    while True:
        yield 2.0


SOURCE = photon_source()
"""
PHOTON_COUNTER = """
class ProbeCfg(StageConfig):
    count: int = 3


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Energy of the next photons drawn from a source.'''

    untracked: ClassVar[tuple[str, ...]] = {untracked}

    def __init__(self, cfg, source=None):
        super().__init__(cfg)
        if source is not None:
            self.source = source

    def process(self, state, *, policy=None):
        return reading(sum(next({read}) for _ in range(self.cfg.count)))
"""
# where the generator is read from: the name the warning must give, the code reading it and
# the nodes cell
GENERATOR_READ_AS = {
    "global": ("SOURCE", "SOURCE", NODES),
    "attribute": (
        "source",
        "self.source",
        NODES.replace("Probe(ProbeCfg())", "Probe(ProbeCfg(), source=photon_source())"),
    ),
}


def uncacheable_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UncacheableWarning)]


@pytest.mark.parametrize("read_as", list(GENERATOR_READ_AS))
@pytest.mark.parametrize("notebook", ["executor, same stage objects"], indirect=True)
def test_unhashable_value_reruns_every_time_with_one_warning_naming_it(notebook, read_as):
    name, read, nodes = GENERATOR_READ_AS[read_as]
    stages = PHOTON_COUNTER.format(untracked="()", read=read)
    nb = notebook({"source": PHOTON_SOURCE, "stages": stages}, nodes=nodes)
    for _ in range(2):
        with pytest.warns(UncacheableWarning) as caught:
            result = nb.run()
        assert "probe" in result.ran and answer(result) == pytest.approx(6.0)
        [message] = uncacheable_warnings(caught.list)
        assert "probe" in message and re.search(rf"\b{name}\b", message), message


@pytest.mark.parametrize("read_as", list(GENERATOR_READ_AS))
@pytest.mark.parametrize("notebook", ["executor, same stage objects"], indirect=True)
def test_untracked_unhashable_value_is_cached_without_a_warning(notebook, read_as):
    name, read, nodes = GENERATOR_READ_AS[read_as]
    stages = PHOTON_COUNTER.format(untracked=f"({name!r},)", read=read)
    nb = notebook({"source": PHOTON_SOURCE, "stages": stages}, nodes=nodes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = nb.run(), nb.run()
    assert uncacheable_warnings(caught) == []
    assert first.ran == ["grid", "probe"]
    assert second.ran == [] and answer(second) == pytest.approx(6.0)


# --- stale reasons name what changed --------------------------------------------------------


def edit_global(nb: Notebook) -> None:
    nb.execute("scale", "SCALE = 3.0")


def edit_helper(nb: Notebook) -> None:
    nb.execute("helpers", "def phase_velocity(c):\n    return c / 2.0\n")


def edit_attribute(nb: Notebook) -> None:
    nb.execute("nodes", AMPLIFIER_NODES.format(3.0))


def edit_file(nb: Notebook) -> None:
    save_keeping_mtime(Path("data/beam.npy"), np.array([1.0, 2.0, 5.0]))


def edit_config_field(nb: Notebook) -> None:
    nb.execute("nodes", PROBE_NODES_WITH.format("dt=0.25"))


STEP = BALLISTIC.replace("Field(0.1, exclude=True)", "0.1")  # dt an ordinary field

# edit -> (cells, nodes cell, the edit, words the reason must hold beside "changed")
REASON_CASES = {
    "global": ({"scale": "SCALE = 2.0", "stages": KINETIC_ENERGY}, NODES, edit_global, "SCALE"),
    "helper": (
        {"helpers": "def phase_velocity(c):\n    return c / 1.5\n", "stages": PHASE_VELOCITY},
        NODES,
        edit_helper,
        "phase_velocity",
    ),
    "attribute": ({"stages": AMPLIFIER}, AMPLIFIER_NODES.format(2.0), edit_attribute, "gain"),
    "file": ({"stages": BEAM}, NODES, edit_file, "beam.npy"),
    "config field": ({"stages": STEP}, PROBE_NODES_WITH.format(""), edit_config_field, "dt"),
}


def names_change_of(reason: str, name: str) -> bool:
    return bool(re.search(rf"\b{re.escape(name)}\b", reason)) and "changed" in reason


@pytest.mark.parametrize("case", list(REASON_CASES))
@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_stale_reason_names_what_changed_before_and_after_the_run(notebook, beam_file, case):
    cells, nodes, edit, name = REASON_CASES[case]
    nb = notebook(cells, nodes=nodes)
    nb.run()
    edit(nb)
    stale = nb.stale()
    assert "probe" in stale
    assert any(names_change_of(reason, name) for reason in stale["probe"].reasons), stale
    reason = nb.run().runs["probe"].reason
    assert names_change_of(reason, name), reason


# --- globals reached in less obvious ways ---------------------------------------------------

HIDDEN_READS = {
    "generator expression": "return reading(sum(SCALE * m for m in [self.cfg.mass]))",
    "nested function": (
        "def energy(m):\n            return SCALE * m\n\n"
        "        return reading(energy(self.cfg.mass))"
    ),
    "property": "return reading(self.scaled_mass)",
}
HIDDEN_ENERGY = """
class ProbeCfg(StageConfig):
    mass: float = 1.5


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    '''Energy of the mass scaled by SCALE, read where a quick look would miss it.'''

    @property
    def scaled_mass(self):
        return SCALE * self.cfg.mass

    def process(self, state, *, policy=None):
        {body}
"""


@pytest.mark.parametrize("read_in", list(HIDDEN_READS))
def test_global_read_inside_nested_code_gives_the_new_answer(notebook, read_in):
    stages = HIDDEN_ENERGY.replace("{body}", HIDDEN_READS[read_in])
    nb = notebook({"scale": "SCALE = 2.0", "stages": stages})
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("scale", "SCALE = 3.0")
    assert answer(nb.run()) == pytest.approx(4.5)


def test_attribute_of_an_imported_user_module_set_in_a_cell_gives_the_new_answer(
    notebook, tmp_path, monkeypatch
):
    (tmp_path / "beamline_consts.py").write_text("SCALE = 2.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "beamline_consts", raising=False)
    stages = KINETIC_ENERGY.replace("SCALE *", "consts.SCALE *")
    nb = notebook({"consts": "import beamline_consts as consts", "stages": stages})
    assert answer(nb.run()) == pytest.approx(3.0)
    nb.execute("heavier", "consts.SCALE = 3.0")
    assert answer(nb.run()) == pytest.approx(4.5)


SLOTTED_HEATER = HEATER.replace("@dataclasses.dataclass", "@dataclasses.dataclass(slots=True)")


@pytest.mark.parametrize("notebook", REBUILT, indirect=True)
def test_slotted_dataclass_stage_field_changed_gives_the_new_answer(notebook):
    nb = notebook({"stages": SLOTTED_HEATER}, nodes=HEATER_NODES.format(10.0))
    assert answer(nb.run()) == pytest.approx(30.0)
    nb.execute("nodes", HEATER_NODES.format(20.0))
    assert answer(nb.run()) == pytest.approx(60.0)


TWO_AMPLIFIERS = """
nodes = [
    NodeSpec(id="grid", stage=Grid(GridCfg())),
    NodeSpec(id="low", deps=["grid"], stage=Probe(ProbeCfg(), gain=2.0)),
    NodeSpec(id="high", deps=["grid"], stage=Probe(ProbeCfg(), gain=3.0)),
]
"""


def test_two_stages_of_one_class_differing_only_in_attributes_keep_their_own_answers(notebook):
    nb = notebook({"stages": AMPLIFIER}, nodes=TWO_AMPLIFIERS)
    for _ in range(2):
        result = nb.run()
        assert answer(result, "low") == pytest.approx(3.0)
        assert answer(result, "high") == pytest.approx(4.5)
