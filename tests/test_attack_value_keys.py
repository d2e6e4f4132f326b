"""Attacks on config values that compare equal but make a stage compute something else: a
signed zero, the order of a dict, a NaN's sign, a numpy scalar standing for a float, and a
float subclass that carries its unit. Each was served the other value's cached result before
keys told them apart; each test runs both values through one cache, on disk and in memory, and
asserts the second run computed its own answer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import PrivateAttr
from stages.values import START, AnyCfg, output

from phys_pipeline.cache import MemoryStore
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult


class AngleCfg(StageConfig):
    y: float = 0.0


class Angle(PipelineStage[SimpleState, AngleCfg]):
    """The phase of the point (-1, y): +pi above the branch cut, -pi below it."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(math.atan2(self.cfg.y, -1.0)))


class WeightsCfg(StageConfig):
    weights: dict[str, float]


class WeightVector(PipelineStage[SimpleState, WeightsCfg]):
    """The weights as a vector, in the order the config lists the species."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(np.array(list(self.cfg.weights.values()))))


class Sign(PipelineStage[SimpleState, AnyCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(math.copysign(1.0, self.cfg.x)))


class SquareRoot(PipelineStage[SimpleState, AnyCfg]):
    """Python's float gives a complex root of a negative number, numpy's float64 a NaN."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        with np.errstate(invalid="ignore"):
            return StageResult(SimpleState(self.cfg.x**0.5))


class Length(float):
    """A length that keeps its unit on the value."""

    unit: str

    def __new__(cls, value: float, unit: str) -> Length:
        self = super().__new__(cls, value)
        self.unit = unit
        return self


class InMetres(PipelineStage[SimpleState, AnyCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        scale = {"m": 1.0, "mm": 1e-3}[self.cfg.x.unit]
        return StageResult(SimpleState(float(self.cfg.x) * scale))


def test_a_signed_zero_is_not_served_the_other_zeros_phase(executor: DagExecutor) -> None:
    assert output(executor, Angle(AngleCfg(y=0.0))) == math.pi
    assert output(executor, Angle(AngleCfg(y=-0.0))) == -math.pi


def test_reordered_weights_are_not_served_the_other_order(executor: DagExecutor) -> None:
    first = output(executor, WeightVector(WeightsCfg(weights={"N2": 0.78, "O2": 0.21})))
    second = output(executor, WeightVector(WeightsCfg(weights={"O2": 0.21, "N2": 0.78})))
    assert list(first) == [0.78, 0.21]
    assert list(second) == [0.21, 0.78]


def test_a_negative_nan_is_not_served_the_positive_nans_sign(executor: DagExecutor) -> None:
    assert output(executor, Sign(AnyCfg(x=math.nan))) == 1.0
    assert output(executor, Sign(AnyCfg(x=-math.nan))) == -1.0


def test_a_numpy_float_is_not_served_the_python_floats_result(executor: DagExecutor) -> None:
    assert isinstance(output(executor, SquareRoot(AnyCfg(x=-4.0))), complex)
    assert math.isnan(output(executor, SquareRoot(AnyCfg(x=np.float64(-4.0)))))


def test_a_float_carrying_its_unit_is_not_served_another_units_result(
    executor: DagExecutor,
) -> None:
    assert output(executor, InMetres(AnyCfg(x=Length(5.0, "m")))) == 5.0
    assert output(executor, InMetres(AnyCfg(x=Length(5.0, "mm")))) == pytest.approx(5e-3)


def test_equal_values_still_share_a_result(executor: DagExecutor) -> None:
    """The other side: a value equal bit for bit, in the same order, is a hit."""
    output(executor, WeightVector(WeightsCfg(weights={"N2": 0.78, "O2": 0.21})))
    again = executor.run(
        START,
        [NodeSpec(id="node", stage=WeightVector(WeightsCfg(weights={"N2": 0.78, "O2": 0.21})))],
    )
    assert again.hits == ["node"]


def test_a_policy_bag_iterates_the_same_whatever_order_it_was_given() -> None:
    """A bag's hash ignores insertion order, so a stage iterating it must see one order."""
    one, other = PolicyBag({"b": 1, "a": 2}), PolicyBag({"a": 2, "b": 1})
    assert one.hash() == other.hash()
    assert list(one) == list(other) == ["a", "b"]


# --- user code held in a config value: its methods (and a defaultdict's factory) are code the
# stage calls, so an edit to them must rerun the node ---------------------------------------

CELL = """
from collections import defaultdict
from typing import Any, NamedTuple
from phys_pipeline.types import PipelineStage, SimpleState, StageConfig, StageResult

class Gaussian(NamedTuple):
    width: float
    def fwhm(self):
        return self.width * FACTOR

class Lorentzian(NamedTuple):
    width: float
    def fwhm(self):
        return self.width * 2.0

class Metres(float):
    def in_mm(self):
        return float(self) * FACTOR

class ShapeCfg(StageConfig):
    shape: Any = None

class Width(PipelineStage[SimpleState, ShapeCfg]):
    def process(self, state, *, policy=None):
        return StageResult(SimpleState(self.cfg.shape.fwhm()))

class Millimetres(PipelineStage[SimpleState, ShapeCfg]):
    def process(self, state, *, policy=None):
        return StageResult(SimpleState(self.cfg.shape.in_mm()))

class MissingGain(PipelineStage[SimpleState, ShapeCfg]):
    def process(self, state, *, policy=None):
        return StageResult(SimpleState(self.cfg.shape["unlisted"]))

def gains():
    return defaultdict(lambda: FACTOR, {"listed": 1.0})
"""


def cell(factor: float) -> dict[str, Any]:
    """The notebook's classes, defined (again) with ``FACTOR`` written as ``factor``."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    code = compile(CELL.replace("FACTOR", repr(factor)), "<cell>", "exec", dont_inherit=True)
    exec(code, namespace)
    return namespace


def test_an_edited_namedtuple_method_reruns(executor: DagExecutor) -> None:
    for factor in (2.0, 2.3548):
        ns = cell(factor)
        stage = ns["Width"](ns["ShapeCfg"](shape=ns["Gaussian"](1.0)))
        assert output(executor, stage) == factor


def test_another_namedtuple_class_with_the_same_fields_reruns(executor: DagExecutor) -> None:
    ns = cell(3.0)
    assert output(executor, ns["Width"](ns["ShapeCfg"](shape=ns["Gaussian"](1.0)))) == 3.0
    assert output(executor, ns["Width"](ns["ShapeCfg"](shape=ns["Lorentzian"](1.0)))) == 2.0


def test_an_edited_method_of_a_float_subclass_reruns(executor: DagExecutor) -> None:
    for factor in (1000.0, 100.0):
        ns = cell(factor)
        stage = ns["Millimetres"](ns["ShapeCfg"](shape=ns["Metres"](2.0)))
        assert output(executor, stage) == 2.0 * factor


def test_an_edited_defaultdict_factory_reruns(executor: DagExecutor) -> None:
    for factor in (1.0, 0.5):
        ns = cell(factor)
        stage = ns["MissingGain"](ns["ShapeCfg"](shape=ns["gains"]()))
        assert output(executor, stage) == factor


def test_a_namedtuple_in_a_config_is_cached() -> None:
    """Its field accessors are data, not code the key cannot cover."""
    ns = cell(2.0)
    executor = DagExecutor(cache=MemoryStore())
    nodes = [NodeSpec(id="node", stage=ns["Width"](ns["ShapeCfg"](shape=ns["Gaussian"](1.0))))]
    executor.run(START, nodes)
    assert executor.run(START, nodes).hits == ["node"]


# --- a pydantic config's private attributes: set by hand or derived, a stage reads them ------


class ScaledCfg(StageConfig):
    x: float = 1.0
    _scale: float = PrivateAttr(default=1.0)


class Scaled(PipelineStage[SimpleState, ScaledCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(self.cfg.x * self.cfg._scale))


def test_a_private_attribute_set_on_a_config_reruns(executor: DagExecutor) -> None:
    assert output(executor, Scaled(ScaledCfg())) == 1.0
    cfg = ScaledCfg()
    cfg._scale = 3.0
    assert output(executor, Scaled(cfg)) == 3.0


class InterpolatedCfg(StageConfig):
    x: float = 1.0
    _table: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        self._table = lambda t: 2.0 * t  # derived from the fields: code the key must cover


class Interpolated(PipelineStage[SimpleState, InterpolatedCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(self.cfg._table(self.cfg.x)))


def test_a_config_with_a_derived_private_attribute_is_cached() -> None:
    executor = DagExecutor(cache=MemoryStore())
    nodes = [NodeSpec(id="node", stage=Interpolated(InterpolatedCfg()))]
    assert executor.run(START, nodes).results["node"].state.payload == 2.0
    assert executor.run(START, nodes).hits == ["node"]


# --- pint: the Quantity class each registry builds, and units a registry defines -----------


class InMetresByPint(PipelineStage[SimpleState, AnyCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(float(self.cfg.x.to("m").magnitude)))


def test_a_pint_quantity_in_a_config_is_cached() -> None:
    """Each registry's Quantity class is built by pint at run time: pint's code, keyed by its
    version, not a user class whose registry the key cannot cover."""
    pint = pytest.importorskip("pint")
    ureg = pint.UnitRegistry()
    executor = DagExecutor(cache=MemoryStore())
    nodes = [NodeSpec(id="node", stage=InMetresByPint(AnyCfg(x=ureg.Quantity(3.0, "cm"))))]
    assert executor.run(START, nodes).results["node"].state.payload == pytest.approx(0.03)
    assert executor.run(START, nodes).hits == ["node"]


def test_a_unit_defined_otherwise_in_a_new_registry_reruns(executor: DagExecutor) -> None:
    """A notebook cell rerun with another definition of its own unit: same name, same
    magnitude, another length."""
    pint = pytest.importorskip("pint")
    for metres in (1.7018, 2.0):
        ureg = pint.UnitRegistry()
        ureg.define(f"smoot = {metres} m")
        stage = InMetresByPint(AnyCfg(x=ureg.Quantity(1.0, "smoot")))
        assert output(executor, stage) == pytest.approx(metres)
