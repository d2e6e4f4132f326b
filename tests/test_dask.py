"""DaskScheduler on a real LocalCluster of worker processes: same results and hook semantics as
LocalScheduler, stages from anywhere (even a function body) run remotely, a failure skips only
its descendants, and a fully cached rerun sends nothing to the cluster."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from interrupts import InterruptOnDone

pytest.importorskip("distributed")

from distributed import Client, LocalCluster, get_task_stream

from phys_pipeline.cache import MemoryStore
from phys_pipeline.dag_cache import DagCache
from phys_pipeline.dask import DaskScheduler, dask_resources
from phys_pipeline.errors import DagError, NodeFailedError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.policy import PolicyBag
from phys_pipeline.scheduler import LocalScheduler, NodeTask
from phys_pipeline.sweep import SweepSpec, expand_sweep
from phys_pipeline.types import (
    DagState,
    NodeResources,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

# --- stages: a frequency grid, two pulse spectra by FFT, their interference ------------------


class GridConfig(StageConfig):
    n: int = 256
    dt_fs: float = 0.5


class FrequencyGrid(PipelineStage[SimpleState, GridConfig]):
    """Root: a time axis centred on zero and the matching (shifted) frequency axis."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        t = (np.arange(self.cfg.n) - self.cfg.n // 2) * self.cfg.dt_fs
        f = np.fft.fftshift(np.fft.fftfreq(self.cfg.n, self.cfg.dt_fs))
        return StageResult(SimpleState({"t": t, "f": f}), metrics={"df_thz": 1e3 * (f[1] - f[0])})


class PulseConfig(StageConfig):
    width_fs: float = 8.0
    chirp: float = 0.0


class PulseSpectrum(PipelineStage[SimpleState, PulseConfig]):
    """A chirped Gaussian pulse on the grid and its spectrum by FFT."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        t, f = state.payload["t"], state.payload["f"]
        field = np.exp(-((t / self.cfg.width_fs) ** 2) + 1j * self.cfg.chirp * t**2)
        spectrum = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(field)))
        power = np.abs(spectrum) ** 2
        bandwidth = np.sqrt(np.sum(f**2 * power) / np.sum(power))
        return StageResult(
            SimpleState(spectrum, {"f": f}),
            metrics={"energy": float(power.sum()), "rms_bandwidth": float(bandwidth)},
        )


class Interference(PipelineStage[DagState, StageConfig]):
    """Merge: the two spectra added coherently."""

    def process(self, state: DagState, *, policy: PolicyBag | None = None) -> StageResult:
        total = np.abs(state["pulse_a"].payload + state["pulse_b"].payload) ** 2
        return StageResult(SimpleState(total), metrics={"peak": float(total.max())})


class Explode(PipelineStage[SimpleState, StageConfig]):
    """A stage that always fails, as an amplifier past saturation would."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        raise ValueError("gain saturated")


class Passthrough(PipelineStage[SimpleState, StageConfig]):
    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state)


def spectra_dag() -> list[NodeSpec]:
    return [
        NodeSpec("grid", stage=FrequencyGrid(GridConfig())),
        NodeSpec("pulse_a", ["grid"], PulseSpectrum(PulseConfig(width_fs=8.0))),
        NodeSpec("pulse_b", ["grid"], PulseSpectrum(PulseConfig(width_fs=12.0, chirp=0.002))),
        NodeSpec("interfere", ["pulse_a", "pulse_b"], Interference(StageConfig())),
    ]


INITIAL = SimpleState(None, {"lab": "test"})


def assert_same_run(dask_run: DagRunResult, local_run: DagRunResult) -> None:
    assert set(dask_run.execution_order) == set(local_run.execution_order)
    assert dask_run.metrics == local_run.metrics
    for node_id, local_result in local_run.results.items():
        dask_payload = dask_run.results[node_id].state.payload
        local_payload = local_result.state.payload
        if isinstance(local_payload, dict):
            for name, array in local_payload.items():
                np.testing.assert_array_equal(dask_payload[name], array)
        else:
            np.testing.assert_array_equal(dask_payload, local_payload)


class EventLog:
    """Executor callback / scheduler hooks that record events and the threads they came on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []
        self.threads: set[int] = set()

    def _log(self, *event: str) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())

    def on_start(self, node_id: str) -> None:
        self._log("start", node_id)

    def on_done(self, node_id: str, result: Any, extra: Any) -> None:
        self._log("done", node_id)

    def on_error(self, node_id: str, error: BaseException) -> None:
        self._log("error", node_id)

    def on_skip(self, node_id: str, failed_dep: str) -> None:
        self._log("skip", node_id, failed_dep)

    def kinds(self, kind: str) -> set[str]:
        return {e[1] for e in self.events if e[0] == kind}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as dask_client:
        yield dask_client


def scheduler_task_count(client: Client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def scheduler_tasks(client: Client) -> list[str]:
    return client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.tasks])


# --- same results as LocalScheduler ---------------------------------------------------------


def test_dask_run_matches_local_run(client: Client) -> None:
    dask_run = DagExecutor(scheduler=DaskScheduler(client)).run(INITIAL, spectra_dag())
    local_run = DagExecutor(scheduler=LocalScheduler(max_workers=2)).run(INITIAL, spectra_dag())

    assert dask_run.ran == ["grid", "pulse_a", "pulse_b", "interfere"]
    assert_same_run(dask_run, local_run)
    assert "DaskScheduler(address=" in dask_run.provenance["scheduler"]


def test_sweep_runs_the_same_on_dask_as_locally(client: Client) -> None:
    sweep = [SweepSpec("pulse_a", {"chirp": [0.0, 0.003, 0.006]})]
    nodes = expand_sweep(spectra_dag(), sweep)

    dask_run = DagExecutor(scheduler=DaskScheduler(client)).run(INITIAL, nodes)
    local_run = DagExecutor(scheduler=LocalScheduler()).run(INITIAL, nodes)

    assert "interfere__chirp-0.003" in dask_run.results
    assert len(dask_run.ran) == len(nodes) == 8
    assert_same_run(dask_run, local_run)


# --- stages from anywhere ---------------------------------------------------------------------


class GainConfig(StageConfig):
    gain_db: float = 3.0


def test_stage_defined_in_a_test_function_runs_on_a_worker_process(client: Client) -> None:
    class Amplifier(PipelineStage[SimpleState, GainConfig]):
        """Defined here, so not importable: Dask must ship it by value (cloudpickle)."""

        def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
            gain = 10 ** (self.cfg.gain_db / 10)
            return StageResult(
                SimpleState(state.payload * gain), metrics={"pid": float(os.getpid())}
            )

    assert "<locals>" in Amplifier.__qualname__
    nodes = [
        *spectra_dag()[:2],
        NodeSpec("amplify", ["pulse_a"], Amplifier(GainConfig(gain_db=10.0))),
    ]
    run = DagExecutor(scheduler=DaskScheduler(client)).run(INITIAL, nodes)

    np.testing.assert_allclose(run.state.payload, 10 * run.results["pulse_a"].state.payload)
    assert run.metrics["amplify.pid"] != os.getpid()


def test_stage_defined_in_a_main_script_runs_via_a_scheduler_address(
    cluster: LocalCluster,
) -> None:
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from phys_pipeline.dask import DaskScheduler
        from phys_pipeline.executor import DagExecutor
        from phys_pipeline.types import (
            NodeSpec, PipelineStage, SimpleState, StageConfig, StageResult,
        )

        class LossConfig(StageConfig):
            transmission: float = 0.5

        class Attenuator(PipelineStage):
            def process(self, state, *, policy=None):
                return StageResult(SimpleState(state.payload * self.cfg.transmission))

        with DaskScheduler(address=sys.argv[1]) as scheduler:
            stage = Attenuator(LossConfig())
            run = DagExecutor(scheduler=scheduler).run(
                SimpleState(np.arange(3.0)), [NodeSpec("attenuate", stage=stage)]
            )
        print(Attenuator.__module__, run.state.payload.tolist())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, cluster.scheduler_address],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split("\n")[0] == "__main__ [0.0, 0.5, 1.0]"


# --- failures -------------------------------------------------------------------------------


def test_failing_node_is_named_its_descendants_skip_and_the_other_branch_finishes(
    client: Client,
) -> None:
    nodes = [
        *spectra_dag()[:3],
        NodeSpec("amplify", ["pulse_a"], Explode(StageConfig())),
        NodeSpec("interfere", ["amplify", "pulse_b"], Passthrough(StageConfig())),
        NodeSpec("report", ["interfere"], Passthrough(StageConfig())),
    ]
    log = EventLog()
    executor = DagExecutor(scheduler=DaskScheduler(client), callbacks=[log])

    with pytest.raises(NodeFailedError, match="amplify") as failed:
        executor.run(INITIAL, nodes)

    run = failed.value.partial
    assert list(run.failures) == ["amplify"]
    error = run.failures["amplify"]
    assert type(error) is ValueError and str(error) == "gain saturated"
    [note] = error.__notes__
    assert note.startswith("raised by stage 'Explode' in node 'amplify', ")
    assert {nid: r.status for nid, r in run.runs.items()} == {
        "grid": "ran",
        "pulse_a": "ran",
        "pulse_b": "ran",
        "amplify": "failed",
        "interfere": "skipped",
        "report": "skipped",
    }
    assert "'amplify' failed" in run.runs["report"].reason
    assert log.kinds("error") == {"amplify"}
    assert {e for e in log.events if e[0] == "skip"} == {
        ("skip", "interfere", "amplify"),
        ("skip", "report", "amplify"),
    }


class HoldsLock(PipelineStage[SimpleState, StageConfig]):
    """A stage that cannot be pickled, so it can never reach a worker."""

    def __init__(self, cfg: StageConfig) -> None:
        super().__init__(cfg)
        self.lock = threading.Lock()

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        return StageResult(state)


def test_a_stage_that_cannot_be_sent_fails_only_its_own_node(client: Client) -> None:
    nodes = [
        *spectra_dag()[:3],
        NodeSpec("locked", ["pulse_a"], HoldsLock(StageConfig())),
        NodeSpec("after", ["locked"], Passthrough(StageConfig())),
    ]
    run = DagExecutor(scheduler=DaskScheduler(client)).run(INITIAL, nodes, raise_on_error=False)

    assert list(run.failures) == ["locked"]
    assert "cannot pickle '_thread.lock'" in str(run.failures["locked"])
    assert run.runs["after"].status == "skipped"
    assert run.ran == ["grid", "pulse_a", "pulse_b"]


def test_hooks_match_local_scheduler_and_run_in_the_calling_thread(client: Client) -> None:
    def tasks() -> list[NodeTask]:
        pulse = PulseSpectrum(PulseConfig())
        return [
            NodeTask("grid", (), FrequencyGrid(GridConfig()), None, root_state=INITIAL),
            NodeTask("boom", ("grid",), Explode(StageConfig()), None),
            NodeTask("pulse", ("grid",), pulse, None),
            NodeTask("after_boom", ("boom", "pulse"), Passthrough(StageConfig()), None),
            NodeTask("last", ("after_boom",), Passthrough(StageConfig()), None),
        ]

    dask_log, local_log = EventLog(), EventLog()
    DaskScheduler(client).execute(tasks(), {}, dask_log)
    LocalScheduler(max_workers=2).execute(tasks(), {}, local_log)

    assert sorted(dask_log.events) == sorted(local_log.events)
    assert dask_log.kinds("start") == {"grid", "boom", "pulse"}  # skipped nodes never start
    assert dask_log.threads == {threading.get_ident()}


# --- caching, keys and cluster memory -------------------------------------------------------


def test_cached_rerun_hits_everything_without_submitting_to_the_cluster(client: Client) -> None:
    cache = DagCache(MemoryStore())
    first = DagExecutor(scheduler=DaskScheduler(client), cache=cache).run(INITIAL, spectra_dag())
    log = EventLog()

    with get_task_stream(client) as stream:
        rerun = DagExecutor(scheduler=DaskScheduler(client), cache=cache, callbacks=[log]).run(
            INITIAL, spectra_dag()
        )

    assert len(first.ran) == 4
    assert rerun.hits == ["grid", "pulse_a", "pulse_b", "interfere"]
    assert stream.data == []
    assert log.kinds("start") == set()
    assert_same_run(rerun, first)


def test_partly_cached_rerun_ships_cached_parents_to_the_workers(client: Client) -> None:
    cache = DagCache(MemoryStore())
    DagExecutor(scheduler=DaskScheduler(client), cache=cache).run(INITIAL, spectra_dag())
    edited = spectra_dag()
    edited[2] = edited[2].replace(stage=PulseSpectrum(PulseConfig(width_fs=20.0)))

    rerun = DagExecutor(scheduler=DaskScheduler(client), cache=cache).run(INITIAL, edited)
    local = DagExecutor(scheduler=LocalScheduler()).run(INITIAL, edited)

    assert rerun.hits == ["grid", "pulse_a"]
    assert rerun.ran == ["pulse_b", "interfere"]
    assert_same_run(rerun, local)


def test_early_cutoff_submits_only_what_changed(client: Client) -> None:
    """grid reruns with a new label and the same output: the pulses and their interference are
    loaded, not submitted; tail, edited too, runs on the workers on the reused state."""

    def nodes(label: str) -> list[NodeSpec]:
        tail = NodeSpec("tail", ["interfere"], Passthrough(StageConfig(tags={"take": label})))
        edited = spectra_dag()
        edited[0] = edited[0].replace(stage=FrequencyGrid(GridConfig(tags={"take": label})))
        return [*edited, tail]

    executor = DagExecutor(scheduler=DaskScheduler(client), cache=DagCache(MemoryStore()))
    executor.run(INITIAL, nodes("1"))
    with get_task_stream(client) as stream:
        rerun = executor.run(INITIAL, nodes("2"))
    local = DagExecutor(scheduler=LocalScheduler()).run(INITIAL, nodes("2"))

    assert rerun.ran == ["grid", "tail"]
    assert rerun.hits == ["pulse_a", "pulse_b", "interfere"]
    assert {rerun.runs[n].reason for n in rerun.hits} == {"cached: upstream output unchanged"}
    submitted = {str(task["key"]).split("-")[0] for task in stream.data}
    assert submitted <= {"grid", "tail"} and "tail" in submitted
    assert_same_run(rerun, local)


def test_reruns_get_fresh_task_keys_named_after_their_nodes(client: Client) -> None:
    executor = DagExecutor(scheduler=DaskScheduler(client))

    with get_task_stream(client) as stream:
        executor.run(INITIAL, spectra_dag())
        executor.run(INITIAL, spectra_dag())

    keys = [task["key"] for task in stream.data]
    node_keys = [k for k in keys if "-state-" not in k]
    assert len(node_keys) == len(set(node_keys)) == 8
    assert {k.rsplit("-", 1)[0] for k in node_keys} == {"grid", "pulse_a", "pulse_b", "interfere"}


def wait_until_the_cluster_is_empty(client: Client, seconds: float = 30.0) -> int:
    deadline = time.monotonic() + seconds
    while (count := scheduler_task_count(client)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def test_nothing_stays_on_the_cluster_after_a_run(client: Client) -> None:
    nodes = [
        *spectra_dag(),
        NodeSpec("boom", ["interfere"], Explode(StageConfig())),
        NodeSpec("locked", ["pulse_b"], HoldsLock(StageConfig())),
    ]
    run = DagExecutor(scheduler=DaskScheduler(client)).run(INITIAL, nodes, raise_on_error=False)

    assert wait_until_the_cluster_is_empty(client) == 0, scheduler_tasks(client)
    assert set(run.failures) == {"boom", "locked"}  # results and errors are still held here


def test_an_interrupted_run_leaves_nothing_on_the_cluster(client: Client) -> None:
    nodes = [
        NodeSpec("fast", stage=Passthrough(StageConfig())),
        NodeSpec("slow", stage=Sleep(StageConfig())),
        NodeSpec("after_slow", ["slow"], Passthrough(StageConfig())),
    ]
    executor = DagExecutor(scheduler=DaskScheduler(client), callbacks=[InterruptOnDone("fast")])

    with pytest.raises(KeyboardInterrupt):
        executor.run(INITIAL, nodes)

    assert wait_until_the_cluster_is_empty(client) == 0, scheduler_tasks(client)


# --- resources ------------------------------------------------------------------------------


def test_resources_are_requested_only_where_workers_declare_them() -> None:
    needs = NodeResources(cpu=2, gpu=1, mem_gb=4.0)

    assert dask_resources("fft", needs, {}) is None
    assert dask_resources("fft", needs, {"GPU": 2}) == {"GPU": 1}
    assert dask_resources("fft", needs, {"CPU": 8, "MEMORY": 16e9}) == {"CPU": 2, "MEMORY": 4e9}
    with pytest.raises(DagError, match=r"node 'fft' needs GPU=1 .* declares GPU=0\.5"):
        dask_resources("fft", needs, {"GPU": 0.5})


def test_node_resources_are_ignored_on_workers_without_resources(client: Client) -> None:
    nodes = spectra_dag()
    nodes[1] = nodes[1].replace(resources=NodeResources(gpu=4, mem_gb=100.0))

    run = DagExecutor(scheduler=DaskScheduler(client)).run(INITIAL, nodes)

    assert len(run.ran) == 4


class Sleep(PipelineStage[SimpleState, StageConfig]):
    """Holds a (pretend) GPU for a moment and reports when."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        start = time.time()
        time.sleep(0.4)
        return StageResult(state, metrics={"start": start, "end": time.time()})


def overlaps(run: DagRunResult, a: str, b: str) -> bool:
    m = run.metrics
    return m[f"{a}.start"] < m[f"{b}.end"] and m[f"{b}.start"] < m[f"{a}.end"]


def test_gpu_nodes_share_a_declared_gpu_one_at_a_time() -> None:
    one_gpu_worker = {
        "n_workers": 1,
        "threads_per_worker": 2,
        "resources": {"GPU": 1},
        "dashboard_address": ":0",
    }
    gpu = NodeResources(gpu=1)
    nodes = [
        NodeSpec("cpu_a", stage=Sleep(StageConfig(name="a"))),
        NodeSpec("cpu_b", stage=Sleep(StageConfig(name="b"))),
        NodeSpec("gpu_a", stage=Sleep(StageConfig(name="c")), resources=gpu),
        NodeSpec("gpu_b", stage=Sleep(StageConfig(name="d")), resources=gpu),
    ]
    with DaskScheduler(cluster_kwargs=one_gpu_worker) as scheduler:
        executor = DagExecutor(scheduler=scheduler)
        run = executor.run(INITIAL, nodes[:2])
        run_gpu = executor.run(INITIAL, nodes[2:])
        too_big = [NodeSpec("gpu_x", stage=Sleep(StageConfig()), resources=NodeResources(gpu=2))]
        with pytest.raises(DagError, match="node 'gpu_x' needs GPU=2"):
            executor.run(INITIAL, too_big)

    assert overlaps(run, "cpu_a", "cpu_b")  # two threads: unconstrained nodes run together
    assert not overlaps(run_gpu, "gpu_a", "gpu_b")


# --- lifecycle and imports ------------------------------------------------------------------


def test_local_cluster_starts_on_first_run_and_stops_on_exit() -> None:
    scheduler = DaskScheduler(cluster_kwargs={"n_workers": 1, "dashboard_address": ":0"})
    assert not scheduler.started

    with scheduler:
        DagExecutor(scheduler=scheduler).run(INITIAL, spectra_dag()[:1])
        client = scheduler.client
        assert scheduler.started

    assert not scheduler.started
    assert client.status == "closed"
    assert client.cluster.status.name == "closed"


def test_closing_an_address_scheduler_leaves_the_cluster_running(
    cluster: LocalCluster, client: Client
) -> None:
    with DaskScheduler(address=cluster.scheduler_address) as scheduler:
        run = DagExecutor(scheduler=scheduler).run(INITIAL, spectra_dag())
        own_client = scheduler.client

    assert len(run.ran) == 4
    assert own_client.status == "closed"
    assert client.submit(sum, [1, 2]).result() == 3


def test_closing_leaves_a_given_client_open(client: Client) -> None:
    with DaskScheduler(client) as scheduler:
        DagExecutor(scheduler=scheduler).run(INITIAL, spectra_dag()[:1])
    assert client.status == "running"


def test_client_and_address_together_are_rejected(client: Client) -> None:
    with pytest.raises(ValueError, match="client or an address"):
        DaskScheduler(client, address="tcp://127.0.0.1:8786")


def test_importing_without_dask_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "phys_pipeline.dask")
    monkeypatch.setitem(sys.modules, "distributed", None)

    with pytest.raises(ImportError, match=r'pip install "phys-pipeline\[dask\]"'):
        importlib.import_module("phys_pipeline.dask")


def test_importing_phys_pipeline_does_not_import_dask() -> None:
    code = (
        "import sys, phys_pipeline; phys_pipeline.DagExecutor; "
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
