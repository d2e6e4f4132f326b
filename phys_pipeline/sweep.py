"""Parameter sweeps that propagate downstream.

``expand_sweep`` clones every swept node per grid point *and every node downstream of it*, so a
merge below a swept node runs once per variant. Clones get readable ids, ``<base>__`` and then
each swept value as ``<parameter>-<value>``, sorted by parameter and joined by ``_``
(``b__N-512``, ``merge__N-512``, ``s__a-0.1_b-x y``), the form phys-pipeline 2.0.0 gave; where
two swept branches meet, only variants with consistent values are paired. A node listed in
``gather`` is not cloned: it receives every variant of its parents. Values print as ``str``
(``1.0`` stays ``1.0``) unless two values of one parameter would then look alike (``1`` and
``"1"``); that parameter's values then print as ``repr``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import display
from ._edit import replace_config, replace_stage_config, settable_fields
from .dag import validate
from .errors import SweepError
from .types import NodeInputs, NodeSpec, SweepOrigin

__all__ = [
    "Assignment",
    "Formats",
    "NodeList",
    "SweepSpec",
    "expand_sweep",
    "sweep_table",
    "sweep_variants",
]

Assignment = tuple[tuple[str, Any], ...]  # ((label, value), ...) sorted by label
Formats = Mapping[str, Callable[[Any], str]]  # parameter label -> how its values print in ids


class NodeList(list[NodeSpec]):
    """The expanded nodes: a plain list that notebooks draw as its DAG."""

    def _repr_svg_(self) -> str | None:
        return display.draw(self, display.SVG)


@dataclass(frozen=True)
class SweepSpec:
    """Sweep ``node_id``'s config over ``param_grid`` (field -> values): every combination
    (``mode="product"``) or values taken together position by position (``mode="zip"``)."""

    node_id: str
    param_grid: Mapping[str, Sequence[Any]]
    mode: Literal["product", "zip"] = "product"

    def points(self) -> list[dict[str, Any]]:
        """The grid points, validated for shape (not yet against the config)."""
        if not self.param_grid:
            raise SweepError(f"sweep over node {self.node_id!r}: param_grid is empty")
        names = list(self.param_grid)
        columns = []
        for name in names:
            values = self.param_grid[name]
            if isinstance(values, str | bytes) or not isinstance(values, Iterable):
                raise SweepError(
                    f"sweep over node {self.node_id!r}: values of {name!r} must be a list, "
                    f"got {values!r}"
                )
            values = list(values)
            if not values:
                raise SweepError(f"sweep over node {self.node_id!r}: no values for {name!r}")
            columns.append(values)
        if self.mode == "zip":
            lengths = {name: len(col) for name, col in zip(names, columns, strict=True)}
            if len(set(lengths.values())) != 1:
                raise SweepError(
                    f"zipped sweep over node {self.node_id!r}: lists differ in length {lengths}"
                )
            rows = zip(*columns, strict=True)
        elif self.mode == "product":
            rows = itertools.product(*columns)
        else:
            raise SweepError(f"sweep over node {self.node_id!r}: unknown mode {self.mode!r}")
        return [dict(zip(names, row, strict=True)) for row in rows]


def _value_format(values: Sequence[Any]) -> Callable[[Any], str]:
    """``str`` if it tells ``values`` apart as well as ``repr`` does, else ``repr``."""
    printed = [str(v) for v in values]
    distinct = set(zip(printed, map(repr, values), strict=True))
    return str if len(set(printed)) == len(distinct) else repr


def _variant_id(base: str, assignment: Assignment, formats: Formats) -> str:
    if not assignment:
        return base
    return f"{base}__{'_'.join(f'{k}-{formats[k](v)}' for k, v in assignment)}"


def _check_unique_ids(nodes: Sequence[NodeSpec]) -> None:
    """Two variants (or a variant and an existing node) sharing an id would only fail later,
    as a duplicate node with no word of the sweep; name the nodes and values here."""
    seen: dict[str, NodeSpec] = {}
    for node in nodes:
        first = seen.setdefault(node.id, node)
        if first is not node:
            a, b = (n.sweep or SweepOrigin(n.id) for n in (first, node))
            raise SweepError(
                f"sweep: node {a.base_id!r} with {a.params} and node {b.base_id!r} "
                f"with {b.params} both get the id {node.id!r}; make the swept values distinct"
            )


def _consistent(assignments: Sequence[Assignment]) -> dict[str, Any] | None:
    """The parents' swept values merged, or None when two parents come from different points
    of one sweep. A point's values reach every clone below it as the very objects of its
    grid, so they are compared by identity: 1 == True and 0.0 == -0.0 are different points,
    and an array has no single truth under ==."""
    merged: dict[str, Any] = {}
    for assignment in assignments:
        for label, value in assignment:
            if label in merged and merged[label] is not value:
                return None
            merged[label] = value
    return merged


def expand_sweep(
    nodes: Sequence[NodeSpec],
    specs: Sequence[SweepSpec],
    *,
    gather: Iterable[str] = (),
) -> NodeList:
    """Expand ``specs`` over ``nodes``: swept nodes and their descendants are cloned per grid
    point; ``gather`` nodes receive all variants of their parents. Clones carry their
    :class:`SweepOrigin` in ``NodeSpec.sweep`` for tables and views. A bad spec
    is a :class:`SweepError` naming node, field and value; a value the config rejects is the
    config's own :class:`ConfigError` (with ``.field`` and ``.value``)."""
    order = validate(nodes)  # dependencies first
    by_id = {n.id: n for n in nodes}
    gather = set(gather)
    grids: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        if spec.node_id not in by_id:
            raise SweepError(
                f"sweep over unknown node {spec.node_id!r}; nodes: {', '.join(sorted(by_id))}"
            )
        if spec.node_id in grids:
            raise SweepError(f"node {spec.node_id!r} is swept twice; merge its param grids")
        cfg = by_id[spec.node_id].stage.cfg
        fields = settable_fields(cfg)
        for name, values in spec.param_grid.items():
            if name not in fields:
                raise SweepError(
                    f"sweep over node {spec.node_id!r}: {type(cfg).__name__} has no field "
                    f"{name!r} (swept over {values!r}); fields: {', '.join(sorted(fields))}"
                )
        points = spec.points()
        for point in points:  # validate every value before building anything
            replace_config(cfg, point, f"sweep over node {spec.node_id!r}")
        grids[spec.node_id] = points
    for gid in gather:
        if gid not in by_id:
            raise SweepError(f"gather names unknown node {gid!r}")
        if gid in grids:
            raise SweepError(
                f"node {gid!r} is both swept and a gather node; a gather node is not cloned, "
                "so sweep a node above it or drop it from gather"
            )
    param_owners: dict[str, set[str]] = {}
    for nid, points in grids.items():
        for name in points[0]:
            param_owners.setdefault(name, set()).add(nid)

    def label(nid: str, name: str) -> str:
        return name if len(param_owners[name]) == 1 else f"{nid}.{name}"

    formats = {
        label(nid, name): _value_format([point[name] for point in points])
        for nid, points in grids.items()
        for name in points[0]
    }

    variants: dict[str, list[tuple[str, Assignment]]] = {}
    expanded = NodeList()
    for nid in order:
        spec = by_id[nid]
        if nid in gather:
            deps = [vid for dep in spec.deps for vid, _ in variants[dep]]
            inputs = NodeInputs(True, spec.inputs.names if spec.inputs else None)
            expanded.append(_clone(spec, nid, deps, inputs, {}, None))
            variants[nid] = [(nid, ())]
            continue
        parent_choices = [variants[dep] for dep in spec.deps]
        own_points: list[dict[str, Any] | None] = grids.get(nid) or [None]
        mine: list[tuple[str, Assignment]] = []
        for combo in itertools.product(*parent_choices):
            merged = _consistent([assignment for _, assignment in combo])
            if merged is None:
                continue
            for point in own_points:
                params = dict(merged)
                if point is not None:
                    params.update({label(nid, k): v for k, v in point.items()})
                assignment = tuple(sorted(params.items()))
                vid = _variant_id(nid, assignment, formats)
                deps = [parent_vid for parent_vid, _ in combo]
                names = {
                    parent_vid: dep for (parent_vid, _), dep in zip(combo, spec.deps, strict=True)
                }
                inputs = spec.inputs
                if any(parent != name for parent, name in names.items()):
                    inputs = NodeInputs(inputs is not None and inputs.gather, names)
                expanded.append(_clone(spec, vid, deps, inputs, params, point))
                mine.append((vid, assignment))
        variants[nid] = mine
    _check_unique_ids(expanded)
    return expanded


def _clone(
    spec: NodeSpec,
    vid: str,
    deps: list[str],
    inputs: NodeInputs | None,
    params: dict[str, Any],
    point: dict[str, Any] | None,
) -> NodeSpec:
    """``spec`` as variant ``vid`` of it (itself when nothing changes)."""
    if vid == spec.id:  # no swept values: a gather node, or a node no sweep reaches
        if deps == spec.deps and inputs == spec.inputs:
            return spec
        return spec.replace(deps=deps, inputs=inputs)
    stage = spec.stage
    if point:
        cfg = replace_config(stage.cfg, point, f"sweep over node {spec.id!r}")
        stage = replace_stage_config(stage, cfg)
    sweep = SweepOrigin(spec.id, params)
    return spec.replace(id=vid, deps=deps, stage=stage, inputs=inputs, sweep=sweep)


def sweep_variants(
    result: Any, node: str | None = None
) -> list[tuple[str, SweepOrigin, dict[str, float]]]:
    """``(node id, its sweep origin, its metrics)`` for each swept variant a run
    completed (of base node ``node``, or all), in execution order: what tables and plots of a
    sweep read."""
    picked = []
    for nid in result.execution_order:
        sweep = result.plan.specs[nid].sweep
        if sweep is not None and (node is None or sweep.base_id == node):
            picked.append((nid, sweep, result.results[nid].metrics))
    return picked


def sweep_table(result: Any, node: str | None = None) -> Any:
    """One row per swept node variant: ``node`` (its id), ``base_id``, a column per swept
    parameter, then a column per metric. A pandas DataFrame when pandas is installed, else a list
    of dicts; ``node`` keeps one base node's variants.

    A column means one thing: a parameter or metric whose name is already taken (a stage that
    reports the ``N`` it was swept over as metric ``N``, a metric called ``node``) is put under
    ``param.<name>`` / ``metric.<name>``, so ``N`` stays the swept value and ``metric.N`` is what
    the stage reported."""
    picked = sweep_variants(result, node)
    taken = {"node", "base_id"}
    params = _columns([k for _, sweep, _ in picked for k in sweep.params], "param", taken)
    metrics = _columns([k for _, _, values in picked for k in values], "metric", taken)
    rows = [
        {
            "node": nid,
            "base_id": sweep.base_id,
            **{params[k]: v for k, v in sweep.params.items()},
            **{metrics[k]: v for k, v in values.items()},
        }
        for nid, sweep, values in picked
    ]
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


def _columns(names: Iterable[str], prefix: str, taken: set[str]) -> dict[str, str]:
    """Column names for ``names``: each as is, or ``<prefix>.<name>`` if already in ``taken``
    (which grows with the names given out)."""
    columns = {}
    for name in dict.fromkeys(names):
        column = f"{prefix}.{name}" if name in taken else name
        if column in taken:
            raise SweepError(f"sweep table: {prefix} {name!r} clashes with column {column!r}")
        taken.add(column)
        columns[name] = column
    return columns
