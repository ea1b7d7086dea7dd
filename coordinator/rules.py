"""What the delta adapter must know about each Flower rule it drives.

:class:`coordinator.strategy.DeltaStrategy` is the same for every rule; what differs lives here:

- which rules scale their step by the server learning rate themselves (FedOpt, FedAvgM);
- which keep a reference model that must be zeros for their pseudo-gradient to be the
  aggregated delta (FedOpt's ``current_arrays``, FedAvgM's);
- how to learn what a selecting rule picked (MultiKrum's ranking, Bulyan's selection rule) and
  turn it into the report's per-client attribution (median, trimmed mean, weighted means);
- how many replies a rule needs, for the hint when it refuses to aggregate (Bulyan);
- that the rule's train-metrics aggregation has nothing to do on the adapter's contents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan, FedAvgM, FedMedian, FedTrimmedAvg, MultiKrum, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt
from flwr.serverapp.strategy.multikrum import select_multikrum
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from . import attribution
from .aggregation import zeros_like


def applies_server_lr_itself(strategy: Strategy) -> bool:
    """Tell whether the strategy scales its step by the server learning rate itself.

    FedOpt (FedAdam, FedYogi, FedAdagrad) takes it as ``eta`` and FedAvgM as
    ``server_learning_rate``; for every other strategy the adapter multiplies the aggregate.
    """
    return isinstance(strategy, FedOpt | FedAvgM)


def prime_reference(strategy: Strategy, global_weights: Mapping[str, np.ndarray]) -> None:
    """Set a server optimizer's reference to zeros.

    Its pseudo-gradient is then the aggregated delta itself. Explicit every round, whatever
    configure_train stored. Rules without a reference (every other one) are left as they are.
    """
    zeros = zeros_like(global_weights)
    if isinstance(strategy, FedOpt):
        strategy.current_arrays = zeros
    elif isinstance(strategy, FedAvgM):
        strategy.current_arrays = ArrayRecord({name: Array(array) for name, array in zeros.items()})


def skip_train_metrics(strategy: Strategy) -> None:
    """Make the rule's train-metrics aggregation return an empty MetricRecord without work.

    The adapter hands a rule contents whose only metric is the weighting key
    (``round_messages.delta_content``), which Flower's default ``aggregate_metricrecords``
    leaves out of its result: it always returned an empty record (its weights are >= 1, so
    it never raised), and the adapter never reads it. Only Flower's default is replaced.
    """
    if getattr(strategy, "train_metrics_aggr_fn", None) is aggregate_metricrecords:
        strategy.train_metrics_aggr_fn = no_train_metrics  # type: ignore[attr-defined]


def no_train_metrics(contents: Sequence[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Return what ``aggregate_metricrecords`` returns when the only metric is the weight."""
    return MetricRecord()


class BulyanSelection:
    """Records which replies Bulyan's selection rule picked in the latest aggregation.

    Bulyan takes its selection rule as a parameter; :meth:`install` wraps it so that the
    picked contents can be told apart afterwards (the attribution needs them).
    """

    def __init__(self) -> None:
        self.picked: list[RecordDict] | None = None

    def install(self, strategy: Bulyan) -> None:
        """Wrap ``strategy``'s selection rule so that each call records what it picked."""
        inner_rule: Callable = strategy.selection_rule

        def recording_rule(contents, num_malicious_nodes, num_nodes_to_select):
            selected = inner_rule(contents, num_malicious_nodes, num_nodes_to_select)
            self.picked = list(selected)
            return selected

        recording_rule.__name__ = getattr(inner_rule, "__name__", "selection_rule")
        strategy.selection_rule = recording_rule


def krum_ranks(strategy: Strategy, contents: Sequence[RecordDict]) -> list[int] | None:
    """MultiKrum's (and Krum's) rank of each reply, best first; None for other rules.

    Computed with Flower's own ``select_multikrum`` over all replies, so the ranking is the one
    the rule's selection follows.
    """
    if not isinstance(strategy, MultiKrum):
        return None
    ordered = select_multikrum(list(contents), strategy.num_malicious_nodes, len(contents))
    rank_of = {id(content): rank for rank, content in enumerate(ordered)}
    return [rank_of[id(content)] for content in contents]


def attribute(
    strategy: Strategy,
    rule_name: str,
    deltas: Sequence[Mapping[str, np.ndarray]],
    contents: Sequence[RecordDict],
    num_examples: Sequence[int],
    *,
    ranks: Sequence[int] | None,
    bulyan_picked: Sequence[RecordDict] | None,
) -> list[attribution.Attribution]:
    """Attribute the aggregate: what ``strategy`` did with each reply, in the order given.

    Parameters
    ----------
    strategy : Strategy
        The Flower rule that aggregated ``contents``.
    rule_name : str
        Its name as the run config gives it (for the notes).
    deltas : sequence of mappings
        The deltas, in the order the rule saw them (the adapter's own references: median and
        trimmed mean pop arrays out of the contents they are given).
    contents : sequence of RecordDict
        The reply contents handed to the rule, in the same order.
    num_examples : sequence of int
        The weights used.
    ranks : sequence of int or None
        :func:`krum_ranks` for MultiKrum and Krum.
    bulyan_picked : sequence of RecordDict or None
        :attr:`BulyanSelection.picked` for Bulyan.

    Returns
    -------
    list of attribution.Attribution
    """
    if isinstance(strategy, MultiKrum):
        if ranks is None:
            raise ValueError(f"{rule_name}: the Krum ranks are needed to attribute its selection")
        return attribution.krum_selection(
            list(ranks), strategy.num_nodes_to_select, list(num_examples), rule_name
        )
    if isinstance(strategy, Bulyan):
        index_of = {id(content): index for index, content in enumerate(contents)}
        order = [index_of[id(content)] for content in bulyan_picked or []]
        return attribution.bulyan(list(deltas), order, strategy.num_malicious_nodes)
    if isinstance(strategy, FedTrimmedAvg):
        return attribution.trimmed_mean(list(deltas), strategy.beta)
    if isinstance(strategy, FedMedian):
        return attribution.median(list(deltas))
    return attribution.num_examples_shares(list(num_examples), rule_name)


def min_replies(strategy: Strategy) -> int:
    """Return the fewest usable replies ``strategy`` aggregates (1: no minimum of its own)."""
    if isinstance(strategy, Bulyan):
        return 4 * strategy.num_malicious_nodes + 3
    return 1


def refusal_hint(strategy: Strategy, num_usable: int) -> str:
    """Why ``strategy`` may have refused ``num_usable`` replies ("" when there is no rule)."""
    if isinstance(strategy, Bulyan):
        return f" (Bulyan needs at least 4 * num_malicious_nodes + 3 = {min_replies(strategy)})"
    return ""
