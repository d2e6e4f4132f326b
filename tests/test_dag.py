"""The plan: graph validation, Merkle cache keys and stale reasons, before anything runs."""

from __future__ import annotations

import pytest
from dag_stages import (
    GridCfg,
    GridStage,
    PhaseCfg,
    PhaseStage,
    SumCfg,
    SumStage,
    diamond,
    with_stage,
)

from phys_pipeline.dag import NodePlan, Staleness, build_graph, make_plan
from phys_pipeline.errors import (
    CycleError,
    DuplicateNodeError,
    EmptyDagError,
    MissingDependencyError,
    MissingStageError,
    UnhashableValueError,
)
from phys_pipeline.policy import PolicyBag
from phys_pipeline.types import NodeSpec, SimpleState


class KeySet:
    """A cache that only answers ``contains``: enough to ask a plan what is stale."""

    def __init__(self, keys: object = ()) -> None:
        self.keys = set(keys)

    def contains(self, key: str) -> bool:
        return key in self.keys


def plan_of(nodes, policy=None, state=None):
    return make_plan(nodes, state or SimpleState(payload=None), policy)


# --- validation ------------------------------------------------------------------------------


def test_empty_dag_is_an_error():
    with pytest.raises(EmptyDagError):
        build_graph([])


def test_duplicate_ids_are_named():
    nodes = [*diamond(), NodeSpec(id="p1", stage=GridStage(GridCfg()))]
    with pytest.raises(DuplicateNodeError, match="'p1'"):
        build_graph(nodes)


def test_missing_dependency_names_node_and_dependency():
    nodes = [NodeSpec(id="fit", deps=["spectrum"], stage=GridStage(GridCfg()))]
    with pytest.raises(MissingDependencyError, match=r"'fit'.*'spectrum'"):
        build_graph(nodes)


def test_cycle_prints_the_cycle_path():
    stage = GridStage(GridCfg())
    nodes = [
        NodeSpec(id="a", deps=["c"], stage=stage),
        NodeSpec(id="b", deps=["a"], stage=stage),
        NodeSpec(id="c", deps=["b"], stage=stage),
        NodeSpec(id="root", stage=stage),
    ]
    with pytest.raises(CycleError) as info:
        build_graph(nodes)
    assert sorted(info.value.cycle) == ["a", "b", "c"]
    assert " -> " in str(info.value)


def test_self_loop_is_a_cycle():
    with pytest.raises(CycleError, match="a -> a"):
        build_graph([NodeSpec(id="a", deps=["a"], stage=GridStage(GridCfg()))])


def test_node_without_stage_is_named():
    with pytest.raises(MissingStageError, match="'lonely'"):
        build_graph([NodeSpec(id="lonely")])


def test_object_without_process_is_not_a_stage():
    class NotAStage:
        cfg = GridCfg()

    with pytest.raises(MissingStageError, match="'x'"):
        build_graph([NodeSpec(id="x", stage=NotAStage())])


def test_duck_typed_stage_is_accepted():
    class Duck:
        cfg = GridCfg(name="duck")

        def process(self, state, *, policy=None):
            raise AssertionError("not run by planning")

    plan = plan_of([NodeSpec(id="duck", stage=Duck())])
    assert plan.order == ["duck"]


def test_validation_finds_cfg_without_evaluating_a_property():
    """Validation finds a stage's cfg on its class first (a property, a slot), which runs no
    code, then on the instance: a pipeline's cfg is a property, derived on every read."""
    reads = []

    class Derived:
        @property
        def cfg(self):
            reads.append(1)
            return GridCfg(name="derived")

        def process(self, state, *, policy=None):
            return state

    class Slotted:
        __slots__ = ("cfg",)

        def __init__(self):
            self.cfg = GridCfg(name="slotted")

        def process(self, state, *, policy=None):
            return state

    plain = GridStage(GridCfg(name="plain"))
    graph = build_graph(
        [
            NodeSpec(id="d", stage=Derived()),
            NodeSpec(id="s", stage=Slotted()),
            NodeSpec(id="p", stage=plain),
        ]
    )
    assert set(graph.nodes) == {"d", "s", "p"}
    assert reads == []  # found on the class, never evaluated


def test_a_dep_that_cannot_be_an_id_is_named_as_unknown():
    """A list or a set among a node's deps names no node: a typed error names the node and
    the dep (a list raised a bare TypeError from the set of ids)."""
    for bad in (["grid"], {"grid"}):
        nodes = [
            NodeSpec(id="grid", stage=GridStage(GridCfg())),
            NodeSpec(id="b", deps=["grid", bad], stage=GridStage(GridCfg())),
        ]
        with pytest.raises(MissingDependencyError, match="'b'") as caught:
            build_graph(nodes)
        assert caught.value.missing == [bad]


def test_plan_records_hold_every_field():
    """Plans build their per-node records in C (``tuple.__new__``, no arity check): each must
    still be the whole named tuple, equal to one built field by field."""
    plan = plan_of(diamond())
    for node in plan.nodes.values():
        assert type(node) is NodePlan
        assert len(node) == len(NodePlan._fields)
        assert node == NodePlan(**node._asdict())
    for staleness in plan.stale().values():
        assert type(staleness) is Staleness
        assert staleness == Staleness(staleness.node_id, staleness.reasons)
        assert len(staleness) == len(Staleness._fields)


def test_order_puts_dependencies_first_and_keeps_listing_order():
    plan = plan_of(diamond())
    assert plan.order == ["grid", "p1", "p2", "merge", "solo"]


# --- keys ------------------------------------------------------------------------------------


def test_keys_are_deterministic_across_plans():
    assert plan_of(diamond()).keys == plan_of(diamond()).keys


def test_every_node_has_a_distinct_key():
    keys = plan_of(diamond()).keys
    assert len(set(keys.values())) == len(keys)


def test_config_change_changes_exactly_the_node_and_its_descendants():
    before = plan_of(diamond())
    after = plan_of(with_stage(diamond(), "p1", PhaseStage(PhaseCfg(name="p1", gdd=11.0))))
    changed = {n for n in before.keys if before.keys[n] != after.keys[n]}
    assert changed == {"p1", "merge"}


def test_initial_state_feeds_root_keys():
    a = plan_of(diamond(), state=SimpleState(payload=1.0))
    b = plan_of(diamond(), state=SimpleState(payload=2.0))
    assert all(a.keys[n] != b.keys[n] for n in a.keys)


def test_explicit_node_version_overrides_code_version():
    v1 = plan_of([NodeSpec(id="g", stage=GridStage(GridCfg()), version="v1")])
    v2 = plan_of([NodeSpec(id="g", stage=GridStage(GridCfg()), version="v2")])
    code = plan_of([NodeSpec(id="g", stage=GridStage(GridCfg()))])
    assert v1.nodes["g"].code_version == "v:v1"
    assert len({v1.keys["g"], v2.keys["g"], code.keys["g"]}) == 3


def test_redefined_stage_class_changes_key_like_a_notebook_cell():
    cell = """
from phys_pipeline.types import PipelineStage, StageResult
class Scale(PipelineStage):
    def process(self, state, *, policy=None):
        st = state.deepcopy()
        st.payload = st.payload * {factor}
        return StageResult(state=st)
"""
    keys = []
    for factor in (2, 3, 3):
        ns: dict = {"__name__": "__main__"}
        exec(cell.format(factor=factor), ns)
        node = NodeSpec(id="scale", stage=ns["Scale"](GridCfg()))
        keys.append(plan_of([node], state=SimpleState(payload=1.0)).keys["scale"])
    assert keys[0] != keys[1]
    assert keys[1] == keys[2]


def test_policy_change_invalidates_only_nodes_that_read_it():
    nodes = diamond()
    nodes[0] = nodes[0].replace(policy_keys=())  # the grid reads no policy
    base = plan_of(nodes, policy=PolicyBag({"phase.scale": 1.0}))
    scaled = plan_of(nodes, policy=PolicyBag({"phase.scale": 2.0}))
    assert {n for n in base.keys if base.keys[n] != scaled.keys[n]} == {"p1", "p2", "solo", "merge"}
    unrelated = plan_of(nodes, policy=PolicyBag({"phase.scale": 1.0, "plot.dpi": 300}))
    assert base.keys == unrelated.keys


def test_undeclared_stage_sees_the_whole_policy():
    base = plan_of(diamond(), policy=PolicyBag({"phase.scale": 1.0}))
    other = plan_of(diamond(), policy=PolicyBag({"phase.scale": 1.0, "plot.dpi": 300}))
    assert base.keys["grid"] != other.keys["grid"]


def test_node_can_declare_policy_keys():
    nodes = [NodeSpec(id="g", stage=GridStage(GridCfg()), policy_keys=())]
    a = plan_of(nodes, policy=PolicyBag({"x": 1}))
    b = plan_of(nodes, policy=PolicyBag({"x": 2}))
    assert a.keys == b.keys


def test_unhashable_config_value_names_the_node():
    class Opaque:
        pass

    class LooseCfg(GridCfg):
        extra: object = None

    stage = GridStage(LooseCfg(extra=Opaque()))
    with pytest.raises(UnhashableValueError, match="node 'odd'"):
        plan_of([NodeSpec(id="odd", stage=stage)])


# --- stale sets and reasons ------------------------------------------------------------------


def test_without_cache_everything_is_stale_and_not_cached():
    stale = plan_of(diamond()).stale()
    assert list(stale) == ["grid", "p1", "p2", "merge", "solo"]
    assert all(s.reasons == ("not cached",) for s in stale.values())


def test_stale_set_against_a_cache_with_reasons():
    before = plan_of(diamond())
    cache = KeySet(before.keys.values())
    after = plan_of(with_stage(diamond(), "p2", PhaseStage(PhaseCfg(name="p2", gdd=5.0))))
    stale = after.stale(cache, previous=before)
    assert set(stale) == {"p2", "merge"}
    assert stale["p2"].reasons == ("config field gdd changed",)
    assert stale["merge"].reasons == ("upstream changed",)


def test_policy_change_is_explained():
    before = plan_of(diamond(), policy={"phase.scale": 1.0} and PolicyBag({"phase.scale": 1.0}))
    after = plan_of(diamond(), policy=PolicyBag({"phase.scale": 3.0}))
    stale = after.stale(KeySet(before.keys.values()), previous=before)
    assert "policy changed" in stale["p1"].reasons


def test_code_change_is_explained():
    class GridStageV2(GridStage):
        def process(self, state, *, policy=None):
            return super().process(state, policy=policy)

    before = plan_of(diamond())
    after = plan_of(with_stage(diamond(), "grid", GridStageV2(GridCfg(name="grid"))))
    stale = after.stale(KeySet(before.keys.values()), previous=before)
    assert set(stale) == {"grid", "p1", "p2", "merge", "solo"}
    assert stale["grid"].reasons == (
        "stage class changed (dag_stages.GridStage -> "
        f"{GridStageV2.__module__}.{GridStageV2.__qualname__})",
    )
    assert stale["solo"].reasons == ("upstream changed",)


def test_merge_reason_covers_its_own_config():
    before = plan_of(diamond())
    after = plan_of(with_stage(diamond(), "merge", SumStage(SumCfg(name="merge", weight=2.0))))
    stale = after.stale(KeySet(before.keys.values()), previous=before)
    assert set(stale) == {"merge"}
    assert stale["merge"].reasons == ("config field weight changed",)
