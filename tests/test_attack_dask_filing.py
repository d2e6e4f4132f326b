"""Attacks on results filed by Dask workers (``DagCache.worker_store/filing``,
``file_on_worker``, ``FiledResult``, the engine's lazy states) on a real LocalCluster of worker
processes with real DiskStores (and a real redis-server): entries replaced or distrusted
between the worker's filing and the driver's read, co-users filing first, secrets travelling
to workers, workers running code older than the key says, interrupts, stages writing to their
input, uncacheable nodes, sessions with a memory tier, targets runs and owners shared with a
local executor.

Each broken attack is a strict xfail naming what goes wrong; the others are regression tests."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dag_stages import GridCfg, GridStage
from interrupts import InterruptOnDone
from stages.beams import Amplifier, BeamCfg, GainCfg, GaussianBeam
from stages.scribblers import (
    DelayCfg,
    LatePeak,
    Peak,
    Scribbler,
    SlowScribbler,
    culprit_and_peak,
)

pytest.importorskip("distributed")

import cloudpickle
from distributed import Client, LocalCluster

from phys_pipeline.cache import CacheConfig, CacheWarning, DiskStore, EntrySigner, RedisStore
from phys_pipeline.cache.signing import KEY_ENV_VAR
from phys_pipeline.dag_cache import DagCache, FiledResult, open_cache
from phys_pipeline.dask import DaskScheduler
from phys_pipeline.errors import CacheError, NodeFailedError, StateMutationError
from phys_pipeline.executor import DagExecutor, DagRunResult
from phys_pipeline.policy import PolicyBag
from phys_pipeline.session import LiveSession
from phys_pipeline.types import (
    DagState,
    NodeInputs,
    NodeSpec,
    PipelineStage,
    SimpleState,
    StageConfig,
    StageResult,
)

START = SimpleState(None)
REUSED = "cached: upstream output unchanged"
SLOW_S = 1.5  # long enough for the driver to act while a worker computes


# --- stages: slow and env-reading amplifiers; a settling delay (the rest: stages/) --------------


class SlowAmplifier(Amplifier):
    """An amplifier whose pump takes SLOW_S seconds to settle."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        time.sleep(SLOW_S)
        return super().process(state, policy=policy)


class EnvGain(Amplifier):
    """Reads its gain from the worker's environment: its key cannot cover that."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        gain = float(os.environ.get("ATTACK_FILING_GAIN", "1"))
        field = state.payload * np.sqrt(gain)
        return StageResult(SimpleState(field), metrics={"power": float(np.sum(field**2))})


class Settle(PipelineStage[SimpleState, StageConfig]):
    """Waits for the grid to settle (so that what reads the grid after it runs last)."""

    def process(self, state: SimpleState, *, policy: PolicyBag | None = None) -> StageResult:
        time.sleep(0.5)
        return StageResult(SimpleState(0.0))


class SettledPeak(Peak):
    """The peak of the grid, gathered with ``settle`` so that it is read after it."""

    def process(self, state: DagState, *, policy: PolicyBag | None = None) -> StageResult:
        return super().process(state.inputs["grid"], policy=policy)


def beam(
    gain: float = 2.0, tag: str = "", width: float = 0.1, amplifier: type = Amplifier
) -> list[NodeSpec]:
    return [
        NodeSpec("field", stage=GaussianBeam(BeamCfg(width=width, tag=tag))),
        NodeSpec("amp", ["field"], amplifier(GainCfg(gain=gain))),
        NodeSpec("again", ["amp"], Amplifier(GainCfg(gain=3.0))),
    ]


def grid_and_readers() -> list[NodeSpec]:
    """A grid read by a culprit that writes to it and, after it, by a peak finder."""
    return [
        NodeSpec("grid", stage=GridStage(GridCfg(N=8))),
        NodeSpec("culprit", ["grid"], Scribbler(StageConfig())),
        NodeSpec("settle", ["grid"], Settle(StageConfig())),
        NodeSpec(
            "peak", ["grid", "settle"], SettledPeak(StageConfig()), inputs=NodeInputs(gather=True)
        ),
    ]


def local(nodes: list[NodeSpec]) -> DagRunResult:
    """An uncached run in this process: the ground truth."""
    return DagExecutor().run(START, nodes)


def payloads(result: DagRunResult) -> dict[str, Any]:
    return {nid: r.state.payload for nid, r in result.results.items()}


def assert_matches_local(result: DagRunResult, nodes: list[NodeSpec]) -> None:
    expected = local(nodes)
    assert result.metrics == pytest.approx(expected.metrics)
    for node_id, payload in payloads(expected).items():
        np.testing.assert_allclose(result.results[node_id].state.payload, payload)


class OnStart:
    """Calls ``action`` when ``node_id`` starts (on the driver, while a worker computes it)."""

    def __init__(self, node_id: str, action: Any) -> None:
        self.node_id, self.action = node_id, action

    def on_start(self, node_id: str) -> None:
        if node_id == self.node_id:
            self.action()


# worker-side helpers (sent by reference: this module is importable on the workers)


def _set_env(name: str, value: str) -> None:
    os.environ[name] = value


def _unset_env(name: str) -> None:
    os.environ.pop(name, None)


def _add_path(path: str) -> None:
    sys.path.insert(0, path)


def _forget_module(name: str, path: str) -> None:
    sys.modules.pop(name, None)
    while path in sys.path:
        sys.path.remove(path)


def _import(name: str) -> str:
    return importlib.import_module(name).__file__ or ""


def _config_home() -> str:
    return os.environ.get("XDG_CONFIG_HOME", "")


def cluster_is_empty(client: Client, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def worker_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-home")


@pytest.fixture(scope="module")
def lonely(worker_home: Path) -> Iterator[Client]:
    """One worker with two threads (so nodes share the very state objects they read) and a
    home of its own: no key file, no key in its environment."""
    env = {"HOME": str(worker_home), "XDG_CONFIG_HOME": str(worker_home / ".config")}
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0", env=env
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        assert set(dask_client.run(_config_home).values()) == {env["XDG_CONFIG_HOME"]}
        yield dask_client


def a_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """A store the workers reach and a co-user's handle on the same entries."""
    if kind == "disk":
        return DiskStore(tmp_path / "cache"), DiskStore(tmp_path / "cache")
    url = request.getfixturevalue("redis_url")
    prefix = f"attack-{uuid.uuid4().hex[:8]}"
    return RedisStore(url, prefix), RedisStore(url, prefix)


def entry_dir(root: Path, key: str) -> Path:
    """Where a DiskStore under ``root`` keeps the entry for ``key`` (whatever its layout)."""
    [found] = [path for path in root.rglob(key) if path.is_dir()]
    return found


def impostor() -> StageResult:
    """What a co-user files under the amplifier's key: a field of another width."""
    other = local(beam(width=0.3)).results["amp"]
    return StageResult(other.state, metrics=dict(other.metrics))


# --- the state a receipt loads must be the state the worker computed ---------------------------


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_a_filed_entry_replaced_by_a_co_user_is_not_served_as_this_runs_state(
    client: Client, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    store, co_user = a_store(kind, tmp_path, request)
    result = DagExecutor(scheduler=DaskScheduler(client), cache=store).run(START, beam())
    key = result.plan.nodes["amp"].key
    co_user.delete(key)
    co_user.put(key, impostor())
    expected = local(beam()).results["amp"].state.payload
    try:
        served = result.results["amp"].state.payload
    except CacheError as exc:  # failing loudly, naming the node, is fine too
        assert "'amp'" in str(exc)
    else:
        np.testing.assert_array_equal(served, expected)


def test_a_co_user_filing_first_does_not_split_the_run(client: Client, tmp_path: Path) -> None:
    nodes = beam(amplifier=SlowAmplifier)
    store, co_user = DiskStore(tmp_path), DiskStore(tmp_path)
    key = DagExecutor().plan(START, nodes).nodes["amp"].key
    file_first = OnStart("amp", lambda: co_user.put(key, impostor()))
    result = DagExecutor(scheduler=DaskScheduler(client), cache=store, callbacks=[file_first]).run(
        START, nodes
    )
    assert co_user.contains(key)
    amp = result.results["amp"]
    try:
        served = amp.state.payload
    except CacheError as exc:
        assert "'amp'" in str(exc)
    else:
        np.testing.assert_allclose(served * np.sqrt(3.0), result.results["again"].state.payload)


def test_a_receipt_read_before_any_change_is_the_workers_state(
    client: Client, tmp_path: Path
) -> None:
    """Read at once, then replaced: the state already read stays what the worker computed."""
    store = DiskStore(tmp_path)
    result = DagExecutor(scheduler=DaskScheduler(client), cache=store).run(START, beam())
    assert_matches_local(result, beam())
    key = result.plan.nodes["amp"].key
    store.delete(key)
    store.put(key, impostor())
    assert_matches_local(result, beam())


# --- what a worker files must be readable by the driver --------------------------------------


def test_an_entry_the_driver_distrusts_does_not_lose_the_result(
    client: Client, tmp_path: Path
) -> None:
    first = DagExecutor(cache=DiskStore(tmp_path)).run(START, beam())
    key = first.plan.nodes["amp"].key
    meta = entry_dir(tmp_path, key) / "meta.json"
    meta.chmod(0o664)  # a co-worker's umask, a restored backup: no longer ours alone
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path))
    with pytest.warns(CacheWarning, match="not trusting entry"):
        result = executor.run(START, beam())
    assert result.ran == ["amp"]
    assert_matches_local(result, beam())


def flip_last_bytes(array_file: Path) -> None:
    """Bit rot in an entry's array: its digest no longer matches."""
    data = bytearray(array_file.read_bytes())
    data[-8:] = bytes(8)
    array_file.chmod(0o644)
    array_file.write_bytes(bytes(data))
    array_file.chmod(0o444)


def rejected_entries_stay_on_disk() -> bool:
    """Whether DiskStore leaves an entry it rejected where it is (the store's rewrite in
    progress does: "it is left on disk and recomputed"; the committed store removes it)."""
    with tempfile.TemporaryDirectory() as root:
        store = DiskStore(root, signer=EntrySigner("a secret for this check only"))
        key = "cd" * 16
        store.put(key, StageResult(SimpleState(np.arange(64.0))))
        flip_last_bytes(entry_dir(Path(root), key) / "a0.npy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)
            assert store.get(key) is None
        return store.contains(key)


def test_a_corrupt_entry_never_loses_the_result_a_worker_computed(
    client: Client, tmp_path: Path
) -> None:
    first = DagExecutor(cache=DiskStore(tmp_path)).run(START, beam())
    key = first.plan.nodes["amp"].key
    flip_last_bytes(next(entry_dir(tmp_path, key).glob("a*.npy")))
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path))
    with pytest.warns(CacheWarning, match="ignoring entry"):
        result = executor.run(START, beam())
    assert result.ran == ["amp"]
    assert_matches_local(result, beam())


# --- secrets --------------------------------------------------------------------------------------


def test_a_shared_disk_config_never_ships_the_environment_secret(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"beamline-7 shared secret {uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(KEY_ENV_VAR, secret)
    owner = open_cache(CacheConfig(backend="shared-disk", disk_root=tmp_path / "shared"))
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=owner)
    prepared = executor.prepare(START, beam())
    shipped = b"".join(cloudpickle.dumps(task) for task in prepared.tasks)
    assert secret.encode() not in shipped
    # the workers were started without the variable: they cannot sign, so they hand back
    result = executor.execute(prepared)
    assert not any(type(r) is FiledResult for r in result.results.values())


@pytest.mark.filterwarnings("ignore:Redis cache at:phys_pipeline.cache.CacheWarning")
def test_secrets_from_the_environment_or_the_key_file_never_travel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_cache_key: Path
) -> None:
    """Whatever a worker is sent (stores, signers, the tasks with their filings) holds no
    secret read from the environment or the key file, even once the driver has used it."""

    def shipped(store: Any) -> bytes:
        owner = DagCache(store)
        executor = DagExecutor(scheduler=DaskScheduler(file_on_workers=True), cache=owner)
        prepared = executor.prepare(START, beam())
        assert all(task.filing is not None for task in prepared.tasks)
        blobs = [cloudpickle.dumps(t) for t in prepared.tasks]
        return b"".join([*blobs, cloudpickle.dumps(store), cloudpickle.dumps(store.signer)])

    disk = DiskStore(tmp_path / "cache")
    disk.put("ab" * 16, StageResult(SimpleState(1.0)))  # the key file is made and read
    file_secret = isolated_cache_key.read_text().strip()
    blob = shipped(disk)
    assert file_secret.encode() not in blob and bytes.fromhex(file_secret) not in blob

    env_secret = f"lab secret {uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV_VAR, env_secret)
    for store in (
        DiskStore(tmp_path / "env-cache"),
        RedisStore("redis://127.0.0.1:1/0", prefix="never-connected"),
    ):
        store.signer.key_id()  # resolved in the driver
        assert env_secret.encode() not in shipped(store)
    given = EntrySigner("a secret the user handed over")
    assert b"a secret the user handed over" in cloudpickle.dumps(given)  # given: it travels


def test_a_given_secret_lets_a_worker_without_any_key_file(
    lonely: Client, tmp_path: Path, worker_home: Path
) -> None:
    signer = EntrySigner(f"given {uuid.uuid4().hex}")
    store = DiskStore(tmp_path, signer=signer)
    result = DagExecutor(scheduler=DaskScheduler(lonely), cache=store).run(START, beam())
    assert {type(r) for r in result.results.values()} == {FiledResult}
    assert_matches_local(result, beam())
    reread = DagExecutor(cache=DiskStore(tmp_path, signer=signer)).run(START, beam())
    assert reread.hits == ["field", "amp", "again"]


def test_a_worker_without_the_drivers_key_hands_every_result_back(
    lonely: Client, tmp_path: Path, isolated_cache_key: Path
) -> None:
    store = DiskStore(tmp_path / "cache")
    store.signer.key_id()
    driver_key = isolated_cache_key.read_bytes()
    result = DagExecutor(scheduler=DaskScheduler(lonely), cache=store).run(START, beam())
    assert not any(type(r) is FiledResult for r in result.results.values())
    assert_matches_local(result, beam())
    assert isolated_cache_key.read_bytes() == driver_key
    fresh = DagExecutor(cache=DiskStore(tmp_path / "cache")).run(START, beam())
    assert fresh.hits == ["field", "amp", "again"]


# --- code on the workers ------------------------------------------------------------------------

LENS_SOURCE = '''
import numpy as np

from phys_pipeline.types import PipelineStage, SimpleState, StageConfig, StageResult


class LensCfg(StageConfig):
    focal_m: float = 0.5


class ThinLens(PipelineStage[SimpleState, LensCfg]):
    """The optical power of a thin lens, in dioptres."""

    def process(self, state, *, policy=None):
        power = {power}
        return StageResult(SimpleState(np.array([power])), metrics={{"dioptre": power}})
'''


def test_a_stage_edited_in_its_module_never_runs_old_code_on_the_workers(
    client: Client, tmp_path: Path
) -> None:
    name = f"attack_lens_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{name}.py"
    source.write_text(LENS_SOURCE.format(power="1.0 / self.cfg.focal_m"))
    sys.path.insert(0, str(tmp_path))
    client.run(_add_path, str(tmp_path))
    try:
        module = importlib.import_module(name)
        client.run(_import, name)  # the workers have used it already
        executor = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path / "c"))
        first = executor.run(START, [NodeSpec("lens", stage=module.ThinLens(module.LensCfg()))])
        assert first.metrics["lens.dioptre"] == 2.0
        # the user fixes the formula (a doubled lens) and reloads it, as %autoreload does
        source.write_text(LENS_SOURCE.format(power="2.0 / self.cfg.focal_m  # doubled"))
        shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
        importlib.invalidate_caches()
        module = importlib.reload(module)
        nodes = [NodeSpec("lens", stage=module.ThinLens(module.LensCfg()))]
        try:
            second = executor.run(START, nodes)
        except NodeFailedError as exc:  # refusing to run old code, naming the node, is fine
            assert "'lens'" in str(exc)
        else:
            assert second.metrics["lens.dioptre"] == local(nodes).metrics["lens.dioptre"] == 4.0
    finally:
        client.run(_forget_module, name, str(tmp_path))
        _forget_module(name, str(tmp_path))


# --- interrupts, stages writing to their input -----------------------------------------------


def test_an_interrupted_filed_run_leaves_nothing_running_and_the_next_run_is_right(
    client: Client, tmp_path: Path
) -> None:
    nodes = [*beam(), NodeSpec("slow", ["field"], SlowAmplifier(GainCfg(gain=5.0)))]
    store = DiskStore(tmp_path)
    interrupted = DagExecutor(
        scheduler=DaskScheduler(client), cache=store, callbacks=[InterruptOnDone("amp")]
    )
    with pytest.raises(KeyboardInterrupt) as caught:
        interrupted.run(START, nodes)
    assert cluster_is_empty(client)
    assert "slow" in caught.value.partial.cancelled  # type: ignore[attr-defined]
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=store)
    result = executor.run(START, nodes)
    # a worker thread cannot be stopped: on a loaded machine "slow" may finish and file its
    # (right) result after the interrupt, so it may load now; either way the run must be right
    assert {"field", "amp"} <= set(result.hits) and "slow" in {*result.ran, *result.hits}
    assert_matches_local(result, nodes)
    assert cluster_is_empty(client)


def interrupt_once_the_peak_is_done(
    lonely: Client, nodes: list[NodeSpec], store: DiskStore
) -> None:
    """Runs ``nodes`` on the lonely worker and interrupts once the peak finder is done, as
    Ctrl-C would: nothing may stay on the cluster."""
    executor = DagExecutor(
        scheduler=DaskScheduler(lonely), cache=store, callbacks=[InterruptOnDone("peak")]
    )
    with pytest.raises(KeyboardInterrupt):
        executor.run(START, nodes, raise_on_error=False)
    assert cluster_is_empty(lonely)


def peak_without_the_culprit(nodes: list[NodeSpec], store: DiskStore) -> float:
    """The peak a local run reads through ``store`` once the culprit is gone: the true grid's
    1.0, unless an entry the culprit corrupted was left cached."""
    again = DagExecutor(cache=store).run(START, [n for n in nodes if n.id != "culprit"])
    return again.metrics["peak.peak"]


def test_a_stage_writing_to_its_input_on_a_worker_corrupts_nothing_after_the_run(
    lonely: Client, tmp_path: Path
) -> None:
    """On one worker the peak finder reads the very grid object the culprit replaced; it is
    filed by the worker, and evicted by the driver once the run is over."""
    signer = EntrySigner(f"given {uuid.uuid4().hex}")  # so that the lonely worker files
    store = DiskStore(tmp_path, signer=signer)
    nodes = grid_and_readers()
    out = DagExecutor(scheduler=DaskScheduler(lonely), cache=store).run(
        START, nodes, raise_on_error=False
    )
    assert isinstance(out.failures["culprit"], StateMutationError)
    assert not store.contains(out.plan.nodes["peak"].key)
    assert peak_without_the_culprit(nodes, DiskStore(tmp_path, signer=signer)) == 1.0


def test_an_interrupt_after_a_worker_stage_wrote_to_its_input_leaves_no_corrupted_entry(
    lonely: Client, tmp_path: Path
) -> None:
    signer = EntrySigner(f"given {uuid.uuid4().hex}")
    nodes = grid_and_readers()
    interrupt_once_the_peak_is_done(lonely, nodes, DiskStore(tmp_path, signer=signer))
    assert peak_without_the_culprit(nodes, DiskStore(tmp_path, signer=signer)) == 1.0


def test_a_sibling_a_worker_filed_before_the_culprit_returned_is_not_left_cached(
    lonely: Client, tmp_path: Path
) -> None:
    signer = EntrySigner(f"given {uuid.uuid4().hex}")
    nodes = culprit_and_peak(
        SlowScribbler(DelayCfg(delay_s=SLOW_S)), LatePeak(DelayCfg(delay_s=0.3))
    )
    interrupt_once_the_peak_is_done(lonely, nodes, DiskStore(tmp_path, signer=signer))
    assert peak_without_the_culprit(nodes, DiskStore(tmp_path, signer=signer)) == 1.0


# --- uncacheable nodes ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::phys_pipeline.errors.UncacheableWarning")
def test_uncacheable_nodes_are_recomputed_on_the_workers_every_run_and_never_filed(
    client: Client, tmp_path: Path
) -> None:
    nodes = [
        *beam()[:1],
        NodeSpec("env", ["field"], EnvGain(GainCfg())),
        NodeSpec("after", ["env"], Amplifier(GainCfg(gain=3.0))),
    ]
    store = DiskStore(tmp_path)
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=store)
    field_power = local(beam()[:1]).metrics["field.power"]
    try:
        for gain in (2.0, 5.0):
            client.run(_set_env, "ATTACK_FILING_GAIN", str(gain))
            result = executor.run(START, nodes)
            assert result.ran[-2:] == ["env", "after"]
            assert result.metrics["after.power"] == pytest.approx(3 * gain * field_power)
            for node_id in ("env", "after"):
                assert type(result.results[node_id]) is not FiledResult
                assert not store.contains(result.plan.nodes[node_id].key)
    finally:
        client.run(_unset_env, "ATTACK_FILING_GAIN")


# --- cutoff with the digests workers sent ------------------------------------------------------


def test_cutoff_on_dask_compares_with_the_digest_the_children_read(
    client: Client, tmp_path: Path
) -> None:
    """An entry replaced under the field's previous key cannot make cutoff reuse an amplifier
    computed from the old field: cutoff compares with what the amplifier was computed from
    (the local twin is in test_attack_cache_owner.py)."""
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path))
    first = executor.run(START, beam())
    key = first.plan.nodes["field"].key
    co_user = DiskStore(tmp_path)
    co_user.delete(key)
    co_user.put(key, local(beam(width=0.3)).results["field"])
    wider = beam(width=0.3)
    result = executor.run(START, wider)
    assert result.ran == ["field", "amp", "again"]
    assert_matches_local(result, wider)


def test_an_executor_on_dask_and_a_local_one_sharing_an_owner(
    client: Client, tmp_path: Path
) -> None:
    owner = DagCache(DiskStore(tmp_path))
    on_dask = DagExecutor(scheduler=DaskScheduler(client), cache=owner)
    here = DagExecutor(cache=owner)
    on_dask.run(START, beam())
    relabelled = beam(tag="relabelled")
    out = here.run(START, relabelled)  # cutoff on the digests the workers sent
    assert out.ran == ["field"] and out.runs["amp"].reason == REUSED
    assert_matches_local(out, relabelled)
    louder = beam(gain=7.0, tag="relabelled")
    out = on_dask.run(START, louder)
    assert out.ran == ["amp", "again"]
    assert_matches_local(out, louder)
    out = here.run(START, beam(gain=7.0))  # the first field (a hit), the louder amplifier
    assert out.hits == ["field", "amp", "again"] and out.runs["amp"].reason == REUSED
    assert_matches_local(out, beam(gain=7.0))


# --- sessions, targets ---------------------------------------------------------------------------


def test_a_session_on_dask_with_a_memory_tier_matches_local_runs_through_edits(
    client: Client, tmp_path: Path
) -> None:
    session = LiveSession(beam(), START, cache=DiskStore(tmp_path), scheduler=DaskScheduler(client))
    assert_matches_local(session.run(), beam())
    session.update("amp", gain=5.0)
    out = session.run()
    assert out.ran == ["amp", "again"]
    assert_matches_local(out, beam(gain=5.0))
    session.update("amp", gain=2.0)
    out = session.run()  # back: loaded from the disk the workers filed, into the memory tier
    assert out.hits == ["field", "amp", "again"]
    assert_matches_local(out, beam())
    session.update("field", tag="relabelled")
    out = session.run()
    assert out.ran == ["field"] and out.runs["amp"].reason == REUSED
    assert_matches_local(out, beam(tag="relabelled"))
    out = session.rerun("amp")
    assert out.ran == ["amp"] and out.hits == ["field", "again"]
    assert_matches_local(out, beam(tag="relabelled"))
    session.update("again", gain=0.5)
    out = session.run()
    assert out.ran == ["again"]
    expected = beam(tag="relabelled")
    expected[2] = expected[2].replace(stage=Amplifier(GainCfg(gain=0.5)))
    assert_matches_local(out, expected)


def test_targets_then_full_runs_on_dask_match_local_runs(client: Client, tmp_path: Path) -> None:
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=DiskStore(tmp_path))
    partial = executor.run(START, beam(gain=4.0), targets=["amp"])
    assert partial.ran == ["field", "amp"] and "again" not in partial.results
    np.testing.assert_allclose(
        partial.results["amp"].state.payload, local(beam(gain=4.0)).results["amp"].state.payload
    )
    full = executor.run(START, beam(gain=4.0))
    assert full.ran == ["again"]
    assert_matches_local(full, beam(gain=4.0))
    executor.run(START, beam(gain=4.0, tag="relabelled"), targets=["field"])
    full = executor.run(START, beam(gain=4.0, tag="relabelled"))
    assert_matches_local(full, beam(gain=4.0, tag="relabelled"))
    out = executor.run(START, beam(gain=4.0))
    assert out.hits == ["field", "amp", "again"]
    assert_matches_local(out, beam(gain=4.0))


# --- Redis -------------------------------------------------------------------------------------


def test_workers_file_in_redis_and_an_expired_entry_is_an_error_naming_the_node(
    client: Client, redis_url: str
) -> None:
    store = RedisStore(redis_url, f"attack-{uuid.uuid4().hex[:8]}", ttl_s=2)
    executor = DagExecutor(scheduler=DaskScheduler(client), cache=store)
    result = executor.run(START, beam())
    assert {type(r) for r in result.results.values()} == {FiledResult}
    np.testing.assert_allclose(
        result.results["field"].state.payload, local(beam()).results["field"].state.payload
    )
    time.sleep(2.5)  # the entries expire
    with pytest.raises(CacheError, match=r"node 'amp'.*cannot be read back"):
        result.results["amp"].state  # noqa: B018
    again = executor.run(START, beam())
    assert again.ran == ["field", "amp", "again"]
    assert_matches_local(again, beam())
