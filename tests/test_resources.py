"""Resources are numbers a node can have: NaN, infinite, negative or non-numeric amounts are a
typed error naming the field and value (and the node, when one carries them), never a run that
waits for ever for a slot that cannot fit."""

from __future__ import annotations

import math

import pytest
from dag_stages import diamond

from phys_pipeline.dag import make_plan
from phys_pipeline.errors import ConfigError
from phys_pipeline.executor import DagExecutor
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import NodeResources, SimpleState

BAD = [("mem_gb", math.nan), ("cpu", math.inf), ("gpu", -1), ("mem_gb", -math.inf), ("cpu", "2")]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_a_bad_amount_is_refused_naming_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        NodeResources(**{field: value})
    assert (caught.value.field, repr(caught.value.value)) == (field, repr(value))


def test_good_amounts_are_kept() -> None:
    assert NodeResources(cpu=2, gpu=1, mem_gb=0.5) == NodeResources(2, 1, 0.5)


@pytest.mark.timeout(20)
def test_a_node_carrying_a_nan_amount_is_named_before_anything_runs() -> None:
    """Resources made some other way (a subclass, an object edited in place) are checked
    again when the DAG is validated, naming the node."""
    nodes = diamond()
    resources = NodeResources(mem_gb=1.0)
    object.__setattr__(resources, "mem_gb", math.nan)  # past the frozen dataclass's check
    nodes[2] = nodes[2].replace(resources=resources)
    with pytest.raises(ConfigError, match=r"node 'p2'.*resources\.mem_gb.*nan") as caught:
        make_plan(nodes, SimpleState(None))
    assert caught.value.owner == "node 'p2'"
    with pytest.raises(ConfigError, match="node 'p2'"):
        DagExecutor(scheduler=LocalScheduler(max_workers=2, max_mem_gb=4.0)).run(
            SimpleState(None), nodes
        )


@pytest.mark.parametrize("field", ["max_cpu", "max_gpu", "max_mem_gb"])
def test_a_scheduler_with_a_nan_budget_is_refused(field: str) -> None:
    with pytest.raises(ConfigError, match=f"{field}.*nan"):
        LocalScheduler(max_workers=2, **{field: math.nan})
