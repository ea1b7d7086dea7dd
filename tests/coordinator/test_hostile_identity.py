"""A reply that claims to be another client: another partition than the one its node is.

The coordinator knows each node's partition (the local engine's grid says it; otherwise the
node's first reply, or the round-0 ask, told it) and checks a ``num-examples`` claim against
that partition's size, exempt from the median ratio. Before: every reply's own
``partition-id`` replaced what was known, and its claim was checked against the partition it
named: a node of a 30-example partition claiming to be the 100-example partition 9 counted
for 100 examples (3.3x its weight, and the ratio could not clip it), and moved itself to
partition 9's row, sampling place, device profile and fault labels. Omitting the
partition-id took the claim out of the partition check too. Now such a reply is REJECTED
(the partition a node is cannot change mid-run), and a claim is checked against the node's
known partition whatever the reply says.
"""

from __future__ import annotations

import pytest
from flwr.app import Message
from flwr.app.error import Error
from flwr.supercore.task_identity import TaskIdentity

from coordinator.config import FederationConfig
from coordinator.server_app import run_rounds_on_grid
from protos import contract
from protos.report_pb2 import OK, REJECTED
from tests.coordinator.test_hostile_replies import HOSTILE, HostileGrid, with_metrics
from tests.coordinator.test_server_app import (
    NUM_CLIENTS,
    num_examples,
    run_config,
    write_json_only,
)

BIGGEST = NUM_CLIENTS - 1  # the partition with the most examples


class KnowingGrid(HostileGrid):
    """A grid that knows every node's partition, as the local engine's does."""

    def node_partitions(self) -> dict[int, int]:
        return {node: client.partition_id for node, client in self.clients.items()}


def _run(tmp_path, grid):
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=1))
    report = run_rounds_on_grid(
        grid,
        config,
        write_report=write_json_only,
        expected_num_examples=lambda partition, purpose: num_examples(partition),
        check_partitions=lambda partitions: None,
    )
    assert report.status == "completed", report.error
    rows = [c for c in report.rounds[0].clients if int(c.node_id) == grid.hostile_node]
    assert len(rows) == 1
    return report, rows[0]


def _sha_of(tmp_path_factory, hostile) -> str:
    with pytest.MonkeyPatch.context() as patch:
        for name in ("_run_id", "_node_id", "_task_id"):
            patch.setattr(TaskIdentity, name, 1)
        report, _ = _run(tmp_path_factory.mktemp("baseline"), KnowingGrid(hostile))
    return report.final_model_sha256


@pytest.fixture(scope="module")
def honest_sha(tmp_path_factory):
    return _sha_of(tmp_path_factory, lambda m, r: [r])


@pytest.fixture(scope="module")
def without_sha(tmp_path_factory):
    """The model when partition HOSTILE's train reply is not aggregated (an error reply)."""
    return _sha_of(tmp_path_factory, lambda m, r: [Message(Error(1, "down"), reply_to=m)])


@pytest.mark.parametrize("grid_class", [KnowingGrid, HostileGrid], ids=["told", "learned"])
def test_a_train_reply_claiming_another_partition_is_rejected(tmp_path, grid_class, without_sha):
    claim = {
        contract.METRIC_PARTITION_ID: BIGGEST,
        contract.METRIC_NUM_EXAMPLES: num_examples(BIGGEST),
    }
    grid = grid_class(with_metrics(**claim))
    report, row = _run(tmp_path, grid)
    assert row.status == REJECTED
    assert row.reason == (
        f"the reply claims partition {BIGGEST}, but node {grid.hostile_node} is partition {HOSTILE}"
    )
    assert row.partition_id == HOSTILE and row.aggregation_weight == 0
    # The true partition 9 keeps its own row and weight.
    biggest = [c for c in report.rounds[0].clients if c.partition_id == BIGGEST]
    assert len(biggest) == 1 and biggest[0].status == OK
    assert report.final_model_sha256 == without_sha


def test_a_reply_that_omits_its_partition_is_checked_against_the_known_one(tmp_path, honest_sha):
    claim = {contract.METRIC_PARTITION_ID: None, contract.METRIC_NUM_EXAMPLES: 10**6}
    grid = KnowingGrid(with_metrics(**claim))
    report, row = _run(tmp_path, grid)
    assert row.status == OK and row.partition_id == HOSTILE
    assert row.claimed_num_examples == 10**6 and row.num_examples == num_examples(HOSTILE)
    assert "the partition's size" in row.num_examples_note
    assert report.final_model_sha256 == honest_sha


def test_an_evaluate_reply_claiming_another_partition_is_rejected(tmp_path):
    grid = KnowingGrid(with_metrics(**{contract.METRIC_PARTITION_ID: BIGGEST}), on="evaluate")
    _, row = _run(tmp_path, grid)
    assert row.eval_status == REJECTED
    assert f"claims partition {BIGGEST}" in row.reason


def test_an_honest_run_that_knows_its_partitions_keeps_its_bits(tmp_path, honest_sha):
    report, row = _run(tmp_path, KnowingGrid(lambda m, r: [r]))
    assert row.status == OK and report.final_model_sha256 == honest_sha


def test_a_grid_that_knows_the_partitions_is_asked_even_with_full_participation(tmp_path):
    # Full participation needs no partition before round 1 (round 1's replies tell them), but
    # a reply's word is what a liar forges: a grid that knows them is asked before round 1,
    # so a node lying from its very first reply is caught there too.
    claim = {
        contract.METRIC_PARTITION_ID: BIGGEST,
        contract.METRIC_NUM_EXAMPLES: num_examples(BIGGEST),
    }
    grid = KnowingGrid(with_metrics(**claim))
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=1))
    assert config.fraction_train == 1.0
    report = run_rounds_on_grid(
        grid,
        config,
        write_report=write_json_only,
        expected_num_examples=lambda partition, purpose: num_examples(partition),
    )
    rows = [c for c in report.rounds[0].clients if int(c.node_id) == grid.hostile_node]
    assert [row.status for row in rows] == [REJECTED]
    assert f"claims partition {BIGGEST}, but node {grid.hostile_node}" in rows[0].reason
