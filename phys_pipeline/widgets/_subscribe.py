"""What the views share about following a session: an unsubscribe that can run twice, and a
construction that, if it fails halfway, leaves nothing subscribed and nothing open."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..session import Listener, LiveSession

__all__ = [
    "SessionView",
    "closed_on_failure",
    "subscribe",
]


def subscribe(session: LiveSession, listener: Listener) -> Callable[[], None]:
    """Subscribe ``listener``; the returned unsubscribe is idempotent because
    ``Widget.close()`` may run more than once (explicitly, then on kernel shutdown)."""
    unsubscribe = session.subscribe(listener)
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            unsubscribe()

    return once


def _not_subscribed() -> None:
    """The unsubscribe of a view that never subscribed."""


@contextmanager
def closed_on_failure(widget: Any) -> Iterator[None]:
    """Wrap a view's ``__init__`` body: if it raises, ``widget.close()`` runs (unsubscribed,
    comm closed) before the error propagates."""
    try:
        yield
    except BaseException:
        widget.close()
        raise


class SessionView:
    """Mixin (before the ipywidgets base) for a view with an ``_on_session(event, session)``
    listener. ``close()`` unsubscribes and is safe before ``__init__`` got anywhere (it also
    runs from ``Widget.__del__``); build the view inside ``with closed_on_failure(self):``
    and call ``_follow(session)`` there."""

    _unsubscribe: Callable[[], None] = staticmethod(_not_subscribed)
    _on_session: Listener  # each view defines it

    def _follow(self, session: LiveSession) -> None:
        """Listen to ``session`` (and stop listening to the one followed before)."""
        self._unsubscribe()
        self._unsubscribe = subscribe(session, self._on_session)

    def close(self) -> None:
        self._unsubscribe()
        super().close()  # type: ignore[misc]
