"""coordinator/server_app.py: whole runs on an in-process grid (no engine), and one on Ray (e2e).

The in-process clients solve a quadratic: partition p pulls the model towards its own target
t_p, so a run converges to the num_examples-weighted mean of the targets and every number in
the report can be predicted.
"""

import csv
import functools
import json
import math
import threading
import time
import traceback

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.error import Error
from flwr.serverapp import ServerApp

from coordinator import server_app
from coordinator.aggregation import model_sha256
from coordinator.config import DATA_KEYS, FederationConfig, RunConfigError
from coordinator.reports.report_json import REPORT_FILE_NAME, load_report, report_to_json
from coordinator.reports.run_config import run_config as run_config_of
from coordinator.server_app import (
    FINAL_MODEL_FILE,
    FederationFailedError,
    build_coordinator_server_app,
    run_rounds_on_grid,
)
from kernels.spec import ModelSpec
from protos import contract
from protos.contract import ClientErrorCode
from protos.report_pb2 import FAILED, OK, REJECTED

MODEL = "logreg:4-3"
NUM_CLIENTS = 5


def run_config(tmp_path, **changes):
    config = {
        "scenario": "quadratic",
        "seed": 11,
        "num-rounds": 3,
        "fraction-train": 1.0,
        "fraction-evaluate": 1.0,
        "local-epochs": 1,
        "batch-size": 8,
        "lr": 0.5,
        "strategy": "fedavg",
        "model": MODEL,
        "max-delta-norm": 100.0,
        "out-dir": str(tmp_path / "run"),
        "num-partitions": NUM_CLIENTS,
    }
    config.update({key.replace("_", "-"): value for key, value in changes.items()})
    return config


def target(partition_id: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([99, partition_id])
    return {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, shape in ModelSpec.parse(MODEL).array_shapes().items()
    }


def num_examples(partition_id: int) -> int:
    return 10 * (partition_id + 1)


class QuadraticClient:
    """A client whose local step moves the model a fraction ``lr`` towards its target."""

    def __init__(self, partition_id: int, behaviour: str = "honest"):
        self.partition_id = partition_id
        self.behaviour = behaviour

    def __call__(self, message: Message) -> Message:
        if self.behaviour == "error":
            return Message(
                Error(code=ClientErrorCode.DATA.value, reason="data file missing"), reply_to=message
            )
        config = message.content[contract.RECORD_CONFIG]
        weights = {
            name: array.numpy() for name, array in message.content[contract.RECORD_ARRAYS].items()
        }
        goal = target(self.partition_id)
        gap = {name: goal[name] - weights[name] for name in weights}
        loss = 0.5 * sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gap.values())
        if message.metadata.message_type == "evaluate":
            metrics = {
                contract.METRIC_NUM_EXAMPLES: 5,
                contract.METRIC_EVAL_LOSS: loss,
                contract.METRIC_EVAL_ACCURACY: 1.0 / (1.0 + loss),
                contract.METRIC_PARTITION_ID: self.partition_id,
            }
            return Message(
                RecordDict({contract.RECORD_METRICS: MetricRecord(metrics)}), reply_to=message
            )
        lr = float(config["lr"])
        delta = {name: (lr * gap[name]).astype(np.float32) for name in gap}
        if self.behaviour == "nan":
            delta["layer0.bias"][0] = np.nan
        metrics = {
            contract.METRIC_NUM_EXAMPLES: num_examples(self.partition_id),
            contract.METRIC_TRAIN_LOSS: loss,
            contract.METRIC_KERNEL_SECONDS: 0.001,
            contract.METRIC_FUEL_USED: 0,
            contract.METRIC_REPLY_BYTES: sum(v.nbytes for v in delta.values()),
            contract.METRIC_PARTITION_ID: self.partition_id,
        }
        arrays = ArrayRecord({name: Array(value) for name, value in delta.items()})
        return Message(
            RecordDict(
                {contract.RECORD_ARRAYS: arrays, contract.RECORD_METRICS: MetricRecord(metrics)}
            ),
            reply_to=message,
        )


class InProcessGrid:
    """Delivers each message to an in-process client, like the engine would (random node ids)."""

    def __init__(self, node_id_seed: int, behaviours=None):
        rng = np.random.default_rng(node_id_seed)
        node_ids = rng.choice(2**40, size=NUM_CLIENTS, replace=False).tolist()
        behaviours = behaviours or {}
        self.clients = {
            int(node_id): QuadraticClient(partition, behaviours.get(partition, "honest"))
            for partition, node_id in enumerate(node_ids)
        }
        self.sent: list[Message] = []

    def get_node_ids(self):
        return list(self.clients)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent += messages
        return [self.clients[m.metadata.dst_node_id](m) for m in messages]


def write_json_only(out_dir, report, *, background=None):
    # report.json alone: the full writer renders HTML plots each round (about a second). As
    # server_app's own writer, it writes where the run's checkpoints go, after them.
    text = report_to_json(report)
    write = functools.partial((out_dir / REPORT_FILE_NAME).write_text, text, encoding="utf-8")
    if background is None:
        write()
    else:
        background.submit(write)


@pytest.fixture
def json_only_by_default(monkeypatch):
    monkeypatch.setattr(server_app, "_write_run", write_json_only)


def central_evaluate(arrays):
    counts = np.array([num_examples(p) for p in range(NUM_CLIENTS)], np.float64)
    goal = {
        name: np.average(
            np.stack([target(p)[name] for p in range(NUM_CLIENTS)]), axis=0, weights=counts
        )
        for name in arrays
    }
    loss = 0.5 * sum(float(np.sum((arrays[n] - goal[n]) ** 2)) for n in arrays)
    return loss, 1.0 / (1.0 + loss)


def test_a_run_writes_its_report_and_final_model_round_by_round(tmp_path):
    seen = []
    config = FederationConfig.from_run_config(run_config(tmp_path))
    report = run_rounds_on_grid(
        InProcessGrid(1),
        config,
        central_evaluate=central_evaluate,
        on_round=seen.append,
        write_report=write_json_only,
    )
    assert report.status == "completed" and report.error == ""
    assert [r.round for r in report.rounds] == [1, 2, 3] and [r.round for r in seen] == [1, 2, 3]
    written = load_report(tmp_path / "run")
    assert written == report
    with np.load(tmp_path / "run" / FINAL_MODEL_FILE) as saved:
        final = {name: saved[name] for name in saved.files}
    assert model_sha256(final) == report.final_model_sha256
    assert set(final) == set(ModelSpec.parse(MODEL).array_shapes())
    # The quadratic clients move the model half way to the weighted target each round.
    losses = [r.central_loss for r in report.rounds]
    assert losses[1] == pytest.approx(losses[0] / 4, rel=1e-4)
    assert losses[2] == pytest.approx(losses[1] / 4, rel=1e-4)
    assert report.final_central_loss == losses[-1]
    assert report.final_federated_eval_accuracy == report.rounds[-1].federated_eval_accuracy
    first = report.rounds[0]
    assert first.clients_sampled == first.clients_succeeded == NUM_CLIENTS
    assert sorted(c.partition_id for c in first.clients) == list(range(NUM_CLIENTS))
    assert all(c.eval_status == OK for c in first.clients)
    assert report.total_bytes_uploaded == sum(r.bytes_uploaded for r in report.rounds) > 0
    assert report.total_bytes_downloaded == sum(r.bytes_downloaded for r in report.rounds) > 0
    assert report.config["strategy"] == "fedavg" and report.config["server-lr"] == 1.0
    assert report.versions.flwr and report.versions.python and report.engine == "deployment"
    assert report.started_at.seconds > 0 and report.finished_at.seconds >= report.started_at.seconds


def test_the_full_report_writer_is_the_default(tmp_path):
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=1))
    report = run_rounds_on_grid(InProcessGrid(1), config)
    assert load_report(tmp_path / "run") == report
    for name in ("rounds.csv", "clients.csv", "report.html"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_an_unbounded_delta_norm_is_reported_as_text(tmp_path):
    config = FederationConfig.from_run_config(
        run_config(tmp_path, num_rounds=1, max_delta_norm=math.inf)
    )
    report = run_rounds_on_grid(InProcessGrid(1), config, write_report=write_json_only)
    assert report.config["max-delta-norm"] == "inf"
    assert load_report(tmp_path / "run").status == "completed"


def test_messages_carry_the_job_config_and_no_data_keys(tmp_path):
    # Issue 11: clients read the data keys from their run config; the coordinator no longer
    # forwards them (this test checked that it did).
    grid = InProcessGrid(1)
    config = FederationConfig.from_run_config(
        run_config(tmp_path, num_rounds=1, kernel_sha256="ab" * 32)
    )
    run_rounds_on_grid(grid, config, write_report=write_json_only)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    sent_config = train[0].content[contract.RECORD_CONFIG]
    assert "num-partitions" not in sent_config and not set(DATA_KEYS) & set(sent_config)
    assert sent_config["kernel-sha256"] == "ab" * 32
    assert (
        sent_config["server-round"] == 1
        and sent_config["model"] == MODEL
        and sent_config["seed"] == 11
    )


@pytest.mark.parametrize(
    "strategy, params",
    [("fedavg", "{}"), ("fedadam", '{"tau": 0.01}'), ("krum", '{"num_malicious_nodes": 1}')],
)
def test_same_seed_same_model_whatever_the_node_ids(tmp_path, strategy, params):
    hashes = []
    for node_id_seed in (1, 2):
        changes = {
            "fraction_train": 0.6,
            "fraction_evaluate": 0.4,
            "strategy": strategy,
            "strategy_params": params,
        }
        config = FederationConfig.from_run_config(
            run_config(tmp_path / str(node_id_seed), **changes)
        )
        hashes.append(
            run_rounds_on_grid(
                InProcessGrid(node_id_seed), config, write_report=write_json_only
            ).final_model_sha256
        )
    assert hashes[0] == hashes[1]
    other_seed = FederationConfig.from_run_config(
        run_config(tmp_path / "s", fraction_train=0.6, seed=12)
    )
    assert (
        run_rounds_on_grid(
            InProcessGrid(1), other_seed, write_report=write_json_only
        ).final_model_sha256
        != hashes[0]
    )


def test_partition_ids_are_asked_for_only_when_sampling_is_partial(tmp_path):
    full = InProcessGrid(3)
    run_rounds_on_grid(
        full,
        FederationConfig.from_run_config(run_config(tmp_path / "a", num_rounds=1)),
        write_report=write_json_only,
    )
    assert all(m.content[contract.RECORD_CONFIG]["server-round"] == 1 for m in full.sent)
    partial = InProcessGrid(3)
    config = FederationConfig.from_run_config(
        run_config(tmp_path / "b", num_rounds=1, fraction_train=0.4)
    )
    run_rounds_on_grid(partial, config, write_report=write_json_only)
    round_zero = [m for m in partial.sent if m.content[contract.RECORD_CONFIG]["server-round"] == 0]
    assert len(round_zero) == NUM_CLIENTS and all(
        m.metadata.message_type == "evaluate" for m in round_zero
    )


def test_the_evaluation_sample_is_reproducible_too(tmp_path):
    evaluated = []
    for node_id_seed in (1, 2):
        config = FederationConfig.from_run_config(
            run_config(tmp_path / str(node_id_seed), fraction_evaluate=0.4)
        )
        report = run_rounds_on_grid(
            InProcessGrid(node_id_seed), config, write_report=write_json_only
        )
        evaluated.append(
            [
                sorted(c.partition_id for c in r.clients if c.eval_status == OK)
                for r in report.rounds
            ]
        )
    assert evaluated[0] == evaluated[1] and all(len(parts) == 2 for parts in evaluated[0])


def test_partial_sampling_draws_the_configured_share(tmp_path):
    config = FederationConfig.from_run_config(
        run_config(tmp_path, fraction_train=0.4, fraction_evaluate=0.0)
    )
    report = run_rounds_on_grid(InProcessGrid(3), config, write_report=write_json_only)
    assert all(r.clients_sampled == 2 and len(r.sampled_node_ids) == 2 for r in report.rounds)
    assert all(math.isnan(r.federated_eval_loss) for r in report.rounds)
    assert math.isnan(report.final_central_accuracy)  # no central evaluation was given


def test_bad_clients_are_counted_and_the_run_goes_on(tmp_path):
    grid = InProcessGrid(4, behaviours={0: "error", 3: "nan"})
    report = run_rounds_on_grid(
        grid, FederationConfig.from_run_config(run_config(tmp_path)), write_report=write_json_only
    )
    assert report.status == "completed"
    for round_report in report.rounds:
        assert (
            round_report.clients_succeeded,
            round_report.clients_failed,
            round_report.clients_rejected,
        ) == (3, 1, 1)
        by_partition = {c.partition_id: c for c in round_report.clients if c.status != FAILED}
        assert by_partition[3].status == REJECTED and "non-finite" in by_partition[3].reason
        failed = [c for c in round_report.clients if c.status == FAILED]
        assert len(failed) == 1 and "data file missing" in failed[0].reason


def test_a_round_without_usable_replies_fails_the_run_after_reporting(tmp_path):
    grid = InProcessGrid(5, behaviours={p: "error" for p in range(NUM_CLIENTS)})
    with pytest.raises(FederationFailedError, match="round 1: no usable reply"):
        run_rounds_on_grid(
            grid,
            FederationConfig.from_run_config(run_config(tmp_path)),
            write_report=write_json_only,
        )
    written = load_report(tmp_path / "run")
    assert written.status == "failed" and "data file missing" in written.error
    assert len(written.rounds) == 1 and written.rounds[0].clients_failed == NUM_CLIENTS
    assert not (tmp_path / "run" / FINAL_MODEL_FILE).exists()
    report_json = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report_json["final_model_sha256"] == ""  # printed although empty


def test_make_server_app_runs_main_with_the_override(tmp_path, json_only_by_default):
    seen = []
    app = build_coordinator_server_app(
        central_evaluate=central_evaluate,
        run_config_override=run_config(tmp_path, num_rounds=2),
        on_round=seen.append,
    )
    assert isinstance(app, ServerApp)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    app(InProcessGrid(6), context)
    assert len(seen) == 2 and load_report(tmp_path / "run").status == "completed"


def test_make_server_app_reads_context_run_config_and_refuses_bad_keys(
    tmp_path, json_only_by_default
):
    context = Context(
        run_id=1,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=run_config(tmp_path) | {"bogus": 1},
    )
    with pytest.raises(RunConfigError, match="bogus"):
        build_coordinator_server_app()(InProcessGrid(7), context)


# -- on Flower's simulation engine ------------------------------------------------------------
def quadratic_client_app(nan_partition: int):
    """A ClientApp around QuadraticClient; partition ``nan_partition`` sends a NaN delta."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def handle(message: Message, context: Context) -> Message:
        partition_id = int(context.node_config[contract.METRIC_PARTITION_ID])
        behaviour = "nan" if partition_id == nan_partition else "honest"
        return QuadraticClient(partition_id, behaviour)(message)

    app.train()(handle)
    app.evaluate()(handle)
    return app


@pytest.mark.e2e
def test_on_the_simulation_engine_a_run_is_reproducible(tmp_path, monkeypatch):
    from flwr.simulation import run_simulation

    for key, value in {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        "FLWR_HOME": str(tmp_path / "flwr-home"),
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(server_app, "_write_run", write_json_only)
    reports = []
    for attempt in ("first", "second"):
        config = run_config(tmp_path / attempt, fraction_train=0.6, num_rounds=2)
        app = build_coordinator_server_app(
            central_evaluate=central_evaluate, run_config_override=config
        )
        run_simulation(
            server_app=app,
            client_app=quadratic_client_app(nan_partition=1),
            num_supernodes=NUM_CLIENTS,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": 2, "include_dashboard": False, "logging_level": "ERROR"},
            },
        )
        reports.append(load_report(tmp_path / attempt / "run"))
    first, second = reports
    assert first.status == second.status == "completed" and first.engine == "simulation"
    assert first.final_model_sha256 == second.final_model_sha256 != ""
    assert [r.clients_sampled for r in first.rounds] == [3, 3]
    nan_rows = [c for r in first.rounds for c in r.clients if c.partition_id == 1 and c.status]
    assert nan_rows and all(c.status == REJECTED and "non-finite" in c.reason for c in nan_rows)
    assert all(
        r.clients_rejected == len([c for c in r.clients if c.status == REJECTED])
        for r in first.rounds
    )


class InterruptedGrid(InProcessGrid):
    """Ctrl-C arrives while round ``interrupt_round`` waits for its replies."""

    def __init__(self, interrupt_round: int):
        super().__init__(3)
        self.interrupt_round = interrupt_round

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.group_id == str(self.interrupt_round):
            raise KeyboardInterrupt
        return super().send_and_receive(messages, timeout=timeout)


def test_an_interrupted_run_reports_interrupted_with_its_finished_rounds(tmp_path):
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=4))
    with pytest.raises(KeyboardInterrupt):
        run_rounds_on_grid(
            InterruptedGrid(interrupt_round=3),
            config,
            central_evaluate=central_evaluate,
            write_report=write_json_only,
        )
    report = load_report(tmp_path / "run")
    assert report.status == "interrupted"
    assert [r.round for r in report.rounds] == [1, 2]
    assert report.error == "interrupted after 2 finished round(s)"
    assert report.HasField("finished_at")


def test_the_run_folder_leaves_unmeasured_figures_empty_and_keeps_integers(tmp_path):
    # Partition 0 fails both its training and its evaluation; 2 of 5 nodes evaluate; no
    # central evaluation and no device clock: those figures were never measured.
    grid = InProcessGrid(6, behaviours={0: "error"})
    config = FederationConfig.from_run_config(
        run_config(tmp_path, num_rounds=1, fraction_evaluate=0.4)
    )
    report = run_rounds_on_grid(grid, config)
    run_dir = tmp_path / "run"

    with open(run_dir / "clients.csv", newline="", encoding="utf-8") as handle:
        clients = list(csv.DictReader(handle))
    (failed,) = [row for row in clients if row["status"] == "FAILED"]
    for column in ("num_examples", "claimed_num_examples", "train_loss", "kernel_seconds"):
        assert failed[column] == "", column  # no reply: nothing measured, not 0
    assert failed["aggregation_weight"] == "0.0"  # measured: it got no share
    ok = [row for row in clients if row["status"] == "OK"]
    assert len(ok) == 4 and all(row["kernel_seconds"] == "0.001" for row in ok)
    assert {row["num_examples"] for row in ok} == {str(num_examples(p)) for p in (1, 2, 3, 4)}
    # The clients report 0 fuel: the run did not meter it, so the column is empty.
    assert all(row["fuel_used"] == "" for row in clients)
    evaluated = [row for row in clients if row["eval_status"] == "OK"]
    not_sampled = [row for row in clients if row["eval_status"] == "CLIENT_STATUS_UNSPECIFIED"]
    assert evaluated and not_sampled
    assert all(row["eval_num_examples"] == "5" and row["eval_loss"] != "" for row in evaluated)
    assert all(row["eval_num_examples"] == row["eval_loss"] == "" for row in not_sampled)
    assert all(row["sim_seconds"] == row["steps_done"] == "" for row in clients)

    with open(run_dir / "rounds.csv", newline="", encoding="utf-8") as handle:
        (round_row,) = list(csv.DictReader(handle))
    assert round_row["central_loss"] == round_row["central_accuracy"] == ""  # no central eval
    assert round_row["clients_failed"] == "1" and round_row["clients_clipped"] == "0"
    assert float(round_row["train_loss"]) == pytest.approx(report.rounds[0].train_loss)
    assert round_row["stragglers"] == round_row["sim_round_seconds"] == ""  # no device clock

    written = json.loads((run_dir / REPORT_FILE_NAME).read_text(encoding="utf-8"))
    assert written["config"]["num-rounds"] == 1 and type(written["config"]["num-rounds"]) is int
    assert type(written["config"]["seed"]) is int and type(written["config"]["batch-size"]) is int
    assert written["config"]["lr"] == 0.5 and type(written["config"]["max-delta-norm"]) is float
    by_status = {c["status"]: c for c in written["rounds"][0]["clients"]}
    assert by_status["FAILED"]["train_loss"] is None and by_status["OK"]["train_loss"] > 0
    loaded = load_report(run_dir)
    assert loaded == report
    (failed_client,) = [c for c in loaded.rounds[0].clients if c.status == FAILED]
    assert not failed_client.HasField("train_loss")
    assert run_config_of(loaded)["num-rounds"] == 1
    assert type(run_config_of(loaded)["local-epochs"]) is int


# -- central evaluation overlapped with the federated evaluation batch ------------------------
class EvaluateWaitsGrid(InProcessGrid):
    """Its evaluate batches wait (up to ``patience`` s) for ``event`` before they reply."""

    def __init__(self, event: threading.Event, patience: float = 10.0):
        super().__init__(3)
        self.event = event
        self.patience = patience
        self.event_seen: list[bool] = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "evaluate":
            self.event_seen.append(self.event.wait(self.patience))
        return super().send_and_receive(messages, timeout=timeout)


def test_central_evaluation_runs_while_the_clients_evaluate(tmp_path):
    started = threading.Event()

    def signalling_central_evaluate(arrays):
        started.set()
        return central_evaluate(arrays)

    grid = EvaluateWaitsGrid(started)
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=2))
    report = run_rounds_on_grid(
        grid, config, central_evaluate=signalling_central_evaluate, write_report=write_json_only
    )
    # Each evaluate batch saw the central evaluation already started (in line, after the
    # batch, it would not have been: the wait would time out).
    assert grid.event_seen == [True, True]
    reference = run_rounds_on_grid(
        InProcessGrid(3),
        FederationConfig.from_run_config(run_config(tmp_path / "in-line", num_rounds=2)),
        central_evaluate=central_evaluate,
        write_report=write_json_only,
    )
    assert [(r.central_loss, r.central_accuracy) for r in report.rounds] == [
        (r.central_loss, r.central_accuracy) for r in reference.rounds
    ]
    assert report.final_model_sha256 == reference.final_model_sha256


class CentralEvaluationBroke(ValueError):
    pass


def failing_central_evaluate(arrays):
    raise CentralEvaluationBroke("test set unreadable")


def test_a_central_evaluation_error_fails_the_run_with_that_error(tmp_path):
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=2))
    with pytest.raises(CentralEvaluationBroke, match="test set unreadable") as raised:
        run_rounds_on_grid(
            InProcessGrid(3),
            config,
            central_evaluate=failing_central_evaluate,
            write_report=write_json_only,
        )
    # The evaluation's own exception, with the traceback of where it was raised.
    assert traceback.extract_tb(raised.value.__traceback__)[-1].name == "failing_central_evaluate"
    report = load_report(tmp_path / "run")
    assert report.status == "failed"
    assert report.error == "CentralEvaluationBroke: test set unreadable"
    assert len(report.rounds) == 0


class EvaluateBrokeGrid(InProcessGrid):
    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "evaluate":
            raise ConnectionError("grid lost")
        return super().send_and_receive(messages, timeout=timeout)


def test_a_federated_evaluation_error_wins_and_the_central_one_is_waited_for(tmp_path):
    finished = threading.Event()

    def slow_failing_central_evaluate(arrays):
        time.sleep(0.2)
        finished.set()
        raise CentralEvaluationBroke("never reported")

    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=2))
    with pytest.raises(ConnectionError, match="grid lost"):
        run_rounds_on_grid(
            EvaluateBrokeGrid(3),
            config,
            central_evaluate=slow_failing_central_evaluate,
            write_report=write_json_only,
        )
    # Nothing of the round runs on after the run returned.
    assert finished.is_set()
    report = load_report(tmp_path / "run")
    assert report.status == "failed" and report.error == "ConnectionError: grid lost"


class StreamingGrid(InProcessGrid):
    """Calls ``on_reply`` with each reply, last first (a grid that streams its replies)."""

    streams_replies = True

    def __init__(self, node_id_seed, behaviours=None):
        super().__init__(node_id_seed, behaviours)
        self.streamed: list[str] = []

    def send_and_receive(self, messages, *, timeout=None, on_reply=None):
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if on_reply is not None:
            for reply in reversed(replies):
                self.streamed.append(reply.metadata.message_type)
                on_reply(reply)
        return replies


def test_a_streaming_grid_gets_the_train_replies_validated_on_arrival_same_report(tmp_path):
    behaviours = {0: "error", 3: "nan"}
    streaming = StreamingGrid(4, behaviours)
    reports = [
        run_rounds_on_grid(
            grid,
            FederationConfig.from_run_config(run_config(tmp_path / name, num_rounds=2)),
            central_evaluate=central_evaluate,
            write_report=write_json_only,
        )
        for name, grid in (("streamed", streaming), ("batch", InProcessGrid(4, behaviours)))
    ]
    # Train replies only (the evaluation replies are read after their batch).
    assert streaming.streamed == ["train"] * 2 * NUM_CLIENTS
    for report in reports:
        for round_report in report.rounds:
            round_report.wall_seconds = 0.0
    streamed, batch = reports
    assert [r.SerializeToString(deterministic=True) for r in streamed.rounds] == [
        r.SerializeToString(deterministic=True) for r in batch.rounds
    ]
    assert streamed.final_model_sha256 == batch.final_model_sha256
    assert [r.clients_rejected for r in streamed.rounds] == [1, 1]
    assert [r.clients_failed for r in streamed.rounds] == [1, 1]
