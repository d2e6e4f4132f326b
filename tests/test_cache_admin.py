"""Looking after a disk cache (``phys_pipeline.cache.admin`` and ``python -m
phys_pipeline.cache``): listing by node and stage, sizes, verifying without deleting, pruning
by age, budget and node, and never following a symlink out of the cache."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dag_stages import diamond

from phys_pipeline.cache import DiskStore, admin
from phys_pipeline.cache.__main__ import age, main, size
from phys_pipeline.cache.disk import entry_parts
from phys_pipeline.cache.signing import EntrySigner
from phys_pipeline.executor import DagExecutor
from phys_pipeline.types import SimpleState, StageResult

START = SimpleState(None)
FOREIGN_KEY = "ab" * 16  # a valid hex key, for an entry written with another secret


@pytest.fixture
def filled(tmp_path: Path) -> DiskStore:
    """A cache holding the five nodes of the diamond DAG."""
    store = DiskStore(tmp_path / "cache")
    DagExecutor(cache=store).run(START, diamond())
    return store


def infos_by_node(store: DiskStore) -> dict[str, admin.EntryInfo]:
    return {info.node: info for info in admin.entries(store)}


def age_entry(info: admin.EntryInfo, seconds: float) -> None:
    """Make an entry look last used ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(info.path, (then, then))


def foreign_entry(store: DiskStore) -> None:
    """An entry written into the same directory with a secret this store does not hold."""
    stranger = DiskStore(store.root, signer=EntrySigner(b"another user's secret, 32 bytes!"))
    stranger.put(FOREIGN_KEY, StageResult(state=SimpleState(1.0), provenance={"node_id": "x"}))


def test_entries_name_the_node_and_stage_that_wrote_them(filled: DiskStore) -> None:
    infos = infos_by_node(filled)
    assert set(infos) == {"grid", "p1", "p2", "merge", "solo"}
    assert infos["p1"].stage == "dag_stages.PhaseStage"
    assert all(info.nbytes > 0 for info in infos.values())
    assert sum(info.nbytes for info in infos.values()) == sum(
        f.stat().st_size for f in filled.root.rglob("*") if f.is_file()
    )


def test_usage_adds_up_by_node_by_stage_and_in_total(filled: DiskStore) -> None:
    total = admin.usage(filled, by="total")
    assert [(row.name, row.entries) for row in total] == [("all", 5)]
    by_stage = {row.name: row for row in admin.usage(filled, by="stage")}
    assert by_stage["dag_stages.PhaseStage"].entries == 3
    assert sum(row.nbytes for row in by_stage.values()) == total[0].nbytes
    with pytest.raises(ValueError, match="choose node, stage or total"):
        admin.usage(filled, by="colour")


def test_verify_reports_a_foreign_entry_and_deletes_it_only_when_asked(
    filled: DiskStore,
) -> None:
    foreign_entry(filled)
    report = admin.verify(filled)
    assert report.checked == 6 and set(report.bad) == {FOREIGN_KEY} and report.removed == ()
    assert "signature" in report.bad[FOREIGN_KEY]
    assert filled.contains(FOREIGN_KEY)  # a reader never deletes what it cannot authenticate
    removed = admin.verify(filled, remove=True)
    assert removed.removed == (FOREIGN_KEY,) and not filled.contains(FOREIGN_KEY)
    assert admin.verify(filled).bad == {}


def test_prune_by_age_removes_only_entries_last_used_long_ago(filled: DiskStore) -> None:
    infos = infos_by_node(filled)
    age_entry(infos["grid"], 10 * 86400)
    removed = admin.prune(filled, older_than_s=7 * 86400)
    assert [info.key for info in removed] == [infos["grid"].key]
    assert set(infos_by_node(filled)) == {"p1", "p2", "merge", "solo"}


def test_prune_to_a_budget_keeps_the_most_recently_used(filled: DiskStore) -> None:
    infos = infos_by_node(filled)
    for rank, node in enumerate(["merge", "solo", "p2", "p1", "grid"]):  # merge newest
        age_entry(infos[node], 100.0 * (rank + 1))
    budget = infos["merge"].nbytes + infos["solo"].nbytes
    admin.prune(filled, max_bytes=budget)
    assert set(infos_by_node(filled)) == {"merge", "solo"}


def test_prune_by_node_removes_every_entry_of_that_node(filled: DiskStore) -> None:
    DagExecutor(cache=filled).run(SimpleState("another start"), diamond())
    removed = admin.prune(filled, nodes=["p1"])
    assert [info.node for info in removed] == ["p1", "p1"]
    assert "p1" not in infos_by_node(filled)


def test_a_symlink_inside_the_cache_is_never_followed(filled: DiskStore, tmp_path: Path) -> None:
    outside = tmp_path / "precious" / "ab" / "cd" / FOREIGN_KEY
    outside.mkdir(parents=True)
    (outside / "meta.json").write_text("{}")
    layout = entry_parts(FOREIGN_KEY)[0]
    (filled.root / layout / "zz").symlink_to(tmp_path / "precious")
    assert len(list(admin.entries(filled))) == 5
    admin.prune(filled, max_bytes=0)
    assert (outside / "meta.json").exists()
    assert list(admin.entries(filled)) == []


def test_the_command_line_lists_sizes_and_prunes(filled: DiskStore) -> None:
    out = io.StringIO()
    assert main(["--root", str(filled.root), "du", "--by", "node"], out) == 0
    lines = out.getvalue().splitlines()
    assert {line.split()[0] for line in lines} == {"grid", "p1", "p2", "merge", "solo", "total"}
    assert "5 entries" in lines[-1]
    out = io.StringIO()
    assert main(["--root", str(filled.root), "ls", "--limit", "2"], out) == 0
    assert len(out.getvalue().splitlines()) == 3 and "5 entries" in out.getvalue()
    foreign_entry(filled)
    out = io.StringIO()
    assert main(["--root", str(filled.root), "verify"], out) == 1
    assert "6 entries checked, 1 failed: left in place" in out.getvalue()
    out = io.StringIO()
    assert main(["--root", str(filled.root), "prune", "--node", "x"], out) == 0
    assert out.getvalue().startswith("removed 1 entries")


def test_clear_asks_for_yes(filled: DiskStore) -> None:
    with pytest.raises(SystemExit):
        main(["--root", str(filled.root), "clear"], io.StringIO())
    assert len(list(admin.entries(filled))) == 5
    assert main(["--root", str(filled.root), "clear", "--yes"], io.StringIO()) == 0
    assert list(admin.entries(filled)) == []


def test_sizes_and_ages_read_as_people_write_them() -> None:
    assert size("10G") == 10_000_000_000 and size("500M") == 500_000_000 and size("64") == 64
    assert age("7d") == 7 * 86400 and age("30m") == 1800
    with pytest.raises(Exception, match="not a size"):
        size("lots")


def test_python_dash_m_runs_it(filled: DiskStore) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "phys_pipeline.cache", "--root", str(filled.root), "du"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "total" in done.stdout and "5 entries" in done.stdout
