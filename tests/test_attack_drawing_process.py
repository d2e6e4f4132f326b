"""Attacks on the drawing process beside the kernel (``phys_pipeline.widgets._drawing``): it
must only ever show the drawing the kernel itself would have made, for the current result,
and never leave the kernel waiting. Each attack gives the process an artifact whose drawing
there could differ from the kernel's (the kernel's state changed since the process started,
or between handing the batch over and the reply; the drawing changes what it reads; the
kernel interrupted midway), and checks that what is shown is the kernel's drawing: either
the process drew exactly that, or it left the artifact to the kernel."""

from __future__ import annotations

import base64
import datetime
import gc
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

import cloudpickle
import matplotlib
import matplotlib.dates
import matplotlib.style
import matplotlib.units
from matplotlib.figure import Figure
from PIL import Image

from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult
from phys_pipeline.widgets import ArtifactView
from phys_pipeline.widgets._drawing import PNG_MAGIC, DrawingProcess, Drawn, draw, usable_cores

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(usable_cores() < 2, reason="the drawing process needs a second core"),
]

# this module's functions travel by value, as a notebook's do
cloudpickle.register_pickle_by_value(sys.modules[__name__])

KERNEL = os.getpid()


def picture(text: str) -> bytes:
    """A 'PNG' that says what it shows (the view shows anything starting with the PNG magic)."""
    return PNG_MAGIC + text.encode()


def started() -> DrawingProcess:
    process = DrawingProcess()
    process.start()
    assert process.wait_ready(120), "the drawing process did not start"
    return process


@pytest.fixture(scope="module")
def old_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the notebook was in when the process started, with a spectrum of its own."""
    folder = tmp_path_factory.mktemp("old_run")
    (folder / "spectrum.txt").write_text("old spectrum")
    return folder


@pytest.fixture(scope="module")
def drawing(old_run: Path) -> Iterator[DrawingProcess]:
    """One process for the module, started in ``old_run`` with PP_RUN=old: the notebook moves
    on from there (another folder, another environment) while the process runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(old_run)
        patch.setenv("PP_RUN", "old")
        process = started()
    yield process
    process.close()


def drawn_as_the_view_does(process: DrawingProcess, artifact: Callable[[], Any]) -> Drawn:
    """The artifact's drawing as the artifact view gets it: from the process, or drawn here."""
    with process.batch([artifact]) as batch:
        return batch.drawn(artifact) or draw(artifact())


def pixels(drawn: Drawn) -> np.ndarray:
    assert drawn.mime == "image/png"
    return np.asarray(Image.open(io.BytesIO(drawn.data)))


# --- an interrupted kernel ----------------------------------------------------------------


def interrupting_the_kernel(then: str) -> Callable[[], bytes]:
    """A plot that, in the drawing process, presses Ctrl-C in the kernel once the kernel waits
    for it, then finishes ("finish") or never does ("hang")."""

    def plot() -> bytes:
        if os.getpid() != KERNEL:
            time.sleep(0.5)  # the kernel is waiting for the replies by now
            os.kill(os.getppid(), signal.SIGINT)
            while then == "hang":
                time.sleep(0.05)
            time.sleep(0.5)
        return picture("the interrupted plot")

    return plot


def labelled(label: str) -> Callable[[], bytes]:
    return lambda: picture(label)


def test_replies_of_an_interrupted_batch_never_answer_the_next_one() -> None:
    """Ctrl-C while the kernel takes the replies left: the process still draws them, and the
    next batch must not take them for its own (the spectrum showing the interrupted plot)."""
    process = started()
    try:
        interrupted, rest = interrupting_the_kernel("finish"), labelled("rest")
        with pytest.raises(KeyboardInterrupt), process.batch([interrupted, rest]):
            pass  # the kernel draws its half; the process's replies are taken at the end
        assert process.wait_ready(120)
        spectrum = labelled("spectrum")
        assert drawn_as_the_view_does(process, spectrum) == draw(picture("spectrum"))
    finally:
        process.close()


@pytest.mark.timeout(60)
def test_ctrl_c_frees_a_kernel_waiting_for_a_plot_that_never_ends() -> None:
    """A plot looping forever in the process: Ctrl-C (once, as for a plot drawn in the kernel)
    gives the kernel back, and the process stuck in it answers no later batch."""
    process = started()
    try:
        stuck = process.pid
        forever = interrupting_the_kernel("hang")
        with pytest.raises(KeyboardInterrupt), process.batch([forever]) as batch:
            batch.drawn(forever)
        assert process.pid != stuck
        with pytest.raises(ProcessLookupError):
            os.kill(stuck, 0)  # ended and reaped
        assert process.wait_ready(120)
        spectrum = labelled("spectrum")
        assert drawn_as_the_view_does(process, spectrum) == draw(picture("spectrum"))
    finally:
        process.close()


class PlotCfg(StageConfig):
    kind: str = "labelled"
    label: str = "a"


class Plotted(PipelineStage[SimpleState, PlotCfg]):
    """A node with one lazy plot, made by ``PLOTS[kind](label)``."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        plot = PLOTS[self.cfg.kind](self.cfg.label)
        return StageResult(SimpleState(self.cfg.label), artifacts={"plot": plot})


PRESSED: list[str] = []  # the plots that pressed Ctrl-C


def interrupted_here(label: str) -> Callable[[], bytes]:
    """A plot that presses Ctrl-C when the kernel draws it (the first time)."""

    def plot() -> bytes:
        if os.getpid() == KERNEL and not PRESSED:
            PRESSED.append(label)
            raise KeyboardInterrupt
        return picture(f"{label} by {os.getpid()}")

    return plot


FIGURES = {"shown": 0}  # plots numbered in the order they are drawn
SCALE = {"vmax": 1.0}  # the colour scale the first plot sets for the others


def numbered(label: str) -> Callable[[], bytes]:
    def plot() -> bytes:
        FIGURES["shown"] += 1
        return picture(f"figure {FIGURES['shown']}: {label}")

    return plot


def setting_the_scale(label: str) -> Callable[[], bytes]:
    def plot() -> bytes:
        SCALE["vmax"] = 2.0  # from its own data: the plots after it share its colour scale
        return picture(f"{label} up to {SCALE['vmax']}")

    return plot


def scaled(label: str) -> Callable[[], bytes]:
    return lambda: picture(f"{label} up to {SCALE['vmax']}")


PLOTS: dict[str, Callable[[str], Callable[[], bytes]]] = {
    "labelled": lambda label: lambda: picture(f"{label} by {os.getpid()}"),
    "interrupted": interrupted_here,
    "numbered": numbered,
    "setting the scale": setting_the_scale,
    "scaled": scaled,
}


def session_of(selected: str, first: str, second: str) -> LiveSession:
    """The selected node (drawn first, in the kernel) and two watched ones: the first drawn in
    the kernel, the second handed to the process."""
    kinds = {"selected": selected, "first": first, "second": second}
    labels = {"selected": "c", "first": "a", "second": "b"}
    nodes = [
        NodeSpec(nid, stage=Plotted(PlotCfg(kind=kind, label=labels[nid])))
        for nid, kind in kinds.items()
    ]
    return LiveSession(nodes, SimpleState(None))


def view_of(live: LiveSession, process: DrawingProcess) -> ArtifactView:
    return ArtifactView(live, "selected", watched=["first", "second"], drawing_process=process)


def shown(view: ArtifactView, node_id: str) -> list[bytes]:
    section = view.main if node_id == view.node_id else view.panels[node_id]
    outputs = section.output.outputs
    return [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o["data"]]


def test_ctrl_c_in_a_plot_the_kernel_draws_leaves_no_reply_to_the_next_refresh() -> None:
    """Ctrl-C while the kernel draws its half: the refresh stops, the process (which owes it
    a reply) is ended, and the next refresh shows each node's own plot."""
    PRESSED.clear()
    process = started()
    try:
        live = session_of("labelled", "interrupted", "labelled")
        view = view_of(live, process)
        with pytest.raises(KeyboardInterrupt):
            live.run()
        assert PRESSED == ["a"]
        assert process.wait_ready(120)
        view.refresh()
        assert shown(view, "first") == [picture(f"a by {KERNEL}")]
        assert shown(view, "second") == [picture(f"b by {process.pid}")]
    finally:
        process.close()


# --- what the drawing changes, or what the kernel changes meanwhile ------------------------


def test_a_plot_that_changes_what_it_reads_changes_it_in_the_kernel(
    drawing: DrawingProcess,
) -> None:
    """A closure counting its drawings (as a callable object might): a copy drawn in the
    process would count there, and the kernel's count would stay behind."""
    drawings = {"count": 0}

    def plot() -> bytes:
        drawings["count"] += 1
        return picture(f"drawing {drawings['count']}")

    assert drawn_as_the_view_does(drawing, plot) == draw(picture("drawing 1"))
    assert drawings["count"] == 1


def test_plots_numbered_as_drawn_are_numbered_as_the_kernel_numbers_them(
    drawing: DrawingProcess,
) -> None:
    FIGURES["shown"] = 0
    live = session_of("numbered", "numbered", "numbered")
    view = view_of(live, drawing)
    live.run()
    assert shown(view, "selected") == [picture("figure 1: c")]
    assert shown(view, "first") == [picture("figure 2: a")]
    assert shown(view, "second") == [picture("figure 3: b")]
    assert FIGURES["shown"] == 3


def test_a_plot_reading_what_the_kernels_half_changed_shows_the_change(
    drawing: DrawingProcess,
) -> None:
    """The selected node's plot (drawn in the kernel) sets the colour scale the watched plots
    share; the second watched plot was handed to the process before that."""
    SCALE["vmax"] = 1.0
    live = session_of("setting the scale", "scaled", "scaled")
    view = view_of(live, drawing)
    live.run()
    assert shown(view, "first") == [picture("a up to 2.0")]
    assert shown(view, "second") == [picture("b up to 2.0")]


# --- the kernel's process state: folder, environment, time zone, print options -------------


def test_a_plot_reading_a_relative_path_reads_the_notebooks_folder_of_now(
    drawing: DrawingProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.chdir in the notebook after the process started (to another run's folder)."""
    (tmp_path / "spectrum.txt").write_text("new spectrum")
    monkeypatch.chdir(tmp_path)

    def plot() -> bytes:
        return picture(Path("spectrum.txt").read_text())

    assert drawn_as_the_view_does(drawing, plot) == draw(picture("new spectrum"))


def test_a_plot_expanding_an_environment_variable_reads_the_notebooks_value(
    drawing: DrawingProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """%env PP_RUN=new after the process started; the plot reads it through a library call
    (os.path.expandvars), which its fingerprint does not see as reading the environment."""
    monkeypatch.setenv("PP_RUN", "new")

    def plot() -> bytes:
        return picture(os.path.expandvars("data of run $PP_RUN"))

    assert drawn_as_the_view_does(drawing, plot) == draw(picture("data of run new"))


def test_a_plot_in_local_time_follows_the_notebooks_time_zone(
    drawing: DrawingProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def plot() -> bytes:
        return picture(time.strftime("%H:%M %Z", time.localtime(0)))

    monkeypatch.setenv("TZ", "JST-9")
    time.tzset()
    try:
        assert drawn_as_the_view_does(drawing, plot) == draw(picture("09:00 JST"))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_value_shown_as_text_is_printed_as_the_kernel_prints_it(
    drawing: DrawingProcess,
) -> None:
    """Not a figure: its text follows the kernel's print options, numpy's (sent with each
    batch) and any other library's (pandas' here), which the process does not have."""
    pandas = pytest.importorskip("pandas")
    thirds = np.array([1.0, 2.0]) / 3.0
    frame = pandas.DataFrame({"transmission": thirds})

    def table() -> Any:
        return frame

    def values() -> np.ndarray:
        return thirds

    with np.printoptions(precision=3), pandas.option_context("display.precision", 2):
        assert drawn_as_the_view_does(drawing, values) == draw(thirds)
        assert drawn_as_the_view_does(drawing, table) == draw(frame)
        assert "0.33<" in draw(frame).data["text/html"]


def titled_with_an_array() -> Figure:
    coefficients = np.array([1.0, 2.0]) / 3.0
    figure = Figure(figsize=(3, 2))
    figure.subplots().set_title(f"fit {coefficients}")
    return figure


def test_a_title_printing_an_array_follows_the_kernels_print_options(
    drawing: DrawingProcess,
) -> None:
    """np.set_printoptions at the top of a notebook, and an array in a plot's title."""
    with np.printoptions(precision=2):
        beside = drawn_as_the_view_does(drawing, titled_with_an_array)
        here = draw(titled_with_an_array())
    assert np.array_equal(pixels(beside), pixels(here))


# --- the kernel's matplotlib ---------------------------------------------------------------


def dates_plot() -> Figure:
    start = datetime.datetime(2024, 1, 1)
    times = [start + datetime.timedelta(hours=7 * i) for i in range(40)]
    figure = Figure(figsize=(4, 3))
    figure.subplots().plot(times, np.arange(40.0))
    return figure


def test_a_date_axis_uses_the_converter_the_notebook_put_in_place(
    drawing: DrawingProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """matplotlib's own recipe for concise date labels replaces the converter of a type that
    has one already: the process, with the default one, would label the axis otherwise."""
    converter = matplotlib.dates.ConciseDateConverter()
    monkeypatch.setitem(matplotlib.units.registry, datetime.datetime, converter)
    beside = drawn_as_the_view_does(drawing, dates_plot)
    assert np.array_equal(pixels(beside), pixels(draw(dates_plot())))


def styled_plot() -> Figure:
    matplotlib.style.use("dark_background")  # a plot that sets the notebook's style
    return plain_plot()


def plain_plot() -> Figure:
    figure = Figure(figsize=(3, 2))
    figure.subplots().plot([0.0, 1.0], [1.0, 0.0])
    return figure


def test_a_plot_that_sets_the_style_sets_it_in_the_kernel_and_no_further(
    drawing: DrawingProcess,
) -> None:
    """matplotlib.style.use in a plot: drawn in the kernel, later plots there take the style;
    a copy drawn in the process would keep it there alone."""
    with matplotlib.rc_context():
        drawn_as_the_view_does(drawing, styled_plot)
        assert matplotlib.rcParams["axes.facecolor"] == "black"  # as if drawn here
        after = drawn_as_the_view_does(drawing, plain_plot)
        assert np.array_equal(pixels(after), pixels(draw(plain_plot())))
    plain = drawn_as_the_view_does(drawing, plain_plot)  # the style gone here: gone there
    assert np.array_equal(pixels(plain), pixels(draw(plain_plot())))


def styled_then_failing() -> Figure:
    """Sets a style, then fails, in the process only (a module the process may not import)."""
    if os.getpid() != KERNEL:
        matplotlib.style.use("dark_background")
        raise ImportError("no module of the user's here")
    return plain_plot()


def test_a_plot_failing_in_the_process_after_setting_a_style_leaves_no_style_there(
    drawing: DrawingProcess,
) -> None:
    """The next plot is drawn there again, in the kernel's style."""
    drawn_as_the_view_does(drawing, styled_then_failing)
    with drawing.batch([plain_plot]) as batch:
        after = batch.drawn(plain_plot)
    assert after is not None
    assert np.array_equal(pixels(after), pixels(draw(plain_plot())))


def pyplot_plot(label: str) -> Callable[[], bytes]:
    """Plots on pyplot's current figure and saves it as PNG bytes, leaving the figure open."""

    def plot() -> bytes:
        import matplotlib.pyplot as plt

        plt.plot([0.0, 1.0], [0.0, 1.0] if label == "rising" else [1.0, 0.0])
        buffer = io.BytesIO()
        plt.savefig(buffer, format="png")
        return buffer.getvalue()

    return plot


def test_a_pyplot_figure_left_open_by_one_plot_is_not_drawn_into_by_the_next(
    drawing: DrawingProcess,
) -> None:
    """A plot that leaves its pyplot figure open leaves it open in the kernel, where the
    next such plot would draw into it: drawn in the process, it left it open there alone."""
    import matplotlib.pyplot as plt

    try:
        drawn_as_the_view_does(drawing, pyplot_plot("rising"))
        assert plt.get_fignums()  # as if drawn here
        plt.close("all")  # as after each notebook cell
        falling = pyplot_plot("falling")
        beside = drawn_as_the_view_does(drawing, falling)
        plt.close("all")
        assert np.array_equal(pixels(beside), pixels(draw(falling())))
    finally:
        plt.close("all")


def test_a_pyplot_plot_is_drawn_into_the_figure_the_notebook_has_open(
    drawing: DrawingProcess,
) -> None:
    """A figure the notebook's cell has open, which the plot draws into in the kernel."""
    import matplotlib.pyplot as plt

    falling = pyplot_plot("falling")
    try:
        plt.plot([0.0, 1.0], [0.5, 0.5])
        shown = drawn_as_the_view_does(drawing, falling)
        plt.close("all")
        plt.plot([0.0, 1.0], [0.5, 0.5])
        assert np.array_equal(pixels(shown), pixels(draw(falling())))
    finally:
        plt.close("all")


# --- attacks that hold ---------------------------------------------------------------------


def test_what_a_plot_prints_never_mixes_into_the_replies(drawing: DrawingProcess) -> None:
    """Python's print, a write to fd 1 and C's printf, in the process: they go to stderr."""

    def noisy() -> bytes:
        import ctypes

        print("python says hello")
        os.write(1, b"\x00\x00\x00\x00\x00\x00\x00\x08fd 1 says hello\n")
        libc = ctypes.CDLL(None)
        libc.printf(b"C says hello\n")
        libc.fflush(None)
        return picture("noisy")

    quiet = labelled("quiet")
    with drawing.batch([noisy, quiet]) as batch:
        assert batch.drawn(noisy) == draw(picture("noisy"))
        assert batch.drawn(quiet) == draw(picture("quiet"))
    assert drawn_as_the_view_does(drawing, labelled("after")) == draw(picture("after"))


def test_a_batch_holds_what_it_sent_so_no_other_artifact_takes_its_id(
    drawing: DrawingProcess,
) -> None:
    with drawing.batch([labelled(str(i)) for i in range(20)]) as batch:
        gc.collect()
        others = [labelled(f"other {i}") for i in range(200)]  # would reuse freed ids
        assert all(batch.drawn(other) is None for other in others)


def test_a_view_refreshing_while_another_thread_waits_on_the_process_draws_here(
    drawing: DrawingProcess,
) -> None:
    """Two views at once (an auto-run's thread and a click): one batch at a time, each view
    shows its own node's plot."""
    entered, leave = threading.Event(), threading.Event()
    elsewhere = labelled("elsewhere")
    got: list[Drawn | None] = []

    def other_view() -> None:
        with drawing.batch([elsewhere]) as batch:
            entered.set()
            leave.wait(60)
            got.append(batch.drawn(elsewhere))

    thread = threading.Thread(target=other_view)
    thread.start()
    try:
        assert entered.wait(60)
        live = session_of("labelled", "labelled", "labelled")
        view = view_of(live, drawing)
        live.run()
        assert shown(view, "second") == [picture(f"b by {KERNEL}")]
    finally:
        leave.set()
        thread.join(60)
    assert got == [draw(picture("elsewhere"))]


def test_a_process_dying_midway_leaves_the_rest_of_its_batch_to_the_kernel() -> None:
    def crashing() -> bytes:
        if os.getpid() != KERNEL:
            os._exit(3)  # a segfault in a library, say
        return picture("crashing")

    process = started()
    try:
        first, last = labelled("first"), labelled("last")
        with process.batch([first, crashing, last]) as batch:
            assert batch.drawn(first) == draw(picture("first"))
            assert batch.drawn(crashing) is None and batch.drawn(last) is None
        assert process.wait_ready(120)
        assert drawn_as_the_view_does(process, last) == draw(picture("last"))
    finally:
        process.close()


FIGURE = Figure(figsize=(2, 2))


@pytest.mark.parametrize(
    "artifact",
    [lambda: FIGURE, lambda: picture(f"{np.random.random()}")],
    ids=["a figure made in the kernel", "numpy's global random state"],
)
def test_a_plot_of_the_kernels_figure_or_random_state_is_left_to_the_kernel(
    drawing: DrawingProcess, artifact: Callable[[], Any]
) -> None:
    with drawing.batch([artifact]) as batch:
        assert len(batch) == 0


def test_a_large_image_comes_back_whole(drawing: DrawingProcess) -> None:
    """An image of a few MB, many times the pipe's buffer."""
    noise = np.random.default_rng(7).random((600, 800))

    def image() -> Figure:
        figure = Figure(figsize=(8, 6))
        figure.figimage(noise)
        return figure

    beside = drawn_as_the_view_does(drawing, image)
    assert len(beside.data) > 2**20
    assert np.array_equal(pixels(beside), pixels(draw(image())))
