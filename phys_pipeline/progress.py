"""How far a running stage has got: a stage calls ``report_progress(fraction, message)`` from
its ``process``; the run tells its listeners (``on_progress(node_id, fraction, message)``), and
the app shows it on the node. Outside a run, or where nobody listens, the call does nothing
(beyond checking its arguments), so a stage may report unconditionally.

A stage reaches the reporter of the node it runs for through a context variable that the run
engine sets around the node on the thread that computes it (inline and thread mode). Stages
computed in worker processes or on Dask workers report nothing: their progress would have to
travel back to the driver, which they do not do (yet).

Reports are thinned to one per node every ``INTERVAL_S`` seconds (the first, and the one
that says the node is done, always pass): a stage may report from a tight loop.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import ConfigError

__all__ = ["INTERVAL_S", "report_progress"]

INTERVAL_S = 0.1
"""The least time between two reports of one node that reach the listeners."""

Sink = Callable[[float, str], None]

_reporter: contextvars.ContextVar[_Reporter | None] = contextvars.ContextVar(
    "phys_pipeline_progress", default=None
)


def report_progress(fraction: float, message: str = "") -> None:
    """Say how far the running stage has got: ``fraction`` from 0 to 1, and optionally what
    it is doing ("iteration 40 of 100"). Does nothing outside a run."""
    if not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:  # NaN too
        raise ConfigError("report_progress", "fraction", fraction, "must be a number from 0 to 1")
    reporter = _reporter.get()
    if reporter is not None:
        reporter(float(fraction), str(message))


class _Reporter:
    """One node's reporter: forwards to ``sink`` at most once per ``INTERVAL_S``."""

    __slots__ = ("last", "sink")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.last = -math.inf

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self.last < INTERVAL_S:
            return
        self.last = now
        self.sink(fraction, message)


@contextmanager
def reporting(sink: Sink) -> Iterator[None]:
    """While the block runs on this thread, ``report_progress`` goes to ``sink``."""
    token = _reporter.set(_Reporter(sink))
    try:
        yield
    finally:
        _reporter.reset(token)
