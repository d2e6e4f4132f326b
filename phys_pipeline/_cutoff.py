"""Early cutoff: a node that is stale only because something upstream changed need not run
when what it actually reads is unchanged.

Keys are computed before anything runs, so an upstream edit makes every descendant stale.
But a recomputed node often produces the very output it produced before (an edit that clips to
the same value, a grid rounded to the same size, a tag changed). Once such a node has run, its
children's inputs are known to be identical to last time, so their previous results are valid:
they are loaded from the cache and filed under the new keys too (the next run hits directly).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .dag import Plan, Staleness
from .types import StageResult, State

__all__ = [
    "EarlyCutoff",
    "OutputMemory",
]


class OutputMemory(Protocol):
    """What early cutoff needs of the cache that owns it (``DagCache``)."""

    def get(self, key: str) -> StageResult | None: ...

    def put(self, key: str, result: StageResult) -> None: ...

    def output_digest(
        self, key: str, state: Mapping[str, State] | None = None, node_id: str = ""
    ) -> bytes | None: ...


class EarlyCutoff:
    """Decides, once a stale node's parents are done, whether its previous result still holds.

    A node qualifies when its only reason to run is "upstream changed" (same stage, code,
    config, policy and dependencies as in ``previous``) and every parent whose key changed
    kept its code and produced an output whose ``hashable_repr()`` equals that of the
    parent's previous output. Made by ``DagCache.early_cutoff``, which owns the results and
    the output digests it compares. Called from scheduler worker threads: it only reads the
    plans and uses the (thread-safe) cache.
    """

    def __init__(
        self, plan: Plan, previous: Plan, reasons: Mapping[str, Staleness], cache: OutputMemory
    ) -> None:
        self.plan, self.previous, self.cache = plan, previous, cache
        self.candidates = {
            nid for nid, why in reasons.items() if why.reasons == ("upstream changed",)
        }

    def reuse(self, node_id: str, parent_states: Mapping[str, State]) -> StageResult | None:
        """The node's previous result, filed under its new key, if its inputs are unchanged."""
        if node_id not in self.candidates:
            return None
        cache = self.cache
        for dep in self.plan.nodes[node_id].deps:
            parent, before = self.plan.nodes[dep], self.previous.nodes[dep]
            if parent.key == before.key:
                continue
            if parent.code_version != before.code_version:
                # equal bytes from new code may be a state whose class (and so what its
                # methods return to this node) changed: only data edits are cut off
                return None
            old_output = cache.output_digest(before.key)
            if old_output is None:
                return None
            if cache.output_digest(parent.key, parent_states, dep) != old_output:
                return None
        previous_result = cache.get(self.previous.nodes[node_id].key)
        if previous_result is not None:
            cache.put(self.plan.nodes[node_id].key, previous_result)
        return previous_result
