"""One helper the views share: a session subscription that can be undone twice."""

from __future__ import annotations

from collections.abc import Callable

from ..session import Listener, LiveSession


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
