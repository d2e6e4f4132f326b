"""ConfigEditor: one control per editable config field, generated from the config model.

The editor only proposes values: ``LiveSession.update`` validates them. A rejected value stays
visible with pydantic's message beside it, while the config, the stale set and the DAG stay as
they were.
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
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "ConfigEditor",
    "FieldControl",
    "FieldRow",
    "Kind",
    "LOG_SLIDER_DECADES",
    "LogSlider",
    "MAX_SLID_DIGITS",
    "SKIPPED_FIELDS",
    "config_controls",
    "field_control",
    "fields_with_controls",
    "log_slider_step",
    "make_control",
    "proposed_value",
    "readout_format",
    "significant_digits",
    "skipped_note",
    "slider_step",
    "snap_log_value",
    "widget_value",
]

SKIPPED_FIELDS = frozenset({"name", "tags"})

Kind = Literal[
    "int-slider", "float-slider", "log-slider", "dropdown", "checkbox", "int", "float", "text"
]
LOG_SLIDER_DECADES = 3  # a positive float range this many decades wide or more slides in log
MAX_SLID_DIGITS = 12  # digits a log slider's position carries through the browser's floats
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
    name: str, annotation: Any, metadata: list[Any], description: str = ""
) -> FieldControl | None:
    """The control for one field, or None when the type is not editable here (arrays,
    containers, models, unions other than ``X | None`` of a number or a string)."""
    if name in SKIPPED_FIELDS:
        return None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in args if arg is not type(None)]
        if len(args) == 2 and len(inner) == 1 and inner[0] in _TEXT_KINDS:
            return FieldControl(name, _TEXT_KINDS[inner[0]], description, optional=True)
        return None
    if typing.get_origin(annotation) is Literal:
        options = tuple((str(v), v) for v in args)
        return FieldControl(name, "dropdown", description, options=options)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        options = tuple((member.name, member) for member in annotation)
        return FieldControl(name, "dropdown", description, options=options)
    if annotation is bool:
        return FieldControl(name, "checkbox", description)
    if annotation in (int, float):
        low, high, low_open, high_open = _bounds(metadata)
        if low is not None and high is not None and math.isfinite(high - low):
            if annotation is int:  # open integer bounds are the next integer inside
                low, high = math.floor(low) + low_open, math.ceil(high) - high_open
                return FieldControl(name, "int-slider", description, low, high)
            if low > 0 and high / low >= 10**LOG_SLIDER_DECADES:
                return FieldControl(name, "log-slider", description, low, high)
            return FieldControl(name, "float-slider", description, low, high)
        return FieldControl(name, "int" if annotation is int else "float", description)
    if annotation is str:
        return FieldControl(name, "text", description)
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
                field_control(name, info.annotation, list(info.metadata), info.description or ""),
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
            fields.append((f.name, field_control(f.name, base, metadata, description)))
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
    """What the control shows for a config value: an optional's None is an empty box, an
    enum's raw value its member."""
    if spec.optional:
        return "" if value is None else str(value)
    if spec.kind == "dropdown":  # an Enum stored as its value (``use_enum_values=True``)
        for _, option in spec.options:
            if isinstance(option, enum.Enum) and option is not value and option.value == value:
                return option
        return value
    if spec.kind == "text":
        return str(value)
    return value


def proposed_value(spec: FieldControl, shown: Any) -> Any:
    """The config value a control's content proposes: an optional's empty box is None, its
    number text a number (text that is no number goes to the model, which names the error)."""
    if not spec.optional:
        return shown
    text = str(shown).strip()
    if not text:
        return None
    if spec.kind in ("int", "float"):
        try:
            return int(text) if spec.kind == "int" else float(text)
        except ValueError:
            return text
    return shown


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


def readout_format(step: float, low: float, high: float) -> str:
    """Show as many digits as the step resolves: ``.2f`` for a 0.02 step."""
    decimals = max(0, -math.floor(math.log10(step)))
    if decimals <= 6:
        return f".{decimals}f"
    magnitude = math.floor(math.log10(max(abs(low), abs(high), step)))
    return f".{magnitude + decimals + 1}g"


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
    ``MAX_SLID_DIGITS`` digits; the text box beside the slider holds longer values)."""
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


class LogSlider(w.HBox, w.ValueWidget):
    """A FloatLogSlider (``slider``) for a positive range of many decades, with a FloatText
    (``text``) beside it holding the exact ``value``.

    The slider moves in steps of the exponent and its own readout clamps typed values to the
    bounds and shows 3 digits, so it cannot hold most values exactly: slid values are rounded
    to ``digits`` significant digits, and typed ones reach the model as typed (an
    out-of-range one is rejected with pydantic's message, not clamped)."""

    value = traitlets.CFloat(1.0)

    def __init__(
        self, value: float, low: float, high: float, common: dict[str, Any], **kwargs: Any
    ) -> None:
        step, self.digits = log_slider_step(low, high, value)
        self.low, self.high = low, high
        self.slider = w.FloatLogSlider(
            value=value,
            base=10.0,
            min=math.log10(low),
            max=math.log10(high),
            step=step,
            readout=False,
            continuous_update=False,
            **common,
        )
        self.text = w.FloatText(value=value, layout=w.Layout(width="9em"))
        self.text.add_class("pp-log-readout")
        self._syncing = False
        super().__init__([self.slider, self.text], value=value, **kwargs)
        self.add_class("pp-log-slider")
        self.slider.observe(self._slid, "value")
        self.text.observe(self._typed, "value")
        self.observe(self._shown, "value")

    def _slid(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.value = snap_log_value(change["new"], self.digits, self.low, self.high)

    def _typed(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.value = change["new"]

    def _shown(self, change: dict[str, Any]) -> None:
        """Show a new value in both parts (the slider clamps one outside its range)."""
        self._syncing = True
        try:
            self.text.value = change["new"]
            self.slider.value = change["new"]
        finally:
            self._syncing = False


def make_control(spec: FieldControl, value: Any) -> w.ValueWidget:
    """An ipywidget for ``spec`` showing the config value ``value``; no callbacks attached."""
    common: dict[str, Any] = {
        "description": spec.name,
        "tooltip": spec.description or None,
        "style": {"description_width": "initial"},
    }
    value = widget_value(spec, value)
    if spec.optional:
        return w.Text(value=value, placeholder="empty: None", continuous_update=False, **common)
    if spec.kind == "int-slider":
        return w.IntSlider(
            value=value, min=spec.low, max=spec.high, continuous_update=False, **common
        )
    if spec.kind == "float-slider":
        low, high = float(spec.low), float(spec.high)  # type: ignore[arg-type]
        step = slider_step(low, high, value)
        return w.FloatSlider(
            value=value,
            min=low,
            max=high,
            step=step,
            readout_format=readout_format(step, low, high),
            continuous_update=False,
            **common,
        )
    if spec.kind == "log-slider":
        return LogSlider(value, float(spec.low), float(spec.high), common)  # type: ignore[arg-type]
    if spec.kind == "dropdown":
        return w.Dropdown(options=list(spec.options), value=value, **common)
    if spec.kind == "checkbox":
        return w.Checkbox(value=bool(value), indent=False, **common)
    if spec.kind == "int":
        return w.IntText(value=value, **common)
    if spec.kind == "float":
        return w.FloatText(value=value, **common)
    return w.Text(value=value, continuous_update=False, **common)


class FieldRow:
    """One field's control and the label beside it that says why a value was rejected;
    ``on_change(name, value)`` gets each proposed config value."""

    def __init__(
        self, spec: FieldControl, value: Any, on_change: Callable[[str, Any], None]
    ) -> None:
        self.spec = spec
        self.control = make_control(spec, value)
        self.error = w.HTML("")
        self.error.add_class("pp-field-error")
        self.box = w.HBox([self.control, self.error])
        self.control.observe(
            lambda change: on_change(spec.name, proposed_value(spec, change["new"])), "value"
        )

    @property
    def rejected(self) -> bool:
        return bool(self.error.value)

    def show(self, value: Any) -> None:
        """Show ``value`` (a config value), unless the field shows a rejected value."""
        shown = widget_value(self.spec, value)
        if not self.rejected and self.control.value != shown:
            self.control.value = shown

    def show_error(self, message: str) -> None:
        self.error.value = (
            f"<span class='pp-error' style='color:#b91c1c'>{html.escape(message)}</span>"
            if message
            else ""
        )
        if message:
            self.control.add_class("pp-invalid")
        else:
            self.control.remove_class("pp-invalid")


def skipped_note(names: list[str], why: str = "not editable here") -> w.HTML:
    """A quiet line naming the fields no control is made for, so they are not a mystery."""
    note = w.HTML(
        f"<span style='color:#6b7280'>{html.escape(why)}: {html.escape(', '.join(names))}</span>"
    )
    note.add_class("pp-skipped-fields")
    return note


class ConfigEditor(SessionView, w.VBox):
    """Edit one node's config: each change goes through ``session.update(node_id, ...)``.

    ``controls`` maps field name -> widget, ``errors`` field name -> the HTML label that shows
    why a value was rejected (empty when the value was accepted); ``skipped`` names the
    fields without a control (arrays, containers...)."""

    def __init__(self, session: LiveSession, node_id: str, **kwargs: Any) -> None:
        self.session = session
        self.node_id = node_id
        self.rows: dict[str, FieldRow] = {}
        self.skipped: list[str] = []
        self._syncing = False
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
        """Widget callback: never raises into the kernel; a rejection is shown, not applied."""
        if self._syncing:
            return
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
        """Show the session's current values (after edits made elsewhere); a field showing a
        rejected value keeps it until the user fixes it."""
        cfg = self.session.config(self.node_id)
        if type(cfg) is not self._config_type:
            self._build()
            return
        self._syncing = True
        try:
            for name, row in self.rows.items():
                row.show(getattr(cfg, name))
        finally:
            self._syncing = False

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "edit":
            self.refresh()
