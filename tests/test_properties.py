"""Properties over random inputs (hypothesis): config and array hashes are stable and
collision-free, and on random DAGs an edit invalidates exactly the edited node and its
descendants, which is exactly what a rerun computes."""

from __future__ import annotations

import copy
import itertools
import struct
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import create_model

from phys_pipeline.cache import MemoryStore
from phys_pipeline.dag import make_plan
from phys_pipeline.executor import DagExecutor
from phys_pipeline.hashing import config_hash
from phys_pipeline.types import (
    DagState,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

pytestmark = pytest.mark.timeout(120)

BOUNDED = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

# --- random config classes ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, width=64)
ARRAY_DTYPES = ["<f8", ">f8", "<f4", "<c16", "<i2", "<u1", "|b1", "<i8"]
arrays = hnp.arrays(
    dtype=st.sampled_from(ARRAY_DTYPES).map(np.dtype),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
)

# field kinds: (annotation, strategy of values)
FIELD_KINDS: dict[str, tuple[Any, st.SearchStrategy]] = {
    "int": (int, st.integers(-(2**70), 2**70)),
    "float": (float, finite),
    "str": (str, st.text(max_size=6)),
    "bool": (bool, st.booleans()),
    "tuple": (tuple[int, ...], st.tuples(st.integers(-3, 3), st.integers(-3, 3))),
    "list": (list[float], st.lists(finite, max_size=3)),
    "dict": (dict[str, float], st.dictionaries(st.text(max_size=3), finite, max_size=3)),
    "array": (np.ndarray, arrays),
}
schemas = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
        lambda s: s not in ("name", "tags")
    ),
    st.sampled_from(sorted(FIELD_KINDS)),
    min_size=1,
    max_size=5,
)
_classes = itertools.count()


def config_class(schema: dict[str, str], name: str | None = None) -> type[StageConfig]:
    fields = {field: (FIELD_KINDS[kind][0], ...) for field, kind in schema.items()}
    return create_model(name or f"RandomCfg{next(_classes)}", __base__=StageConfig, **fields)


def values_for(schema: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({field: FIELD_KINDS[kind][1] for field, kind in schema.items()})


def same_value(a: Any, b: Any) -> bool:
    """Equality as the hash sees it: arrays by dtype, shape and bytes; floats by their bits
    (-0.0 is not 0.0); containers item by item, dicts in order, and of the same type."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype.str == b.dtype.str
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same_value, a, b))
    return a == b


@BOUNDED
@given(st.data())
def test_config_hash_is_stable_for_equal_configs(data: st.DataObject) -> None:
    schema = data.draw(schemas)
    values = data.draw(values_for(schema))
    cls = config_class(schema)
    cfg = cls(**values)
    digest = config_hash(cfg)
    assert config_hash(cfg) == digest  # again (memoised or not)
    assert config_hash(copy.deepcopy(cfg)) == digest
    assert config_hash(cls(**copy.deepcopy(values))) == digest
    assert config_hash(cls.model_validate(cfg.model_dump())) == digest


@BOUNDED
@given(st.data())
def test_configs_share_a_hash_only_when_their_values_are_equal(data: st.DataObject) -> None:
    schema = data.draw(schemas)
    cls = config_class(schema)
    first, second = (data.draw(values_for(schema)) for _ in range(2))
    a, b = cls(**first), cls(**second)
    equal = all(same_value(getattr(a, f), getattr(b, f)) for f in schema)
    assert (config_hash(a) == config_hash(b)) == equal


@BOUNDED
@given(st.data())
def test_configs_of_different_classes_never_share_a_hash(data: st.DataObject) -> None:
    schema = data.draw(schemas)
    values = data.draw(values_for(schema))
    twins = config_class(schema, "PulseCfg"), config_class(schema, "FibreCfg")
    assert config_hash(twins[0](**values)) != config_hash(twins[1](**values))


def mutate_in_place(cfg: StageConfig, field: str, kind: str) -> bool:
    """Change ``cfg`` behind pydantic's back as user code might; False if nothing changed."""
    value = getattr(cfg, field)
    if kind == "list":
        value.append(0.5)
    elif kind == "dict":
        value["__new"] = 1.5
    elif kind == "array":
        if value.size == 0 or not value.flags.writeable:
            return False
        value.flat[0] = 1 if value.flat[0] == 0 else 0
    else:  # immutable values: rebind the field
        replacement = {"int": 7, "float": 0.25, "str": "x!", "bool": not value, "tuple": (9,)}
        if value == replacement[kind] and type(value) is type(replacement[kind]):
            return False
        object.__setattr__(cfg, field, replacement[kind])
    return True


@BOUNDED
@given(st.data())
def test_a_config_changed_in_place_never_keeps_its_old_hash(data: st.DataObject) -> None:
    """``config_hash`` memoises: an in-place change must still give the fresh hash."""
    schema = data.draw(schemas)
    cls = config_class(schema)
    cfg = cls(**data.draw(values_for(schema)))
    before = config_hash(cfg)
    field = data.draw(st.sampled_from(sorted(schema)))
    if data.draw(st.booleans()):
        cfg.tags["edited"] = True
    elif not mutate_in_place(cfg, field, schema[field]):
        return
    fresh = cls(**{f: copy.deepcopy(getattr(cfg, f)) for f in cls.model_fields})
    assert config_hash(cfg) == config_hash(fresh) != before


# --- arrays reach the node keys by content --------------------------------------------------------


class Scale(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: object = None) -> StageResult:
        return StageResult(SimpleState(np.asarray(state.payload) * 2))


ONE_NODE = [NodeSpec(id="scale", stage=Scale(StageConfig()))]


def root_key(array: np.ndarray) -> str:
    return make_plan(ONE_NODE, SimpleState(array)).nodes["scale"].key


@BOUNDED
@given(arrays, arrays)
def test_root_keys_differ_exactly_when_the_input_arrays_differ(
    a: np.ndarray, b: np.ndarray
) -> None:
    assert (root_key(a) == root_key(b)) == same_value(a, b)
    assert root_key(a) == root_key(copy.deepcopy(a))


matrices = hnp.arrays(
    dtype=st.sampled_from(ARRAY_DTYPES).map(np.dtype),
    shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4),
)


@BOUNDED
@given(matrices)
def test_views_key_like_their_copies_in_the_same_memory_order(a: np.ndarray) -> None:
    for view in (a.T, a[::-1], a[:, ::2]):
        assert root_key(view) == root_key(np.copy(view, order="K"))
    if a.shape[0] > 1 and a.shape[1] > 1:  # a transpose reads otherwise in memory order
        assert root_key(a.T) != root_key(np.ascontiguousarray(a.T))


# --- random DAGs: the stale set is the edited node and its descendants ----------------------------


class AffineCfg(StageConfig):
    scale: float = 1.0
    offset: float = 0.0


class Affine(PipelineStage[Any, AffineCfg]):
    """``scale * (sum of the inputs) + offset``; roots read the initial payload."""

    def process(self, state: Any, *, policy: object = None) -> StageResult:
        parents = state.inputs.values() if isinstance(state, DagState) else [state]
        total = sum(float(s.payload) for s in parents)
        value = self.cfg.scale * total + self.cfg.offset
        return StageResult(SimpleState(value), metrics={"value": value})


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[list[list[int]], list[float], list[int]]:
    """Parents per node (earlier nodes only, so acyclic), offsets, and a listing order."""
    size = draw(st.integers(2, 15))
    parents = [
        sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 3)))) if i else []
        for i in range(size)
    ]
    offsets = draw(st.lists(st.integers(-4, 4).map(float), min_size=size, max_size=size))
    order = draw(st.permutations(range(size)))
    return parents, offsets, order


def dag_nodes(parents: list[list[int]], offsets: list[float], order: list[int]) -> list[NodeSpec]:
    return [
        NodeSpec(
            id=f"n{i}",
            deps=[f"n{p}" for p in parents[i]],
            stage=Affine(AffineCfg(name=f"n{i}", scale=0.5 + i / 10, offset=offsets[i])),
        )
        for i in order
    ]


@settings(BOUNDED, max_examples=40)
@given(random_dags(), st.data())
def test_an_edit_makes_exactly_the_node_and_its_descendants_stale(
    dag: tuple[list[list[int]], list[float], list[int]], data: st.DataObject
) -> None:
    parents, offsets, order = dag
    graph = nx.DiGraph()
    graph.add_nodes_from(f"n{i}" for i in range(len(parents)))
    graph.add_edges_from((f"n{p}", f"n{i}") for i, ps in enumerate(parents) for p in ps)
    state = SimpleState(1.0)
    executor = DagExecutor(cache=MemoryStore(max_bytes=1 << 24))
    first = executor.run(state, dag_nodes(parents, offsets, order))
    assert sorted(first.ran) == sorted(graph)

    edited = data.draw(st.integers(0, len(parents) - 1))
    offsets = [o + 0.5 if i == edited else o for i, o in enumerate(offsets)]
    nodes = dag_nodes(parents, offsets, order)
    expected = {f"n{edited}"} | nx.descendants(graph, f"n{edited}")

    stale = executor.stale(state, nodes)
    assert set(stale) == expected
    assert stale[f"n{edited}"].reasons == ("config field offset changed",)
    assert all(stale[nid].reasons == ("upstream changed",) for nid in expected - {f"n{edited}"})

    second = executor.run(state, nodes)
    assert set(second.ran) == expected
    assert set(second.hits) == set(graph) - expected
    assert second.metrics == DagExecutor().run(state, nodes).metrics
