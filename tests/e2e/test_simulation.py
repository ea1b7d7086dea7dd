"""End to end on the real engines (the local engine by default; the first test also on Flower's
Ray engine), real wasmtime, real files.

Small runs (3 clients, 2 rounds) check what a run must survive: a client whose data file is
malformed (counted as failed), a client that returns a NaN delta (rejected, never aggregated),
a round with no usable reply (the run fails with a clear message and a partial report).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from sklearn.datasets import load_digits

from coordinator.reports.report_json import load_report
from protos import contract
from protos.report_pb2 import ClientStatus
from simulations.client_app import app as sandflower_client_app
from simulations.scenario import find_scenario, load_scenario
from simulations.simulate import SimulationError, simulate_on_engine

pytestmark = pytest.mark.e2e

NAN_PARTITION = 1
BAD_FILE_PARTITION = 2


def _nan_client_app() -> ClientApp:
    """Our ClientApp, except that partition 1 replies with a NaN delta (a broken client)."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        reply = sandflower_client_app(message, context)
        if (
            int(context.node_config[contract.METRIC_PARTITION_ID]) != NAN_PARTITION
            or reply.has_error()
        ):
            return reply
        arrays = reply.content.array_records[contract.RECORD_ARRAYS]
        poisoned = {name: np.full_like(array.numpy(), np.nan) for name, array in arrays.items()}
        content = RecordDict(
            {
                contract.RECORD_ARRAYS: ArrayRecord(
                    {name: Array(a) for name, a in poisoned.items()}
                ),
                contract.RECORD_METRICS: reply.content.metric_records[contract.RECORD_METRICS],
            }
        )
        return message.create_reply(content)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        return sandflower_client_app(message, context)

    return app


def _digits_folder(folder, num_clients: int, malformed: int | None = None):
    """One .npz per client from scikit-learn's digits; client ``malformed`` gets a broken file."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    folder.mkdir()
    for index, part in enumerate(np.array_split(np.arange(len(y)), num_clients)):
        path = folder / f"client-{index}.npz"
        if index == malformed:
            path.write_bytes(b"this is not an npz file")
        else:
            np.savez(path, x=x[part], y=y[part])
    return folder


def _config(name: str, **sets) -> dict:
    scenario = load_scenario(find_scenario(name))
    return scenario.with_overrides(**sets).to_run_config()


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_bad_file_and_nan_delta_are_counted_not_aggregated(tmp_path, engine):
    folder = _digits_folder(tmp_path / "data", 3, malformed=BAD_FILE_PARTITION)
    run_config = _config(
        "digits-mlp-iid",
        rounds=2,
        clients=3,
        sets={
            "data.dataset": "folder",
            "data.path": str(folder),
            "data.partitioning": "natural",
            "federation.fraction_train": "1.0",
            "federation.fraction_evaluate": "1.0",
        },
    )
    report = simulate_on_engine(
        run_config, tmp_path / "run", engine=engine, client_app=_nan_client_app()
    )
    assert report.engine == {"local": "local", "ray": "simulation"}[engine]

    assert report.status == "completed"
    assert [r.round for r in report.rounds] == [1, 2]
    for round_report in report.rounds:
        assert round_report.clients_sampled == 3
        assert (
            round_report.clients_succeeded,
            round_report.clients_failed,
            round_report.clients_rejected,
        ) == (1, 1, 1)
        by_partition = {c.partition_id: c for c in round_report.clients}
        failed = [c for c in round_report.clients if c.status == ClientStatus.FAILED]
        rejected = [c for c in round_report.clients if c.status == ClientStatus.REJECTED]
        assert len(failed) == 1 and "client-2.npz" in failed[0].reason
        assert len(rejected) == 1 and "finite" in rejected[0].reason.lower()
        if NAN_PARTITION in by_partition:
            assert by_partition[NAN_PARTITION].status == ClientStatus.REJECTED
        assert np.isfinite(round_report.central_accuracy)
    final = np.load(tmp_path / "run" / "final_model.npz")
    assert all(np.isfinite(final[name]).all() for name in final.files)
    assert load_report(tmp_path / "run").final_model_sha256 == report.final_model_sha256


def test_same_scenario_and_seed_give_the_same_model(tmp_path):
    sets = {"federation.fraction_train": "0.5"}
    first = simulate_on_engine(
        _config("digits-mlp-dirichlet", rounds=2, clients=4, seed=11, sets=sets), tmp_path / "a"
    )
    second = simulate_on_engine(
        _config("digits-mlp-dirichlet", rounds=2, clients=4, seed=11, sets=sets), tmp_path / "b"
    )
    other = simulate_on_engine(
        _config("digits-mlp-dirichlet", rounds=2, clients=4, seed=12, sets=sets), tmp_path / "c"
    )
    assert first.final_model_sha256 and len(first.final_model_sha256) == 64
    assert first.final_model_sha256 == second.final_model_sha256
    assert other.final_model_sha256 != first.final_model_sha256
    a, b = np.load(tmp_path / "a" / "final_model.npz"), np.load(tmp_path / "b" / "final_model.npz")
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])


def test_a_round_with_no_usable_reply_fails_the_run_clearly(tmp_path):
    # Every client refuses a kernel that is not the pinned one: round 1 has no usable reply.
    run_config = _config("digits-mlp-iid", rounds=2, clients=2) | {"kernel-sha256": "0" * 64}
    with pytest.raises(SimulationError, match="no usable repl"):
        simulate_on_engine(run_config, tmp_path / "run")
    report = load_report(tmp_path / "run")
    assert report.status == "failed" and "round 1" in report.error
    [failed_round] = report.rounds
    assert failed_round.clients_sampled >= 1
    assert failed_round.clients_failed == failed_round.clients_sampled
    assert all("pinned" in client.reason for client in failed_round.clients)
