"""The drawing process beside the kernel: the artifact view hands it the second half of the
plots a run needs while the kernel draws the first, and shows what it drew only when that is
what the kernel would have drawn (same code, same values, same matplotlib settings); in every
other case (an artifact it cannot take, a failure, a dead or closed process, one core) the
kernel draws the artifact itself. The plots here say which process drew them."""

from __future__ import annotations

import base64
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

import cloudpickle
import matplotlib
import matplotlib.style
from matplotlib.figure import Figure
from PIL import Image

from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult
from phys_pipeline.widgets import ArtifactView, _drawing
from phys_pipeline.widgets._drawing import PNG_MAGIC, DrawingProcess, draw, usable_cores

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(usable_cores() < 2, reason="the drawing process needs a second core"),
]

# this module's functions travel by value, as a notebook's do: the drawing process imports
# no module of the user's (see test_a_plot_from_a_module_of_the_users_is_drawn_here)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

START = SimpleState(None)
UNITS = "fs"  # read by the plots when drawn: a notebook may change it after the process imports it


def picture(text: str) -> bytes:
    """A 'PNG' that says what it shows (the view shows anything starting with the PNG magic)."""
    return PNG_MAGIC + text.encode()


def labelled(label: str) -> bytes:
    """What a probe's plot shows: its label, the units, and the process drawing it."""
    return picture(f"{label} in {UNITS}, drawn by {os.getpid()}")


class ProbeCfg(StageConfig):
    label: str = "a"


class Probe(PipelineStage[SimpleState, ProbeCfg]):
    """A lazy plot (a closure, as stages return) that says which process drew it."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        label = self.cfg.label
        return StageResult(SimpleState(label), artifacts={"plot": lambda: labelled(label)})


class Broken(PipelineStage[SimpleState, StageConfig]):
    """A lazy plot that fails when drawn."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        def plot() -> bytes:
            raise ValueError("no spectrum to plot")

        return StageResult(state, artifacts={"plot": plot})


def probes(second: PipelineStage | None = None) -> list[NodeSpec]:
    """Two watched probes (the first drawn in the kernel, the second handed to the process)
    and the selected node, which has no plot."""
    return [
        NodeSpec("first", stage=Probe(ProbeCfg(label="a"))),
        NodeSpec("second", stage=second or Probe(ProbeCfg(label="b"))),
        NodeSpec("selected", stage=Probe(ProbeCfg(label="c"))),
    ]


def view_of(live: LiveSession, process: DrawingProcess | None) -> ArtifactView:
    return ArtifactView(live, "selected", watched=["first", "second"], drawing_process=process)


def shown(view: ArtifactView, node_id: str) -> list[bytes]:
    outputs = view.panels[node_id].output.outputs
    return [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o["data"]]


def shown_text(view: ArtifactView, node_id: str) -> str:
    return " ".join(o["data"]["text/plain"] for o in view.panels[node_id].output.outputs)


def kept(live: LiveSession, node_id: str) -> dict[str, tuple[str, bytes]] | None:
    """The figures the cache keeps for the node's current entry."""
    return live.executor.cache.figures(live.current_plan.nodes[node_id].key)


def started() -> DrawingProcess:
    process = DrawingProcess()
    process.start()
    assert process.wait_ready(120), "the drawing process did not start"
    return process


@pytest.fixture(scope="module")
def drawing() -> Iterator[DrawingProcess]:
    process = started()
    yield process
    process.close()


def test_the_second_watched_plot_is_drawn_in_the_process_and_kept_like_the_first(
    drawing: DrawingProcess,
) -> None:
    live = LiveSession(probes(), START)
    view = view_of(live, drawing)
    live.run()
    assert shown(view, "first") == [picture(f"a in fs, drawn by {os.getpid()}")]
    assert shown(view, "second") == [picture(f"b in fs, drawn by {drawing.pid}")]
    assert kept(live, "second") == {"plot": ("image/png", shown(view, "second")[0])}


def test_without_the_process_the_kernel_draws_both() -> None:
    live = LiveSession(probes(), START)
    view = view_of(live, None)
    live.run()
    assert shown(view, "second") == [picture(f"b in fs, drawn by {os.getpid()}")]


def constrained_plot() -> Figure:
    """A pulse with labels and a legend, laid out by constrained layout, in the current style."""
    t = np.linspace(-300.0, 300.0, 601)
    figure = Figure(figsize=(4, 3), layout="constrained")
    axes = figure.subplots()
    axes.plot(t, np.exp(-((t / 100.0) ** 2)), label="pulse")
    axes.plot(t, np.exp(-((t / 60.0) ** 2)), "--", label="transform limit")
    axes.set_xlabel("time (fs)")
    axes.set_ylabel("intensity")
    axes.legend(loc="upper right")
    return figure


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_a_figure_drawn_in_the_process_has_the_pixels_the_kernel_draws_in_its_style(
    drawing: DrawingProcess,
) -> None:
    with matplotlib.style.context("ggplot"), matplotlib.rc_context({"font.size": 13}):
        with drawing.batch([constrained_plot]) as batch:
            beside = batch.drawn(constrained_plot)
        here = draw(constrained_plot())
    plain = draw(constrained_plot())
    assert beside is not None and beside.mime == "image/png"
    assert np.array_equal(pixels(beside.data), pixels(here.data))
    assert not np.array_equal(pixels(beside.data), pixels(plain.data))  # the style mattered


class CountedPlot:
    """A callable object counting its calls: a copy of it in the process would count there."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return labelled("counted")


def holding_a_lock() -> Any:
    lock = threading.Lock()  # does not pickle

    def plot() -> bytes:
        with lock:
            return labelled("locked")

    return plot


def holding_an_array(size: int) -> Any:
    data = np.zeros(size)
    return lambda: labelled(f"{data.size} zeros")


@pytest.mark.parametrize(
    "artifact",
    [CountedPlot(), holding_a_lock(), holding_an_array(2 * 2**20)],  # 16 MiB > 8 MiB
    ids=["a callable object", "a closure that does not pickle", "past the size cap"],
)
def test_an_artifact_the_process_cannot_take_is_left_to_the_kernel(
    drawing: DrawingProcess, artifact: Any
) -> None:
    with drawing.batch([artifact]) as batch:
        assert len(batch) == 0 and batch.drawn(artifact) is None


def test_a_plot_reading_a_global_the_notebook_changed_is_drawn_with_the_new_value(
    drawing: DrawingProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plot's code travels by value with the globals it reads: the notebook's "ps"."""
    live = LiveSession(probes(), START)
    view = view_of(live, drawing)
    monkeypatch.setattr(sys.modules[__name__], "UNITS", "ps")
    live.run()
    assert shown(view, "second") == [picture(f"b in ps, drawn by {drawing.pid}")]


USER_MODULE = """
import os
with open(os.environ["PP_IMPORTED_BY"], "a") as log:  # an import that acts: once, here
    log.write(f"{os.getpid()}\\n")

def plot():
    return b"\\x89PNG\\r\\n\\x1a\\n" + f"drawn by {os.getpid()}".encode()
"""


class UserPlot(PipelineStage[SimpleState, StageConfig]):
    """A lazy plot from a module of the user's (on disk, not installed)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        import drawing_user_module

        return StageResult(state, artifacts={"plot": drawing_user_module.plot})


def test_a_plot_from_a_module_of_the_users_is_drawn_here_and_the_module_imported_once(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process never imports a user's module, which may act on import (open an
    instrument, write a file): the kernel draws that plot."""
    (tmp_path / "drawing_user_module.py").write_text(USER_MODULE)
    log = tmp_path / "imported_by"
    monkeypatch.setenv("PP_IMPORTED_BY", str(log))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "drawing_user_module", raising=False)
    process = started()  # with the module's folder on its path
    try:
        live = LiveSession(probes(UserPlot(StageConfig(name="user"))), START)
        view = view_of(live, process)
        live.run()
        assert shown(view, "second") == [picture(f"drawn by {os.getpid()}")]
        assert process.ready  # alive: it refused the module, and the kernel drew the plot
    finally:
        process.close()
    assert log.read_text().split() == [str(os.getpid())]


def test_a_plot_that_fails_in_the_process_shows_the_kernels_failure(
    drawing: DrawingProcess,
) -> None:
    live = LiveSession(probes(Broken(StageConfig())), START)
    view = view_of(live, drawing)
    live.run()
    assert "artifact failed: ValueError: no spectrum to plot" in shown_text(view, "second")
    assert kept(live, "second") is None


def test_a_plot_drawn_in_the_process_for_a_stale_node_is_shown_stale_and_not_kept(
    drawing: DrawingProcess,
) -> None:
    """Both probes first shown after an edit made them stale: drawn from the old result
    (one in the process), badged stale and not kept for the node's entry."""
    live = LiveSession(probes(), START)
    view = ArtifactView(live, "selected", watched=[], drawing_process=drawing)
    live.run()
    live.update("first", label="x")
    live.update("second", label="y")
    view.watched = ["first", "second"]
    assert shown(view, "second") == [picture(f"b in fs, drawn by {drawing.pid}")]
    assert "stale" in view.panels["second"].title.value
    assert "pp-stale" in view.panels["second"].output.outputs[1]["data"]["text/html"]
    live.update("second", label="b")  # back to the setup the result was computed for
    assert kept(live, "second") is None


def test_one_batch_at_a_time_another_views_plots_are_drawn_in_the_kernel(
    drawing: DrawingProcess,
) -> None:
    first, second = holding_an_array(3), holding_an_array(4)
    with drawing.batch([first]) as taken, drawing.batch([second]) as refused:
        assert len(taken) == 1 and len(refused) == 0
        assert refused.drawn(second) is None
        assert taken.drawn(first) == draw(picture(f"3 zeros in fs, drawn by {drawing.pid}"))


def test_a_dead_process_leaves_the_plots_to_the_kernel_and_another_is_started() -> None:
    process = started()
    try:
        dead = process.pid
        os.kill(dead, signal.SIGKILL)
        live = LiveSession(probes(), START)
        view = view_of(live, process)
        live.run()
        assert shown(view, "second") == [picture(f"b in fs, drawn by {os.getpid()}")]
        assert process.wait_ready(120) and process.pid not in (None, dead)
        live.update("first", label="e")
        live.update("second", label="d")  # two plots to draw again: one for the process
        live.run()
        assert shown(view, "second") == [picture(f"d in fs, drawn by {process.pid}")]
    finally:
        process.close()


def test_a_closed_process_has_ended_and_draws_nothing_more() -> None:
    process = started()
    pid = process.pid
    process.close()
    assert process.pid is None and not process.ready
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped
    live = LiveSession(probes(), START)
    view = view_of(live, process)
    live.run()
    assert shown(view, "second") == [picture(f"b in fs, drawn by {os.getpid()}")]
    assert process.pid is None  # not started again


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux: set the affinity")
def test_on_one_core_no_process_is_started() -> None:
    cores = os.sched_getaffinity(0)
    process = DrawingProcess()
    os.sched_setaffinity(0, {min(cores)})
    try:
        process.start()
    finally:
        os.sched_setaffinity(0, cores)
    assert process.pid is None
    process.close()


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no quota
        ({"cpu.max": "150000 100000\n"}, 1),  # 1.5 cores is not two
        ({"cpu.max": "400000 100000\n"}, 4),
        ({"quota": "-1\n", "period": "100000\n"}, None),  # cgroup v1, no quota
        ({"quota": "200000\n", "period": "100000\n"}, 2),
        ({}, None),  # no cgroup files
    ],
)
def test_a_containers_cpu_quota_bounds_the_usable_cores(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], cores: int | None
) -> None:
    """Binder limits a container's CPU by a cgroup quota, which the affinity does not show:
    a second process there would only take turns with the kernel."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(
        _drawing,
        "_CPU_LIMITS",
        ((tmp_path / "cpu.max",), (tmp_path / "quota", tmp_path / "period")),
    )
    assert _drawing._cpu_limit() == cores
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if cores is not None and affinity is not None:
        assert usable_cores() == max(1, min(affinity, cores))


class Metres(float):
    """A quantity type a notebook teaches matplotlib to convert (as pint's setup_matplotlib
    does): drawn without its converter, its magnitudes would be plotted as they are."""


def test_a_plot_is_drawn_here_once_the_notebook_extends_matplotlib(
    drawing: DrawingProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.units

    plot = holding_an_array(4)
    with drawing.batch([plot]) as batch:
        assert len(batch) == 1  # taken while the kernel's matplotlib is the process's
    monkeypatch.setitem(matplotlib.units.registry, Metres, matplotlib.units.ConversionInterface())
    with drawing.batch([plot]) as batch:
        assert len(batch) == 0 and batch.drawn(plot) is None
    monkeypatch.undo()
    colormap = matplotlib.colormaps["viridis"].reversed("notebook_cmap")
    matplotlib.colormaps.register(colormap)
    try:
        with drawing.batch([plot]) as batch:
            assert len(batch) == 0
    finally:
        matplotlib.colormaps.unregister("notebook_cmap")
