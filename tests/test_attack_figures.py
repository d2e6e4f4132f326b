"""Attacks on figures kept in the cache as data (DagCache.put_figures / figures, the artifact
view that stores them): a figure kept for a key must show the result stored under that key,
never another one's (a rerun's predecessor, a result a sibling corrupted, the world as it was
when a lazy artifact was drawn late), and a spoilt entry is a miss nobody deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipywidgets")

from dag_stages import GridCfg, GridStage
from stages.scribblers import Peak, Scribbler

from phys_pipeline.cache import DiskStore
from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult
from phys_pipeline.widgets import ArtifactView
from phys_pipeline.widgets.artifact_view import PNG_MAGIC

START = SimpleState(None)
SHOTS = "shots"  # tags key: the file counting a Monte Carlo stage's runs


def picture(text: str) -> bytes:
    """A 'PNG' that says what it shows (the view keeps anything starting with the PNG magic)."""
    return PNG_MAGIC + text.encode()


def shown(view: ArtifactView, section: Any = None) -> list[bytes]:
    import base64

    outputs = (section or view.main).output.outputs
    return [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o["data"]]


class MonteCarlo(PipelineStage[SimpleState, StageConfig]):
    """A photon count that differs every time it runs (its shot number, kept in a file), with a
    lazy histogram of it."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        counter = Path(self.cfg.tags[SHOTS])
        shot = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(shot))
        return StageResult(
            SimpleState(float(shot)),
            metrics={"shot": float(shot)},
            artifacts={"histogram": lambda: picture(f"shot {shot}")},
        )


def monte_carlo(tmp_path: Path) -> list[NodeSpec]:
    return [NodeSpec("mc", stage=MonteCarlo(StageConfig(tags={SHOTS: str(tmp_path / "shots")})))]


@pytest.mark.timeout(60)
def test_a_rerun_keeps_the_new_results_figures_not_the_old_ones(tmp_path):
    """``rerun`` replaces the node's entry; the figures kept beside it must follow, or a restart
    shows shot 1's histogram beside shot 2's count."""
    root = tmp_path / "cache"
    live = LiveSession(monte_carlo(tmp_path), START, cache=DiskStore(root))
    view = ArtifactView(live, "mc")
    live.run()
    assert shown(view) == [picture("shot 1")]
    live.rerun("mc")
    assert shown(view) == [picture("shot 2")]

    again = LiveSession(monte_carlo(tmp_path), START, cache=DiskStore(root))
    later = ArtifactView(again, "mc")
    result = again.run()
    assert result.hits == ["mc"] and result.metrics["mc.shot"] == 2.0
    assert shown(later) == [picture("shot 2")]


class FiguredGrid(GridStage):
    """The grid, with a lazy plot of its largest frequency (read from the state when drawn)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        result = super().process(state, policy=policy)
        meta = result.state.meta
        result.artifacts = {"grid": lambda: picture(f"peak {float(meta['omega'].max())}")}
        return result


@pytest.mark.timeout(60)
def test_the_figure_of_a_result_a_sibling_corrupted_is_never_kept(tmp_path):
    """The culprit writes 99s into the grid it shares with the peak finder: the run drops the
    grid's entry, and the grid's plot, drawn afterwards from the corrupted state, must not be
    kept for the grid's key, where the next run files the true grid."""
    root = tmp_path / "cache"
    nodes = [
        NodeSpec("grid", stage=FiguredGrid(GridCfg(N=8))),
        NodeSpec("culprit", ["grid"], Scribbler(StageConfig())),
        NodeSpec("peak", ["grid"], Peak(StageConfig())),
    ]
    live = LiveSession(nodes, START, cache=DiskStore(root))
    view = ArtifactView(live, "grid")
    first = live.run()
    assert "culprit" in first.failures
    assert shown(view) == [picture("peak 99.0")]  # what the corrupted state holds now
    live.set_stage("culprit", Peak(StageConfig()))  # the culprit fixed
    second = live.run()
    assert second.runs["grid"].status == "ran" and shown(view) == [picture("peak 1.0")]

    fixed = [n.replace(stage=Peak(StageConfig())) if n.id == "culprit" else n for n in nodes]
    again = LiveSession(fixed, START, cache=DiskStore(root))
    later = ArtifactView(again, "grid")
    assert again.run().runs["grid"].status == "hit"
    assert shown(later) == [picture("peak 1.0")]
