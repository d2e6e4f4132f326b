"""Exceptions keep their type (#14): what a stage raises reaches the caller as itself, wherever
the stage ran (a pipeline, a DAG inline, on threads, in worker processes, on Dask), with one note
(PEP 678) naming where it ran, the stage and its config. A DAG run's ``NodeFailedError`` is an
``ExceptionGroup`` of the failed nodes' own exceptions, so ``except* ValueError`` catches them."""

from __future__ import annotations

import pickle
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest
from dag_stages import FailCfg, FailStage, GridCfg, GridStage, PhaseCfg, PhaseStage

from phys_pipeline.errors import NodeFailedError, PhysPipelineError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, NodeStatus, PipelineStage, SimpleState, StageConfig
from phys_pipeline.views.html import failures_html

# --- a phase fit that refuses too coarse a grid, with its own exception class -----------------


class PhaseFitError(ValueError):
    """What a user's package raises (and 2.0.0 projects record by ``type(exc).__name__``)."""


class FitCfg(StageConfig):
    degree: int = 9


class PhaseFit(PipelineStage[SimpleState, FitCfg]):
    """Fits a polynomial to the spectral phase; a grid of fewer points than the fit has
    coefficients cannot fix it."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
        points = len(state.meta["omega"])
        raise PhaseFitError(f"{points} points cannot fix a degree-{self.cfg.degree} polynomial")


FIT_MESSAGE = "8 points cannot fix a degree-9 polynomial"
FIT_NOTE = (
    "raised by stage 'phase fit' in node 'fit', config FitCfg(name='phase fit', tags={}, degree=9)"
)


def fit_dag() -> list[NodeSpec]:
    """grid -> fit (fails), and an independent branch grid -> phase."""
    return [
        NodeSpec(id="grid", stage=GridStage(GridCfg(name="grid", N=8))),
        NodeSpec(id="fit", deps=["grid"], stage=PhaseFit(FitCfg(name="phase fit"))),
        NodeSpec(id="phase", deps=["grid"], stage=PhaseStage(PhaseCfg(name="phase", gdd=5.0))),
    ]


def with_a_snapped_fibre() -> list[NodeSpec]:
    """``fit_dag`` plus a second failing node, ``fibre`` (a RuntimeError)."""
    fibre = FailStage(FailCfg(name="fibre", message="fibre snapped"))
    return [*fit_dag(), NodeSpec(id="fibre", deps=["grid"], stage=fibre)]


def failed_run(nodes: list[NodeSpec], scheduler: Any = None) -> NodeFailedError:
    with pytest.raises(NodeFailedError) as caught:
        DagExecutor(scheduler=scheduler).run(SimpleState(None), nodes)
    return caught.value


# --- where the stage runs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A real cluster of one worker process (skipped without distributed)."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def make_scheduler(mode: str, request: pytest.FixtureRequest) -> Any:
    if mode == "dask":
        from phys_pipeline.dask import DaskScheduler

        return DaskScheduler(request.getfixturevalue("dask_client"))
    return {
        "inline": LocalScheduler(),
        "threads": LocalScheduler(max_workers=2),
        "processes": LocalScheduler(max_workers=2, mode="process"),
    }[mode]


MODES = ["inline", "threads", "processes", "dask"]


@pytest.fixture(params=MODES)
def scheduler(request: pytest.FixtureRequest) -> Any:
    return make_scheduler(request.param, request)


# --- a sequential pipeline ---------------------------------------------------------------------


def test_a_stage_exception_keeps_its_type_through_a_sequential_pipeline() -> None:
    pipe = SequentialPipeline([GridStage(GridCfg(N=8)), PhaseFit(FitCfg(name="phase fit"))])
    with pytest.raises(PhaseFitError) as caught:
        pipe.run(SimpleState(None))
    assert type(caught.value) is PhaseFitError and str(caught.value) == FIT_MESSAGE


def test_a_sequential_pipeline_notes_its_name_the_stage_and_its_config() -> None:
    pipe = SequentialPipeline([GridStage(GridCfg(N=8)), PhaseFit(FitCfg(name="phase fit"))])
    with pytest.raises(PhaseFitError) as caught:
        pipe.run(SimpleState(None))
    assert caught.value.__notes__ == [
        "raised by stage 'phase fit' in pipeline 'pipeline', "
        "config FitCfg(name='phase fit', tags={}, degree=9)"
    ]


# --- a DAG run, wherever its nodes run ---------------------------------------------------------


def test_a_stage_exception_keeps_its_type_in_a_dag_run(scheduler: Any) -> None:
    error = failed_run(fit_dag(), scheduler).failures["fit"]
    assert type(error) is PhaseFitError and str(error) == FIT_MESSAGE


def test_the_note_names_node_stage_and_config_in_a_dag_run(scheduler: Any) -> None:
    error = failed_run(fit_dag(), scheduler).failures["fit"]
    assert error.__notes__ == [FIT_NOTE]


def test_node_failed_error_groups_the_failed_nodes_own_exceptions(scheduler: Any) -> None:
    failed = failed_run(with_a_snapped_fibre(), scheduler)
    assert sorted(failed.failures) == ["fibre", "fit"]
    assert failed.exceptions == tuple(failed.failures.values())  # the very same objects
    assert {nid: type(exc) for nid, exc in failed.failures.items()} == {
        "fit": PhaseFitError,
        "fibre": RuntimeError,
    }


def test_the_other_branch_finishes_and_the_partial_result_holds_it(scheduler: Any) -> None:
    partial = failed_run(fit_dag(), scheduler).partial
    assert isinstance(partial, DagRunResult)
    assert {nid: run.status for nid, run in partial.runs.items()} == {
        "grid": NodeStatus.RAN,
        "fit": NodeStatus.FAILED,
        "phase": NodeStatus.RAN,
    }


def test_except_star_value_error_catches_a_stage_value_error_from_a_dag_run() -> None:
    caught: list[BaseException] = []
    try:
        DagExecutor().run(SimpleState(None), fit_dag())
    except* ValueError as group:
        caught.extend(group.exceptions)
    assert len(caught) == 1 and type(caught[0]) is PhaseFitError
    assert caught[0].__notes__ == [FIT_NOTE]


def test_node_failed_error_is_still_a_runtime_error_and_one_of_ours() -> None:
    """2.0.0 code catching ``RuntimeError`` or ``PhysPipelineError`` around a run still does."""
    failed = failed_run(fit_dag())
    assert isinstance(failed, RuntimeError) and isinstance(failed, PhysPipelineError)
    assert isinstance(failed, ExceptionGroup)


def test_node_failed_error_names_each_failed_node_once_with_its_error() -> None:
    failed = failed_run(with_a_snapped_fibre())
    assert str(failed) == (
        f"2 node(s) failed: fit (PhaseFitError: {FIT_MESSAGE}); "
        "fibre (RuntimeError: fibre snapped) (2 sub-exceptions)"
    )


def test_a_printed_dag_failure_notes_each_node_once() -> None:
    printed = "".join(traceback.format_exception(failed_run(with_a_snapped_fibre())))
    assert printed.count(FIT_NOTE) == 1
    assert printed.count("raised by stage 'fibre' in node 'fibre', ") == 1


def test_the_recorded_type_name_is_the_stage_exceptions_own() -> None:
    """What 2.0.0 projects store: ``type(exc).__name__`` and the node's error line."""
    failed = failed_run(fit_dag())
    assert type(failed.failures["fit"]).__name__ == "PhaseFitError"
    (record,) = [r for r in failed.partial.provenance["node_runs"] if r["node_id"] == "fit"]
    assert record["error"] == f"PhaseFitError: {FIT_MESSAGE}"


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_a_node_failed_error_pickles_with_its_nodes_exceptions_and_notes(dumps: Any) -> None:
    failed = failed_run(with_a_snapped_fibre())
    copy = pickle.loads(dumps(failed))
    assert type(copy) is NodeFailedError and str(copy) == str(failed)
    assert {nid: type(exc) for nid, exc in copy.failures.items()} == {
        "fit": PhaseFitError,
        "fibre": RuntimeError,
    }
    assert copy.failures["fit"].__notes__ == [FIT_NOTE]
    assert [str(exc) for exc in copy.exceptions] == [FIT_MESSAGE, "fibre snapped"]
    assert copy.partial.runs.keys() == failed.partial.runs.keys()


# --- what the app and the live session show ----------------------------------------------------


def test_a_failed_nodes_error_line_says_its_type_and_message_once() -> None:
    out = DagExecutor().run(SimpleState(None), fit_dag(), raise_on_error=False)
    assert out.runs["fit"].error == f"PhaseFitError: {FIT_MESSAGE}"


def test_the_failure_panel_names_the_node_once_then_type_and_message() -> None:
    """No 2.0.0 echo ("node 'fit' failed: StageError: node 'fit': stage ... failed: ...")."""
    out = DagExecutor().run(SimpleState(None), fit_dag(), raise_on_error=False)
    assert failures_html(out.failures) == (
        '<ul class="pp-errors" style="color:#b91c1c">'
        f"<li><b>node &#x27;fit&#x27; failed</b>: PhaseFitError: {FIT_MESSAGE}</li></ul>"
    )


def test_the_apps_run_panel_names_the_failed_node_once(session: LiveSession) -> None:
    pytest.importorskip("ipywidgets")
    pytest.importorskip("anywidget")
    from phys_pipeline.widgets import RunControls

    controls = RunControls(session)
    session.update("fibre", broken=True)
    controls.run()  # what the Run button starts on a thread
    assert controls.errors.value == (
        '<ul class="pp-errors" style="color:#b91c1c">'
        "<li><b>node &#x27;fibre&#x27; failed</b>: RuntimeError: fibre snapped</li></ul>"
    )


def test_a_live_session_run_never_raises_and_reports_the_failure() -> None:
    live = LiveSession(fit_dag(), SimpleState(None))
    out = live.run()
    assert type(out.failures["fit"]) is PhaseFitError
    assert live.status["fit"] == NodeStatus.FAILED and live.status["phase"] == NodeStatus.RAN
    assert live.reasons()["fit"] == f"PhaseFitError: {FIT_MESSAGE}"


# --- except*, and exceptions that travel badly -------------------------------------------------


def test_what_except_star_leaves_is_a_node_failed_error_of_the_nodes_left() -> None:
    with pytest.raises(ExceptionGroup) as caught:
        try:
            DagExecutor().run(SimpleState(None), with_a_snapped_fibre())
        except* ValueError:
            pass
    rest = caught.value
    assert isinstance(rest, NodeFailedError)
    assert list(rest.failures) == ["fibre"]
    assert str(rest).startswith("1 node(s) failed: fibre (RuntimeError: fibre snapped)")


class Checks(PipelineStage[SimpleState, StageConfig]):
    """A stage that reports two problems at once, as a group of its own."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
        raise ExceptionGroup("checks failed", [ValueError("bad grid"), KeyError("no lens")])


def test_except_star_takes_its_part_of_a_stage_s_own_group_and_leaves_the_rest_named() -> None:
    nodes = [*with_a_snapped_fibre(), NodeSpec(id="checks", stage=Checks(StageConfig()))]
    caught: list[BaseException] = []
    with pytest.raises(NodeFailedError) as rest:
        try:
            DagExecutor().run(SimpleState(None), nodes)
        except* ValueError as matched:
            caught.append(matched)
    (handled,) = caught
    assert isinstance(handled, NodeFailedError)
    assert sorted(handled.failures) == ["checks", "fit"]
    left = rest.value.failures
    assert sorted(left) == ["checks", "fibre"]
    assert isinstance(left["fibre"], RuntimeError)
    assert [type(e) for e in left["checks"].exceptions] == [KeyError]
    assert rest.value.partial is handled.partial is not None


class ConvergenceError(ArithmeticError):
    """A user's exception whose constructor takes other arguments than its message."""

    def __init__(self, iterations: int, residual: float) -> None:
        super().__init__(f"no convergence after {iterations} iterations (residual {residual:g})")
        self.iterations, self.residual = iterations, residual


class Solver(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
        raise ConvergenceError(50, 1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_an_exception_with_its_own_constructor_keeps_type_and_note(
    mode: str, request: pytest.FixtureRequest
) -> None:
    out = DagExecutor(scheduler=make_scheduler(mode, request)).run(
        SimpleState(None),
        [NodeSpec(id="solve", stage=Solver(StageConfig(name="solver")))],
        raise_on_error=False,
    )
    error = out.failures["solve"]
    assert type(error) is ConvergenceError and error.residual == 1e-3
    assert error.__notes__[0].startswith("raised by stage 'solver' in node 'solve', ")


class DetectorBusyError(RuntimeError):
    """An exception holding what cannot travel between processes (the detector's lock)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Detector(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> Any:
        raise DetectorBusyError("detector busy")


@pytest.mark.parametrize("mode", ["processes", "dask"])
def test_an_exception_that_cannot_be_pickled_still_has_its_note_from_another_process(
    mode: str, request: pytest.FixtureRequest
) -> None:
    out = DagExecutor(scheduler=make_scheduler(mode, request)).run(
        SimpleState(None),
        [NodeSpec(id="ccd", stage=Detector(StageConfig(name="detector")))],
        raise_on_error=False,
    )
    error = out.failures["ccd"]
    assert "detector busy" in str(error)
    notes = getattr(error, "__notes__", [])
    assert notes and notes[0].startswith("raised by stage 'detector' in node 'ccd', ")
