"""Where the per-node time of a cold DAG run goes (ours only): the phases of
``DagExecutor.run`` timed one by one on a chain of trivial stages, through its public steps
(``prepare``: plan, staleness, cache lookups and task specs; ``execute``: the scheduler and
the result).

    python benchmarks/breakdown.py [NODES]

CPU time (``time.process_time``), the minimum over many runs, so that other processes on a
shared machine disturb it less than wall time; the phases add up to about one run. The
mutation check (re-hashing each node's input after the stage, ``check_mutation=True``, the
default) and the stage call are split out of the scheduler's share by timing them alone.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

from phys_pipeline._invoke import call_stage
from phys_pipeline.dag import make_plan
from phys_pipeline.scheduler import NodeTask, run_node

import workloads as w

RUNS = 40


def cpu_us(fn: Callable[[], Any], per: int, runs: int = RUNS) -> float:
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best / per * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    nodes, state = w.trivial_chain(n), w.trivial_state()
    stage = nodes[1].stage
    task = NodeTask(node_id="n1", deps=("n0",), stage=stage, policy=None)
    unchecked = NodeTask(node_id="n1", deps=("n0",), stage=stage, policy=None, check_mutation=False)
    parents = {"n0": state}

    # a new executor for each run, as for the whole run: no previous plan to explain against
    whole = cpu_us(lambda: w.executor(1).run(state, nodes), n)
    planning = cpu_us(lambda: make_plan(nodes, state), n)
    prepared = cpu_us(lambda: w.executor(1).prepare(state, nodes), n)  # plan, staleness, tasks
    bookkeeping = prepared - planning

    def prepare_and_execute() -> None:
        executor = w.executor(1)
        executor.execute(executor.prepare(state, nodes))

    after_plan = cpu_us(prepare_and_execute, n) - prepared
    checked_node = cpu_us(lambda: [run_node(task, parents) for _ in range(n)], n)
    unchecked_node = cpu_us(lambda: [run_node(unchecked, parents) for _ in range(n)], n)
    stage_call = cpu_us(lambda: [call_stage(stage, state, None, "n1") for _ in range(n)], n)
    bare = cpu_us(lambda: [stage.process(state) for _ in range(n)], n)
    rows = [
        ("whole run (DagExecutor.run)", whole),
        ("  plan: validation, order, Merkle keys", planning),
        ("  staleness, cache lookups, task specs", bookkeeping),
        ("  scheduling, hooks, recording, result", after_plan - checked_node),
        ("  mutation check: input hashed twice", checked_node - unchecked_node),
        ("  run_node without the check, less the call", unchecked_node - stage_call),
        ("  stage call and result validation", stage_call - bare),
        ("  the trivial stage itself", bare),
    ]
    print(f"CPU time per node, chain of {n} trivial stages, 1 worker, no cache (min of {RUNS})")
    for label, value in rows:
        print(f"{label:<46} {value:6.2f} µs")


if __name__ == "__main__":
    main()
