"""More attacks on config values (and values a stage holds or reads) that a key may not tell
apart while a stage computes something else with them: the memory order of an array, a bytes
value that carries its byte order, a memoryview's format, a regex's flags, a secret, an
``InitVar`` a dataclass derives from, an array subclass carrying its grid step, a nested
model's private attribute, a business-day index, an astropy unit defined anew, the precision
of a library's global context, a pure path naming a file. Each test runs the first value,
asserts its answer, then runs the second value through the same cache and asserts the second's
own answer. A few tests guard values the key does tell apart, and values that should be cached
(a hit on the second identical run) rather than rerun every time."""

from __future__ import annotations

import dataclasses
import decimal
import re
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, PrivateAttr, SecretStr
from stages.values import START, AnyCfg, output

from phys_pipeline.cache import MemoryStore
from phys_pipeline.errors import NodeFailedError, UncacheableWarning
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult


def stage_of(fn: Any) -> type[PipelineStage]:
    """A stage class whose result is ``fn(cfg.x)``."""

    class Stage(PipelineStage[SimpleState, AnyCfg]):
        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            return StageResult(SimpleState(fn(self.cfg.x)))

    Stage.__qualname__ = Stage.__name__ = f"Stage_{fn.__name__}"
    return Stage


def second_run_hits(stage: PipelineStage) -> list[str]:
    """The hits of a second run of one node over a fresh memory cache; an UncacheableWarning
    fails the test (the node would rerun every time)."""
    executor = DagExecutor(cache=MemoryStore())
    nodes = [NodeSpec(id="node", stage=stage)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncacheableWarning)
        executor.run(START, nodes)
        return executor.run(START, nodes).hits


# --- numpy: memory order, array subclasses carrying metadata ---------------------------------


def memory_order(field: np.ndarray) -> np.ndarray:
    """The field packed in the order it lies in memory, as a Fortran solver reads it."""
    return np.ravel(field, order="K")


MemoryOrder = stage_of(memory_order)


def test_a_fortran_ordered_field_is_not_served_the_c_ordered_packing(
    executor: DagExecutor,
) -> None:
    field = np.arange(6.0).reshape(2, 3)
    assert list(output(executor, MemoryOrder(AnyCfg(x=field)))) == [0, 1, 2, 3, 4, 5]
    fortran = np.asfortranarray(field)
    assert list(output(executor, MemoryOrder(AnyCfg(x=fortran)))) == [0, 3, 1, 4, 2, 5]


class Sampled(np.ndarray):
    """Samples that keep their grid step on the array (numpy's documented InfoArray idiom)."""

    dx: float

    def __new__(cls, samples: Any, dx: float) -> Sampled:
        self = np.asarray(samples, dtype=float).view(cls)
        self.dx = dx
        return self

    def __array_finalize__(self, obj: Any) -> None:
        self.dx = getattr(obj, "dx", 1.0)


def integral(samples: Sampled) -> float:
    return float(np.asarray(samples).sum() * samples.dx)


Integral = stage_of(integral)


def test_an_array_carrying_its_grid_step_is_not_served_another_steps_integral(
    executor: DagExecutor,
) -> None:
    assert output(executor, Integral(AnyCfg(x=Sampled([1.0, 1.0], dx=0.5)))) == 1.0
    assert output(executor, Integral(AnyCfg(x=Sampled([1.0, 1.0], dx=0.25)))) == 0.5


def first_sample(samples: np.ndarray) -> float:
    return float(samples[0])


FirstSample = stage_of(first_sample)


def test_byte_order_is_told_apart(executor: DagExecutor) -> None:
    """Holds: the same bytes read big- and little-endian are two arrays."""
    raw = np.array([1.0]).tobytes()
    little, big = np.frombuffer(raw, "<f8"), np.frombuffer(raw, ">f8")
    assert output(executor, FirstSample(AnyCfg(x=little))) == 1.0
    assert output(executor, FirstSample(AnyCfg(x=big))) == float(big[0])


def test_a_masked_arrays_fill_value_is_told_apart(executor: DagExecutor) -> None:
    """Holds: the fill value is what ``filled()`` writes where the detector had no data."""
    filled = stage_of(lambda arr: arr.filled().tolist())
    one = np.ma.array([1.0, 2.0], mask=[False, True], fill_value=0.0)
    other = np.ma.array([1.0, 2.0], mask=[False, True], fill_value=-1.0)
    assert output(executor, filled(AnyCfg(x=one))) == [1.0, 0.0]
    assert output(executor, filled(AnyCfg(x=other))) == [1.0, -1.0]


# --- bytes and buffers: the same bytes, read otherwise ---------------------------------------


class Raw(bytes):
    """A detector's raw buffer, with the byte order its header declared."""

    byteorder: str

    def __new__(cls, data: bytes, byteorder: str) -> Raw:
        self = super().__new__(cls, data)
        self.byteorder = byteorder
        return self


def decoded(raw: Raw) -> float:
    return float(np.frombuffer(raw, dtype=f"{raw.byteorder}f8")[0])


Decoded = stage_of(decoded)


def test_a_buffer_carrying_its_byte_order_is_not_served_the_other_orders_decoding(
    executor: DagExecutor,
) -> None:
    data = np.array([1.0], dtype="<f8").tobytes()
    assert output(executor, Decoded(AnyCfg(x=Raw(data, "<")))) == 1.0
    big = float(np.frombuffer(data, dtype=">f8")[0])
    assert output(executor, Decoded(AnyCfg(x=Raw(data, ">")))) == big


def as_list(buffer: memoryview) -> list:
    return buffer.tolist()


AsList = stage_of(as_list)


def test_a_memoryview_of_floats_is_not_served_the_ints_with_its_bytes(
    executor: DagExecutor,
) -> None:
    floats = np.array([1.0])
    ints = floats.view(np.int64)
    assert output(executor, AsList(AnyCfg(x=memoryview(floats)))) == [1.0]
    assert output(executor, AsList(AnyCfg(x=memoryview(ints)))) == [int(ints[0])]


def test_a_memoryview_shaped_otherwise_is_not_served_the_flat_ones_rows(
    executor: DagExecutor,
) -> None:
    flat = np.arange(4.0)
    assert output(executor, AsList(AnyCfg(x=memoryview(flat)))) == [0.0, 1.0, 2.0, 3.0]
    square = memoryview(flat.reshape(2, 2))
    assert output(executor, AsList(AnyCfg(x=square))) == [[0.0, 1.0], [2.0, 3.0]]


# --- values pydantic serialises lossily: a regex's flags, a secret ---------------------------

SPECIES = ["H2O", "h2o", "CO2", "co2"]


def matching(pattern: re.Pattern) -> list[str]:
    return [name for name in SPECIES if pattern.fullmatch(name)]


Matching = stage_of(matching)


def test_a_case_insensitive_pattern_is_not_served_the_case_sensitive_selection(
    executor: DagExecutor,
) -> None:
    assert output(executor, Matching(AnyCfg(x=re.compile("h2o")))) == ["h2o"]
    insensitive = re.compile("h2o", re.IGNORECASE)
    assert output(executor, Matching(AnyCfg(x=insensitive))) == ["H2O", "h2o"]


CALIBRATIONS = {"detector-a": 1.02, "detector-b": 0.97}


def calibration(key: SecretStr) -> float:
    """The gain of the detector the (secret) access key unlocks."""
    return CALIBRATIONS[key.get_secret_value()]


Calibration = stage_of(calibration)


def test_another_secret_is_not_served_the_first_secrets_calibration(
    executor: DagExecutor,
) -> None:
    assert output(executor, Calibration(AnyCfg(x=SecretStr("detector-a")))) == 1.02
    assert output(executor, Calibration(AnyCfg(x=SecretStr("detector-b")))) == 0.97


# --- sets: iteration order ---------------------------------------------------------------------


def level_vector(levels: set[int]) -> list[int]:
    return list(levels)


LevelVector = stage_of(level_vector)


def test_a_set_iterated_in_another_order_is_not_served_the_first_order(
    executor: DagExecutor,
) -> None:
    """Borderline: ints 8 and 16 share a slot of a small set, so a set iterates them in the
    order they were added, the same in every process (ints hash to themselves). A dict's order
    is part of its key for this reason."""
    assert output(executor, LevelVector(AnyCfg(x={8, 16}))) == [8, 16]
    assert output(executor, LevelVector(AnyCfg(x={16, 8}))) == [16, 8]


# --- dataclasses and nested models: state beside the fields ----------------------------------


@dataclasses.dataclass
class Grid:
    """A grid of ``n`` cells; its step derived from the ``length`` given at construction."""

    n: int
    length: dataclasses.InitVar[float] = 1.0

    def __post_init__(self, length: float) -> None:
        self.dx = length / self.n


def grid_step(grid: Grid) -> float:
    return grid.dx


GridStep = stage_of(grid_step)


def test_a_grid_built_from_another_length_is_not_served_the_first_step(
    executor: DagExecutor,
) -> None:
    assert output(executor, GridStep(AnyCfg(x=Grid(10, length=1.0)))) == 0.1
    assert output(executor, GridStep(AnyCfg(x=Grid(10, length=2.0)))) == 0.2


class Medium(BaseModel):
    index: float = 1.0
    _dispersion: float = PrivateAttr(default=0.0)


class MediumCfg(StageConfig):
    medium: Medium = Medium()


class Dispersion(PipelineStage[SimpleState, MediumCfg]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        medium = self.cfg.medium
        return StageResult(SimpleState(medium.index + medium._dispersion))


def test_a_nested_models_private_attribute_set_by_hand_reruns(executor: DagExecutor) -> None:
    """The config's own private attributes are in the key; a nested model's are not."""
    assert output(executor, Dispersion(MediumCfg(medium=Medium(index=1.5)))) == 1.5
    medium = Medium(index=1.5)
    medium._dispersion = 0.25
    assert output(executor, Dispersion(MediumCfg(medium=medium))) == 1.75


class Gains(dict):
    """Gains per channel, in the scale the calibration sheet used (a dict that keeps its
    unit, as ``Length(float)`` keeps its own)."""

    scale: str = "linear"


def linear_gain(gains: Gains) -> float:
    return gains["ch0"] if gains.scale == "linear" else 10 ** (gains["ch0"] / 10)


LinearGain = stage_of(linear_gain)


def test_a_dict_carrying_its_scale_is_not_served_the_other_scales_result(
    executor: DagExecutor,
) -> None:
    """Float subclasses carry their attributes into the key; a dict subclass (so a list,
    tuple, frozenset, bytes or Decimal subclass) in a config does not."""
    assert output(executor, LinearGain(AnyCfg(x=Gains(ch0=20.0)))) == 20.0
    in_decibels = Gains(ch0=20.0)
    in_decibels.scale = "dB"
    assert output(executor, LinearGain(AnyCfg(x=in_decibels))) == pytest.approx(100.0)


# --- pandas ----------------------------------------------------------------------------------


def next_sample_time(series: Any) -> str:
    """When the next sample of a regularly sampled series falls: one step of its frequency."""
    return str(series.index.shift(1)[-1].date())


NextSampleTime = stage_of(next_sample_time)


def test_a_business_day_series_is_not_served_the_calendar_days_next_sample(
    executor: DagExecutor,
) -> None:
    """Thursday and Friday, sampled daily or on business days: the same timestamps, but the
    next sample is on Saturday or on Monday."""
    pd = pytest.importorskip("pandas")
    daily = pd.Series([1.0, 2.0], index=pd.date_range("2024-01-04", periods=2, freq="D"))
    business = pd.Series([1.0, 2.0], index=pd.date_range("2024-01-04", periods=2, freq="B"))
    assert output(executor, NextSampleTime(AnyCfg(x=daily))) == "2024-01-06"
    assert output(executor, NextSampleTime(AnyCfg(x=business))) == "2024-01-08"


def category_codes(series: Any) -> list[int]:
    return series.cat.codes.tolist()


CategoryCodes = stage_of(category_codes)


def test_reordered_categories_are_told_apart(executor: DagExecutor) -> None:
    """Holds: the order of a categorical's categories is its codes' meaning."""
    pd = pytest.importorskip("pandas")
    one = pd.Series(pd.Categorical(["a", "b"], categories=["a", "b"]))
    other = pd.Series(pd.Categorical(["a", "b"], categories=["b", "a"]))
    assert output(executor, CategoryCodes(AnyCfg(x=one))) == [0, 1]
    assert output(executor, CategoryCodes(AnyCfg(x=other))) == [1, 0]


# --- astropy ---------------------------------------------------------------------------------


def in_metres(quantity: Any) -> float:
    from astropy import units as u

    return float(quantity.to(u.m).value)


InMetres = stage_of(in_metres)


def test_a_unit_defined_anew_in_astropy_reruns(executor: DagExecutor) -> None:
    """A notebook cell rerun with another definition of its own unit (as pint's already
    reruns): same name, same value, another length."""
    u = pytest.importorskip("astropy.units")
    for metres in (1.7018, 2.0):
        smoot = u.def_unit("smoot", metres * u.m)
        assert output(executor, InMetres(AnyCfg(x=1.0 * smoot))) == pytest.approx(metres)


def test_a_scaled_unit_is_not_served_a_rounded_scales_result(executor: DagExecutor) -> None:
    """A unit scaled by a computed factor prints its scale to six digits."""
    u = pytest.importorskip("astropy.units")
    third = 3.0 * u.Unit((1 / 3) * u.m)
    rounded = 3.0 * u.Unit(0.333333 * u.m)
    assert output(executor, InMetres(AnyCfg(x=third))) == pytest.approx(1.0, abs=1e-12)
    assert output(executor, InMetres(AnyCfg(x=rounded))) == pytest.approx(0.999999, abs=1e-12)


def rotated(longitude: Any) -> float:
    """The longitude turned by 200 degrees, kept in the longitude's own wrapping."""
    from astropy import units as u

    turned = longitude.copy()
    turned[...] = longitude + 200 * u.deg  # a Longitude wraps what it is given
    return float(turned.to_value(u.deg))


Rotated = stage_of(rotated)


def test_a_longitude_wrapped_elsewhere_is_not_served_the_other_wrapping(
    executor: DagExecutor,
) -> None:
    coordinates = pytest.importorskip("astropy.coordinates")
    u = pytest.importorskip("astropy.units")
    east = coordinates.Longitude(10 * u.deg, wrap_angle=360 * u.deg)
    signed = coordinates.Longitude(10 * u.deg, wrap_angle=180 * u.deg)
    assert output(executor, Rotated(AnyCfg(x=east))) == pytest.approx(210.0)
    assert output(executor, Rotated(AnyCfg(x=signed))) == pytest.approx(-150.0)


# --- pint: a registry's settings -------------------------------------------------------------


def heat_per_length(temperature: Any) -> float:
    """An offset temperature times a length: pint converts to kelvin only if its registry was
    built with ``autoconvert_offset_to_baseunit``, and refuses otherwise."""
    product = temperature * temperature._REGISTRY.Quantity(2.0, "m")
    return float(product.to("kelvin * m").magnitude)


HeatPerLength = stage_of(heat_per_length)


def test_a_registry_that_refuses_offset_units_is_not_served_the_converting_ones_result(
    executor: DagExecutor,
) -> None:
    pint = pytest.importorskip("pint")
    converting = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    assert output(executor, HeatPerLength(AnyCfg(x=converting.Quantity(10.0, "degC")))) == (
        pytest.approx(566.3)
    )
    strict = pint.UnitRegistry()
    with pytest.raises(NodeFailedError) as failed:
        output(executor, HeatPerLength(AnyCfg(x=strict.Quantity(10.0, "degC"))))
    assert failed.group_contains(pint.errors.OffsetUnitCalculusError)


def hubble_constant(_: Any) -> float:
    """The Hubble constant of the cosmology astropy is set to use (``default_cosmology``)."""
    from astropy.cosmology import default_cosmology

    return float(default_cosmology.get().H0.value)


HubbleConstant = stage_of(hubble_constant)


def test_the_default_cosmology_changed_reruns(executor: DagExecutor) -> None:
    """``default_cosmology.set`` is how astropy users switch cosmology for every distance."""
    cosmology = pytest.importorskip("astropy.cosmology")
    with cosmology.default_cosmology.set("Planck18"):
        assert output(executor, HubbleConstant(AnyCfg())) == pytest.approx(67.66)
    with cosmology.default_cosmology.set("WMAP9"):
        assert output(executor, HubbleConstant(AnyCfg())) == pytest.approx(69.32)


# --- a library's global precision, which a stage reads through the library -------------------


def third_to_precision(x: Any) -> str:
    return str(decimal.Decimal(1) / decimal.Decimal(x))


ThirdToPrecision = stage_of(third_to_precision)


def test_decimal_precision_changed_reruns(executor: DagExecutor) -> None:
    with decimal.localcontext(prec=5):
        assert output(executor, ThirdToPrecision(AnyCfg(x=3))) == "0.33333"
    with decimal.localcontext(prec=10):
        assert output(executor, ThirdToPrecision(AnyCfg(x=3))) == "0.3333333333"


def reciprocal(x: Any) -> str:
    import mpmath

    return str(mpmath.mpf(1) / x)


Reciprocal = stage_of(reciprocal)


def test_mpmath_working_precision_changed_reruns(executor: DagExecutor) -> None:
    """``mp.dps`` is the working precision every mpmath computation reads."""
    mpmath = pytest.importorskip("mpmath")
    saved = mpmath.mp.dps
    try:
        mpmath.mp.dps = 15
        assert output(executor, Reciprocal(AnyCfg(x=3))) == "0." + "3" * 15
        mpmath.mp.dps = 30
        assert output(executor, Reciprocal(AnyCfg(x=3))) == "0." + "3" * 30
    finally:
        mpmath.mp.dps = saved


# --- files named by a pure path --------------------------------------------------------------


def file_text(path: Any) -> str:
    with open(path) as handle:
        return handle.read()


FileText = stage_of(file_text)


def test_a_file_named_by_a_pure_path_edited_reruns(executor: DagExecutor, tmp_path: Path) -> None:
    """``open`` takes any ``os.PathLike``, a ``PurePosixPath`` too."""
    data = tmp_path / "spectrum.csv"
    data.write_text("1.0\n")
    assert output(executor, FileText(AnyCfg(x=PurePosixPath(data)))) == "1.0\n"
    data.write_text("2.0\n")
    assert output(executor, FileText(AnyCfg(x=PurePosixPath(data)))) == "2.0\n"


def test_a_file_named_by_a_path_edited_reruns(executor: DagExecutor, tmp_path: Path) -> None:
    """Holds: a ``Path`` stands for the content of the file it names."""
    data = tmp_path / "spectrum.csv"
    data.write_text("1.0\n")
    assert output(executor, FileText(AnyCfg(x=data))) == "1.0\n"
    data.write_text("2.0\n")
    assert output(executor, FileText(AnyCfg(x=data))) == "2.0\n"


# --- early cutoff: an upstream output whose digest did not change ---------------------------


class StepCfg(StageConfig):
    dx: float = 1.0


class Resample(PipelineStage[SimpleState, StepCfg]):
    """Two unit samples on a grid of step ``dx``, the step kept on the array."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(Sampled([1.0, 1.0], dx=self.cfg.dx)))


class Integrate(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(integral(state.payload)))


def test_early_cutoff_does_not_serve_an_integral_over_the_old_step(
    executor: DagExecutor,
) -> None:
    """The resampled output hashes as before (same class, same samples), so the integral
    below it is cut off and served from the old step."""

    def integrated(dx: float) -> float:
        nodes = [
            NodeSpec(id="grid", stage=Resample(StepCfg(dx=dx))),
            NodeSpec(id="node", deps=["grid"], stage=Integrate(StageConfig())),
        ]
        return executor.run(START, nodes).results["node"].state.payload

    assert integrated(0.5) == 1.0
    assert integrated(0.25) == 0.5


# --- common physics values that should be cached, not rerun every time -----------------------


class Holding(PipelineStage[SimpleState, AnyCfg]):
    """A stage holding a value beside its config (an interpolator, a generator)."""

    def __init__(self, cfg: AnyCfg, held: Any) -> None:
        super().__init__(cfg)
        self.held = held

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(float(np.asarray(self.held(0.5)))))


def test_a_dataframe_in_a_config_is_cached() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"wavelength": [1.0, 2.0], "n": [1.5, 1.4]})
    stage = stage_of(lambda df: float(df["n"].mean()))(AnyCfg(x=frame))
    assert second_run_hits(stage) == ["node"]


def test_a_data_array_in_a_config_is_cached() -> None:
    xr = pytest.importorskip("xarray")
    field = xr.DataArray([1.0, 2.0], dims="x", coords={"x": [0.0, 1.0]}, attrs={"units": "V"})
    stage = stage_of(lambda a: float(a.sum()))(AnyCfg(x=field))
    assert second_run_hits(stage) == ["node"]


def test_a_quantity_in_a_config_is_cached() -> None:
    u = pytest.importorskip("astropy.units")
    assert second_run_hits(InMetres(AnyCfg(x=3.0 * u.km))) == ["node"]


def test_an_interpolator_held_by_a_stage_is_cached() -> None:
    interpolate = pytest.importorskip("scipy.interpolate")
    table = interpolate.interp1d([0.0, 1.0], [0.0, 2.0])
    assert second_run_hits(Holding(AnyCfg(), table)) == ["node"]


def test_a_cubic_spline_held_by_a_stage_is_cached() -> None:
    interpolate = pytest.importorskip("scipy.interpolate")
    spline = interpolate.CubicSpline([0.0, 1.0, 2.0], [0.0, 1.0, 0.0])
    assert second_run_hits(Holding(AnyCfg(), spline)) == ["node"]


def second_run_with(make_stage: Any) -> Any:
    """The second of two runs over one memory cache, each of a stage ``make_stage`` builds
    afresh; an UncacheableWarning fails the test."""
    executor = DagExecutor(cache=MemoryStore())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncacheableWarning)
        executor.run(START, [NodeSpec(id="node", stage=make_stage())])
        return executor.run(START, [NodeSpec(id="node", stage=make_stage())])


def drawing(rng: np.random.Generator) -> Any:
    return lambda x: rng.normal() * x


def test_a_seeded_generator_held_by_a_stage_is_cached() -> None:
    """A generator seeded alike draws alike: the second is a hit."""
    second = second_run_with(lambda: Holding(AnyCfg(), drawing(np.random.default_rng(42))))
    assert second.hits == ["node"]


def test_a_generator_that_has_drawn_is_not_served_the_fresh_ones_numbers() -> None:
    """The same generator after a run has moved on: a rerun draws other numbers, and a hit
    would hand back the first draw."""
    rng = np.random.default_rng(42)
    executor = DagExecutor(cache=MemoryStore())
    nodes = [NodeSpec(id="node", stage=Holding(AnyCfg(), drawing(rng)))]
    first = executor.run(START, nodes).results["node"].state.payload
    second = executor.run(START, nodes)
    assert second.hits == []
    assert second.results["node"].state.payload != first


def test_an_interpolator_in_a_config_is_cached() -> None:
    """Not an error at plan time: a key can cover its tables (or the node can rerun)."""
    interpolate = pytest.importorskip("scipy.interpolate")
    table = interpolate.interp1d([0.0, 1.0], [0.0, 2.0])
    stage = stage_of(lambda f: float(f(0.5)))(AnyCfg(x=table))
    assert second_run_hits(stage) == ["node"]


def test_a_seeded_generator_in_a_config_is_cached() -> None:
    """A config holding the generator a Monte Carlo stage draws from, seeded alike."""
    normal = stage_of(lambda rng: float(rng.normal()))
    assert second_run_with(lambda: normal(AnyCfg(x=np.random.default_rng(42)))).hits == ["node"]


def test_an_observation_time_in_a_config_is_cached() -> None:
    """An astropy ``Time`` (the epoch of an observation) is data: jd1, jd2, scale, format."""
    time = pytest.importorskip("astropy.time")
    epoch = time.Time("2024-03-20T03:06:00", scale="utc")
    stage = stage_of(lambda t: float(t.tdb.jd))(AnyCfg(x=epoch))
    assert second_run_hits(stage) == ["node"]


def formatted(x: float) -> str:
    """A table cell as numpy prints it: numpy's print options are its module state."""
    return np.array2string(np.array([x]))


def test_a_registered_library_state_changed_reruns(
    executor: DagExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """register_library_state: what a library keeps in module state (here numpy's print
    precision, read by numpy's own code) is read into the key of every stage whose code uses
    the library."""
    from phys_pipeline import fingerprint

    def precision() -> int:
        return np.get_printoptions()["precision"]

    monkeypatch.setitem(fingerprint._LIBRARY_STATE, "numpy", precision)  # taken back after
    fingerprint.register_library_state("numpy", precision)
    stage = stage_of(formatted)
    with np.printoptions(precision=3):
        assert output(executor, stage(AnyCfg(x=1 / 3))) == "[0.333]"
    with np.printoptions(precision=5):
        assert output(executor, stage(AnyCfg(x=1 / 3))) == "[0.33333]"


def in_metres_by_dtype(field: np.ndarray) -> float:
    """A field whose unit rides on its dtype's metadata, as some readers of instrument files
    leave it."""
    scale = {"m": 1.0, "mm": 1e-3}[field.dtype.metadata["unit"]]
    return float(field.sum()) * scale


def test_an_array_whose_dtype_carries_another_unit_is_not_served_the_first_units_sum(
    executor: DagExecutor,
) -> None:
    def field(unit: str) -> np.ndarray:
        return np.ones(3, dtype=np.dtype(float, metadata={"unit": unit}))

    stage = stage_of(in_metres_by_dtype)
    assert output(executor, stage(AnyCfg(x=field("m")))) == 3.0
    assert output(executor, stage(AnyCfg(x=field("mm")))) == pytest.approx(3e-3)
