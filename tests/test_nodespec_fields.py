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
# change only with KEY_SCHEMA, the package version (SimpleState is library code) or the stages.
KEYS_OF_A_SWEEP = {
    "ground": "c5e7c8aeac811309804f2dc8474edf01",
    "excited[energy=-3.4]": "2b7e7b685ca23fba5daf52e7adee0327",
    "excited[energy=-1.5]": "c671be91921f7b3afd4f27f9c06e7b36",
    "lines[energy=-3.4]": "1f0c2c77a95ef218f4838959eff7325a",
    "lines[energy=-1.5]": "db542bb1b7f0c9acfa619f7048b8dc19",
}
KEYS_OF_A_GATHER = {
    "ground": "c5e7c8aeac811309804f2dc8474edf01",
    "excited[energy=-3.4]": "2b7e7b685ca23fba5daf52e7adee0327",
    "excited[energy=-1.5]": "c671be91921f7b3afd4f27f9c06e7b36",
    "lines": "3b47dd64dcdd8059fcbac49bb36c3698",
}
KEYS_BY_HAND = {  # lines: gather, input names; excited: policy keys; policy detector.gain=2
    "ground": "656b8682358f2560559ef7040c6f388d",
    "excited": "b58c1f4df4df7cdfeb360d90900b1d8f",
    "lines": "28e724003eba277bf4c30f8179e75164",
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
    assert nodes["lines[energy=-1.5]"].sweep == SweepOrigin("lines", {"energy": -1.5})
    assert nodes["lines[energy=-1.5]"].inputs == NodeInputs(
        names={"ground": "ground", "excited[energy=-1.5]": "excited"}
    )
    assert nodes["ground"].sweep is None and nodes["ground"].metadata == {}
    out = DagExecutor().run(SimpleState(0.0), list(nodes.values()))
    rows = sweep_table(out, "excited")
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    assert [(row["node"], row["energy"]) for row in rows] == [
        ("excited[energy=-3.4]", -3.4),
        ("excited[energy=-1.5]", -1.5),
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
    assert dict(clone.metadata) == {"lab": "B12"}


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
    assert dict(spec.metadata) == {"lab": "B12"}


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


def test_a_clone_still_reads_metadata_sweep_with_one_warning(fresh_deprecations: None):
    clone = expand_sweep(atom(), [SWEEP])[-1]
    expected = {"base_id": "lines", "params": {"energy": -1.5}}
    with pytest.warns(DeprecationWarning) as caught:
        assert clone.metadata["sweep"] == expected
        assert clone.metadata.get("sweep") == expected
        assert "sweep" in clone.metadata
    assert len(caught) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "sweep" not in atom()[2].metadata  # not a clone: nothing to read, no warning
        with pytest.raises(KeyError):
            clone.metadata["lab"]  # other keys are a plain dict's


def test_clone_metadata_survives_copies_and_replace():
    clone = expand_sweep(atom(), [SWEEP])[-1]
    for copied in (pickle.loads(pickle.dumps(clone)), copy.deepcopy(clone), clone.replace(id="x")):
        assert copied.sweep == clone.sweep
        assert copied.metadata.origin == clone.sweep
    unswept = clone.replace(sweep=None)
    assert type(unswept.metadata) is dict and unswept.metadata == {}
