"""2.0.0's hashing functions under their names and arguments, computed by our canonical
hashing: each gives the hash our provenance records for the same thing, so comparisons that
2.0.0 code makes against a run's provenance hold."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import UnhashableValueError
from ..hashing import config_hash, hexdigest
from ..policy import EMPTY_POLICY_HASH, PolicyLike, as_policy
from ..types import State

__all__ = [
    "digest_many",
    "hash_dag_node",
    "hash_model",
    "hash_policy",
    "hash_state",
    "stable_json",
]

hash_model = config_hash  # a config's hash, as stage and node provenance record it


def hash_policy(policy: PolicyLike) -> str:
    """A policy's hash, as run provenance records it (``PolicyBag.hash``); insertion order
    does not matter."""
    bag = as_policy(policy)
    return bag.hash() if bag is not None else EMPTY_POLICY_HASH


def hash_state(state: State) -> str:
    """Hex digest of a state's ``hashable_repr()``."""
    return hexdigest(state.hashable_repr(), "state")


def hash_dag_node(
    *,
    node_id: str,
    op_name: str,
    version: str,
    cfg_hash: str | None,
    input_hash: str,
    dep_hashes: Mapping[str, str],
    policy_hash: str | None,
    cache_version: str = "v2",
) -> str:
    """A digest of a node's ingredients as 2.0.0 named them (``dep_hashes`` in any order).
    Not the key our plans give a node: ``make_plan`` folds in the stage's code too."""
    ingredients = {
        "cache_version": cache_version,
        "node_id": node_id,
        "op_name": op_name,
        "version": version,
        "cfg_hash": cfg_hash,
        "input_hash": input_hash,
        "dep_hashes": dict(sorted(dep_hashes.items())),  # dicts hash in order: make one
        "policy_hash": policy_hash,
    }
    return hexdigest(ingredients, f"DAG node {node_id!r}")


def digest_many(*parts: str) -> str:
    """One digest of several strings, which cannot collide by moving text between them."""
    return hexdigest(parts, "digest_many")


def stable_json(obj: Mapping[str, Any]) -> bytes:
    """``obj`` as compact JSON with sorted keys. A value JSON cannot hold is an
    UnhashableValueError, never its ``str()`` (two values would print alike)."""

    def refuse(value: Any) -> Any:
        raise UnhashableValueError("stable_json", value)

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=refuse).encode()


DEPRECATED = {
    "hash_model": "use phys_pipeline.hashing.config_hash(cfg)",
    "hash_policy": "use PolicyBag(policy).hash()",
    "hash_state": "use phys_pipeline.hashing.hexdigest(state.hashable_repr())",
    "hash_dag_node": "keys come from the plan: DagExecutor.plan(state, nodes).keys",
    "digest_many": "use phys_pipeline.hashing.hexdigest(parts)",
    "stable_json": "use json.dumps(obj, sort_keys=True)",
}
