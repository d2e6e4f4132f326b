"""RetryPolicy: running a failing node again, for failures that go away (a licence server, a
network filesystem, a GPU out of memory), on the executor or per node (``NodeSpec.retry``).

The run engine applies it without ever sleeping on the thread that runs hooks: a failed attempt
goes back on the ready list once its backoff has passed, and other nodes run meanwhile. A
stage's own error is retried only if it is one of ``retry_on``; our contract errors (a stage
that wrote to its input, returned no StageResult, runs stale code) never are, since running
again would fail the same way. A timeout, and a worker process that died (out of memory, a
flaky driver), are retried whatever ``retry_on`` says: both may pass.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .errors import (
    ConfigError,
    NodeTimeoutError,
    PhysPipelineError,
    RemoteStageError,
    WorkerDiedError,
)

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A failing node runs again up to ``max_retries`` times; the ``n``-th retry waits
    ``backoff_s * 2**(n-1)`` seconds (at most ``max_backoff_s``), spread by up to ``jitter``
    of itself so that nodes failing together do not retry together. Only exceptions of the
    ``retry_on`` types are retried. ``timeout_s`` (None: no limit) bounds one attempt."""

    max_retries: int = 0
    timeout_s: float | None = None
    backoff_s: float = 0.0
    max_backoff_s: float = 60.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if not _is_number(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError("RetryPolicy", "max_retries", self.max_retries, "must be an int >= 0")
        for name in ("backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigError("RetryPolicy", name, value, "must be a finite number >= 0")
        if not _is_number(self.jitter) or not 0 <= self.jitter <= 1:
            raise ConfigError("RetryPolicy", "jitter", self.jitter, "must be between 0 and 1")
        if self.timeout_s is not None and not (_is_number(self.timeout_s) and self.timeout_s > 0):
            reason = "must be a finite number > 0, or None"
            raise ConfigError("RetryPolicy", "timeout_s", self.timeout_s, reason)
        types = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
            reason = "must be exception classes"
            raise ConfigError("RetryPolicy", "retry_on", self.retry_on, reason)
        object.__setattr__(self, "retry_on", types)

    def retries(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1 for the first run), which failed with
        ``error``, gets another."""
        if attempt > self.max_retries:
            return False
        if isinstance(error, NodeTimeoutError | WorkerDiedError):  # a hang or a crash (out of
            return True  # memory, a flaky driver) may be a passing one
        if isinstance(error, RemoteStageError):  # judged as the exception it stands for
            lineage = set(error.lineage)
            if _name(PhysPipelineError) in lineage:
                return False
            return any(_name(kind) in lineage for kind in self.retry_on)
        return not isinstance(error, PhysPipelineError) and isinstance(error, self.retry_on)

    def delay_s(self, attempt: int) -> float:
        """How long to wait before the retry that follows failed attempt ``attempt``."""
        base = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return base * (1 + self.jitter * (2 * random.random() - 1))


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> bool:
    """A finite ``kind`` (not a bool, which is an int to Python)."""
    return isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
