"""Every ```python block of every docs/*.md file and of the README runs, in order, one
namespace per file."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number of the block's first code line, code) for each ```python block."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in PYTHON_BLOCK.finditer(text)
    ]


def test_python_block_parser_finds_fenced_blocks_with_line_numbers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# T\n\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = x\n```\n")
    assert python_blocks(page) == [(4, "x = 1\n"), (11, "y = x\n")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_doc_page_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write artifacts and caches
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # cache signing key file
    blocks = python_blocks(page)
    assert blocks, f"{page.name} has no ```python blocks"
    monkeypatch.delenv("PHYS_PIPELINE_CACHE_KEY", raising=False)
    # a fresh __main__ module, as in a notebook: dataclasses look classes up in sys.modules, and
    # cloudpickle sends __main__ classes to worker processes by value
    module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", module)
    for first_line, code in blocks:
        # pad so that tracebacks point at the right line of the .md file; dont_inherit keeps
        # this file's __future__ imports out of the docs' code
        source = "\n" * (first_line - 1) + code
        exec(compile(source, str(page), "exec", dont_inherit=True), module.__dict__)
