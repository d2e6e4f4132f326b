"""PipelineApp in a real browser: a Jupyter server in a subprocess, headless Chromium through
Playwright, in both front ends: JupyterLab (``/lab``) and Notebook 7 (``/notebooks``), which
is built from the same JupyterLab components, so the same selectors find the same things.

The notebook ``tests/browser/pipeline_app.ipynb`` displays a PipelineApp over the ultrafast-optics
demo DAG (grid -> pulse -> glass -> {fit, duration}); the test runs all its cells, then uses the
app as a physicist would: Run, type a value the model refuses, click a node, move a config
slider with the keyboard, Run again, then auto-run. It checks what the page shows: DAG node
groups and their status classes, the status line, and the plots in the artifact view.
Screenshots go to ``test-artifacts/browser/``, named after the front end
(``lab-01-after-run-all.png``, ``notebook-01-...``).

Needs Chromium (``apt-get install chromium``) and the ``playwright`` package (the test never
downloads a browser); skipped without them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
pytest.importorskip("jupyterlab", reason="needs jupyterlab (the jupyter extra)")
pytest.importorskip("phys_pipeline.widgets", reason="needs ipywidgets and anywidget")

from phys_pipeline.demo import build_nodes  # noqa: E402 - after the skips above

HERE = Path(__file__).parent
REPO = HERE.parent
NOTEBOOK = HERE / "browser" / "pipeline_app.ipynb"
TUTORIAL = REPO / "notebooks" / "03_interactive_exploration.ipynb"
SCREENSHOTS = REPO / "test-artifacts" / "browser"
NODE_IDS = [spec.id for spec in build_nodes()]  # grid, pulse, glass, fit, duration

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 60.0
UI_TIMEOUT_MS = 30_000  # kernel start, first widget render
RUN_TIMEOUT_MS = 20_000  # a DAG run of the demo takes well under a second

# JupyterLab user settings: no news or update checks (no network, no toast over the screenshots).
QUIET_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def notebook7_installed() -> bool:
    try:
        return int(importlib.metadata.version("notebook").split(".")[0]) >= 7
    except importlib.metadata.PackageNotFoundError:
        return False


CHROMIUM = chromium_binary()
UIS = [
    "lab",
    pytest.param(
        "notebook",
        marks=pytest.mark.skipif(
            not notebook7_installed(), reason="needs notebook>=7 (the jupyter extra)"
        ),
    ),
]
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed: apt-get install chromium"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _hermetic_env(home: Path) -> dict[str, str]:
    """Everything Jupyter, IPython and matplotlib write goes under ``home``."""
    env = dict(os.environ)
    for var, sub in {
        "HOME": "",
        "JUPYTER_CONFIG_DIR": "jupyter-config",
        "JUPYTER_DATA_DIR": "jupyter-data",
        "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "IPYTHONDIR": "ipython",
        "MPLCONFIGDIR": "matplotlib",
        "XDG_CACHE_HOME": "cache",
        "XDG_CONFIG_HOME": "config",
    }.items():
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env.pop("JUPYTER_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    for rel, settings in QUIET_SETTINGS.items():
        target = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(settings))
    return env


def _wait_for_status(server: LabServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/api/status", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"jupyter lab did not answer /api/status:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (server and kernels), SIGKILL what is left."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A token-less JupyterLab on a free loopback port, serving copies of tests/browser/ (as
    browser/) and notebooks/ (as notebooks/, when present)."""
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    skip = shutil.ignore_patterns("*.py", "__pycache__", ".ipynb_checkpoints", ".cache")
    shutil.copytree(NOTEBOOK.parent, root / "browser", ignore=skip)
    if TUTORIAL.parent.is_dir():
        shutil.copytree(TUTORIAL.parent, root / "notebooks", ignore=skip)
    env = _hermetic_env(base / "home")
    port = free_port()
    log = base / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.disable_check_xsrf=True",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to run commands
        "--JupyterNotebookApp.expose_app_in_browser=True",  # the same in Notebook 7
        "--LabApp.news_url=",
        "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers, CI images
        command.append("--allow-root")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_for_status(server, time.monotonic() + SERVER_START_S)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: sync_api.Browser) -> Iterator[sync_api.Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1050})
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def js_errors(page: sync_api.Page) -> list[str]:
    """Uncaught exceptions and console errors of the page (widget front ends log theirs there);
    failed resource loads are left out, they are the server's business."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))

    def on_console(message: sync_api.ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(f"console: {message.text}")

    page.on("console", on_console)
    return errors


# --- helpers: JupyterLab ----------------------------------------------------------------------


def screenshot(page: sync_api.Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def element_screenshot(page: sync_api.Page, element: sync_api.Locator, name: str) -> None:
    """The whole element (the notebook scrolls inside the page, so make the page tall enough)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size or {"width": 1400, "height": 1050}
    page.set_viewport_size({"width": viewport["width"], "height": 2400})
    try:
        element.scroll_into_view_if_needed()
        element.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    finally:
        page.set_viewport_size(viewport)


def wait_for_idle_kernel(page: sync_api.Page, timeout_ms: float) -> None:
    """Wait until the current notebook's kernel reports idle (none yet counts as not idle)."""
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status"
        " === 'idle'",
        timeout=timeout_ms,
    )


def open_notebook(page: sync_api.Page, lab: LabServer, path: str, ui: str = "lab") -> None:
    """Open ``path`` in the ``ui`` front end ("lab": JupyterLab in a fresh workspace of its
    own, no tabs restored from an earlier test; "notebook": Notebook 7's one-notebook page)
    and wait until its kernel is idle, with JupyterLab's file browser folded away. Should the
    page still ask which kernel to start, answer as a user would: the preselected one."""
    if ui == "lab":
        workspace = re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-")
        url = f"{lab.url}/lab/workspaces/{workspace}/tree/{path}?reset"
    else:
        url = f"{lab.url}/notebooks/{path}"
    page.goto(url, wait_until="commit")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=60_000)
    page.wait_for_function(
        """path => {
            const dialog = document.querySelector('.jp-Dialog');
            const panel = window.jupyterapp.shell.currentWidget;
            const ready = panel?.context?.path === path && panel.context.isReady
                && panel.sessionContext?.session?.kernel?.status === 'idle';
            return ready || dialog !== null;
        }""",
        arg=path,
        timeout=UI_TIMEOUT_MS,
    )
    dialog = page.locator(".jp-Dialog")
    if dialog.count():
        assert "Kernel" in dialog.inner_text(), f"unexpected dialog: {dialog.inner_text()}"
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        wait_for_idle_kernel(page, UI_TIMEOUT_MS)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=UI_TIMEOUT_MS)
    if ui == "lab":
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")


def run_all_cells(page: sync_api.Page, timeout_ms: float = UI_TIMEOUT_MS) -> None:
    """Run > Run All Cells (by its command id), wait for it to finish, fail on a traceback."""
    page.evaluate(
        """() => {
            // name the notebook: the command's default, the tracker's current notebook, can
            // still be unset right after the page opens (the command then does nothing)
            const panel = window.jupyterapp.shell.currentWidget;
            window.__ppRunAll = undefined;
            window.jupyterapp.commands
                .execute('notebook:run-all-cells', {widgetId: panel.id})
                .then(ok => { window.__ppRunAll = ok === true ? 'done' : `returned ${ok}`; },
                      err => { window.__ppRunAll = `error: ${err}`; });
        }"""
    )
    # The notebook model, not the DOM: JupyterLab 4 renders only the cells near the viewport.
    model_json = "() => window.jupyterapp.shell.currentWidget.model.toJSON()"
    try:
        page.wait_for_function("() => window.__ppRunAll !== undefined", timeout=timeout_ms)
        wait_for_idle_kernel(page, UI_TIMEOUT_MS)
    except sync_api.TimeoutError:
        cells = [c for c in page.evaluate(model_json)["cells"] if c["cell_type"] == "code"]
        done = [c for c in cells if c["execution_count"] is not None]
        last = json.dumps(done[-1]["outputs"])[:2000] if done else "(none)"
        screenshot(page, "run-all-unfinished")
        pytest.fail(
            f"run-all unfinished after {timeout_ms / 1000:.0f} s: {len(done)} of "
            f"{len(cells)} cells have run; outputs of the last:\n{last}"
        )
    notebook = page.evaluate(model_json)
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    for cell in code:
        for output in cell["outputs"]:
            if output["output_type"] == "error":
                trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(output.get("traceback", [])))
                pytest.fail(f"a notebook cell failed:\n{''.join(cell['source'])}\n{trace}")
    outcome = page.evaluate("() => window.__ppRunAll")
    assert outcome == "done", f"notebook:run-all-cells: {outcome}"
    unrun = ["".join(cell["source"])[:80] for cell in code if cell["execution_count"] is None]
    assert not unrun, f"cells left unrun: {unrun}"


# --- helpers: the app ---------------------------------------------------------------------------


def node_statuses(page: sync_api.Page) -> dict[str, str]:
    """data-node -> status from each DAG node group's ``status-*`` class."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('svg.pp-dag g.pp-node')]
            .map(g => [g.dataset.node,
                       ([...g.classList].find(c => c.startsWith('status-')) || '')
                       .slice('status-'.length)]))"""
    )


def wait_for_statuses(page: sync_api.Page, expected: dict[str, str]) -> None:
    """Wait until every DAG node shows its expected status class (``not-run``, ``ran``...)."""
    try:
        page.wait_for_function(
            """expected => Object.entries(expected).every(([id, status]) => {
                const g = document.querySelector(`svg.pp-dag g.pp-node[data-node="${id}"]`);
                return g && g.classList.contains('status-' + status);
            })""",
            arg=expected,
            timeout=RUN_TIMEOUT_MS,
        )
    except sync_api.TimeoutError:
        pytest.fail(f"DAG shows {node_statuses(page)}, expected {expected}")


def status_line(page: sync_api.Page) -> sync_api.Locator:
    return page.locator(".pp-run-controls .pp-status-line")


def wait_for_summary(page: sync_api.Page, ran: int, hit: int) -> str:
    """Wait for the status line to read ``ran <ran>, hit <hit>, <t> s``; returns its text."""
    pattern = re.compile(rf"^ran {ran}, hit {hit}, \d+\.\d\d s$")
    sync_api.expect(status_line(page)).to_have_text(pattern, timeout=RUN_TIMEOUT_MS)
    return status_line(page).inner_text().strip()


# Artifact caption (``node.key``) -> src of the <img> displayed under it.
PLOTS_JS = """() => {
    const srcs = {};
    let caption = null;
    for (const item of document.querySelectorAll('.pp-artifacts .jp-OutputArea-output')) {
        const img = item.querySelector('img');
        if (img) { if (caption) srcs[caption] = img.src; caption = null; }
        else caption = item.innerText.trim();
    }
    return srcs;
}"""


def plots(page: sync_api.Page) -> dict[str, str]:
    """The plots in the artifact view: caption (``node.key``) -> image src (a data: URL)."""
    return page.evaluate(PLOTS_JS)


def wait_for_new_plots(page: sync_api.Page, before: dict[str, str], keys: list[str]) -> dict:
    """Wait until every plot in ``keys`` is shown with a src different from ``before``."""
    try:
        page.wait_for_function(
            f"""([before, keys]) => {{
                const srcs = ({PLOTS_JS})();
                return keys.every(k => srcs[k] && srcs[k] !== before[k]);
            }}""",
            arg=[before, keys],
            timeout=RUN_TIMEOUT_MS,
        )
    except sync_api.TimeoutError:
        shown = {key: src[:60] for key, src in plots(page).items()}
        pytest.fail(f"plots {keys} did not change; shown: {shown}")
    return plots(page)


def click_node(page: sync_api.Page, node_id: str) -> None:
    page.locator(f'svg.pp-dag g.pp-node[data-node="{node_id}"]').click()


def field_row(page: sync_api.Page, field: str) -> sync_api.Locator:
    """The row of config field ``field`` in the open ConfigEditor: name, slider, value, unit."""
    return page.locator(".pp-config-editor .pp-field").filter(
        has=page.locator(".pp-field-name", has_text=re.compile(rf"^{re.escape(field)}$"))
    )


def value_box(page: sync_api.Page, field: str) -> sync_api.Locator:
    """The box beside the slider holding the field's exact value."""
    return field_row(page, field).locator(".pp-field-value input")


def nudge_slider(page: sync_api.Page, field: str, key: str = "ArrowRight") -> tuple[str, str]:
    """Focus the slider handle and press ``key`` once, as a keyboard user would; returns the
    value shown beside the slider before and after."""
    box = value_box(page, field)
    before = box.input_value()
    field_row(page, field).locator(".noUi-handle").focus()
    page.keyboard.press(key)
    sync_api.expect(box).not_to_have_value(before, timeout=RUN_TIMEOUT_MS)
    return before, box.input_value()


def type_slider_value(page: sync_api.Page, field: str, text: str) -> tuple[str, str]:
    """Type ``text`` into the box beside the slider and press Enter, as a user can; returns
    the value shown there before and after."""
    box = value_box(page, field)
    before = box.input_value()
    box.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    sync_api.expect(box).not_to_have_value(before, timeout=RUN_TIMEOUT_MS)
    return before, box.input_value()


# Why Notebook 7 gets no arrow key (checked with notebook 7.6.5, jupyterlab 4.6.6, ipywidgets
# 8.1.9, headless Chromium): it is not our widget. A stock ``ipywidgets.FloatSlider`` in a
# notebook that imports nothing of ours behaves the same: with its handle focused, a real
# ArrowRight keydown is already defaultPrevented in the document's capture phase and never
# reaches the handle. Notebook 7 starts its Lumino app without ``bubblingKeydown: true`` (which
# JupyterLab passes), so shortcuts are matched on the way down, and its command-mode binding
# ArrowRight -> notebook:move-cursor-heading-below-or-expand (selector
# ``.jp-Notebook.jp-mod-commandMode:not(.jp-mod-readWrite) :focus``) matches the focused
# handle. In JupyterLab noUiSlider's handle sees the key first. What works in Notebook 7: typing
# into the value box beside the slider (focus in an input sets jp-mod-readWrite, which turns
# those shortcuts off) and a synthetic keydown (keyCode 0 matches no binding). The cure belongs
# upstream (jupyter/notebook#7716; ``data-lm-suppress-shortcuts`` on the slider, which a stock
# ipywidget cannot be given from Python).
def move_slider(page: sync_api.Page, ui: str, field: str, text: str) -> tuple[str, str]:
    """Raise a slider: one arrow-key step in JupyterLab; in Notebook 7, which takes the arrow
    keys of a focused slider handle for its own shortcuts (see above), by typing ``text`` into
    the value box beside it instead."""
    return nudge_slider(page, field) if ui == "lab" else type_slider_value(page, field, text)


# Notebook 7.6 itself throws these while its page loads (before any cell runs); they are not
# the app's, which must add none of its own.
NOTEBOOK7_LOAD_ERRORS = frozenset(
    {
        "uncaught: Cannot read properties of undefined (reading 'schema')",
        "uncaught: Command 'filebrowser:open-path' not registered.",
    }
)


def app_errors(js_errors: list[str], ui: str) -> list[str]:
    return [e for e in js_errors if ui == "lab" or e not in NOTEBOOK7_LOAD_ERRORS]


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ui", UIS)
def test_pipeline_app_reruns_only_what_a_slider_edit_invalidates(
    lab: LabServer, page: sync_api.Page, js_errors: list[str], ui: str
) -> None:
    open_notebook(page, lab, f"browser/{NOTEBOOK.name}", ui)
    run_all_cells(page)

    # The app is displayed, its DAG shows every node, nothing has run yet.
    app = page.locator(".pp-pipeline-app")
    sync_api.expect(app).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.wait_for_selector("svg.pp-dag g.pp-node")
    shown = page.eval_on_selector_all("svg.pp-dag g.pp-node", "gs => gs.map(g => g.dataset.node)")
    assert sorted(shown) == sorted(NODE_IDS)
    labels = page.locator("svg.pp-dag g.pp-node text.pp-id").all_text_contents()
    assert sorted(labels) == sorted(NODE_IDS)
    wait_for_statuses(page, dict.fromkeys(NODE_IDS, "not-run"))
    assert page.locator("svg.pp-dag g.pp-edge").count() == 4
    screenshot(page, f"{ui}-01-after-run-all")

    # Run: every node runs, the plots of fit and duration appear.
    app.locator(".pp-run-button").click()
    wait_for_summary(page, ran=5, hit=0)
    wait_for_statuses(page, dict.fromkeys(NODE_IDS, "ran"))
    first_plots = wait_for_new_plots(page, {}, ["fit.phase", "duration.intensity"])
    screenshot(page, f"{ui}-02-after-first-run")

    # grid's window_fs (10 .. 1e6 fs) slides on a log scale beside a text box with its exact
    # value and its unit; an out-of-range value typed there is refused with pydantic's
    # message, not clamped, and the box shows the config's value again.
    click_node(page, "grid")
    editor = page.locator(".pp-config-editor")
    sync_api.expect(field_row(page, "window_fs").locator(".widget-hslider")).to_be_visible()
    sync_api.expect(field_row(page, "window_fs").locator(".pp-field-unit")).to_have_text("fs")
    text_box = value_box(page, "window_fs")
    sync_api.expect(text_box).to_have_value("4000.0")
    text_box.fill("5e7")
    text_box.press("Enter")
    sync_api.expect(editor.locator(".pp-field-error .pp-error")).to_contain_text(
        "less than or equal to 1000000"
    )
    sync_api.expect(text_box).to_have_value("4000.0")
    wait_for_statuses(page, dict.fromkeys(NODE_IDS, "ran"))  # nothing went stale

    # Select glass in the DAG: its config editor opens with a slider per bounded field.
    click_node(page, "glass")
    sync_api.expect(editor).to_contain_text("glass")
    sync_api.expect(editor).to_contain_text("DispersiveFibreCfg")
    sync_api.expect(field_row(page, "beta2_fs2_per_mm").locator(".widget-hslider")).to_be_visible()
    assert page.locator('svg.pp-dag g.pp-node[data-node="glass"].pp-selected').count() == 1

    # Move the GVD slider one step: glass and everything downstream goes stale, nothing runs.
    before, after = move_slider(page, ui, "beta2_fs2_per_mm", "40")
    assert float(after) > float(before)
    stale = {"grid": "ran", "pulse": "ran", "glass": "stale", "fit": "stale", "duration": "stale"}
    wait_for_statuses(page, stale)
    assert editor.locator(".pp-field-error .pp-error").count() == 0
    screenshot(page, f"{ui}-03-after-slider-move")

    # Run reruns only the stale three; upstream comes from the cache.
    app.locator(".pp-run-button").click()
    wait_for_summary(page, ran=3, hit=2)
    ran = {"grid": "hit", "pulse": "hit", "glass": "ran", "fit": "ran", "duration": "ran"}
    wait_for_statuses(page, ran)

    # Deselect glass: all nodes' plots are shown, and both downstream plots are new.
    click_node(page, "glass")
    sync_api.expect(editor).to_have_count(0)
    second_plots = wait_for_new_plots(page, first_plots, ["fit.phase", "duration.intensity"])
    assert set(second_plots) == set(first_plots)
    assert app.locator(".pp-run-errors .pp-errors").count() == 0
    screenshot(page, f"{ui}-04-after-rerun")

    # Auto-run: widening duration's plotted time span reruns that leaf alone, without Run.
    app.locator(".pp-auto-run input[type=checkbox]").check()
    click_node(page, "duration")
    sync_api.expect(editor).to_contain_text("PulseDurationCfg")
    before, after = move_slider(page, ui, "plot_span_fwhm", "5")
    assert float(after) > float(before)
    wait_for_summary(page, ran=1, hit=4)
    wait_for_statuses(page, {**dict.fromkeys(NODE_IDS, "hit"), "duration": "ran"})
    wait_for_new_plots(page, second_plots, ["duration.intensity"])
    assert list(plots(page)) == ["duration.intensity"]  # the selected node's plots only
    screenshot(page, f"{ui}-05-after-auto-run")

    element_screenshot(page, app, f"{ui}-06-app-element")
    assert not app_errors(js_errors, ui), js_errors


@pytest.mark.skipif(not TUTORIAL.exists(), reason=f"{TUTORIAL.name} not written yet")
def test_tutorial_notebook_shows_a_working_pipeline_app(
    lab: LabServer, page: sync_api.Page, js_errors: list[str]
) -> None:
    """The interactive-exploration tutorial renders its app in a real browser and Run works.
    (nbval checks the notebook's outputs; this checks that the widgets actually draw.)"""
    open_notebook(page, lab, f"notebooks/{TUTORIAL.name}")
    run_all_cells(page, timeout_ms=90_000)

    app = page.locator(".pp-pipeline-app").first
    sync_api.expect(app).to_be_visible(timeout=UI_TIMEOUT_MS)
    app.scroll_into_view_if_needed()
    groups = app.locator("svg.pp-dag g.pp-node")
    sync_api.expect(groups.first).to_be_attached()
    ids = groups.evaluate_all("gs => gs.map(g => g.dataset.node)")
    assert ids and all(ids) and len(set(ids)) == len(ids), ids
    assert all(app.locator("svg.pp-dag g.pp-node text.pp-id").all_text_contents())

    app.locator(".pp-run-button").click()
    sync_api.expect(app.locator(".pp-status-line")).to_have_text(
        re.compile(r"^ran \d+, hit \d+.*\d s$"), timeout=60_000
    )
    waiting = app.locator(
        "svg.pp-dag g.pp-node:is(.status-not-run, .status-stale, .status-running)"
    )
    sync_api.expect(waiting).to_have_count(0, timeout=RUN_TIMEOUT_MS)
    assert app.locator(".pp-run-errors .pp-errors").count() == 0
    element_screenshot(page, app, "lab-tutorial-03-app")
    assert not js_errors, js_errors
