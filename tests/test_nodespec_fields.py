"""NodeSpec's typed fields (``inputs``, ``policy_keys``, ``sweep``) drive planning, policy
scoping and sweep tables; keys are what the metadata spelling of old gave; that spelling still
works and warns once; ``metadata`` is user data outside the key."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest

from phys_pipeline import _deprecation
from phys_pipeline.dag import make_plan, policy_keys_of
from phys_pipeline.errors import ConfigError, NodeFailedError, PolicyError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.policy import PolicyBag
from phys_pipeline.sweep import SweepSpec, expand_sweep, sweep_table
from phys_pipeline.types import (
    DagState,
    NodeInputs,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
    SweepOrigin,
)


class LevelCfg(StageConfig):
    energy: float = 0.0


class Level(PipelineStage[SimpleState, LevelCfg]):
    """An energy level of an atom (eV); its code version is pinned, so keys are literal."""

    version = "1"

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(SimpleState(self.cfg.energy), metrics={"energy": self.cfg.energy})


class LinesCfg(StageConfig):
    scale: float = 1.0


class Lines(PipelineStage[DagState, LinesCfg]):
    """Transition energies between its parents' levels, under the names it receives them by."""

    version = "1"
    policy_keys = ()

    def process(self, state: DagState, *, policy: PolicyBag | None = None) -> StageResult:
        gain = float(policy.get("detector.gain", 1.0)) if policy is not None else 1.0
        levels = {name: s.payload for name, s in state.inputs.items()}
        lines = {
            f"{a}->{b}": gain * (levels[b] - levels[a]) for a in levels for b in levels if a < b
        }
        return StageResult(SimpleState(lines), metrics={"lines": float(len(lines))})


def atom() -> list[NodeSpec]:
    return [
        NodeSpec(id="ground", stage=Level(LevelCfg(energy=-13.6))),
        NodeSpec(id="excited", deps=["ground"], stage=Level(LevelCfg(energy=-3.4))),
        NodeSpec(id="lines", deps=["ground", "excited"], stage=Lines(LinesCfg())),
    ]


def keys(nodes: list[NodeSpec], policy: PolicyBag | None = None) -> dict[str, str]:
    return {nid: node.key for nid, node in make_plan(nodes, SimpleState(0.0), policy).nodes.items()}


@pytest.fixture
def fresh_deprecations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every deprecated spelling warns again, as in a fresh process."""
    monkeypatch.setattr(_deprecation, "_given", set())


SWEEP = SweepSpec("excited", {"energy": [-3.4, -1.5]})


# --- keys stay what they were --------------------------------------------------------------

# Computed before the typed fields existed, from metadata["gather"] / ["input_names"]; these
# change only with KEY_SCHEMA, the package version (SimpleState is library code), the stages or
# the ids of a node's parents (part of how it receives them): the keys of ``lines`` were
# recomputed when sweep ids took 2.0.0's form (``excited__energy--1.5``), and all of them when
# KEY_SCHEMA became /2.
KEYS_OF_A_SWEEP = {
    "ground": "6faabbe99ab99ef54bb0b7041164f8ce",
    "excited__energy--3.4": "569a5262cd6686922c3ae459017cf07b",
    "excited__energy--1.5": "e57809a595e87dabc13a8921b6223425",
    "lines__energy--3.4": "8449d464075667ed71b0a8a23887d362",
    "lines__energy--1.5": "cd307184660b471e040301168e8514e0",
}
KEYS_OF_A_GATHER = {
    "ground": "6faabbe99ab99ef54bb0b7041164f8ce",
    "excited__energy--3.4": "569a5262cd6686922c3ae459017cf07b",
    "excited__energy--1.5": "e57809a595e87dabc13a8921b6223425",
    "lines": "053904d281fcc128ca7040ade48a9dd8",
}
KEYS_BY_HAND = {  # lines: gather, input names; excited: policy keys; policy detector.gain=2
    "ground": "95148f7c56f9982b88315b8d2b5ed4eb",
    "excited": "efdbe0f0489dac83c1badd4c5d5845ee",
    "lines": "30197f5cc602a86adbcaa43e8c3e0090",
}
BY_HAND_POLICY = PolicyBag({"detector.gain": 2.0, "plot.dpi": 100})


def test_sweep_keys_with_input_names_are_unchanged():
    assert keys(expand_sweep(atom(), [SWEEP])) == KEYS_OF_A_SWEEP


def test_gather_keys_are_unchanged():
    assert keys(expand_sweep(atom(), [SWEEP], gather=["lines"])) == KEYS_OF_A_GATHER


def test_typed_fields_give_the_keys_the_metadata_spelling_gave():
    nodes = atom()
    nodes[1] = nodes[1].replace(policy_keys=("detector.gain",))
    nodes[2] = nodes[2].replace(inputs=NodeInputs(True, {"ground": "g", "excited": "e"}))
    assert keys(nodes, BY_HAND_POLICY) == KEYS_BY_HAND


def test_the_deprecated_metadata_spelling_gives_the_same_keys(fresh_deprecations: None):
    nodes = atom()
    with pytest.warns(DeprecationWarning):
        nodes[1] = nodes[1].replace(metadata={"policy_keys": ["detector.gain"]})
        names = {"ground": "g", "excited": "e"}
        nodes[2] = nodes[2].replace(metadata={"gather": True, "input_names": names, "note": "x"})
    assert keys(nodes, BY_HAND_POLICY) == KEYS_BY_HAND


def test_an_empty_input_shape_is_the_plain_shape():
    nodes = atom()
    nodes[2] = nodes[2].replace(inputs=NodeInputs(gather=False, names={}))
    assert keys(nodes) == keys(atom())


def test_input_shape_is_part_of_the_key():
    gathered, renamed = atom(), atom()
    gathered[2] = gathered[2].replace(inputs=NodeInputs(gather=True))
    renamed[2] = renamed[2].replace(inputs=NodeInputs(names={"excited": "e"}))
    plain = keys(atom())["lines"]
    assert len({plain, keys(gathered)["lines"], keys(renamed)["lines"]}) == 3


def test_metadata_is_outside_the_key():
    noted = atom()
    noted[1] = noted[1].replace(metadata={"lab": "B12", "by": "ada"})
    assert keys(noted) == keys(atom())


# --- fields drive planning, running, policy and sweep tables --------------------------------


def test_input_names_key_the_dag_state():
    nodes = atom()
    nodes[2] = nodes[2].replace(inputs=NodeInputs(names={"ground": "1s", "excited": "2p"}))
    out = DagExecutor().run(SimpleState(0.0), nodes)
    assert list(out.results["lines"].state.payload) == ["1s->2p"]


def test_gather_hands_a_dag_state_even_to_one_parent():
    lines = NodeSpec("lines", ["excited"], Lines(LinesCfg()), inputs=NodeInputs(gather=True))
    nodes = [*atom()[:2], lines]
    out = DagExecutor().run(SimpleState(0.0), nodes)
    assert out.results["lines"].metrics["lines"] == 0.0  # one level: a DagState, no lines


def test_node_policy_keys_override_the_stage_and_scope_its_policy():
    scoped = NodeSpec("lines", stage=Lines(LinesCfg()), policy_keys="detector.gain")
    assert scoped.policy_keys == ("detector.gain",)
    assert policy_keys_of(scoped) == ("detector.gain",)
    assert policy_keys_of(NodeSpec("lines", stage=Lines(LinesCfg()))) == ()
    gains = [keys([scoped], PolicyBag({"detector.gain": g, "plot.dpi": 9})) for g in (1, 2)]
    assert gains[0] != gains[1]
    assert gains[0] == keys([scoped], PolicyBag({"detector.gain": 1, "plot.dpi": 300}))


def test_a_node_reading_beyond_its_policy_keys_fails():
    blind = [NodeSpec("lines", stage=Lines(LinesCfg()), policy_keys=("plot.dpi",))]
    with pytest.raises(NodeFailedError) as failed:
        DagExecutor().run(DagState({}), blind, policy=PolicyBag({"detector.gain": 2.0}))
    assert isinstance(failed.value.failures["lines"], PolicyError)


def test_sweep_clones_carry_their_origin_and_feed_the_table():
    nodes = {node.id: node for node in expand_sweep(atom(), [SWEEP])}
    assert nodes["lines__energy--1.5"].sweep == SweepOrigin("lines", {"energy": -1.5})
    assert nodes["lines__energy--1.5"].inputs == NodeInputs(
        names={"ground": "ground", "excited__energy--1.5": "excited"}
    )
    assert nodes["ground"].sweep is None and nodes["ground"].metadata == {}
    out = DagExecutor().run(SimpleState(0.0), list(nodes.values()))
    rows = sweep_table(out, "excited")
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    assert [(row["node"], row["energy"]) for row in rows] == [
        ("excited__energy--3.4", -3.4),
        ("excited__energy--1.5", -1.5),
    ]


def test_a_gather_node_is_marked_without_changing_the_original():
    original = atom()
    gathered = {n.id: n for n in expand_sweep(original, [SWEEP], gather=["lines"])}["lines"]
    assert gathered.inputs == NodeInputs(gather=True) and gathered.sweep is None
    assert original[2].inputs is None
    unswept = expand_sweep(original, [SweepSpec("lines", {"scale": [1.0, 2.0]})], gather=[])
    assert unswept[0] is original[0]  # a node no sweep reaches is shared, not copied


def test_user_metadata_is_kept_by_clones():
    nodes = atom()
    nodes[2] = nodes[2].replace(metadata={"lab": "B12"})
    clone = expand_sweep(nodes, [SWEEP])[-1]
    assert dict(clone.metadata) == {"lab": "B12", "sweep": {"energy": -1.5}}


# --- the deprecated metadata spelling -------------------------------------------------------


def test_deprecated_metadata_moves_onto_the_fields(fresh_deprecations: None):
    with pytest.warns(DeprecationWarning):
        spec = NodeSpec(
            "lines",
            stage=Lines(LinesCfg()),
            metadata={
                "gather": True,
                "input_names": {"a": "b"},
                "policy_keys": ["detector.gain"],
                "sweep": {"base_id": "lines", "params": {"energy": 1.0}},
                "lab": "B12",
            },
        )
    assert spec.inputs == NodeInputs(True, {"a": "b"})
    assert spec.policy_keys == ("detector.gain",)
    assert spec.sweep == SweepOrigin("lines", {"energy": 1.0})
    assert dict(spec.metadata) == {"lab": "B12", "sweep": {"energy": 1.0}}  # 2.0.0's copy


def test_each_deprecated_spelling_warns_once(fresh_deprecations: None):
    with pytest.warns(DeprecationWarning) as first:
        for _ in range(3):
            NodeSpec("g", stage=Level(LevelCfg()), metadata={"policy_keys": ()})
    assert len(first) == 1
    assert "policy_keys" in str(first[0].message) and first[0].filename == __file__
    with pytest.warns(DeprecationWarning) as other:
        NodeSpec("g", stage=Level(LevelCfg()), metadata={"policy_keys": (), "gather": True})
    assert [str(w.message).split("]")[0] for w in other] == ["NodeSpec metadata['gather'"]


def test_a_typed_field_wins_over_deprecated_metadata(fresh_deprecations: None):
    with pytest.warns(DeprecationWarning):
        spec = NodeSpec("g", stage=Level(LevelCfg()), policy_keys=(), metadata={"policy_keys": "x"})
    assert spec.policy_keys == ()


def test_a_malformed_deprecated_sweep_names_the_node(fresh_deprecations: None):
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="node 'g'"):
        NodeSpec("g", stage=Level(LevelCfg()), metadata={"sweep": {"params": {}}})


def test_a_clones_metadata_sweep_holds_its_values_as_2_0_0_gave_them_quietly():
    clone = expand_sweep(atom(), [SWEEP])[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clone.metadata["sweep"] == {"energy": -1.5}
        assert clone.metadata.get("sweep") == {"energy": -1.5} and "sweep" in clone.metadata
        assert "sweep" not in atom()[2].metadata  # not a clone


def test_2_0_0_metadata_sweep_given_by_hand_is_user_data(fresh_deprecations: None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = NodeSpec("lines__energy-1.0", stage=Lines(LinesCfg()), metadata={"sweep": {"x": 1}})
    assert spec.sweep is None and spec.metadata == {"sweep": {"x": 1}}


def test_clone_metadata_survives_copies_and_replace():
    nodes = atom()
    nodes[2] = nodes[2].replace(metadata={"lab": "B12"})
    clone = expand_sweep(nodes, [SWEEP])[-1]
    for copied in (pickle.loads(pickle.dumps(clone)), copy.deepcopy(clone), clone.replace(id="x")):
        assert copied.sweep == clone.sweep and copied.metadata == clone.metadata
    moved = clone.replace(sweep=SweepOrigin("lines", {"energy": 2.0}))
    assert moved.metadata == {"lab": "B12", "sweep": {"energy": 2.0}}  # the copy follows
    unswept = clone.replace(sweep=None)
    assert type(unswept.metadata) is dict and unswept.metadata == {"lab": "B12"}
