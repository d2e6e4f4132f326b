"""The documentation site builds with warnings as errors, and the tutorials are committed clean."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook_problems(path: Path) -> list[str]:
    """What makes a notebook unfit to commit: outputs, execution counts, saved widget state."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    if "widgets" in notebook.get("metadata", {}):
        problems.append("notebook metadata holds saved widget state ('widgets')")
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {index} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {index} has execution_count {cell['execution_count']}")
    return problems


def test_there_are_tutorial_notebooks() -> None:
    assert len(NOTEBOOKS) >= 5, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    problems = notebook_problems(path)
    assert not problems, (
        f"{path.name}: {'; '.join(problems)}. Clear it before committing: "
        f"jupyter nbconvert --clear-output --inplace notebooks/{path.name}"
    )


def test_outputs_check_notices_outputs_counts_and_widget_state(tmp_path: Path) -> None:
    dirty = {
        "cells": [
            {"cell_type": "markdown", "source": "# t", "metadata": {}},
            {
                "cell_type": "code",
                "source": "1",
                "outputs": [{"output_type": "stream"}],
                "execution_count": 3,
                "metadata": {},
            },
        ],
        "metadata": {"widgets": {}},
    }
    path = tmp_path / "dirty.ipynb"
    path.write_text(json.dumps(dirty))
    assert notebook_problems(path) == [
        "notebook metadata holds saved widget state ('widgets')",
        "cell 1 has 1 output(s)",
        "cell 1 has execution_count 3",
    ]


def test_every_notebook_is_in_the_docs_toctree() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^notebooks/(\S+)$", index, re.M))
    assert listed == {p.stem for p in NOTEBOOKS}


def test_docs_see_the_notebooks_folder() -> None:
    """docs/notebooks links to ../notebooks, so the site renders the files users run."""
    assert (DOCS / "notebooks").resolve() == (ROOT / "notebooks").resolve()


MISSING = [m for m in ("sphinx", "myst_nb", "furo") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(
    bool(MISSING),
    reason=f"docs toolchain not installed ({', '.join(MISSING)}): pip install -e '.[docs]'",
)
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    # myst-nb writes executed notebooks next to the output folder, so keep both in tmp_path
    out = tmp_path / "html"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + "\n" + proc.stderr[-5000:]
    pages = [
        "index",
        "guide",
        "concepts",
        "scaling",
        "api/index",
        "api/core",
        *(f"notebooks/{p.stem}" for p in NOTEBOOKS),
    ]
    for page in pages:
        assert (out / f"{page}.html").is_file(), f"{page}.html was not built"
    # the tutorials were executed during the build, so their pages show outputs
    quickstart = (out / "notebooks" / "01_quickstart.html").read_text(encoding="utf-8")
    assert "observed order of convergence: 2.000" in quickstart
    api = (out / "api" / "core.html").read_text(encoding="utf-8")
    assert 'id="phys_pipeline.types.NodeSpec"' in api
