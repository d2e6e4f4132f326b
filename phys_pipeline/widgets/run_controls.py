"""RunControls: a Run/Stop button, debounced auto-run, progress, the run summary and failures.

Threads: a run never blocks the kernel's comm callbacks, so that Stop can be clicked. The Run
button starts the run on a thread of its own (``start``); with auto-run on, every config or
policy edit (re)starts a ``threading.Timer`` of ``debounce_s`` and the run happens on that
timer thread. An edit during a run schedules another run after it. Runs are serialised by a
lock; ``run()`` is the blocking call both use. The button reads Run again as soon as the
session announces the run's end, before slower views (plots) have redrawn; a Run clicked then
waits for them. While nodes run, a ticker thread refreshes their elapsed seconds every
``TICK_S``; it exits when no node is running. No thread outlives its run, and ``close()``
cancels a pending timer and stops the ticker.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any, Literal

import ipywidgets as w

from ..executor import DagRunResult
from ..session import LiveSession
from ..types import NodeStatus
from ..views import failures_html
from ._subscribe import SessionView, closed_on_failure

__all__ = [
    "TICK_S",
    "RunControls",
]

TICK_S = 0.5
"""How often the running line's elapsed seconds move on."""

# nodes a run has still to settle
_WAITING = frozenset({NodeStatus.STALE, NodeStatus.NOT_RUN, NodeStatus.RUNNING})
# nodes a run would compute: those waiting, and those a run failed, skipped or stopped
_TO_COMPUTE = _WAITING | {NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}

ButtonLook = Literal["run", "stop", "stopping"]
_LOOKS: dict[ButtonLook, dict[str, Any]] = {
    "run": {"description": "Run", "icon": "play", "button_style": "primary", "disabled": False},
    "stop": {
        "description": "Stop",
        "icon": "stop",
        "button_style": "warning",
        "disabled": False,
        "tooltip": "stop the run: finished nodes stay cached, the rest are cancelled",
    },
    "stopping": {
        "description": "Stopping",
        "icon": "stop",
        "button_style": "warning",
        "disabled": True,
        "tooltip": "stopping: waiting for the run to return",
    },
}


class RunControls(SessionView, w.VBox):
    """Run the session's stale nodes. ``run_button`` ("Run"; "Stop" while a run of these
    controls is in flight), ``auto_run`` (a Checkbox), ``progress`` (IntProgress: nodes done of
    those that had to run), ``running_line`` (HTML: each running node's elapsed seconds and last
    ``report_progress``, from the session's ``running_since`` and ``progress``),
    ``status_line`` (HTML, the result's ``summary()``), ``errors`` (HTML, failures by node)."""

    def __init__(self, session: LiveSession, *, debounce_s: float = 0.3, **kwargs: Any) -> None:
        self.session = session
        self.debounce_s = debounce_s
        # before anything can fail: close() uses them
        self._run_lock = threading.Lock()
        self._timer_lock = threading.Lock()
        self._timer: threading.Timer | None = None
        # guards the button's look, the Stop request, the ticker and the running line (the
        # run's thread, the ticker and the kernel's comm callbacks all change them)
        self._activity_lock = threading.Lock()
        self._stop_requested = False
        self._ticker: tuple[threading.Event, threading.Thread] | None = None
        self._closed = False  # an event already on its way after close() starts no ticker
        self._look: ButtonLook = "run"
        self._idle_tooltip = "run the stale nodes"
        self._pending: list[str] | None = None  # nodes this run has to compute
        self._run_thread: threading.Thread | None = None  # the thread of a run of these
        with closed_on_failure(self):
            self.run_button = w.Button(layout=w.Layout(width="auto", min_width="7em"))
            self.run_button.add_class("pp-run-button")
            self._show_button("run")
            self.run_button.on_click(self._clicked)
            self.auto_run = w.Checkbox(
                value=False, description="auto-run", indent=False, layout=w.Layout(width="auto")
            )
            self.auto_run.add_class("pp-auto-run")
            self.auto_run.observe(self._auto_run_toggled, "value")
            self.progress = w.IntProgress(
                value=0,
                min=0,
                max=1,
                description="0/0",
                layout=w.Layout(width="auto", flex="1 1 auto", min_width="6em"),
            )
            self.progress.add_class("pp-progress")
            self.running_line = w.HTML("")
            self.running_line.add_class("pp-running-line")
            self.status_line = w.HTML("")
            self.status_line.add_class("pp-status-line")
            self.errors = w.HTML("", layout=w.Layout(overflow="auto"))
            self.errors.add_class("pp-run-errors")
            super().__init__(**kwargs)
            self.add_class("pp-run-controls")
            self.children = [
                w.HBox([self.run_button, self.auto_run]),
                self.progress,
                self.running_line,
                self.status_line,
                self.errors,
            ]
            self._follow(session)
            self._show_stale()

    # --- running -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while a run of these controls (button, auto-run or ``run()``) is in flight,
        or its views still redraw."""
        return self._run_lock.locked()

    def run(self) -> DagRunResult | None:
        """Run the stale nodes now, blocking until the run ends (after the run of these
        controls in flight, if any). Failures are shown in the panel; nothing is raised into
        the kernel. Returns the result, or None if the run could not start."""
        with self._run_lock:
            self._run_thread = threading.current_thread()
            try:
                with self._activity_lock:
                    if not self._stop_requested:  # else a Stop came while this run waited
                        self._show_button("stop")
                self._start_progress(list(self.session.current_stale))
                return self.session.run()  # the "run" event shows the result and Run
            except Exception as exc:  # noqa: BLE001 - a button callback: show, never raise
                self.errors.value = (
                    f"<div class='pp-errors' style='color:#b91c1c'>run failed: "
                    f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</div>"
                )
                self.progress.bar_style = "danger"
                with self._activity_lock:
                    self._ended()
                return None
            finally:
                self._pending = None
                self._run_thread = None

    def start(self) -> threading.Thread:
        """Run the stale nodes on a background thread (what the Run button does), so the
        kernel stays free to take Stop and edits; the button reads Stop at once. Returns
        the thread (it waits for a run of these controls still in flight)."""
        with self._activity_lock:
            self._show_button("stop")
        thread = threading.Thread(target=self.run, name="phys-pipeline-run", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop the run in flight (the Stop button): nodes not finished are reported
        cancelled, finished ones stay cached. The request holds until the run ends, so a
        Stop while the run still loads from the cache takes effect at its first node."""
        with self._activity_lock:
            if self._look == "run":  # no run of these controls in flight
                return
            self._stop_requested = True
            self._show_button("stopping")
        self.session.cancel()

    def _clicked(self, _: w.Button) -> None:
        if self._look == "run":
            self.start()
        else:
            self.stop()

    def _ended(self) -> None:
        """The run is over (activity lock held): idle."""
        self._stop_requested = False
        self._tick_while(running=False)
        self._show_button("run")

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
        return (timer is not None and timer.is_alive()) or self.running

    def _auto_run_toggled(self, change: dict[str, Any]) -> None:
        if change["new"] and self.session.stale():
            self.schedule_run()
        elif not change["new"]:
            self.cancel_scheduled()

    # --- what is running ---------------------------------------------------------------------

    def _tick_while(self, running: bool) -> None:
        """Start the ticker when nodes run, stop it when none does, and show what runs
        (activity lock held)."""
        if running and self._ticker is None and not self._closed:
            stop = threading.Event()
            ticker = threading.Thread(
                target=self._tick, args=(stop,), name="phys-pipeline-elapsed", daemon=True
            )
            self._ticker = (stop, ticker)
            ticker.start()
        elif not running and self._ticker is not None:
            self._ticker[0].set()
            self._ticker = None
        self._show_running()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(TICK_S):
            with self._activity_lock:
                self._show_running()

    def _show_running(self) -> None:
        """One line per running node: "fit 40% iteration 4 of 10, 3.2 s" (activity lock held;
        the session's dicts change on the run's thread: read copies)."""
        now = time.monotonic()
        running = self.session.running_since.copy()
        progress = self.session.progress.copy()
        lines = []
        for nid, since in sorted(running.items(), key=lambda item: item[1]):
            fraction, message = progress.get(nid, (None, ""))
            done = "" if fraction is None else f"{fraction:.0%} {message}".rstrip() + ", "
            lines.append(f"<div>running: {html.escape(f'{nid} {done}{now - since:.1f} s')}</div>")
        self.running_line.value = "".join(lines)

    # --- showing -----------------------------------------------------------------------------

    def _show_button(self, look: ButtonLook) -> None:
        """Run, Stop or Stopping (activity lock held, or before any run)."""
        self._look = look
        with self.run_button.hold_sync():
            self.run_button.set_trait("tooltip", self._idle_tooltip)
            for trait, value in _LOOKS[look].items():
                setattr(self.run_button, trait, value)

    def _start_progress(self, pending: list[str]) -> None:
        self._pending = pending
        self.progress.max = max(len(pending), 1)
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.progress.description = f"0/{len(pending)}"

    def _count_progress(self) -> None:
        pending = self.session.pending  # what the run in flight found it has to compute
        if pending is not None and list(pending) != self._pending:
            self._start_progress(list(pending))
        elif self._pending is None:  # not planned yet: the nodes shown waiting
            status = self.session.status
            self._start_progress([n for n, s in status.items() if s in _WAITING])
        status = self.session.status
        done = sum(NodeStatus(status[nid]).settled for nid in self._pending or () if nid in status)
        self.progress.value = done
        self.progress.description = f"{done}/{len(self._pending or ())}"

    def show_result(self, result: DagRunResult) -> None:
        """The summary line (``result.summary()``) and failures, naming each failed node; the
        bar counts the nodes settled (not those a Stop cancelled)."""
        # the nodes the run computed or had to: not those it loaded
        total = sum(run.status is not NodeStatus.HIT for run in result.runs.values())
        done = max(total - len(result.cancelled), 0)
        self.progress.max = max(total, 1)
        self.progress.value = done if total else 1  # nothing had to run: full
        self.progress.description = f"{done}/{total}"
        if result.failures:
            self.progress.bar_style = "danger"
        else:
            self.progress.bar_style = "warning" if result.cancelled else "success"
        self.status_line.value = html.escape(result.summary())
        self.errors.value = failures_html(result.failures)

    def _show_stale(self) -> None:
        """How much a run would compute, in the Run button's tooltip."""
        stale = sum(s in _TO_COMPUTE for s in self.session.status.values())
        self._idle_tooltip = (
            f"run the {stale} stale, failed or stopped node(s)" if stale else "nothing is stale"
        )
        with self._activity_lock:
            if self._look == "run":
                self.run_button.tooltip = self._idle_tooltip

    def _on_session(self, event: str, session: LiveSession) -> None:
        if event == "status":
            with self._activity_lock:
                self._tick_while(running=bool(session.running_since))
                if self._stop_requested:  # a Stop before the executor could take it
                    session.cancel()
            self._count_progress()
        elif event == "progress":
            with self._activity_lock:
                self._show_running()
        elif event == "run":
            # a run of these controls waiting behind one from a cell keeps Stop
            theirs = self.running and threading.current_thread() is not self._run_thread
            if not theirs:
                with self._activity_lock:
                    self._ended()
            if session.last_result is not None:
                self.show_result(session.last_result)
            self._pending = None
            self._show_stale()
        elif event == "edit":
            self._show_stale()
            if self.auto_run.value:
                self.schedule_run()

    def close(self) -> None:
        self.cancel_scheduled()
        with self._activity_lock:
            ticker, self._ticker = self._ticker, None
            self._closed = True
        if ticker is not None:
            ticker[0].set()
            ticker[1].join()
        super().close()
