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
from .types import DagState, StageResult, State

__all__ = [
    "CutoffCache",
    "EarlyCutoff",
]


class CutoffCache(Protocol):
    """What early cutoff needs of the cache that owns it (``DagCache``)."""

    def get(self, key: str) -> StageResult | None: ...

    def put(self, key: str, result: StageResult) -> None: ...

    def input_digest_hint(self, key: str) -> str | None: ...


class EarlyCutoff:
    """Decides, once a stale node's parents are done, whether its previous result still holds.

    A node qualifies when only its parents' keys changed (the rest of its key, ``own``, is
    the same as in ``previous``), every parent whose key changed kept its code, and the input
    it would now receive hashes to the ``input_digest`` its previous result recorded: the
    digest of what that result was computed from, not of what a store holds now (an entry
    rewritten under the same key cannot mislead it). Made by ``DagCache.early_cutoff``.
    Called from scheduler worker threads: it only reads the plans and uses the (thread-safe)
    cache.
    """

    def __init__(
        self, plan: Plan, previous: Plan, reasons: Mapping[str, Staleness], cache: CutoffCache
    ) -> None:
        self.plan, self.previous, self.cache = plan, previous, cache
        self.candidates = {
            nid
            for nid, why in reasons.items()
            if why.reasons == ("upstream changed",)
            and plan.nodes[nid].own  # "": a plan made without it (make_plan's ``cutoff``)
            and plan.nodes[nid].own == previous.nodes[nid].own
        }
        self._digests: dict[str, bytes] = {}  # node id -> its output's digest, this run

    def reuse(self, node_id: str, parent_states: Mapping[str, State]) -> StageResult | None:
        """The node's previous result, filed under its new key, if its input is unchanged."""
        if node_id not in self.candidates:
            return None
        now, before = self.plan.nodes[node_id], self.previous.nodes[node_id]
        for dep in now.deps:
            parent, old = self.plan.nodes[dep], self.previous.nodes[dep]
            if parent.key != old.key and parent.code_version != old.code_version:
                # equal bytes from new code may be a state whose class (and so what its
                # methods return to this node) changed: only data edits are cut off
                return None
        hint = self.cache.input_digest_hint(before.key)
        if hint is not None and hint != self._input_digest(node_id, parent_states):
            return None  # what it was computed from is not this input: no need to read it
        previous_result = self.cache.get(before.key)
        if previous_result is None:
            return None
        recorded = previous_result.provenance.get("input_digest")
        if not isinstance(recorded, str) or self._input_digest(node_id, parent_states) != recorded:
            return None
        self.cache.put(now.key, previous_result)
        return previous_result

    def _input_digest(self, node_id: str, parent_states: Mapping[str, State]) -> str:
        """The ``hashable_repr`` of the input the node would receive (as ``node_input`` builds
        it), from its parents' output digests; hex."""
        spec = self.plan.specs[node_id]
        inputs = spec.inputs
        outputs = [self._output_digest(dep, parent_states) for dep in spec.deps]
        if len(outputs) == 1 and not (inputs is not None and inputs.gather):
            return outputs[0].hex()
        names = (inputs.names if inputs is not None else None) or {}
        parts = {names.get(dep, dep): out for dep, out in zip(spec.deps, outputs, strict=True)}
        return DagState.digest_of(parts).hex()

    def _output_digest(self, dep: str, parent_states: Mapping[str, State]) -> bytes:
        """A parent's output digest this run: sent by the worker that filed it (its state
        need not be loaded), or hashed from the state."""
        known = self._digests.get(dep)
        if known is None:
            filed = getattr(parent_states, "filed", {}).get(dep)
            known = filed.digest if filed is not None else parent_states[dep].hashable_repr()
            self._digests[dep] = known = bytes(known)
        return known
