"""Attacks on figures kept in the cache as data (DagCache.put_figures / figures, the artifact
view that stores them): a figure kept for a key must show the result stored under that key,
never another one's (a rerun's predecessor, a result a sibling corrupted, the world as it was
when a lazy artifact was drawn late), and a spoilt entry is a miss nobody deletes."""

from __future__ import annotations

import itertools
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipywidgets")

from dag_stages import GridCfg, GridStage
from stages.scribblers import Peak, Scribbler

from phys_pipeline.cache import CacheWarning, DiskStore, EntrySigner
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.cache.figures import figures_key
from phys_pipeline.dag_cache import DagCache
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


@pytest.mark.timeout(60)
def test_a_result_computed_again_after_its_entry_was_evicted_keeps_its_own_figures(tmp_path):
    """The node's entry went (a byte budget, a prune by age) while its figures stayed: the
    node computes again, and the figures kept must be the new result's, not the gone one's."""
    root = tmp_path / "cache"
    live = LiveSession(monte_carlo(tmp_path), START, cache=DiskStore(root))
    view = ArtifactView(live, "mc")
    live.run()
    live.executor.cache.backend.delete(live.current_plan.nodes["mc"].key)  # figures stay
    assert live.run().ran == ["mc"] and shown(view) == [picture("shot 2")]

    again = LiveSession(monte_carlo(tmp_path), START, cache=DiskStore(root))
    later = ArtifactView(again, "mc")
    assert again.run().metrics["mc.shot"] == 2.0
    assert shown(later) == [picture("shot 2")]


INSTRUMENT = itertools.count()  # an instrument's live counter: nothing can hash it


class LiveReadout(PipelineStage[SimpleState, StageConfig]):
    """Reads a live instrument its key cannot cover: the node is not cacheable."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        reading = next(INSTRUMENT)
        return StageResult(
            SimpleState(reading), artifacts={"trace": lambda: picture(f"reading {reading}")}
        )


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::phys_pipeline.errors.UncacheableWarning")
def test_no_figures_are_kept_for_a_node_that_cannot_be_cached(tmp_path):
    """Its key does not say what it shows (held)."""
    store = DiskStore(tmp_path / "cache")
    live = LiveSession([NodeSpec("scope", stage=LiveReadout(StageConfig()))], START, cache=store)
    view = ArtifactView(live, "scope")
    live.run()
    assert live.current_plan.nodes["scope"].uncacheable and len(shown(view)) == 1
    assert len(store) == 0


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


PLOT_UNITS = "ps"  # read by the stage and by its plot: the key covers it


def label_plot(width: float) -> bytes:
    return picture(f"width {width} {PLOT_UNITS}")


class Autocorrelation(PipelineStage[SimpleState, StageConfig]):
    """A pulse width in the notebook's units, with a lazy plot labelled in them."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        width = 1.0 if PLOT_UNITS == "ps" else 1000.0
        return StageResult(
            SimpleState(width),
            metrics={"width": width},
            artifacts={"trace": lambda: label_plot(width)},
        )


@pytest.mark.timeout(60)
def test_a_lazy_plot_drawn_after_the_world_changed_is_not_kept_for_the_old_key(
    tmp_path, monkeypatch
):
    """The plot is drawn only when the node is first shown; by then the notebook switched to
    fs, which the key sees (the node is stale): the plot drawn now mixes the old result with
    the new units and must not be kept as the ps run's figure."""
    root = tmp_path / "cache"
    nodes = [
        NodeSpec("trace", stage=Autocorrelation(StageConfig())),
        NodeSpec("other", stage=GridStage(GridCfg())),
    ]
    live = LiveSession(nodes, START, cache=DiskStore(root))
    view = ArtifactView(live, "other", watched=[])
    live.run()
    monkeypatch.setattr(__import__(__name__), "PLOT_UNITS", "fs")
    assert "trace" in live.stale()
    view.show("trace")
    assert shown(view) == [picture("width 1.0 fs")]  # a lazy artifact draws what it sees now
    monkeypatch.setattr(__import__(__name__), "PLOT_UNITS", "ps")

    again = LiveSession(nodes, START, cache=DiskStore(root))
    later = ArtifactView(again, "trace")
    assert again.run().hits == ["trace", "other"]
    assert picture("width 1.0 fs") not in shown(later)


def drawn(root: Path) -> tuple[str, list[bytes]]:
    """A first kernel: run the Monte Carlo node and show its plot."""
    live = LiveSession(monte_carlo(root.parent), START, cache=DiskStore(root))
    view = ArtifactView(live, "mc")
    live.run()
    return live.current_plan.nodes["mc"].key, shown(view)


@pytest.mark.timeout(60)
def test_a_figure_entry_moved_under_another_nodes_key_is_a_miss_left_in_place(tmp_path):
    """Our own signed entry, for another node key, renamed into this key's place (a co-user
    who can write to the directory but has not our secret): never shown as this node's."""
    root = tmp_path / "cache"
    other = "cd" * 16
    cache = DagCache(DiskStore(root))
    cache.put_figures(other, {"histogram": ("image/png", picture("another node"))})
    key, _ = drawn(root)
    target = entry_path(root, figures_key(key))
    shutil.rmtree(target)
    shutil.copytree(entry_path(root, figures_key(other)), target)
    files = sorted(os.listdir(target))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        assert DagCache(DiskStore(root)).figures(key) is None
    assert sorted(os.listdir(target)) == files


@pytest.mark.timeout(60)
def test_a_strict_cache_reading_a_forged_figure_entry_misses_without_raising(tmp_path):
    """A strict cache raises on a store that fails, not on an entry that does not
    authenticate: that is a miss, as for a node's own entry, and stays on disk."""
    root = tmp_path / "cache"
    live = LiveSession(monte_carlo(tmp_path), START, cache=DiskStore(root))
    live.run()  # nothing drawn: no figures kept
    key = live.current_plan.nodes["mc"].key
    forger = DagCache(DiskStore(root, signer=EntrySigner("someone else's secret, not ours")))
    forger.put_figures(key, {"histogram": ("image/png", picture("forged"))})
    entry = entry_path(root, figures_key(key))
    files = sorted(os.listdir(entry))
    strict = DagCache(DiskStore(root, strict=True), strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)
        assert strict.figures(key) is None
        assert strict.get(key) is not None  # the node's own entry is ours: read as usual
    assert sorted(os.listdir(entry)) == files
