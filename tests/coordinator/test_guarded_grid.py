"""A deployment reply that Flower cannot decode fails its client, not the ServerApp's run.

``UndecodableGrid`` stands for a SuperLink's HttpGrid: replies come back from
``pull_messages`` only, and one node's reply raises there as Flower's inflating of a device's
bytes raises (a MetricRecord body that is not protobuf: ``DecodeError``). Pulled with others,
it takes them down with it, as HttpGrid's single loop does.
"""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from coordinator.config import FederationConfig
from coordinator.guarded_grid import GuardedGrid, guard_replies
from coordinator.server_app import run_rounds_on_grid
from protos.report_pb2 import FAILED
from tests.coordinator.test_server_app import (
    NUM_CLIENTS,
    InProcessGrid,
    run_config,
    write_json_only,
)


class UndecodableGrid(InProcessGrid):
    """Replies through push/pull; ``bad_node``'s raises while it is pulled (all pulled with it)."""

    def __init__(self, node_id_seed: int, bad_partition: int):
        super().__init__(node_id_seed)
        self.bad_node = list(self.clients)[bad_partition]
        self.ready: dict[str, object] = {}
        self.pulls = 0
        self._next_id = 0

    def push_messages(self, messages):
        ids = []
        for message in messages:
            self._next_id += 1
            message.metadata.__dict__["_message_id"] = f"m{self._next_id}"
            self.ready[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        replies = []
        for message_id in list(message_ids):
            message = self.ready.pop(message_id, None)  # confirmed: gone from the SuperLink
            if message is None:
                continue
            if message.metadata.dst_node_id == self.bad_node:
                raise DecodeError("Error parsing message with type 'flwr.proto.MetricRecord'")
            replies.append(self.clients[message.metadata.dst_node_id](message))
        return replies

    def send_and_receive(self, messages, *, timeout=None):
        # What HttpGrid does: push, then pull every id in one call (no sleep: all are ready).
        ids = self.push_messages(messages)
        return self.pull_messages(ids)


def test_without_the_guard_one_undecodable_reply_aborts_the_run(tmp_path):
    config = FederationConfig.from_run_config(run_config(tmp_path))
    with pytest.raises(DecodeError):
        run_rounds_on_grid(
            UndecodableGrid(3, bad_partition=2), config, write_report=write_json_only
        )


def test_with_the_guard_it_fails_only_its_client_and_the_run_goes_on(tmp_path):
    inner = UndecodableGrid(3, bad_partition=2)
    config = FederationConfig.from_run_config(run_config(tmp_path))
    report = run_rounds_on_grid(
        GuardedGrid(inner, poll_seconds=0), config, write_report=write_json_only
    )
    assert report.status == "completed" and report.engine == "deployment"
    for round_report in report.rounds:
        assert round_report.clients_succeeded == NUM_CLIENTS - 1
        (failed,) = [client for client in round_report.clients if client.status == FAILED]
        assert int(failed.node_id) == inner.bad_node
        assert "could not be decoded (DecodeError" in failed.reason


def test_the_guard_keeps_the_bits_of_a_run_without_bad_replies(tmp_path):
    # Pulling one reply at a time changes neither which replies come nor their order.
    config = FederationConfig.from_run_config(run_config(tmp_path / "plain"))
    plain = run_rounds_on_grid(InProcessGrid(5), config, write_report=write_json_only)
    config = FederationConfig.from_run_config(run_config(tmp_path / "guarded"))
    inner = UndecodableGrid(5, bad_partition=0)
    inner.bad_node = -1  # nobody misbehaves
    guarded = run_rounds_on_grid(
        GuardedGrid(inner, poll_seconds=0), config, write_report=write_json_only
    )
    assert guarded.final_model_sha256 == plain.final_model_sha256 != ""


def test_only_grids_whose_replies_arrive_as_bytes_are_wrapped(tmp_path):
    class HttpGrid(UndecodableGrid):  # named as Flower's SuperLink grid
        pass

    inner = HttpGrid(1, bad_partition=0)
    assert isinstance(guard_replies(inner), GuardedGrid)
    assert guard_replies(guard_replies(inner)).inner is inner  # not wrapped twice
    plain = UndecodableGrid(1, bad_partition=0)  # in-process replies: nothing to inflate
    assert guard_replies(plain) is plain
    # run_rounds_on_grid guards a SuperLink's grid itself: the run goes on.
    grid = HttpGrid(3, bad_partition=1)
    config = FederationConfig.from_run_config(run_config(tmp_path, num_rounds=1))
    report = run_rounds_on_grid(grid, config, write_report=write_json_only)
    assert report.status == "completed" and report.rounds[0].clients_failed == 1


def test_a_reply_never_pushed_through_the_guard_still_gets_an_error_reply():
    inner = UndecodableGrid(1, bad_partition=0)
    grid = GuardedGrid(inner, poll_seconds=0)

    def raising(message_ids):
        raise ValueError("object body length mismatch")

    inner.pull_messages = raising
    (reply,) = grid.pull_messages(["elsewhere"])
    assert reply.has_error() and reply.metadata.reply_to_message_id == "elsewhere"
    assert "object body length mismatch" in reply.error.reason
    assert np.isfinite(reply.metadata.created_at)
