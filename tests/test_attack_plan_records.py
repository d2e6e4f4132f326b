"""An attack on the planning-cost change of 56b7d4d, compared with its parent 941606b.

The change (1) had ``validate`` look for ``cfg`` in ``getattr(stage, "__dict__", None)``
before asking the class, (2) checks listed-in-order deps with ``seen.issuperset(deps)``,
(3) builds ``NodePlan``/``Staleness`` with ``tuple.__new__`` and (4) collects the engine's
shared nodes with a list comprehension.

This attack found (1) changing which stages validation accepts and what it runs (a
``__getattr__``, a ``__dict__`` property or a custom mapping took part; a ``cfg`` in the
instance dict vouched for a stage whose attribute access hides it), so (1) was taken back,
and (2) raising a bare TypeError for a set-valued dep, which ``in`` had reported as a missing
dependency: validation now names any dep that cannot be an id (a set, a list) as an unknown
dependency of its node. The tests below hold the parent's behaviour there, and the strongest
probes that found no difference.
"""

from __future__ import annotations

import copy
import json
import pickle

import pytest
from dag_stages import GridCfg, GridStage, diamond
from pydantic import BaseModel, ConfigDict

from phys_pipeline.dag import NodePlan, Staleness, make_plan, validate
from phys_pipeline.engine import NodeTask, RunEngine
from phys_pipeline.errors import (
    CycleError,
    DuplicateNodeError,
    MissingDependencyError,
    MissingStageError,
)
from phys_pipeline.types import NodeSpec, SimpleState


def _process(self, state, *, policy=None):
    return state


def _grid(node_id: str, deps=()) -> NodeSpec:
    return NodeSpec(id=node_id, deps=list(deps), stage=GridStage(GridCfg()))


# --- differences found, then fixed ----------------------------------------------------------------


def test_a_set_inside_deps_is_a_missing_dependency():
    """A dep that is a set (``deps=[{"grid"}]``) was reported as a missing dependency."""
    with pytest.raises(MissingDependencyError):
        validate([_grid("grid"), NodeSpec(id="b", deps=[{"grid"}], stage=GridStage(GridCfg()))])


def test_slotted_stage_whose_getattr_raises_keyerror_is_accepted():
    """A ``__slots__`` stage serving attributes from a mapping (``__getattr__`` raising
    KeyError for unknown names) has cfg and process, so validation accepts it."""

    class Mapped:
        __slots__ = ("_values",)

        def __init__(self):
            object.__setattr__(self, "_values", {"cfg": GridCfg()})

        def __getattr__(self, name):
            return self._values[name]

        process = _process

    assert validate([NodeSpec(id="a", stage=Mapped())]) == ["a"]


def test_slotted_stage_getattr_is_not_called_when_the_class_has_cfg():
    """A slotted stage (no instance dict) whose class holds cfg: validation needs no
    ``__getattr__`` call (a lazy proxy would load its target on one)."""
    asked = []

    class Lazy:
        __slots__ = ()
        cfg = GridCfg()

        def __getattr__(self, name):
            asked.append(name)
            raise AttributeError(name)

        process = _process

    validate([NodeSpec(id="a", stage=Lazy())])
    assert asked == []


def test_dict_property_is_not_evaluated():
    """A stage whose ``__dict__`` is a property (as proxies define it) and whose class has
    cfg: validation does not read ``__dict__``."""

    class Proxyish:
        cfg = GridCfg()
        process = _process

        @property
        def __dict__(self):
            raise RuntimeError("__dict__ read")

    assert validate([NodeSpec(id="a", stage=Proxyish())]) == ["a"]


def test_a_custom_dict_does_not_vouch_for_cfg():
    """A stage with no ``cfg`` attribute is rejected, whatever its ``__dict__`` claims."""

    class Claims:
        def __contains__(self, key):
            return True

    class NoCfg:
        process = _process

        @property
        def __dict__(self):
            return Claims()

    with pytest.raises(MissingStageError):
        validate([NodeSpec(id="a", stage=NoCfg())])


def test_cfg_hidden_by_getattribute_is_rejected():
    """A stage whose attribute access refuses ``cfg`` (though its dict holds one) has no
    usable cfg: validation rejects it."""

    class Hiding:
        process = _process

        def __init__(self):
            self.cfg = GridCfg()

        def __getattribute__(self, name):
            if name == "cfg":
                raise AttributeError(name)
            return object.__getattribute__(self, name)

    with pytest.raises(MissingStageError):
        validate([NodeSpec(id="a", stage=Hiding())])


def test_cfg_hidden_by_a_descriptor_is_a_missing_stage_in_make_plan():
    """make_plan on a stage whose ``cfg`` descriptor raises AttributeError raises the typed
    MissingStageError, not AttributeError."""

    class Withdrawn:
        def __get__(self, obj, owner):
            raise AttributeError("cfg withdrawn")

        def __set__(self, obj, value):
            obj.__dict__["cfg"] = value

    class Stage:
        cfg = Withdrawn()
        process = _process

        def __init__(self):
            self.__dict__["cfg"] = GridCfg()

    with pytest.raises(MissingStageError):
        make_plan([NodeSpec(id="a", stage=Stage())], SimpleState())


def test_a_metaclass_getattr_error_still_escapes():
    """hasattr(type(stage), 'cfg') runs the metaclass's ``__getattr__``; a KeyError from it
    escaped validation."""

    class Registry(type):
        def __getattr__(cls, name):
            return {}[name]

    class Stage(metaclass=Registry):
        process = _process

        def __init__(self):
            self.cfg = GridCfg()

    with pytest.raises(KeyError):
        validate([NodeSpec(id="a", stage=Stage())])


# --- no difference found ----------------------------------------------------------------------


def test_plan_records_are_ordinary_named_tuples():
    """NodePlan/Staleness built by tuple.__new__ equal class-built ones field for field and
    survive pickle, copy, deepcopy, _replace, _asdict, _make and JSON like class-built ones."""
    nodes = diamond()
    plan = make_plan(nodes, SimpleState())
    for node in plan.nodes.values():
        rebuilt = NodePlan(*node)
        assert type(node) is NodePlan and len(node) == 11 and node == rebuilt
        assert repr(node) == repr(rebuilt)
        assert list(node._asdict()) == list(NodePlan._fields)
        for twin in (pickle.loads(pickle.dumps(node)), copy.copy(node), copy.deepcopy(node)):
            assert type(twin) is NodePlan and twin == node
        assert node._replace(key="x") == rebuilt._replace(key="x")
        assert NodePlan._make(list(node)) == node

    class Holds:
        def contains(self, key):
            return key == plan.nodes["grid"].key

    later = make_plan(nodes, SimpleState(payload=1))
    stale = {**plan.stale(), **later.stale(Holds(), previous=plan)}
    assert stale
    for record in stale.values():
        rebuilt = Staleness(record.node_id, record.reasons)
        assert type(record) is Staleness and len(record) == 2 and record == rebuilt
        assert str(record) == str(rebuilt) and json.dumps(record) == json.dumps(rebuilt)
        assert pickle.loads(pickle.dumps(record)) == record == copy.deepcopy(record)


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        ([_grid("a"), _grid("b", [["a"]])], MissingDependencyError),  # was a bare TypeError
        ([_grid("a"), _grid("b", ["zz", ["a"]])], MissingDependencyError),
        ([_grid("a"), _grid("b", ["a", "a"])], DuplicateNodeError),
        ([_grid("a", ["a"])], CycleError),
        ([_grid("b", ["a"]), _grid("a", ["b"])], CycleError),
        ([_grid("a"), _grid("b", ["a", "zz"])], MissingDependencyError),
        ([_grid("b", ["a"]), _grid("a")], ["a", "b"]),
        ([_grid("a"), _grid("b", [type("S", (str,), {})("a")])], ["a", "b"]),
    ],
)
def test_dependency_checks_match_the_parent(nodes, expected):
    """issuperset gives the parent's answer for duplicates, self deps, cycles, missing ids,
    out-of-order listings and str subclasses; a list dep is an unknown dependency (the parent
    raised a bare TypeError)."""
    if isinstance(expected, list):
        assert validate(nodes) == expected
    else:
        with pytest.raises(expected):
            validate(nodes)


def test_stage_shapes_are_accepted_and_rejected_as_before():
    """Instance-dict, class-property (never evaluated, even one raising AttributeError),
    slotted, pydantic, class-object and __getattr__ stages are accepted; stages without cfg
    (a pydantic model built without it, a dict, None) are rejected."""
    reads = []

    class Derived:
        process = _process

        @property
        def cfg(self):
            reads.append(1)
            raise AttributeError("derived on demand")

    class Slotted:
        __slots__ = ("cfg",)
        process = _process

    class Model(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        cfg: GridCfg
        process = _process

    class AsClass:
        cfg = GridCfg()

        @classmethod
        def process(cls, state, *, policy=None):
            return state

    class Dynamic:
        process = _process

        def __getattr__(self, name):
            if name == "cfg":
                return GridCfg()
            raise AttributeError(name)

    good = [GridStage(GridCfg()), Derived(), Slotted(), Model(cfg=GridCfg()), AsClass, Dynamic()]
    nodes = [NodeSpec(id=f"n{i}", stage=stage) for i, stage in enumerate(good)]
    assert validate(nodes) == [node.id for node in nodes]
    assert reads == []
    for bad in (Model.model_construct(), {"cfg": 1, "process": _process}, None):
        with pytest.raises(MissingStageError):
            validate([NodeSpec(id="a", stage=bad)])


def test_engine_shared_nodes_unchanged():
    """The list comprehension collects the same shared nodes: parents with several children
    and available states several tasks read, only when mutation is checked."""
    tasks = [
        NodeTask("grid", (), None, None),
        NodeTask("p1", ("grid", "x"), None, None),
        NodeTask("p2", ("grid", "x"), None, None),
        NodeTask("m", ("p1", "p2", "y"), None, None),
    ]
    available = {"x": SimpleState(1), "y": SimpleState(2)}
    engine = RunEngine(tasks, available, object())
    assert engine.shared == {"grid", "x"} and set(engine.states.digests) == {"x"}
    unchecked = [NodeTask(t.node_id, t.deps, None, None, check_mutation=False) for t in tasks]
    assert RunEngine(unchecked, available, object()).shared == set()
