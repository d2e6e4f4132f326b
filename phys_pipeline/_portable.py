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
    ``__init__`` (as our own errors are, and as Dask's tblib does); ``attributes`` defaults to
    all of them."""

    def __init__(self, exc: BaseException, attributes: dict[str, Any] | None = None) -> None:
        self.exc = exc
        self.attributes = exc.__dict__ if attributes is None else attributes

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self.exc), self.exc.args, self.attributes)


def portable(exc: BaseException, *, lossy: bool = False) -> Any:
    """What to pickle for ``exc``: itself, if it unpickles as itself (type, message and notes);
    else its rebuilt form, if that does; with ``lossy`` (a process pool, which unpickles the
    carrier it is sent; Dask pickles the exception itself), else its rebuilt form without the
    attributes that cannot be pickled (a lock, a socket), so that it still arrives as its own
    type, which ``except`` clauses and ``RetryPolicy.retry_on`` decide by as they do in this
    process; else a RemoteStageError naming its type, with its message and notes."""
    carriers: list[Any] = [exc, _Rebuilt(exc)]
    if lossy:
        carriers.append(_Rebuilt(exc, _picklable(exc.__dict__)))
    for carrier in carriers:
        if _arrives_as(carrier, exc):
            return carrier
    lineage = tuple(f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__)
    stand_in = RemoteStageError(lineage[0], str(exc), lineage)
    for note in getattr(exc, "__notes__", ()):
        stand_in.add_note(note)
    return stand_in


def _picklable(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes that survive pickling on their own (notes included)."""
    kept = {}
    for name, value in attributes.items():
        try:
            cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001 - whatever breaks pickling, the attribute stays here
            continue
        kept[name] = value
    return kept


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
