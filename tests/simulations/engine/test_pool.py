"""The worker pool with real forked processes and real signals."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from functools import partial

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from simulations.engine import LocalGrid, WorkerPool, node_id_of
from simulations.engine.pool import PoolError
from simulations.engine.worker import ClientAppLoadError, load_client_app

from . import apps

NUM_CLIENTS = 8


@pytest.fixture
def behaviours():
    apps.BEHAVIOURS.clear()
    yield apps.BEHAVIOURS
    apps.BEHAVIOURS.clear()


START_METHODS = ("fork", "lean")
PROBE_APP = "tests.simulations.engine.apps:probe_app"


def _pool(num_workers: int, start_method: str, behaviours: dict) -> WorkerPool:
    """A pool of probe apps; a lean worker gets the app by reference, its behaviours by config."""
    if start_method == "fork":
        return WorkerPool(num_workers, apps.probe_app, {}, NUM_CLIENTS)
    run_config = {"probe-behaviours": dict(behaviours)}
    return WorkerPool(num_workers, PROBE_APP, run_config, NUM_CLIENTS, start_method="lean")


def _messages(grid: LocalGrid, partitions, message_type: str = "train") -> list[Message]:
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.zeros((4, 3), np.float32))}),
            "config": ConfigRecord({"server-round": 1}),
        }
    )
    return [Message(content, node_id_of(p), message_type, group_id="1") for p in partitions]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _metrics(reply: Message) -> dict:
    return dict(reply.content.metric_records["metrics"])


@pytest.mark.parametrize("start_method", START_METHODS)
def test_every_message_gets_its_reply_in_order_on_its_clients_fixed_worker(
    behaviours, start_method
):
    with _pool(3, start_method, behaviours) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        partitions = [7, 0, 3, 4, 6, 1]  # not 5: it raises
        first = list(grid.send_and_receive(_messages(grid, partitions), timeout=30))
        second = list(grid.send_and_receive(_messages(grid, partitions), timeout=30))
        pids = pool.pids
    assert [r.metadata.src_node_id for r in first] == [node_id_of(p) for p in partitions]
    for reply, partition in zip(first, partitions, strict=True):
        metrics = _metrics(reply)
        assert metrics["partition-id"] == partition
        assert metrics["num-partitions"] == NUM_CLIENTS
        assert metrics["node-id"] == node_id_of(partition)
        assert metrics["pid"] == pids[partition % 3]  # deterministic assignment
        delta = reply.content.array_records["arrays"]["w"].numpy()
        assert np.array_equal(delta, np.full((4, 3), float(partition), np.float32))
    assert [_metrics(r)["pid"] for r in second] == [_metrics(r)["pid"] for r in first]
    assert not any(_alive(pid) for pid in pids)  # stopped by pid on exit


def test_a_client_app_that_raises_fails_only_its_own_job(behaviours):
    with WorkerPool(2, apps.probe_app, {}, NUM_CLIENTS) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        replies = list(grid.send_and_receive(_messages(grid, [apps.RAISES, 2, 3]), timeout=30))
    assert replies[0].has_error()
    assert replies[0].error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "partition 5 raises on purpose" in replies[0].error.reason
    assert not replies[1].has_error() and not replies[2].has_error()


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_worker_killed_mid_round_fails_only_its_jobs_and_is_replaced(
    behaviours, tmp_path, start_method
):
    behaviours[2] = ("mark-and-sleep", str(tmp_path))  # partition 2 runs on worker 0
    # Longer than FLUSH_SECONDS: its reply has left the worker before partition 2 starts.
    behaviours[0] = ("hang", 0.2)
    with _pool(2, start_method, behaviours) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        doomed = pool.pids[0]
        marker = tmp_path / "started-2"

        def kill_when_started() -> None:
            deadline = time.monotonic() + 30
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(doomed, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_started)
        killer.start()
        started = time.monotonic()
        # Worker 0 holds 0, 2 (killed while running), 4 (never started); worker 1 holds 1, 3.
        replies = list(grid.send_and_receive(_messages(grid, [0, 1, 2, 3, 4]), timeout=60))
        killer.join()
        assert time.monotonic() - started < 30
        assert int(marker.read_text()) == doomed
        by_partition = {r.metadata.src_node_id - node_id_of(0): r for r in replies}
        assert sorted(by_partition) == [0, 1, 2, 3, 4]
        assert not by_partition[0].has_error()  # sent before the kill: kept
        for partition in (2, 4):
            error = by_partition[partition].error
            assert error.code == ErrorCode.CLIENT_APP_CRASHED
            assert f"pid {doomed}" in error.reason and "SIGKILL" in error.reason
        assert not by_partition[1].has_error() and not by_partition[3].has_error()
        assert pool.pids[0] != doomed and _alive(pool.pids[0])  # a fresh worker
        assert pool.stats.workers_replaced == 1
        fresh = pool.pids[0]
        again = list(grid.send_and_receive(_messages(grid, [0, 2, 4]), timeout=30))
    assert [_metrics(reply)["pid"] for reply in again] == [fresh] * 3  # the next round runs


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_worker_that_hangs_past_the_timeout_is_killed_and_replaced(behaviours, start_method):
    behaviours[1] = ("hang", 60)  # partition 1 runs on worker 1
    with _pool(2, start_method, behaviours) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        hung = pool.pids[1]
        started = time.monotonic()
        replies = list(grid.send_and_receive(_messages(grid, [0, 1, 2]), timeout=2.0))
        elapsed = time.monotonic() - started
        assert elapsed < 10
        assert not replies[0].has_error() and not replies[2].has_error()
        assert replies[1].error.code == ErrorCode.CLIENT_APP_CRASHED
        assert "timeout of 2 s" in replies[1].error.reason
        assert f"pid {hung}" in replies[1].error.reason
        assert not _alive(hung) and pool.pids[1] != hung


def test_stop_leaves_no_worker_and_a_stopped_pool_refuses_work(behaviours):
    pool = WorkerPool(2, apps.probe_app, {}, NUM_CLIENTS).start()
    pids = pool.pids
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    pool.stop()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(PoolError, match="stopped"):
        pool.run([], timeout=1)


def test_client_app_sources():
    assert load_client_app(apps.probe_app) is apps.probe_app
    assert load_client_app("tests.simulations.engine.apps:probe_app") is apps.probe_app
    assert load_client_app(partial(apps.make_probe_app)) is apps.probe_app
    assert isinstance(load_client_app("client.client_app:app"), ClientApp)
    with pytest.raises(ClientAppLoadError, match="expected 'module:attribute'"):
        load_client_app("client.client_app")
    with pytest.raises(ClientAppLoadError, match="no_such_app"):
        load_client_app("client.client_app:no_such_app")
    with pytest.raises(ClientAppLoadError, match="expected it to return a ClientApp"):
        load_client_app(lambda: 42)
    with pytest.raises(PoolError, match="workers: expected an int >= 1, given 0"):
        WorkerPool(0, apps.probe_app, {}, NUM_CLIENTS)


def test_a_message_to_an_unknown_node_is_refused(behaviours):
    with WorkerPool(1, apps.probe_app, {}, NUM_CLIENTS) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        bad = _messages(grid, [0])[0]
        bad.metadata.__dict__["_dst_node_id"] = 42
        with pytest.raises(ValueError, match="node 42: expected a node id in"):
            grid.send_and_receive([bad], timeout=5)


def test_a_lean_worker_imports_only_what_a_worker_needs(behaviours):
    # The point of a lean worker: none of the coordinator's heavy libraries are resident. The
    # coordinator here (this process) has matplotlib loaded; a forked worker maps it too.
    import matplotlib.pyplot  # noqa: F401

    def mapped_by_worker(start_method: str) -> str:
        with _pool(1, start_method, behaviours) as pool:
            (pid,) = pool.pids
            grid = LocalGrid(pool, NUM_CLIENTS)
            (reply,) = grid.send_and_receive(_messages(grid, [3]), timeout=60)
            assert _metrics(reply)["pid"] == pid
            with open(f"/proc/{pid}/maps") as maps:
                return maps.read()

    forked, lean = mapped_by_worker("fork"), mapped_by_worker("lean")
    assert "matplotlib" in forked
    assert "matplotlib" not in lean and "sklearn" not in lean
    assert "numpy" in lean  # it did load what the ClientApp uses


def test_a_lean_pool_refuses_a_client_app_that_cannot_cross_to_it():
    local_app = ClientApp()

    @local_app.train()
    def train(message: Message, context) -> Message:  # a closure: cannot be pickled
        return message

    pool = WorkerPool(1, local_app, {}, NUM_CLIENTS, start_method="lean")
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError), match="pickle"):
        pool.start()
    assert pool.pids == [] and pool.started_pids == []  # nothing was started
    pool.stop()
    with pytest.raises(PoolError, match="start_method"):
        WorkerPool(1, PROBE_APP, {}, NUM_CLIENTS, start_method="spawn")


def test_every_other_batch_runs_backwards_and_replies_keep_instruction_order(behaviours):
    # Zig-zag: the clients a worker ran last run first in its next batch (warm caches).
    with WorkerPool(1, apps.probe_app, {}, NUM_CLIENTS) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        partitions = [0, 1, 2, 3, 4, 6, 7]
        rounds = [list(grid.send_and_receive(_messages(grid, partitions), timeout=30))]
        rounds.append(list(grid.send_and_receive(_messages(grid, partitions), timeout=30)))
        rounds.append(list(grid.send_and_receive(_messages(grid, partitions), timeout=30)))
    for replies in rounds:
        assert [_metrics(r)["partition-id"] for r in replies] == partitions
    first, second, third = ([_metrics(r)["job-sequence"] for r in rs] for rs in rounds)
    assert first == sorted(first) and third == sorted(third)
    assert second == sorted(second, reverse=True)
    assert first[-1] < second[-1] < second[0] < third[0]


def test_a_lean_worker_does_not_import_from_the_current_directory(tmp_path, monkeypatch):
    # A user's folder may hold its own simulations/ or client/: the worker must import ours.
    shadow = tmp_path / "simulations"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the shadowing package was imported')\n")
    monkeypatch.chdir(tmp_path)
    with _pool(1, "lean", {}) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        (reply,) = grid.send_and_receive(_messages(grid, [2]), timeout=60)
    assert not reply.has_error()
    assert _metrics(reply)["partition-id"] == 2


@pytest.mark.parametrize("start_method", START_METHODS)
def test_each_worker_keeps_every_client_it_owns_when_they_fit(behaviours, start_method):
    # 1001 clients on 2 workers: worker 0 owns 501, worker 1 owns 500 (both <= 576), and
    # each keeps room for 1/16 more (train jobs a balanced batch lends it). 1140 clients:
    # 570 each, the room is capped at LAZY_CLIENTS_MAX.
    from simulations.federated_data import LAZY_CLIENTS_CACHED, LAZY_CLIENTS_MAX

    sizes = {}
    populations = ((1001, 2), (1140, 2), (NUM_CLIENTS, 2), (3 * LAZY_CLIENTS_MAX, 2))
    for num_partitions, num_workers in populations:
        run_config = {"probe-behaviours": dict(behaviours)}
        app = apps.probe_app if start_method == "fork" else PROBE_APP
        with WorkerPool(
            num_workers, app, run_config, num_partitions, start_method=start_method
        ) as pool:
            grid = LocalGrid(pool, num_partitions)
            replies = grid.send_and_receive(_messages(grid, [0, 1]), timeout=30)
            sizes[num_partitions] = [_metrics(r)["lazy-cache-size"] for r in replies]
    assert sizes[1001] == [501 + 31, 500 + 31]
    assert sizes[1140] == [LAZY_CLIENTS_MAX] * 2
    # Few clients, or more than fit: the default size.
    assert sizes[NUM_CLIENTS] == [LAZY_CLIENTS_CACHED] * 2
    assert sizes[3 * LAZY_CLIENTS_MAX] == [LAZY_CLIENTS_CACHED] * 2


def test_a_job_cost_moves_a_job_off_a_loaded_worker_and_keeps_reply_order(behaviours):
    # Partitions 0, 2, 4, 6 are at home on worker 0 (12 units of work), 1 on worker 1 (1 unit).
    # One job of the five may move (balance.MAX_MOVED_FRACTION, at least one): the first of
    # the equal jobs on worker 0 (partition 0) goes to worker 1: 9 / 4.
    costs = {1: 1.0}
    partitions = [0, 2, 4, 6, 1]
    with WorkerPool(
        2, apps.probe_app, {}, NUM_CLIENTS, job_cost=lambda p: costs.get(p, 3.0)
    ) as pool:
        assert pool.workers_for(partitions) == [1, 0, 0, 0, 1]
        grid = LocalGrid(pool, NUM_CLIENTS)
        replies = list(grid.send_and_receive(_messages(grid, partitions), timeout=30))
        # An evaluate batch runs at home: moving it would rebuild clients' data elsewhere.
        evaluated = list(grid.send_and_receive(_messages(grid, partitions, "evaluate"), timeout=30))
        pids = pool.pids
    assert [_metrics(r)["partition-id"] for r in replies] == partitions
    assert [_metrics(r)["pid"] for r in replies] == [pids[1], pids[0], pids[0], pids[0], pids[1]]
    assert [_metrics(r)["pid"] for r in evaluated] == [pids[p % 2] for p in partitions]
    for reply, partition in zip(replies, partitions, strict=True):
        delta = reply.content.array_records["arrays"]["w"].numpy()
        assert np.array_equal(delta, np.full((4, 3), float(partition), np.float32))


def test_spawned_lean_workers_import_while_the_caller_works_and_run_once_ready(behaviours):
    # The local engine spawns lean workers before it builds the central test set, so their
    # imports overlap that work; the first run waits for them.
    pool = _pool(2, "lean", behaviours)
    try:
        pool.spawn()
        pids = pool.pids
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        # Not waited for: none has been seen ready yet.
        assert not any(worker.ready for worker in pool._workers if worker is not None)
        assert pool.spawn().pids == pids  # idempotent
        grid = LocalGrid(pool, NUM_CLIENTS)
        replies = list(grid.send_and_receive(_messages(grid, [0, 1]), timeout=60))
        assert [_metrics(reply)["partition-id"] for reply in replies] == [0, 1]
        assert pool.pids == pids
    finally:
        pool.stop()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(PoolError, match="the pool was stopped"):
        pool.spawn()


def test_a_worker_freezes_what_lives_for_the_run_after_round_one(behaviours):
    # simulations/engine/collector.py: frozen once the ClientApp is loaded, and again after
    # the first two batches (round 1's train and evaluate); never after.
    with WorkerPool(1, apps.probe_app, {}, NUM_CLIENTS) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        frozen = []
        for _ in range(4):
            replies = grid.send_and_receive(_messages(grid, [0, 1, 2]), timeout=30)
            frozen.append({_metrics(reply)["frozen-objects"] for reply in replies})
    assert all(len(counts) == 1 for counts in frozen)  # no freeze within a batch
    first, second, third, fourth = (counts.pop() for counts in frozen)
    assert 0 < first <= second <= third == fourth


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_reply_that_cannot_cross_or_an_exit_fails_only_its_job_and_keeps_the_worker(
    behaviours, start_method
):
    behaviours[2] = ("foreign-object", None)
    behaviours[3] = ("numpy-metric", None)
    behaviours[4] = ("exit", None)  # sys.exit() inside a ClientApp: its own job fails
    with _pool(1, start_method, behaviours) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        replies = grid.send_and_receive(_messages(grid, range(NUM_CLIENTS)), timeout=60)
        pids = set(pool.pids)
    by_partition = {r.metadata.src_node_id - node_id_of(0): r for r in replies}
    refused = by_partition[2]
    assert refused.has_error() and "could not be read" in refused.error.reason
    assert "Flower records only, given numpy" in refused.error.reason
    # numpy's float64 crosses as a plain float, as Flower's wire format would send it
    numpy_metric = _metrics(by_partition[3])["numpy-value"]
    assert numpy_metric == 0.75 and type(numpy_metric) is float
    exited = by_partition[4]
    assert exited.has_error() and exited.error.reason.startswith("SystemExit: 3")
    others = [r for p, r in by_partition.items() if p not in (2, 4, apps.RAISES)]
    assert len(others) == NUM_CLIENTS - 3 and not any(r.has_error() for r in others)
    assert pool.stats.workers_replaced == 0
    assert {_metrics(r)["pid"] for r in others} == pids  # the same worker ran them all


def test_a_reply_batch_larger_than_its_replies_may_be_is_refused_unread(behaviours):
    # 3 floats of model: a reply may take 4x its instruction's content + 8 MiB (pool.py);
    # 48 MiB of delta is refused by its length prefix, its worker killed and replaced.
    from simulations.engine import pool as pool_module

    behaviours[1] = ("huge-reply", 12 << 20)  # float32s: 48 MiB
    with WorkerPool(1, apps.probe_app, {}, NUM_CLIENTS) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS)
        replies = grid.send_and_receive(_messages(grid, [1]), timeout=60)
        assert pool.stats.workers_replaced == 1
        assert pool._reply_allowance < (12 << 20) * 4 - pool_module.REPLY_BATCH_SLACK_BYTES
        after = grid.send_and_receive(_messages(grid, [0, 2]), timeout=60)
    (refused,) = replies
    assert refused.has_error() and "sent a reply batch over" in refused.error.reason
    assert "killed and replaced" in refused.error.reason
    assert not any(reply.has_error() for reply in after)  # the fresh worker goes on


def test_on_reply_sees_each_reply_as_it_arrives_with_the_progress(behaviours):
    seen: list[Message] = []
    progress: list[tuple[int, int]] = []

    def on_reply(reply: Message) -> None:
        seen.append(reply)
        progress.append((-1, -1))  # where on_reply falls among the progress calls

    with WorkerPool(2, apps.probe_app, {}, NUM_CLIENTS) as pool:
        grid = LocalGrid(pool, NUM_CLIENTS, on_progress=lambda *sr: progress.append(sr))
        assert grid.streams_replies
        partitions = [apps.RAISES, 2, 3, 6]
        replies = list(
            grid.send_and_receive(_messages(grid, partitions), timeout=30, on_reply=on_reply)
        )
        unobserved = list(grid.send_and_receive(_messages(grid, [1]), timeout=30))
    # The very reply objects returned, each once (the error reply of the raising client too);
    # the returned order is the instructions', whatever the arrival order was.
    assert sorted(map(id, seen)) == sorted(map(id, replies))
    assert [r.metadata.src_node_id for r in replies] == [node_id_of(p) for p in partitions]
    # Each reply is handed over before the progress counts it.
    assert progress[:9] == [(0, 4)] + [(-1, -1), (1, 4), (-1, -1), (2, 4)] + [
        (-1, -1),
        (3, 4),
        (-1, -1),
        (4, 4),
    ]
    assert len(unobserved) == 1 and len(seen) == 4  # without on_reply: nothing is called
