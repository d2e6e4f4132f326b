"""The whole test session, notebooks included, runs with a throwaway home: no test (and no
tutorial kernel nbval starts) reads or writes the developer's ``$HOME``, such as the cache
signing key in ``~/.config/phys-pipeline``. Tests that need a key file of their own take the
``isolated_cache_key`` fixture (tests/conftest.py).

Each tutorial under notebooks/ must run top to bottom in a minute: nbval runs one test per
cell, and the cell that takes its notebook past the budget fails, naming the notebook and its
time so far. (Here rather than in notebooks/, whose file browser readers see.)"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator

import pytest

_ISOLATED = ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "IPYTHONDIR")
_saved: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    home = tempfile.mkdtemp(prefix="phys-pipeline-tests-home-")
    places = {
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "IPYTHONDIR": os.path.join(home, ".ipython"),
    }
    for name in (*_ISOLATED, "PHYS_PIPELINE_CACHE_KEY"):
        _saved[name] = os.environ.get(name)
    os.environ.update(places)
    os.environ.pop("PHYS_PIPELINE_CACHE_KEY", None)  # a developer's own key is not the tests'
    config.stash[_HOME] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    for name, value in _saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    home = config.stash.get(_HOME, None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


_HOME = pytest.StashKey[str]()


NOTEBOOK_BUDGET_S = 60.0
_spent: dict[str, float] = defaultdict(float)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    notebook = item.nodeid.split("::", 1)[0]
    if not notebook.endswith(".ipynb"):
        return
    _spent[notebook] += call.duration
    if call.when == "call" and report.passed and _spent[notebook] > NOTEBOOK_BUDGET_S:
        report.outcome = "failed"
        report.longrepr = (
            f"{notebook} has taken {_spent[notebook]:.1f} s so far, over its "
            f"{NOTEBOOK_BUDGET_S:.0f} s budget: a tutorial must run top to bottom in a minute"
        )
