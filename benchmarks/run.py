"""Run every benchmark for phys-pipeline and, in the same run, for its peers; print one table.

    python benchmarks/run.py                  # everything (~10 minutes on 2 cores)
    python benchmarks/run.py --quick          # a smoke pass: fewer repeats, smaller fills
    python benchmarks/run.py --only dag_chain --only hash_throughput
    python benchmarks/run.py --write benchmarks/RESULTS.md
    python benchmarks/run.py --baseline HEAD~3    # compare with another revision of ours

Baseline: this repository at an earlier revision (``BASELINE_REV`` unless ``--baseline REV``),
extracted with ``git archive`` into ``benchmarks/.baseline-<sha>`` and measured by the very same
``measure.py`` and ``workloads.py`` with ``PYTHONPATH`` pointing at that tree; the table shows
ours ÷ baseline. Every process reports which ``phys_pipeline`` it imported, and the run stops if
that is not the package it was meant to measure.

Peers: the reference implementation ``phys-pipeline==2.0.0`` (installed from PyPI into
``benchmarks/.venv-reference`` on first use and driven through its public API only) and Dask
(``dask.threaded.get`` / ``dask.get`` on the equivalent task graph). Each (benchmark,
implementation) pair runs in a fresh process (``measure.py``), so that imports, caches and
memory high-water marks never leak from one measurement into another. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = HERE / ".venv-reference"
REFERENCE_REQUIREMENT = "phys-pipeline==2.0.0"
REFERENCE_VERSION = "2.0.0"
# The last commit before complete cache keys (code, configs and files by value): the "today"
# their cost is measured against. Move it when the team agrees on a new point of comparison.
BASELINE_REV = "5365fe4"

PEERS = ("reference", "dask")
IMPLS = ("ours", "baseline", *PEERS)
BENCHES: dict[str, tuple[str, ...]] = {
    # benchmark -> the implementations it is measured for
    "seq_overhead": ("ours", "baseline", "reference"),
    "plan_chain": ("ours", "baseline"),
    "dag_chain": ("ours", "baseline", "reference", "dask"),
    "dag_fanout": ("ours", "baseline", "reference", "dask"),
    "dag_scaling": ("ours", "baseline", "reference", "dask"),
    "fft_speedup": ("ours", "baseline", "reference", "dask"),
    "warm_cache_large": ("ours", "baseline", "reference"),
    "peak_memory": ("ours", "baseline", "reference"),
    "hash_throughput": ("ours", "baseline", "reference", "dask"),
    "cache_hit": ("ours", "baseline"),
    "disk_scaling": ("ours", "baseline"),
    "live_edit": ("ours", "baseline"),
    "driver_bytes": ("ours", "baseline"),
}
TIMEOUT_S = {"disk_scaling": 900, "dag_scaling": 600, "driver_bytes": 600}


@dataclass
class Row:
    """One line of the table: a figure measured for us and, where it applies, the peers."""

    key: str
    label: str
    unit: str
    lower_is_better: bool = True
    target: float | None = None
    peers: tuple[str, ...] = ()  # which of "reference", "dask" report this key
    ratios: bool = True  # show how many times better ours is than each peer
    check: Callable[[dict[str, Any]], bool | None] | None = field(default=None, repr=False)
    of_baseline: float | None = None  # target: ours at most this many times worse than baseline

    def met(self, figures: dict[str, Any]) -> bool | None:
        if self.check is not None:
            return self.check(figures)
        value = figures.get(self.key)
        if self.target is None or not isinstance(value, int | float):
            return None
        return value <= self.target if self.lower_is_better else value >= self.target

    def met_of_baseline(self, ours: dict[str, Any], baseline: dict[str, Any]) -> bool | None:
        times = worse_than(self, ours.get(self.key), baseline.get(self.key))
        if self.of_baseline is None or times is None:
            return None
        return times <= self.of_baseline


def worse_than(row: Row, ours: Any, baseline: Any) -> float | None:
    """How many times worse ours is than the baseline (ours ÷ baseline for times): <1 is
    better, the inverse of the peers' bracket, since the targets read "at most 1.2 times
    the baseline"."""
    if not isinstance(ours, int | float) or not isinstance(baseline, int | float):
        return None
    if ours <= 0 or baseline <= 0:
        return None
    return ours / baseline if row.lower_is_better else baseline / ours


def _flat(figures: dict[str, Any]) -> bool | None:
    small, large = figures.get("chain100.cold_us"), figures.get("chain10000.cold_us")
    if small is None or large is None:
        return None
    return large <= 1.5 * small


ROWS: list[Row] = [
    Row(
        "seq.overhead_us",
        "Sequential pipeline overhead per stage (trivial stage)",
        "µs",
        target=2,
        peers=("reference",),
    ),
    Row("seq.total_us", "  same, including the stage's own call", "µs", peers=("reference",)),
    Row(
        "plan.chain500_us",
        "Planning a 500-node chain (make_plan: validation, order, keys), per node",
        "µs",
        of_baseline=1.2,
    ),
    Row("plan.chain500_first_us", "  same, the first plan in a fresh process", "µs"),
    Row(
        "chain500.cold_us",
        "DAG overhead per node, 500-node chain, 1 worker (no cache)",
        "µs",
        target=10,
        peers=PEERS,
    ),
    Row(
        "chain500.warm_disk_us",
        "  same, warm: every node a disk-cache hit",
        "µs",
        peers=("reference",),
    ),
    Row("chain500.warm_memory_us", "  same, warm: every node a memory-cache hit", "µs"),
    Row(
        "fanout500.cold_us",
        "DAG overhead per node, 500-way fan-out, 2 workers (no cache)",
        "µs",
        target=15,
        peers=PEERS,
    ),
    Row(
        "fanout500.warm_disk_us",
        "  same, warm: every node a disk-cache hit",
        "µs",
        peers=("reference",),
    ),
    Row("fanout500.warm_memory_us", "  same, warm: every node a memory-cache hit", "µs"),
    Row("chain100.cold_us", "DAG overhead per node, chain of 100, 1 worker", "µs", peers=PEERS),
    Row("chain1000.cold_us", "DAG overhead per node, chain of 1,000, 1 worker", "µs", peers=PEERS),
    Row(
        "chain10000.cold_us",
        "DAG overhead per node, chain of 10,000 (target: flat)",
        "µs",
        peers=PEERS,
        check=_flat,
    ),
    Row(
        "fft.speedup",
        "Speedup, 2 independent FFT-heavy branches, 2 workers vs 1",
        "×",
        lower_is_better=False,
        target=1.9,
        peers=PEERS,
    ),
    Row(
        "fft.ceiling",
        "  same two stage calls on two bare threads (the machine's ceiling then)",
        "×",
        lower_is_better=False,
        peers=PEERS,
        ratios=False,
    ),
    Row(
        "fft.of_ceiling",
        "  speedup ÷ that ceiling",
        "×",
        lower_is_better=False,
        peers=PEERS,
    ),
    Row(
        "big.ratio",
        "Warm-cache run of a DAG holding 2 × 64 MB arrays ÷ np.load",
        "×",
        target=1.5,
        peers=("reference",),
    ),
    Row(
        "big.ratio_read",
        "  same, with every returned array read once on both sides",
        "×",
        peers=("reference",),
    ),
    Row(
        "hash.state_mb_s",
        "Array hashing for cache keys, 400 MB float64 state",
        "MB/s",
        lower_is_better=False,
        target=15000,
        peers=("reference",),
    ),
    Row(
        "hash.mb_s",
        "  hash_ndarray (ours) / dask.base.tokenize (Dask)",
        "MB/s",
        lower_is_better=False,
        peers=("dask",),
    ),
    Row("hit.memory_us", "Cache hit latency, small state, memory store", "µs", target=20),
    Row("hit.disk_us", "Cache hit latency, small state, disk", "µs", target=300),
    Row("hit.disk_budget_us", "  same, DiskStore(max_bytes=1 GiB): hits noted for eviction", "µs"),
    Row("hit.redis_us", "Cache hit latency, small state, Redis (loopback)", "µs", target=500),
    Row("disk.hit_few_us", "Disk hit latency, cache of 10 entries", "µs"),
    Row("disk.hit_many_us", "Disk hit latency, cache of {disk.entries_many} entries", "µs"),
    Row(
        "disk.du_many_s",
        "python -m phys_pipeline.cache du (admin.usage by node), {disk.entries_many} entries",
        "s",
    ),
    Row(
        "live.memory_overhead_ms",
        "LiveSession edit → rerun of 7 of 50 nodes, overhead",
        "ms",
        target=30,
        of_baseline=1.2,
    ),
    Row("live.disk_overhead_ms", "  same, with a DiskCache behind the memory tier", "ms"),
    Row(
        "live.memory_update_ms",
        "LiveSession.update alone (edit → staleness of 50 nodes, which plans)",
        "ms",
        of_baseline=1.2,
    ),
    Row("live.disk_update_ms", "  same, with a DiskCache behind the memory tier", "ms"),
    Row(
        "driver.mb",
        "Bytes into the driver process: 20-variant sweep of 64 MB states on a LocalCluster, "
        "shared DiskStore",
        "MB",
    ),
    Row("driver.off_mb", "  same, DaskScheduler(file_on_workers=False)", "MB"),
    Row("driver.s", "  wall time of that cold run", "s"),
    Row("driver.off_s", "  same, file_on_workers=False", "s"),
    Row(
        "mem.peak_ratio",
        "Peak memory of a warm run ÷ size of the states it returns",
        "×",
        target=1.3,
        peers=("reference",),
    ),
]


# --- the reference's virtual environment ----------------------------------------------------


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def reference_version() -> str | None:
    if not venv_python().exists():
        return None
    probe = subprocess.run(
        [
            str(venv_python()),
            "-c",
            "import importlib.metadata as m; print(m.version('phys-pipeline'))",
        ],
        capture_output=True,
        text=True,
        cwd=HERE,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_reference() -> None:
    """Create ``.venv-reference`` with ``phys-pipeline==2.0.0`` unless it is already there."""
    if reference_version() == REFERENCE_VERSION:
        return
    print(f"installing {REFERENCE_REQUIREMENT} into {VENV} ...", flush=True)
    if not venv_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--quiet", REFERENCE_REQUIREMENT],
        check=True,
    )
    if reference_version() != REFERENCE_VERSION:
        raise SystemExit(f"could not install {REFERENCE_REQUIREMENT} into {VENV}")


# --- the baseline: an earlier revision of this repository ---------------------------------


def baseline_tree(rev: str) -> tuple[str, Path]:
    """``(short sha, directory)``: the ``phys_pipeline`` package of ``rev`` under
    ``benchmarks/.baseline-<sha>/``, extracted with ``git archive`` on first use and kept."""
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if found.returncode != 0:
        raise SystemExit(f"--baseline {rev}: not a commit of {REPO}")
    sha = found.stdout.strip()
    root = HERE / f".baseline-{sha}"
    if (root / "phys_pipeline" / "__init__.py").is_file():
        return sha, root
    print(f"extracting phys_pipeline at {rev} ({sha}) into {root} ...", flush=True)
    # extract beside it, then rename: an interrupted extraction never looks like a cached one
    partial = Path(tempfile.mkdtemp(prefix=f"{root.name}.partial-", dir=HERE))
    archive = subprocess.Popen(
        ["git", "archive", sha, "phys_pipeline"], cwd=REPO, stdout=subprocess.PIPE
    )
    untar = subprocess.run(["tar", "-x", "-C", str(partial)], stdin=archive.stdout)
    archive.stdout.close()  # type: ignore[union-attr]
    if archive.wait() != 0 or untar.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise SystemExit(f"could not extract phys_pipeline at {rev} ({sha}) into {partial}")
    if not (partial / "phys_pipeline" / "__init__.py").is_file():
        shutil.rmtree(partial, ignore_errors=True)
        raise SystemExit(f"{rev} ({sha}) has no phys_pipeline/__init__.py")
    try:
        partial.rename(root)
    except OSError:  # another run extracted it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return sha, root


# --- running the measurements ---------------------------------------------------------------


def package_home(impl: str, baseline: Path | None) -> Path:
    """Where the ``phys_pipeline`` that ``impl``'s process imports must come from."""
    if impl == "reference":
        return VENV
    if impl == "baseline":
        assert baseline is not None, "the baseline was not extracted"
        return baseline / "phys_pipeline"
    return REPO / "phys_pipeline"


def check_package(impl: str, bench: str, module: Any, baseline: Path | None) -> None:
    """Stop the run if a process measured another ``phys_pipeline`` than it was meant to (an
    installed copy shadowing ``PYTHONPATH``, say): its figures would be silently wrong."""
    home = package_home(impl, baseline).resolve()
    if not isinstance(module, str) or not Path(module).resolve().is_relative_to(home):
        raise SystemExit(
            f"{impl} / {bench} imported phys_pipeline from {module}, not from {home}: "
            "its figures would describe another package; stopping."
        )


def measure(impl: str, bench: str, quick: bool, baseline: Path | None) -> dict[str, Any]:
    """Run ``measure.py`` for one pair in a fresh process; its figures, or ``{"_error": ...}``.
    ``baseline``: the directory holding the baseline's extracted ``phys_pipeline``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if impl == "reference":
        python = str(venv_python())
    else:
        python = sys.executable
        # this checkout or the extracted baseline, whatever is installed
        env["PYTHONPATH"] = str(package_home(impl, baseline).parent)
    args = [python, str(HERE / "measure.py"), impl, bench, *(["--quick"] if quick else [])]
    try:
        # cwd=HERE: the reference process must not see this checkout's phys_pipeline package
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            cwd=HERE,
            timeout=TIMEOUT_S.get(bench, 300),
        )
    except subprocess.TimeoutExpired:
        return {"_error": "timed out"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"_error": tail[:200]}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    check_package(impl, bench, figures.get("_module"), baseline)
    return figures


def run_all(
    benches: list[str], quick: bool, impls: tuple[str, ...], baseline: Path | None
) -> dict[str, dict]:
    """``{impl: {figure key: value}}``; Dask's ``@sync`` keys stay under "dask". The baseline
    runs right after ours, so that the two see the same load."""
    results: dict[str, dict[str, Any]] = {impl: {} for impl in IMPLS}
    for bench in benches:
        for impl in BENCHES[bench]:
            if impl not in impls:
                continue
            started, load = time.perf_counter(), os.getloadavg()[0]
            figures = measure(impl, bench, quick, baseline)
            seconds = time.perf_counter() - started
            status = figures.get("_error", "ok")
            line = f"  {bench:<17} {impl:<10} {seconds:6.1f} s  load {load:4.1f}  {status}"
            print(line, flush=True)
            results[impl].setdefault("_load_before", {})[bench] = round(load, 2)
            if "_module" in figures:
                results[impl]["_module"] = figures["_module"]
            if "_error" in figures:
                results[impl].setdefault("_errors", {})[bench] = figures["_error"]
            results[impl].update({k: v for k, v in figures.items() if not k.startswith("_")})
    return results


# --- the table ------------------------------------------------------------------------------


def fmt(value: Any, unit: str) -> str:
    if not isinstance(value, int | float):
        return "–"
    if unit == "×":
        return f"{value:.2f}×"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}"
    if abs(value) >= 100:
        return f"{value:.0f} {unit}"
    if abs(value) >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def ratio(row: Row, ours: Any, peer: Any) -> str:
    """How many times better ours is than the peer (>1: ours wins)."""
    if not isinstance(ours, int | float) or not isinstance(peer, int | float) or not ours:
        return ""
    if peer <= 0:
        return ""
    times = peer / ours if row.lower_is_better else ours / peer
    return f" ({times:.1f}×)" if times < 100 else f" ({times:.0f}×)"


def targets(row: Row) -> str:
    shown = []
    if row.check is _flat:
        shown.append("≤ 1.5 × chain of 100")
    elif row.target is not None:
        shown.append(("≤ " if row.lower_is_better else "≥ ") + fmt(row.target, row.unit))
    if row.of_baseline is not None:
        shown.append(f"≤ {row.of_baseline:.2f}× baseline")
    return "; ".join(shown)


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown table; baseline columns only when a baseline was measured."""
    ours, base, ref, dask = (results[impl] for impl in IMPLS)
    with_baseline = any(not k.startswith("_") for k in base)
    baseline_head = f"baseline {base.get('_revision', '')} | ours ÷ baseline | "
    lines = [
        "| figure | ours | "
        + (baseline_head if with_baseline else "")
        + "reference 2.0.0 | Dask threaded | Dask sync | target | met? |",
        "|---|---:|" + ("---:|---:|" if with_baseline else "") + "---:|---:|---:|---:|:---:|",
    ]
    for row in ROWS:
        if not any(row.key in r for r in (ours, base, ref, dask)):
            continue
        label = row.label.replace("{disk.entries_many}", f"{ours.get('disk.entries_many', 0):,}")
        cells = [label.replace("  ", "↳ ", 1) if label.startswith("  ") else label]
        value = ours.get(row.key)
        cells.append(fmt(value, row.unit))
        if with_baseline:
            times = worse_than(row, value, base.get(row.key))
            cells.append(fmt(base.get(row.key), row.unit))
            cells.append("–" if times is None else f"{times:.2f}×")
        for peer, key in (("reference", row.key), ("dask", row.key), ("dask", row.key + "@sync")):
            if peer in row.peers and key in results[peer]:
                peer_value = results[peer][key]
                shown = ratio(row, value, peer_value) if row.ratios else ""
                cells.append(fmt(peer_value, row.unit) + shown)
            else:
                cells.append("–")
        cells.append(targets(row))
        verdicts = [v for v in (row.met(ours), row.met_of_baseline(ours, base)) if v is not None]
        cells.append("" if not verdicts else "yes" if all(verdicts) else "**no**")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# --- machine facts --------------------------------------------------------------------------


def machine_facts(baseline: str | None) -> dict[str, str]:
    import numpy

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import dask

        dask_version = dask.__version__
    except ImportError:
        dask_version = "not installed"
    ref_numpy = "?"
    if venv_python().exists():
        probe = subprocess.run(
            [str(venv_python()), "-c", "import numpy; print(numpy.__version__)"],
            capture_output=True,
            text=True,
            cwd=HERE,
        )
        ref_numpy = probe.stdout.strip() or "?"
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": f"{os.cpu_count()} (usable: {affinity})",
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": f"{numpy.__version__} (reference venv: {ref_numpy})",
        "dask": dask_version,
        "reference": reference_version() or "not installed",
        "phys_pipeline (ours)": f"git {commit or '?'}",
        "baseline": baseline or "not measured",
    }


def report(
    results: dict,
    facts: dict,
    args: argparse.Namespace,
    seconds: float,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    command = (
        "python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (" --no-peers" if args.no_peers else "")
        + (" --no-baseline" if args.no_baseline else f" --baseline {args.baseline}")
        + "".join(f" --only {name}" for name in args.only or ())
    )
    out = [
        "# Benchmark results",
        "",
        f"Generated by `{command} --write ...` on {facts['date']} in {seconds / 60:.1f} min.",
        "How each figure is measured: [README.md](README.md). Medians of several runs; the",
        "figure in brackets after a peer's value is how many times better ours is (>1: ours",
        "wins). Other processes share this machine: `_load_before` in the raw figures below is",
        "the 1-minute load average when each measurement started.",
        *(
            [
                "The baseline is this repository at an earlier revision, measured in the same",
                "run right after ours; the column 'ours ÷ baseline' is how many times slower",
                "ours is (<1: ours is faster).",
            ]
            if not args.no_baseline
            else []
        ),
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        f"| load average (1, 5, 15 min) | before {load[0][0]:.1f}, {load[0][1]:.1f}, "
        f"{load[0][2]:.1f}; after {load[1][0]:.1f}, {load[1][1]:.1f}, {load[1][2]:.1f} |",
        "",
        *table(results),
        "",
    ]
    errors = {impl: r["_errors"] for impl, r in results.items() if r.get("_errors")}
    if errors:
        out += ["Errors:", ""]
        for impl, failed in errors.items():
            out += [f"- {impl} / {bench}: {message}" for bench, message in failed.items()]
        out.append("")
    ours = results["ours"]
    if "disk.entries_many" in ours:
        out.append(
            f"The large disk cache held {ours['disk.entries_many']:,} entries, filled in "
            f"{ours.get('disk.fill_s', 0):.0f} s (the fill stops at a time budget; see README)."
        )
        out.append("")
    out += [
        "Raw figures (JSON):",
        "",
        "```json",
        json.dumps(results, indent=1, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke pass")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHES),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHES)}",
    )
    parser.add_argument("--write", type=Path, metavar="PATH", help="write a Markdown report")
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="measure only this repository and its baseline (while developing)",
    )
    parser.add_argument(
        "--baseline",
        default=BASELINE_REV,
        metavar="REV",
        help=f"the git revision of this repository to compare with (default: {BASELINE_REV})",
    )
    parser.add_argument("--no-baseline", action="store_true", help="do not measure a baseline")
    args = parser.parse_args()
    impls = ("ours",) if args.no_peers else ("ours", *PEERS)
    baseline_sha, baseline = None, None
    if not args.no_baseline:
        baseline_sha, baseline = baseline_tree(args.baseline)
        impls = ("ours", "baseline", *impls[1:])
    if "reference" in impls:
        ensure_reference()
    benches = args.only or list(BENCHES)
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = run_all(benches, args.quick, impls, baseline)
    if baseline_sha is not None:
        results["baseline"]["_revision"] = baseline_sha
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    print()
    print("\n".join(table(results)))
    print(f"\n{seconds:.0f} s; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    if args.write:
        shown = f"git {baseline_sha} ({args.baseline})" if baseline_sha else None
        facts = machine_facts(shown)
        args.write.write_text(report(results, facts, args, seconds, (load_before, load_after)))
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
