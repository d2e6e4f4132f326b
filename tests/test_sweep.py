"""Sweeps: clones propagate downstream with readable ids, grids zip or multiply, several sweeps
pair consistently, gather nodes see every variant, and bad specs name their culprit."""

from __future__ import annotations

import html
import sys

import pytest
from dag_stages import PhaseCfg, PhaseStage, SumCfg, SumStage, diamond, with_stage

import phys_pipeline
from phys_pipeline.dag import make_plan
from phys_pipeline.errors import ConfigError, SweepError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.sweep import NodeList, SweepSpec, expand_sweep, sweep_table
from phys_pipeline.types import NodeSpec, SimpleState, StageResult


def ids(nodes):
    return [n.id for n in nodes]


def variant_ids(nodes, base):
    return [n.id for n in nodes if n.id.startswith(f"{base}__")]


def by_id(nodes):
    return {n.id: n for n in nodes}


def test_sweep_clones_the_node_and_everything_downstream():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    assert ids(nodes) == [
        "grid",
        "p1__gdd-1.0",
        "p1__gdd-2.0",
        "p2",
        "merge__gdd-1.0",
        "merge__gdd-2.0",
        "solo",
    ]
    merged = by_id(nodes)["merge__gdd-2.0"]
    assert merged.deps == ["p1__gdd-2.0", "p2"]
    assert by_id(nodes)["p1__gdd-2.0"].stage.cfg.gdd == 2.0


def test_original_nodes_are_not_modified():
    original = diamond()
    expand_sweep(original, [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    assert ids(original) == ["grid", "p1", "p2", "merge", "solo"]
    assert original[1].stage.cfg.gdd == 10.0


def test_merge_below_swept_node_sees_parents_under_their_original_ids():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [4.0, 8.0]})])
    out = DagExecutor(scheduler=LocalScheduler(max_workers=2)).run(SimpleState(None), nodes)
    assert out.results["merge__gdd-8.0"].state.meta["parents"] == ["p1", "p2"]
    assert out.metrics["merge__gdd-8.0.total"] == pytest.approx(0.5 * 8 + 0.5 * 20)
    assert out.metrics["merge__gdd-4.0.total"] == pytest.approx(0.5 * 4 + 0.5 * 20)


def test_product_grid_multiplies_and_zip_pairs():
    product = expand_sweep(
        diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0], "window": ["none", "hann"]})]
    )
    assert len(variant_ids(product, "p1")) == 4
    assert "p1__gdd-2.0_window-hann" in ids(product)
    zipped = expand_sweep(
        diamond(),
        [SweepSpec("p1", {"gdd": [1.0, 2.0], "window": ["none", "hann"]}, mode="zip")],
    )
    assert variant_ids(zipped, "p1") == [
        "p1__gdd-1.0_window-none",
        "p1__gdd-2.0_window-hann",
    ]


def test_two_sweeps_meeting_at_a_merge_multiply():
    nodes = expand_sweep(
        diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0]}), SweepSpec("p2", {"gdd": [3.0, 4.0, 5.0]})]
    )
    merges = [n for n in nodes if n.id.startswith("merge")]
    assert len(merges) == 6
    # the parameter name is shared by two swept nodes, so labels say which node it belongs to
    assert "merge__p1.gdd-2.0_p2.gdd-5.0" in ids(merges)


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
    assert [j.id for j in joins] == ["join__gdd-1.0", "join__gdd-2.0", "join__gdd-3.0"]
    assert by_id(expanded)["join__gdd-3.0"].deps == ["left__gdd-3.0", "right__gdd-3.0"]


def test_gather_node_receives_every_variant():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0, 3.0]})], gather=["merge"])
    gather = by_id(nodes)["merge"]
    assert gather.deps == ["p1__gdd-1.0", "p1__gdd-2.0", "p1__gdd-3.0", "p2"]
    out = DagExecutor().run(SimpleState(None), nodes)
    assert out.results["merge"].state.meta["parents"] == gather.deps


MERGE_ROWS = [
    {"node": "merge__gdd-1.0", "base_id": "merge", "gdd": 1.0, "total": 10.5},
    {"node": "merge__gdd-2.0", "base_id": "merge", "gdd": 2.0, "total": 11.0},
]


def merge_table():
    """The sweep table of merge, below p1 swept over gdd = 1 and 2."""
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    return sweep_table(DagExecutor().run(SimpleState(None), nodes), node="merge")


def test_sweep_table_is_a_dataframe_of_params_and_metrics():
    pd = pytest.importorskip("pandas")
    table = merge_table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["node", "base_id", "gdd", "total"]
    assert table.to_dict("records") == MERGE_ROWS


def test_sweep_table_without_pandas_is_a_list_of_rows(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    assert merge_table() == MERGE_ROWS


class AppliedPhaseStage(PhaseStage):
    """Reports metrics named like table columns: the GDD it applied (scaled by the policy,
    so not the swept value) and ``node``, the index of the node it ran on."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        out = super().process(state, policy=policy)
        scale = float(policy.get("phase.scale", 1.0)) if policy else 1.0
        out.metrics.update({"gdd": scale * self.cfg.gdd, "node": 1.0})
        return out


def test_sweep_table_metrics_never_overwrite_params_or_ids():
    nodes = with_stage(diamond(), "p1", AppliedPhaseStage(PhaseCfg(name="p1")))
    nodes = expand_sweep(nodes, [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    out = DagExecutor().run(SimpleState(None), nodes, {"phase.scale": 3.0})
    rows = sweep_table(out, node="p1").to_dict("records")
    assert [(r["node"], r["gdd"], r["metric.gdd"], r["metric.node"]) for r in rows] == [
        ("p1__gdd-1.0", 1.0, 3.0, 1.0),
        ("p1__gdd-2.0", 2.0, 6.0, 1.0),
    ]
    assert "max_phase" in rows[0]  # metrics that clash with nothing keep their names


def test_sweep_table_is_exported_at_the_top_level():
    assert phys_pipeline.sweep_table is sweep_table
    assert "sweep_table" in phys_pipeline.__all__


def test_a_variant_id_is_its_base_then_each_swept_value_sorted_by_name():
    nodes = expand_sweep(
        diamond(), [SweepSpec("p1", {"name": ["phase plate"], "gdd": [0.1, 1.0, 2]})]
    )
    assert variant_ids(nodes, "p1") == [
        "p1__gdd-0.1_name-phase plate",
        "p1__gdd-1.0_name-phase plate",  # str(1.0): the value as given
        "p1__gdd-2_name-phase plate",
    ]
    assert variant_ids(nodes, "merge")[0] == "merge__gdd-0.1_name-phase plate"


def test_values_that_print_alike_get_distinct_ids():
    nodes = expand_sweep(
        diamond(),
        [SweepSpec("p1", {"gdd": [1, "1"], "window": ["none", "hann"]}, mode="zip")],
    )
    # only gdd needs its repr; window keeps its plain form
    assert variant_ids(nodes, "p1") == [
        "p1__gdd-1_window-none",
        "p1__gdd-'1'_window-hann",
    ]
    assert len(set(ids(nodes))) == len(nodes)
    out = DagExecutor().run(SimpleState(None), nodes)
    assert "merge__gdd-'1'_window-hann" in out.results


def test_a_clone_carries_its_swept_values_in_its_metadata_too():
    nodes = with_stage(diamond(), "p1", PhaseStage(PhaseCfg(name="p1")))
    nodes[1] = nodes[1].replace(metadata={"lab": "B12"})
    swept = by_id(expand_sweep(nodes, [SweepSpec("p1", {"gdd": [2.0], "window": ["hann"]})]))
    clone, below = swept["p1__gdd-2.0_window-hann"], swept["merge__gdd-2.0_window-hann"]
    assert clone.metadata == {"lab": "B12", "sweep": {"gdd": 2.0, "window": "hann"}}
    assert below.metadata == {"sweep": {"gdd": 2.0, "window": "hann"}}
    assert clone.metadata["sweep"] == dict(clone.sweep.params)  # a copy of the typed origin
    assert "sweep" not in swept["p2"].metadata  # not a clone


def test_a_clones_metadata_is_outside_its_key():
    def keys(nodes: list[NodeSpec]) -> dict[str, str]:
        return {nid: node.key for nid, node in make_plan(nodes, SimpleState(None)).nodes.items()}

    swept = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [2.0]})])
    bare = [node.replace(sweep=None, metadata={}) for node in swept]
    assert not any(node.metadata for node in bare)
    assert keys(bare) == keys(swept)


def test_repeated_grid_values_are_an_error_naming_node_and_values():
    with pytest.raises(SweepError) as info:
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0, 1.0]})])
    message = str(info.value)
    assert "'p1'" in message and "{'gdd': 1.0}" in message and "'p1__gdd-1.0'" in message


def test_expanded_nodes_are_a_list_drawn_as_their_dag():
    nodes = expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0]})])
    assert isinstance(nodes, NodeList) and isinstance(nodes, list)
    plain = [*nodes]  # a built-in list with the same elements
    assert nodes == plain and plain == nodes and len(nodes) == 7
    assert nodes[1].id == "p1__gdd-1.0" and nodes[-1].id == "solo"
    svg = nodes._repr_svg_()
    assert svg.lstrip().startswith("<svg")
    for node in nodes:
        assert f'data-node="{html.escape(node.id)}"' in svg


def test_sweep_clones_hit_the_cache_of_the_unswept_parts():
    from phys_pipeline.cache import MemoryStore

    executor = DagExecutor(cache=MemoryStore(max_bytes=1 << 26))
    executor.run(SimpleState(None), diamond())
    out = executor.run(
        SimpleState(None), expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [10.0, 3.0]})])
    )
    assert set(out.hits) >= {"grid", "p2", "solo", "p1__gdd-10.0"}
    assert sorted(out.ran) == ["merge__gdd-10.0", "merge__gdd-3.0", "p1__gdd-3.0"]


# --- bad specs -------------------------------------------------------------------------------


def test_unknown_node_is_named():
    with pytest.raises(SweepError, match="'p9'"):
        expand_sweep(diamond(), [SweepSpec("p9", {"gdd": [1.0]})])


def test_unknown_field_is_a_sweep_error_naming_node_field_and_values():
    with pytest.raises(SweepError, match=r"'p1'.*'gdd2'.*\[1\.5\]"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd2": [1.5]})])


def test_invalid_value_names_node_field_and_value():
    with pytest.raises(ConfigError) as info:
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0, 1e9]})])
    assert info.value.field == "gdd" and info.value.value == 1e9
    assert "p1" in str(info.value)


def test_empty_grid_and_empty_values_are_errors():
    with pytest.raises(SweepError, match=r"'p1'.*empty"):
        expand_sweep(diamond(), [SweepSpec("p1", {})])
    with pytest.raises(SweepError, match=r"'p1'.*'gdd'"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": []})])


def test_zip_with_unequal_lengths_is_an_error():
    with pytest.raises(SweepError, match=r"'p1'.*differ in length.*'gdd': 2, 'window': 1"):
        expand_sweep(
            diamond(), [SweepSpec("p1", {"gdd": [1.0, 2.0], "window": ["none"]}, mode="zip")]
        )


def test_sweeping_a_gather_node_is_an_error():
    with pytest.raises(SweepError, match=r"'merge'.*gather"):
        expand_sweep(diamond(), [SweepSpec("merge", {"weight": [1.0, 2.0]})], gather=["merge"])


def test_sweeping_a_node_twice_is_an_error():
    with pytest.raises(SweepError, match="twice"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": [1.0]}), SweepSpec("p1", {"gdd": [2.0]})])


def test_scalar_instead_of_list_is_an_error():
    with pytest.raises(SweepError, match="must be a list"):
        expand_sweep(diamond(), [SweepSpec("p1", {"gdd": 1.0})])
