"""Small physics-flavoured stages the tests share, one module a family:

- ``dag_stages`` (tests/dag_stages.py, re-exported here): a frequency grid, quadratic phases and a
  merge, wired as ``diamond()``. It stays a top-level module because tests assert stage identities
  such as ``dag_stages.GridStage`` in stale reasons.
- ``stages.optics``: the ultrafast-optics line the widget tests edit (grid -> pulse -> fibre ->
  duration, grid -> spectrum), with a config field of every kind a control is made for.

Stages a test defines on purpose (a notebook redefinition, a stage that misbehaves for one test)
stay in that test.
"""

from dag_stages import (
    FailCfg,
    FailStage,
    GridCfg,
    GridStage,
    PhaseCfg,
    PhaseStage,
    SumCfg,
    SumStage,
    diamond,
    with_stage,
)

__all__ = [
    "FailCfg",
    "FailStage",
    "GridCfg",
    "GridStage",
    "PhaseCfg",
    "PhaseStage",
    "SumCfg",
    "SumStage",
    "diamond",
    "with_stage",
]
