"""Attacks on fingerprint walks kept between plans (``_REUSABLE`` in fingerprint.py).

A stable walk of a function or class is reused by a later plan while every binding it read is
still the same object. Each test states the CORRECT behaviour: after an edit, the next run
gives the new answer (never a cache hit serving the old one); planning on two threads never
raises; what a notebook redefines is freed; a node that cannot be cached files nothing.
Notebook tests exec cells into one ``__main__`` namespace (notebook_kernel.py).
"""

from __future__ import annotations

import gc
import importlib
import sys
import textwrap
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from notebook_kernel import PROBE_CFG, PROBE_NODES, READING, Notebook, Opener, answer, probe

import phys_pipeline.fingerprint as fingerprint_module
from phys_pipeline import DagExecutor, LocalScheduler, NodeSpec, SimpleState
from phys_pipeline.cache import DiskStore, MemoryStore
from phys_pipeline.dag import make_plan

IMPORTS = (
    """
import abc
import functools

from phys_pipeline import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

"""
    + READING
    + "\n"
    + PROBE_CFG
)


@pytest.fixture
def notebook(tmp_path, isolated_cache_key, monkeypatch) -> Opener:
    """Opens a notebook of the given cells (after an imports cell, before the "nodes" cell),
    run through a DagExecutor over a DiskStore, nodes rebuilt before each run."""
    monkeypatch.chdir(tmp_path)

    def open_notebook(
        cells: dict[str, str], nodes: str = PROBE_NODES, way: str = "executor, nodes rebuilt"
    ) -> Notebook:
        return Notebook({"imports": IMPORTS, **cells, "nodes": nodes}, way, tmp_path / "cache")

    return open_notebook


@pytest.fixture
def user_module(monkeypatch) -> Callable[[str, str], types.ModuleType]:
    """Makes a user module (a file outside site-packages) from source, in sys.modules for
    the test only."""

    def make(name: str, source: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__file__ = f"/nonexistent/user/{name}.py"
        exec(compile(textwrap.dedent(source), module.__file__, "exec"), module.__dict__)
        monkeypatch.setitem(sys.modules, name, module)
        return module

    return make


def assert_edit_reaches_the_run(nb: Notebook, edit: Callable[[], None], before, after):
    assert answer(nb.run()) == pytest.approx(before)
    edit()
    assert answer(nb.run()) == pytest.approx(after)


# --- a kept walk found for an object it was not made for ------------------------------------

BY_NAME_METACLASS = """
class ByName(abc.ABCMeta):
    '''Classes equal when their names are (a registry's idea of equality).'''

    def __eq__(cls, other):
        return type(other) is type(cls) and cls.__qualname__ == other.__qualname__

    def __hash__(cls):
        return hash(cls.__qualname__)
"""


def glass(index: float) -> str:
    return f"""
class Glass(metaclass=ByName):
    @staticmethod
    def index():
        return {index}
"""


def test_class_redefined_under_a_metaclass_comparing_by_name_gives_the_new_answer(notebook):
    # the kept walks are a WeakKeyDictionary: the new Glass finds the old Glass's entry
    # (equal under ByName), whose checks all read the old class, so they hold
    nb = notebook(
        {"meta": BY_NAME_METACLASS, "glass": glass(1.5), "stages": probe("Glass.index()")}
    )
    assert_edit_reaches_the_run(nb, lambda: nb.execute("glass", glass(2.5)), 1.5, 2.5)


FACTORY_STAGES = """
def probe_class(value):
    class Probe(PipelineStage[SimpleState, ProbeCfg], metaclass=ByName):
        def process(self, state, *, policy=None):
            return reading(value)

    return Probe


Low, High = probe_class(1.0), probe_class(2.0)
"""


def test_two_stage_classes_equal_under_their_metaclass_keep_their_own_answers(notebook):
    # one plan: make_plan's and the Fingerprinter's per-class tables are dicts keyed by class
    nodes = (
        'nodes = [NodeSpec(id="low", stage=Low(ProbeCfg())), '
        'NodeSpec(id="high", stage=High(ProbeCfg()))]\n'
    )
    nb = notebook({"meta": BY_NAME_METACLASS, "stages": FACTORY_STAGES}, nodes=nodes)
    first = nb.run()
    assert first.plan.nodes["low"].key != first.plan.nodes["high"].key
    second = nb.run()
    assert (answer(second, "low"), answer(second, "high")) == (1.0, 2.0)


# --- bindings a kept walk does not check ----------------------------------------------------


def test_module_getattr_value_changed_gives_the_new_answer(notebook, user_module):
    # PEP 562: consts.C comes from the module's __getattr__, so the kept check is "C is
    # still missing from the module's dict", which holds whatever __getattr__ returns
    consts = user_module(
        "lazy_consts_attack",
        """
        _VALUES = {"C": 2.0}


        def __getattr__(name):
            try:
                return _VALUES[name]
            except KeyError:
                raise AttributeError(name) from None
        """,
    )
    nb = notebook({"consts": "import lazy_consts_attack", "stages": probe("lazy_consts_attack.C")})
    assert_edit_reaches_the_run(nb, lambda: consts._VALUES.update(C=3.0), 2.0, 3.0)


def test_function_attribute_added_after_the_first_plan_gives_the_new_answer(notebook):
    # gain had no __dict__ entries when its walk was kept, so nothing checks gain.__dict__
    helper = "def gain(x):\n    return 2.0 * x\n"
    stages = probe("getattr(gain, 'factor', 1.0) * gain(1.0)")
    nb = notebook({"helpers": helper, "stages": stages})
    assert_edit_reaches_the_run(nb, lambda: nb.execute("tune", "gain.factor = 3.0"), 2.0, 6.0)


def test_function_dict_replaced_gives_the_new_answer(notebook):
    # the kept check compares the items of the OLD __dict__ object, which still hold
    helper = "def gain(x):\n    return 2.0 * x\n\n\ngain.factor = 1.0\n"
    nb = notebook({"helpers": helper, "stages": probe("gain.factor * gain(1.0)")})
    edit = lambda: nb.execute("tune", "gain.__dict__ = {'factor': 5.0}")  # noqa: E731
    assert_edit_reaches_the_run(nb, edit, 2.0, 10.0)


def test_cached_property_function_replaced_gives_the_new_answer(notebook):
    # the class's members are the same objects; the cached_property's .func is not
    cells = {
        "model": """
        class Medium:
            @functools.cached_property
            def index(self):
                return 1.5


        def corrected(self):
            return 2.5
        """,
        "stages": probe("Medium().index"),
    }
    nb = notebook(cells)
    edit = lambda: nb.execute("patch", "Medium.__dict__['index'].func = corrected")  # noqa: E731
    assert_edit_reaches_the_run(nb, edit, 1.5, 2.5)


# --- races: an edit on another thread while a plan walks ------------------------------------


def _once_on_return(function: Callable, edit: Callable[[types.FrameType], bool]) -> Callable:
    """A profile hook that runs ``edit`` when ``function`` returns, until ``edit`` says it
    acted: another thread's edit landing at that point of the walk (the GIL may switch
    threads after any bytecode), made deterministic."""
    code = function.__code__
    done: list[bool] = []

    def hook(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "return" and frame.f_code is code and not done and edit(frame):
            done.append(True)

    hook.done = done  # type: ignore[attr-defined]
    return hook


@pytest.mark.parametrize("binding", ["module attribute", "function __code__"])
def test_edit_landing_mid_walk_is_not_hidden_by_the_kept_walk(notebook, user_module, binding):
    # a widget thread plans (session.stale) while the user's thread edits: the walk hashes
    # the value it read, then records as "expected" the binding read AGAIN later. Once the
    # plan has seen the edit land, every later plan reuses the walk of the old value.
    consts = user_module("race_consts_attack", "C = 2.0\n")
    cells = {
        "consts": "import race_consts_attack",
        "helpers": "def helper():\n    return 1.0\n\n\ndef patched():\n    return 3.0\n",
        "stages": probe("race_consts_attack.C * helper() * self.cfg.mass"),
    }
    nb = notebook(cells)
    assert answer(nb.run()) == pytest.approx(3.0)
    if binding == "module attribute":
        nb.execute("stages")  # re-executed unchanged: a new class, walked afresh

        def edit(frame: types.FrameType) -> bool:
            if frame.f_locals.get("ref") is None or frame.f_locals["ref"].name != consts.__name__:
                return False
            consts.C = 3.0  # the binding has just been read: the walk goes on with the old one
            return True

        hook = _once_on_return(fingerprint_module.Fingerprinter._resolve, edit)
        expected = 3.0 * 1.0 * 1.5  # C = 3.0, helper() = 1.0, mass = 1.5
    else:
        nb.execute("helpers")  # re-executed unchanged: a new helper, walked afresh
        helper, patched = nb["helper"], nb["patched"]

        def edit(frame: types.FrameType) -> bool:
            if frame.f_locals.get("code") is not helper.__code__:
                return False
            helper.__code__ = patched.__code__  # what an autoreloader does
            return True

        hook = _once_on_return(fingerprint_module._facts, edit)
        expected = 2.0 * 3.0 * 1.5  # C = 2.0, helper() = 3.0, mass = 1.5
    sys.setprofile(hook)
    try:
        nb.stale()
    finally:
        sys.setprofile(None)
    assert hook.done, "the edit never landed mid-walk"
    # the edit is done: the run (and every run after it) must use the new value
    assert answer(nb.run()) == pytest.approx(expected)
    assert answer(nb.run()) == pytest.approx(expected)


def test_two_threads_planning_after_an_edit_never_raise():
    # both find the kept walk invalid and `del` it: the second del raises KeyError
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(IMPORTS + "\nSCALE = (2.0,)\n\n\ndef helper():\n    return sum(SCALE)\n", namespace)
    exec(probe("helper()"), namespace)
    nodes = [NodeSpec(id="probe", stage=namespace["Probe"](namespace["ProbeCfg"]()))]
    errors: list[BaseException] = []

    def plan() -> None:
        try:
            make_plan(nodes, SimpleState())
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not errors:
            namespace["SCALE"] = (2.0,)  # a stable walk, kept
            plan()
            namespace["SCALE"] = [2.0]  # now a list: the walk is invalid and not kept again
            threads = [threading.Thread(target=plan) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


# --- what a kept walk keeps alive -----------------------------------------------------------


def test_redefined_helper_and_stage_class_are_freed():
    # a kept walk's checks hold its own function or class (a WeakKeyDictionary value holding
    # its key), and the values it read: nothing a notebook redefines is ever freed
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(IMPORTS, namespace)
    cells = "SCALE = 2.0 + 0.5\n\n\ndef helper():\n    return SCALE\n\n\n" + probe("helper()")

    def plan() -> None:
        nodes = [NodeSpec(id="probe", stage=namespace["Probe"](namespace["ProbeCfg"]()))]
        make_plan(nodes, SimpleState())

    exec(cells, namespace)
    plan()
    old_helper, old_probe = weakref.ref(namespace["helper"]), weakref.ref(namespace["Probe"])
    exec(cells, namespace)  # the cell re-executed
    plan()
    gc.collect()
    assert old_helper() is None
    assert old_probe() is None


# --- nodes that cannot be cached ------------------------------------------------------------

UNCACHEABLE = """
SOURCE = iter(range(10**6))  # a generator: cannot be hashed
"""


def _files(root: Path) -> int:
    return sum(1 for path in root.rglob("*") if path.is_file())


@pytest.mark.filterwarnings("ignore::phys_pipeline.errors.UncacheableWarning")
def test_uncacheable_node_files_nothing_under_its_throwaway_keys(tmp_path, isolated_cache_key):
    # each run files the result under a random key nothing will ever ask for: the disk
    # cache grows by one entry per run, a memory tier fills up and evicts useful entries
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(IMPORTS + UNCACHEABLE + probe("next(SOURCE) * 0 + 2.0"), namespace)
    nodes = [NodeSpec(id="probe", stage=namespace["Probe"](namespace["ProbeCfg"]()))]
    memory = MemoryStore()
    for cache in (DiskStore(tmp_path / "cache"), memory):
        executor = DagExecutor(scheduler=LocalScheduler(max_workers=1), cache=cache)
        sizes = []
        for _ in range(3):
            assert executor.run(SimpleState(), nodes).ran == ["probe"]
            sizes.append(_files(tmp_path / "cache") if cache is not memory else len(memory))
        assert sizes[0] == sizes[-1], f"{type(cache).__name__} grew: {sizes}"


# --- edits a kept walk must see (regression guards) -----------------------------------------

EDITS: dict[str, tuple[str, str, str, float, float]] = {
    # name: (cell, stage body, edit cell, answer before, answer after)
    "base class __bases__ changed": (
        "class A:\n    K = 1.0\n\n\nclass B:\n    K = 2.0\n\n\nclass C(A):\n    pass\n",
        "C.K",
        "C.__bases__ = (B,)",
        1.0,
        2.0,
    ),
    "setattr on a base class": (
        "class A:\n    K = 1.0\n\n\nclass C(A):\n    pass\n",
        "C.K",
        "setattr(A, 'K', 5.0)",
        1.0,
        5.0,
    ),
    "staticmethod of a base class replaced": (
        "class A:\n    @staticmethod\n    def f():\n        return 1.0\n\n\n"
        "class B(A):\n    pass\n",
        "B.f()",
        "A.f = staticmethod(lambda: 3.0)",
        1.0,
        3.0,
    ),
    "metaclass attribute changed": (
        "class M(type):\n    X = 1.0\n\n\nclass A(metaclass=M):\n    pass\n",
        "A.X",
        "M.X = 4.0",
        1.0,
        4.0,
    ),
    "closure cell rebound by nonlocal": (
        "def make():\n    k = 1.0\n\n    def get():\n        return k\n\n"
        "    def put(v):\n        nonlocal k\n        k = v\n\n    return get, put\n\n\n"
        "get, put = make()\n",
        "get()",
        "put(4.0)",
        1.0,
        4.0,
    ),
    "keyword default changed in place": (
        "def g(*, s=1.0):\n    return s\n",
        "g()",
        "g.__kwdefaults__['s'] = 6.0",
        1.0,
        6.0,
    ),
    "function __code__ replaced": (
        "def g():\n    return 1.0\n\n\ndef h():\n    return 9.0\n",
        "g()",
        "g.__code__ = h.__code__",
        1.0,
        9.0,
    ),
    "builtin shadowed after the first plan": (
        "def g():\n    return float(abs(-3))\n",
        "g()",
        "abs = lambda x: 11",
        3.0,
        11.0,
    ),
    "global deleted then bound again": (
        "S = 2.0\n\n\ndef g():\n    return S\n",
        "g()",
        "del S\nS = 8.0",
        2.0,
        8.0,
    ),
    "global missing at the first plan, defined later": (
        "def g():\n    try:\n        return T\n    except NameError:\n        return 1.0\n",
        "g()",
        "T = 12.0",
        1.0,
        12.0,
    ),
    "list inside a tuple global changed in place": (
        "T = ([1.0],)\n\n\ndef g():\n    return T[0][0]\n",
        "g()",
        "T[0][0] = 16.0",
        1.0,
        16.0,
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edit_seen_by_a_kept_walk_gives_the_new_answer(notebook, edit):
    cell, body, change, before, after = EDITS[edit]
    nb = notebook({"helpers": cell, "stages": probe(body)})
    assert_edit_reaches_the_run(nb, lambda: nb.execute("edit", change), before, after)


@pytest.fixture
def package(tmp_path, monkeypatch) -> Iterator[Path]:
    """A user package on sys.path (no bytecode written), removed from sys.modules after."""
    root = tmp_path / "src"
    (root / "reuse_attack_pkg").mkdir(parents=True)
    (root / "reuse_attack_pkg" / "__init__.py").write_text("")
    (root / "reuse_attack_pkg" / "consts.py").write_text("C = 1.0\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    yield root / "reuse_attack_pkg"
    for name in [n for n in sys.modules if n.startswith("reuse_attack_pkg")]:
        del sys.modules[name]


def test_module_reloaded_with_a_new_constant_gives_the_new_answer(notebook, package):
    nb = notebook(
        {"consts": "import reuse_attack_pkg.consts", "stages": probe("reuse_attack_pkg.consts.C")}
    )

    def reload() -> None:
        (package / "consts.py").write_text("C = 2.0 * 7\n")
        importlib.reload(sys.modules["reuse_attack_pkg.consts"])

    assert_edit_reaches_the_run(nb, reload, 1.0, 14.0)


def test_module_replaced_in_sys_modules_gives_the_new_answer(notebook, user_module):
    user_module("swapped_consts_attack", "C = 1.0\n")
    stages = """
    class Probe(PipelineStage[SimpleState, ProbeCfg]):
        def process(self, state, *, policy=None):
            import swapped_consts_attack

            return reading(swapped_consts_attack.C)
    """
    nb = notebook({"stages": textwrap.dedent(stages)})
    edit = lambda: user_module("swapped_consts_attack", "C = 13.0\n")  # noqa: E731
    assert_edit_reaches_the_run(nb, edit, 1.0, 13.0)


# --- nothing changed: nothing reruns --------------------------------------------------------

STEADY = """
TABLE = (1.0, 2.0, 3.0)
NAMES = frozenset({"a", "b"})


def weight(x, *, power=2):
    return x**power


class Model:
    FACTOR = 0.5

    def scale(self, x):
        return self.FACTOR * weight(x) * len(NAMES)


def make_offset():
    offset = 0.25

    def add(x):
        return x + offset

    return add


add = make_offset()
"""


@pytest.mark.parametrize("way", ["executor, same stage objects", "session, same stage objects"])
def test_many_runs_with_nothing_changed_all_hit_after_the_first(notebook, way):
    nb = notebook({"steady": STEADY, "stages": probe("add(Model().scale(sum(TABLE)))")}, way=way)
    first = nb.run()
    assert first.ran == ["probe"] and answer(first) == pytest.approx(36.25)
    for _ in range(5):
        result = nb.run()
        assert result.ran == [] and answer(result) == pytest.approx(36.25)


def test_walks_reused_give_the_same_keys_as_fresh_walks(monkeypatch):
    # a plan reusing kept walks and a plan walking everything afresh agree on every key
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(IMPORTS + STEADY + probe("add(Model().scale(sum(TABLE)))"), namespace)
    nodes = [NodeSpec(id="probe", stage=namespace["Probe"](namespace["ProbeCfg"]()))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reused = [make_plan(nodes, SimpleState()).keys for _ in range(3)]
        monkeypatch.setattr(fingerprint_module, "_REUSABLE", {})
        fresh = make_plan(nodes, SimpleState()).keys
    assert reused == [fresh] * 3
