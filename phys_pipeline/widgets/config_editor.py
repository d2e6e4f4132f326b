"""ConfigEditor: one row per editable config field, generated from the config model.

A row shows the field's name, a slider for a bounded number, the value in a box where it can
be typed exactly, and the field's unit (see ``phys_pipeline.units``); every row has the same
column widths. The editor only proposes values: ``LiveSession.update`` validates them through
the model. A refused value is never clamped and never applied: pydantic's message shows under
its row, the row shows the config's value again, and the config, the stale set and the DAG
stay as they were.

A slider spans the field's whole range when that range is narrow around the value the row
is made with. A wider one (a positive value, and bounds reaching more than ``WIDE_RANGE``
times above a tenth of it) gets a log slider over ``WINDOW_DECADES`` on each side of the
value, which recentres on a value shown at or beyond its ends. The browser clamps what a
slider shows to its span, so a slider never takes typed values: the box beside it does.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import ipywidgets as w
import traitlets

from .._deprecation import deprecated_function
from ..errors import ConfigError
from ..session import LiveSession
from ..units import field_unit
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "ConfigEditor",
    "FieldControl",
    "FieldRow",
    "IntegerSlider",
    "Kind",
    "LinearSlider",
    "LogSlider",
    "MAX_SLID_DIGITS",
    "NAME_WIDTH",
    "SKIPPED_FIELDS",
    "SLIDER_WIDTH",
    "UNIT_WIDTH",
    "VALUE_WIDTH",
    "WIDE_RANGE",
    "WINDOW_DECADES",
    "config_controls",
    "field_control",
    "fields_with_controls",
    "log_slider_step",
    "log_window",
    "make_entry",
    "make_slider",
    "parse_number",
    "proposed_value",
    "significant_digits",
    "skipped_note",
    "slider_step",
    "slides_in_log",
    "snap_log_value",
    "widget_value",
]

SKIPPED_FIELDS = frozenset({"name", "tags"})

Kind = Literal["int-slider", "float-slider", "dropdown", "checkbox", "int", "float", "text"]
WIDE_RANGE = 100.0  # bounds reaching this factor above a tenth of the value: a log window
WINDOW_DECADES = 1  # a log slider's span on each side of the value
MAX_SLID_DIGITS = 12  # digits a log slider's position carries through the browser's floats
# a row is the name, then slider, value and unit: one line where there is room, else two
# (the name above); the second part fits PipelineApp's 25em side panel
NAME_WIDTH, SLIDER_WIDTH, VALUE_WIDTH, UNIT_WIDTH = "12em", "11.5em", "7em", "4em"
_WIDE_ENTRY = f"calc({SLIDER_WIDTH} + {VALUE_WIDTH} + 4px)"  # the slider and value columns
_SLIDERS = ("int-slider", "float-slider")
_NUMBERS: dict[str, type] = {"int-slider": int, "int": int, "float-slider": float, "float": float}
_TEXT_KINDS: dict[type, Kind] = {int: "int", float: "float", str: "text"}


@dataclass(frozen=True)
class FieldControl:
    """What control a config field gets, decided from its type and bounds alone."""

    name: str
    kind: Kind
    description: str = ""
    low: float | None = None
    high: float | None = None
    options: tuple[tuple[str, Any], ...] = ()
    optional: bool = False  # ``X | None``: a text box, empty means None
    unit: str | None = None

    @property
    def number(self) -> type | None:
        """``int`` or ``float`` for a number field (typed text is read as one), else None."""
        return _NUMBERS.get(self.kind)


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low_open, high_open) from annotated_types Ge/Gt/Le/Lt (or Interval)."""
    low = high = None
    low_open = high_open = False
    for item in metadata:
        for attr, is_low, is_open in (("ge", 1, 0), ("gt", 1, 1), ("le", 0, 0), ("lt", 0, 1)):
            value = getattr(item, attr, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                if is_low:
                    low, low_open = float(value), bool(is_open)
                else:
                    high, high_open = float(value), bool(is_open)
    return low, high, low_open, high_open


def field_control(
    name: str, annotation: Any, metadata: list[Any], description: str = "", unit: str | None = None
) -> FieldControl | None:
    """The control for one field, or None when the type is not editable here (arrays,
    containers, models, unions other than ``X | None`` of a number or a string)."""
    if name in SKIPPED_FIELDS:
        return None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        if len(args) == 2 and len(inner) == 1 and inner[0] in _TEXT_KINDS:
            kind = _TEXT_KINDS[inner[0]]
            return FieldControl(name, kind, description, optional=True, unit=unit)
        return None
    if typing.get_origin(annotation) is Literal:
        options = tuple((str(v), v) for v in args)
        return FieldControl(name, "dropdown", description, options=options, unit=unit)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        options = tuple((member.name, member) for member in annotation)
        return FieldControl(name, "dropdown", description, options=options, unit=unit)
    if annotation is bool:
        return FieldControl(name, "checkbox", description, unit=unit)
    if annotation in (int, float):
        low, high, low_open, high_open = _bounds(metadata)
        if low is not None and high is not None and math.isfinite(high - low):
            if annotation is int:  # open integer bounds are the next integer inside
                low, high = math.floor(low) + low_open, math.ceil(high) - high_open
                return FieldControl(name, "int-slider", description, low, high, unit=unit)
            return FieldControl(name, "float-slider", description, low, high, unit=unit)
        return FieldControl(name, _TEXT_KINDS[annotation], description, unit=unit)
    if annotation is str:
        return FieldControl(name, "text", description, unit=unit)
    return None


def fields_with_controls(cfg: Any) -> list[tuple[str, FieldControl | None]]:
    """Every field of a pydantic (or dataclass) config, instance or class, in field order,
    with its control (None: not editable here); ``name`` and ``tags`` left out."""
    cls = cfg if isinstance(cfg, type) else type(cfg)
    model_fields = getattr(cls, "model_fields", None)
    if model_fields is not None:
        fields = [
            (
                name,
                field_control(
                    name,
                    info.annotation,
                    list(info.metadata),
                    info.description or "",
                    field_unit(cls, name),
                ),
            )
            for name, info in model_fields.items()
        ]
    elif dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = []
        for f in dataclasses.fields(cls):
            hint = hints.get(f.name, f.type)
            metadata = list(getattr(hint, "__metadata__", ()))
            base = typing.get_args(hint)[0] if metadata else hint
            description = f.metadata.get("description", "")
            unit = field_unit(cls, f.name)
            fields.append((f.name, field_control(f.name, base, metadata, description, unit)))
    else:
        fields = []
    return [(name, spec) for name, spec in fields if name not in SKIPPED_FIELDS]


def config_controls(cfg: Any) -> list[FieldControl]:
    """Controls for every editable field of a pydantic (or dataclass) config, in field order."""
    return [spec for _, spec in fields_with_controls(cfg) if spec is not None]


config_fields = deprecated_function(
    "phys_pipeline.widgets.config_editor.config_fields",
    fields_with_controls,
    "use fields_with_controls",
)


def widget_value(spec: FieldControl, value: Any) -> Any:
    """What a field's entry shows for a config value: text for a number beside its slider or
    an optional (None is an empty box), an enum's raw value as its member."""
    if spec.optional and value is None:
        return ""
    if spec.optional or spec.kind in (*_SLIDERS, "text"):
        return str(value)
    if spec.kind == "dropdown":  # an Enum stored as its value (``use_enum_values=True``)
        for _, option in spec.options:
            if isinstance(option, enum.Enum) and option is not value and option.value == value:
                return option
    return value


def parse_number(text: str, number: type) -> Any:
    """The number ``text`` spells (an int field takes ``1e3`` or ``2.5`` as floats, for the
    model to accept or refuse), or the text itself, for the model to name what is wrong."""
    for parse in (int, float) if number is int else (float,):
        try:
            return parse(text.strip())
        except ValueError:
            pass
    return text


def proposed_value(spec: FieldControl, shown: Any) -> Any:
    """The config value an entry's content proposes: an optional's empty box is None, a
    number field's text a number."""
    if spec.optional and not str(shown).strip():
        return None
    if spec.number is not None and isinstance(shown, str):
        return parse_number(shown, spec.number)
    return shown


# --- slider spans and steps ----------------------------------------------------------------


def slides_in_log(low: float, high: float, value: float) -> bool:
    """Whether a field bounded by ``low..high`` slides on a log window around ``value``: a
    positive value whose bounds reach more than ``WIDE_RANGE`` times above a tenth of it (so
    0.5 m in 0..100 m does, 1.0 in 0..10 does not: its whole range is the slider's)."""
    value = min(max(value, low), high)
    return low >= 0 and value > 0 and high > WIDE_RANGE * max(low, value / 10)


def log_window(low: float, high: float, value: float) -> tuple[float, float]:
    """``WINDOW_DECADES`` each side of a positive ``value``, shifted inside ``low..high``."""
    reach = 10.0**WINDOW_DECADES
    lo, hi = value / reach, value * reach
    if lo < low:
        return low, min(high, low * reach**2)
    if hi > high:
        return max(low, high / reach**2), high
    return lo, hi


def _steps_down_from(limit: float) -> Iterator[float]:
    """1-2-5 x 10^k steps, the largest not above ``limit`` first, six decades down."""
    k = math.floor(math.log10(limit))
    for exponent in range(k, k - 7, -1):
        for mantissa in (5, 2, 1):
            step = float(f"{mantissa}e{exponent}")  # the float nearest the decimal
            if step <= limit:
                yield step


def _on_grid(value: float, low: float, step: float) -> bool:
    index = (value - low) / step
    return abs(index - round(index)) <= 1e-9 * max(1.0, abs(index))


def slider_step(low: float, high: float, value: float) -> float:
    """A round step (1-2-5 x 10^k, at least ~1000 positions) on whose grid ``value`` lies,
    so the slider can show, and return to, the current value exactly (a value on no such
    grid, e.g. 1/3, gets the coarsest step)."""
    span = high - low
    if not span > 0:
        return 0.1
    steps = list(_steps_down_from(span / 1000))
    return next((step for step in steps if _on_grid(value, low, step)), steps[0])


def _decimals(value: float) -> int:
    """Digits after the point that print ``value`` back exactly (0.05: 2, 1000.0: 0)."""
    if value == 0:
        return 0
    return max(0, significant_digits(value) - 1 - math.floor(math.log10(abs(value))))


def significant_digits(value: float) -> int:
    """The fewest significant digits that print ``value`` back exactly (2000.0: 1)."""
    return next((d for d in range(1, 17) if float(f"{value:.{d}g}") == value), 17)


def _digits_resolving(step: float) -> int:
    """Significant digits that tell apart values one exponent ``step`` apart."""
    return max(1, math.ceil(1 - math.log10(10**step - 1)))


def log_slider_step(low: float, high: float, value: float) -> tuple[float, int]:
    """(exponent step, significant digits) for a log slider over ``low..high`` with at least
    ~1000 positions, one of them exactly at ``value`` (the step divides log10(value/low)), so
    sliding back to it, rounded to the digits, gives ``value`` again (up to
    ``MAX_SLID_DIGITS`` digits; the box beside the slider holds longer values)."""
    lo, hi = math.log10(low), math.log10(high)
    step = next(_steps_down_from((hi - lo) / 1000))
    if not low < value <= high:  # at low, or a value the model never checked: no anchoring
        return step, _digits_resolving(step)
    step = (math.log10(value) - lo) / math.ceil((math.log10(value) - lo) / step)
    return step, max(_digits_resolving(step), min(significant_digits(value), MAX_SLID_DIGITS))


def snap_log_value(value: float, digits: int, low: float, high: float) -> float:
    """A slider position's value as a config value: rounded to ``digits`` (10**3.3 is 1995.26...
    and reads 2000 at 3 digits), kept within the bounds (10**log10(low) may miss low)."""
    return min(max(float(f"{value:.{digits}g}"), low), high)


# --- sliders --------------------------------------------------------------------------------


class _Unclamped(traitlets.HasTraits):
    """For a slider class (first among its bases): a value set from code outside the slider's
    span stays as it is, where ipywidgets would clamp it, so the model refuses or accepts it.
    ``show`` displays a config value, ``proposal`` turns a slider value into one."""

    value: Any

    @traitlets.validate("value")
    def _validate_value(self, proposal: dict[str, Any]) -> Any:
        return proposal["value"]

    def show(self, value: Any) -> None:
        self.value = value

    def proposal(self, value: Any) -> Any:
        return value


def _position(offset: float, step: float, span: float) -> int | None:
    """The index of the slider position ``offset`` from the start of a ``span`` in steps of
    ``step``, or None when it is none: the browser sends nothing else, so such a value came
    from code and is proposed as it is (never snapped, let alone into the span)."""
    index = offset / step
    nearest = round(index)
    if abs(index - nearest) < 1e-6 and 0 <= nearest <= round(span / step):
        return nearest
    return None


class LinearSlider(_Unclamped, w.FloatSlider):
    """A float field's slider over its whole range, on a step grid through its value. A
    position is proposed as the decimal it stands for (the browser sends 36.16 + 0.02 as
    36.18000000000001); a value off the grid (set from code) as it is."""

    def proposal(self, value: float) -> float:
        index = _position(value - self.min, self.step, self.max - self.min)
        if index is None:
            return value
        return round(self.min + index * self.step, max(_decimals(self.min), _decimals(self.step)))


class IntegerSlider(_Unclamped, w.IntSlider):
    """An int field's slider over its whole range."""


class LogSlider(_Unclamped, w.FloatLogSlider):
    """A slider over ``WINDOW_DECADES`` each side of the value (within the field's bounds
    ``low..high``), in steps of the exponent, recentred on a value shown at or beyond its ends.

    A position is proposed rounded to the digits the step resolves (10**3.3 reads 2000; a
    whole number for an ``integer`` field), so a slid value reads well and sliding back gives
    the value exactly; a value off the grid (set from code) is proposed as it is."""

    def __init__(
        self, low: float, high: float, value: float, integer: bool = False, **kwargs: Any
    ) -> None:
        self.low, self.high, self.integer = low, high, integer
        self.digits = 1
        super().__init__(base=10.0, **kwargs)
        self._centre(min(max(value, low), high))
        self.show(value)

    def _centre(self, value: float) -> None:
        lo, hi = log_window(self.low, self.high, value)
        step, self.digits = log_slider_step(lo, hi, value)
        with self.hold_sync(), self.hold_trait_notifications():
            self.min, self.max, self.step = math.log10(lo), math.log10(hi), step
            self.value = value

    def show(self, value: float) -> None:
        """Show ``value``: recentred if it lies within the bounds but not inside the span; at
        the span's nearer end if it cannot be shown (0, or a value out of bounds)."""
        if value > 0 and self.low <= value <= self.high:
            inside = self.min + self.step / 2 < math.log10(value) < self.max - self.step / 2
            if not inside:  # the last position at either end counts as the end
                self._centre(value)
                return
        self.value = min(max(value, 10**self.min), 10**self.max)

    def proposal(self, value: float) -> float | int:
        span = self.max - self.min
        if value > 0 and _position(math.log10(value) - self.min, self.step, span) is not None:
            value = snap_log_value(value, self.digits, self.low, self.high)
            return round(value) if self.integer else value
        return int(value) if self.integer and float(value).is_integer() else value


def make_slider(spec: FieldControl, value: Any) -> LinearSlider | IntegerSlider | LogSlider | None:
    """The slider of a bounded number field showing the config value ``value`` (see the
    module docstring for its span), or None for other fields; no callbacks attached."""
    if spec.kind not in _SLIDERS:
        return None
    low, high = float(spec.low), float(spec.high)  # type: ignore[arg-type]
    common: dict[str, Any] = {
        "tooltip": spec.description or None,
        "readout": False,
        "continuous_update": False,
        "layout": w.Layout(width=SLIDER_WIDTH),
    }
    if slides_in_log(low, high, value):
        return LogSlider(low, high, value, integer=spec.kind == "int-slider", **common)
    if spec.kind == "int-slider":
        return IntegerSlider(value=value, min=int(low), max=int(high), **common)
    return LinearSlider(
        value=value, min=low, max=high, step=slider_step(low, high, value), **common
    )


def make_entry(spec: FieldControl, value: Any) -> w.ValueWidget:
    """The widget a field's value is entered in, showing the config value ``value``: a text
    box holding a bounded number exactly (beside its slider) or an optional, a number box, a
    dropdown, a checkbox or a text box. Numbers sit in the value column, the others span the
    slider's column too. No callbacks attached."""
    shown = widget_value(spec, value)
    layout = w.Layout(width=VALUE_WIDTH if spec.number else _WIDE_ENTRY)
    common: dict[str, Any] = {"tooltip": spec.description or None, "layout": layout}
    if spec.optional:
        return w.Text(value=shown, placeholder="empty: None", continuous_update=False, **common)
    if spec.kind == "int":
        return w.IntText(value=shown, **common)
    if spec.kind == "float":
        return w.FloatText(value=shown, **common)
    if spec.kind == "dropdown":
        return w.Dropdown(options=list(spec.options), value=shown, **common)
    if spec.kind == "checkbox":
        return w.Checkbox(value=bool(shown), indent=False, **common)
    return w.Text(value=shown, continuous_update=False, **common)


class FieldRow:
    """One field: its name, slider (bounded numbers), entry, unit, and the line under them
    that says why a value was refused; ``on_change(name, value)`` gets each proposed config
    value. ``control`` is the slider, or the entry when there is none."""

    def __init__(
        self, spec: FieldControl, value: Any, on_change: Callable[[str, Any], None]
    ) -> None:
        self.spec = spec
        self.value = value  # the config value shown
        self._on_change = on_change
        self._showing = False
        self.slider = make_slider(spec, value)
        self.entry = make_entry(spec, value)
        self.error = w.HTML("", layout=w.Layout(display="none"))
        self.error.add_class("pp-field-error")
        self.name_label = w.Label(
            spec.name, tooltip=spec.description or None, layout=w.Layout(width=NAME_WIDTH)
        )
        self.name_label.add_class("pp-field-name")
        self.unit_label = w.Label(spec.unit or "", layout=w.Layout(width=UNIT_WIDTH))
        self.unit_label.add_class("pp-field-unit")
        self.entry.add_class("pp-field-value")
        if self.slider is not None:
            cells: list[w.Widget] = [self.slider]
            self.slider.observe(self._slid, "value")
        elif spec.number is not None:  # keep numbers in the value column
            cells = [w.HTML("", layout=w.Layout(width=SLIDER_WIDTH))]
        else:
            cells = []
        controls = w.HBox([*cells, self.entry, self.unit_label])
        line = w.HBox([self.name_label, controls], layout=w.Layout(flex_flow="row wrap"))
        line.add_class("pp-field")
        self.box = w.VBox([line, self.error])
        self.entry.observe(self._typed, "value")

    @property
    def control(self) -> w.ValueWidget:
        return self.entry if self.slider is None else self.slider

    def _slid(self, change: dict[str, Any]) -> None:
        if not self._showing:
            self._on_change(self.spec.name, self.slider.proposal(change["new"]))  # type: ignore[union-attr]

    def _typed(self, change: dict[str, Any]) -> None:
        if not self._showing:
            self._on_change(self.spec.name, proposed_value(self.spec, change["new"]))

    def show(self, value: Any) -> None:
        """Show the config value ``value`` in the entry and on the slider."""
        self.value = value
        self._showing = True
        try:
            shown = widget_value(self.spec, value)
            if self.entry.value != shown:
                self.entry.value = shown
            if self.slider is not None:
                self.slider.show(value)
        finally:
            self._showing = False

    def show_error(self, message: str) -> None:
        """Say why a value was refused, and show the config's value again (it did not
        change); an empty message clears the line."""
        self.error.value = (
            f"<span class='pp-error' style='color:#b91c1c'>{html.escape(message)}</span>"
            if message
            else ""
        )
        self.error.layout.display = None if message else "none"
        for widget in (self.entry, self.slider):
            if widget is not None and message:
                widget.add_class("pp-invalid")
            elif widget is not None:
                widget.remove_class("pp-invalid")
        if message:
            self.show(self.value)


def skipped_note(names: list[str], why: str = "not editable here") -> w.HTML:
    """A quiet line naming the fields no control is made for, so they are not a mystery."""
    note = w.HTML(
        f"<span style='color:#6b7280'>{html.escape(why)}: {html.escape(', '.join(names))}</span>"
    )
    note.add_class("pp-skipped-fields")
    return note


class ConfigEditor(SessionView, w.VBox):
    """Edit one node's config: each change goes through ``session.update(node_id, ...)``.

    ``rows`` maps field name -> FieldRow; ``controls`` field name -> its slider or entry,
    ``entries`` -> the box its value is typed in, ``errors`` -> the HTML line that says why
    a value was refused (empty when the last one was accepted); ``skipped`` names the fields
    without a control (arrays, containers...)."""

    def __init__(self, session: LiveSession, node_id: str, **kwargs: Any) -> None:
        self.session = session
        self.node_id = node_id
        self.rows: dict[str, FieldRow] = {}
        self.skipped: list[str] = []
        self._config_type: type = object
        with closed_on_failure(self):
            super().__init__(**kwargs)
            self.add_class("pp-config-editor")
            self._build()
            self._follow(session)

    @property
    def controls(self) -> dict[str, w.ValueWidget]:
        return {name: row.control for name, row in self.rows.items()}

    @property
    def entries(self) -> dict[str, w.ValueWidget]:
        return {name: row.entry for name, row in self.rows.items()}

    @property
    def errors(self) -> dict[str, w.HTML]:
        return {name: row.error for name, row in self.rows.items()}

    def _build(self) -> None:
        cfg = self.session.config(self.node_id)
        self._config_type = type(cfg)
        self.rows = {}
        title = w.HTML(
            f"<b>{html.escape(self.node_id)}</b> "
            f"<span style='color:#6b7280'>{html.escape(type(cfg).__name__)}</span>"
        )
        fields = fields_with_controls(cfg)
        for name, spec in fields:
            if spec is not None:
                self.rows[name] = FieldRow(spec, getattr(cfg, name), self._propose)
        self.skipped = [name for name, spec in fields if spec is None]
        children: list[w.Widget] = [title, *(row.box for row in self.rows.values())]
        if not self.rows:
            children.append(w.HTML("<i>no editable fields</i>"))
        if self.skipped:
            children.append(skipped_note(self.skipped))
        self.children = children

    def _propose(self, name: str, value: Any) -> None:
        """Widget callback: never raises into the kernel; a refusal is shown, not applied."""
        row = self.rows[name]
        try:
            self.session.update(self.node_id, **{name: value})
        except ConfigError as exc:
            row.show_error(f"{exc.reason} (got {exc.value!r}; kept {self._current(name)!r})")
        except Exception as exc:  # noqa: BLE001 - a UI callback: show it in the panel instead
            row.show_error(f"{type(exc).__name__}: {exc}")
        else:
            row.show_error("")

    def _current(self, name: str) -> Any:
        return getattr(self.session.config(self.node_id), name, None)

    def refresh(self) -> None:
        """Show the session's current values (after edits made here or elsewhere)."""
        cfg = self.session.config(self.node_id)
        if type(cfg) is not self._config_type:
            self._build()
            return
        for name, row in self.rows.items():
            value = getattr(cfg, name)
            if row.error.value and value is not row.value:  # no longer the value it kept
                row.show_error("")
            row.show(value)

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "edit":
            self.refresh()
