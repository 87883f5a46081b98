"""The client/server contract of election-coded training: what each message carries.

Defined once here and imported by the strategies, the client API, the Byzantine mod, the
tests and the docs (in the style of Flower's ``KEY_CLIPPING_NORM``, shared by its DP
strategy and its DP mods). Framework-free: records are plain mappings here; the Flower
side only moves them into ``ConfigRecord`` / ``ArrayRecord`` / ``MetricRecord``.

A **train message** (server to node) holds the model in one of two forms and the instruction:

- :data:`ARRAYS` (``ArrayRecord``): the model's state dict as the server holds it (a *full*
  message: the first round, after churn or resume, a node out of step, or always with
  ``downlink = "full"``), with the optimizer's momentum in :data:`MOMENTUM` under
  ``downlink = "vote"``;
- or :data:`UPDATE` (``ArrayRecord``, ``downlink = "vote"``): the previous round's elected
  direction, packed like a vote (:mod:`fl_election.wire`), and the batch-norm buffers; the
  node keeps the model and the momentum in its node state and applies exactly the server's
  step (:data:`UPDATE_LR`, :data:`WEIGHT_DECAY`, :data:`MOMENTUM_COEFFICIENT`), then checks
  the result against :data:`MODEL_FINGERPRINT` (:func:`fl_election.optim.fingerprint`); a
  node whose copy differs replies with :data:`RESYNC_ERROR_CODE` and gets the full model
  next round;
- :data:`CONFIG` (``ConfigRecord``): a :class:`TrainInstruction`, i.e. the node's row of
  the allocation code (:data:`WORKER_INDEX`, :data:`PARTITION_IDS` out of
  :data:`NUM_PARTITIONS`), the :data:`STEP` and :data:`SEED` that fix every partition's
  slice of the step's minibatch, the slice size :data:`PARTITION_BATCH_SIZE`, what to send
  back (:data:`PAYLOAD`), and the coordinates the vote covers: :data:`VOTE_KEYS`, the
  names of the trainable parameters *in vote order*, and :data:`NUM_COORDINATES`, their
  total size. A node flattens its gradient in exactly that order, looked up by name, so
  a different parameter order cannot misalign a vote. A name that is not a trainable
  parameter of the node's model (a frozen parameter, a buffer, a typo), or a total size
  that differs, is a :class:`ContractError` on the node, which replies with an error of
  code :data:`CONTRACT_ERROR_CODE` naming the cause. :data:`TIED_KEYS` lists the model's tied
  weights (each voted key and the other state-dict names sharing its tensor,
  :func:`tied_keys`): the node refuses when its own model's tying differs, and writes every
  update to each alias too, so no name of a shared tensor keeps a stale value.
  :data:`TIE_RULE` says how a node whose
  partitions split evenly on a coordinate votes: ``"gradient"`` (the default: by the sign of
  its mean float gradient plus ``weight-decay`` times the weight, +1 where that is exactly
  0, so every vote is one bit) or ``"abstain"`` (a 0, sent in an abstain plane).

A **train reply** (node to server) holds:

- :data:`VOTE` (``ArrayRecord``): the vote in :mod:`fl_election.wire`'s format (sign plane,
  optional abstain plane), or :data:`GRADIENT` (float32) when :data:`PAYLOAD` asked for
  :data:`PAYLOAD_GRADIENT` (the full-gradient baseline);
- :data:`BUFFERS` (``ArrayRecord``): the float buffers named by :data:`BUFFER_KEYS`
  (batch-norm statistics after the node's forward passes), aggregated by median;
- :data:`METRICS` (``MetricRecord``): :data:`METRIC_NUM_COORDINATES` (the vote's length,
  which the server checks against :data:`NUM_COORDINATES`), :data:`METRIC_NUM_EXAMPLES`,
  :data:`METRIC_TRAIN_LOSS`, :data:`METRIC_COMPUTE_TIME`, and under ``downlink = "vote"``
  :data:`METRIC_MODEL_FINGERPRINT` (the model the node computed on, so that the server
  knows it can send the next round's update instead of the model).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ARRAYS",
    "BUFFERS",
    "BUFFER_KEYS",
    "BUFFER_SUFFIXES",
    "CONFIG",
    "CONTRACT_ERROR_CODE",
    "GRADIENT",
    "METRICS",
    "METRIC_COMPUTE_TIME",
    "METRIC_NUM_COORDINATES",
    "METRIC_NUM_EXAMPLES",
    "METRIC_TRAIN_LOSS",
    "NUM_COORDINATES",
    "NUM_PARTITIONS",
    "NUM_WORKERS",
    "PARTITION_BATCH_SIZE",
    "PARTITION_IDS",
    "PAYLOAD",
    "PAYLOADS",
    "PAYLOAD_GRADIENT",
    "PAYLOAD_SIGN_VOTE",
    "SEED",
    "SERVER_ROUND",
    "STEP",
    "TIED_KEYS",
    "VOTE",
    "VOTE_KEYS",
    "WORKER_INDEX",
    "DOWNLINK",
    "DOWNLINKS",
    "DOWNLINK_FULL",
    "DOWNLINK_VOTE",
    "METRIC_MODEL_FINGERPRINT",
    "MODEL_FINGERPRINT",
    "MOMENTUM",
    "MOMENTUM_BUFFER",
    "MOMENTUM_COEFFICIENT",
    "RESYNC_ERROR_CODE",
    "TIE_RULE",
    "TIE_RULES",
    "CERTIFICATE_TIE_RULE",
    "TIE_RULE_ABSTAIN",
    "TIE_RULE_GRADIENT",
    "UPDATE",
    "UPDATE_APPLIED",
    "UPDATE_LR",
    "WEIGHT_DECAY",
    "WORKER_MOMENTUM",
    "LOCAL_STEPS",
    "LOCAL_LR",
    "DIRICHLET_ALPHA",
    "ContractError",
    "TrainInstruction",
    "buffer_keys",
    "check_tying",
    "normalize_tied_keys",
    "tied_keys",
    "vote_keys",
]

# ---------------------------------------------------------------- records of a message
#: Train message: the model's state dict (``ArrayRecord``).
ARRAYS = "arrays"
#: Train message: the :class:`TrainInstruction` (``ConfigRecord``).
CONFIG = "config"
#: Reply: the vote (``ArrayRecord`` in :mod:`fl_election.wire` format, or :data:`GRADIENT`).
VOTE = "vote"
#: Reply: the float buffers named by :data:`BUFFER_KEYS` (``ArrayRecord``).
BUFFERS = "buffers"
#: Reply: the node's metrics (``MetricRecord``).
METRICS = "metrics"
#: Train message (``downlink = "vote"``): the previous round's update (``ArrayRecord``).
UPDATE = "update"
#: Train message (``downlink = "vote"``, full form): the optimizer's momentum buffer.
MOMENTUM = "momentum"
#: Array of :data:`MOMENTUM`.
MOMENTUM_BUFFER = "buffer"

# ---------------------------------------------------------------- keys of the instruction
SERVER_ROUND = "server-round"
#: The SignSGD step (``server-round - 1``); with :data:`SEED` it fixes every slice.
STEP = "step"
#: Seed of the data split and of every partition's slice (shared by all nodes).
SEED = "seed"
#: The node's row of the allocation code.
WORKER_INDEX = "worker-index"
#: ``n``, the rows of the code.
NUM_WORKERS = "num-workers"
#: ``k``, the data partitions of the code.
NUM_PARTITIONS = "num-partitions"
#: The partitions this node holds (the ones of its row), a list of ints.
PARTITION_IDS = "partition-ids"
#: Samples of each partition's slice of the step's global minibatch, ``B // k``.
PARTITION_BATCH_SIZE = "partition-batch-size"
#: Names of the trainable parameters the vote covers, in vote order (a list of str).
VOTE_KEYS = "vote-keys"
#: Total number of scalars of :data:`VOTE_KEYS`: the vote's length ``d``.
NUM_COORDINATES = "num-coordinates"
#: The model's tied weights, as the server holds them (:func:`tied_keys`): a flat list of
#: str pairs ``[voted, alias, voted, alias, ...]``, one pair per other state-dict name of a
#: voted parameter's tensor. Empty (or absent) when nothing is tied.
TIED_KEYS = "tied-keys"
#: Names of the float buffers a reply carries in :data:`BUFFERS` (a list of str).
BUFFER_KEYS = "buffer-keys"
#: What the reply's :data:`VOTE` holds: :data:`PAYLOAD_SIGN_VOTE` or :data:`PAYLOAD_GRADIENT`.
PAYLOAD = "payload"
PAYLOAD_SIGN_VOTE = "sign-vote"
PAYLOAD_GRADIENT = "gradient"
PAYLOADS = (PAYLOAD_SIGN_VOTE, PAYLOAD_GRADIENT)
#: How a node votes where its partitions tie: :data:`TIE_RULES`.
TIE_RULE = "tie-rule"
TIE_RULE_GRADIENT = "gradient"
TIE_RULE_ABSTAIN = "abstain"
TIE_RULES = (TIE_RULE_GRADIENT, TIE_RULE_ABSTAIN)
#: The certificate's model of each tie rule (:data:`fl_election.certificate.TIE_RULES`): a
#: tie broken by the gradient's sign cannot be trusted, so it counts as a wrong vote.
CERTIFICATE_TIE_RULE = {TIE_RULE_GRADIENT: "forced", TIE_RULE_ABSTAIN: "abstain"}
#: What carries the model to nodes: :data:`DOWNLINKS`.
DOWNLINK = "downlink"
DOWNLINK_FULL = "full"
DOWNLINK_VOTE = "vote"
DOWNLINKS = (DOWNLINK_FULL, DOWNLINK_VOTE)
#: Worker-side momentum (Signum): each partition votes the sign of its gradient's moving
#: average with this coefficient, kept per partition in the node state; 0 disables it.
WORKER_MOMENTUM = "worker-momentum"
#: Local SGD steps of a float node per round (FedAvg's E): the node steps ``local-steps``
#: times with ``local-lr`` on successive minibatches of its slice and sends the
#: pseudo-gradient ``(w_0 - w_E) / local-lr`` (the gradient itself when E = 1).
LOCAL_STEPS = "local-steps"
#: The learning rate of the local steps (the server's lr of the round).
LOCAL_LR = "local-lr"
#: Label skew of the partitions: Dirichlet concentration, 0 for i.i.d. partitions
#: (:func:`fl_election.data.partition_indices`).
DIRICHLET_ALPHA = "dirichlet-alpha"
#: The server's weight decay (the tie rule's regulariser and the update's).
WEIGHT_DECAY = "weight-decay"
#: The momentum coefficient of the update (``downlink = "vote"``).
MOMENTUM_COEFFICIENT = "momentum"
#: The learning rate of the update in :data:`UPDATE` (``downlink = "vote"``).
UPDATE_LR = "update-lr"
#: Whether :data:`UPDATE` holds a step (0: the previous round was below quorum).
UPDATE_APPLIED = "update-applied"
#: Fingerprint of the model this round computes on (``downlink = "vote"``).
MODEL_FINGERPRINT = "model-fingerprint"

# ---------------------------------------------------------------- keys of a reply
#: Array of :data:`VOTE` holding the float32 mean gradient (payload ``gradient``).
GRADIENT = "gradient"
#: The vote's length; must equal the instruction's :data:`NUM_COORDINATES`.
METRIC_NUM_COORDINATES = "num-coordinates"
METRIC_NUM_EXAMPLES = "num-examples"
METRIC_TRAIN_LOSS = "train-loss"
METRIC_COMPUTE_TIME = "compute-time"
#: The fingerprint of the model the node computed on (``downlink = "vote"``).
METRIC_MODEL_FINGERPRINT = "model-fingerprint"

#: Error code of a reply whose node could not follow the contract (the reason names why).
CONTRACT_ERROR_CODE = 4300
#: Error code of a reply whose node's copy of the model differs from the server's: it gets
#: the full model next round.
RESYNC_ERROR_CODE = 4301

#: State-dict suffixes of batch-norm running statistics: floats that forward passes
#: change, reported in :data:`BUFFERS` and aggregated by median, never voted on.
BUFFER_SUFFIXES = ("running_mean", "running_var")


class ContractError(ValueError):
    """A message does not follow the contract (the message names the key and the cause)."""


def _int(config: Mapping[str, Any], key: str, minimum: int = 0) -> int:
    if key not in config:
        raise ContractError(f"train instruction has no {key!r}")
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ContractError(
            f"train instruction {key!r} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def _float(config: Mapping[str, Any], key: str) -> float:
    value = config.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContractError(f"train instruction {key!r} must be a number, got {value!r}")
    return float(value)


def _strings(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    if key not in config:
        raise ContractError(f"train instruction has no {key!r}")
    value = config[key]
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ContractError(f"train instruction {key!r} must be a list of names, got {value!r}")
    names = tuple(value)
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise ContractError(f"train instruction {key!r} must hold distinct names, got {names!r}")
    return names


@dataclass(frozen=True)
class TrainInstruction:
    """What a train message asks of one node (the :data:`CONFIG` record).

    Parameters
    ----------
    server_round : int
        The Flower round (from 1).
    step : int
        The SignSGD step, ``server_round - 1``.
    seed : int
        Seed of the data split and of every partition's slice.
    worker_index : int
        The node's row of the code.
    num_workers : int
        ``n``.
    num_partitions : int
        ``k``.
    partition_ids : tuple[int, ...]
        The partitions the node holds, each in ``[0, k)``.
    partition_batch_size : int
        Samples per partition slice, ``B // k`` (at least 1).
    vote_keys : tuple[str, ...]
        Trainable parameters the vote covers, in vote order.
    num_coordinates : int
        Total size of ``vote_keys``.
    buffer_keys : tuple[str, ...] (default: ())
        Float buffers the reply carries.
    payload : str (default: "sign-vote")
        :data:`PAYLOAD_SIGN_VOTE` or :data:`PAYLOAD_GRADIENT`.
    tie_rule : str (default: "gradient")
        How a node votes where its partitions tie (:data:`TIE_RULES`).
    weight_decay : float (default: 0.0)
        The server's weight decay, the tie rule's regulariser.
    downlink : str (default: "full")
        :data:`DOWNLINK_FULL` or :data:`DOWNLINK_VOTE` (the node keeps the model in its
        node state and applies the server's update).
    worker_momentum : float (default: 0.0)
        Signum's coefficient in ``[0, 1)``; 0 votes on plain gradients.
    dirichlet_alpha : float (default: 0.0)
        Label skew of the partitions (Dirichlet concentration); 0 means i.i.d.
    local_steps : int (default: 1)
        Local SGD steps of a float node this round (:data:`LOCAL_STEPS`); 1 for sign votes.
    local_lr : float (default: 0.0)
        Their learning rate (:data:`LOCAL_LR`); needed when ``local_steps > 1``.
    tied_keys : tuple[tuple[str, tuple[str, ...]], ...] (default: ())
        The server's tied weights: each voted key with the other state-dict names of its
        tensor (:func:`tied_keys`, as pairs). The node refuses when its model ties
        otherwise (:func:`check_tying`) and writes each voted array to its aliases.
    """

    server_round: int
    step: int
    seed: int
    worker_index: int
    num_workers: int
    num_partitions: int
    partition_ids: tuple[int, ...]
    partition_batch_size: int
    vote_keys: tuple[str, ...]
    num_coordinates: int
    buffer_keys: tuple[str, ...] = ()
    payload: str = PAYLOAD_SIGN_VOTE
    tie_rule: str = TIE_RULE_GRADIENT
    weight_decay: float = 0.0
    downlink: str = DOWNLINK_FULL
    worker_momentum: float = 0.0
    dirichlet_alpha: float = 0.0
    local_steps: int = 1
    local_lr: float = 0.0
    tied_keys: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ContractError` naming the first inconsistent field."""
        if not 0 <= self.worker_index < self.num_workers:
            raise ContractError(
                f"{WORKER_INDEX!r} = {self.worker_index} is outside [0, {self.num_workers})"
            )
        if not self.partition_ids:
            raise ContractError(f"{PARTITION_IDS!r} is empty: the node has nothing to vote on")
        bad = [j for j in self.partition_ids if not 0 <= j < self.num_partitions]
        if bad or len(set(self.partition_ids)) != len(self.partition_ids):
            raise ContractError(
                f"{PARTITION_IDS!r} must be distinct partitions in [0, {self.num_partitions}), "
                f"got {list(self.partition_ids)}"
            )
        if self.partition_batch_size < 1:
            raise ContractError(
                f"{PARTITION_BATCH_SIZE!r} must be >= 1, got {self.partition_batch_size}"
            )
        if self.payload not in PAYLOADS:
            raise ContractError(f"{PAYLOAD!r} must be one of {PAYLOADS}, got {self.payload!r}")
        if self.tie_rule not in TIE_RULES:
            raise ContractError(f"{TIE_RULE!r} must be one of {TIE_RULES}, got {self.tie_rule!r}")
        if self.downlink not in DOWNLINKS:
            raise ContractError(f"{DOWNLINK!r} must be one of {DOWNLINKS}, got {self.downlink!r}")
        if not 0.0 <= self.worker_momentum < 1.0:
            raise ContractError(f"{WORKER_MOMENTUM!r} must be in [0, 1)")
        if not 0.0 <= self.dirichlet_alpha < float("inf"):
            raise ContractError(f"{DIRICHLET_ALPHA!r} must be finite and >= 0")
        if self.local_steps < 1:
            raise ContractError(f"{LOCAL_STEPS!r} must be >= 1, got {self.local_steps}")
        if self.local_steps > 1 and self.payload != PAYLOAD_GRADIENT:
            raise ContractError(f"{LOCAL_STEPS!r} > 1 needs a float gradient payload")
        if self.local_steps > 1 and not 0.0 < self.local_lr < float("inf"):
            raise ContractError(f"{LOCAL_LR!r} must be finite and > 0 with local steps")
        if not 0.0 <= self.weight_decay < float("inf"):
            raise ContractError(f"{WEIGHT_DECAY!r} must be finite and >= 0")
        overlap = sorted(set(self.vote_keys) & set(self.buffer_keys))
        if overlap:
            raise ContractError(f"{overlap} are both voted on and reported as buffers")
        aliases = _aliases(dict(self.tied_keys))
        overlap = sorted(set(aliases) & (set(self.vote_keys) | set(self.buffer_keys)))
        if overlap:
            raise ContractError(
                f"{TIED_KEYS!r}: {overlap} are aliases of tied weights, so neither voted on "
                "nor reported as buffers"
            )

    def to_config(self) -> dict[str, int | float | str | list[int] | list[str]]:
        """Return the instruction as the flat mapping a ``ConfigRecord`` holds."""
        return {
            SERVER_ROUND: self.server_round,
            STEP: self.step,
            SEED: self.seed,
            WORKER_INDEX: self.worker_index,
            NUM_WORKERS: self.num_workers,
            NUM_PARTITIONS: self.num_partitions,
            PARTITION_IDS: list(self.partition_ids),
            PARTITION_BATCH_SIZE: self.partition_batch_size,
            VOTE_KEYS: list(self.vote_keys),
            NUM_COORDINATES: self.num_coordinates,
            BUFFER_KEYS: list(self.buffer_keys),
            PAYLOAD: self.payload,
            TIE_RULE: self.tie_rule,
            WEIGHT_DECAY: self.weight_decay,
            DOWNLINK: self.downlink,
            WORKER_MOMENTUM: self.worker_momentum,
            DIRICHLET_ALPHA: self.dirichlet_alpha,
            LOCAL_STEPS: self.local_steps,
            LOCAL_LR: self.local_lr,
            TIED_KEYS: [name for v, names in self.tied_keys for a in names for name in (v, a)],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainInstruction:
        """Read and check an instruction from a train message's :data:`CONFIG` record.

        Parameters
        ----------
        config : Mapping[str, Any]
            The record (other keys, e.g. a user's own, are ignored).

        Returns
        -------
        TrainInstruction
            The checked instruction.

        Raises
        ------
        ContractError
            On a missing key, a value of the wrong type or an inconsistent field.
        """
        partitions = config.get(PARTITION_IDS)
        if isinstance(partitions, (str, bytes)) or not isinstance(partitions, Iterable):
            raise ContractError(f"train instruction {PARTITION_IDS!r} must be a list of ints")
        ids = tuple(partitions)
        if not all(isinstance(j, int) and not isinstance(j, bool) for j in ids):
            raise ContractError(f"train instruction {PARTITION_IDS!r} must be a list of ints")
        payload = config.get(PAYLOAD, PAYLOAD_SIGN_VOTE)
        buffers = _strings(config, BUFFER_KEYS) if BUFFER_KEYS in config else ()
        return cls(
            server_round=_int(config, SERVER_ROUND, 1),
            step=_int(config, STEP),
            seed=_int(config, SEED),
            worker_index=_int(config, WORKER_INDEX),
            num_workers=_int(config, NUM_WORKERS, 1),
            num_partitions=_int(config, NUM_PARTITIONS, 1),
            partition_ids=ids,
            partition_batch_size=_int(config, PARTITION_BATCH_SIZE, 1),
            vote_keys=_strings(config, VOTE_KEYS),
            num_coordinates=_int(config, NUM_COORDINATES),
            buffer_keys=buffers,
            payload=str(payload),
            tie_rule=str(config.get(TIE_RULE, TIE_RULE_GRADIENT)),
            weight_decay=_float(config, WEIGHT_DECAY),
            downlink=str(config.get(DOWNLINK, DOWNLINK_FULL)),
            worker_momentum=_float(config, WORKER_MOMENTUM),
            dirichlet_alpha=_float(config, DIRICHLET_ALPHA),
            local_steps=_int(config, LOCAL_STEPS, 1) if LOCAL_STEPS in config else 1,
            local_lr=_float(config, LOCAL_LR),
            tied_keys=_tied_from_config(config),
        )


def normalize_tied_keys(
    tied: Mapping[str, Iterable[str]],
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Return a tied-weights map as pairs ``(voted key, aliases)``, checked.

    Raises
    ------
    ContractError
        When a name is tied to two tensors, to itself, or is both a voted key and an alias.
    """
    pairs = tuple((str(voted), tuple(str(a) for a in names)) for voted, names in tied.items())
    _aliases(dict(pairs))
    return tuple((voted, names) for voted, names in pairs if names)


def _aliases(tied: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Return ``{alias: voted key}``; raise when a name stands for more than one tensor."""
    aliases: dict[str, str] = {}
    for voted, names in tied.items():
        for alias in names:
            if alias == voted or alias in aliases or alias in tied:
                raise ContractError(
                    f"{TIED_KEYS!r}: {alias!r} is tied to more than one tensor, or to itself"
                )
            aliases[alias] = voted
    return aliases


def _tied_from_config(config: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    value = config.get(TIED_KEYS, [])
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) % 2
        or not all(isinstance(name, str) for name in value)
    ):
        raise ContractError(
            f"train instruction {TIED_KEYS!r} must be a flat list of str pairs "
            "[voted, alias, voted, alias, ...]"
        )
    tied: dict[str, list[str]] = {}
    for voted, alias in zip(value[::2], value[1::2], strict=True):
        tied.setdefault(voted, []).append(alias)
    return normalize_tied_keys(tied)


class _NamedParameters(Protocol):
    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterable[tuple[str, Any]]: ...


def _memory(parameter: Any) -> tuple[int, str] | None:
    """Return where a tensor's data starts (``None`` without memory, e.g. on ``meta``)."""
    try:
        pointer = int(parameter.data_ptr())
    except (AttributeError, RuntimeError, TypeError):
        return None
    return (pointer, str(parameter.device)) if pointer else None


def _parameter_groups(model: _NamedParameters) -> list[tuple[str, Any, list[str]]]:
    """Return each distinct parameter of ``model``: its first name, itself, its other names.

    In ``named_parameters`` order, every name included (``remove_duplicate=False``), so a
    parameter shared by several modules (tied weights, ``head.weight = emb.weight``) is one
    entry named by its first name, with the others as aliases.

    Raises
    ------
    ContractError
        When two distinct parameters share memory: autograd would give each its own part of
        the gradient, so no single vote could cover them.
    """
    groups: dict[int, tuple[str, Any, list[str]]] = {}
    memory: dict[tuple[int, str], str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        group = groups.get(id(parameter))
        if group is not None:
            group[2].append(name)
            continue
        where = _memory(parameter)
        if where is not None:
            if where in memory:
                raise ContractError(
                    f"parameters {memory[where]!r} and {name!r} are distinct tensors over the "
                    "same memory: their gradients are computed apart; tie them as one "
                    "parameter (e.g. head.weight = emb.weight)"
                )
            memory[where] = name
        groups[id(parameter)] = (name, parameter, [])
    return list(groups.values())


def tied_keys(model: _NamedParameters) -> dict[str, tuple[str, ...]]:
    """Return the tied weights of ``model``: each voted key with its tensor's other names.

    A tensor shared by several modules (``head.weight = emb.weight``) is voted on once,
    under its first name in ``named_parameters`` order (:func:`vote_keys`); the state dict
    (and so the server's arrays) still holds it under every name. Pass the result as the
    strategy's ``tied_keys``: the server then writes each update to every alias, and a node
    whose model ties otherwise refuses (:func:`check_tying`). Duck-typed like
    :func:`vote_keys`.

    Parameters
    ----------
    model : torch.nn.Module
        The model (its parameters' names, identities and ``requires_grad`` flags are read).

    Returns
    -------
    dict[str, tuple[str, ...]]
        ``{voted key: (alias, ...)}`` for every trainable parameter with more than one name
        (state-dict names), in ``named_parameters`` order; empty when nothing is tied.
    """
    return {
        first: tuple(aliases)
        for first, parameter, aliases in _parameter_groups(model)
        if aliases and parameter.requires_grad
    }


def check_tying(server: Mapping[str, Sequence[str]], node: Mapping[str, Sequence[str]]) -> None:
    """Raise :class:`ContractError` naming the keys whose tying differs between the sides.

    Parameters
    ----------
    server : Mapping[str, Sequence[str]]
        The instruction's tied weights (:data:`TIED_KEYS`).
    node : Mapping[str, Sequence[str]]
        The node's model's, :func:`tied_keys`.
    """
    ours = {(alias, voted) for voted, names in server.items() for alias in names}
    theirs = {(alias, voted) for voted, names in node.items() for alias in names}
    if ours == theirs:
        return
    differ = sorted({name for pair in ours ^ theirs for name in pair})

    def show(pairs: set[tuple[str, str]]) -> str:
        return ", ".join(f"{a} = {v}" for a, v in sorted(pairs)) or "nothing more"

    raise ContractError(
        f"tied weights differ between the server and this node on {differ}: the server ties "
        f"{show(ours - theirs)}, this node's model ties {show(theirs - ours)}; build the same "
        "model on both sides and pass tied_keys=tied_keys(model) to the strategy"
    )


def vote_keys(model: _NamedParameters) -> list[str]:
    """Return the names a vote covers for ``model``: its trainable parameters, in order.

    Duck-typed on ``named_parameters()`` (a ``torch.nn.Module``), so the server can call it
    without this module importing torch. Frozen parameters (``requires_grad=False``) and
    buffers are not voted on. A parameter shared by several modules (tied weights) is
    listed once, under its first name in ``named_parameters`` order; its other names are
    :func:`tied_keys`.

    Parameters
    ----------
    model : torch.nn.Module
        The model (only its parameter names and ``requires_grad`` flags are read).

    Returns
    -------
    list[str]
        The names to pass as the strategy's ``trainable_keys``.
    """
    return [name for name, parameter, _ in _parameter_groups(model) if parameter.requires_grad]


def buffer_keys(state_keys: Iterable[str], voted: Iterable[str]) -> list[str]:
    """Return the keys of a state dict reported as buffers: batch-norm statistics not voted on.

    Parameters
    ----------
    state_keys : Iterable[str]
        Keys of the model's state dict, in order.
    voted : Iterable[str]
        The vote's keys.

    Returns
    -------
    list[str]
        Keys ending in one of :data:`BUFFER_SUFFIXES` that are not voted on, in order.
    """
    voted_set = set(voted)
    return [k for k in state_keys if k.endswith(BUFFER_SUFFIXES) and k not in voted_set]
