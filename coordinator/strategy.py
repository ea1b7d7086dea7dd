"""The delta-aware strategy adapter: validate, filter, let Flower's strategy aggregate, record.

Clients reply with DELTAS (local - global). :class:`DeltaStrategy` wraps one of Flower's
strategies (``flwr.serverapp.strategy``) and feeds it only validated deltas, so that Flower's
rule computes ``aggregate(deltas)``; the adapter then applies
``W_next = W + server_lr * aggregate(deltas)`` (:func:`coordinator.aggregation.apply_server_step`).

How each family sees deltas:

- Weighted means (FedAvg, FedProx, MultiKrum's average): linear, so averaging deltas and adding
  them to W equals averaging the clients' weights.
- Robust rules (FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan): coordinate-wise order
  statistics and pairwise distances do not change when every input is shifted by the same W,
  so ``rule(W + delta_i) = W + rule(delta_i)``.
- Server optimizers (FedAdam, FedYogi, FedAdagrad, FedAvgM's momentum) compute their
  pseudo-gradient as ``aggregate - reference``. Before each aggregation the adapter sets that
  reference (``current_arrays``) to ZEROS itself, so the pseudo-gradient is exactly the
  aggregated delta and Flower's output is the server step; their learning rate is the run's
  ``server-lr`` (``eta`` / ``server_learning_rate``), so the adapter adds that step with
  factor 1. The adapter never relies on Flower's configure_train having stored anything.

Sampling is the adapter's own and reproducible: nodes are ordered by partition id (learned from
replies, see :meth:`DeltaStrategy.learn_partitions`), then node id, and drawn with
``np.random.default_rng([seed, round, purpose])``. Replies are handed to Flower in the same
canonical order, so float sums do not depend on arrival order.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
)
from flwr.serverapp import Grid
from flwr.serverapp.exception import AggregationError, InconsistentMessageReplies
from flwr.serverapp.strategy import Bulyan, Strategy

from protos import contract
from protos.report_pb2 import FAILED, OK, REJECTED, ClientResult, RoundReport

from . import attribution, clock, rules
from .aggregation import CosineTo, apply_server_step, l2_norm, weighted_mean
from .device_rounds import DevicePlan, charge_replies, device_instructions
from .round_messages import (
    delta_content,
    instructions,
    message_record,
    reply_metadata,
    work_done,
)
from .sampling import sample_nodes
from .validation import (
    INT32_MAX,
    INT64_MAX,
    NO_PARTITION,
    EvaluateReply,
    TrainReply,
    WeightPolicy,
    check_evaluate_reply,
    check_train_reply,
    clip_delta,
    record_bytes,
)

logger = logging.getLogger(__name__)

Reply = TypeVar("Reply", TrainReply, EvaluateReply)

PURPOSE_TRAIN = 0
PURPOSE_EVALUATE = 1
NODE_WAIT_SECONDS = 1.0

# (partition id, "train" | "evaluate") -> the examples that partition holds, or None: unknown.
ExpectedExamples = Callable[[int, str], int | None]
# (partition id, round) -> (injected fault, attack): ground truth from a simulation's faults.
FaultLabels = Callable[[int, int], tuple[str, str]]


class RoundFailedError(RuntimeError):
    """A round produced no usable aggregate (no valid reply, or the rule refused the replies).

    The round's report (every client's status and reason) is in ``round_report``.
    """

    def __init__(self, server_round: int, reason: str, round_report: RoundReport) -> None:
        super().__init__(f"round {server_round}: {reason}")
        self.server_round = server_round
        self.reason = reason
        self.round_report = round_report


class _NoAggregate(Exception):
    """The rule made no aggregate of a round's usable replies (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StrategyStateError(RuntimeError):
    """The adapter was asked to aggregate a round it did not configure."""


@dataclass
class _RoundState:
    """What the adapter keeps between configuring a round and aggregating its replies."""

    global_weights: dict[str, np.ndarray]
    train_nodes: list[int]
    bytes_per_train_message: int
    started: float
    report: RoundReport = field(default_factory=RoundReport)
    evaluate_nodes: list[int] = field(default_factory=list)
    bytes_per_evaluate_message: int = 0
    # Device simulation: what the round sent each device (coordinator/device_rounds.py).
    device_plan: DevicePlan = field(default_factory=DevicePlan)
    # Train replies validated as they arrived (:meth:`DeltaStrategy.receive_train_reply`):
    # id(message) -> (the message, its validation, its work metrics).
    received: dict[int, tuple[Message, TrainReply, tuple[int, int] | None]] = field(
        default_factory=dict
    )
    # The rule's content of each OK reply, built on arrival: id(delta) -> (the delta, the
    # num-examples it was built with, the content); reused only for that delta and count.
    contents: dict[int, tuple[Mapping[str, np.ndarray], int, Message]] = field(default_factory=dict)


class DeltaStrategy(Strategy):
    """Validates delta replies and delegates their aggregation to a Flower strategy.

    Parameters
    ----------
    flower_strategy : one of Flower's strategies, built with
        :func:`coordinator.flower_strategies.build_flower_strategy`.
    seed : the run seed; sampling derives from ``(seed, round)``.
    server_lr : W_next = W + server_lr * aggregate(deltas) (server optimizers apply it
        themselves as their own learning rate).
    max_delta_norm : replies whose delta has a larger L2 norm are rejected.
    fraction_train, fraction_evaluate : sampling fractions.
    rule_name : the strategy's name as the run config gives it (for report notes).
    devices : the simulated devices (clock, deadline, straggler policy); None: none.
    """

    def __init__(
        self,
        flower_strategy: Strategy,
        *,
        seed: int,
        server_lr: float,
        max_delta_norm: float,
        fraction_train: float,
        fraction_evaluate: float,
        rule_name: str = "",
        clip_delta_norm: float = math.inf,
        weight_policy: WeightPolicy | None = None,
        expected_num_examples: ExpectedExamples | None = None,
        fault_labels: FaultLabels | None = None,
        devices: clock.DeviceSimulation | None = None,
    ) -> None:
        self.flower_strategy = flower_strategy
        self.devices = devices
        self.sim_elapsed_seconds = 0.0
        self.clip_delta_norm = float(clip_delta_norm)
        self.weight_policy = weight_policy or WeightPolicy()
        self.expected_num_examples = expected_num_examples
        self.fault_labels = fault_labels
        self.seed = int(seed)
        self.server_lr = float(server_lr)
        self.max_delta_norm = float(max_delta_norm)
        self.fraction_train = float(fraction_train)
        self.fraction_evaluate = float(fraction_evaluate)
        self.rule_name = rule_name or type(flower_strategy).__name__.lower()
        self.min_train_nodes = int(getattr(flower_strategy, "min_train_nodes", 1))
        self.min_evaluate_nodes = int(getattr(flower_strategy, "min_evaluate_nodes", 1))
        self.min_available_nodes = int(getattr(flower_strategy, "min_available_nodes", 1))
        self.node_partitions: dict[int, int] = {}
        self._rounds: dict[int, _RoundState] = {}
        # Bulyan takes its selection rule as a parameter: wrapped to learn what it picked.
        self._bulyan_selection = rules.BulyanSelection()
        if isinstance(flower_strategy, Bulyan):
            self._bulyan_selection.install(flower_strategy)
        rules.skip_train_metrics(flower_strategy)

    # -- Strategy interface -------------------------------------------------------------------
    def summary(self) -> None:
        """Log the adapter's settings and the Flower rule's own summary."""
        logger.info(
            "DeltaStrategy over %s: server_lr=%s max_delta_norm=%s fractions train=%s "
            "evaluate=%s seed=%s",
            type(self.flower_strategy).__name__,
            self.server_lr,
            self.max_delta_norm,
            self.fraction_train,
            self.fraction_evaluate,
            self.seed,
        )
        self.flower_strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes for ``server_round`` and send each the global arrays and the config."""
        node_ids = self._wait_for_nodes(grid)
        offline: list[int] = []
        if self.devices is not None:
            # An offline device cannot be asked: only the online ones are sampled.
            online = {node for node in node_ids if self._device_round(server_round, node)[0]}
            offline = [node for node in node_ids if node not in online]
            node_ids = [node for node in node_ids if node in online]
        sampled = sample_nodes(
            node_ids,
            fraction=self.fraction_train,
            min_nodes=self.min_train_nodes,
            seed=self.seed,
            server_round=server_round,
            purpose=PURPOSE_TRAIN,
            order_key=self.node_order_key,
        )
        record = message_record(arrays, config, server_round)
        global_weights = {name: np.asarray(array.numpy()) for name, array in arrays.items()}
        state = _RoundState(
            global_weights=global_weights,
            train_nodes=sampled,
            bytes_per_train_message=record_bytes(record),
            started=time.perf_counter(),
        )
        state.report.round = server_round
        state.report.clients_sampled = len(sampled)
        state.report.sampled_node_ids.extend(str(node_id) for node_id in sampled)
        if self.devices is not None:
            state.report.clients_offline = len(offline)
        self._rounds[server_round] = state
        logger.info(
            "round %d: training on %d of %d nodes", server_round, len(sampled), len(node_ids)
        )
        if self.devices is not None:
            devices = self.devices
            messages, state.device_plan = device_instructions(
                devices,
                record,
                state.global_weights,
                sampled,
                server_round,
                profile_of=lambda node_id: devices.profile(self.partition_of(node_id)),
                speed_of=lambda node_id: self._device_round(server_round, node_id)[1],
            )
            return messages
        return instructions(record, sampled, MessageType.TRAIN, server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate the replies, aggregate the OK deltas with Flower, return the next model.

        Raises
        ------
        RoundFailedError
            When no reply is usable or the Flower rule raises on the usable ones (a rule that
            returns no aggregate keeps the model: the round's ``model_unchanged_reason``).
        StrategyStateError
            When ``server_round`` was not configured by :meth:`configure_train`.
        """
        state = self._state(server_round)
        replies = list(replies)
        # Each reply's validation and work metrics: those :meth:`receive_train_reply` made as
        # it arrived, else made now (the same calls on the same message: the same results).
        received = [self._received_or_check(state, message, server_round) for message in replies]
        state.received.clear()
        work: dict[int, tuple[int, int] | None] = {}
        for message, (_, done) in zip(replies, received, strict=True):
            # The first reply of a node counts (as in _admit): a duplicate cannot overwrite it.
            work.setdefault(int(message.metadata.src_node_id), done)
        checked = _admit([reply for reply, _ in received], state.train_nodes)
        checked += [
            TrainReply(node_id, FAILED, "no reply before the timeout")
            for node_id in sorted(set(state.train_nodes) - {reply.node_id for reply in checked})
        ]
        checked = self._check_partition_claims(checked)
        self._remember_partitions(checked)
        checked.sort(key=lambda reply: self.node_order_key(reply.node_id))
        claimed = {reply.node_id: reply.num_examples for reply in checked}
        # Nodes whose reply had content: their claims were read (measured), even where the
        # device clock drops them below as stragglers.
        replied = {reply.node_id for reply in checked if reply.status != FAILED}
        device_results: dict[int, dict] = {}
        if self.devices is not None:
            # The clock first: a straggler it drops is FAILED before weights are bounded.
            checked, device_results = charge_replies(
                self.devices, state.device_plan, checked, work, state.report
            )
            self.sim_elapsed_seconds += state.report.sim_round_seconds
            state.report.sim_elapsed_seconds = self.sim_elapsed_seconds
        checked, weight_notes = self._bound_weights(checked, "train")
        checked, clip_factors = self._clip_deltas(checked)
        usable = [reply for reply in checked if reply.ok]
        report = state.report
        report.clients_clipped = sum(factor < 1.0 for factor in clip_factors.values())
        report.clients_weight_clipped = sum(bool(note) for note in weight_notes.values())
        report.clients_succeeded = len(usable)
        report.clients_failed = sum(reply.status == FAILED for reply in checked)
        report.clients_rejected = sum(reply.status == REJECTED for reply in checked)
        report.train_loss = weighted_mean(
            [reply.train_loss for reply in usable], [reply.num_examples for reply in usable]
        )
        clients: dict[int, ClientResult] = {}
        for reply in checked:
            # add() returns the message held by the report: later writes land in the report.
            clients[reply.node_id] = report.clients.add()
            clients[reply.node_id].CopyFrom(
                _client_result(
                    reply, state.bytes_per_train_message, replied=reply.node_id in replied
                )
            )
            # An error reply carries no partition id; an earlier reply may have told it.
            clients[reply.node_id].partition_id = _int32(self.partition_of(reply.node_id))
            if reply.node_id in replied:
                clients[reply.node_id].claimed_num_examples = _int64(claimed[reply.node_id])
            clients[reply.node_id].num_examples_note = weight_notes.get(reply.node_id, "")
            clients[reply.node_id].clip_factor = clip_factors.get(reply.node_id, 1.0)
            self._label(clients[reply.node_id], reply.node_id, server_round)
            for name, value in device_results.get(reply.node_id, {}).items():
                setattr(clients[reply.node_id], name, value)
        report.bytes_downloaded += state.bytes_per_train_message * len(state.train_nodes)
        report.bytes_uploaded = _int64(sum(reply.bytes_uploaded for reply in checked))
        if (
            not usable
            and self.devices is not None
            and (report.clients_dropped or not state.train_nodes)
        ):
            # Every client was offline or too slow: the round ends at its deadline with the
            # model unchanged (FedAvg's fate at a high straggler share), not as a failure.
            why = (
                "no client made the device deadline"
                if state.train_nodes
                else "every device was offline"
            )
            return self._model_unchanged(state, why), None
        if not usable:
            reasons = (
                "; ".join(f"{self._client_name(r.node_id)}: {r.reason}" for r in checked)
                or "no node sampled"
            )
            raise RoundFailedError(server_round, f"no usable reply ({reasons})", report)

        try:
            update, notes = self._aggregate(server_round, state, usable)
        except _NoAggregate as refused:
            # A rule that needs more replies than are usable (Bulyan: 4f + 3) makes no
            # aggregate. The round keeps the model, as Flower's own Strategy.start does, rather
            # than ending the run: otherwise one failed or rejected client, hostile or not,
            # ended every run that sampled exactly the rule's minimum.
            for reply in usable:
                clients[
                    reply.node_id
                ].aggregation_note = "not aggregated: the rule made no aggregate this round"
            return self._model_unchanged(state, refused.reason), None
        scale = 1.0 if rules.applies_server_lr_itself(self.flower_strategy) else self.server_lr
        new_weights = apply_server_step(state.global_weights, update, scale)
        applied = {name: scale * np.asarray(update[name], np.float64) for name in update}
        report.update_norm = l2_norm(applied)
        cosine_to_update = CosineTo(applied)
        for reply in checked:
            delta = reply.delta if reply.delta is not None else reply.rejected_delta
            if delta is not None:
                clients[reply.node_id].cosine_to_update = cosine_to_update(delta)
        for reply, note in zip(usable, notes, strict=True):
            result = clients[reply.node_id]
            result.aggregation_weight = note.weight
            result.selected = note.selected
            result.aggregation_note = note.note
        arrays = ArrayRecord({name: Array(array) for name, array in new_weights.items()})
        metrics = (
            MetricRecord({contract.METRIC_TRAIN_LOSS: float(report.train_loss)})
            if math.isfinite(report.train_loss)
            else MetricRecord()
        )
        return arrays, metrics

    def receive_train_reply(self, server_round: int, message: Message) -> None:
        """Validate one train reply of ``server_round`` as it arrives; keep the result.

        A grid that streams its replies (the local engine's ``on_reply``) calls this while the
        other clients still train, so that :meth:`aggregate_train` finds the validation done
        instead of doing it after the last reply, when the workers wait for the next batch.
        Only the per-reply work moves: which replies are admitted, in which order, and
        everything that depends on the whole round stays in :meth:`aggregate_train`, which
        uses a kept result only for the very message object it was made from.
        """
        state = self._rounds.get(server_round)
        if state is None:
            return  # not a round this adapter configured: aggregate_train will say so
        try:
            checked, done = self._check_train(state, message, server_round)
        except Exception:
            # Never into the grid's receive loop (the other replies are still coming): not
            # kept, so aggregate_train checks this message again and fails as it always did.
            return
        state.received[id(message)] = (message, checked, done)
        if checked.ok and checked.delta is not None:
            # The copy Flower's rule will read: made now, unless the aggregation clips this
            # delta or its weight (then it is made again from what the rule must see).
            state.contents[id(checked.delta)] = (
                checked.delta,
                checked.num_examples,
                _rule_message(checked, server_round),
            )

    def _received_or_check(
        self, state: _RoundState, message: Message, server_round: int
    ) -> tuple[TrainReply, tuple[int, int] | None]:
        kept = state.received.get(id(message))
        if kept is not None and kept[0] is message:
            return kept[1], kept[2]
        return self._check_train(state, message, server_round)

    def _check_train(
        self, state: _RoundState, message: Message, server_round: int
    ) -> tuple[TrainReply, tuple[int, int] | None]:
        """One train reply's validation and its (steps done, steps planned) metrics."""
        shapes = {name: array.shape for name, array in state.global_weights.items()}
        checked = check_train_reply(message, shapes, self.max_delta_norm, server_round=server_round)
        return checked, work_done(message)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes for federated evaluation of the model ``arrays``."""
        state = self._state(server_round)
        node_ids = self._wait_for_nodes(grid) if self.fraction_evaluate > 0 else []
        sampled = sample_nodes(
            node_ids,
            fraction=self.fraction_evaluate,
            min_nodes=self.min_evaluate_nodes,
            seed=self.seed,
            server_round=server_round,
            purpose=PURPOSE_EVALUATE,
            order_key=self.node_order_key,
        )
        record = message_record(arrays, config, server_round)
        state.evaluate_nodes = sampled
        state.bytes_per_evaluate_message = record_bytes(record)
        return instructions(record, sampled, MessageType.EVALUATE, server_round)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record each evaluation in the round report; return the weighted means (or None)."""
        state = self._state(server_round)
        checked = _admit(
            [check_evaluate_reply(reply, server_round=server_round) for reply in replies],
            state.evaluate_nodes,
        )
        checked += [
            EvaluateReply(node_id, FAILED, "no reply before the timeout")
            for node_id in sorted(set(state.evaluate_nodes) - {reply.node_id for reply in checked})
        ]
        checked = self._check_partition_claims(checked)
        self._remember_partitions(checked)
        claimed = {reply.node_id: reply.num_examples for reply in checked}
        checked, weight_notes = self._bound_weights(checked, "evaluate")
        report = state.report
        by_node = {int(client.node_id): client for client in report.clients}
        for reply in sorted(checked, key=lambda reply: self.node_order_key(reply.node_id)):
            client = by_node.get(reply.node_id)
            if client is None:  # evaluated but not trained this round
                client = report.clients.add(
                    node_id=str(reply.node_id),
                    partition_id=_int32(self.partition_of(reply.node_id)),
                    clip_factor=1.0,
                )
                self._label(client, reply.node_id, server_round)
                by_node[reply.node_id] = client
            client.eval_status = reply.status
            if reply.status != FAILED:  # a FAILED evaluation measured nothing
                client.eval_loss = reply.eval_loss
                client.eval_accuracy = reply.eval_accuracy
                client.eval_num_examples = _int64(reply.num_examples)
                client.claimed_eval_num_examples = _int64(claimed[reply.node_id])
            if weight_notes.get(reply.node_id):
                prefix = f"{client.num_examples_note}; " if client.num_examples_note else ""
                client.num_examples_note = f"{prefix}evaluate: {weight_notes[reply.node_id]}"
            client.bytes_uploaded = _int64(client.bytes_uploaded + reply.bytes_uploaded)
            client.bytes_downloaded = _int64(
                client.bytes_downloaded + state.bytes_per_evaluate_message
            )
            if reply.status != OK:
                prefix = f"{client.reason}; " if client.reason else ""
                client.reason = f"{prefix}evaluate: {reply.reason}"
        report.bytes_uploaded = _int64(
            report.bytes_uploaded + sum(reply.bytes_uploaded for reply in checked)
        )
        report.bytes_downloaded += state.bytes_per_evaluate_message * len(state.evaluate_nodes)
        usable = [reply for reply in checked if reply.ok]
        weights = [reply.num_examples for reply in usable]
        report.federated_eval_loss = weighted_mean([r.eval_loss for r in usable], weights)
        report.federated_eval_accuracy = weighted_mean([r.eval_accuracy for r in usable], weights)
        if not usable:
            return None
        return MetricRecord(
            {
                contract.METRIC_EVAL_LOSS: report.federated_eval_loss,
                contract.METRIC_EVAL_ACCURACY: report.federated_eval_accuracy,
            }
        )

    # -- for the ServerApp --------------------------------------------------------------------
    def round_report(self, server_round: int) -> RoundReport:
        """Return the report of ``server_round`` so far (wall_seconds: since it was configured)."""
        state = self._state(server_round)
        state.report.wall_seconds = time.perf_counter() - state.started
        return state.report

    def forget_round(self, server_round: int) -> None:
        """Drop the state kept for ``server_round`` (once the ServerApp has reported it)."""
        self._rounds.pop(server_round, None)

    def node_order_key(self, node_id: int) -> tuple[int, int]:
        """Canonical node order: by partition id where one is known, then by node id.

        Node ids are random per run in simulation; partition ids are not, so a run ordered by
        partition samples the same clients every time.
        """
        partition = self.node_partitions.get(node_id, NO_PARTITION)
        return (partition if partition != NO_PARTITION else 2**62, node_id)

    def learn_partitions(
        self, grid: Grid, arrays: ArrayRecord, config: ConfigRecord, *, timeout: float
    ) -> int:
        """Ask every connected node for its partition id (a round-0 evaluation of ``arrays``).

        Needed only when sampling is partial: before any reply the adapter knows node ids
        alone, and those are random per simulation run. Returns the number of nodes that
        reported a partition.

        A grid that knows every node's partition (``grid.node_partitions() -> {node_id:
        partition_id}``, e.g. the local simulation engine's) is asked instead: no message
        is sent, which matters at 100,000 nodes.
        """
        known = grid_partitions(grid)
        if known is not None:
            partitions = {int(node): int(partition) for node, partition in known().items()}
            self.node_partitions.update(partitions)
            return len(partitions)
        node_ids = sorted(self._wait_for_nodes(grid))
        record = message_record(arrays, config, 0)
        replies = grid.send_and_receive(
            instructions(record, node_ids, MessageType.EVALUATE, 0), timeout=timeout
        )
        checked = [check_evaluate_reply(reply) for reply in replies]
        self._remember_partitions(checked)
        return sum(reply.partition_id != NO_PARTITION for reply in checked)

    # -- the simulated device clock (coordinator/clock.py, coordinator/device_rounds.py) ------
    def _device_round(self, server_round: int, node_id: int) -> tuple[bool, float]:
        assert self.devices is not None
        return self.devices.round_state(self.seed, server_round, self.partition_of(node_id))

    # -- internals ----------------------------------------------------------------------------
    def _state(self, server_round: int) -> _RoundState:
        if server_round not in self._rounds:
            raise StrategyStateError(
                f"round {server_round} was not configured (configure_train was not called for it)"
            )
        return self._rounds[server_round]

    def _wait_for_nodes(self, grid: Grid) -> list[int]:
        while len(node_ids := list(grid.get_node_ids())) < self.min_available_nodes:
            logger.info(
                "waiting for nodes: %d connected, %d required",
                len(node_ids),
                self.min_available_nodes,
            )
            time.sleep(NODE_WAIT_SECONDS)
        return node_ids

    def _client_name(self, node_id: int) -> str:
        partition = self.partition_of(node_id)
        return f"node {node_id}" + (
            f" (partition {partition})" if partition != NO_PARTITION else ""
        )

    def partition_of(self, node_id: int) -> int:
        """Return the node's partition id as last reported, or -1 when none is known."""
        return self.node_partitions.get(node_id, NO_PARTITION)

    def _check_partition_claims(self, replies: list[Reply]) -> list[Reply]:
        """Reject a reply that names another partition than the one its node is known to be.

        A node's partition is what the grid said or what the node first reported; a reply
        cannot change it mid-run. Trusting each reply's ``partition-id`` let a node take
        another partition's size as the bound of its ``num-examples`` claim (exempt from the
        median ratio), and that partition's row, sampling place, device and fault labels.
        """
        checked: list[Reply] = []
        for reply in replies:
            known = self.node_partitions.get(reply.node_id, NO_PARTITION)
            if NO_PARTITION not in (known, reply.partition_id) and reply.partition_id != known:
                reason = (
                    f"the reply claims partition {reply.partition_id}, but node "
                    f"{reply.node_id} is partition {known}"
                )
                reply = dataclasses.replace(
                    reply, status=REJECTED, reason=reason, partition_id=known, **_no_delta(reply)
                )
            checked.append(reply)
        return checked

    def _remember_partitions(self, replies: Sequence[TrainReply | EvaluateReply]) -> None:
        for reply in replies:
            if reply.partition_id != NO_PARTITION:
                self.node_partitions[reply.node_id] = reply.partition_id

    def _bound_weights(self, checked: list[Reply], purpose: str) -> tuple[list[Reply], dict]:
        """Clip the OK replies' num-examples claims (:class:`WeightPolicy`, known sizes).

        Returns the replies with the weights to use, and a note per clipped node.
        """
        usable = [reply for reply in checked if reply.ok]
        # The node's known partition, not the reply's word: a reply that omits its
        # partition-id is bounded by its partition's size all the same.
        partitions = [self.partition_of(reply.node_id) for reply in usable]
        expected = [
            self.expected_num_examples(partition, purpose)
            if self.expected_num_examples is not None and partition != NO_PARTITION
            else None
            for partition in partitions
        ]
        bounded = self.weight_policy.clip([reply.num_examples for reply in usable], expected)
        replaced: dict[int, Reply] = {}
        notes: dict[int, str] = {}
        for reply, (weight, note) in zip(usable, bounded, strict=True):
            if note:
                replaced[reply.node_id] = dataclasses.replace(reply, num_examples=weight)
                notes[reply.node_id] = note
        return [
            replaced.get(reply.node_id, reply) if reply.ok else reply for reply in checked
        ], notes

    def _clip_deltas(self, checked: list[TrainReply]) -> tuple[list[TrainReply], dict[int, float]]:
        """Scale OK deltas above ``clip_delta_norm`` down to it; the factor per node."""
        factors: dict[int, float] = {}
        out: list[TrainReply] = []
        for reply in checked:
            if reply.ok and reply.delta is not None:
                delta, factor = clip_delta(reply.delta, reply.delta_norm, self.clip_delta_norm)
                factors[reply.node_id] = factor
                if factor < 1.0:
                    reply = dataclasses.replace(reply, delta=delta)
            out.append(reply)
        return out, factors

    def _model_unchanged(self, state: _RoundState, reason: str) -> ArrayRecord:
        """End the round with the global model as it was (a copy), and say why in its report."""
        logger.warning("round %d: %s; the model is unchanged", state.report.round, reason)
        state.report.update_norm = 0.0
        state.report.model_unchanged_reason = reason
        return ArrayRecord(
            {name: Array(array.copy()) for name, array in state.global_weights.items()}
        )

    def _label(self, client: ClientResult, node_id: int, server_round: int) -> None:
        """Mark the faults a simulation injected into this client (ground truth, not a guess)."""
        if self.fault_labels is None:
            return
        fault, attack = self.fault_labels(self.partition_of(node_id), server_round)
        client.injected_fault = fault
        client.attack = attack

    def _aggregate(
        self, server_round: int, state: _RoundState, usable: list[TrainReply]
    ) -> tuple[dict[str, np.ndarray], list[attribution.Attribution]]:
        """Run the Flower rule on the usable deltas; return its output and the attributions."""
        inner = self.flower_strategy
        messages = [_rule_message_of(state, reply, server_round) for reply in usable]
        state.contents.clear()
        contents = [message.content for message in messages]
        # Flower's median and trimmed mean pop arrays out of the replies they are given, so
        # the attribution below needs its own references to the deltas.
        deltas = [reply.delta for reply in usable]
        assert all(delta is not None for delta in deltas)
        ranks = rules.krum_ranks(inner, contents)
        rules.prime_reference(inner, state.global_weights)
        self._bulyan_selection.picked = None
        try:
            aggregated, _ = inner.aggregate_train(server_round, messages)
        except (AggregationError, InconsistentMessageReplies, ValueError) as error:
            raise RoundFailedError(
                server_round, f"{type(inner).__name__} could not aggregate: {error}", state.report
            ) from error
        if aggregated is None:
            raise _NoAggregate(
                f"{type(inner).__name__} returned no aggregate for {len(usable)} usable replies"
                + rules.refusal_hint(inner, len(usable))
            )
        update = {name: np.asarray(array.numpy()) for name, array in aggregated.items()}
        notes = rules.attribute(
            inner,
            self.rule_name,
            deltas,  # type: ignore[arg-type]  # checked not None above
            contents,
            [reply.num_examples for reply in usable],
            ranks=ranks,
            bulyan_picked=self._bulyan_selection.picked,
        )
        return update, notes


def grid_partitions(grid: Grid) -> Callable[[], Mapping[int, int]] | None:
    """Return the grid's ``node_partitions`` (node id -> partition id), if it has one.

    A grid that knows every node's partition (the local simulation engine's) says it for free,
    and its word is the one no reply can forge.
    """
    known = getattr(grid, "node_partitions", None)
    return known if callable(known) else None


def _rule_message_of(state: _RoundState, reply: TrainReply, server_round: int) -> Message:
    """Return the reply Flower's rule gets for ``reply``.

    The one built on arrival when it holds this very delta and weight, else a new one (a
    clipped delta or weight is a new value).
    """
    kept = state.contents.get(id(reply.delta))
    if kept is not None and kept[0] is reply.delta and kept[1] == reply.num_examples:
        return kept[2]
    return _rule_message(reply, server_round)


def _rule_message(reply: TrainReply, server_round: int) -> Message:
    """Build a fresh reply for Flower's rule: the delta and weight only (``delta_content``)."""
    metadata = reply_metadata(reply.node_id, server_round)
    # Flower's typed overloads leave out `metadata`, which Message.__init__ takes.
    return Message(content=delta_content(reply), metadata=metadata)  # type: ignore[call-overload]


def _admit(replies: list[Reply], expected_nodes: Sequence[int]) -> list[Reply]:
    """Reject replies from nodes this round did not ask, and any second reply from a node.

    Each sampled node contributes at most once.
    """
    expected = set(expected_nodes)
    seen: set[int] = set()
    admitted: list[Reply] = []
    for reply in replies:
        if reply.node_id not in expected:
            reply = dataclasses.replace(
                reply,
                status=REJECTED,
                reason="reply from a node not sampled this round",
                **_no_delta(reply),
            )
            admitted.append(reply)
            continue
        if reply.node_id in seen:
            continue  # a duplicate is dropped: the node already has its row
        seen.add(reply.node_id)
        admitted.append(reply)
    return admitted


def _no_delta(reply: Reply) -> dict[str, Any]:
    return {"delta": None} if isinstance(reply, TrainReply) else {}


def _int32(value: int) -> int:
    # Defence in depth: validation already bounds every number; a report must never raise.
    return int(min(max(int(value), -INT32_MAX - 1), INT32_MAX))


def _int64(value: int) -> int:
    return int(min(max(int(value), -INT64_MAX - 1), INT64_MAX))


def _client_result(
    reply: TrainReply, bytes_downloaded: int, *, replied: bool | None = None
) -> ClientResult:
    """Build the report row of one train reply.

    The training figures (examples, loss, kernel time, delta norm) are set only when the
    client ``replied`` with content (default: the reply is not FAILED); fuel only when the
    run metered it (0 fuel is what an unmetered client reports). Unset means not measured:
    an empty cell in clients.csv, null in report.json.
    """
    result = ClientResult(
        node_id=str(reply.node_id),
        partition_id=_int32(reply.partition_id),
        status=reply.status,
        reason=reply.reason,
        bytes_uploaded=_int64(reply.bytes_uploaded),
        bytes_downloaded=_int64(bytes_downloaded),
        kernel_sha256=reply.kernel_sha256,
        aggregation_weight=0.0,
        selected=False,
    )
    if replied if replied is not None else reply.status != FAILED:
        result.num_examples = _int64(reply.num_examples)
        result.train_loss = reply.train_loss
        result.kernel_seconds = reply.kernel_seconds
        result.delta_norm = reply.delta_norm
    if reply.fuel_used > 0:
        result.fuel_used = _int64(reply.fuel_used)
    return result
