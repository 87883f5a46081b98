"""What the sign-vote strategies share: rows, train instructions, reply checks, the step.

:class:`DirectionStrategy` is a FedAvg subclass for strategies whose nodes each compute a
direction from the data partitions of their row (a packed sign vote, or a float gradient
for the median baseline) and whose server aggregates those directions robustly and applies
one sign-momentum step (:class:`fl_election.optim.SignMomentumSGD`). Subclasses say which
partitions a row holds, how a reply's payload is checked, and how payloads are
aggregated; the messages follow :mod:`fl_election.contract`.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import ClassVar

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

from fl_election import contract
from fl_election.aggregation import coordinate_median
from fl_election.contract import ContractError, TrainInstruction
from fl_election.optim import SignMomentumSGD, flatten_arrays, step_lr, unflatten_arrays

__all__ = ["DirectionStrategy", "ParsedReply", "RejectedReply"]


@dataclass(frozen=True)
class ParsedReply:
    """One accepted train reply.

    ``payload`` is the packed sign plane of a vote (``uint8``), or a float gradient;
    ``abstain`` the optional abstain plane.
    """

    node_id: int
    payload: np.ndarray
    abstain: np.ndarray | None
    buffers: dict[str, np.ndarray]
    metrics: dict[str, float]
    num_bytes: int


class RejectedReply(ValueError):
    """A reply that cannot take part in the vote (the reason is the message).

    ``contract`` marks a reply that broke the client/server contract (a node whose model
    does not match the vote's coordinates): when every reply of a round does, the run
    stops with the reasons instead of training nothing.
    """

    def __init__(self, reason: str, *, contract: bool = False) -> None:
        super().__init__(reason)
        self.contract = contract


class DirectionStrategy(FedAvg):
    """Base of strategies that aggregate per-row directions and take a sign-momentum step.

    Parameters
    ----------
    num_nodes : int
        ``n``: nodes taking part, one per row.
    lr : float (default: 1e-3)
        Server learning rate.
    lr_milestones : Sequence[int] (default: ())
        Steps at which the learning rate is multiplied by ``lr_gamma``.
    lr_gamma : float (default: 0.1)
        Learning-rate decay factor.
    momentum : float (default: 0.9)
        Server-side momentum on the aggregated direction.
    weight_decay : float (default: 1e-4)
        Weight decay added to the aggregated direction.
    seed : int (default: 0)
        Sent to every node: the data split and each partition's slice of every step's
        minibatch derive from it, so all holders of a partition compute on the same samples.
    batch_size : int (default: 240)
        Global minibatch ``B`` per step; each partition's slice holds ``B // k`` samples.
    trainable_keys : Sequence[str] | None (default: None)
        Arrays the vote covers, in vote order: the model's trainable parameters
        (:func:`fl_election.contract.vote_keys`). ``None`` takes every floating-point array
        except batch-norm running statistics; a node whose model has a float buffer or a
        frozen parameter among them refuses, and the run stops in round 1 naming it.
    buffer_keys : Sequence[str] | None (default: None)
        Float arrays nodes report after their forward passes, aggregated by coordinate-wise
        median; ``None`` takes the batch-norm running statistics not voted on.
    evaluate_every : int (default: 0)
        Federated evaluation every this many rounds; 0 disables it.
    node_wait_timeout : float (default: 300.0)
        Seconds to wait for ``n`` nodes to connect before the first round.
    """

    #: What nodes send back (:data:`fl_election.contract.PAYLOADS`).
    payload: ClassVar[str] = contract.PAYLOAD_SIGN_VOTE

    # pylint: disable=too-many-arguments,too-many-instance-attributes
    def __init__(
        self,
        num_nodes: int,
        *,
        lr: float = 1e-3,
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        seed: int = 0,
        batch_size: int = 240,
        trainable_keys: Sequence[str] | None = None,
        buffer_keys: Sequence[str] | None = None,
        evaluate_every: int = 0,
        node_wait_timeout: float = 300.0,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if evaluate_every < 0:
            raise ValueError(f"evaluate_every must be >= 0, got {evaluate_every}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if batch_size < self.num_partitions_for(num_nodes):
            raise ValueError(
                f"batch_size ({batch_size}) must be >= the number of partitions "
                f"k = {self.num_partitions_for(num_nodes)}"
            )
        super().__init__(
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=num_nodes,
            min_evaluate_nodes=num_nodes,
            min_available_nodes=num_nodes,
            arrayrecord_key=contract.ARRAYS,
            configrecord_key=contract.CONFIG,
        )
        self.num_nodes = num_nodes
        self.lr = lr
        self.lr_milestones = tuple(lr_milestones)
        self.lr_gamma = lr_gamma
        self.seed = seed
        self.batch_size = batch_size
        self.trainable_keys = list(trainable_keys) if trainable_keys is not None else None
        self.buffer_keys = list(buffer_keys) if buffer_keys is not None else None
        self.evaluate_every = evaluate_every
        self.node_wait_timeout = node_wait_timeout
        self.optimizer = SignMomentumSGD(momentum=momentum, weight_decay=weight_decay)
        self.node_to_worker: dict[int, int] = {}
        self._arrays: ArrayRecord | None = None
        self._trainable_shapes: list[tuple[int, ...]] = []
        self._buffer_shapes: dict[str, tuple[int, ...]] = {}
        self._sent_to: set[int] = set()

    # ------------------------------------------------------------------ the subclass's part
    def num_partitions_for(self, num_nodes: int) -> int:
        """Return ``k`` for ``num_nodes`` rows (one partition per row unless overridden)."""
        return num_nodes

    @property
    def num_partitions(self) -> int:
        """``k``, the data partitions."""
        return self.num_partitions_for(self.num_nodes)

    def partitions_of(self, worker: int) -> tuple[int, ...]:
        """Return the partitions row ``worker`` holds (its own one unless overridden)."""
        return (worker,)

    @abstractmethod
    def parse_payload(self, vote: ArrayRecord, num_coordinates: int) -> ParsedReply:
        """Check a reply's :data:`~fl_election.contract.VOTE` record (raise RejectedReply).

        Returns a :class:`ParsedReply` whose node id, buffers and metrics are filled in by
        the caller.
        """

    @abstractmethod
    def aggregate_payloads(
        self, votes: list[ParsedReply], num_coordinates: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Return the aggregated direction (float32, length ``d``) and metrics."""

    def summary_settings(self) -> None:
        """Log the optimizer settings (the last lines of :meth:`summary`)."""
        log(
            INFO,
            "\t└──> Optimizer: lr %g (x%g at %s), momentum %g, weight decay %g, seed %d, batch %d",
            self.lr,
            self.lr_gamma,
            list(self.lr_milestones) or "never",
            self.optimizer.momentum,
            self.optimizer.weight_decay,
            self.seed,
            self.batch_size,
        )

    # ------------------------------------------------------------------ training
    def _assign_workers(self, grid: Grid) -> None:
        """Map node ids to rows once; the mapping is then fixed for the run."""
        deadline = time.monotonic() + self.node_wait_timeout
        while True:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= self.num_nodes:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(node_ids)} node(s) connected after {self.node_wait_timeout:g} s; "
                    f"the strategy needs n = {self.num_nodes}"
                )
            log(INFO, "Waiting for %d nodes (%d connected)", self.num_nodes, len(node_ids))
            time.sleep(1.0)
        if len(node_ids) > self.num_nodes:
            log(
                WARNING,
                "%d nodes connected, the strategy has %d rows: the extra nodes stay idle",
                len(node_ids),
                self.num_nodes,
            )
        self.node_to_worker = {node: row for row, node in enumerate(node_ids[: self.num_nodes])}

    def current_lr(self, server_round: int) -> float:
        """Return the learning rate of a round (step ``server_round - 1``)."""
        return step_lr(server_round - 1, self.lr, self.lr_milestones, self.lr_gamma)

    def _read_layout(self, arrays: ArrayRecord) -> None:
        """Fix the round's vote keys, buffer keys and shapes from the model's arrays."""
        if self.trainable_keys is None:
            self.trainable_keys = [
                key
                for key, array in arrays.items()
                if np.issubdtype(np.dtype(array.dtype), np.floating)
                and not key.endswith(contract.BUFFER_SUFFIXES)
            ]
        missing = [key for key in self.trainable_keys if key not in arrays]
        if missing:
            raise ContractError(f"trainable_keys {missing} are not in the model's arrays")
        if self.buffer_keys is None:
            self.buffer_keys = contract.buffer_keys(arrays.keys(), self.trainable_keys)
        missing = [key for key in self.buffer_keys if key not in arrays]
        if missing:
            raise ContractError(f"buffer_keys {missing} are not in the model's arrays")
        self._trainable_shapes = [tuple(arrays[key].shape) for key in self.trainable_keys]
        self._buffer_shapes = {key: tuple(arrays[key].shape) for key in self.buffer_keys}

    @property
    def num_coordinates(self) -> int:
        """``d``, the length of a vote (after the first :meth:`configure_train`)."""
        return int(sum(int(np.prod(s)) for s in self._trainable_shapes))

    def instruction(self, server_round: int, worker: int) -> TrainInstruction:
        """Return the train instruction of row ``worker`` in ``server_round``."""
        assert self.trainable_keys is not None and self.buffer_keys is not None
        return TrainInstruction(
            server_round=server_round,
            step=server_round - 1,
            seed=self.seed,
            worker_index=worker,
            num_workers=self.num_nodes,
            num_partitions=self.num_partitions,
            partition_ids=self.partitions_of(worker),
            partition_batch_size=self.batch_size // self.num_partitions,
            vote_keys=tuple(self.trainable_keys),
            num_coordinates=self.num_coordinates,
            buffer_keys=tuple(self.buffer_keys),
            payload=self.payload,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every node the model and its train instruction."""
        if not self.node_to_worker:
            self._assign_workers(grid)
        self._read_layout(arrays)
        self._arrays = arrays
        messages = []
        for node_id, worker in self.node_to_worker.items():
            if not self.partitions_of(worker):  # an empty row has nothing to vote on
                continue
            node_config = ConfigRecord(dict(config))
            node_config.update(self.instruction(server_round, worker).to_config())
            record = RecordDict({contract.ARRAYS: arrays, contract.CONFIG: node_config})
            messages.append(
                Message(content=record, message_type=MessageType.TRAIN, dst_node_id=node_id)
            )
        self._sent_to = {m.metadata.dst_node_id for m in messages}
        log(INFO, "configure_train: sent %d train messages", len(messages))
        return messages

    def parse_reply(self, message: Message) -> ParsedReply:
        """Check one reply against the contract; return it or raise :class:`RejectedReply`."""
        node = message.metadata.src_node_id
        if message.has_error():
            breach = message.error.code == contract.CONTRACT_ERROR_CODE
            raise RejectedReply(
                f"node {node} replied with an error: {message.error.reason}", contract=breach
            )
        content = message.content
        if contract.VOTE not in content.array_records:
            raise RejectedReply(f"node {node}: reply has no ArrayRecord {contract.VOTE!r}")
        metrics = self._read_metrics(content)
        reported = metrics.get(contract.METRIC_NUM_COORDINATES)
        if reported != self.num_coordinates:
            raise RejectedReply(
                f"node {node}: vote covers {reported} coordinates "
                f"({contract.METRIC_NUM_COORDINATES!r}), the round's vote keys cover "
                f"{self.num_coordinates}",
                contract=True,
            )
        try:
            parsed = self.parse_payload(content.array_records[contract.VOTE], self.num_coordinates)
        except RejectedReply as reason:
            raise RejectedReply(f"node {node}: {reason}") from reason
        return ParsedReply(
            node_id=node,
            payload=parsed.payload,
            abstain=parsed.abstain,
            buffers=self._read_buffers(node, content),
            metrics=metrics,
            num_bytes=parsed.num_bytes,
        )

    @staticmethod
    def _read_metrics(content: RecordDict) -> dict[str, float]:
        metrics: dict[str, float] = {}
        record = content.metric_records.get(contract.METRICS)
        for key, value in (record or {}).items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                metrics[key] = float(value)
        return metrics

    def _read_buffers(self, node: int, content: RecordDict) -> dict[str, np.ndarray]:
        buffers: dict[str, np.ndarray] = {}
        if not self._buffer_shapes:
            return buffers
        if contract.BUFFERS not in content.array_records:
            raise RejectedReply(f"node {node}: reply has no ArrayRecord {contract.BUFFERS!r}")
        record = content.array_records[contract.BUFFERS]
        for key, shape in self._buffer_shapes.items():
            if key not in record:
                raise RejectedReply(f"node {node}: buffer {key!r} is missing")
            try:
                value = record[key].numpy()
            except Exception as err:  # noqa: BLE001 - any payload that does not decode
                raise RejectedReply(f"node {node}: buffer {key!r} cannot be decoded") from err
            if value.dtype.kind != "f" or value.shape != shape:
                raise RejectedReply(f"node {node}: buffer {key!r} is malformed")
            value = value.astype(np.float32)
            if not np.all(np.isfinite(value)):
                raise RejectedReply(f"node {node}: buffer {key!r} is not finite in float32")
            buffers[key] = value
        return buffers

    def collect_votes(self, replies: Iterable[Message]) -> tuple[list[ParsedReply], list[str]]:
        """Validate replies: the accepted ones, and the reasons for the rejected ones.

        Raises
        ------
        ContractError
            When there were replies and every one broke the contract: the run cannot
            train, and its nodes' models do not match the strategy's vote keys.
        """
        votes: list[ParsedReply] = []
        rejected: list[str] = []
        breaches: list[str] = []
        seen: set[int] = set()
        for message in replies:
            node = message.metadata.src_node_id
            try:
                if node not in self._sent_to:
                    raise RejectedReply(f"node {node} was not asked to vote this round")
                if node in seen:
                    raise RejectedReply(f"node {node} replied twice; keeping the first reply")
                vote = self.parse_reply(message)
            except RejectedReply as reason:
                rejected.append(str(reason))
                if reason.contract:
                    breaches.append(str(reason))
                log(WARNING, "Rejected reply: %s", reason)
                continue
            seen.add(node)
            votes.append(vote)
        if breaches and len(breaches) == len(rejected) and not votes:
            raise ContractError(
                "every reply broke the client/server contract, nothing can be trained: "
                + "; ".join(sorted(set(breaches))[:5])
            )
        return votes, rejected

    def aggregate_train(
        self,
        server_round: int,
        replies: Iterable[Message],
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the accepted replies into a direction and take the momentum step."""
        if self._arrays is None or self.trainable_keys is None:
            raise RuntimeError("aggregate_train called before configure_train")
        replies = list(replies)
        votes, rejected = self.collect_votes(replies)
        answered = {m.metadata.src_node_id for m in replies}
        lr = self.current_lr(server_round)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "valid-votes": len(votes),
            "rejected-replies": len(rejected),
            "missing-replies": len(self._sent_to - answered),
            "uplink-bytes": int(sum(v.num_bytes for v in votes)),
            "lr": lr,
        }
        for key in (contract.METRIC_TRAIN_LOSS, contract.METRIC_COMPUTE_TIME):
            values = [v.metrics[key] for v in votes if key in v.metrics]
            if values:  # the median: a minority of nodes cannot steer a reported metric
                metrics[key] = float(np.median(values))
        if not votes:
            log(WARNING, "Round %d: no valid reply, the model is not updated", server_round)
            return None, MetricRecord(metrics)
        num_coordinates = self.num_coordinates
        direction, extra = self.aggregate_payloads(votes, num_coordinates)
        metrics.update(extra)

        weights = flatten_arrays([self._arrays[key].numpy() for key in self.trainable_keys])
        updated = self.optimizer.step(weights, direction, lr)
        new_trainable = dict(
            zip(self.trainable_keys, unflatten_arrays(updated, self._trainable_shapes), strict=True)
        )
        new_arrays = ArrayRecord()
        for key, array in self._arrays.items():
            if key in new_trainable:
                new_arrays[key] = Array(new_trainable[key])
            elif key in self._buffer_shapes:
                # Buffers are floats, not votes: a coordinate-wise median keeps a minority
                # of Byzantine reports from steering them.
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
