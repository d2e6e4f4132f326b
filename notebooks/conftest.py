"""Each tutorial must run top to bottom in a minute: nbval runs one test per cell, and the cell
that takes its notebook past the budget fails, naming the notebook and its time so far."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest

BUDGET_S = 60.0
_spent: dict[str, float] = defaultdict(float)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    notebook = item.nodeid.split("::", 1)[0]
    if not notebook.endswith(".ipynb"):
        return
    _spent[notebook] += call.duration
    if call.when == "call" and report.passed and _spent[notebook] > BUDGET_S:
        report.outcome = "failed"
        report.longrepr = (
            f"{notebook} has taken {_spent[notebook]:.1f} s so far, over its {BUDGET_S:.0f} s "
            "budget: a tutorial must run top to bottom in a minute"
        )
