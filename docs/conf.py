"""Sphinx configuration: MyST pages, the tutorial notebooks (executed at build) and the API.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (the tests do the
same into a temporary directory). The notebooks are committed without outputs, so by default
every build executes them; set ``PHYS_PIPELINE_DOCS_EXECUTE=off`` for a quick prose-only build,
or ``cache`` to reuse outputs between local builds (jupyter-cache, keyed on the cells' code).
"""

from __future__ import annotations

import os
import re
from typing import Any

import phys_pipeline

project = "phys-pipeline"
author = "phys-pipeline developers"
copyright = "phys-pipeline developers"
release = version = phys_pipeline.__version__

extensions = [
    "myst_nb",  # MyST markdown pages and .ipynb notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# docs/notebooks is a symlink to the repository's notebooks/ folder, so the tutorials are
# rendered from the very files users open in JupyterLab or Binder.
exclude_patterns = ["_build", "notebooks/README.md", "**/.ipynb_checkpoints"]

# --- MyST and notebooks ----------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

nb_execution_mode = os.environ.get("PHYS_PIPELINE_DOCS_EXECUTE", "force")
nb_execution_timeout = 300  # per cell; each notebook takes well under a minute in total
nb_execution_raise_on_error = True  # a failing tutorial fails the build
nb_execution_show_tb = True
nb_execution_in_temp = True  # notebooks write caches and artifacts to temp dirs anyway
nb_merge_streams = True

# --- API reference ---------------------------------------------------------------------------

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# --- HTML ------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"phys-pipeline {release}"
html_static_path: list[str] = []


# --- docstring markup ------------------------------------------------------------------------

_INLINE_LITERAL = re.compile(r"(``.+?``)")


def _escape_absolute_value_bars(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """The physics docstrings write absolute values and norms as plain text (``|beta2|``,
    ``|A|^2``), which reST would read as substitution references. Escape those bars, leaving
    inline literals and ``::`` literal blocks alone, so the formulas render as written."""
    literal_indent: int | None = None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not line.strip() or indent > literal_indent:
                continue
            literal_indent = None
        if "|" in line:
            parts = _INLINE_LITERAL.split(line)
            lines[i] = "".join(
                part if part.startswith("``") else part.replace("|", r"\|") for part in parts
            )
        if line.rstrip().endswith("::"):
            literal_indent = indent


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _escape_absolute_value_bars)
