"""A stage's exception on its way back from another process (a worker process, a Dask worker):
it must arrive as itself, with its message and its notes (the one naming node, stage and config).

Unpickling an exception calls its class with its ``args``, which fails, or builds it wrong, when
its ``__init__`` takes other arguments; one holding a lock cannot be pickled at all. So the
worker tries the round trip before sending, and sends what survives it.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from .errors import RemoteStageError, _rebuild

__all__ = ["portable"]


class _Rebuilt:
    """Pickles as its exception rebuilt from its args and attributes without calling its
    ``__init__`` (as our own errors are, and as Dask's tblib does)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self.exc), self.exc.args, self.exc.__dict__)


def portable(exc: BaseException) -> Any:
    """What to pickle for ``exc``: itself, if it unpickles as itself (type, message and notes);
    else its rebuilt form, if that does; else a RemoteStageError naming its type, with its
    message and notes."""
    for carrier in (exc, _Rebuilt(exc)):
        if _arrives_as(carrier, exc):
            return carrier
    kind = type(exc)
    stand_in = RemoteStageError(f"{kind.__module__}.{kind.__qualname__}", str(exc))
    for note in getattr(exc, "__notes__", ()):
        stand_in.add_note(note)
    return stand_in


def _arrives_as(carrier: Any, exc: BaseException) -> bool:
    try:
        copy = cloudpickle.loads(cloudpickle.dumps(carrier))
        return (
            type(copy) is type(exc)
            and str(copy) == str(exc)
            and getattr(copy, "__notes__", None) == getattr(exc, "__notes__", None)
        )
    except Exception:  # noqa: BLE001 - whatever breaks the round trip, send something else
        return False
