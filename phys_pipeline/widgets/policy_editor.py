"""PolicyEditor: the session's policy as editable text fields, one per key."""

from __future__ import annotations

import ast
import html
import json
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..errors import PhysPipelineError
from ..policy import PolicyBag
from ..session import LiveSession
from ._subscribe import subscribe

_MISSING: Any = object()
_SCALARS = (bool, int, float)


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


class PolicyEditor(w.VBox):
    """Edit policy entries through ``session.set_policy(key=value)``; add keys, remove keys.

    ``fields`` maps key -> Text widget; ``error`` shows the last rejected edit."""

    def __init__(self, session: LiveSession, **kwargs: Any) -> None:
        self.session = session
        self.fields: dict[str, w.Text] = {}
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
        self._syncing = False
        self._rejected: set[str] = set()
        self.refresh()
        self._unsubscribe = subscribe(session, self._on_session)

    def refresh(self) -> None:
        """Show the session's policy: rebuild rows when keys changed, else update values in
        place (so a field being typed in keeps focus); a rejected text stays until fixed."""
        policy = dict(self.session.policy or {})
        if list(policy) != list(self.fields):
            self._build_rows(policy)
            return
        self._syncing = True
        try:
            for key, field in self.fields.items():
                text = policy_text(policy[key])
                if text is not None and key not in self._rejected and field.value != text:
                    field.value = text
        finally:
            self._syncing = False

    def _build_rows(self, policy: dict[str, Any]) -> None:
        self.fields.clear()
        rows = []
        for key, value in policy.items():
            text = policy_text(value)
            field = w.Text(
                value=text if text is not None else f"{type(value).__name__} (not editable)",
                description=key,
                disabled=text is None,
                continuous_update=False,
                style={"description_width": "initial"},
            )
            field.observe(lambda change, key=key: self._edited(key, change["new"]), "value")
            remove = w.Button(icon="times", tooltip=f"remove {key}", layout=w.Layout(width="2.5em"))
            remove.on_click(lambda _, key=key: self.remove(key))
            self.fields[key] = field
            rows.append(w.HBox([field, remove]))
        self._rows.children = rows

    def _edited(self, key: str, text: str) -> None:
        if not self._syncing:
            self.set(key, text)

    def _apply(self, key: str, make_policy: Callable[[PolicyBag], PolicyBag]) -> bool:
        """Replace the policy with ``make_policy(current)``; show (never raise) what went
        wrong, remembering ``key`` as rejected so its text is not overwritten."""
        try:
            self.session.set_policy(make_policy(self.session.policy or PolicyBag()))
        except (ValueError, PhysPipelineError) as exc:
            self._rejected.add(key)
            self.error.value = f"<span style='color:#b91c1c'>{html.escape(str(exc))}</span>"
            return False
        except Exception as exc:  # noqa: BLE001 - a UI callback: show it in the panel instead
            self._rejected.add(key)
            self.error.value = (
                f"<span style='color:#b91c1c'>{html.escape(type(exc).__name__)}: "
                f"{html.escape(str(exc))}</span>"
            )
            return False
        self._rejected.discard(key)
        self.error.value = ""
        return True

    def set(self, key: str, text: str) -> bool:
        """Set an existing key from its edited text (type-preserving)."""
        previous = (self.session.policy or {}).get(key, _MISSING)
        return self._apply(key, lambda bag: bag.updated({key: parse_policy_value(text, previous)}))

    def add(self, key: str, text: str) -> bool:
        key = key.strip()
        if not key:
            self.error.value = "<span style='color:#b91c1c'>give the new key a name</span>"
            return False
        if self._apply(key, lambda bag: bag.updated({key: parse_policy_value(text)})):
            self.new_key.value = self.new_value.value = ""
            return True
        return False

    def remove(self, key: str) -> bool:
        return self._apply(key, lambda bag: bag.without(key))

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "edit":
            self.refresh()

    def close(self) -> None:
        self._unsubscribe()
        super().close()
