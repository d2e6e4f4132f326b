"""Small physics-flavoured stages the tests share, one module a family.

- ``stages.media``: nested config models (``Medium``, its subclass ``Glass``).
- ``stages.optics``: the ultrafast-optics line the widget tests edit (grid -> pulse -> fibre ->
  duration, grid -> spectrum), with a config field of every kind a control is made for.
- ``stages.beams``: a Gaussian beam and amplifiers (a large field, a tag outside the output),
  for the tests of results Dask workers file.
- ``stages.scribblers``: a stage that writes to the grid it was given and peak finders reading
  that grid, for the tests that nothing computed from a corrupted input stays cached.
- ``stages.states``: ``Trace``, a user-defined state (samples and a label of any kind) that
  caches can keep only as a signed pickle.
- The frequency grid, quadratic phases and merge wired as ``diamond()`` stay in the top-level
  module ``dag_stages`` (tests/dag_stages.py): tests assert stage identities such as
  ``dag_stages.GridStage`` in stale reasons, so that module keeps its name.

Stages a test defines on purpose (a notebook redefinition, a stage that misbehaves for one test)
stay in that test.
"""
