"""A small RunReport for report tests: rounds of a few clients, failures and rejections included.

Figures are made up but consistent (round totals are the sums of their clients), and chosen to
be awkward where that matters: a NaN delta norm, a reason with HTML and CSV special characters.
"""

from __future__ import annotations

import math

from google.protobuf import struct_pb2, timestamp_pb2

from protos.report_pb2 import FAILED, OK, REJECTED, ClientResult, RoundReport, RunReport

TRICKY_REASON = 'delta "dense_0.weight" norm 1e9 > bound 100, <script>x</script>; a,b'


def make_client(round_number: int, index: int, status: int = OK, **fields) -> ClientResult:
    """One client's result; ``fields`` override the made-up defaults."""
    client = ClientResult(
        node_id=f"node-{index:02d}",
        partition_id=index,
        status=status,
        num_examples=100 + 10 * index,
        train_loss=2.0 / round_number + 0.01 * index,
        kernel_seconds=0.010 + 0.002 * index + 0.001 * round_number,
        fuel_used=1_000_000 + index,
        bytes_uploaded=11_000 + index,
        bytes_downloaded=11_500,
        delta_norm=1.0 / round_number + 0.1 * index,
        cosine_to_update=0.9 - 0.05 * index,
        aggregation_weight=0.0,
        selected=status == OK,
        aggregation_note="weighted mean" if status == OK else "",
        eval_loss=1.5 / round_number,
        eval_accuracy=min(0.99, 0.5 + 0.15 * round_number),
        eval_num_examples=20,
        eval_status=OK,
    )
    if status == FAILED:
        client.reason = "ClientAppException: sandbox trap: out of fuel"
        client.delta_norm = 0.0
        client.bytes_uploaded = 300
        client.eval_status = FAILED
    for name, value in fields.items():
        setattr(client, name, value)
    return client


def make_round(round_number: int, clients: list[ClientResult]) -> RoundReport:
    """A round whose totals are the sums of its ``clients``."""
    ok = [c for c in clients if c.status == OK]
    total_examples = sum(c.num_examples for c in ok)
    for client in ok:
        client.aggregation_weight = client.num_examples / total_examples
    evaluated = [c for c in clients if c.eval_status == OK]
    eval_examples = sum(c.eval_num_examples for c in evaluated)
    return RoundReport(
        round=round_number,
        clients_sampled=len(clients),
        clients_succeeded=len(ok),
        clients_failed=sum(c.status == FAILED for c in clients),
        clients_rejected=sum(c.status == REJECTED for c in clients),
        train_loss=sum(c.train_loss * c.num_examples for c in ok) / total_examples,
        federated_eval_loss=sum(c.eval_loss * c.eval_num_examples for c in evaluated)
        / eval_examples,
        federated_eval_accuracy=sum(c.eval_accuracy * c.eval_num_examples for c in evaluated)
        / eval_examples,
        central_loss=1.2 / round_number,
        central_accuracy=[0.62, 0.85, 0.93, 0.95, 0.96][min(round_number, 5) - 1],
        bytes_uploaded=sum(c.bytes_uploaded for c in clients),
        bytes_downloaded=sum(c.bytes_downloaded for c in clients),
        wall_seconds=0.8 + 0.1 * round_number,
        update_norm=0.5 / round_number,
        sampled_node_ids=[c.node_id for c in clients],
        clients=clients,
    )


def make_report(
    num_rounds: int = 3, num_clients: int = 4, *, status: str = "completed"
) -> RunReport:
    """A run of ``num_rounds`` rounds of ``num_clients`` clients.

    Round 2 has one FAILED client and one REJECTED client (norm over the bound, with a reason
    full of characters that HTML and CSV must escape); round 3 has a REJECTED client whose
    delta norm is NaN. As the coordinator does, the final figures are NaN unless ``status`` is
    "completed", and a "failed" run's last round has NaN evaluation figures.
    """
    rounds = []
    for round_number in range(1, num_rounds + 1):
        clients = [make_client(round_number, index) for index in range(num_clients)]
        if round_number == 2 and num_clients >= 3:
            clients[1] = make_client(round_number, 1, FAILED)
            clients[2] = make_client(
                round_number, 2, REJECTED, reason=TRICKY_REASON, delta_norm=1e9, selected=False
            )
        if round_number == 3 and num_clients >= 2:
            clients[0] = make_client(
                round_number,
                0,
                REJECTED,
                delta_norm=math.nan,
                reason="delta has non-finite values",
                selected=False,
            )
        rounds.append(make_round(round_number, clients))
    finished = status == "completed" and bool(rounds)
    config = struct_pb2.Struct()
    config.update(
        {
            "scenario": "digits-mlp-dirichlet",
            "num-rounds": num_rounds,
            "num-partitions": num_clients,
            "strategy": "fedavg",
            "model": "mlp:64-32-10",
            "training": {"lr": 0.05, "epochs": 1, "batch-size": 32},
            "seed": 7,
        }
    )
    if status == "failed" and rounds:
        # What the coordinator records for a round that produced no model: nothing evaluated.
        for name in (
            "federated_eval_loss",
            "federated_eval_accuracy",
            "central_loss",
            "central_accuracy",
        ):
            setattr(rounds[-1], name, math.nan)
    report = RunReport(
        scenario="digits-mlp-dirichlet",
        seed=7,
        status=status,
        engine="simulation",
        config=config,
        kernel_sha256="ab" * 32,
        num_rounds=num_rounds,
        total_bytes_uploaded=sum(r.bytes_uploaded for r in rounds),
        total_bytes_downloaded=sum(r.bytes_downloaded for r in rounds),
        final_model_sha256="cd" * 32,
        # Like the coordinator: NaN until the run completes.
        final_central_loss=rounds[-1].central_loss if finished else math.nan,
        final_central_accuracy=rounds[-1].central_accuracy if finished else math.nan,
        final_federated_eval_accuracy=rounds[-1].federated_eval_accuracy if finished else math.nan,
        rounds=rounds,
    )
    report.versions.sandflower = "0.1.0"
    report.versions.flwr = "1.42.0"
    report.versions.wasmtime = "50.0.1"
    report.versions.python = "3.11.2"
    report.started_at.CopyFrom(timestamp_pb2.Timestamp(seconds=1_795_000_000))
    if status != "running":
        report.finished_at.CopyFrom(timestamp_pb2.Timestamp(seconds=1_795_000_042))
    return report
