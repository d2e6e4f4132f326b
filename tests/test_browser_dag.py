"""The DAG view of a 30-node sweep in a real browser, in JupyterLab 4 and Notebook 7, in the
light, dark and high-contrast themes.

``tests/browser/sweep_dag.ipynb`` shows a PipelineApp over ``grid -> pulse -> glass ->
compressor -> {fit, duration}`` with the glass length swept over seven values. The test checks
what a physicist sees: four folded groups of seven variants, readable labels (every text's
computed font size times the zoom is at least 10 px), nothing cut off (every box inside the
scroll box's scroll area, the box inside the app), a folded group coloured by its worst
variant, a group unfolded by a click and folded again, zoom by buttons, Ctrl + wheel and
pinches, the SVG download, and legible colours: legend and node text (on every status's fill)
at a contrast ratio of 4.5 or more, computed from the page's computed colours, the selection
outline at 3 or more. The server, browser and notebook helpers are ``tests/test_browser.py``'s;
screenshots go to a new directory under the system's temporary one (their paths are printed).
"""

from __future__ import annotations

import re
import tempfile
import xml.etree.ElementTree as ET
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
    open_notebook,
    run_all_cells,
    sync_api,
)

# the harness's fixtures, for this module: its own server, browser, page and error log
lab, browser, page, js_errors = harness.lab, harness.browser, harness.page, harness.js_errors

NOTEBOOK = Path(__file__).parent / "browser" / "sweep_dag.ipynb"
GROUPS = {"glass", "compressor", "fit", "duration"}
VARIANTS = 7
EDITED = "glass__length_m-0.005"
PX_PER_UNIT = 4 / 3  # the SVG's user units are points
THEMES = ("JupyterLab Light", "JupyterLab Dark", "JupyterLab Dark High Contrast")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed: apt-get install chromium"),
]


@pytest.fixture(scope="module")
def shots() -> Path:
    """A fresh directory under the system's temporary one, kept after the session (pytest's
    own are pruned by later sessions) so the pictures can be looked at."""
    return Path(tempfile.mkdtemp(prefix="pp-dag-screenshots-"))


# --- measuring the page -------------------------------------------------------------------------

# Sizes and boxes of the DAG view ``view``: the zoom (screen px per SVG unit), each text's
# computed font size on screen, and what sticks out: a box, edge or legend item outside the
# scroll box's scroll area or the SVG, a node's text outside its front card, the scroll box
# outside the app or the app outside its output area.
GEOMETRY_JS = """view => {
    const box = view.querySelector('.pp-dag-box');
    const svg = box.querySelector('svg.pp-dag');
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    const texts = [...svg.querySelectorAll('text')].map(t => ({
        text: t.textContent, px: parseFloat(getComputedStyle(t).fontSize) * scale}));
    const frame = box.getBoundingClientRect();
    const left = frame.left + box.clientLeft - box.scrollLeft;
    const top = frame.top + box.clientTop - box.scrollTop;
    const area = {left, top, right: left + box.scrollWidth, bottom: top + box.scrollHeight};
    const picture = svg.getBoundingClientRect();
    const inside = (r, a) => r.left >= a.left - 0.5 && r.top >= a.top - 0.5
        && r.right <= a.right + 0.5 && r.bottom <= a.bottom + 0.5;
    const name = el => el.dataset.node || el.dataset.group || el.getAttribute('class');
    const out = [];
    for (const el of svg.querySelectorAll('g.pp-node, g.pp-group, g.pp-edge, g.pp-legend-item')) {
        const r = el.getBoundingClientRect();
        if (!inside(r, area)) out.push(`${name(el)} outside the scroll area`);
        if (!inside(r, picture)) out.push(`${name(el)} outside the SVG`);
    }
    for (const g of svg.querySelectorAll('g.pp-node, g.pp-group')) {
        const card = g.querySelector(':scope > rect:not(.pp-card)').getBoundingClientRect();
        for (const t of g.querySelectorAll('text')) {
            if (!inside(t.getBoundingClientRect(), card)) out.push(`${t.textContent} overflows`);
        }
    }
    const app = view.closest('.pp-pipeline-app').getBoundingClientRect();
    const output = view.closest('.jp-OutputArea-output').getBoundingClientRect();
    if (!inside(frame, app)) out.push('the scroll box sticks out of the app');
    if (!inside(app, output)) out.push('the app sticks out of its output area');
    return {scale, texts, out, scrolls: box.scrollWidth > box.clientWidth,
            boxWidth: box.clientWidth, maxHeight: parseFloat(getComputedStyle(box).maxHeight),
            width: picture.width, height: picture.height};
}"""

# Contrast ratios (WCAG) from computed colours, each composited as the page paints it: the
# backgrounds of the view's ancestors, the SVG's background, a node's front card, then the
# text or stroke (on a canvas, which reads every CSS colour syntax, color-mix results too).
# Legend text on the background, node text on its card, node text on each status's fill (the
# legend's swatches), the toolbar's buttons, and the selection outline on the background.
CONTRAST_JS = """view => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 1;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    const paint = colours => {
        ctx.clearRect(0, 0, 1, 1);
        for (const colour of ['#fff', ...colours]) {
            ctx.fillStyle = '#000';
            ctx.fillStyle = colour;
            ctx.fillRect(0, 0, 1, 1);
        }
        return [...ctx.getImageData(0, 0, 1, 1).data].slice(0, 3);
    };
    const luminance = rgb => {
        const [r, g, b] = rgb.map(v => v / 255)
            .map(c => c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (fg, bg) => {
        const [a, b] = [luminance(paint(fg)), luminance(paint(bg))].sort((x, y) => y - x);
        return (a + 0.05) / (b + 0.05);
    };
    const backdrop = el => {
        const colours = [];
        for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
            const colour = getComputedStyle(node).backgroundColor;
            if (colour && colour !== 'rgba(0, 0, 0, 0)' && colour !== 'transparent') {
                colours.unshift(colour);
            }
        }
        return colours;
    };
    const svg = view.querySelector('svg.pp-dag');
    const page = [...backdrop(svg), getComputedStyle(svg.querySelector('.pp-bg')).fill];
    const out = {legend: [], nodes: [], statuses: [], outline: [], buttons: []};
    for (const t of svg.querySelectorAll('.pp-legend text')) {
        out.legend.push([t.textContent, ratio([...page, getComputedStyle(t).fill], page)]);
    }
    for (const g of svg.querySelectorAll('g.pp-node, g.pp-group')) {
        const card = g.querySelector(':scope > rect:not(.pp-card)');
        const under = [...page, getComputedStyle(card).fill];
        for (const t of g.querySelectorAll('text')) {
            out.nodes.push([`${t.textContent} (${g.getAttribute('class')})`,
                            ratio([...under, getComputedStyle(t).fill], under)]);
        }
        if (g.classList.contains('pp-selected')) {
            const stroke = getComputedStyle(card).stroke;
            out.outline.push([g.dataset.node, ratio([...page, stroke], page)]);
        }
    }
    // every status's fill, as the legend's swatches show it, under a node's text colour
    const ink = getComputedStyle(svg.querySelector('g.pp-node text')).fill;
    for (const item of svg.querySelectorAll('.pp-legend-item[class*="status-"]')) {
        const under = [...page, getComputedStyle(item.querySelector('rect')).fill];
        out.statuses.push([item.textContent, ratio([...under, ink], under)]);
    }
    for (const b of view.querySelectorAll('.pp-dag-toolbar button')) {
        const under = backdrop(b);
        out.buttons.push([b.textContent, ratio([...under, getComputedStyle(b).color], under)]);
    }
    return out;
}"""


# Touch and Safari pinches, as the browser would send them (Playwright's Chromium sends neither).
PINCH_JS = """box => {
    const {left, top} = box.getBoundingClientRect();
    const touch = (type, id, x) => box.dispatchEvent(new PointerEvent(type, {
        pointerId: id, pointerType: 'touch', clientX: left + x, clientY: top + 50,
        bubbles: true, cancelable: true}));
    touch('pointerdown', 11, 100); touch('pointerdown', 12, 150);
    touch('pointermove', 11, 75); touch('pointermove', 12, 175);
    touch('pointerup', 11, 75); touch('pointerup', 12, 175);
}"""
GESTURE_JS = """box => {
    const {left, top} = box.getBoundingClientRect();
    const gesture = (type, scale) => box.dispatchEvent(Object.assign(
        new Event(type, {bubbles: true, cancelable: true}),
        {scale, clientX: left + 100, clientY: top + 50}));
    gesture('gesturestart', 1); gesture('gesturechange', 0.5); gesture('gestureend', 0.5);
}"""


def dag_view(page: sync_api.Page) -> sync_api.Locator:
    return page.locator(".pp-pipeline-app .pp-dag-view")


def geometry(page: sync_api.Page) -> dict:
    return dag_view(page).evaluate(GEOMETRY_JS)


def assert_readable_and_whole(page: sync_api.Page) -> dict:
    """Every text at 10 px or more on screen, nothing cut off or sticking out."""
    measured = geometry(page)
    small = [(t["text"], round(t["px"], 2)) for t in measured["texts"] if t["px"] < 10]
    assert measured["texts"] and not small, f"texts under 10 px: {small}"
    assert not measured["out"], measured["out"]
    return measured


def assert_legible(page: sync_api.Page, theme: str) -> None:
    ratios = dag_view(page).evaluate(CONTRAST_JS)
    assert len(ratios["legend"]) == 10 and len(ratios["statuses"]) == 9, ratios
    kinds = {"legend": 4.5, "nodes": 4.5, "statuses": 4.5, "buttons": 4.5, "outline": 3.0}
    for kind, least in kinds.items():
        poor = [(what, round(r, 2)) for what, r in ratios[kind] if r < least]
        assert not poor, f"{theme}: {kind} contrast under {least}: {poor}"


def set_theme(page: sync_api.Page, theme: str) -> None:
    """Switch the front end's theme by its command, as Settings > Theme does."""
    page.evaluate(
        "theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme
    )
    page.wait_for_function(
        "theme => document.body.dataset.jpThemeName === theme", arg=theme, timeout=UI_TIMEOUT_MS
    )
    page.wait_for_timeout(300)  # the theme's stylesheet replaces the old one after the switch


def run_in_kernel(page: sync_api.Page, code: str) -> None:
    """Run ``code`` in the notebook's kernel, as if typed into a new cell."""
    page.evaluate(
        """async code => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            const reply = await kernel.requestExecute({code, store_history: false}).done;
            if (reply.content.status !== 'ok') {
                throw new Error(`${reply.content.ename}: ${reply.content.evalue}`);
            }
        }""",
        code,
    )


def wait_for_classes(page: sync_api.Page, expected: dict[str, str]) -> None:
    """Wait until each node or folded group (by id) shows its expected ``status-*`` class."""
    page.wait_for_function(
        """expected => Object.entries(expected).every(([id, status]) => {
            const g = [...document.querySelectorAll('svg.pp-dag g.pp-node, svg.pp-dag g.pp-group')]
                .find(g => (g.dataset.node || g.dataset.group) === id);
            return g && g.classList.contains('status-' + status);
        })""",
        arg=expected,
        timeout=RUN_TIMEOUT_MS,
    )


def zoom(page: sync_api.Page) -> float:
    return geometry(page)["scale"] / PX_PER_UNIT


def screenshot(element: sync_api.Locator | sync_api.Page, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    element.screenshot(path=str(path))
    print(f"screenshot: {path}")


@pytest.fixture
def notebook_page(lab: LabServer, page: sync_api.Page, ui: str) -> Iterator[sync_api.Page]:
    """The fixture notebook opened and run, in the light theme (restored afterwards: the
    server's settings outlive the test)."""
    open_notebook(page, lab, f"browser/{NOTEBOOK.name}", ui)
    set_theme(page, THEMES[0])
    run_all_cells(page)
    try:
        yield page
    finally:
        set_theme(page, THEMES[0])


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ui", UIS)
def test_a_30_node_sweep_dag_is_folded_readable_and_legible_in_every_theme(
    notebook_page: sync_api.Page,
    js_errors: list[str],
    shots: Path,
    ui: str,
) -> None:
    page = notebook_page
    view = dag_view(page)
    sync_api.expect(view.locator("svg.pp-dag")).to_be_visible(timeout=UI_TIMEOUT_MS)

    # Folded: two plain nodes and four stacked groups of seven variants each.
    nodes = view.locator("g.pp-node").evaluate_all("gs => gs.map(g => g.dataset.node)")
    assert sorted(nodes) == ["grid", "pulse"]
    groups = view.locator("g.pp-group").evaluate_all(
        "gs => gs.map(g => [g.dataset.group, g.dataset.count,"
        " g.querySelector('.pp-id').textContent])"
    )
    assert sorted(groups) == sorted([g, str(VARIANTS), f"{g} \u00d7{VARIANTS}"] for g in GROUPS)
    assert view.locator("g.pp-edge").count() == 5

    # Run: every variant runs, and every group shows it.
    page.locator(".pp-pipeline-app .pp-run-button").click()
    sync_api.expect(page.locator(".pp-run-controls .pp-status-line")).to_have_text(
        re.compile(r"^ran 30, hit 0, "), timeout=RUN_TIMEOUT_MS
    )
    wait_for_classes(page, dict.fromkeys(["grid", "pulse", *GROUPS], "ran"))
    measured = assert_readable_and_whole(page)
    assert abs(measured["scale"] - PX_PER_UNIT) < 1e-3  # the default zoom: 100%

    # One variant edited: its group and every group downstream show the worst, stale.
    run_in_kernel(page, f"app.session.update({EDITED!r}, beta2_fs2_per_mm=40.0)")
    wait_for_classes(page, {"grid": "ran", "pulse": "ran", **dict.fromkeys(GROUPS, "stale")})
    title = view.locator('g.pp-group[data-group="glass"] > title').text_content() or ""
    assert title.startswith(f"glass \u00d7{VARIANTS} (sweep variants)\nstatus: stale\n"), title
    assert "1 stale, 6 ran" in title
    assert "why: config field beta2_fs2_per_mm changed (1 of 7)" in title
    assert_legible(page, THEMES[0])
    screenshot(view, shots, f"{ui}-light-folded")
    screenshot(page, shots, f"{ui}-light-page")

    # A click unfolds glass: seven variant boxes, the picture now scrolls in its box.
    view.locator('g.pp-group[data-group="glass"]').click()
    variants = view.locator('g.pp-node[data-node^="glass__"]')
    sync_api.expect(variants).to_have_count(VARIANTS)
    fold_button = view.locator(".pp-fold")
    sync_api.expect(fold_button).to_have_text(f"fold glass \u00d7{VARIANTS}")
    edited = view.locator(f'g.pp-node[data-node="{EDITED}"]')
    assert "status-stale" in (edited.get_attribute("class") or "")
    assert "why: config field beta2_fs2_per_mm changed" in (
        edited.locator("title").text_content() or ""
    )
    measured = assert_readable_and_whole(page)
    assert measured["scrolls"], measured
    edited.click()  # selected: its editor opens beside the DAG
    sync_api.expect(view.locator("g.pp-node.pp-selected")).to_have_count(1)
    sync_api.expect(page.locator(".pp-config-editor")).to_contain_text(EDITED)
    assert_legible(page, THEMES[0])
    screenshot(view, shots, f"{ui}-light-unfolded")

    # Zoom: buttons, Ctrl + wheel over the picture, pinches, fit, back to 100%.
    view.locator(".pp-zoom-in").click()
    assert zoom(page) == pytest.approx(1.25, rel=1e-3)
    view.locator(".pp-zoom-out").click()
    assert zoom(page) == pytest.approx(1.0, rel=1e-3)
    view.locator(".pp-dag-box").hover()
    page.keyboard.down("Control")
    page.mouse.wheel(0, -200)
    page.keyboard.up("Control")
    page.wait_for_function(
        "() => parseFloat(document.querySelector('.pp-pipeline-app .pp-dag-box').dataset.zoom) > 1"
    )
    view.locator(".pp-zoom-reset").click()
    view.locator(".pp-dag-box").evaluate(PINCH_JS)  # two fingers twice as far apart
    assert zoom(page) == pytest.approx(2.0, rel=1e-3)
    view.locator(".pp-dag-box").evaluate(GESTURE_JS)  # Safari's trackpad pinch, to half
    assert zoom(page) == pytest.approx(1.0, rel=1e-3)
    view.locator(".pp-zoom-fit").click()
    fitted = geometry(page)
    assert fitted["width"] <= fitted["boxWidth"] and fitted["height"] <= fitted["maxHeight"]
    assert not fitted["scrolls"] and not fitted["out"], fitted
    view.locator(".pp-zoom-reset").click()
    assert zoom(page) == pytest.approx(1.0, rel=1e-3)

    # Download: the picture as an SVG file, with what the page shows.
    with page.expect_download() as download:
        view.locator(".pp-download").click()
    assert download.value.suggested_filename == "pipeline-dag.svg"
    text = Path(download.value.path()).read_text()
    root = ET.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert f'data-node="{EDITED}"' in text and 'data-group="compressor"' in text
    assert "pp-selected" not in text

    # Dark and high contrast: still legible, the selection still outlined.
    for theme in THEMES[1:]:
        set_theme(page, theme)
        assert_legible(page, theme)
        slug = theme.split(" ", 1)[1].lower().replace(" ", "-")
        screenshot(view, shots, f"{ui}-{slug}-unfolded")

    # The toolbar folds glass again.
    fold_button.click()
    sync_api.expect(variants).to_have_count(0)
    sync_api.expect(view.locator('g.pp-group[data-group="glass"]')).to_have_count(1)
    sync_api.expect(fold_button).to_have_count(0)
    assert_readable_and_whole(page)
    screenshot(view, shots, f"{ui}-high-contrast-folded")
    assert not app_errors(js_errors, ui), js_errors
