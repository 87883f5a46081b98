"""ByzFL's robust aggregators as a Flower strategy wrapper, and a vector oracle.

Defences (the aggregation is ByzFL's own classes, ``pip install "fl-election[byzfl]"``, not a
reimplementation):

* NNM, nearest-neighbour mixing, before TrMean or Median: Allouah et al., "Fixing by
  Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023,
  https://arxiv.org/abs/2302.01772
* ARC, adaptive robust clipping, before TrMean: Allouah et al., "Boosting Robustness by
  Clipping Gradients in Distributed Learning", 2024, https://arxiv.org/abs/2405.14432
* CenteredClipping: Karimireddy, He and Jaggi, "Learning from History for Byzantine
  Robust Optimization", ICML 2021, https://arxiv.org/abs/2012.10333. ByzFL's
  ``CenteredClipping`` is stateful: each round clips around the previous round's aggregate.
  The paper's worker momentum is not applied here: the nodes send their gradients, and the
  harness applies momentum to the aggregate on the server.
* GeometricMedian (Weiszfeld iterations, the RFA of): Pillutla, Kakade and Harchaoui,
  "Robust Aggregation for Federated Learning", IEEE Transactions on Signal Processing,
  2022, https://arxiv.org/abs/1912.13445
* ByzFL (EPFL), PyPI ``byzfl``, https://byzfl.epfl.ch

:class:`ByzflAggregation` wraps any Flower :class:`~flwr.serverapp.strategy.Strategy` the
way :class:`~flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping` does: it
delegates everything to the wrapped strategy except ``aggregate_train``, which flattens each
reply's ``ArrayRecord`` into one float32 vector, runs ByzFL's pre-aggregators and aggregator
over the stacked ``(m, d)`` vectors and un-flattens the result. ByzFL's robust aggregators
are unweighted: the replies' ``num-examples`` (the wrapped strategy's ``weighted_by_key``)
weighs only the aggregated metrics, never the arrays.

:func:`vector_aggregate` turns any strategy (Flower's six of
:func:`~fl_election.strategies.create_flower_aggregator`, or a :class:`ByzflAggregation`)
into a function of a ``(m, d)`` array of vectors: the oracle through which a line-searched
attack attacks the aggregator in use.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.serverapp.strategy.strategy_utils import (
    aggregate_metricrecords,
    validate_message_reply_consistency,
)
from flwr.supercore import log

from fl_election import contract

from .flower_robust import _ARRAYS, _METRICS, _NUM_EXAMPLES

__all__ = [
    "BYZFL_DEFENCES",
    "ByzflAggregation",
    "create_byzfl_aggregator",
    "vector_aggregate",
]

#: A ByzFL aggregator or pre-aggregator: a callable on a ``(m, d)`` array of vectors.
ByzflStage = Callable[[np.ndarray], Any]

_INSTALL_HINT = 'ByzFL defences need the optional dependency: pip install "fl-election[byzfl]"'


def _byzfl() -> Any:
    """Import ByzFL lazily (it pulls in torch), or say how to install it."""
    try:
        import byzfl  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return byzfl


def _describe(stage: Any) -> str:
    """Return ``Name(setting=value, ...)`` of a ByzFL stage's scalar settings."""
    settings = ", ".join(
        f"{k}={v}"
        for k, v in vars(stage).items()
        if isinstance(v, (bool, int, float, str)) and not k.startswith("_")
    )
    return f"{type(stage).__name__}({settings})"


class ByzflAggregation(Strategy):
    """Strategy wrapper that aggregates the arrays with ByzFL's robust aggregators.

    Parameters
    ----------
    strategy : Strategy
        The wrapped strategy: it configures the rounds, aggregates evaluation and training
        metrics, and its ``weighted_by_key`` (default: "num-examples") names the weight
        every reply must carry (as Flower checks it) for the metric average.
    aggregator : Callable
        A ByzFL aggregator (e.g. ``byzfl.TrMean(f=1)``): maps the ``(m, d)`` stacked
        vectors to one ``(d,)`` vector.
    pre_aggregators : Sequence[Callable] (default: ())
        ByzFL pre-aggregators (e.g. ``byzfl.NNM(f=1)``), each mapping ``(m, d)`` vectors to
        ``(m', d)`` vectors, applied in order before the aggregator.

    Notes
    -----
    The arrays are aggregated without weights: ByzFL's robust aggregators treat every
    reply alike, so a node cannot steer them by claiming many examples. With fewer replies
    than ``2f + 1`` (silent nodes), the stages told ``f`` run with the largest ``f`` the
    replies allow (:func:`fit_to_replies`). Stateful stages (``CenteredClipping`` keeps its
    centre) advance once per applied round; a round whose aggregate is not finite, or which
    ByzFL refuses, is declined (``None, None``) and leaves their state as it was.

    Examples
    --------
    Wrap FedAvg with NNM then the coordinate-wise trimmed mean::

        import byzfl

        strategy = ByzflAggregation(
            FedAvg(), aggregator=byzfl.TrMean(f=1), pre_aggregators=[byzfl.NNM(f=1)]
        )
    """

    def __init__(
        self,
        strategy: Strategy,
        aggregator: ByzflStage,
        pre_aggregators: Sequence[ByzflStage] = (),
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.aggregator = aggregator
        self.pre_aggregators = list(pre_aggregators)

    def __repr__(self) -> str:
        """Compute a string representation of the strategy."""
        return f"ByzFL Robust Aggregation Strategy Wrapper ({self.pipeline})"

    @property
    def pipeline(self) -> str:
        """The ByzFL stages in order, e.g. ``NNM(f=1) -> TrMean(f=1)``."""
        return " -> ".join(_describe(s) for s in [*self.pre_aggregators, self.aggregator])

    @property
    def weighted_by_key(self) -> str:
        """The wrapped strategy's weight key, which every reply's MetricRecord carries."""
        return str(getattr(self.strategy, "weighted_by_key", _NUM_EXAMPLES))

    def summary(self) -> None:
        """Log the ByzFL pipeline, then the wrapped strategy's summary."""
        log(INFO, "\t├──> ByzFL settings:")
        for stage in self.pre_aggregators:
            log(INFO, "\t│\t├── Pre-aggregator: %s", _describe(stage))
        log(INFO, "\t│\t└── Aggregator: %s (unweighted)", _describe(self.aggregator))
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure the next round of training (the wrapped strategy's)."""
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure the next round of federated evaluation (the wrapped strategy's)."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self,
        server_round: int,
        replies: Iterable[Message],
    ) -> MetricRecord | None:
        """Aggregate MetricRecords in the received Messages (the wrapped strategy's)."""
        return self.strategy.aggregate_evaluate(server_round, replies)

    def aggregate_train(
        self,
        server_round: int,
        replies: Iterable[Message],
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the ArrayRecords with ByzFL, the MetricRecords as the wrapped strategy.

        Replies with an error are skipped. The rest must each carry exactly one
        ``ArrayRecord`` with the same keys and shapes, and one ``MetricRecord`` with the
        weight key (:class:`~flwr.serverapp.exception.InconsistentMessageReplies`
        otherwise, as Flower's strategies raise). Each ``ArrayRecord`` is flattened in key
        order into one float32 vector; the ``(m, d)`` stack goes through the
        pre-aggregators then the aggregator, and the ``(d,)`` result comes back as a
        float32 ``ArrayRecord`` with the replies' keys and shapes. The metrics are the
        wrapped strategy's ``train_metrics_aggr_fn`` (Flower's weighted
        ``aggregate_metricrecords`` if it has none) over the replies, weighted by
        ``weighted_by_key``.
        """
        replies = list(replies)
        valid = [msg for msg in replies if not msg.has_error()]
        skipped = [msg for msg in replies if msg.has_error()]
        log(
            INFO,
            "aggregate_train: Received %s results and %s failures",
            len(valid),
            len(skipped),
        )
        for msg in skipped:
            log(
                INFO,
                "\t> Received error in reply from node %d: %s",
                msg.metadata.src_node_id,
                msg.error.reason,
            )
        if not valid:
            return None, None
        contents = [msg.content for msg in valid]
        validate_message_reply_consistency(contents, self.weighted_by_key, check_arrayrecord=True)
        records = [next(iter(c.array_records.values())) for c in contents]
        layout = [(key, records[0][key].shape) for key in records[0].keys()]
        if not layout:
            raise InconsistentMessageReplies(
                reason="The ArrayRecords are empty: nothing to aggregate. Skipping aggregation."
            )
        for record in records[1:]:
            if [(key, record[key].shape) for key in records[0].keys()] != layout:
                raise InconsistentMessageReplies(
                    reason="All ArrayRecords must have the same shapes for ByzFL "
                    "aggregation. This condition wasn't met. Skipping aggregation."
                )
        stacked = np.stack(
            [
                np.concatenate(
                    [np.asarray(r[key].numpy(), dtype=np.float32).reshape(-1) for key, _ in layout]
                )
                for r in records
            ]
        )
        vector = self._robust_aggregate(stacked)
        if vector is None:
            return None, None
        arrays = ArrayRecord()
        offset = 0
        for key, shape in layout:
            size = int(np.prod(shape, dtype=np.int64))
            arrays[key] = Array(vector[offset : offset + size].reshape(shape).copy())
            offset += size
        metrics_aggr_fn = getattr(self.strategy, "train_metrics_aggr_fn", aggregate_metricrecords)
        metrics = metrics_aggr_fn(contents, self.weighted_by_key)
        return arrays, metrics

    def _robust_aggregate(self, stacked: np.ndarray) -> np.ndarray | None:
        """Run the ByzFL pipeline on ``(m, d)`` vectors; None (state kept) if it fails."""
        saved = copy.deepcopy((self.pre_aggregators, self.aggregator))
        try:
            vector = run_stages(self.pre_aggregators, self.aggregator, stacked)
            if not np.all(np.isfinite(vector)):
                raise ValueError("the aggregate is not finite in float32")
        except ValueError as exc:
            self.pre_aggregators, self.aggregator = saved
            log(
                WARNING,
                "aggregate_train: ByzFL %s declined %d replies: %s",
                self.pipeline,
                len(stacked),
                exc,
            )
            return None
        return vector


def run_stages(
    pre_aggregators: Sequence[ByzflStage], aggregator: ByzflStage, stacked: np.ndarray
) -> npt.NDArray[np.float32]:
    """Return the ``(d,)`` float32 aggregate of ``(m, d)`` vectors by the ByzFL stages.

    The stages told ``f`` run with the ``f`` the ``m`` rows allow (:func:`fit_to_replies`);
    stateful stages advance (the caller runs a copy to leave them). The one pipeline of the
    server (:meth:`ByzflAggregation.aggregate_train`) and of the attacker's oracle
    (:func:`~fl_election.strategies.vector_oracle`).

    Raises
    ------
    ValueError
        When ByzFL refuses the rows or a stage returns the wrong shape.
    """
    pre_aggregators, aggregator = fit_to_replies((pre_aggregators, aggregator), len(stacked))
    vectors = stacked
    with np.errstate(over="ignore", invalid="ignore"):
        for stage in pre_aggregators:
            vectors = np.asarray(stage(vectors))
            if vectors.ndim != 2 or vectors.shape[1] != stacked.shape[1]:
                raise ValueError(
                    f"{_describe(stage)} returned shape {vectors.shape}, "
                    f"not (m, {stacked.shape[1]})"
                )
        vector = np.asarray(aggregator(vectors), dtype=np.float32).reshape(-1)
    if vector.shape != (stacked.shape[1],):
        raise ValueError(
            f"{_describe(aggregator)} returned {vector.size} values, not d = {stacked.shape[1]}"
        )
    return vector


def fit_to_replies(
    stages: tuple[Sequence[ByzflStage], ByzflStage], num_replies: int
) -> tuple[list[ByzflStage], ByzflStage]:
    """Return the stages with every ``f`` lowered to what ``num_replies`` replies allow.

    NNM, ARC and TrMean are told ``f``, the Byzantine count, and TrMean refuses ``m <= 2f``
    replies. When nodes are silent (a Byzantine that sends nothing, a crash) fewer than
    ``n`` replies arrive, and a fixed ``f = b`` would decline every round: ``b`` silent
    Byzantines would stop training. A stage whose ``2f >= m`` runs on a copy with
    ``f = (m - 1) // 2``, the most any rule can remove from ``m`` replies, so the round is
    still aggregated as robustly as the replies allow (the fault budget, not the
    aggregator, decides whether it is applied: :mod:`fl_election.quorum`). Stages without
    an integer ``f`` (CenteredClipping, GeometricMedian, Median) are returned as they are.
    """

    def fit(stage: ByzflStage) -> ByzflStage:
        f = getattr(stage, "f", None)
        if isinstance(f, int) and 2 * f >= num_replies:
            stage = copy.copy(stage)
            stage.f = max(0, (num_replies - 1) // 2)  # type: ignore[attr-defined]
        return stage

    return [fit(stage) for stage in stages[0]], fit(stages[1])


def _nnm_trmean(n: int, b: int) -> ByzflAggregation:
    byzfl = _byzfl()
    return ByzflAggregation(FedAvg(), byzfl.TrMean(f=b), [byzfl.NNM(f=b)])


def _nnm_median(n: int, b: int) -> ByzflAggregation:
    byzfl = _byzfl()
    return ByzflAggregation(FedAvg(), byzfl.Median(), [byzfl.NNM(f=b)])


def _arc_trmean(n: int, b: int) -> ByzflAggregation:
    byzfl = _byzfl()
    return ByzflAggregation(FedAvg(), byzfl.TrMean(f=b), [byzfl.ARC(f=b)])


def _centeredclipping(n: int, b: int) -> ByzflAggregation:
    # ByzFL's defaults (L = 1 iteration, tau = 100, centre = the previous aggregate).
    return ByzflAggregation(FedAvg(), _byzfl().CenteredClipping())


def _geomedian(n: int, b: int) -> ByzflAggregation:
    # ByzFL's defaults (nu = 0.1, T = 3 Weiszfeld iterations).
    return ByzflAggregation(FedAvg(), _byzfl().GeometricMedian())


#: ``name -> factory(n, b)`` of the ByzFL defences the harness runs, each wrapping
#: ``FedAvg()``; ``b`` is the Byzantine budget each is told (NNM's, ARC's, TrMean's ``f``).
BYZFL_DEFENCES: dict[str, Callable[[int, int], ByzflAggregation]] = {
    "nnm-trmean": _nnm_trmean,
    "nnm-median": _nnm_median,
    "arc-trmean": _arc_trmean,
    "centeredclipping": _centeredclipping,
    "geomedian": _geomedian,
}


def create_byzfl_aggregator(name: str, num_nodes: int, byzantine_budget: int) -> ByzflAggregation:
    """Return the ByzFL defence ``name`` configured for ``n`` nodes and budget ``b``.

    Parameters
    ----------
    name : str
        One of :data:`BYZFL_DEFENCES`.
    num_nodes : int
        ``n``.
    byzantine_budget : int
        ``b``.

    Returns
    -------
    ByzflAggregation
        The defence wrapping ``FedAvg()``, whose ``aggregate_train`` does the aggregation.

    Raises
    ------
    ValueError
        On an unknown name, or unless ``0 <= b < n / 2``.
    ImportError
        If ByzFL is not installed (``pip install "fl-election[byzfl]"``).
    """
    if name not in BYZFL_DEFENCES:
        raise ValueError(
            f"unknown ByzFL defence {name!r}; valid: {', '.join(sorted(BYZFL_DEFENCES))}"
        )
    n, b = num_nodes, byzantine_budget
    if n < 1 or b < 0 or 2 * b >= n:
        raise ValueError(f"{name} needs 0 <= b < n / 2, got n = {n}, b = {b}")
    return BYZFL_DEFENCES[name](n, b)


def vector_aggregate(
    strategy: Strategy, *, server_round: int = 0
) -> Callable[[np.ndarray], np.ndarray]:
    """Return the aggregate of ``(m, d)`` vectors by ``strategy``'s own ``aggregate_train``.

    Each row is handed over as :class:`~fl_election.strategies.FlowerRobust` hands a
    gradient: one ``Message`` with ``ArrayRecord({contract.GRADIENT: Array(row)})`` and the
    strategy's ``weighted_by_key`` in its ``MetricRecord``, every row with weight 1.

    Parameters
    ----------
    strategy : Strategy
        Flower's (:func:`~fl_election.strategies.create_flower_aggregator`) or a
        :class:`ByzflAggregation`. A ``ByzflAggregation`` is deep-copied on every call: the
        oracle sees its current state (``CenteredClipping``'s centre) and never advances it.
    server_round : int (default: 0)
        The round handed to ``aggregate_train``.

    Returns
    -------
    Callable[[np.ndarray], np.ndarray]
        ``vectors -> aggregate``, ``(m, d)`` floats to a ``(d,)`` float32 vector. It raises
        ValueError where the harness would not apply the round: the strategy declines
        (e.g. Bulyan with fewer than ``4b + 3`` rows) or its aggregate is not finite in
        float32. Flower's logging below ERROR is silenced during the call (the oracle runs
        many times per step, and a decline is the ValueError).
    """
    weight_key = str(getattr(strategy, "weighted_by_key", _NUM_EXAMPLES))

    def aggregate(vectors: np.ndarray) -> np.ndarray:
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"expected (m, d) vectors, got shape {rows.shape}")
        replies = [
            Message(
                RecordDict(
                    {
                        _ARRAYS: ArrayRecord({contract.GRADIENT: Array(row.copy())}),
                        _METRICS: MetricRecord({weight_key: 1}),
                    }
                ),
                dst_node_id=i + 1,
                message_type=MessageType.TRAIN,
            )
            for i, row in enumerate(rows)
        ]
        trial = copy.deepcopy(strategy) if isinstance(strategy, ByzflAggregation) else strategy
        flwr_logger = logging.getLogger("flwr")
        level = flwr_logger.level
        flwr_logger.setLevel(max(ERROR, level))
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                arrays, _ = trial.aggregate_train(server_round, replies)
        finally:
            flwr_logger.setLevel(level)
        if arrays is None or contract.GRADIENT not in arrays:
            raise ValueError(f"{type(strategy).__name__} declined {len(rows)} vectors")
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.asarray(arrays[contract.GRADIENT].numpy(), dtype=np.float32).reshape(-1)
        if out.shape != (rows.shape[1],) or not np.all(np.isfinite(out)):
            raise ValueError(f"{type(strategy).__name__}'s aggregate is not a finite d-vector")
        return out

    return aggregate
