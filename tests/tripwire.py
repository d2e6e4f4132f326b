"""A value whose unpickling leaves a mark: the cache tests put it where a forged or tampered
entry would reach an unpickler, and check that the mark never appears."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class Tripwire:
    """Unpickling this creates ``path``: a stand-in for an attacker's code running."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.path,))
