"""Stop and the side panel in a real browser, in JupyterLab 4 and Notebook 7.

``tests/browser/stop_chain.ipynb`` shows a PipelineApp over three slabs in a chain, each taking
2 s in ten steps that it reports (``report_progress``), on two worker threads. The test clicks
Run, watches the running line count the seconds and steps of the second slab, clicks Stop
there and measures in the page the time from the click to the button reading Run again (at
most 1 s): the first slab ran, the other two are cancelled, and the next Run loads the first
from the cache.

``tests/browser/app_layout.ipynb`` shows the optics demo with a node failing with a long
message naming a long path, and a policy of a few keys: after the run, the failure wraps inside
the side panel, nothing in the panel sticks out of it, the panel stays inside the app, and
neither the panel nor the DAG has changed width.

The server, browser and notebook helpers are ``tests/test_browser.py``'s; screenshots go to a
new directory under the system's temporary one (its path is printed).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import test_browser as harness
from test_browser import (
    CHROMIUM,
    RUN_TIMEOUT_MS,
    UI_TIMEOUT_MS,
    UIS,
    LabServer,
    app_errors,
    open_notebook,
    run_all_cells,
    sync_api,
    wait_for_statuses,
)

# the harness's fixtures, for this module: its own server, browser, page and error log
lab, browser, page, js_errors = harness.lab, harness.browser, harness.page, harness.js_errors

STOP_NOTEBOOK = "browser/stop_chain.ipynb"
LAYOUT_NOTEBOOK = "browser/app_layout.ipynb"
SLABS = ["slab1", "slab2", "slab3"]
IDLE_AFTER_STOP_MS = 1000

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed: apt-get install chromium"),
]


@pytest.fixture(scope="module")
def shots() -> Path:
    """A fresh directory under the system's temporary one, kept after the session (pytest's
    own are pruned by later sessions) so the pictures can be looked at."""
    path = Path(tempfile.mkdtemp(prefix="pp-stop-screenshots-"))
    print(f"screenshots: {path}")
    return path


def shoot(page: sync_api.Page, element: sync_api.Locator, path: Path) -> None:
    element.scroll_into_view_if_needed()
    element.screenshot(path=str(path))


def open_app(page: sync_api.Page, lab: LabServer, notebook: str, ui: str) -> sync_api.Locator:
    open_notebook(page, lab, notebook, ui)
    run_all_cells(page)
    app = page.locator(".pp-pipeline-app")
    sync_api.expect(app).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.wait_for_selector("svg.pp-dag g.pp-node")
    return app


# Stamps, in the page's clock, the Stop click and the first moment after it that the button
# reads Run (a MutationObserver on the button: its text and class change together).
WATCH_STOP_JS = """button => {
    const watch = window.__ppStop = {clicked: null, idle: null};
    button.addEventListener('click', () => { watch.clicked = performance.now(); },
                            {capture: true, once: true});
    const observer = new MutationObserver(() => {
        if (watch.clicked !== null && button.textContent.trim() === 'Run') {
            watch.idle = performance.now();
            observer.disconnect();
        }
    });
    observer.observe(button, {childList: true, subtree: true, characterData: true,
                              attributes: true});
}"""


@pytest.mark.parametrize("ui", UIS)
def test_stop_cancels_the_rest_of_the_chain_and_the_button_reads_run_within_a_second(
    lab: LabServer, page: sync_api.Page, js_errors: list[str], shots: Path, ui: str
) -> None:
    app = open_app(page, lab, STOP_NOTEBOOK, ui)
    button = app.locator(".pp-run-button")
    running_line = app.locator(".pp-running-line")
    sync_api.expect(button).to_have_text("Run")
    wait_for_statuses(page, dict.fromkeys(SLABS, "not-run"))

    # Run: the button turns into Stop while the chain computes (the kernel stays free).
    button.click()
    sync_api.expect(button).to_have_text("Stop", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(button).to_have_class(re.compile(r"\bmod-warning\b"))
    sync_api.expect(running_line).to_have_text(
        re.compile(r"^running: slab1 \d+% step \d+ of 10, \d+\.\d s$"), timeout=RUN_TIMEOUT_MS
    )

    # During the second slab: its steps and seconds count up on the running line.
    wait_for_statuses(page, {"slab1": "ran", "slab2": "running", "slab3": "not-run"})
    progress = re.compile(r"^running: slab2 (\d+)% step (\d+) of 10, (\d+\.\d) s$")
    sync_api.expect(running_line).to_have_text(progress, timeout=RUN_TIMEOUT_MS)
    first = progress.match(running_line.inner_text().strip())
    assert first is not None
    sync_api.expect(running_line).not_to_have_text(first.group(0), timeout=RUN_TIMEOUT_MS)
    later = progress.match(running_line.inner_text().strip())
    assert later is not None and float(later.group(3)) >= float(first.group(3))
    # the DAG shows the running node's seconds and progress on the node itself
    elapsed = app.locator('g.pp-node[data-node="slab2"] .pp-elapsed')
    sync_api.expect(elapsed).to_have_text(re.compile(r"^\d+\.\d s \d+%$"))
    assert app.locator('g.pp-node[data-node="slab2"] .pp-node-progress').count() == 1
    shoot(page, app, shots / f"{ui}-1-running-slab2.png")

    # Stop: the button reads Run again within a second of the click, measured in the page.
    button.evaluate(WATCH_STOP_JS)
    button.click()
    page.wait_for_function("() => window.__ppStop.idle !== null", timeout=RUN_TIMEOUT_MS)
    watch = page.evaluate("() => window.__ppStop")
    idle_ms = watch["idle"] - watch["clicked"]
    shoot(page, app, shots / f"{ui}-2-after-stop.png")
    assert idle_ms <= IDLE_AFTER_STOP_MS, f"Run again {idle_ms:.0f} ms after Stop"
    wait_for_statuses(page, {"slab1": "ran", "slab2": "cancelled", "slab3": "cancelled"})
    sync_api.expect(app.locator(".pp-status-line")).to_have_text(
        re.compile(r"^ran 1, hit 0, cancelled 2, \d+\.\d\d s$")
    )
    sync_api.expect(running_line).to_have_text("")
    sync_api.expect(button).to_have_class(re.compile(r"\bmod-primary\b"))

    # Run again: the first slab comes from the cache, the rest computes.
    button.click()
    sync_api.expect(app.locator(".pp-status-line")).to_have_text(
        re.compile(r"^ran [12], hit [12], \d+\.\d\d s$"), timeout=RUN_TIMEOUT_MS
    )
    wait_for_statuses(page, {"slab1": "hit", "slab3": "ran"})
    sync_api.expect(button).to_have_text("Run")
    shoot(page, app, shots / f"{ui}-3-after-rerun.png")
    assert not app_errors(js_errors, ui), js_errors


# Boxes (px) of the side panel and what is in it, measured after the run: the panel, the DAG,
# the app; the failure's box and its overflow; every element in the panel sticking out of it.
LAYOUT_JS = """app => {
    const side = app.querySelector('.pp-side-panel');
    const dag = side.parentElement.firstElementChild;
    const errors = side.querySelector('.pp-run-errors .widget-html-content');
    const box = el => el.getBoundingClientRect();
    const panel = box(side);
    const out = [];
    for (const el of side.querySelectorAll('*')) {
        const r = box(el);
        if (r.width > 0 && (r.right > panel.right + 0.5 || r.left < panel.left - 0.5)) {
            out.push(`${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`);
        }
    }
    return {
        side: panel.width, dag: box(dag).width, sideRight: panel.right,
        appRight: box(app).right, errorsHeight: box(errors).height,
        errorsOverflow: errors.scrollWidth - errors.clientWidth,
        sideOverflow: side.scrollWidth - side.clientWidth, out,
    };
}"""


@pytest.mark.parametrize("ui", UIS)
def test_a_long_failure_wraps_inside_the_side_panel_which_keeps_its_width(
    lab: LabServer, page: sync_api.Page, js_errors: list[str], shots: Path, ui: str
) -> None:
    app = open_app(page, lab, LAYOUT_NOTEBOOK, ui)
    app.scroll_into_view_if_needed()
    before = app.evaluate(LAYOUT_JS)

    app.locator(".pp-run-button").click()
    failure = app.locator(".pp-run-errors .pp-errors")
    sync_api.expect(failure).to_contain_text("node 'export' failed", timeout=RUN_TIMEOUT_MS)
    sync_api.expect(failure).to_contain_text("pulse_after_fused_silica_and_compressor.h5")
    sync_api.expect(app.locator(".pp-run-button")).to_have_text("Run", timeout=RUN_TIMEOUT_MS)
    after = app.evaluate(LAYOUT_JS)
    shoot(page, app, shots / f"{ui}-layout-after-failure.png")

    assert after["side"] == pytest.approx(before["side"], abs=1)  # not widened by the failure
    assert after["dag"] == pytest.approx(before["dag"], abs=1)  # and the DAG not shrunk
    assert after["sideRight"] <= after["appRight"] + 0.5  # the panel stays inside the app
    assert after["errorsOverflow"] <= 1 and after["sideOverflow"] <= 1  # wrapped, not scrolled
    line_px = float(failure.evaluate("e => parseFloat(getComputedStyle(e).lineHeight) || 16"))
    assert after["errorsHeight"] > 2 * line_px  # on several lines
    assert after["out"] == [], f"sticking out of the side panel: {after['out']}"
    assert not app_errors(js_errors, ui), js_errors
