"""Stages and DAGs the benchmarks run, written against the public API of the seed guide only
(``/work/shared/spec/seed-guide.md``), so the very same code runs on this repository and on the
reference ``phys-pipeline==2.0.0`` in its own virtual environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from phys_pipeline.executor import DagExecutor
from phys_pipeline.pipeline import SequentialPipeline
from phys_pipeline.scheduler import LocalScheduler
from phys_pipeline.types import NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult

# --- trivial stages: what the framework costs when the stage costs nothing ------------------


class TrivialCfg(StageConfig):
    k: int = 0


class Trivial(PipelineStage):
    """Returns its input state immediately (the "trivial stage" of the overhead figures)."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        return StageResult(state=state)


def trivial_pipeline(n_stages: int) -> SequentialPipeline:
    stages = [Trivial(TrivialCfg(name=f"s{i}", k=i)) for i in range(n_stages)]
    return SequentialPipeline(stages, name="bench")


def trivial_chain(n_nodes: int) -> list[NodeSpec]:
    """``n0 -> n1 -> ... -> n{n-1}``, every node with its own config."""
    return [
        NodeSpec(
            id=f"n{i}",
            deps=[f"n{i - 1}"] if i else [],
            stage=Trivial(TrivialCfg(name=f"n{i}", k=i)),
        )
        for i in range(n_nodes)
    ]


def trivial_fanout(width: int) -> list[NodeSpec]:
    """One root and ``width`` children of it."""
    root = NodeSpec(id="root", stage=Trivial(TrivialCfg(name="root", k=-1)))
    children = [
        NodeSpec(id=f"c{i}", deps=["root"], stage=Trivial(TrivialCfg(name=f"c{i}", k=i)))
        for i in range(width)
    ]
    return [root, *children]


def trivial_state() -> SimpleState:
    return SimpleState(payload=1.0)


def executor(workers: int, cache: Any = None) -> DagExecutor:
    """A fresh executor per run: the reference's scheduler cannot be reused after a run."""
    scheduler = LocalScheduler(max_workers=workers, max_cpu=workers)
    return DagExecutor(scheduler=scheduler, cache=cache)


def disk_cache(root: Path) -> Any:
    from phys_pipeline.cache import DiskCache
    from phys_pipeline.dag_cache import DagCache

    return DagCache(DiskCache(root))


# --- FFT-heavy branches: does a second worker double the throughput? ------------------------


class GridCfg(StageConfig):
    n: int = 1 << 14
    dt_fs: float = 0.5


class TimeGrid(PipelineStage):
    """A time axis centred on zero, in femtoseconds."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        t = (np.arange(self.cfg.n) - self.cfg.n // 2) * self.cfg.dt_fs
        return StageResult(state=SimpleState(payload=None, meta={"t": t}))


class PropagateCfg(StageConfig):
    width_fs: float = 10.0
    gdd_per_step: float = 1.0
    steps: int = 200


class SplitStepPropagate(PipelineStage):
    """Linear split-step propagation of a Gaussian pulse: an FFT pair per step (numpy's FFT
    releases the GIL), then the peak intensity as a metric."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        t = state.meta["t"]
        field = np.exp(-((t / self.cfg.width_fs) ** 2)).astype(np.complex128)
        omega = 2 * np.pi * np.fft.fftfreq(t.size, d=t[1] - t[0])
        half_step = np.exp(0.25j * self.cfg.gdd_per_step * omega**2)
        kerr = np.exp(1e-3j * np.abs(field) ** 2)
        for _ in range(self.cfg.steps):
            spectrum = np.fft.fft(field)
            spectrum *= half_step
            field = np.fft.ifft(spectrum)
            field *= kerr
        peak = float(np.max(np.abs(field) ** 2))
        return StageResult(state=SimpleState(payload=peak, meta={"t": t}), metrics={"peak": peak})


def fft_branches(steps: int) -> list[NodeSpec]:
    """A time grid and two independent propagation branches reading it."""
    return [
        NodeSpec(id="grid", stage=TimeGrid(GridCfg(name="grid"))),
        NodeSpec(
            id="short",
            deps=["grid"],
            stage=SplitStepPropagate(PropagateCfg(name="short", width_fs=5.0, steps=steps)),
        ),
        NodeSpec(
            id="long",
            deps=["grid"],
            stage=SplitStepPropagate(PropagateCfg(name="long", width_fs=20.0, steps=steps)),
        ),
    ]


# --- large states: what a warm cache costs against reading the bytes ------------------------


class BigArrayCfg(StageConfig):
    megabytes: int = 64
    seed: int = 0


class BigArray(PipelineStage):
    """Makes a ``megabytes`` MB float64 array (a stand-in for a big field or spectrogram)."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        n = self.cfg.megabytes * 1_000_000 // 8
        data = np.random.default_rng(self.cfg.seed).standard_normal(n)
        return StageResult(state=SimpleState(payload=None, meta={"data": data}))


def big_array_dag(mb: int) -> list[NodeSpec]:
    """Two independent nodes, each holding one ``mb`` MB array."""
    return [
        NodeSpec(id=f"big{i}", stage=BigArray(BigArrayCfg(name=f"big{i}", megabytes=mb, seed=i)))
        for i in range(2)
    ]


class Energy(PipelineStage):
    """Reduces a big field to its energy: a small state and one metric."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        energy = float(np.dot(state.meta["data"], state.meta["data"]))
        return StageResult(state=SimpleState(payload=energy), metrics={"energy": energy})


def big_sweep(variants: int, mb: int) -> list[NodeSpec]:
    """``variants`` big fields (a sweep over the seed), each reduced to its energy below."""
    from phys_pipeline.sweep import SweepSpec, expand_sweep

    nodes = [
        NodeSpec(id="field", stage=BigArray(BigArrayCfg(name="field", megabytes=mb))),
        NodeSpec(id="energy", deps=["field"], stage=Energy(TrivialCfg(name="energy"))),
    ]
    return list(expand_sweep(nodes, [SweepSpec("field", {"seed": list(range(variants))})]))


def state_arrays(state: Any) -> list[np.ndarray]:
    return [v for v in state.meta.values() if isinstance(v, np.ndarray)]


def hash_state() -> SimpleState:
    """A state holding a 400 MB float64 array (the hashing figures)."""
    return SimpleState(payload=np.random.default_rng(0).standard_normal(50_000_000))


# --- an interactive session: edit one config, rerun what it invalidated ---------------------


class SpectrumCfg(StageConfig):
    n: int = 4096
    span: float = 1.0


class Spectrum(PipelineStage):
    """A frequency grid and a flat spectral phase."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        omega = np.linspace(-self.cfg.span, self.cfg.span, self.cfg.n)
        return StageResult(
            state=SimpleState(payload=None, meta={"omega": omega, "phase": np.zeros_like(omega)})
        )


class PhaseCfg(StageConfig):
    gdd: float = 0.0
    tod: float = 0.0


class AddPhase(PipelineStage):
    """Adds a polynomial spectral phase (a dispersive element) and reports its peak."""

    def process(self, state: Any, *, policy: Any = None) -> StageResult:
        omega = state.meta["omega"]
        phase = state.meta["phase"] + 0.5 * self.cfg.gdd * omega**2 + self.cfg.tod * omega**3 / 6
        return StageResult(
            state=SimpleState(payload=None, meta={"omega": omega, "phase": phase}),
            metrics={"max_phase": float(np.abs(phase).max())},
        )


BRANCHES, DEPTH = 7, 7
EDITED = "b2_0"  # the head of a branch: it and the 6 nodes below it go stale
STALE_AFTER_EDIT = DEPTH


def fifty_nodes() -> list[NodeSpec]:
    """A spectrum feeding 7 independent branches of 7 dispersive elements: 50 nodes."""
    nodes = [NodeSpec(id="spectrum", stage=Spectrum(SpectrumCfg(name="spectrum")))]
    for b in range(BRANCHES):
        for d in range(DEPTH):
            parent = "spectrum" if d == 0 else f"b{b}_{d - 1}"
            cfg = PhaseCfg(name=f"b{b}_{d}", gdd=0.1 * (b + 1), tod=0.01 * d)
            nodes.append(NodeSpec(id=f"b{b}_{d}", deps=[parent], stage=AddPhase(cfg)))
    return nodes


def initial_state() -> SimpleState:
    return SimpleState(payload=None)
