"""What the widget tests check of a stylesheet: every colour follows the JupyterLab theme."""

from __future__ import annotations

import re
from pathlib import Path

_COLOUR = r"#[0-9a-fA-F]{3,8}|rgba?\([^)]*\)"


def colour_variables(stylesheet: Path) -> set[str]:
    """The CSS variables ``stylesheet`` reads its colours from, after asserting that every
    colour in it (comments aside) is the fallback of one: ``var(--jp-..., #fff)``."""
    css = re.sub(r"/\*.*?\*/", "", stylesheet.read_text(), flags=re.S)
    colours = re.findall(f"({_COLOUR})", css)
    assert colours, f"{stylesheet.name}: no fallback colours"
    uses = re.findall(rf"var\((--[\w-]+), ({_COLOUR})\)", css)
    assert sorted(colour for _, colour in uses) == sorted(colours), "a colour with no variable"
    return {name for name, _ in uses}
