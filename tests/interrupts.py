"""A run callback that presses Ctrl-C: the tests of what an interrupted run leaves behind."""

from __future__ import annotations

from typing import Any


class InterruptOnDone:
    """Aborts the run (KeyboardInterrupt on the thread running the hooks) once ``node_id`` is
    finished, as Ctrl-C in a notebook would: done, failed or skipped."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def on_done(self, node_id: str, result: Any, cache_hit: bool) -> None:
        if node_id == self.node_id:
            raise KeyboardInterrupt

    def on_error(self, node_id: str, error: BaseException) -> None:
        self.on_done(node_id, error, False)  # a sibling refusing a corrupted input ends too

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self.on_done(node_id, failed_dep, False)  # ... or one below such a sibling
