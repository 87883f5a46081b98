"""Election coding for SignSGD with majority vote [Sohn et al., 2020].

Paper: "Election Coding for Distributed Learning: Protecting SignSGD against Byzantine
Attacks", J. Sohn, D.-J. Han, B. Choi, J. Moon, NeurIPS 2020, https://arxiv.org/abs/1910.06093

Each node is one worker, i.e. one row of an allocation code ``G``: it computes the gradient
sign of every data partition it holds, takes the local majority and sends it as a packed
1-bit vector. The server takes the global majority of those votes and applies a
sign-momentum step. With a perfectly b-tolerant code the vote equals the majority over
partitions whatever ``b`` Byzantine nodes send. Uncoded SignSGD with majority vote
[Bernstein et al., 2019] is this strategy with ``uncoded(n)``.

The algorithm is in :mod:`fl_election` (:func:`fl_election.voting.global_majority`,
:class:`fl_election.optim.SignMomentumSGD`); this module only translates between Flower
messages and that math.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

import numpy as np
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
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from fl_election.aggregation import coordinate_median
from fl_election.codes import AllocationCode, create_code, max_tolerance
from fl_election.optim import SignMomentumSGD, flatten_arrays, step_lr, unflatten_arrays
from fl_election.voting import global_majority, packed_agreement
from fl_election.wire import decode_vote

#: Keys of the reply record a ClientApp sends back; the vote's own arrays are
#: :mod:`fl_election.wire`'s.
VOTE_KEY = "vote"
BUFFERS_KEY = "buffers"
METRICS_KEY = "metrics"

#: State-dict suffixes of batch-norm statistics: not trained by the vote, aggregated by
#: coordinate-wise median of what the clients report.
BUFFER_SUFFIXES = ("running_mean", "running_var")


@dataclass(frozen=True)
class ParsedReply:
    """One accepted train reply.

    ``payload`` is the packed sign plane of a vote (``uint8``), or the float gradient for
    :class:`strategies.FullGradientMedian`; ``abstain`` the optional abstain plane.
    """

    node_id: int
    payload: np.ndarray
    abstain: np.ndarray | None
    buffers: dict[str, np.ndarray]
    metrics: dict[str, float]
    num_bytes: int


class RejectedReply(ValueError):
    """A reply that cannot take part in the vote (the reason is the message)."""


def default_trainable_keys(arrays: ArrayRecord) -> list[str]:
    """Return the keys a vote covers when the caller does not name them.

    Floating-point arrays, in record order, except batch-norm running statistics.
    """
    keys = []
    for key, array in arrays.items():
        if np.issubdtype(np.dtype(array.dtype), np.floating) and not key.endswith(BUFFER_SUFFIXES):
            keys.append(key)
    return keys


def read_buffers_and_metrics(
    message: Message, buffer_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Return a reply's float buffers (checked against ``buffer_shapes``) and metrics."""
    node = message.metadata.src_node_id
    content = message.content
    buffers: dict[str, np.ndarray] = {}
    if buffer_shapes:
        if BUFFERS_KEY not in content.array_records:
            raise RejectedReply(f"node {node}: reply has no ArrayRecord {BUFFERS_KEY!r}")
        record = content.array_records[BUFFERS_KEY]
        for key, shape in buffer_shapes.items():
            if key not in record:
                raise RejectedReply(f"node {node}: buffer {key!r} is missing")
            value = record[key].numpy()
            if value.shape != shape or not np.all(np.isfinite(value)):
                raise RejectedReply(f"node {node}: buffer {key!r} is malformed")
            buffers[key] = value.astype(np.float32, copy=False)
    metrics: dict[str, float] = {}
    for record in content.metric_records.values():
        for key, value in record.items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                metrics[key] = float(value)
    return buffers, metrics


def parse_vote(
    message: Message,
    *,
    num_coordinates: int,
    buffer_shapes: Mapping[str, tuple[int, ...]],
) -> ParsedReply:
    """Check one train reply and return its vote, or raise :class:`RejectedReply`.

    Parameters
    ----------
    message : Message
        A reply to a train message.
    num_coordinates : int
        Length ``d`` of the vote (number of trainable scalars).
    buffer_shapes : Mapping[str, tuple[int, ...]]
        Float buffers (batch-norm statistics) a reply must carry, with their shapes.

    Returns
    -------
    ParsedReply
        The validated packed planes, buffers and metrics.
    """
    node = message.metadata.src_node_id
    if message.has_error():
        raise RejectedReply(f"node {node} replied with an error: {message.error.reason}")
    content = message.content
    if VOTE_KEY not in content.array_records:
        raise RejectedReply(f"node {node}: reply has no ArrayRecord {VOTE_KEY!r}")
    vote = content.array_records[VOTE_KEY]
    arrays: dict[str, np.ndarray] = {}
    for key in vote.keys():
        try:
            arrays[key] = vote[key].numpy()
        except Exception as err:  # a payload that does not deserialize at all
            raise RejectedReply(f"node {node}: {key!r} cannot be decoded ({err})") from err
    try:
        signs, abstain = decode_vote(arrays, num_coordinates)
    except ValueError as err:
        raise RejectedReply(f"node {node}: {err}") from err
    buffers, metrics = read_buffers_and_metrics(message, buffer_shapes)
    return ParsedReply(
        node_id=node,
        payload=signs,
        abstain=abstain,
        buffers=buffers,
        metrics=metrics,
        num_bytes=sum(a.nbytes for a in arrays.values()),  # what travelled, compressed
    )


class ElectionCoding(FedAvg):
    """Election coding for SignSGD with majority vote [Sohn et al., 2020].

    Implementation based on https://arxiv.org/abs/1910.06093

    Parameters
    ----------
    code : AllocationCode | str
        The allocation code ``G`` (n workers x k partitions), or the name of one in
        :data:`fl_election.codes.CODE_FACTORIES` built with ``code_params``.
    code_params : Mapping[str, Any] | None (default: None)
        Parameters of a named code, e.g. ``{"n": 15, "redundancy": 3.0, "seed": 0}``.
    lr : float (default: 1e-3)
        Server learning rate.
    lr_milestones : Sequence[int] (default: ())
        Steps at which the learning rate is multiplied by ``lr_gamma``.
    lr_gamma : float (default: 0.1)
        Learning-rate decay factor.
    momentum : float (default: 0.9)
        Server-side momentum on the voted direction.
    weight_decay : float (default: 1e-4)
        Weight decay added to the voted direction.
    seed : int (default: 0)
        Sent to every node; clients derive each partition's minibatch slice from it, so
        all holders of a partition compute on the same samples.
    byzantine_budget : int (default: 0)
        ``b`` the deployment must withstand; :meth:`summary` certifies the code for it.
    trainable_keys : Sequence[str] | None (default: None)
        Keys of the arrays the vote covers, in the order clients flatten their gradients.
        ``None`` takes every floating-point array except batch-norm running statistics.
    evaluate_every : int (default: 0)
        Federated evaluation every this many rounds; 0 disables it.
    node_wait_timeout : float (default: 300.0)
        Seconds to wait for ``n`` nodes to connect before the first round.
    arrayrecord_key : str (default: "arrays")
        Key of the model ArrayRecord in messages.
    configrecord_key : str (default: "config")
        Key of the ConfigRecord in messages.
    """

    # pylint: disable=too-many-arguments,too-many-instance-attributes
    def __init__(
        self,
        code: AllocationCode | str,
        *,
        code_params: Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        seed: int = 0,
        byzantine_budget: int = 0,
        trainable_keys: Sequence[str] | None = None,
        evaluate_every: int = 0,
        node_wait_timeout: float = 300.0,
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
    ) -> None:
        if isinstance(code, str):
            code = create_code(code, **dict(code_params or {}))
        elif code_params:
            raise ValueError("code_params is only used with a code name, not an AllocationCode")
        if not 0 <= byzantine_budget < code.n / 2:
            raise ValueError(
                f"byzantine_budget b = {byzantine_budget} must satisfy 0 <= b < n/2 = "
                f"{code.n / 2:g}"
            )
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if evaluate_every < 0:
            raise ValueError(f"evaluate_every must be >= 0, got {evaluate_every}")
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=code.n,
            min_evaluate_nodes=code.n,
            min_available_nodes=code.n,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
        )
        self.code = code
        self.lr = lr
        self.lr_milestones = tuple(lr_milestones)
        self.lr_gamma = lr_gamma
        self.seed = seed
        self.byzantine_budget = byzantine_budget
        self.trainable_keys = list(trainable_keys) if trainable_keys is not None else None
        self.evaluate_every = evaluate_every
        self.node_wait_timeout = node_wait_timeout
        self.optimizer = SignMomentumSGD(momentum=momentum, weight_decay=weight_decay)
        self.node_to_worker: dict[int, int] = {}
        self._arrays: ArrayRecord | None = None
        self._trainable_shapes: list[tuple[int, ...]] = []
        self._buffer_shapes: dict[str, tuple[int, ...]] = {}
        self._sent_to: set[int] = set()

    # ------------------------------------------------------------------ reporting
    def summary(self) -> None:
        """Log the code, its certified tolerance and the optimizer settings."""
        code = self.code
        log(INFO, "\t├──> Allocation code: %s", code.name)
        log(
            INFO,
            "\t│\t├── n = %d workers, k = %d partitions, redundancy r = %.2f, max load %d",
            code.n,
            code.k,
            code.redundancy,
            code.max_load,
        )
        tolerance = max_tolerance(code)
        log(INFO, "\t│\t└── certified: perfectly %d-tolerant", tolerance)
        if self.byzantine_budget > tolerance:
            log(
                WARNING,
                "\t│\t    b = %d exceeds the certified tolerance %d: the vote may be "
                "wrong on some sign patterns",
                self.byzantine_budget,
                tolerance,
            )
        log(
            INFO,
            "\t└──> Optimizer: lr %g (x%g at %s), momentum %g, weight decay %g, seed %d",
            self.lr,
            self.lr_gamma,
            list(self.lr_milestones) or "never",
            self.optimizer.momentum,
            self.optimizer.weight_decay,
            self.seed,
        )

    # ------------------------------------------------------------------ training
    def _assign_workers(self, grid: Grid) -> None:
        """Map node ids to code rows once; the mapping is then fixed for the run."""
        deadline = time.monotonic() + self.node_wait_timeout
        while True:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= self.code.n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(node_ids)} node(s) connected after {self.node_wait_timeout:g} s; "
                    f"the code needs n = {self.code.n}"
                )
            log(INFO, "Waiting for %d nodes (%d connected)", self.code.n, len(node_ids))
            time.sleep(1.0)
        if len(node_ids) > self.code.n:
            log(
                WARNING,
                "%d nodes connected, the code has %d rows: the extra nodes stay idle",
                len(node_ids),
                self.code.n,
            )
        self.node_to_worker = {node: row for row, node in enumerate(node_ids[: self.code.n])}

    def current_lr(self, server_round: int) -> float:
        """Return the learning rate of a round (step ``server_round - 1``)."""
        return step_lr(server_round - 1, self.lr, self.lr_milestones, self.lr_gamma)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every node the model and its row of the code."""
        if not self.node_to_worker:
            self._assign_workers(grid)
        if self.trainable_keys is None:
            self.trainable_keys = default_trainable_keys(arrays)
        self._arrays = arrays
        # Shapes of this round's model, read once: the votes and buffers are checked
        # against them and the update is unflattened into them.
        self._trainable_shapes = [tuple(arrays[key].shape) for key in self.trainable_keys]
        self._buffer_shapes = {
            key: tuple(array.shape)
            for key, array in arrays.items()
            if key.endswith(BUFFER_SUFFIXES)
        }
        messages = []
        for node_id, worker in self.node_to_worker.items():
            partitions = self.code.partitions_of(worker)
            if not partitions:  # an empty row has nothing to vote on
                continue
            node_config = ConfigRecord(dict(config))
            node_config.update(
                {
                    "server-round": server_round,
                    "step": server_round - 1,
                    "seed": self.seed,
                    "worker-index": worker,
                    "num-workers": self.code.n,
                    "num-partitions": self.code.k,
                    "partition-ids": [int(p) for p in partitions],
                }
            )
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            messages.append(
                Message(content=record, message_type=MessageType.TRAIN, dst_node_id=node_id)
            )
        self._sent_to = {m.metadata.dst_node_id for m in messages}
        log(INFO, "configure_train: sent %d coded train messages", len(messages))
        return messages

    def parse_reply(
        self,
        message: Message,
        num_coordinates: int,
        buffer_shapes: Mapping[str, tuple[int, ...]],
    ) -> ParsedReply:
        """Validate one reply (raise :class:`RejectedReply`); a packed vote here."""
        return parse_vote(message, num_coordinates=num_coordinates, buffer_shapes=buffer_shapes)

    def collect_votes(
        self, replies: Iterable[Message], num_coordinates: int
    ) -> tuple[list[ParsedReply], list[str]]:
        """Validate replies: accepted votes, and the reasons for the rejected ones."""
        votes: list[ParsedReply] = []
        rejected: list[str] = []
        seen: set[int] = set()
        for message in replies:
            node = message.metadata.src_node_id
            try:
                if node not in self._sent_to:
                    raise RejectedReply(f"node {node} was not asked to vote this round")
                if node in seen:
                    raise RejectedReply(f"node {node} replied twice; keeping the first reply")
                vote = self.parse_reply(message, num_coordinates, self._buffer_shapes)
            except RejectedReply as reason:
                rejected.append(str(reason))
                log(WARNING, "Rejected reply: %s", reason)
                continue
            seen.add(node)
            votes.append(vote)
        return votes, rejected

    def compute_direction(
        self, replies: list[Message], num_coordinates: int
    ) -> tuple[np.ndarray | None, dict[str, float | int], list[ParsedReply]]:
        """Return the aggregated direction, metrics and the accepted replies.

        The direction is ``None`` when no reply could be used.
        """
        votes, rejected = self.collect_votes(replies, num_coordinates)
        metrics: dict[str, float | int] = {
            "valid-votes": len(votes),
            "rejected-replies": len(rejected),
            "uplink-bytes": int(sum(v.num_bytes for v in votes)),
        }
        if not votes:
            return None, metrics, votes
        direction, extra = self.aggregate_payloads(votes, num_coordinates)
        metrics.update(extra)
        return direction, metrics, votes

    def aggregate_payloads(
        self, votes: list[ParsedReply], num_coordinates: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Return the global majority ``v`` in {-1, 0, +1} of the packed votes.

        The metrics say how well the voters agreed with it.
        """
        planes = np.stack([v.payload for v in votes])
        abstain = [v.abstain for v in votes]
        direction = global_majority(planes, num_coordinates, abstain)
        agreement = packed_agreement(planes, abstain, direction)
        metrics = {
            "agreement": float(np.mean(agreement)),
            "min-agreement": float(np.min(agreement)),
            "abstain-fraction": float(np.mean(direction == 0)),
        }
        return direction.astype(np.float32), metrics

    def aggregate_train(
        self,
        server_round: int,
        replies: Iterable[Message],
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies into a direction and apply the momentum step."""
        if self._arrays is None or self.trainable_keys is None:
            raise RuntimeError("aggregate_train called before configure_train")
        replies = list(replies)
        shapes = self._trainable_shapes
        num_coordinates = int(sum(int(np.prod(s)) for s in shapes))
        direction, metrics, votes = self.compute_direction(replies, num_coordinates)
        answered = {m.metadata.src_node_id for m in replies}
        lr = self.current_lr(server_round)
        metrics["missing-replies"] = len(self._sent_to - answered)
        metrics["lr"] = lr
        for key in ("train-loss", "compute-time"):
            values = [v.metrics[key] for v in votes if key in v.metrics]
            if values:
                metrics[key] = float(np.mean(values))
        if direction is None:
            log(WARNING, "Round %d: no valid reply, the model is not updated", server_round)
            return None, MetricRecord(metrics)

        weights = flatten_arrays([self._arrays[key].numpy() for key in self.trainable_keys])
        updated = self.optimizer.step(weights, direction, lr)
        new_trainable = dict(
            zip(self.trainable_keys, unflatten_arrays(updated, shapes), strict=True)
        )
        new_arrays = ArrayRecord()
        for key, array in self._arrays.items():
            if key in new_trainable:
                new_arrays[key] = Array(new_trainable[key])
            elif key in votes[0].buffers:
                # Batch-norm statistics are floats, not votes: a robust coordinate-wise
                # median keeps a minority of Byzantine reports from steering them.
                stacked = np.stack([v.buffers[key].ravel() for v in votes])
                median = coordinate_median(stacked).reshape(array.shape)
                new_arrays[key] = Array(median.astype(np.float32))
            else:
                new_arrays[key] = array
        return new_arrays, MetricRecord(metrics)

    # ------------------------------------------------------------------ evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation every ``evaluate_every`` rounds (never when 0)."""
        if self.evaluate_every == 0 or server_round % self.evaluate_every:
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)
