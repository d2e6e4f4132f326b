"""Dependencies point one way: the core never imports the view layer (views/, widgets/), the
package's modules import each other without a cycle, and the core's reprs are still drawn,
by the view layer loaded as a plugin (phys_pipeline.display)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import phys_pipeline
from phys_pipeline.dag import make_plan
from phys_pipeline.types import NodeSpec, SimpleState

PACKAGE = Path(phys_pipeline.__file__).parent
VIEW_LAYER = ("views", "widgets", "render", "demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
CORE = sorted(m for m in MODULES if not set(m.split(".")[1:]) & set(VIEW_LAYER))


def imported_modules(module: str, path: Path) -> set[str]:
    """The package's modules ``module`` imports anywhere in its code (inside functions too)."""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = node.module or ""
            if node.level:
                stem = ".".join(base[: len(base) - node.level + 1] + ([stem] if stem else []))
            targets = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def test_no_import_cycle_among_the_packages_modules():
    graph = nx.DiGraph(
        (module, target)
        for module, path in MODULES.items()
        for target in imported_modules(module, path)
    )
    assert list(nx.simple_cycles(graph)) == []


@pytest.mark.parametrize("module", CORE)
def test_a_core_module_never_names_the_view_layer(module):
    view_imports = {
        target
        for target in imported_modules(module, MODULES[module])
        if set(target.split(".")[1:]) & set(VIEW_LAYER)
    }
    assert view_imports == set()


def test_importing_every_core_module_loads_no_view_module():
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('phys_pipeline.views', "
        "'phys_pipeline.widgets', 'phys_pipeline.render'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_plan_is_still_drawn_by_the_view_layer_loaded_as_a_plugin():
    from dag_stages import GridCfg, GridStage

    plan = make_plan([NodeSpec(id="grid", stage=GridStage(GridCfg()))], SimpleState())
    svg = plan._repr_svg_()
    assert svg is not None and svg.startswith("<svg") and 'data-node="grid"' in svg


def test_the_old_render_module_still_works_and_says_it_is_deprecated():
    code = (
        "import warnings\nwarnings.simplefilter('error', DeprecationWarning)\n"
        "import phys_pipeline.render\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "phys_pipeline.render is deprecated: import from phys_pipeline.views" in out.stderr


@pytest.mark.parametrize(
    "module", [m for m in sorted(MODULES) if not m.rpartition(".")[2].startswith("_")]
)
def test_a_public_module_says_what_it_exports(module):
    import importlib.util

    if module.endswith((".demo", ".render")):
        pytest.skip("a script, and a deprecated re-export of views")
    loaded = importlib.import_module(module)
    exported = getattr(loaded, "__all__", None)
    assert exported is not None, f"{module} has no __all__"
    missing = [
        name
        for name in exported
        if not hasattr(loaded, name)
        and importlib.util.find_spec(f"{module}.{name}") is None  # a submodule loaded on demand
    ]
    assert missing == []
