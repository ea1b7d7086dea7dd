"""A malformed-reply corpus, each case a whole run: no single reply may abort a federation.

Every case drives the real ``run_rounds_on_grid`` and ``DeltaStrategy`` over an in-process grid
(``tests/coordinator/test_server_app.py``'s quadratic clients): partition 2 answers round 1
with a hostile train or evaluate reply. Each run must complete, the report must round-trip
through report.json, the hostile client's row must say what happened (status and reason, the
reason bounded), and the model must be exactly what the honest clients alone give.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.app.error import Error
from flwr.supercore.task_identity import TaskIdentity

from coordinator.config import FederationConfig
from coordinator.reports.report_json import load_report
from coordinator.server_app import run_rounds_on_grid
from coordinator.validation import INT32_MAX, INT64_MAX, MAX_REASON_CHARS
from protos import contract
from protos.contract import ClientErrorCode
from protos.report_pb2 import FAILED, OK, REJECTED
from tests.coordinator.messages import reply_metadata
from tests.coordinator.test_server_app import (
    NUM_CLIENTS,
    InProcessGrid,
    num_examples,
    run_config,
    write_json_only,
)

HOSTILE = 2  # the partition that misbehaves


class HostileGrid(InProcessGrid):
    """Partition HOSTILE's replies go through ``hostile(instruction, honest_reply) -> replies``."""

    def __init__(self, hostile, *, on: str = "train"):
        super().__init__(node_id_seed=3)
        self.hostile = hostile
        self.on = on
        self.hostile_node = next(
            node for node, client in self.clients.items() if client.partition_id == HOSTILE
        )

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            reply = self.clients[message.metadata.dst_node_id](message)
            if (
                message.metadata.dst_node_id == self.hostile_node
                and message.metadata.message_type == self.on
                and message.metadata.group_id == "1"
            ):
                replies += self.hostile(message, reply)
            else:
                replies.append(reply)
        return replies


def run(tmp_path, grid, **changes):
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=1, **changes))
    report = run_rounds_on_grid(grid, config, write_report=write_json_only)
    assert report.status == "completed", report.error
    assert load_report(tmp_path / "run") == report  # the report serialises whatever came in
    return report


def row(report, grid):
    rows = [c for c in report.rounds[0].clients if int(c.node_id) == grid.hostile_node]
    assert len(rows) == 1
    return rows[0]


@pytest.fixture(scope="module")
def honest_models(tmp_path_factory):
    """The final model without partition HOSTILE's update, and with all honest updates."""
    base = tmp_path_factory.mktemp("baseline")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("_run_id", "_node_id", "_task_id"):
            patch.setattr(TaskIdentity, name, 1)
        without = run(
            base / "without",
            HostileGrid(lambda m, r: [Message(Error(1, "down"), reply_to=m)]),
        )
        honest = run(base / "honest", HostileGrid(lambda m, r: [r]))
    return without.final_model_sha256, honest.final_model_sha256


# -- building hostile replies -----------------------------------------------------------------
def with_metrics(**changes):
    """The honest reply with metrics changed (None: removed), bypassing Flower's type checks
    for values it would refuse (a reply deserialised by another engine is not type-checked
    by MetricRecord's constructor)."""

    def hostile(message, reply):
        old = next(iter(reply.content.metric_records.values()))
        metrics = MetricRecord({k: v for k, v in old.items() if k not in changes})
        for key, value in changes.items():
            if value is not None:
                metrics._data[key] = value
        content = RecordDict(
            {**dict(reply.content.array_records), contract.RECORD_METRICS: metrics}
        )
        return [Message(content, reply_to=message)]

    return hostile


def with_arrays(change):
    def hostile(message, reply):
        arrays = {k: v.numpy() for k, v in reply.content[contract.RECORD_ARRAYS].items()}
        arrays = change(arrays)
        metrics = next(iter(reply.content.metric_records.values()))
        record = ArrayRecord({name: Array(np.asarray(value)) for name, value in arrays.items()})
        return [
            Message(
                RecordDict({contract.RECORD_ARRAYS: record, contract.RECORD_METRICS: metrics}),
                reply_to=message,
            )
        ]

    return hostile


def with_records(change):
    def hostile(message, reply):
        records = dict(reply.content.items())
        return [Message(RecordDict(change(records)), reply_to=message)]

    return hostile


def error(code, reason):
    return lambda message, reply: [Message(Error(code=code, reason=reason), reply_to=message)]


def rewired(**metadata):
    def hostile(message, reply):
        for key, value in metadata.items():
            setattr(reply.metadata, key, value)
        return [reply]

    return hostile


def duplicate(message, reply):
    second = Message(
        RecordDict(
            {
                contract.RECORD_ARRAYS: ArrayRecord(
                    {
                        k: Array(100 * v.numpy())
                        for k, v in reply.content[contract.RECORD_ARRAYS].items()
                    }
                ),
                contract.RECORD_METRICS: reply.content[contract.RECORD_METRICS],
            }
        ),
        reply_to=message,
    )
    return [reply, second]


def also_from_unasked_node(message, reply):
    stranger = Message(RecordDict(dict(reply.content.items())), metadata=reply_metadata(424242))
    return [reply, stranger]


def as_float64(arrays):
    return {k: v.astype(np.float64) for k, v in arrays.items()}


def one_value(value):
    def change(arrays):
        arrays = dict(arrays)
        bias = arrays["layer0.bias"].copy()
        bias[0] = value
        arrays["layer0.bias"] = bias
        return arrays

    return change


BIG = 10**12
TRAIN_CASES = {
    # metrics: integers that do not fit the report's fields, wrong types, missing, implausible
    "partition-id 2**31": (
        with_metrics(**{contract.METRIC_PARTITION_ID: 2**31}),
        REJECTED,
        "'partition-id'",
    ),
    "partition-id -2": (
        with_metrics(**{contract.METRIC_PARTITION_ID: -2}),
        REJECTED,
        "'partition-id'",
    ),
    "partition-id 2**64": (
        with_metrics(**{contract.METRIC_PARTITION_ID: 2**64}),
        REJECTED,
        "'partition-id'",
    ),
    "partition-id 1e300": (
        with_metrics(**{contract.METRIC_PARTITION_ID: 1e300}),
        REJECTED,
        "'partition-id'",
    ),
    "partition-id nan": (
        with_metrics(**{contract.METRIC_PARTITION_ID: math.nan}),
        REJECTED,
        "'partition-id'",
    ),
    "partition-id bool": (
        with_metrics(**{contract.METRIC_PARTITION_ID: True}),
        REJECTED,
        "'partition-id'",
    ),
    "partition-id list": (
        with_metrics(**{contract.METRIC_PARTITION_ID: [2, 2]}),
        REJECTED,
        "'partition-id'",
    ),
    "num-examples 2**63": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: 2**63}),
        REJECTED,
        "'num-examples'",
    ),
    "num-examples -2**70": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: -(2**70)}),
        REJECTED,
        "num-exam",
    ),
    "num-examples 0": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: 0}),
        REJECTED,
        "'num-examples'",
    ),
    "num-examples 1.5": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: 1.5}),
        REJECTED,
        "'num-examples'",
    ),
    "num-examples inf": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: math.inf}),
        REJECTED,
        "num-examples",
    ),
    "num-examples nan": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: math.nan}),
        REJECTED,
        "num-examples",
    ),
    "num-examples bool": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: True}),
        REJECTED,
        "num-examples",
    ),
    "num-examples str": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: "40"}),
        REJECTED,
        "num-examples",
    ),
    "num-examples missing": (
        with_metrics(**{contract.METRIC_NUM_EXAMPLES: None}),
        REJECTED,
        "lacks",
    ),
    "fuel-used 2**63": (
        with_metrics(**{contract.METRIC_FUEL_USED: 2**63}),
        REJECTED,
        "'fuel-used'",
    ),
    "fuel-used -1": (with_metrics(**{contract.METRIC_FUEL_USED: -1}), REJECTED, "'fuel-used'"),
    "fuel-used 1e30": (with_metrics(**{contract.METRIC_FUEL_USED: 1e30}), REJECTED, "'fuel-used'"),
    "reply-bytes 2**64": (
        with_metrics(**{contract.METRIC_REPLY_BYTES: 2**64}),
        REJECTED,
        "'reply-bytes'",
    ),
    "kernel-seconds -1": (
        with_metrics(**{contract.METRIC_KERNEL_SECONDS: -1.0}),
        REJECTED,
        "kernel-seconds",
    ),
    "kernel-seconds inf": (
        with_metrics(**{contract.METRIC_KERNEL_SECONDS: math.inf}),
        REJECTED,
        "kernel-sec",
    ),
    "kernel-seconds 2**2000": (
        with_metrics(**{contract.METRIC_KERNEL_SECONDS: 2**2000}),
        REJECTED,
        "finite",
    ),
    "train-loss missing": (
        with_metrics(**{contract.METRIC_TRAIN_LOSS: None}),
        REJECTED,
        "lacks 'train-loss'",
    ),
    "train-loss -1e30": (
        with_metrics(**{contract.METRIC_TRAIN_LOSS: -1e30}),
        REJECTED,
        "'train-loss'",
    ),
    "train-loss nan": (
        with_metrics(**{contract.METRIC_TRAIN_LOSS: math.nan}),
        REJECTED,
        "'train-loss'",
    ),
    "train-loss -inf": (
        with_metrics(**{contract.METRIC_TRAIN_LOSS: -math.inf}),
        REJECTED,
        "'train-loss'",
    ),
    "train-loss str": (
        with_metrics(**{contract.METRIC_TRAIN_LOSS: "0.5"}),
        REJECTED,
        "'train-loss'",
    ),
    "train-loss list": (
        with_metrics(**{contract.METRIC_TRAIN_LOSS: [0.5]}),
        REJECTED,
        "'train-loss'",
    ),
    # records
    "no MetricRecord": (
        with_records(lambda r: {contract.RECORD_ARRAYS: r[contract.RECORD_ARRAYS]}),
        REJECTED,
        "MetricRecord",
    ),
    "two MetricRecords": (
        with_records(lambda r: r | {"more": MetricRecord({contract.METRIC_NUM_EXAMPLES: 1})}),
        REJECTED,
        "exactly one MetricRecord",
    ),
    "no ArrayRecord": (
        with_records(lambda r: {contract.RECORD_METRICS: r[contract.RECORD_METRICS]}),
        REJECTED,
        "ArrayRecord",
    ),
    "two ArrayRecords": (
        with_records(lambda r: r | {"more": r[contract.RECORD_ARRAYS]}),
        REJECTED,
        "exactly one ArrayRecord",
    ),
    "empty content": (with_records(lambda r: {}), REJECTED, "expected exactly one"),
    # arrays
    "float64 arrays": (with_arrays(as_float64), REJECTED, "dtype float64"),
    "float16 arrays": (
        with_arrays(lambda a: {k: v.astype(np.float16) for k, v in a.items()}),
        REJECTED,
        "dtype float16",
    ),
    "int32 arrays": (
        with_arrays(lambda a: {k: v.astype(np.int32) for k, v in a.items()}),
        REJECTED,
        "dtype int32",
    ),
    "transposed weight": (
        with_arrays(lambda a: a | {"layer0.weight": a["layer0.weight"].T.copy()}),
        REJECTED,
        "shape",
    ),
    "0-d bias": (
        with_arrays(lambda a: a | {"layer0.bias": np.float32(1.0)}),
        REJECTED,
        "shape",
    ),
    "renamed array": (
        with_arrays(lambda a: {("x" + k if "bias" in k else k): v for k, v in a.items()}),
        REJECTED,
        "array names differ",
    ),
    "extra array": (
        with_arrays(lambda a: a | {"evil": np.zeros(3, np.float32)}),
        REJECTED,
        "unexpected ['evil']",
    ),
    "a NaN": (with_arrays(one_value(np.nan)), REJECTED, "non-finite"),
    "an inf": (with_arrays(one_value(np.inf)), REJECTED, "non-finite"),
    "float32 max": (with_arrays(one_value(np.finfo(np.float32).max)), REJECTED, "max-delta-norm"),
    # error replies
    "error, negative code": (error(-(2**31), "x"), FAILED, "client error -2147483648"),
    "error, huge code": (error(2**62, ""), FAILED, "client error"),
    "error, 1 MB reason": (error(ClientErrorCode.DATA.value, "A" * 2**20), FAILED, "chars)"),
    "error, control characters": (
        error(ClientErrorCode.DATA.value, "bad\x00\x1b[31m\u2028"),
        FAILED,
        "bad?",
    ),
    "error, lone surrogate": (
        error(ClientErrorCode.DATA.value, "x\ud800y"),
        FAILED,
        "client error",
    ),
    # the envelope
    "reply to another round": (rewired(group_id="7"), REJECTED, "a reply to round 7"),
    "an evaluate reply to a train message": (
        rewired(message_type="evaluate"),
        REJECTED,
        "expected a train reply",
    ),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_a_hostile_train_reply_is_recorded_and_never_aggregated(tmp_path, honest_models, case):
    hostile, status, reason = TRAIN_CASES[case]
    grid = HostileGrid(hostile)
    report = run(tmp_path, grid)
    result = row(report, grid)
    assert result.status == status
    assert reason in result.reason
    assert len(result.reason) <= MAX_REASON_CHARS + 40
    assert result.aggregation_weight == 0.0 and not result.selected
    assert -1 <= result.partition_id <= INT32_MAX
    assert 0 <= result.claimed_num_examples <= INT64_MAX
    assert 0 <= result.fuel_used <= INT64_MAX
    assert report.rounds[0].clients_succeeded == NUM_CLIENTS - 1
    without, _ = honest_models
    assert report.final_model_sha256 == without


def test_a_reply_from_a_node_that_was_not_asked_is_rejected(tmp_path, honest_models):
    grid = HostileGrid(also_from_unasked_node)
    report = run(tmp_path, grid)
    stranger = [c for c in report.rounds[0].clients if c.node_id == "424242"]
    assert len(stranger) == 1 and stranger[0].status == REJECTED
    assert "not sampled" in stranger[0].reason
    assert report.final_model_sha256 == honest_models[1]


def test_a_second_reply_from_a_node_is_dropped(tmp_path, honest_models):
    grid = HostileGrid(duplicate)
    report = run(tmp_path, grid)
    assert row(report, grid).status == OK
    assert report.final_model_sha256 == honest_models[1]


@pytest.mark.parametrize(
    "hostile",
    [
        with_metrics(evil=[1, 2, 3], **{"other-thing": 2**70}),
        with_records(lambda r: r | {contract.RECORD_CONFIG: ConfigRecord({"x": b"\x00" * 1000})}),
    ],
    ids=["extra metric keys", "an extra ConfigRecord"],
)
def test_what_the_contract_has_no_place_for_is_ignored(tmp_path, honest_models, hostile):
    grid = HostileGrid(hostile)
    report = run(tmp_path, grid)
    assert row(report, grid).status == OK
    assert report.final_model_sha256 == honest_models[1]


def test_arrays_in_an_evaluate_reply_are_ignored(tmp_path):
    def with_arrays_too(message, reply):
        content = RecordDict(
            {contract.RECORD_METRICS: reply.content[contract.RECORD_METRICS], "a": ArrayRecord()}
        )
        return [Message(content, reply_to=message)]

    grid = HostileGrid(with_arrays_too, on="evaluate")
    assert row(run(tmp_path, grid), grid).eval_status == OK


# -- weight poisoning through num-examples ----------------------------------------------------
def test_a_huge_num_examples_claim_is_clipped_to_the_round_median_ratio(tmp_path):
    grid = HostileGrid(with_metrics(**{contract.METRIC_NUM_EXAMPLES: BIG}))
    report = run(tmp_path, grid, max_examples_ratio=2.0)
    result = row(report, grid)
    honest_claims = [num_examples(p) for p in range(NUM_CLIENTS) if p != HOSTILE]
    median = float(np.median(honest_claims + [BIG]))
    cap = int(2.0 * median)
    assert result.status == OK
    assert result.claimed_num_examples == BIG and result.num_examples == cap
    assert "clipped" in result.num_examples_note
    assert result.aggregation_weight == pytest.approx(cap / (cap + sum(honest_claims)))
    assert report.rounds[0].clients_weight_clipped == 1


def test_a_huge_claim_is_clipped_to_the_absolute_bound(tmp_path):
    grid = HostileGrid(with_metrics(**{contract.METRIC_NUM_EXAMPLES: INT64_MAX}))
    report = run(tmp_path, grid, max_num_examples=25, max_examples_ratio=0.0)
    result = row(report, grid)
    assert result.claimed_num_examples == INT64_MAX and result.num_examples == 25
    assert "max-num-examples 25" in result.num_examples_note


def test_known_partition_sizes_undo_the_lie_entirely(tmp_path, honest_models):
    grid = HostileGrid(with_metrics(**{contract.METRIC_NUM_EXAMPLES: BIG}))
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=1))
    report = run_rounds_on_grid(
        grid,
        config,
        write_report=write_json_only,
        expected_num_examples=lambda partition, purpose: (
            num_examples(partition) if purpose == "train" else 5
        ),
    )
    result = row(report, grid)
    assert result.num_examples == num_examples(HOSTILE) and result.claimed_num_examples == BIG
    assert "the partition's size" in result.num_examples_note
    assert report.final_model_sha256 == honest_models[1]


def test_without_a_weight_policy_the_liar_takes_over(tmp_path):
    # The attack the policy stops: with every bound off, the liar's weight is ~1.
    grid = HostileGrid(with_metrics(**{contract.METRIC_NUM_EXAMPLES: BIG}))
    report = run(tmp_path, grid, max_examples_ratio=0.0)
    assert row(report, grid).aggregation_weight > 0.999


# -- the evaluate path ------------------------------------------------------------------------
def eval_metrics(**changes):
    def hostile(message, reply):
        metrics = MetricRecord(
            {k: v for k, v in reply.content[contract.RECORD_METRICS].items() if k not in changes}
        )
        for key, value in changes.items():
            if value is not None:
                metrics._data[key] = value
        return [Message(RecordDict({contract.RECORD_METRICS: metrics}), reply_to=message)]

    return hostile


EVALUATE_CASES = {
    "eval-loss -1": (
        eval_metrics(**{contract.METRIC_EVAL_LOSS: -1.0}),
        REJECTED,
        "'eval-loss' must be in",
    ),
    "eval-loss nan": (
        eval_metrics(**{contract.METRIC_EVAL_LOSS: math.nan}),
        REJECTED,
        "eval-loss is nan",
    ),
    "eval-loss missing": (
        eval_metrics(**{contract.METRIC_EVAL_LOSS: None}),
        REJECTED,
        "lacks 'eval-loss'",
    ),
    "eval-accuracy 1.5": (
        eval_metrics(**{contract.METRIC_EVAL_ACCURACY: 1.5}),
        REJECTED,
        "eval-accuracy",
    ),
    "eval-accuracy -0": (
        eval_metrics(**{contract.METRIC_EVAL_ACCURACY: -0.01}),
        REJECTED,
        "eval-accuracy",
    ),
    "eval-accuracy bool": (
        eval_metrics(**{contract.METRIC_EVAL_ACCURACY: True}),
        REJECTED,
        "eval-accuracy",
    ),
    "num-examples 2**63": (
        eval_metrics(**{contract.METRIC_NUM_EXAMPLES: 2**63}),
        REJECTED,
        "num-examples",
    ),
    "partition-id 2**31": (
        eval_metrics(**{contract.METRIC_PARTITION_ID: 2**31}),
        REJECTED,
        "partition-id",
    ),
    "error with a long reason": (error(7, "B" * 100_000), FAILED, "chars)"),
    "reply to another round": (rewired(group_id="0"), REJECTED, "a reply to round 0"),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_a_hostile_evaluate_reply_is_recorded_and_not_averaged(tmp_path, case):
    hostile, status, reason = EVALUATE_CASES[case]
    grid = HostileGrid(hostile, on="evaluate")
    report = run(tmp_path, grid)
    result = row(report, grid)
    assert result.status == OK  # its training was fine
    assert result.eval_status == status
    assert reason in result.reason and len(result.reason) <= MAX_REASON_CHARS + 60
    assert math.isfinite(report.rounds[0].federated_eval_loss)
    assert 0 <= report.rounds[0].federated_eval_accuracy <= 1


def test_a_huge_evaluate_claim_is_clipped(tmp_path):
    grid = HostileGrid(
        eval_metrics(**{contract.METRIC_NUM_EXAMPLES: BIG, contract.METRIC_EVAL_ACCURACY: 0.0}),
        on="evaluate",
    )
    report = run(tmp_path, grid, max_examples_ratio=1.0)
    result = row(report, grid)
    assert result.eval_status == OK
    assert result.claimed_eval_num_examples == BIG and result.eval_num_examples == 5
    assert "evaluate:" in result.num_examples_note
    # Five equal weights: the liar's 0.0 counts for one fifth, not for everything.
    others = [
        c.eval_accuracy for c in report.rounds[0].clients if int(c.node_id) != grid.hostile_node
    ]
    assert report.rounds[0].federated_eval_accuracy == pytest.approx(sum(others) / NUM_CLIENTS)


def test_the_full_report_writer_renders_hostile_rows(tmp_path):
    # report.html and the CSV files, not only report.json, take whatever a client sent.
    grid = HostileGrid(error(2**62, "<script>alert(1)</script>\x00" + "x" * 5000))
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=1))
    report = run_rounds_on_grid(grid, config)
    assert report.status == "completed"
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    clients_csv = (tmp_path / "run" / "clients.csv").read_text()
    assert "client error 4611686018427387904" in clients_csv
