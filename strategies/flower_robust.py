"""Flower's own robust strategies over float gradients, in the election-coding harness.

The head-to-head of fl-election against what Flower ships: FedAvg (McMahan et al., 2017),
Krum and MultiKrum (Blanchard et al., NeurIPS 2017), Bulyan (El Mhamdi et al., ICML 2018),
FedMedian and FedTrimmedAvg (Yin et al., ICML 2018). The aggregation is the Flower
strategy's own ``aggregate_train`` from ``flwr.serverapp.strategy``, not a reimplementation.

Protocol (the same for all six, and the same server optimizer as
:class:`~fl_election.strategies.ElectionCoding`): every node holds one partition
(identity allocation, ``k = n``) and computes the float32 gradient of its slice of the
step's global minibatch (``B / n`` samples): one local SGD step, whose update ``-lr * g``
is the gradient up to a scale every one of these aggregators commutes with. The Flower
strategy aggregates the gradients, each handed to it as the reply's only ``ArrayRecord``
with ``num-examples`` in its ``MetricRecord``. That weight is **server-assigned**: the
samples of the step's minibatch the node's row was told to compute on (``B / n`` per
partition it holds, the instruction's ``partition-batch-size``), never the value the node
reports. A node's own ``num-examples`` is only audited (a missing, non-finite, non-integer,
non-positive or larger-than-``B`` value, or one that differs from the assigned share, is
logged and counted in the round metric ``num-examples-mismatch``) and changes nothing in the
aggregation: no node can steer FedAvg by claiming many examples, nor make Flower divide by
a zero or negative total. An aggregate that is not finite in float32 (huge finite gradients
can overflow a sum) is declined: the round is not applied and is audited as
``"aggregator-declined"``. The server applies the result with the shared momentum, weight
decay and learning-rate schedule. Uplink and downlink are float32: the model goes down
whole every round.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.supercore import log

from fl_election import contract

from .base import ParsedReply
from .full_gradient_median import FullGradientMedian, finite_direction

__all__ = [
    "FLOWER_STRATEGIES",
    "METRIC_NUM_EXAMPLES_MISMATCH",
    "FlowerRobust",
    "create_flower_aggregator",
]

#: Record keys of the replies handed to the Flower strategy.
_ARRAYS = "arrays"
_METRICS = "metrics"
#: Flower's default ``weighted_by_key`` (the key a strategy without one is handed).
_NUM_EXAMPLES = "num-examples"
#: How a reply may be weighted (``num_examples_weights``).
NUM_EXAMPLES_WEIGHTS = ("assigned", "reported")
#: Largest reported ``num-examples`` taken as a weight under ``"reported"``.
MAX_REPORTED_EXAMPLES = 10**9
#: Round metric: accepted nodes whose reported ``num-examples`` is not their assigned share.
METRIC_NUM_EXAMPLES_MISMATCH = "num-examples-mismatch"


def _fedavg(n: int, b: int) -> Strategy:
    return FedAvg()


def _krum(n: int, b: int) -> Strategy:
    return Krum(num_malicious_nodes=b)


def _multikrum(n: int, b: int) -> Strategy:
    # m = n - b: average every node Krum would keep if the b Byzantines were known.
    return MultiKrum(num_malicious_nodes=b, num_nodes_to_select=n - b)


def _bulyan(n: int, b: int) -> Strategy:
    return Bulyan(num_malicious_nodes=b)


def _fedmedian(n: int, b: int) -> Strategy:
    return FedMedian()


def _fedtrimmedavg(n: int, b: int) -> Strategy:
    # Trim b of n from each end per coordinate: the fraction that removes every Byzantine
    # value on either side.
    return FedTrimmedAvg(beta=b / n)


#: ``name -> factory(n, b)`` of the Flower strategies the harness runs; ``b`` is the
#: Byzantine budget each is told (Krum's ``f``, Bulyan's ``f``, the trimmed fraction).
FLOWER_STRATEGIES: dict[str, Callable[[int, int], Strategy]] = {
    "fedavg": _fedavg,
    "krum": _krum,
    "multikrum": _multikrum,
    "bulyan": _bulyan,
    "fedmedian": _fedmedian,
    "fedtrimmedavg": _fedtrimmedavg,
}


def create_flower_aggregator(name: str, num_nodes: int, byzantine_budget: int) -> Strategy:
    """Return Flower's strategy ``name`` configured for ``n`` nodes and budget ``b``.

    Parameters
    ----------
    name : str
        One of :data:`FLOWER_STRATEGIES`.
    num_nodes : int
        ``n``.
    byzantine_budget : int
        ``b``.

    Returns
    -------
    flwr.serverapp.strategy.Strategy
        The strategy, whose ``aggregate_train`` does the aggregation.

    Raises
    ------
    ValueError
        On an unknown name, or an ``(n, b)`` the strategy cannot run at (Krum and
        MultiKrum need ``n >= 2b + 3``, Bulyan ``n >= 4b + 3``).
    """
    if name not in FLOWER_STRATEGIES:
        raise ValueError(
            f"unknown Flower strategy {name!r}; valid: {', '.join(sorted(FLOWER_STRATEGIES))}"
        )
    n, b = num_nodes, byzantine_budget
    if name in ("krum", "multikrum") and n < 2 * b + 3:
        raise ValueError(f"{name} needs n >= 2b + 3 = {2 * b + 3}, got n = {n}")
    if name == "bulyan" and n < 4 * b + 3:
        raise ValueError(f"bulyan needs n >= 4b + 3 = {4 * b + 3}, got n = {n}")
    return FLOWER_STRATEGIES[name](n, b)


class FlowerRobust(FullGradientMedian):
    """A Flower strategy's ``aggregate_train`` over the nodes' float gradients.

    Parameters
    ----------
    num_nodes : int
        ``n``: nodes, each holding its own partition (identity allocation).
    aggregator : str | flwr.serverapp.strategy.Strategy
        A name of :data:`FLOWER_STRATEGIES` (configured for ``byzantine_budget``) or a
        Flower strategy object whose ``aggregate_train`` aggregates the gradients.
    num_examples_weights : str (default: "assigned")
        ``"assigned"``: each reply is weighted by the share the server assigned
        (:meth:`assigned_examples`); ``"reported"``: by the node's own ``num-examples``, as
        Flower's FedAvg and MultiKrum take it out of the box (a Byzantine can inflate it:
        the ``num-examples-inflation`` attack). A reported value that is missing or not a
        finite number in ``[1, 10**9]`` falls back to the assigned share.
    **kwargs : Any
        Training settings of :class:`~fl_election.strategies.DirectionStrategy`
        (``byzantine_budget``, ``lr``, ``momentum``, ``weight_decay``, ...).
    """

    def __init__(
        self,
        num_nodes: int,
        aggregator: str | Strategy,
        num_examples_weights: str = "assigned",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_nodes, **kwargs)
        if num_examples_weights not in NUM_EXAMPLES_WEIGHTS:
            raise ValueError(
                f"num_examples_weights must be one of {NUM_EXAMPLES_WEIGHTS}, got "
                f"{num_examples_weights!r}"
            )
        self.num_examples_weights = num_examples_weights
        if isinstance(aggregator, str):
            self.aggregator_name = aggregator
            aggregator = create_flower_aggregator(aggregator, num_nodes, self.byzantine_budget)
        else:
            self.aggregator_name = type(aggregator).__name__.lower()
        self.aggregator = aggregator
        self._aggregating_round = 0

    def summary(self) -> None:
        """Log the Flower strategy and the optimizer settings."""
        log(
            INFO,
            "\t├──> Flower %s over float32 gradients of n = %d nodes (b = %d)",
            type(self.aggregator).__name__,
            self.num_nodes,
            self.byzantine_budget,
        )
        self.summary_settings()

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        """Remember the round for the Flower strategy, then aggregate as the base does."""
        self._aggregating_round = server_round
        return super().aggregate_train(server_round, replies)

    def assigned_examples(self, row: int) -> int:
        """Return the samples row ``row`` computes on per step: the weight it is given.

        The server decides it (``B // k`` samples per partition the row holds, the
        ``partition-batch-size`` of :meth:`instruction`), so it never comes from the node.
        """
        return len(self.partitions_of(row)) * (self.batch_size // self.num_partitions)

    def audit_num_examples(self, vote: ParsedReply, assigned: int) -> str | None:
        """Return why a node's reported ``num-examples`` is not ``assigned``, or None.

        Only audited, never used: a node that misreports it still votes with the server's
        weight. Rejecting its vote would gain nothing (the value no longer reaches the
        aggregation) and would let a bookkeeping bug in an honest client cost a quorum.
        """
        # The base's metric reader keeps only finite int/float values: a NaN, infinity,
        # string, bool or list arrives here as missing.
        reported = vote.metrics.get(contract.METRIC_NUM_EXAMPLES)
        if reported is None:
            return "missing or not a finite number"
        if not float(reported).is_integer() or not 0 < reported <= self.batch_size:
            return f"{reported!r} is not an integer in [1, B = {self.batch_size}]"
        if reported != assigned:
            return f"{reported!r}, not the assigned {assigned}"
        return None

    def aggregate_payloads(
        self, votes: list[ParsedReply], num_coordinates: int
    ) -> tuple[np.ndarray | None, dict[str, float]]:
        """Hand the accepted gradients, with server-assigned weights, to the Flower strategy.

        Each reply is weighted by :meth:`assigned_examples` of the node's row; the node's own
        ``num-examples`` is audited (:meth:`audit_num_examples`, the round metric
        :data:`METRIC_NUM_EXAMPLES_MISMATCH`) and otherwise ignored.

        Returns ``None`` as the direction when the strategy declines (Bulyan with fewer
        than ``4b + 3`` replies) or its aggregate is not finite in float32: the round is then
        not applied.
        """
        weight_key = str(getattr(self.aggregator, "weighted_by_key", _NUM_EXAMPLES))
        replies = []
        mismatched = 0
        for v in votes:
            row = self.node_to_worker[v.node_id]
            assigned = self.assigned_examples(row)
            problem = self.audit_num_examples(v, assigned)
            if problem is not None:
                mismatched += 1
                log(
                    WARNING,
                    "Node %d (row %d) reported %s %s; weighed by the server-assigned %d",
                    v.node_id,
                    row,
                    contract.METRIC_NUM_EXAMPLES,
                    problem,
                    assigned,
                )
            weight = assigned
            reported = v.metrics.get(contract.METRIC_NUM_EXAMPLES)
            if self.num_examples_weights == "reported" and reported is not None:
                if 1 <= reported <= MAX_REPORTED_EXAMPLES:
                    weight = int(reported)
            replies.append(
                Message(
                    RecordDict(
                        {
                            _ARRAYS: ArrayRecord({contract.GRADIENT: Array(v.payload)}),
                            _METRICS: MetricRecord({weight_key: weight}),
                        }
                    ),
                    dst_node_id=v.node_id,
                    message_type=MessageType.TRAIN,
                )
            )
        metrics: dict[str, float] = {METRIC_NUM_EXAMPLES_MISMATCH: mismatched}
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is declined below
            arrays, _ = self.aggregator.aggregate_train(self._aggregating_round, replies)
        if arrays is None or contract.GRADIENT not in arrays:
            return None, metrics
        return finite_direction(arrays[contract.GRADIENT].numpy(), num_coordinates), metrics
