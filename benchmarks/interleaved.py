"""Ours against a baseline revision, taking turns: the A/B behind "within 5% of the baseline".

    python benchmarks/interleaved.py [--baseline REV] [--pairs N] [--processes K] [--wall]
                                     [WORKLOAD ...]

``run.py`` measures ours, then the baseline, each in a process of its own, so a burst of load
on a shared machine that falls on one side moves the ratio by 10-50% (seen on this project's
2-core VMs). Here two warm processes, one per implementation, run one round of a workload in
turn (the order swapped every pair) until each has run ``--pairs`` rounds: a burst falls on
both. A ratio also depends on the processes themselves (memory layout, hash seed: the cold
chain read 1.02 and 1.10 in two invocations of 150 pairs), so this is done with ``--processes``
fresh pairs of processes. Printed per workload: each side's fastest round, the median of the
process pairs' medians of pairs' ratios (ours ÷ baseline: above 1, ours is slower), and the
range of those medians. CPU time of the process by default (every thread), wall time with
``--wall``. The workloads are those of ``workloads.py`` the tables use:

- ``chain``: a cold run of the 500-node chain of trivial stages, per node (``dag_chain``);
- ``fanout``: the same for a root and 500 children on 2 workers (``dag_fanout``);
- ``memhit``, ``diskhit``: the chain, every node a memory (disk) cache hit, per node;
- ``plan``: ``make_plan`` of the chain, per node (``plan_chain``);
- ``seq``: a 200-stage sequential pipeline, per stage, stage calls included (``seq_overhead``);
- ``hash``: ``hashable_repr`` of a state holding a 400 MB float64 array, per MB
  (``hash_throughput``);
- ``update``: ``LiveSession.update`` of the 50-node session, per edit (``live_edit``);
- ``live``: update and run, wall time less the ran stages' own durations, per edit (the
  ``live_edit`` overhead; always wall time);
- ``liveinline``: the same with the session's nodes run on the calling thread
  (``LocalScheduler(max_workers=1)``, how every session ran before Stop needed a worker
  thread: what the rest costs, like for like).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOADS = (
    "chain",
    "fanout",
    "memhit",
    "diskhit",
    "plan",
    "seq",
    "hash",
    "update",
    "live",
    "liveinline",
)


Round = tuple[Callable[[], Any], int, bool]
"""One round of a workload, the units it counts, whether it returns its own measure (s)."""


def _workload(name: str) -> Round:
    import workloads as w

    state = w.trivial_state()
    if name in ("chain", "fanout"):
        nodes = w.trivial_chain(500) if name == "chain" else w.trivial_fanout(500)
        workers = 1 if name == "chain" else 2
        return (lambda: w.executor(workers).run(state, nodes)), len(nodes), False
    if name in ("memhit", "diskhit"):
        nodes = w.trivial_chain(500)
        if name == "memhit":
            from phys_pipeline.cache import MemoryStore
            from phys_pipeline.dag_cache import DagCache

            memory = DagCache(MemoryStore())
            w.executor(1, memory).run(state, nodes)
            return (lambda: w.executor(1, memory).run(state, nodes)), len(nodes), False
        root = Path(tempfile.mkdtemp(prefix="bench-interleaved-"))
        w.executor(1, w.disk_cache(root)).run(state, nodes)
        # a new store each round, as run.py's figure: nothing is remembered between runs
        return (lambda: w.executor(1, w.disk_cache(root)).run(state, nodes)), len(nodes), False
    if name == "plan":
        from phys_pipeline.dag import make_plan

        nodes = w.trivial_chain(500)
        return (lambda: make_plan(nodes, state)), len(nodes), False
    if name == "hash":
        hashed = w.hash_state()
        return hashed.hashable_repr, hashed.payload.nbytes // 10**6, False
    if name == "seq":
        pipe = w.trivial_pipeline(200)
        return (lambda: [pipe.run(state) for _ in range(10)]), 2000, False
    from phys_pipeline.scheduler import LocalScheduler
    from phys_pipeline.session import LiveSession

    inline = {"scheduler": LocalScheduler(max_workers=1)} if name == "liveinline" else {}
    session = LiveSession(w.fifty_nodes(), w.initial_state(), **inline)
    session.run()
    edits = iter(range(1, sys.maxsize))

    def update() -> None:
        session.update(w.EDITED, gdd=1.0 + next(edits))

    def overhead() -> float:
        started = time.perf_counter()
        update()
        result = session.run()
        wall = time.perf_counter() - started
        return wall - sum(r.duration_s for r in result.runs.values() if r.status == "ran")

    return (update, 1, False) if name == "update" else (overhead, 1, True)


def serve() -> None:
    """The measuring side: reads workload names, answers microseconds per unit of one round."""
    sys.path.insert(0, str(HERE))
    import phys_pipeline

    clock = time.perf_counter if os.environ.get("INTERLEAVED_WALL") else time.process_time
    print(phys_pipeline.__file__, flush=True)
    rounds: dict[str, Round] = {}
    for line in sys.stdin:
        name = line.strip()
        if name not in rounds:
            rounds[name] = _workload(name)
            for _ in range(3):  # warm: first plans, imports, code paths
                rounds[name][0]()
        one, units, own_measure = rounds[name]
        gc.collect()
        started = clock()
        measured = one()
        seconds = measured if own_measure else clock() - started
        print(seconds / units * 1e6, flush=True)


def _start(home: Path, wall: bool) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(home))
    if wall:
        env["INTERLEAVED_WALL"] = "1"
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),  # not this checkout: PYTHONPATH decides what is imported
        env=env,
    )
    module = process.stdout.readline().strip()  # type: ignore[union-attr]
    if not module.startswith(str(home)):
        raise SystemExit(f"expected phys_pipeline from {home}, the process imported {module}")
    return process


def _round(process: subprocess.Popen[str], name: str) -> float:
    process.stdin.write(name + "\n")  # type: ignore[union-attr]
    process.stdin.flush()  # type: ignore[union-attr]
    return float(process.stdout.readline())  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", help=", ".join(WORKLOADS))
    parser.add_argument("--baseline", default=None, help="git revision (default: run.py's)")
    parser.add_argument("--pairs", type=int, default=100, help="rounds per process pair")
    parser.add_argument(
        "--processes",
        type=int,
        default=5,
        help="fresh process pairs per workload (each process's memory layout and hash seed "
        "move a ratio by a few percent)",
    )
    parser.add_argument("--wall", action="store_true", help="wall time, not CPU time")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; the workloads: {', '.join(WORKLOADS)}")
    sys.path.insert(0, str(HERE))
    import run

    sha, baseline = run.baseline_tree(args.baseline or run.BASELINE_REV)
    homes = {"ours": run.REPO, "baseline": baseline}
    print(
        f"ours ({run.REPO}) against {sha}, {args.processes} process pairs of {args.pairs} "
        f"pairs, {'wall' if args.wall else 'CPU'}"
    )
    for name in args.workloads or WORKLOADS:
        fastest = {side: math.inf for side in homes}
        medians = []
        for _ in range(args.processes):
            sides = {side: _start(home, args.wall) for side, home in homes.items()}
            try:
                ratios = _take_turns(sides, name, args.pairs, fastest)
            finally:
                for process in sides.values():
                    process.stdin.close()  # type: ignore[union-attr]
                    process.wait()
            medians.append(statistics.median(ratios))
        print(
            f"{name:10} ours {fastest['ours']:9.2f} µs  {sha} {fastest['baseline']:9.2f} µs"
            f"  ours ÷ {sha}: {statistics.median(medians):.3f} (median of the process pairs'"
            f" medians of pairs; {min(medians):.3f}-{max(medians):.3f})",
            flush=True,
        )


def _take_turns(
    sides: dict[str, subprocess.Popen[str]], name: str, pairs: int, fastest: dict[str, float]
) -> list[float]:
    """``pairs`` rounds of ``name`` on each side, the order swapped every pair: the pairs'
    ratios (ours ÷ baseline); ``fastest`` keeps each side's fastest round."""
    ratios = []
    for i in range(pairs):
        order = list(sides) if i % 2 else list(reversed(sides))
        got = {side: _round(sides[side], name) for side in order}
        for side, value in got.items():
            fastest[side] = min(fastest[side], value)
        ratios.append(got["ours"] / got["baseline"])
    return ratios


if __name__ == "__main__":
    main()
