"""Sweeps: clones propagate downstream with readable ids, grids zip or multiply, several sweeps
pair consistently, gather nodes see every variant, and bad specs name their culprit."""

from __future__ import annotations

import pytest
from dag_stages import PhaseCfg, PhaseStage, SumCfg, SumStage, diamond

from phys_pipeline.errors import ConfigError, SweepError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.sweep import SweepSpec, expand_sweep, sweep_table
from phys_pipeline.types import NodeSpec, SimpleState


def ids(nodes):
    return [n.id for n in nodes]


def by_id(nodes):
    return {n.id: n for n in nodes}


def test_sweep_clones_the_node_and_everything_downstream():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    assert ids(nodes) == [
        "grid",
        "p1[gdd=1]",
        "p1[gdd=2]",
        "p2",
        "merge[gdd=1]",
        "merge[gdd=2]",
        "solo",
    ]
    merged = by_id(nodes)["merge[gdd=2]"]
    assert merged.deps == ["p1[gdd=2]", "p2"]
    assert by_id(nodes)["p1[gdd=2]"].stage.cfg.gdd == 2.0


def test_original_nodes_are_not_modified():
    original = diamond()
    expand_sweep(original, [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    assert ids(original) == ["grid", "p1", "p2", "merge", "solo"]
    assert original[1].stage.cfg.gdd == 10.0


def test_merge_below_swept_node_sees_parents_under_their_original_ids():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [4.0, 8.0]})])
    out = DagExecutor(scheduler=LocalScheduler(max_workers=2)).run(SimpleState(None), nodes)
    assert out.results["merge[gdd=8]"].state.meta["parents"] == ["p1", "p2"]
    assert out.metrics["merge[gdd=8].total"] == pytest.approx(0.5 * 8 + 0.5 * 20)
    assert out.metrics["merge[gdd=4].total"] == pytest.approx(0.5 * 4 + 0.5 * 20)


def test_product_grid_multiplies_and_zip_pairs():
    product = expand_sweep(
        diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0], "window": ["none", "hann"]})]
    )
    assert len([n for n in product if n.id.startswith("p1[")]) == 4
    assert "p1[gdd=2,window=hann]" in ids(product)
    zipped = expand_sweep(
        diamond(),
        [SweepSpec("p1", {"gdd": [1.0, 2.0], "window": ["none", "hann"]}, mode="zip")],
    )
    assert [n.id for n in zipped if n.id.startswith("p1[")] == [
        "p1[gdd=1,window=none]",
        "p1[gdd=2,window=hann]",
    ]


def test_two_sweeps_meeting_at_a_merge_multiply():
    nodes = expand_sweep(
        diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0]}), SweepSpec("p2", {"gdd": [3.0, 4.0, 5.0]})]
    )
    merges = [n for n in nodes if n.id.startswith("merge")]
    assert len(merges) == 6
    # the parameter name is shared by two swept nodes, so labels say which node it belongs to
    assert "merge[p1.gdd=2,p2.gdd=5]" in ids(merges)


def test_diamond_below_one_sweep_pairs_only_matching_variants():
    nodes = [
        *diamond()[:1],
        NodeSpec(id="src", deps=["grid"], stage=PhaseStage(PhaseCfg(name="src"))),
        NodeSpec(id="left", deps=["src"], stage=PhaseStage(PhaseCfg(name="left"))),
        NodeSpec(id="right", deps=["src"], stage=PhaseStage(PhaseCfg(name="right"))),
        NodeSpec(id="join", deps=["left", "right"], stage=SumStage(SumCfg(name="join"))),
    ]
    expanded = expand_sweep(nodes, [SweepSpec("src", {"gdd": [1.0, 2.0, 3.0]})])
    joins = [n for n in expanded if n.id.startswith("join")]
    assert [j.id for j in joins] == ["join[gdd=1]", "join[gdd=2]", "join[gdd=3]"]
    assert by_id(expanded)["join[gdd=3]"].deps == ["left[gdd=3]", "right[gdd=3]"]


def test_gather_node_receives_every_variant():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0, 3.0]})], gather=["merge"])
    gather = by_id(nodes)["merge"]
    assert gather.deps == ["p1[gdd=1]", "p1[gdd=2]", "p1[gdd=3]", "p2"]
    out = DagExecutor().run(SimpleState(None), nodes)
    assert out.results["merge"].state.meta["parents"] == gather.deps


def test_sweep_table_has_params_and_metrics():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    out = DagExecutor().run(SimpleState(None), nodes)
    table = sweep_table(out, node="merge")
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table
    assert [(r["gdd"], r["total"]) for r in rows] == [(1.0, 10.5), (2.0, 11.0)]


def test_sweep_clones_hit_the_cache_of_the_unswept_parts():
    from phys_pipeline.cache import MemoryStore

    executor = DagExecutor(cache=MemoryStore(max_bytes=1 << 26))
    executor.run(SimpleState(None), diamond())
    out = executor.run(
        SimpleState(None), expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [10.0, 3.0]})])
    )
    assert set(out.hits) >= {"grid", "p2", "solo", "p1[gdd=10]"}
    assert sorted(out.ran) == ["merge[gdd=10]", "merge[gdd=3]", "p1[gdd=3]"]


# --- bad specs -------------------------------------------------------------------------------


def test_unknown_node_is_named():
    with pytest.raises(SweepError, match="'p9'"):
        expand_sweep(diamond(), [SweepSpec("p9", {"gdd": [1.0]})])


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match="'gdd2'"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd2": [1.0]})])


def test_invalid_value_names_node_field_and_value():
    with pytest.raises(ConfigError) as info:
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 1e9]})])
    assert info.value.field == "gdd" and info.value.value == 1e9
    assert "p1" in str(info.value)


def test_empty_grid_and_empty_values_are_errors():
    with pytest.raises(SweepError, match="empty"):
        expand_sweep(diamond(), [SweepSpec("p1", {})])
    with pytest.raises(SweepError, match="'gdd'"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": []})])


def test_zip_with_unequal_lengths_is_an_error():
    with pytest.raises(SweepError, match="differ in length"):
        expand_sweep(
            diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0], "window": ["none"]}, mode="zip")]
        )


def test_sweeping_a_node_twice_is_an_error():
    with pytest.raises(SweepError, match="twice"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0]}), SweepSpec("p1", {"gdd": [2.0]})])


def test_scalar_instead_of_list_is_an_error():
    with pytest.raises(SweepError, match="must be a list"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": 1.0})])
