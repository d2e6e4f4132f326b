"""PolicyBag: immutable, stably hashed run-wide overrides, and how pipelines pick one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phys_pipeline.errors import PhysPipelineError, PolicyError
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.policy import PolicyBag, as_policy
from phys_pipeline.types import PipelineStage, SimpleState, StageConfig, StageResult


class StepCfg(StageConfig):
    dt: float = 1e-3


class Integrator(PipelineStage[SimpleState, StepCfg]):
    """Advances time by dt; a policy entry "integrator.dt" overrides the config."""

    def __init__(self, cfg: StepCfg) -> None:
        super().__init__(cfg)
        self.seen: list[PolicyBag | None] = []

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        self.seen.append(policy)
        dt = policy.get("integrator.dt", self.cfg.dt) if policy else self.cfg.dt
        return StageResult(state=SimpleState(state.payload + dt), metrics={"dt": dt})


def run_dt(pipe: SequentialPipeline, **run_kwargs) -> float:
    return pipe.run(SimpleState(0.0), **run_kwargs).metrics["md.step.dt"]


# --- the bag ----------------------------------------------------------------------------------


def test_policy_rejects_item_assignment():
    bag = PolicyBag({"integrator.dt": 1e-3})
    with pytest.raises(TypeError):
        bag["integrator.dt"] = 1e-4  # type: ignore[index]
    assert bag["integrator.dt"] == 1e-3


def test_policy_rejects_item_deletion():
    bag = PolicyBag({"integrator.dt": 1e-3})
    with pytest.raises(TypeError):
        del bag["integrator.dt"]  # type: ignore[attr-defined]


def test_policy_rejects_new_attributes():
    with pytest.raises(AttributeError):
        PolicyBag().extra = 1  # type: ignore[attr-defined]


def test_policy_get_returns_value_or_default():
    bag = PolicyBag({"solver.tol": 1e-9})
    assert bag.get("solver.tol", 1e-6) == 1e-9
    assert bag.get("solver.maxiter", 100) == 100


def test_policy_is_a_read_only_mapping():
    bag = PolicyBag({"a": 1, "b": 2})
    assert len(bag) == 2
    assert "a" in bag
    assert dict(bag) == {"a": 1, "b": 2}


def test_policy_accepts_keyword_entries():
    assert PolicyBag(dt=0.1, steps=10) == PolicyBag({"dt": 0.1, "steps": 10})


def test_policy_keywords_override_mapping_entries():
    assert PolicyBag({"dt": 0.1}, dt=0.2)["dt"] == 0.2


def test_policy_hash_ignores_insertion_order():
    assert PolicyBag({"dt": 0.1, "tol": 1e-9}).hash() == PolicyBag({"tol": 1e-9, "dt": 0.1}).hash()


def test_policy_hash_changes_when_a_value_changes():
    assert PolicyBag({"dt": 0.1}).hash() != PolicyBag({"dt": 0.2}).hash()


def test_policy_hash_distinguishes_int_from_float():
    assert PolicyBag({"steps": 10}).hash() != PolicyBag({"steps": 10.0}).hash()


def test_policy_hash_changes_when_one_array_element_changes():
    mask = np.ones(2_000)
    changed = mask.copy()
    changed[1_000] = 0.0
    assert PolicyBag({"mask": mask}).hash() != PolicyBag({"mask": changed}).hash()


def test_empty_policy_hash_differs_from_a_non_empty_one():
    assert PolicyBag().hash() != PolicyBag({"dt": None}).hash()


HASH_IN_SUBPROCESS = (
    "from phys_pipeline.policy import PolicyBag; import numpy as np;"
    "print(PolicyBag({'solver': {'kind': 'rk45', 'tol': 1e-9}, 'grid': np.arange(4.0),"
    " 'steps': 10, 'labels': ('x', 'y')}).hash())"
)


def test_policy_hash_is_the_same_in_another_process():
    here = PolicyBag(
        {"steps": 10, "labels": ("x", "y"), "grid": np.arange(4.0)},
        solver={"kind": "rk45", "tol": 1e-9},
    ).hash()
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    there = subprocess.run(
        [sys.executable, "-c", HASH_IN_SUBPROCESS],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert there == here


def test_updated_leaves_the_original_unchanged():
    bag = PolicyBag({"dt": 0.1})
    newer = bag.updated({"dt": 0.2}, tol=1e-9)
    assert dict(bag) == {"dt": 0.1}
    assert dict(newer) == {"dt": 0.2, "tol": 1e-9}


def test_without_drops_keys_and_leaves_the_original_unchanged():
    bag = PolicyBag({"dt": 0.1, "tol": 1e-9})
    assert dict(bag.without("tol")) == {"dt": 0.1}
    assert "tol" in bag


def test_to_dict_returns_an_independent_copy():
    bag = PolicyBag({"dt": 0.1})
    copied = bag.to_dict()
    copied["dt"] = 0.2
    assert bag["dt"] == 0.1


def test_equal_policies_compare_and_hash_equal():
    first, second = PolicyBag({"a": 1, "b": 2}), PolicyBag({"b": 2, "a": 1})
    assert first == second
    assert hash(first) == hash(second)
    assert {first: "ok"}[second] == "ok"


def test_policy_compares_equal_to_a_dict_with_the_same_entries():
    assert PolicyBag({"dt": 0.1}) == {"dt": 0.1}
    assert PolicyBag({"dt": 0.1}) != {"dt": 0.2}


def test_hash_of_depends_only_on_the_named_keys():
    bag = PolicyBag({"dt": 0.1, "tol": 1e-9})
    assert bag.hash_of(["dt"]) == bag.updated(tol=1e-3).hash_of(["dt"])
    assert bag.hash_of(["dt"]) != bag.updated(dt=0.2).hash_of(["dt"])


def test_hash_of_equals_the_hash_of_the_selected_sub_bag():
    bag = PolicyBag({"dt": 0.1, "tol": 1e-9, "seed": 7})
    assert bag.hash_of(["dt", "seed", "maxiter"]) == PolicyBag({"dt": 0.1, "seed": 7}).hash()


def test_hash_of_keys_none_of_which_are_set_is_the_empty_bag_hash():
    # a stage that reads only "grid.n" must not look changed when an unrelated key appears
    assert PolicyBag({"seed": 7}).hash_of(["grid.n"]) == PolicyBag().hash()


def test_hash_of_tells_an_absent_key_from_a_present_one():
    assert PolicyBag().hash_of(["dt"]) != PolicyBag({"dt": None}).hash_of(["dt"])


def test_policy_repr_shows_its_entries():
    assert repr(PolicyBag({"dt": 0.1})) == "PolicyBag({'dt': 0.1})"


@pytest.fixture
def open_file(tmp_path):
    with open(tmp_path / "log.txt", "w") as handle:
        yield handle


class Thermostat:
    """A plain object: no canonical encoding."""


@pytest.mark.parametrize("kind", ["open file", "lambda", "custom object"])
def test_unhashable_policy_value_raises_policy_error_naming_the_key(kind, open_file):
    value = {"open file": open_file, "lambda": lambda t: t, "custom object": Thermostat()}[kind]
    with pytest.raises(PolicyError, match=r"'md\.callback'") as info:
        PolicyBag({"dt": 0.1, "md.callback": value})
    assert info.value.key == "md.callback"


def test_policy_error_is_a_type_error_and_a_library_error():
    assert issubclass(PolicyError, TypeError)
    assert issubclass(PolicyError, PhysPipelineError)


def test_non_string_policy_key_raises_policy_error():
    with pytest.raises(PolicyError, match="strings"):
        PolicyBag({1: "x"})  # type: ignore[dict-item]


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.floats(allow_nan=False)))
def test_policy_hash_is_independent_of_insertion_order(mapping):
    reversed_items = dict(reversed(list(mapping.items())))
    assert PolicyBag(mapping).hash() == PolicyBag(reversed_items).hash()


# --- as_policy --------------------------------------------------------------------------------


def test_as_policy_passes_none_and_bags_through():
    bag = PolicyBag({"dt": 0.1})
    assert as_policy(None) is None
    assert as_policy(bag) is bag


def test_as_policy_turns_a_dict_into_a_bag():
    assert as_policy({"dt": 0.1}) == PolicyBag({"dt": 0.1})
    assert isinstance(as_policy({"dt": 0.1}), PolicyBag)


def test_as_policy_rejects_a_non_mapping():
    with pytest.raises(PolicyError):
        as_policy([("dt", 0.1)])  # type: ignore[arg-type]


# --- pipelines and policies -------------------------------------------------------------------


def make_pipe(**kwargs) -> tuple[SequentialPipeline, Integrator]:
    stage = Integrator(StepCfg(name="step"))
    return SequentialPipeline([stage], name="md", **kwargs), stage


def test_stage_receives_none_without_any_policy():
    pipe, stage = make_pipe()
    pipe.run(SimpleState(0.0))
    assert stage.seen == [None]


def test_run_accepts_a_plain_dict_policy():
    pipe, stage = make_pipe()
    assert run_dt(pipe, policy={"integrator.dt": 5e-4}) == 5e-4
    assert isinstance(stage.seen[0], PolicyBag)


def test_set_policy_accepts_a_plain_dict():
    pipe, _ = make_pipe()
    pipe.set_policy({"integrator.dt": 2e-4})
    assert isinstance(pipe.policy, PolicyBag)
    assert run_dt(pipe) == 2e-4


def test_constructor_accepts_a_plain_dict_policy():
    pipe, _ = make_pipe(policy={"integrator.dt": 3e-4})
    assert run_dt(pipe) == 3e-4


def test_set_policy_overrides_the_constructor_policy():
    pipe, _ = make_pipe(policy={"integrator.dt": 3e-4})
    pipe.set_policy(PolicyBag({"integrator.dt": 2e-4}))
    assert run_dt(pipe) == 2e-4


def test_run_policy_overrides_set_policy():
    pipe, _ = make_pipe(policy={"integrator.dt": 3e-4})
    pipe.set_policy({"integrator.dt": 2e-4})
    assert run_dt(pipe, policy={"integrator.dt": 1e-4}) == 1e-4


def test_run_policy_applies_to_that_run_only():
    pipe, _ = make_pipe()
    pipe.set_policy({"integrator.dt": 2e-4})
    run_dt(pipe, policy={"integrator.dt": 1e-4})
    assert run_dt(pipe) == 2e-4


def test_set_policy_none_clears_the_policy():
    pipe, stage = make_pipe(policy={"integrator.dt": 3e-4})
    pipe.set_policy(None)
    pipe.run(SimpleState(0.0))
    assert stage.seen == [None]


def test_unhashable_run_policy_raises_policy_error_naming_the_key():
    pipe, _ = make_pipe()
    with pytest.raises(PolicyError, match=r"'md\.callback'"):
        pipe.run(SimpleState(0.0), policy={"md.callback": lambda: None})


def test_provenance_policy_hash_equals_the_bag_hash():
    pipe, _ = make_pipe()
    entries = {"integrator.dt": 5e-4, "solver": "verlet"}
    out = pipe.run(SimpleState(0.0), policy=entries)
    assert out.provenance["policy_hash"] == PolicyBag(entries).hash()


def test_provenance_policy_hash_without_policy_is_the_empty_bag_hash():
    pipe, _ = make_pipe()
    assert pipe.run(SimpleState(0.0)).provenance["policy_hash"] == PolicyBag().hash()
