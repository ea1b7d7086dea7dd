"""Finite metrics that still break a round: a loss or duration no float32 kernel can produce.

Before: ``train-loss`` / ``eval-loss`` / ``kernel-seconds`` were accepted when finite and
>= 0, so one reply stating ``train-loss = 1e308`` was aggregated and its weighted term
(``1e308 * num-examples``) made the round's train loss (and, for eval-loss, the round's
federated evaluation loss) ``inf`` in the report for every honest client. Now a value above
float32's largest is REJECTED with the metric named, and the round's means stay finite.
"""

from __future__ import annotations

import math

import pytest

from coordinator.validation import FLOAT32_MAX
from protos import contract
from protos.report_pb2 import OK, REJECTED
from tests.coordinator.test_hostile_replies import (
    HostileGrid,
    eval_metrics,
    row,
    run,
    with_metrics,
)

JUST_ABOVE = math.nextafter(FLOAT32_MAX, math.inf)


@pytest.mark.parametrize("value", [1e308, JUST_ABOVE], ids=["1e308", "just above float32"])
@pytest.mark.parametrize("metric", [contract.METRIC_TRAIN_LOSS, contract.METRIC_KERNEL_SECONDS])
def test_a_train_metric_above_float32_is_rejected_and_the_round_stays_finite(
    tmp_path, metric, value
):
    grid = HostileGrid(with_metrics(**{metric: value}))
    report = run(tmp_path, grid)
    result = row(report, grid)
    assert result.status == REJECTED
    assert result.reason == f"{metric!r} must be in [0, 3.40282e+38], given {value:.6g}"
    assert math.isfinite(report.rounds[0].train_loss)


def test_a_train_loss_at_float32_max_is_accepted(tmp_path):
    grid = HostileGrid(with_metrics(**{contract.METRIC_TRAIN_LOSS: FLOAT32_MAX}))
    report = run(tmp_path, grid)
    assert row(report, grid).status == OK
    assert math.isfinite(report.rounds[0].train_loss)


def test_an_eval_loss_above_float32_is_rejected_and_the_round_stays_finite(tmp_path):
    grid = HostileGrid(eval_metrics(**{contract.METRIC_EVAL_LOSS: 1e308}), on="evaluate")
    report = run(tmp_path, grid)
    result = row(report, grid)
    assert result.eval_status == REJECTED
    assert result.reason == "evaluate: 'eval-loss' must be in [0, 3.40282e+38], given 1e+308"
    assert math.isfinite(report.rounds[0].federated_eval_loss)
