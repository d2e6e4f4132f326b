"""A Jupyter kernel in miniature, for tests of edits made in a notebook.

Cells are source strings, each compiled with a ``<cell-N>`` filename (N counts executions, as
a kernel does) and exec'd into ONE namespace whose ``__name__`` is ``"__main__"``. An edit
re-executes one cell; every other object keeps its identity, as in a real kernel. The "run
cell" then runs the DAG named ``nodes`` in that namespace, in one of four ways: through a
``DagExecutor`` over a ``DiskStore`` or a ``LiveSession`` (whose memory tier answers first),
each either re-executing the cell that builds ``nodes`` first or running the same stage objects.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from phys_pipeline import DagExecutor, LocalScheduler, SimpleState, State
from phys_pipeline.cache import DiskStore
from phys_pipeline.dag import Staleness
from phys_pipeline.executor import DagRunResult
from phys_pipeline.session import LiveSession

# how the user re-runs the run cell: front end, and whether the `nodes` cell runs again first
WAYS: dict[str, tuple[str, bool]] = {
    "executor, nodes rebuilt": ("executor", True),
    "executor, same stage objects": ("executor", False),
    "session, nodes rebuilt": ("session", True),
    "session, same stage objects": ("session", False),
}
REBUILT = [way for way, (_, rebuild) in WAYS.items() if rebuild]
SAME_OBJECTS = [way for way, (_, rebuild) in WAYS.items() if not rebuild]


class Notebook:
    """Cells in notebook order, all executed once on creation; ``nodes`` must be built by a
    cell named "nodes", and a cell may bind ``start`` (the initial state; default empty)."""

    def __init__(self, cells: Mapping[str, str], way: str, cache_dir: Path) -> None:
        self.cells = dict(cells)
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.execution_count = 0
        for name in self.cells:
            self.execute(name)
        self.front_end, self.rebuild_nodes = WAYS[way]
        self._default_start = SimpleState()
        self.executor: DagExecutor | None = None
        self.session: LiveSession | None = None
        if self.front_end == "executor":
            cache = DiskStore(cache_dir)
            self.executor = DagExecutor(scheduler=LocalScheduler(max_workers=1), cache=cache)
        else:
            self.session = LiveSession(self["nodes"], self.start, cache=DiskStore(cache_dir))

    def __getitem__(self, name: str) -> Any:
        return self.namespace[name]

    @property
    def start(self) -> State:
        return self.namespace.get("start", self._default_start)

    def execute(self, name: str, source: str | None = None) -> None:
        """Run one cell, first replacing its source when ``source`` is given (an edit); a new
        name appends a cell."""
        if source is not None:
            self.cells[name] = source
        self.execution_count += 1
        filename = f"<cell-{self.execution_count}>"
        exec(compile(textwrap.dedent(self.cells[name]), filename, "exec"), self.namespace)

    def _prepare(self) -> None:
        """What the user does before running: rebuild the nodes (or not), hand them over."""
        if self.rebuild_nodes:
            self.execute("nodes")
        if self.session is not None:
            if self.rebuild_nodes:
                for node in self["nodes"]:
                    self.session.set_stage(node.id, node.stage)
            if self.session.state is not self.start:
                self.session.set_state(self.start)

    def run(self) -> DagRunResult:
        """The run cell."""
        self._prepare()
        if self.session is not None:
            return self.session.run()
        return self.executor.run(self.start, self["nodes"])

    def stale(self) -> dict[str, Staleness]:
        """What a run would compute and why, asked the way the front end offers."""
        self._prepare()
        if self.session is not None:
            return self.session.stale()
        return self.executor.stale(self.start, self["nodes"])


# --- what the notebook tests' cells share: a probe stage reads one number -------------------

Opener = Callable[..., Notebook]
"""A test's way to open a notebook of the given cells."""

READING = """
def reading(value):
    '''A probe's result: its value as the state and as the metric "value".'''
    return StageResult(state=SimpleState(float(value)), metrics={"value": float(value)})
"""
"""Source of the helper every probe stage returns through; goes in a notebook's imports cell."""

PROBE_CFG = """
class ProbeCfg(StageConfig):
    mass: float = 1.5
"""

PROBE_NODES = 'nodes = [NodeSpec(id="probe", stage=Probe(ProbeCfg()))]\n'
"""The one-node DAG of a notebook whose cells define ``Probe``."""


def probe(body: str) -> str:
    """A stage whose answer is ``body`` (an expression that may use ``self`` and ``state``)."""
    return f"""
class Probe(PipelineStage[SimpleState, ProbeCfg]):
    def process(self, state, *, policy=None):
        return reading({body})
"""


def answer(result: DagRunResult, node: str = "probe") -> float:
    """The probe's reading after a run that must have succeeded."""
    assert result.ok, result.failures
    return result.metrics[f"{node}.value"]


EXECUTOR_REBUILT = "executor, nodes rebuilt"
EXECUTOR_SAME_OBJECTS = "executor, same stage objects"


def probe_imports(imports: str) -> str:
    """The first cell of a probe notebook: ``imports``, then phys_pipeline's names, the
    ``reading`` helper and the probe's config."""
    framework = (
        "from phys_pipeline import NodeSpec, PipelineStage, SimpleState, StageConfig, "
        "StageResult\n\n"
    )
    return textwrap.dedent(imports) + "\n" + framework + READING + "\n" + PROBE_CFG


def opener(imports: str, cache: Path) -> Opener:
    """Opens a notebook of the given cells (after an ``imports`` cell, before the "nodes"
    cell), run through a DagExecutor over a DiskStore in ``cache`` (nodes rebuilt unless
    ``way`` says otherwise)."""

    def open_notebook(
        cells: dict[str, str], nodes: str = PROBE_NODES, way: str = EXECUTOR_REBUILT
    ) -> Notebook:
        return Notebook({"imports": imports, **cells, "nodes": nodes}, way, cache)

    return open_notebook


def assert_edit_reaches_the_run(
    nb: Notebook, cell: str, source: str, before: float, after: float
) -> None:
    """The probe reads ``before``; after ``cell`` is run again as ``source``, ``after``."""
    assert answer(nb.run()) == pytest.approx(before)
    nb.execute(cell, source)
    assert answer(nb.run()) == pytest.approx(after)
