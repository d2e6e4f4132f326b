"""Figures kept in the cache as data (DagCache.put_figures / figures): what the artifact view
draws once is shown after a restart without rerunning; a forged or corrupt figure entry is a
miss that nobody deletes; runs never store figures."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from stages.optics import ALL, optics_nodes

from phys_pipeline.cache import CacheWarning, DiskStore, EntrySigner, MemoryStore
from phys_pipeline.cache.disk import entry_path
from phys_pipeline.cache.figures import figures_key
from phys_pipeline.dag_cache import DagCache
from phys_pipeline.executor import DagExecutor
from phys_pipeline.session import LiveSession
from phys_pipeline.types import SimpleState
from phys_pipeline.widgets import ArtifactView
from phys_pipeline.widgets.artifact_view import PNG_MAGIC

PNG = PNG_MAGIC + b"not really an image, but bytes all the same"


def shown_pngs(view: ArtifactView) -> list[str]:
    return [o["data"]["image/png"] for o in view.output.outputs if "image/png" in o["data"]]


def fibre_key(session: LiveSession) -> str:
    return session.current_plan.nodes["fibre"].key


def drawn_once(root: Path) -> tuple[str, list[str]]:
    """A first kernel: run, and show fibre's plot; its key and the PNG shown."""
    first = LiveSession(optics_nodes(), SimpleState(), cache=DiskStore(root))
    view = ArtifactView(first, "fibre")
    first.run()
    return fibre_key(first), shown_pngs(view)


def restarted(root: Path) -> tuple[LiveSession, ArtifactView]:
    """A new kernel over the same disk cache: its run loads every node."""
    live = LiveSession(optics_nodes(), SimpleState(), cache=DiskStore(root))
    view = ArtifactView(live, "fibre")
    result = live.run()
    assert result.ran == [] and set(result.hits) == ALL
    return live, view


def test_figures_drawn_once_are_shown_after_a_restart_without_running(tmp_path: Path) -> None:
    _, before = drawn_once(tmp_path)
    assert len(before) == 1
    live, view = restarted(tmp_path)
    assert shown_pngs(view) == before
    assert view.note.value == "" and view.rerun_button.layout.display == "none"
    overview = ArtifactView(live)
    assert shown_pngs(overview) == before and overview.note.value == ""


def test_figures_round_trip_as_signed_data_under_their_own_key(tmp_path: Path) -> None:
    key = "ab" * 16
    figures = {"phase": ("image/png", PNG), "field": ("image/svg+xml", b"<svg/>")}
    for store in (MemoryStore(), DiskStore(tmp_path)):
        cache = DagCache(store)
        assert cache.figures(key) is None
        cache.put_figures(key, figures, node_id="fibre")
        assert cache.figures(key) == figures
        assert not store.contains(key)  # the node's own key is left alone
        assert cache.stats()["puts"] == cache.stats()["hits"] == 0  # not a run's traffic
    entry = entry_path(tmp_path, figures_key(key))
    assert sorted(os.listdir(entry)) == ["a0.npy", "a1.npy", "meta.json"]  # no pickle
    assert '"blob":null' in (entry / "meta.json").read_text()
    with pytest.raises(ValueError, match="text/html"):
        DagCache(MemoryStore()).put_figures(key, {"page": ("text/html", b"<script>")})


def forge(root: Path, key: str) -> Path:
    """Figures for ``key`` signed with a key that is not ours (another user, an attacker)."""
    DagCache(DiskStore(root, signer=EntrySigner("someone else's secret, not ours"))).put_figures(
        key, {"phase": ("image/png", PNG)}
    )
    return entry_path(root, figures_key(key))


def corrupt(root: Path, key: str) -> Path:
    """Our own figure entry with a byte of its PNG changed."""
    entry = entry_path(root, figures_key(key))
    data = entry / "a0.npy"
    os.chmod(data, 0o644)
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    os.chmod(data, 0o444)
    return entry


@pytest.mark.parametrize("spoil", [forge, corrupt])
def test_a_forged_or_corrupt_figure_entry_is_a_miss_that_stays_on_disk(
    tmp_path: Path, spoil
) -> None:
    if spoil is forge:  # a first kernel that drew nothing
        first = LiveSession(optics_nodes(), SimpleState(), cache=DiskStore(tmp_path))
        first.run()
        key = fibre_key(first)
    else:
        key, _ = drawn_once(tmp_path)
    entry = spoil(tmp_path, key)
    files = sorted(os.listdir(entry))
    with pytest.warns(CacheWarning, match="left on disk"):
        live, view = restarted(tmp_path)
    assert shown_pngs(view) == []
    assert "plots are not cached" in view.note.value  # as if none were kept
    assert view.rerun_button.layout.display != "none"
    assert sorted(os.listdir(entry)) == files  # the reader deleted nothing
    assert live.executor.cache.figures(key) is None  # (the store warned once already)
    assert sorted(os.listdir(entry)) == files


def test_runs_never_store_figures_only_drawing_does(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "executor")
    result = DagExecutor(cache=store).run(SimpleState(), optics_nodes())
    assert result.ran and len(store) == len(ALL)  # one entry per node, nothing else
    cache = DagCache(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(cache.figures(node.key) is None for node in result.plan.nodes.values())
    store = DiskStore(tmp_path / "session")
    live = LiveSession(optics_nodes(), SimpleState(), cache=store)
    live.run()  # a session with no view draws nothing either
    assert len(store) == len(ALL)
    ArtifactView(live, "fibre")  # drawing fibre's plot keeps it
    assert len(store) == len(ALL) + 1
    assert set(DagCache(store).figures(fibre_key(live)) or ()) == {"phase"}


def test_a_strict_cache_refusing_the_figures_leaves_the_plot_on_screen(tmp_path: Path) -> None:
    from phys_pipeline.errors import CacheError

    store = DiskStore(tmp_path / "cache", strict=True)
    live = LiveSession(optics_nodes(), SimpleState(), cache=store)
    planted = entry_path(store.root, figures_key(fibre_key(live)))
    planted.parent.mkdir(parents=True)
    planted.symlink_to(tmp_path, target_is_directory=True)  # the store follows no link
    with pytest.raises(CacheError, match="symbolic link"):
        DagCache(store, strict=True).put_figures(fibre_key(live), {"phase": ("image/png", PNG)})
    view = ArtifactView(live, "fibre")
    live.run()  # the view's put_figures raises inside: it is not the panel's failure
    assert len(shown_pngs(view)) == 1 and "unavailable" not in view.title.value
