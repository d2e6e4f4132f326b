"""Example physics stages that tutorials and tests import.

- :mod:`phys_pipeline.examples.ultrafast` -- linear ultrafast optics in fs, nm and mm: a
  frequency grid, Gaussian pulses, fibre dispersion, a Treacy grating compressor, spectral-phase
  fitting and pulse-duration measurement.
- :mod:`phys_pipeline.examples.soliton` -- split-step Fourier propagation of the nonlinear
  Schroedinger equation in ps, km and W, launched with sech solitons.

Every stage reads and writes ``SimpleState.meta``, copies the incoming state, returns scalar
metrics and lazy matplotlib figures. Submodules are imported on demand, so this package stays
as light as the core.
"""

__all__ = ["soliton", "ultrafast"]  # submodules, imported on demand
