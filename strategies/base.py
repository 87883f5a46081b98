"""What the sign-vote strategies share: rows, train instructions, reply checks, the step.

:class:`DirectionStrategy` is a FedAvg subclass for strategies whose nodes each compute a
direction from the data partitions of their row (a packed sign vote, or a float gradient
for the median baseline) and whose server aggregates those directions robustly and applies
one sign-momentum step (:class:`fl_election.optim.SignMomentumSGD`). Subclasses say which
partitions a row holds, how a reply's payload is checked, and how payloads are
aggregated; the messages follow :mod:`fl_election.contract`.
"""

from __future__ import annotations

import dataclasses
import time
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any, ClassVar

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
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.supercore import log

from fl_election import contract
from fl_election.aggregation import coordinate_median
from fl_election.audit import Rejection, RoundAudit, sanitize
from fl_election.certificate import DEFAULT_CERTIFY_TIME_BUDGET
from fl_election.codes import AllocationCode
from fl_election.contract import ContractError, TrainInstruction
from fl_election.optim import (
    SignMomentumSGD,
    fingerprint,
    flatten_arrays,
    step_lr,
    unflatten_arrays,
)
from fl_election.quorum import FaultBudgetRule, QuorumDecision
from fl_election.wire import encode_vote

__all__ = ["DirectionStrategy", "ParsedReply", "QuorumError", "RejectedReply"]


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
    metrics: dict[str, int | float]
    num_bytes: int


class RejectedReply(ValueError):
    """A reply that cannot take part in the vote (the reason is the message).

    ``code`` is one of :data:`fl_election.audit.REASONS`. A ``"contract"`` rejection is a
    node whose model does not match the vote's coordinates: when every reply of a round is
    one, the run stops with the reasons instead of training nothing.
    """

    def __init__(self, reason: str, *, code: str = "bad-vote") -> None:
        super().__init__(sanitize(reason))
        self.code = code


class QuorumError(RuntimeError):
    """Too many rounds in a row below quorum, or no vote ever applied: the run stops."""


class DirectionStrategy(FedAvg):
    """Base of strategies that aggregate per-row directions and take a sign-momentum step.

    Parameters
    ----------
    num_nodes : int
        ``n``: nodes taking part, one per row.
    byzantine_budget : int (default: 0)
        ``b`` the run must withstand, ``0 <= b < n/2``; it sets the quorum.
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
    tied_keys : Mapping[str, Sequence[str]] | None (default: None)
        Tied weights (:func:`fl_election.contract.tied_keys`): each voted key with the
        other state-dict names of its tensor (``{"emb.weight": ("head.weight",)}``). The
        server writes each update to every alias, so the arrays agree with each other, and
        sends the map to the nodes: a node whose model ties otherwise refuses, naming the
        keys. ``None``: nothing is tied.
    crash_budget : int (default: 0)
        ``c``: honest rows that may fail (crash, time out) on top of the ``b`` Byzantine
        ones. A round is applied when at most ``f = b + c`` expected rows gave no accepted
        vote (:mod:`fl_election.quorum`); ``f < n/2``.
    fault_rule : str (default: "budget")
        ``"budget"`` (apply when visible faults <= f) or ``"conservative"`` (when
        ``b + visible faults <= f``: every missing node assumed honest).
    certify_time_budget : float | None (default: 10.0)
        Seconds the one certification of the code for ``f`` may take before round 1; at
        the budget the run reports a proven bound or ``"unknown"``. ``None``: no limit.
    max_rounds_below_quorum : int (default: 3)
        Rounds in a row over the fault budget after which the run stops with an error
        naming the missing and rejected nodes.
    reassign_after : int (default: 2)
        A row whose node gave no accepted reply for this many rounds in a row, or left, moves
        to a connected node that has no row (node churn); 0 never moves rows. Must be
        below ``max_rounds_below_quorum``, so that a row moves before the run stops. A node
        that answers within the round deadline, however late, keeps its row. Every node
        that may ever hold a row, spares included, counts against ``b``.
    max_resyncs : int (default: 2)
        Full models (after its first) one node may be sent within ``resync_window``
        rounds (``downlink = "vote"``): a node that reports another model's fingerprint,
        answers ``resync``, or falls out of step more often has its row counted as a
        faulty reply (``resync-limit``) and is not sent the model until the window clears.
    resync_window : int (default: 50)
        Rounds over which ``max_resyncs`` is counted.
    tie_rule : str (default: "gradient")
        How a node votes where its partitions tie: ``"gradient"`` (one bit per coordinate,
        by the sign of its regularised mean gradient) or ``"abstain"`` (a 0 vote, sent in a
        second plane). See :mod:`fl_election.contract`.
    downlink : str (default: "vote")
        ``"vote"``: nodes keep the model and the momentum in their node state and receive
        only the elected direction (1 bit per coordinate) and the batch-norm buffers, the
        full model only in their first round, after churn or resume, or when their copy is
        out of step; ``"full"``: every message carries the model (stateless clients). The
        float baseline always sends the model.
    worker_momentum : float (default: 0.0)
        Worker-side momentum (Signum): each node votes, per partition, the sign of the
        moving average ``m = beta m + (1 - beta) g`` it keeps in its node state, so every
        honest holder of a partition agrees; 0 votes on plain gradients. Usually with
        ``momentum=0`` (no server momentum). A node that takes over a row (churn) starts
        from zero averages.
    dirichlet_alpha : float (default: 0.0)
        Label skew of the partitions, sent to every node (Dirichlet concentration,
        :func:`fl_election.data.dirichlet_partition_indices`); 0 means i.i.d.
    local_steps : int (default: 1)
        Float gradients only: local SGD steps per round at the round's lr (FedAvg's
        ``E``); each node sends the pseudo-gradient ``(w_0 - w_E) / lr``.
    evaluate_every : int (default: 0)
        Federated evaluation every this many rounds; 0 disables it.
    node_wait_timeout : float (default: 300.0)
        Seconds to wait for ``n`` nodes to connect before the first round.
    """

    #: What nodes send back (:data:`fl_election.contract.PAYLOADS`).
    payload: ClassVar[str] = contract.PAYLOAD_SIGN_VOTE

    # pylint: disable=too-many-arguments,too-many-instance-attributes,too-many-locals
    def __init__(
        self,
        num_nodes: int,
        *,
        byzantine_budget: int = 0,
        lr: float = 1e-3,
        lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        seed: int = 0,
        batch_size: int = 240,
        trainable_keys: Sequence[str] | None = None,
        buffer_keys: Sequence[str] | None = None,
        tied_keys: Mapping[str, Sequence[str]] | None = None,
        crash_budget: int = 0,
        fault_rule: str = "budget",
        certify_time_budget: float | None = DEFAULT_CERTIFY_TIME_BUDGET,
        max_rounds_below_quorum: int = 3,
        reassign_after: int = 2,
        max_resyncs: int = 2,
        resync_window: int = 50,
        tie_rule: str = contract.TIE_RULE_GRADIENT,
        downlink: str = contract.DOWNLINK_VOTE,
        worker_momentum: float = 0.0,
        dirichlet_alpha: float = 0.0,
        local_steps: int = 1,
        evaluate_every: int = 0,
        node_wait_timeout: float = 300.0,
    ) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
        if not 0 <= byzantine_budget < num_nodes / 2:
            raise ValueError(
                f"byzantine_budget b = {byzantine_budget} must satisfy 0 <= b < n/2 = "
                f"{num_nodes / 2:g}"
            )
        if not 0 < lr < float("inf"):
            raise ValueError(f"lr must be finite and > 0, got {lr}")
        if evaluate_every < 0:
            raise ValueError(f"evaluate_every must be >= 0, got {evaluate_every}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if max_rounds_below_quorum < 1:
            raise ValueError(f"max_rounds_below_quorum must be >= 1, got {max_rounds_below_quorum}")
        if not 0 <= reassign_after < max_rounds_below_quorum:
            raise ValueError(
                f"reassign_after must be in [0, max_rounds_below_quorum = "
                f"{max_rounds_below_quorum}), got {reassign_after}: a row must move to a "
                "spare node before the run stops below quorum"
            )
        if tie_rule not in contract.TIE_RULES:
            raise ValueError(f"tie_rule must be one of {contract.TIE_RULES}, got {tie_rule!r}")
        if not 0.0 <= worker_momentum < 1.0:
            raise ValueError(f"worker_momentum must be in [0, 1), got {worker_momentum}")
        if not 0.0 <= dirichlet_alpha < float("inf"):
            raise ValueError(f"dirichlet_alpha must be finite and >= 0, got {dirichlet_alpha}")
        if downlink not in contract.DOWNLINKS:
            raise ValueError(f"downlink must be one of {contract.DOWNLINKS}, got {downlink!r}")
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
        self.byzantine_budget = byzantine_budget
        self.lr = lr
        self.lr_milestones = tuple(lr_milestones)
        self.lr_gamma = lr_gamma
        self.seed = seed
        self.batch_size = batch_size
        self.trainable_keys = list(trainable_keys) if trainable_keys is not None else None
        self._default_keys = trainable_keys is None
        self.buffer_keys = list(buffer_keys) if buffer_keys is not None else None
        self.tied_keys = dict(contract.normalize_tied_keys(tied_keys or {}))
        if max_resyncs < 0 or resync_window < 1:
            raise ValueError(
                f"max_resyncs must be >= 0 and resync_window >= 1, got {max_resyncs} and "
                f"{resync_window}"
            )
        self.quorum = FaultBudgetRule(
            self.allocation(),
            byzantine_budget,
            crash_budget,
            tie_rule=contract.CERTIFICATE_TIE_RULE[tie_rule],
            fault_rule=fault_rule,
            time_budget=certify_time_budget,
        )
        self.max_resyncs = max_resyncs
        self.resync_window = resync_window
        #: Rounds in which each node was sent the full model again (not its first time).
        self._resync_rounds: dict[int, list[int]] = {}
        #: Nodes sent the full model at least once by this strategy.
        self._synced: set[int] = set()
        #: Why each node's copy is out of step after the last round (it needs the model).
        self._out_of_step: dict[int, str] = {}
        #: Nodes not sent this round's message: over their resync limit.
        self._withheld: dict[int, int] = {}
        self._resynced: list[dict[str, Any]] = []
        self.max_rounds_below_quorum = max_rounds_below_quorum
        self.reassign_after = reassign_after
        self.evaluate_every = evaluate_every
        self.node_wait_timeout = node_wait_timeout
        self.optimizer = SignMomentumSGD(momentum=momentum, weight_decay=weight_decay)
        #: Rounds already done before this :meth:`start` (a resumed run); Flower's round
        #: ``r`` is the run's round ``r + round_offset``.
        self.round_offset = 0
        self.node_to_worker: dict[int, int] = {}
        self.audit: list[RoundAudit] = []
        self.rounds_applied = 0
        self._rounds_without_vote: dict[int, int] = {}
        self._below_quorum = 0
        self._reassigned: list[dict[str, int]] = []
        self._arrays: ArrayRecord | None = None
        self._trainable_shapes: list[tuple[int, ...]] = []
        self._buffer_shapes: dict[str, tuple[int, ...]] = {}
        self._sent_to: dict[int, int] = {}
        # Vote downlink: which node holds which round's model (by the fingerprint it
        # reported), and the last round's step.
        self.downlink = downlink if self.payload == contract.PAYLOAD_SIGN_VOTE else "full"
        self.tie_rule = tie_rule
        self.worker_momentum = worker_momentum
        self.dirichlet_alpha = dirichlet_alpha
        if not isinstance(local_steps, int) or local_steps < 1:
            raise ValueError(f"local_steps must be an integer >= 1, got {local_steps!r}")
        if local_steps > 1 and self.payload != contract.PAYLOAD_GRADIENT:
            raise ValueError("local_steps > 1 needs float gradients (sign votes take one step)")
        self.local_steps = local_steps
        self._holds: dict[int, int] = {}
        self._fingerprint = 0
        self._has_update = False
        self._last_direction: np.ndarray | None = None
        self._last_lr = 0.0
        self._downlink_bytes = 0

    @property
    def round_arrays(self) -> ArrayRecord | None:
        """The model this round's nodes compute on (set by :meth:`configure_train`)."""
        return self._arrays

    @property
    def last_direction(self) -> np.ndarray | None:
        """The direction the last round applied (``None`` when it applied none)."""
        return self._last_direction

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

    def allocation(self) -> AllocationCode:
        """Return the rows' allocation as a code (the identity unless overridden)."""
        return AllocationCode(
            np.eye(self.num_nodes, dtype=np.uint8), name=f"uncoded(n={self.num_nodes})"
        )

    @abstractmethod
    def parse_payload(self, vote: ArrayRecord, num_coordinates: int) -> ParsedReply:
        """Check a reply's :data:`~fl_election.contract.VOTE` record (raise RejectedReply).

        Returns a :class:`ParsedReply` whose node id, buffers and metrics are filled in by
        the caller.
        """

    @abstractmethod
    def aggregate_payloads(
        self, votes: list[ParsedReply], num_coordinates: int
    ) -> tuple[np.ndarray | None, dict[str, float]]:
        """Return the aggregated direction (float32, length ``d``) and metrics.

        A direction of ``None`` means the rule declines these votes: the round is treated
        as below quorum (``"aggregator-declined"``) and the model stays unchanged.
        """

    def summary_settings(self) -> None:
        """Log the quorum and optimizer settings (the last lines of :meth:`summary`)."""
        log(
            INFO,
            "\t├──> Fault budget: f = b + c = %d + %d (%s rule: a round applies with at most "
            "%d rows missing or rejected); code %s for f (%s); stop after %d rounds over it",
            self.quorum.byzantine_budget,
            self.quorum.crash_budget,
            self.quorum.fault_rule,
            self.quorum.allowed_faults,
            self.quorum.certified,
            self.quorum.certificate.status,
            self.max_rounds_below_quorum,
        )
        log(
            INFO,
            "\t├──> Downlink: %s; at most %d full-model resyncs per node in %d rounds",
            self.downlink,
            self.max_resyncs,
            self.resync_window,
        )
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

    # ------------------------------------------------------------------ run state
    def start(self, *args: Any, **kwargs: Any) -> Result:
        """Run the strategy (:meth:`flwr.serverapp.strategy.Strategy.start`), failing closed.

        Raises
        ------
        QuorumError
            When no round's vote was ever applied: the run trained nothing.
        """
        result = super().start(*args, **kwargs)
        if self.rounds_applied == 0:
            raise QuorumError(
                "no round's vote was ever applied (every round was below quorum or had no "
                "valid reply); the model is the initial one"
            )
        return result

    def state_dict(self) -> dict[str, Any]:
        """Return what a resumed run needs from the strategy (JSON-ready, plus the buffer)."""
        return {
            "round": self.round_offset + len(self.audit),
            "node_to_worker": {str(k): v for k, v in self.node_to_worker.items()},
            "rounds_without_vote": {str(k): v for k, v in self._rounds_without_vote.items()},
            "below_quorum": self._below_quorum,
            "rounds_applied": self.rounds_applied,
            "optimizer": self.optimizer.state_dict(),
            "trainable_keys": self.trainable_keys,
            "buffer_keys": self.buffer_keys,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: later rounds continue the run's numbering."""
        self.round_offset = int(state["round"])
        self.node_to_worker = {int(k): int(v) for k, v in state["node_to_worker"].items()}
        self._rounds_without_vote = {
            int(k): int(v) for k, v in state["rounds_without_vote"].items()
        }
        self._below_quorum = int(state["below_quorum"])
        self.rounds_applied = int(state["rounds_applied"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.trainable_keys = state["trainable_keys"]
        self.buffer_keys = state["buffer_keys"]

    # ------------------------------------------------------------------ rows and churn
    def _assign_workers(self, grid: Grid) -> None:
        """Map node ids to rows at the first round."""
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
                "%d nodes connected, the strategy has %d rows: the extra nodes stand by",
                len(node_ids),
                self.num_nodes,
            )
        self.node_to_worker = {node: row for row, node in enumerate(node_ids[: self.num_nodes])}

    def _reassign_orphans(self, connected: set[int]) -> None:
        """Move rows of departed or long-silent nodes to connected nodes without a row."""
        self._reassigned = []
        if self.reassign_after == 0:
            return
        spare = sorted(connected - set(self.node_to_worker))
        for node, row in sorted(self.node_to_worker.items(), key=lambda item: item[1]):
            if not spare:
                break
            gone = node not in connected
            if gone or self._rounds_without_vote.get(node, 0) >= self.reassign_after:
                new = spare.pop(0)
                del self.node_to_worker[node]
                self._rounds_without_vote.pop(node, None)
                self.node_to_worker[new] = row
                self._reassigned.append({"row": row, "from": node, "to": new})
                log(WARNING, "Row %d moves from node %d to node %d", row, node, new)

    def current_lr(self, server_round: int) -> float:
        """Return the learning rate of a run round (step ``server_round - 1``)."""
        return step_lr(server_round - 1, self.lr, self.lr_milestones, self.lr_gamma)

    def _read_layout(self, arrays: ArrayRecord) -> None:
        """Fix the round's vote keys, buffer keys and shapes from the model's arrays."""
        aliases = {a: v for v, names in self.tied_keys.items() for a in names}
        if self.trainable_keys is None:
            self.trainable_keys = [
                key
                for key, array in arrays.items()
                if np.issubdtype(np.dtype(array.dtype), np.floating)
                and not key.endswith(contract.BUFFER_SUFFIXES)
                and key not in aliases
            ]
        missing = [key for key in self.trainable_keys if key not in arrays]
        if missing:
            raise ContractError(f"trainable_keys {missing} are not in the model's arrays")
        keys = self.trainable_keys
        wrong = [f"{k} ({arrays[k].dtype})" for k in keys if arrays[k].dtype != "float32"]
        if wrong:  # the optimizer steps in float32: refused, never converted silently
            raise ContractError(
                f"the voted arrays must be float32, got {', '.join(wrong[:5])}: build "
                "initial_arrays from model.float() (and use a float32 model on the nodes)"
            )
        bad = sorted(
            f"{a} = {v}"
            for a, v in aliases.items()
            if a not in arrays or v not in arrays or arrays[a].shape != arrays[v].shape
        )
        if bad:
            raise ContractError(f"tied_keys {bad} are not arrays of one shape in the model")
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
        """Return the train instruction of row ``worker`` in run round ``server_round``."""
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
            tie_rule=self.tie_rule,
            weight_decay=self.optimizer.weight_decay,
            downlink=self.downlink,
            worker_momentum=self.worker_momentum,
            dirichlet_alpha=self.dirichlet_alpha,
            local_steps=self.local_steps,
            local_lr=self.current_lr(server_round) if self.local_steps > 1 else 0.0,
            tied_keys=tuple(self.tied_keys.items()),
        )

    # ------------------------------------------------------------------ training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send every connected node that holds a row the model and its train instruction."""
        run_round = server_round + self.round_offset
        if not self.node_to_worker:
            self._assign_workers(grid)
        connected = set(grid.get_node_ids())
        self._reassign_orphans(connected)
        self._read_layout(arrays)
        self._arrays = arrays
        self._downlink_bytes = 0
        update = momentum = None
        if self.downlink == contract.DOWNLINK_VOTE:
            keys = [*(self.trainable_keys or []), *self._buffer_shapes]
            self._fingerprint = fingerprint([arrays[k].numpy() for k in keys])
            update = self._update_record(arrays)
            if self.optimizer.buf is not None:
                momentum = ArrayRecord({contract.MOMENTUM_BUFFER: Array(self.optimizer.buf)})
        messages = []
        self._withheld = {}
        self._resynced = []
        for node_id, worker in self.node_to_worker.items():
            if not self.partitions_of(worker):  # an empty row has nothing to vote on
                continue
            if node_id not in connected:  # gone; counted as missing, its row waits for churn
                continue
            needs_model = update is None or self._holds.get(node_id) != run_round - 1
            if needs_model and self.downlink == contract.DOWNLINK_VOTE:
                if node_id in self._synced:
                    cause = self._out_of_step.get(node_id, "missing")
                    if not self._allow_resync(node_id, run_round):
                        # Over its limit: the node's row is a faulty reply this round and
                        # the model is not sent again (a node must not buy a full model
                        # every round with a wrong fingerprint or a resync answer).
                        self._withheld[node_id] = worker
                        continue
                    self._resynced.append({"node": node_id, "row": worker, "cause": cause})
                self._synced.add(node_id)
            node_config = ConfigRecord(dict(config))
            node_config.update(self.instruction(run_round, worker).to_config())
            record = RecordDict({contract.CONFIG: node_config})
            if self.downlink == contract.DOWNLINK_VOTE:
                node_config[contract.MODEL_FINGERPRINT] = self._fingerprint
                node_config[contract.MOMENTUM_COEFFICIENT] = self.optimizer.momentum
            if not needs_model:
                assert update is not None
                record[contract.UPDATE] = update
                node_config[contract.UPDATE_LR] = self._last_lr
                node_config[contract.UPDATE_APPLIED] = int(self._last_direction is not None)
            else:
                record[contract.ARRAYS] = arrays
                if momentum is not None:
                    record[contract.MOMENTUM] = momentum
            self._downlink_bytes += _record_bytes(record)
            messages.append(
                Message(content=record, message_type=MessageType.TRAIN, dst_node_id=node_id)
            )
        self._sent_to = {
            node: worker
            for node, worker in self.node_to_worker.items()
            if self.partitions_of(worker) and node not in self._withheld
        }
        log(INFO, "configure_train: sent %d train messages", len(messages))
        return messages

    def _allow_resync(self, node: int, run_round: int) -> bool:
        """Count one more full model for ``node``; False when it is over its limit."""
        recent = [
            r for r in self._resync_rounds.get(node, []) if r > run_round - self.resync_window
        ]
        if len(recent) >= self.max_resyncs:
            self._resync_rounds[node] = recent
            return False
        self._resync_rounds[node] = [*recent, run_round]
        return True

    def _update_record(self, arrays: ArrayRecord) -> ArrayRecord | None:
        """Return last round's update (direction planes and buffers), or None in round 1."""
        if not self._has_update:
            return None
        record = ArrayRecord()
        if self._last_direction is not None:
            for key, plane in encode_vote(self._last_direction).items():
                record[key] = Array(plane)
        for key in self._buffer_shapes:
            record[key] = arrays[key]
        return record

    def parse_reply(self, message: Message) -> ParsedReply:
        """Check one reply against the contract; return it or raise :class:`RejectedReply`.

        Every field a node controls is checked here, for size, dtype and finiteness after
        the cast, before it is used; anything else in the reply is ignored.
        """
        node = message.metadata.src_node_id
        if message.has_error():
            code = {
                contract.CONTRACT_ERROR_CODE: "contract",
                contract.RESYNC_ERROR_CODE: "resync",
            }.get(message.error.code, "error")
            raise RejectedReply(
                f"node {node} replied with an error: {message.error.reason}", code=code
            )
        content = message.content
        if contract.VOTE not in content.array_records:
            raise RejectedReply(
                f"node {node}: reply has no ArrayRecord {contract.VOTE!r} (a coded client "
                "builds its reply with fl_election.clients.coded_train)",
                code="no-vote",
            )
        metrics = self._read_metrics(content)
        reported = metrics.get(contract.METRIC_NUM_COORDINATES)
        if reported != self.num_coordinates:
            raise RejectedReply(
                f"node {node}: vote covers {reported} coordinates "
                f"({contract.METRIC_NUM_COORDINATES!r}), the round's vote keys cover "
                f"{self.num_coordinates}",
                code="contract",
            )
        try:
            parsed = self.parse_payload(content.array_records[contract.VOTE], self.num_coordinates)
        except RejectedReply as reason:
            raise RejectedReply(f"node {node}: {reason}", code=reason.code) from reason
        return ParsedReply(
            node_id=node,
            payload=parsed.payload,
            abstain=parsed.abstain,
            buffers=self._read_buffers(node, content),
            metrics=metrics,
            num_bytes=parsed.num_bytes,
        )

    @staticmethod
    def _read_metrics(content: RecordDict) -> dict[str, int | float]:
        """Finite scalar metrics of a reply (lists and anything that does not convert dropped)."""
        metrics: dict[str, int | float] = {}
        record = content.metric_records.get(contract.METRICS)
        for key, value in (record or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            try:
                number = float(value)
            except (OverflowError, ValueError):
                continue
            if np.isfinite(number) and abs(number) < 1e300:
                # integers stay exact: a 63-bit model fingerprint must compare equal
                metrics[key] = value if isinstance(value, int) else number
        return metrics

    def _read_buffers(self, node: int, content: RecordDict) -> dict[str, np.ndarray]:
        buffers: dict[str, np.ndarray] = {}
        if not self._buffer_shapes:
            return buffers
        if contract.BUFFERS not in content.array_records:
            raise RejectedReply(
                f"node {node}: reply has no ArrayRecord {contract.BUFFERS!r}", code="bad-buffers"
            )
        record = content.array_records[contract.BUFFERS]
        for key, shape in self._buffer_shapes.items():
            if key not in record:
                raise RejectedReply(f"node {node}: buffer {key!r} is missing", code="bad-buffers")
            array = record[key]
            if (
                tuple(array.shape) != shape
                or len(array.data) > 8 * max(1, int(np.prod(shape))) + 256
            ):
                raise RejectedReply(f"node {node}: buffer {key!r} is malformed", code="bad-buffers")
            try:
                value = array.numpy()
            except Exception as err:  # noqa: BLE001 - any payload that does not decode
                raise RejectedReply(
                    f"node {node}: buffer {key!r} cannot be decoded", code="bad-buffers"
                ) from err
            if value.dtype.kind != "f" or value.shape != shape:
                raise RejectedReply(f"node {node}: buffer {key!r} is malformed", code="bad-buffers")
            with np.errstate(over="ignore", invalid="ignore"):
                value = value.astype(np.float32)
            if not np.all(np.isfinite(value)):
                raise RejectedReply(
                    f"node {node}: buffer {key!r} is not finite in float32", code="bad-buffers"
                )
            buffers[key] = value
        return buffers

    def collect_votes(
        self, replies: Iterable[Message]
    ) -> tuple[list[ParsedReply], list[Rejection]]:
        """Validate replies: the accepted ones, and the rejected ones with their reasons.

        Raises
        ------
        ContractError
            When there were replies and every one broke the contract: the run cannot
            train, and its nodes' models do not match the strategy's vote keys.
        """
        votes: list[ParsedReply] = []
        rejected: list[Rejection] = []
        seen: set[int] = set()
        for message in replies:
            node = message.metadata.src_node_id
            if node == SUPERLINK_NODE_ID and message.has_error():
                # The SuperLink answers for a node that went offline (NODE_UNAVAILABLE):
                # that node is counted as missing, not as a rejected reply of "node 1".
                log(INFO, "Node unavailable: %s", sanitize(message.error.reason))
                continue
            try:
                if node not in self._sent_to:
                    raise RejectedReply(
                        f"node {node} was not asked to vote this round", code="unexpected"
                    )
                if node in seen:
                    raise RejectedReply(
                        f"node {node} replied twice; keeping the first reply", code="duplicate"
                    )
                seen.add(node)
                vote = self.parse_reply(message)
            except RejectedReply as reason:
                rejected.append(Rejection(node, self._sent_to.get(node), reason.code, str(reason)))
                log(WARNING, "Rejected reply: %s", reason)
                continue
            votes.append(vote)
        if rejected and not votes and all(r.code == "contract" for r in rejected):
            reasons = sorted({r.reason.split(": ", 1)[-1] for r in rejected})
            hint = (
                " (trainable_keys was not given, so the strategy voted on every float array "
                "but batch-norm statistics: pass trainable_keys=vote_keys(model))"
                if self._default_keys
                else ""
            )
            raise ContractError(
                "every reply broke the client/server contract, nothing can be trained"
                + hint
                + ": "
                + "; ".join(reasons[:5])
            )
        return votes, rejected

    def aggregate_train(
        self,
        server_round: int,
        replies: Iterable[Message],
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the accepted replies into a direction and take the momentum step.

        The step is taken only when the accepted votes make a quorum
        (:class:`fl_election.quorum.QuorumRule`); otherwise the model stays unchanged.

        Raises
        ------
        QuorumError
            After ``max_rounds_below_quorum`` rounds in a row below quorum.
        """
        if self._arrays is None or self.trainable_keys is None:
            raise RuntimeError("aggregate_train called before configure_train")
        run_round = server_round + self.round_offset
        replies = list(replies)
        votes, rejected = self.collect_votes(replies)
        answered = {m.metadata.src_node_id for m in replies}
        voters = {v.node_id for v in votes}
        self._holds = {
            v.node_id: run_round
            for v in votes
            if v.metrics.get(contract.METRIC_MODEL_FINGERPRINT) == self._fingerprint
        }
        rejected += [
            Rejection(
                node,
                row,
                "resync-limit",
                f"node {node} needed the full model more than {self.max_resyncs} times in "
                f"{self.resync_window} rounds; not sent this round",
            )
            for node, row in sorted(self._withheld.items())
        ]
        self._record_out_of_step(voters, rejected, answered)
        expected = {**self._sent_to, **self._withheld}
        for node in expected:
            self._rounds_without_vote[node] = (
                0 if node in voters else self._rounds_without_vote.get(node, 0) + 1
            )
        decision = self.quorum.decide(expected.values(), (self._sent_to[n] for n in voters))
        audit = RoundAudit(
            round=run_round,
            voters=sorted(self._sent_to[v.node_id] for v in votes),
            missing=[
                {"node": node, "row": row}
                for node, row in sorted(self._sent_to.items())
                if node not in answered
            ],
            rejected=[
                {"node": r.node, "row": r.row, "code": r.code, "reason": r.reason} for r in rejected
            ],
            decision=decision.reason,
            applied=decision.applied,
            reassigned=list(self._reassigned),
            resynced=list(self._resynced),
        )
        self.audit.append(audit)
        lr = self.current_lr(run_round)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "valid-votes": len(votes),
            "rejected-replies": len(rejected),
            "missing-replies": len(audit.missing),
            "missing-rows": [m["row"] for m in audit.missing],
            "rejected-rows": [r.row for r in rejected if r.row is not None],
            "applied": int(decision.applied),
            # 1 when the code is certified for the fault budget: an applied round's vote is
            # then the majority over partitions on every coordinate; 0: it may be wrong.
            "certified-for-fault-budget": int(self.quorum.certified == "certified"),
            "uplink-bytes": int(sum(v.num_bytes for v in votes)),
            "downlink-bytes": self._downlink_bytes,
            "lr": lr,
        }
        if votes and self.num_coordinates:
            bits = 8 * sum(v.num_bytes for v in votes) / (len(votes) * self.num_coordinates)
            metrics["uplink-bits-per-coordinate"] = bits
        self._has_update = True
        self._last_direction = None
        self._last_lr = lr
        for key in (contract.METRIC_TRAIN_LOSS, contract.METRIC_COMPUTE_TIME):
            values = [v.metrics[key] for v in votes if key in v.metrics]
            if values:  # the median: a minority of nodes cannot steer a reported metric
                metrics[key] = float(np.median(values))
        if not decision.applied:
            return self._below(run_round, decision, audit, metrics)
        direction, extra = self.aggregate_payloads(votes, self.num_coordinates)
        metrics.update(extra)
        if direction is None:
            # The aggregation rule declined these votes (Bulyan below 4b + 3 replies).
            decision = dataclasses.replace(decision, applied=False, reason="aggregator-declined")
            audit.decision, audit.applied = decision.reason, False
            metrics["applied"] = 0
            return self._below(run_round, decision, audit, metrics)
        weights = flatten_arrays([self._arrays[key].numpy() for key in self.trainable_keys])
        saved_buf = self.optimizer.buf
        with np.errstate(over="ignore", invalid="ignore"):
            updated = self.optimizer.step(weights, direction, lr)
        if not np.all(np.isfinite(updated)):
            # A float aggregate of huge but finite gradients can still overflow: the step
            # is refused, the momentum restored, and the round audited like any other.
            self.optimizer.buf = saved_buf
            decision = dataclasses.replace(decision, applied=False, reason="non-finite")
            audit.decision, audit.applied = decision.reason, False
            metrics["applied"] = 0
            return self._below(run_round, decision, audit, metrics)
        self._below_quorum = 0
        self.rounds_applied += 1
        self._last_direction = direction
        new_trainable = dict(
            zip(self.trainable_keys, unflatten_arrays(updated, self._trainable_shapes), strict=True)
        )
        for voted, aliases in self.tied_keys.items():  # one tensor: every name moves with it
            if voted in new_trainable:
                new_trainable.update(dict.fromkeys(aliases, new_trainable[voted]))
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

    def _record_out_of_step(
        self, voters: set[int], rejected: list[Rejection], answered: set[int]
    ) -> None:
        """Note why each expected node will need the full model next round (the audit's cause)."""
        codes = {r.node: r.code for r in rejected}
        self._out_of_step = {}
        for node in [*self._sent_to, *self._withheld]:
            if node in self._holds:
                continue
            if node in voters:
                cause = "fingerprint-mismatch"
            elif node in codes:
                cause = codes[node]
            else:
                cause = "missing" if node not in answered else "rejected"
            self._out_of_step[node] = cause

    def _below(
        self,
        run_round: int,
        decision: QuorumDecision,
        audit: RoundAudit,
        metrics: dict[str, int | float | list[int] | list[float]],
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record a round below quorum; stop the run after too many in a row."""
        self._below_quorum += 1
        log(
            WARNING,
            "Round %d not applied (%s: %d accepted votes, %d rows faulty, at most %d allowed): "
            "the model is unchanged",
            run_round,
            decision.reason,
            decision.votes,
            decision.faults,
            decision.allowed,
        )
        if self._below_quorum >= self.max_rounds_below_quorum:
            absent = [f"node {m['node']} (row {m['row']})" for m in audit.missing]
            bad = [f"node {r['node']} (row {r['row']}, {r['code']})" for r in audit.rejected]
            raise QuorumError(
                f"{self._below_quorum} rounds in a row not applied (last: round {run_round}, "
                f"{decision.reason}, {decision.votes} accepted votes, {decision.faults} rows "
                f"faulty, fault budget allows {decision.allowed}); missing: "
                f"{', '.join(absent) or 'none'}; rejected: {', '.join(bad) or 'none'}"
            )
        return None, MetricRecord(metrics)

    # ------------------------------------------------------------------ evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation every ``evaluate_every`` rounds (never when 0)."""
        run_round = server_round + self.round_offset
        if self.evaluate_every == 0 or run_round % self.evaluate_every:
            return []
        connected = set(grid.get_node_ids())
        return [
            m
            for m in super().configure_evaluate(server_round, arrays, config, grid)
            if m.metadata.dst_node_id in connected
        ]


def _record_bytes(record: RecordDict) -> int:
    """Bytes of the arrays a message carries (what dominates its size on the wire)."""
    return sum(len(a.data) for r in record.array_records.values() for a in r.values())
