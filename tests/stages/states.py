"""A user-defined state, for the cache tests: none of the built-in states, so a store can keep
it only as a signed pickle (its array out of band, whatever its label holds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phys_pipeline.types import State


@dataclass(slots=True)
class Trace(State):
    """A sampled trace (a field, a spectrum, a probe signal) and a label of any kind."""

    samples: np.ndarray
    label: object

    def deepcopy(self) -> Trace:
        return Trace(self.samples.copy(), self.label)

    def hashable_repr(self) -> bytes:
        return self.samples.tobytes() + repr(self.label).encode()
