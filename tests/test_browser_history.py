"""The History tab in a real browser, in JupyterLab 4 and Notebook 7.

``tests/browser/history_app.ipynb`` shows a PipelineApp over the tutorial's DAG (grid → pulse →
fibre → compressor → {phase, duration}) with a disk cache. The test clicks Run, then makes
three edits as a user does, typing into the value box beside a config slider, each followed by
Run, and opens the History tab: four rows, newest first, each saying what changed. Pinning run
1 compares it with run 4: the metric deltas (one checked against the kernel's values), the
config values that differ, the metric plot, and each figure of the sinks kept for run 1 beside
run 4's. Restore on run 1 puts its configs back and the next Run loads every node from the
cache. The tab never widens the app, at full width or in a narrow window (the run table then
scrolls in its own box); screenshots in the light and the dark theme go to a new directory
under the system's temporary one (its path is printed).

The server, browser and notebook helpers are ``tests/test_browser.py``'s.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
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
    click_node,
    open_notebook,
    run_all_cells,
    sync_api,
    type_slider_value,
    wait_for_statuses,
    wait_for_summary,
)
from test_browser_dag import set_theme
from test_browser_latency import kernel_print

# the harness's fixtures, for this module: its own server, browser, page and error log
lab, browser, page, js_errors = harness.lab, harness.browser, harness.page, harness.js_errors

NOTEBOOK = "browser/history_app.ipynb"
NODES = ["grid", "pulse", "fibre", "compressor", "phase", "duration"]
# (node, field, value typed, nodes that run then, nodes loaded from the cache)
EDITS = [
    ("compressor", "separation_mm", "95", 3, 3),
    ("fibre", "length_m", "0.55", 4, 2),
    ("pulse", "fwhm_fs", "80", 5, 1),
]
CHANGES = [  # what each run's row says changed since the run before, newest first
    "pulse.fwhm_fs: 100.0 → 80.0",
    "fibre.length_m: 0.5 → 0.55",
    "compressor.separation_mm: 100.0 → 95.0",
    "first run",
]
FIGURES = ["phase.phase", "duration.intensity"]  # the sinks' figures, as the pairs are headed
METRIC = "duration.fwhm_fs"
THEMES = ("JupyterLab Light", "JupyterLab Dark")
NARROW_PX = 900

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed: apt-get install chromium"),
]


@pytest.fixture(scope="module")
def shots() -> Path:
    """A fresh directory under the system's temporary one, kept after the session (pytest's
    own are pruned by later sessions) so the pictures can be looked at."""
    path = Path(tempfile.mkdtemp(prefix="pp-history-screenshots-"))
    print(f"screenshots: {path}")
    return path


@pytest.fixture
def app(lab: LabServer, page: sync_api.Page, ui: str) -> Iterator[sync_api.Locator]:
    """The fixture notebook opened and run in the light theme (restored afterwards: the
    server's settings outlive the test); the app on screen, nothing run yet."""
    open_notebook(page, lab, NOTEBOOK, ui)
    set_theme(page, THEMES[0])
    try:
        run_all_cells(page)
        app = page.locator(".pp-pipeline-app")
        sync_api.expect(app).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.wait_for_selector("svg.pp-dag g.pp-node")
        yield app
    finally:
        set_theme(page, THEMES[0])


def shoot(page: sync_api.Page, element: sync_api.Locator, path: Path) -> None:
    """The whole element (the notebook scrolls inside the page: make the page tall enough)."""
    viewport = page.viewport_size or {"width": 1400, "height": 1050}
    height = (element.bounding_box() or {"height": 0})["height"]
    page.set_viewport_size({"width": viewport["width"], "height": min(int(height) + 400, 6000)})
    try:
        element.scroll_into_view_if_needed()
        element.screenshot(path=str(path))
    finally:
        page.set_viewport_size(viewport)


def kernel_runs(page: sync_api.Page) -> list[dict]:
    """The kernel's record of each run (the notebook's ``runs()``)."""
    return json.loads(kernel_print(page, "print(runs())"))


def wait_for_kernel(page: sync_api.Page, code: str, expected: str) -> None:
    """Wait until what ``code`` prints in the kernel reads ``expected``."""
    printed = ""
    for _ in range(RUN_TIMEOUT_MS // 100):
        printed = kernel_print(page, code).strip()
        if printed == expected:
            return
        page.wait_for_timeout(100)
    pytest.fail(f"the kernel printed {printed!r}, expected {expected!r}")


def cell_text(row: sync_api.Locator) -> list[str]:
    return [text.strip() for text in row.locator("td").all_inner_texts()]


# How far the History tab sticks out sideways (px): the app and the view past their own
# widths, and every element of the view reaching past the view's right edge, other than those
# inside a box that scrolls sideways itself (the run table's, the comparison table's).
OVERFLOW_JS = """app => {
    const view = app.querySelector('.pp-history-view');
    const right = view.getBoundingClientRect().right;
    const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
    const out = [];
    for (const el of view.querySelectorAll('*')) {
        const box = el.getBoundingClientRect();
        if (box.width === 0 || box.right <= right + 0.5) continue;
        let inner = false;
        for (let up = el.parentElement; up && up !== view; up = up.parentElement) {
            if (scrolls(up)) { inner = true; break; }
        }
        if (!inner) out.push(`${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`);
    }
    const table = view.querySelector('.pp-history-scroll');
    return {
        app: app.scrollWidth - app.clientWidth,
        view: view.scrollWidth - view.clientWidth,
        table: table.scrollWidth - table.clientWidth,
        out,
    };
}"""


# Whether a button in the run table is inside the table's box as first shown (not scrolled).
IN_VIEW_JS = """el => {
    const box = el.closest('.pp-history-scroll');
    return box.scrollLeft === 0
        && el.getBoundingClientRect().right <= box.getBoundingClientRect().right;
}"""


def assert_no_overflow(app: sync_api.Locator) -> dict:
    measured = app.evaluate(OVERFLOW_JS)
    assert measured["app"] <= 1 and measured["view"] <= 1, measured
    assert measured["out"] == [], f"sticking out of the History tab: {measured['out']}"
    return measured


@pytest.mark.parametrize("ui", UIS)
def test_history_tab_after_three_edits_compares_a_pinned_run_and_restores_it(
    app: sync_api.Locator, page: sync_api.Page, js_errors: list[str], shots: Path, ui: str
) -> None:
    run_button = app.locator(".pp-run-button")
    run_button.click()
    wait_for_summary(page, ran=len(NODES), hit=0)

    # Three edits typed into the config editor, each followed by Run.
    for node, field, value, ran, hit in EDITS:
        click_node(page, node)
        before, after = type_slider_value(page, field, value)
        assert float(after) == float(value) != float(before)
        wait_for_statuses(page, {node: "stale"})  # the session took the edit
        run_button.click()
        wait_for_summary(page, ran=ran, hit=hit)
    runs = kernel_runs(page)
    assert [len(run["ran"]) for run in runs] == [6, 3, 4, 5]

    # The History tab: a row per run, newest first, saying what changed since the run before.
    app.locator(".pp-results-tabs .lm-TabBar-tab", has_text="History").click()
    view = app.locator(".pp-history-view")
    sync_api.expect(view).to_be_visible()
    sync_api.expect(view.locator(".pp-run-number")).to_have_text(["4", "3", "2", "1"])
    sync_api.expect(view.locator(".pp-run-changes")).to_have_text(CHANGES)
    assert [c.replace(" -> ", " → ") for run in runs[:0:-1] for c in run["changes"]] == (
        CHANGES[:-1]
    )
    comparison = view.locator(".pp-comparison-box")
    sync_api.expect(comparison).to_have_text("pin a run to compare it with the last run")

    # Pin run 1: it is compared with run 4, metric by metric and setting by setting. Its Pin
    # and Restore buttons are in view without scrolling the wide table sideways.
    pin = view.locator('button[title="compare run 1 with the last run"]')
    restore = view.locator('button[title^="put run 1\'s configs"]')
    for button in (pin, restore):
        assert button.evaluate(IN_VIEW_JS), "scroll the run table sideways to reach it"
    pin.click()
    sync_api.expect(pin).to_have_text("pinned")
    sync_api.expect(comparison).to_contain_text("run 1 (pinned) against run 4 (last)")
    pinned, last = runs[0]["metrics"][METRIC], runs[-1]["metrics"][METRIC]
    row = comparison.locator("tr").filter(
        has=page.locator("td", has_text=re.compile(rf"^{re.escape(METRIC)}$"))
    )
    assert cell_text(row) == [
        METRIC,
        f"{pinned:.6g}",
        f"{last:.6g}",
        f"{last - pinned:+.4g}",
        f"{(last - pinned) / abs(pinned):+.2%}",
    ]
    sync_api.expect(comparison.locator(".pp-setup-diff li")).to_have_text(CHANGES[:-1])
    # The metric picked is plotted over the runs: another picture than the first metric's
    # (read once the kernel has answered the pin, so the plot shown is the pinned one).
    plot = view.locator(".pp-plot-card img")
    sync_api.expect(plot).to_be_visible()
    picked = "print(app.history.pinned, app.history.metric_picker.value)"
    assert kernel_print(page, picked).split()[0] == "1"
    first_plot = plot.get_attribute("src")
    view.locator(".widget-dropdown select").select_option(label=METRIC)
    wait_for_kernel(page, picked, f"1 {METRIC}")  # the page sends the choice when it may
    sync_api.expect(plot).not_to_have_attribute("src", first_plot or "")

    # Each figure of the sinks: run 1's kept figure beside run 4's, both drawn.
    figures = view.locator(".pp-history-figures")
    sync_api.expect(figures.locator(".pp-figure-pair-head")).to_have_text(FIGURES)
    for pair in figures.locator(".pp-figure-pair").all():
        sync_api.expect(pair.locator("figcaption")).to_have_text(["run 1 (pinned)", "run 4 (last)"])
        images = pair.locator("img")
        sync_api.expect(images).to_have_count(2)
        for image in images.all():
            sync_api.expect(image).to_be_visible()
            assert image.evaluate("img => img.complete && img.naturalWidth > 0")
        first, second = images.evaluate_all("imgs => imgs.map(img => img.src)")
        assert first.startswith("data:image/png;base64,") and first != second
        left, right = (image.bounding_box() for image in images.all())
        assert left and right and left["x"] < right["x"]  # side by side
        assert left["y"] == pytest.approx(right["y"], abs=1)

    # The tab stays inside the app; in a narrow window the run table scrolls in its own box.
    assert_no_overflow(app)
    for theme in THEMES:
        set_theme(page, theme)
        slug = theme.split(" ", 1)[1].lower()
        shoot(page, view, shots / f"{ui}-history-pinned-{slug}.png")
    set_theme(page, THEMES[0])
    width = (page.viewport_size or {"width": 1400})["width"]
    page.set_viewport_size({"width": NARROW_PX, "height": 1050})
    try:
        page.wait_for_timeout(300)  # the layout follows the window
        narrow = assert_no_overflow(app)
        assert narrow["table"] > 0, narrow  # the run table is wider than the window: it scrolls
        shoot(page, view, shots / f"{ui}-history-narrow.png")
    finally:
        page.set_viewport_size({"width": width, "height": 1050})

    # Restore run 1: every config goes back, and the next run loads every node from the cache.
    restore.click()
    sync_api.expect(view.locator(".pp-history-message")).to_have_text(
        "restored run 1's configs and policy: the next run loads every node from the cache"
    )
    run_button.click()
    wait_for_summary(page, ran=0, hit=len(NODES))
    wait_for_statuses(page, dict.fromkeys(NODES, "hit"))
    sync_api.expect(view.locator(".pp-run-number")).to_have_text(["5", "4", "3", "2", "1"])
    sync_api.expect(view.locator(".pp-run-changes").first).to_contain_text(
        "pulse.fwhm_fs: 80.0 → 100.0"
    )
    sync_api.expect(comparison).to_contain_text("run 1 (pinned) against run 5 (last)")
    sync_api.expect(comparison).to_contain_text("same configs and policy")
    latest = kernel_runs(page)[-1]
    assert latest["ran"] == [] and sorted(latest["hits"]) == sorted(NODES)
    assert latest["metrics"] == runs[0]["metrics"]
    shoot(page, view, shots / f"{ui}-history-restored.png")
    assert not app_errors(js_errors, ui), js_errors
