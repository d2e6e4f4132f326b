"""PolicyEditor: the session's policy, one control per key.

Given a pydantic model of the policy, the rows are generated from it with the config editor's
control factory (sliders for bounded numbers, dropdowns, checkboxes, text) and every edit is
validated by the model; without one, each key gets a control by its value's type. Either way
a rejected value is shown beside its row with the reason, and changes nothing.
"""

from __future__ import annotations

import ast
import html
import json
from collections.abc import Callable
from typing import Any

import ipywidgets as w
from pydantic_core import PydanticUndefined

from .._edit import replace_config
from ..errors import ConfigError, PhysPipelineError
from ..policy import PolicyBag
from ..session import LiveSession
from ._subscribe import SessionView, closed_on_failure
from .config_editor import FieldControl, FieldRow, fields_with_controls, skipped_note

__all__ = [
    "PolicyEditor",
    "parse_policy_value",
    "policy_text",
    "value_control",
]

_MISSING: Any = object()
_SCALARS = (bool, int, float)
_VALUE_KINDS: dict[type, Any] = {bool: "checkbox", int: "int", float: "float", str: "text"}


def policy_text(value: Any) -> str | None:
    """How a value is shown for editing (None: not editable as text, e.g. an array)."""
    if isinstance(value, str):
        return value
    try:
        text = repr(value)
        return text if ast.literal_eval(text) == value else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def parse_policy_value(text: str, previous: Any = _MISSING) -> Any:
    """Parse an edited value keeping its type: a string stays a string, a float accepts
    ``2``, a bool accepts ``true``. Python literals first, then JSON; for a new key an
    unparseable text is a string. Raises ValueError naming the expected type."""
    if isinstance(previous, str):
        return text
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            value = json.loads(text)
        except ValueError:
            if previous is _MISSING:
                return text
            raise ValueError(f"cannot read {text!r} as a {type(previous).__name__}") from None
    if isinstance(previous, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(previous, _SCALARS) and type(value) is not type(previous):
        raise ValueError(f"expected a {type(previous).__name__}, got {value!r}")
    return value


def value_control(key: str, value: Any) -> tuple[FieldControl | None, bool]:
    """A control chosen by the value's type, and whether its text is a Python literal to
    parse (lists, tuples...); ``(None, False)`` for values not editable here (arrays)."""
    kind = _VALUE_KINDS.get(type(value))
    if kind is not None:
        return FieldControl(key, kind), False
    if policy_text(value) is not None:
        return FieldControl(key, "text"), True
    return None, False


class PolicyEditor(SessionView, w.VBox):
    """Edit policy entries through ``session.set_policy``; add keys, remove keys.

    ``model`` (a pydantic model class, optional) describes the policy: its fields get
    generated controls, validated by it, with its defaults shown for unset keys. ``fields``
    maps key -> control, ``errors`` key -> the label saying why a value was rejected;
    ``error`` reports adding and removing keys."""

    def __init__(self, session: LiveSession, model: type | None = None, **kwargs: Any) -> None:
        if model is not None and not hasattr(model, "model_fields"):
            raise TypeError(f"PolicyEditor(model=...) needs a pydantic model class, not {model!r}")
        self.session = session
        self.model = model
        self.rows: dict[str, FieldRow] = {}
        self._literal: set[str] = set()  # keys whose text is parsed as a Python literal
        self._layout_key: list[tuple[str, FieldControl | None]] | None = None
        self._syncing = False
        with closed_on_failure(self):
            self.error = w.HTML("")
            self.error.add_class("pp-policy-error")
            self.new_key = w.Text(placeholder="key", layout=w.Layout(width="10em"))
            self.new_value = w.Text(placeholder="value", layout=w.Layout(width="12em"))
            self.add_button = w.Button(description="Add key", icon="plus")
            self.add_button.on_click(lambda _: self.add(self.new_key.value, self.new_value.value))
            self._rows = w.VBox()
            super().__init__(**kwargs)
            self.add_class("pp-policy-editor")
            self.children = [
                w.HTML("<b>policy</b>"),
                self._rows,
                w.HBox([self.new_key, self.new_value, self.add_button]),
                self.error,
            ]
            self.refresh()
            self._follow(session)

    @property
    def fields(self) -> dict[str, w.ValueWidget]:
        return {key: row.control for key, row in self.rows.items()}

    @property
    def errors(self) -> dict[str, w.HTML]:
        return {key: row.error for key, row in self.rows.items()}

    # --- rows --------------------------------------------------------------------------------

    def _entries(self, policy: dict[str, Any]) -> list[tuple[str, FieldControl | None, Any]]:
        """(key, control or None, value): the model's fields first, then the other keys."""
        entries = []
        model_fields = getattr(self.model, "model_fields", {})
        if self.model is not None:
            for name, spec in fields_with_controls(self.model):
                default = model_fields[name].get_default(call_default_factory=True)
                value = policy.get(name, default)
                entries.append((name, spec if value is not PydanticUndefined else None, value))
        self._literal = set()
        for key, value in policy.items():
            if key not in model_fields:
                spec, literal = value_control(key, value)
                if literal:
                    self._literal.add(key)
                entries.append((key, spec, value))
        return entries

    def refresh(self) -> None:
        """Show the session's policy: rebuild rows when keys or their kinds changed, else
        update values in place (a field being typed in keeps focus); a rejected value stays
        until fixed."""
        entries = self._entries(dict(self.session.policy or {}))
        layout_key = [(key, spec) for key, spec, _ in entries]
        if layout_key != self._layout_key:
            self._layout_key = layout_key
            self._build_rows(entries)
            return
        self._syncing = True
        try:
            for key, _, value in entries:
                if key in self.rows:
                    self.rows[key].show(value)
        finally:
            self._syncing = False

    def _build_rows(self, entries: list[tuple[str, FieldControl | None, Any]]) -> None:
        self.rows = {}
        boxes: list[w.Widget] = []
        unset: list[str] = []  # model fields without a default, not in the policy yet
        model_fields = getattr(self.model, "model_fields", {})
        for key, spec, value in entries:
            if spec is None and key in model_fields:
                unset.append(key)
            elif spec is None:
                shown = w.HTML(f"{html.escape(key)}: {html.escape(type(value).__name__)}")
                boxes.append(w.HBox([shown, self._remove_button(key)]))
            else:
                self.rows[key] = FieldRow(spec, value, self._propose)
                removable = key not in model_fields
                extra = [self._remove_button(key)] if removable else []
                boxes.append(w.HBox([self.rows[key].box, *extra]))
        if unset:
            boxes.append(skipped_note(unset, "no value yet"))
        self._rows.children = boxes

    def _remove_button(self, key: str) -> w.Button:
        button = w.Button(icon="times", tooltip=f"remove {key}", layout=w.Layout(width="2.5em"))
        button.on_click(lambda _: self.remove(key))
        return button

    # --- edits -------------------------------------------------------------------------------

    def _validated(self, key: str, value: Any) -> Any:
        """``value`` as the model stores it (raises ConfigError with pydantic's message); as
        is for keys the model does not describe."""
        if self.model is None or key not in self.model.model_fields:
            return value
        policy = dict(self.session.policy or {})
        known = {k: v for k, v in policy.items() if k in self.model.model_fields}
        current = self.model.model_construct(**known)  # type: ignore[attr-defined]
        return getattr(replace_config(current, {key: value}, "policy"), key)

    def set(self, key: str, value: Any) -> bool:
        """Propose ``value`` for ``key`` as if entered in its row (text for literal rows);
        shows, never raises, why it was rejected. Returns whether it was applied."""
        row = self.rows.get(key)
        previous = (self.session.policy or {}).get(key, _MISSING)
        try:
            if key in self._literal:
                value = parse_policy_value(str(value), previous)
            value = self._validated(key, value)
            self.session.set_policy((self.session.policy or PolicyBag()).updated({key: value}))
        except (ValueError, PhysPipelineError) as exc:
            reason = exc.reason if isinstance(exc, ConfigError) else str(exc)
            kept = "" if previous is _MISSING else f"; kept {previous!r}"
            self._show_error(row, f"{reason} (got {value!r}{kept})")
            return False
        except Exception as exc:  # noqa: BLE001 - a UI callback: show it in the panel instead
            self._show_error(row, f"{type(exc).__name__}: {exc}")
            return False
        self._show_error(row, "")
        return True

    def _propose(self, key: str, value: Any) -> None:
        if not self._syncing:
            self.set(key, value)

    def _show_error(self, row: FieldRow | None, message: str) -> None:
        if row is not None:
            row.show_error(message)
        else:
            self._say(message)

    def _say(self, message: str) -> None:
        self.error.value = (
            f"<span style='color:#b91c1c'>{html.escape(message)}</span>" if message else ""
        )

    def _apply(self, make_policy: Callable[[PolicyBag], PolicyBag]) -> bool:
        """Replace the policy with ``make_policy(current)``; show (never raise) what went
        wrong in the shared error line."""
        try:
            self.session.set_policy(make_policy(self.session.policy or PolicyBag()))
        except (ValueError, PhysPipelineError) as exc:
            self._say(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a UI callback: show it in the panel instead
            self._say(f"{type(exc).__name__}: {exc}")
            return False
        self._say("")
        return True

    def add(self, key: str, text: str) -> bool:
        key = key.strip()
        if not key:
            self._say("give the new key a name")
            return False
        if self._apply(
            lambda bag: bag.updated({key: self._validated(key, parse_policy_value(text))})
        ):
            self.new_key.value = self.new_value.value = ""
            return True
        return False

    def remove(self, key: str) -> bool:
        return self._apply(lambda bag: bag.without(key))

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "edit":
            self.refresh()
