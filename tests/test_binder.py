"""The Binder configuration installs what the tutorials need.

The fast tests read ``binder/`` and check it against ``pyproject.toml`` and the notebooks'
imports. The slow test does what repo2docker does: a fresh environment, the repository copied
in, ``binder/postBuild`` run from its root; then it executes every notebook in that environment.
It downloads packages, so it runs only with ``PHYS_PIPELINE_SLOW_TESTS=1``.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# optional integrations of the package itself, and the extra each one needs
GATED_SUBPACKAGES = {"phys_pipeline.widgets": "jupyter", "phys_pipeline.dask": "dask"}
SLOW = os.environ.get("PHYS_PIPELINE_SLOW_TESTS") == "1"


def project_install_extras() -> set[str]:
    """The extras of this project that the Binder files install (``-e ".[a,b]"`` or ``.[a,b]``)."""
    text = "\n".join(
        path.read_text(encoding="utf-8")
        for name in ("postBuild", "requirements.txt")
        if (path := BINDER / name).is_file()
    )
    installs = re.findall(r"""(?:^|\s)(?:-e\s+)?["']?\.\[([\w,\s-]+)\]["']?""", text, re.M)
    assert installs, "the binder files never install the project itself (pip install -e .[...])"
    return {extra.strip() for group in installs for extra in group.split(",")}


def notebook_imports(path: Path) -> set[str]:
    """Dotted names of every module a notebook's code cells import (magics skipped)."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def requirement_closure(requirements: Iterable[str]) -> set[str]:
    """Canonical names of ``requirements`` and, through installed metadata, all they pull in."""
    seen: set[str] = set()
    queue = [Requirement(r) for r in requirements]
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            dep = Requirement(text)
            wanted = [{"extra": extra} for extra in req.extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in wanted):
                queue.append(dep)
    return seen


def test_runtime_matches_the_projects_python() -> None:
    runtime = (BINDER / "runtime.txt").read_text(encoding="utf-8").strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"binder/runtime.txt should read python-X.Y, not {runtime!r}"
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert Version(match.group(1)) >= Version(minimum)


def test_post_build_is_an_executable_script_run_from_the_repository_root() -> None:
    script = BINDER / "postBuild"
    assert os.access(script, os.X_OK), "repo2docker runs binder/postBuild only if executable"
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in text  # a failed install must fail the image build
    assert 'cd "$(dirname "$0")/.."' in text  # the project path below is the repository root


def test_binder_installs_the_project_with_existing_extras() -> None:
    extras = project_install_extras()
    assert {"jupyter", "dask"} <= extras
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_binder_extras_cover_every_notebook_import() -> None:
    extras = project_install_extras()
    optional = PYPROJECT["project"]["optional-dependencies"]
    installed = requirement_closure(
        [*PYPROJECT["project"]["dependencies"], *(r for e in extras for r in optional[e])]
    )
    providers = metadata.packages_distributions()
    missing = {}
    for path in NOTEBOOKS:
        for module in sorted(notebook_imports(path)):
            top = module.split(".")[0]
            gate = next((e for p, e in GATED_SUBPACKAGES.items() if module.startswith(p)), None)
            if gate is not None and gate not in extras:
                missing[f"{path.name}: {module}"] = f"extra {gate!r}"
            if top == "phys_pipeline" or top in sys.stdlib_module_names:
                continue
            dists = {canonicalize_name(d) for d in providers.get(top, [])}
            if not dists & installed:
                missing[f"{path.name}: {module}"] = ", ".join(sorted(dists)) or "unknown"
    assert not missing, f"Binder would not install: {missing}"


def test_notebook_import_scan_sees_plain_from_and_dotted_imports(tmp_path: Path) -> None:
    cell = {
        "cell_type": "code",
        "source": [
            "%matplotlib inline\n",
            "import numpy as np\n",
            "from phys_pipeline.widgets import PipelineApp\n",
        ],
    }
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps({"cells": [cell]}))
    assert notebook_imports(path) == {
        "numpy",
        "phys_pipeline.widgets",
        "phys_pipeline.widgets.PipelineApp",
    }


# --- the slow end-to-end check --------------------------------------------------------------

EXECUTE_NOTEBOOKS = r"""
import sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

expected_prefix = sys.prefix
probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.prefix)")])
NotebookClient(probe, kernel_name="python3").execute()
kernel_prefix = probe.cells[0].outputs[0]["text"].strip()
assert kernel_prefix == expected_prefix, f"kernel runs in {kernel_prefix}, not the binder venv"

for path in sys.argv[1:]:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(
        notebook, kernel_name="python3", timeout=600,
        resources={"metadata": {"path": str(Path(path).parent)}},
    ).execute()
    print(f"{Path(path).name}: {time.perf_counter() - started:.1f} s", flush=True)
"""


def copy_repository(destination: Path) -> Path:
    """What repo2docker puts in the image: the working tree, without VCS and build clutter."""
    clutter = shutil.ignore_patterns(
        ".git",
        "__pycache__",
        "*.egg-info",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".cache",
        "_build",
        ".ipynb_checkpoints",
        ".venv*",
        "test-artifacts",
        "artifacts",
    )
    return Path(shutil.copytree(ROOT, destination, ignore=clutter, symlinks=True))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not SLOW, reason="downloads packages; set PHYS_PIPELINE_SLOW_TESTS=1")
def test_fresh_binder_environment_runs_every_notebook(tmp_path: Path) -> None:
    repo = copy_repository(tmp_path / "repo")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    # the user's pip configuration (index, certificates) stays; Python and Jupyter settings that
    # could leak the outer environment into the new one do not
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "JUPYTER", "IPYTHON", "VIRTUAL_ENV", "MPLBACKEND"))
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(env_dir),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    build = subprocess.run(
        ["bash", str(repo / "binder" / "postBuild")],
        cwd=repo,  # repo2docker runs postBuild from the repository root
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    notebooks = sorted(str(p) for p in (repo / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == len(NOTEBOOKS)
    run = subprocess.run(
        [str(bin_dir / "python"), "-c", EXECUTE_NOTEBOOKS, *notebooks],
        cwd=repo / "notebooks",
        env={**env, "XDG_CONFIG_HOME": str(tmp_path / "config")},  # this run's cache signing key
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-8000:]
    print(run.stdout)


def test_readme_badge_opens_jupyterlab_on_an_existing_notebook() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"https://mybinder\.org/v2/gh/[^)\s]+", readme)
    assert links, "README.md has no Binder link"
    for link in links:
        target = re.search(r"[?&]urlpath=lab/tree/([^&#]+)", link)
        assert target, f"{link} does not open JupyterLab (urlpath=lab/tree/...)"
        assert (ROOT / target.group(1)).is_file(), f"{link} opens a missing file"
