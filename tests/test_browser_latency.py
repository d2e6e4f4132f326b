"""Edit → updated plot in JupyterLab 4, timed in the page.

``tests/browser/edit_latency.ipynb`` shows a PipelineApp over the tutorial's DAG (grid → pulse
→ fibre → compressor → {phase, duration}) with auto-run on, after one run, the compressor
selected. Each edit types a grating separation into the value box beside its slider and
presses Enter; the page stamps the Enter key (``performance.now()``) and, with a
MutationObserver on the watched ``duration`` panel, the moment its plot's ``<img>`` shows a new
image. The test checks what a physicist sees: after every edit the plot is a new one and the
panel's metrics show the kernel's new pulse duration. It prints the latencies and writes them
to a JSON file in a new temporary directory; it asserts no timing (the figures are
``benchmarks/browser_edit.py``'s business, which reuses the helpers here).

The kernel's side of each edit comes from the notebook's ``last_edit()``, called through the
page's kernel connection: when the edit reached the session, when the debounced run started,
how long it ran, and when the app's views had redrawn after it.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import test_browser as harness
from test_browser import (
    CHROMIUM,
    RUN_TIMEOUT_MS,
    UI_TIMEOUT_MS,
    LabServer,
    open_notebook,
    run_all_cells,
    sync_api,
    value_box,
)

# the harness's fixtures, for this module: its own server, browser, page and error log
lab, browser, page, js_errors = harness.lab, harness.browser, harness.page, harness.js_errors

NOTEBOOK = "browser/edit_latency.ipynb"
NODE, FIELD, PLOT = "compressor", "separation_mm", "duration"
FRESH = ["96", "104", "92"]  # separations never computed before: three nodes run
REVISIT = "96"  # computed above: every node loads from the session's memory tier

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed: apt-get install chromium"),
]


@dataclass(frozen=True)
class EditTiming:
    """One edit, in milliseconds: page-clock stamps (``performance.now()``), Unix times from
    the page (``performance.timeOrigin`` added) and from the kernel, which share the clock."""

    value: str
    typed: float  # Enter pressed in the value box
    plotted: float  # the watched plot's <img> shows a new image
    painted: float  # that image decoded and the next frame drawn
    origin: float  # performance.timeOrigin (Unix ms)
    kernel: dict[str, Any]  # the notebook's last_edit(): Unix seconds and the run's figures

    @property
    def latency_ms(self) -> float:
        """Enter → new plot in the DOM."""
        return self.plotted - self.typed

    @property
    def debounce_ms(self) -> float:
        return 1000 * self.kernel["debounce_s"]

    @property
    def cached(self) -> bool:
        """Nothing ran: every node loaded from the cache (a value seen before)."""
        return not self.kernel["ran"]

    def split(self) -> dict[str, float]:
        """Where the latency went, ms (the parts add up to it): browser → kernel (the widget
        message and the edit), edit taken → run start (the debounce), the run, and run end →
        the new image in the page (the artifact view drawing the watched figures in turn and
        sending them, the page showing it)."""
        edited, started = (1000 * self.kernel[name] for name in ("edited", "run_started"))
        run = 1000 * self.kernel["run_s"]
        return {
            "to_kernel": edited - (self.origin + self.typed),
            "debounce": started - edited,
            "run": run,
            "to_plot": self.origin + self.plotted - started - run,
        }

    @property
    def views_ms(self) -> float:
        """Run end → every view of the app has redrawn, ms: also those after the artifact view
        (the history), so the kernel is busy this long after each run, plot shown or not."""
        return 1000 * (
            self.kernel["views_done"] - self.kernel["run_started"] - self.kernel["run_s"]
        )


def watched_panel(page: sync_api.Page, node: str) -> sync_api.Locator:
    """The artifact view's panel of watched node ``node`` (its title is the node's id)."""
    title = page.locator(".pp-section-head b", has_text=re.compile(rf"^{re.escape(node)}$"))
    return page.locator(".pp-node-panel").filter(has=title)


def metric_cell(panel: sync_api.Locator, metric: str) -> sync_api.Locator:
    """The value shown for ``metric`` in a panel's metrics table."""
    name = panel.page.locator("td", has_text=re.compile(rf"^{re.escape(metric)}$"))
    return panel.locator(".pp-metrics tr").filter(has=name).locator("td").last


def kernel_print(page: sync_api.Page, code: str) -> str:
    """Run ``code`` in the notebook's kernel outside any cell (the kernel's main thread is free
    while an auto-run computes on its timer thread) and return what it printed."""
    return page.evaluate(
        """async code => {
            const panel = window.jupyterapp.shell.currentWidget;
            const future = panel.sessionContext.session.kernel.requestExecute(
                {code, store_history: false});
            let text = '';
            future.onIOPub = msg => {
                if (msg.header.msg_type === 'stream') text += msg.content.text;
                if (msg.header.msg_type === 'error')
                    text += `${msg.content.ename}: ${msg.content.evalue}`;
            };
            await future.done;
            return text;
        }""",
        code,
    )


def open_latency_app(page: sync_api.Page, lab: LabServer) -> sync_api.Locator:
    """Open the notebook in JupyterLab, run it (the app runs once and selects the compressor)
    and return the watched duration panel, its plot on screen."""
    open_notebook(page, lab, NOTEBOOK, "lab")
    run_all_cells(page)
    panel = watched_panel(page, PLOT)
    sync_api.expect(panel.locator(".jp-OutputArea-output img")).to_be_visible(timeout=UI_TIMEOUT_MS)
    value_box(page, FIELD).scroll_into_view_if_needed()
    return panel


def set_debounce(page: sync_api.Page, seconds: float) -> None:
    """The auto-run's debounce for the edits to come (RunControls reads it at each edit)."""
    kernel_print(page, f"app.controls.debounce_s = {seconds!r}")


# Stamps, in the page's clock, the Enter key in the value box and the first moment the watched
# panel's plot shows another image than before (an output re-rendered with the same image,
# as after an edit that only greys the panel, does not count), then when it is decoded and the
# next frame is drawn.
WATCH_EDIT_JS = """([input, panel]) => {
    const image = () => panel.querySelector('.jp-OutputArea-output img');
    const watch = window.__ppEdit = {
        before: image()?.src ?? null, typed: null, plotted: null, painted: null,
        origin: performance.timeOrigin,
    };
    input.addEventListener('keydown', event => {
        if (event.key === 'Enter' && watch.typed === null) watch.typed = performance.now();
    }, {capture: true});
    const observer = new MutationObserver(() => {
        const img = image();
        if (watch.typed === null || !img || img.src === watch.before) return;
        watch.plotted = performance.now();
        observer.disconnect();
        const frame = () => requestAnimationFrame(() => { watch.painted = performance.now(); });
        img.decode().then(frame, frame);
    });
    observer.observe(panel, {childList: true, subtree: true, attributes: true,
                             attributeFilter: ['src']});
}"""


def measure_edit(page: sync_api.Page, panel: sync_api.Locator, value: str) -> EditTiming:
    """Type ``value`` into the field's value box, press Enter, wait for the new plot and the
    new metric; returns the timing. Fails if the plot or the metric does not change, or the
    kernel did not take the value."""
    box = value_box(page, FIELD)
    fwhm = metric_cell(panel, "fwhm_fs")
    fwhm_before = fwhm.inner_text()
    box.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(value)
    page.evaluate(WATCH_EDIT_JS, [box.element_handle(), panel.element_handle()])
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.__ppEdit.painted !== null", timeout=RUN_TIMEOUT_MS)
    watch = page.evaluate("() => window.__ppEdit")
    kernel = json.loads(kernel_print(page, "print(last_edit())"))
    assert kernel["separation_mm"] == float(value), kernel
    assert kernel["run_started"] > kernel["edited"], "no run after the edit"
    shown = f"{kernel['fwhm_fs']:.6g}"
    assert shown != fwhm_before, f"{value} mm gives the same FWHM as before: {shown} fs"
    sync_api.expect(fwhm).to_have_text(shown, timeout=RUN_TIMEOUT_MS)
    return EditTiming(
        value, watch["typed"], watch["plotted"], watch["painted"], watch["origin"], kernel
    )


def timings_json(timings: list[EditTiming]) -> dict[str, Any]:
    """Every edit's stamps, latency and split, for a file a person or a script reads later."""
    return {
        "edits": [
            {
                **asdict(t),
                "latency_ms": t.latency_ms,
                "cached": t.cached,
                "split_ms": t.split(),
                "views_ms": t.views_ms,
            }
            for t in timings
        ]
    }


def test_each_typed_separation_redraws_the_duration_plot_and_shows_the_new_fwhm(
    lab: LabServer, page: sync_api.Page, js_errors: list[str]
) -> None:
    panel = open_latency_app(page, lab)
    timings = [measure_edit(page, panel, value) for value in [*FRESH, REVISIT]]

    for timing in timings[: len(FRESH)]:
        assert timing.kernel["ran"] == ["compressor", "phase", "duration"], timing.kernel
    assert timings[-1].cached, timings[-1].kernel  # a value computed before: all from cache

    out = Path(tempfile.mkdtemp(prefix="pp-edit-latency-")) / "edit_latency.json"
    out.write_text(json.dumps(timings_json(timings), indent=1))
    for t in timings:
        split = ", ".join(f"{name} {ms:.0f}" for name, ms in t.split().items())
        kind = "cached" if t.cached else "ran 3"
        print(
            f"{FIELD} = {t.value} ({kind}): {t.latency_ms:.0f} ms edit → plot, "
            f"{t.latency_ms - t.debounce_ms:.0f} ms past the {t.debounce_ms:.0f} ms debounce "
            f"(ms: {split}; every view redrawn {t.views_ms:.0f} ms after the run)"
        )
    print(f"edit latencies: {out}")
    assert not js_errors, js_errors
