"""2.0.0's job API on ``LocalScheduler``: ``submit`` a callable now, ``wait_any`` of the
handles, ``shutdown``. Our runs do not use it (``LocalScheduler.execute`` runs a plan's nodes
and leaves nothing running); jobs submitted here run on a thread pool that lives until
``shutdown``, as 2.0.0's did, each waiting for its cpu/gpu/memory slots as nodes do."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._deprecation import warn_once
from ..engine import Slots
from ..types import NodeResources
from .errors import SchedulerError, SchedulerTimeoutError

__all__ = ["JobHandle"]  # served from phys_pipeline.scheduler; JobApi is its base

_INSTEAD = "DagExecutor(scheduler=...).run(state, nodes) runs nodes on a scheduler"


@dataclass(slots=True)
class JobHandle:
    """One submitted job: its future and what it asked for."""

    job_id: str
    node_id: str
    future: Future[Any]
    resources: NodeResources
    submitted_at: datetime
    attempt: int = 1


@dataclass
class _Jobs:
    """The pool and free slots of the jobs submitted since the last ``shutdown``."""

    pool: ThreadPoolExecutor
    free: Slots
    changed: threading.Condition = field(default_factory=threading.Condition)
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def give_back(self, resources: NodeResources) -> None:
        with self.changed:
            self.free.give(resources)
            self.changed.notify_all()


class JobApi:
    """The job API, for a scheduler with ``max_workers``, ``max_cpu``, ``max_gpu`` and
    ``max_mem_gb`` (None: unbounded) limits."""

    max_workers: int
    max_cpu: int
    max_gpu: int
    max_mem_gb: float | None
    _v2_jobs: _Jobs | None = None

    def _slots(self) -> Slots:
        memory = math.inf if self.max_mem_gb is None else self.max_mem_gb
        return Slots(self.max_workers, max(self.max_cpu, 1), self.max_gpu, memory)

    def submit(
        self,
        node_id: str,
        fn: Callable[[], Any],
        resources: NodeResources,
        *,
        attempt: int = 1,
    ) -> JobHandle:
        """Run ``fn()`` once its slots are free (waiting here until then); resources the
        scheduler does not have at all are a SchedulerError naming the node."""
        warn_once("LocalScheduler.submit", _INSTEAD)
        if not self._slots().fits(resources):
            raise SchedulerError(
                f"node {node_id!r}",
                f"needs cpu={resources.cpu}, gpu={resources.gpu}, mem_gb={resources.mem_gb} "
                f"but the scheduler has max_cpu={self.max_cpu}, max_gpu={self.max_gpu}, "
                f"max_mem_gb={self.max_mem_gb}",
            )
        jobs = self._v2_jobs
        if jobs is None:
            pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="phys-job")
            jobs = self._v2_jobs = _Jobs(pool, self._slots())
        with jobs.changed:
            jobs.changed.wait_for(lambda: jobs.free.fits(resources))
            jobs.free.take(resources)
        future = jobs.pool.submit(fn)
        future.add_done_callback(lambda _: jobs.give_back(resources))
        job_id = f"local-{next(jobs.numbers)}"
        return JobHandle(job_id, node_id, future, resources, datetime.now(UTC), attempt)

    def wait_any(self, handles: Sequence[JobHandle], timeout_s: float | None = None) -> JobHandle:
        """The first of ``handles`` to finish; SchedulerTimeoutError if none does within
        ``timeout_s`` seconds."""
        warn_once("LocalScheduler.wait_any", _INSTEAD)
        by_future = {handle.future: handle for handle in handles}
        done, _ = wait(by_future, timeout=timeout_s, return_when=FIRST_COMPLETED)
        if not done:
            ids = ", ".join(repr(handle.node_id) for handle in handles)
            raise SchedulerTimeoutError(f"nodes {ids}", f"none finished within {timeout_s} s")
        return by_future[next(iter(done))]

    def shutdown(self) -> None:
        """Wait for the submitted jobs and stop their threads."""
        warn_once("LocalScheduler.shutdown", _INSTEAD)
        jobs, self._v2_jobs = self._v2_jobs, None
        if jobs is not None:
            jobs.pool.shutdown(wait=True)


DEPRECATED = {"JobHandle": _INSTEAD}
