"""RunControls: a Run button, debounced auto-run, progress, the run summary and failures.

Threads: with auto-run on, every config or policy edit (re)starts a ``threading.Timer`` of
``debounce_s``; when it fires, the run happens on that timer thread, so the kernel stays free
for more edits while it runs. An edit during a run schedules another run after it. Runs are
serialised by a lock; no thread outlives its run, and ``close()`` cancels a pending timer.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as w

from ..executor import DagRunResult
from ..session import LiveSession
from ..types import NodeStatus
from ..views import failures_html
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "RunControls",
]

# nodes a run has still to settle
_WAITING = frozenset({NodeStatus.STALE, NodeStatus.NOT_RUN, NodeStatus.RUNNING})


class RunControls(SessionView, w.VBox):
    """Run the session's stale nodes. ``run_button`` (text "Run"), ``auto_run`` (a
    Checkbox), ``progress`` (IntProgress: nodes done of those that had to run),
    ``status_line`` (HTML, the result's ``summary()``), ``errors`` (HTML, failures by node)."""

    def __init__(self, session: LiveSession, *, debounce_s: float = 0.3, **kwargs: Any) -> None:
        self.session = session
        self.debounce_s = debounce_s
        self._run_lock = threading.Lock()
        self._timer_lock = threading.Lock()  # before anything can fail: close() takes it
        self._timer: threading.Timer | None = None
        self._pending: list[str] | None = None  # nodes this run has to compute
        with closed_on_failure(self):
            self.run_button = w.Button(
                description="Run",
                icon="play",
                button_style="primary",
                tooltip="run the stale nodes",
            )
            self.run_button.add_class("pp-run-button")
            self.run_button.on_click(lambda _: self.run())
            self.auto_run = w.Checkbox(value=False, description="auto-run", indent=False)
            self.auto_run.add_class("pp-auto-run")
            self.auto_run.observe(self._auto_run_toggled, "value")
            self.progress = w.IntProgress(
                value=0, min=0, max=1, description="0/0", layout=w.Layout(width="16em")
            )
            self.progress.add_class("pp-progress")
            self.status_line = w.HTML("")
            self.status_line.add_class("pp-status-line")
            self.errors = w.HTML("")
            self.errors.add_class("pp-run-errors")
            super().__init__(**kwargs)
            self.add_class("pp-run-controls")
            self.children = [
                w.HBox([self.run_button, self.auto_run, self.progress]),
                self.status_line,
                self.errors,
            ]
            self._follow(session)
            self._show_stale()

    # --- running -----------------------------------------------------------------------------

    def run(self) -> DagRunResult | None:
        """Run the stale nodes now (blocking). Failures are shown in the panel; nothing is
        raised into the kernel. Returns the result, or None if the run could not start."""
        with self._run_lock:
            try:
                self._start_progress(list(self.session.current_stale))
                return self.session.run()  # the "run" event shows the result
            except Exception as exc:  # noqa: BLE001 - a button callback: show, never raise
                self.errors.value = (
                    f"<div class='pp-errors' style='color:#b91c1c'>run failed: "
                    f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</div>"
                )
                return None
            finally:
                self._pending = None

    def schedule_run(self) -> None:
        """(Re)start the debounce timer: many quick edits make one run."""
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce_s, self.run)
            self._timer.daemon = True
            self._timer.name = "phys-pipeline-auto-run"
            self._timer.start()

    def cancel_scheduled(self) -> None:
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    @property
    def run_pending(self) -> bool:
        """True while an auto-run is scheduled or running (tests poll this)."""
        timer = self._timer
        return (timer is not None and timer.is_alive()) or self._run_lock.locked()

    def _auto_run_toggled(self, change: dict[str, Any]) -> None:
        if change["new"] and self.session.stale():
            self.schedule_run()
        elif not change["new"]:
            self.cancel_scheduled()

    # --- showing -----------------------------------------------------------------------------

    def _start_progress(self, pending: list[str]) -> None:
        self._pending = pending
        self.progress.max = max(len(pending), 1)
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.progress.description = f"0/{len(pending)}"

    def _count_progress(self) -> None:
        if self._pending is None:  # a run started elsewhere (session.run() in a cell)
            status = self.session.status
            self._start_progress([n for n, s in status.items() if s in _WAITING])
        status = self.session.status
        done = sum(NodeStatus(status[nid]).settled for nid in self._pending or () if nid in status)
        self.progress.value = done
        self.progress.description = f"{done}/{len(self._pending or ())}"

    def show_result(self, result: DagRunResult) -> None:
        """The summary line (``result.summary()``) and failures, naming each failed node."""
        total = len(self._pending) if self._pending is not None else len(result.runs)
        self.progress.max = max(total, 1)
        self.progress.value = self.progress.max
        self.progress.description = f"{total}/{total}"
        self.progress.bar_style = "danger" if result.failures else "success"
        self.status_line.value = html.escape(result.summary())
        self.errors.value = failures_html(result.failures)

    def _show_stale(self) -> None:
        """How much a run would compute, in the button's tooltip (its text stays "Run")."""
        stale = sum(s in _WAITING for s in self.session.status.values())
        self.run_button.tooltip = f"run the {stale} stale node(s)" if stale else "nothing is stale"

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "status":
            self._count_progress()
        elif event == "run" and session.last_result is not None:
            self.show_result(session.last_result)
            self._show_stale()
        elif event == "edit":
            self._show_stale()
            if self.auto_run.value:
                self.schedule_run()

    def close(self) -> None:
        self.cancel_scheduled()
        super().close()
