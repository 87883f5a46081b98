"""The client API: an election-coded ClientApp for any PyTorch model, loss and data.

Two entry points, both following :mod:`fl_election.contract`:

- :func:`coded_train` is one function from (train message, model, loss, data) to the
  reply, for whoever writes their own ClientApp;
- :func:`coded_client_app` builds the whole ClientApp from the model, the loss and the
  data (and, optionally, test data for federated evaluation).

Per train message the node reads its :class:`~fl_election.contract.TrainInstruction`, loads
the server's arrays into the model, takes each held partition's slice of the step's global
minibatch (:func:`fl_election.data.partition_indices` then
:func:`fl_election.data.step_batch`, so every holder of a partition computes on the same
samples), computes each slice's gradient over the instruction's vote keys in their order,
its sign, the local majority, and replies with the vote encoded once
(:func:`fl_election.wire.encode_vote`), the requested buffers and the metrics. A model
whose trainable parameters do not match the vote keys gets an error reply of code
:data:`~fl_election.contract.CONTRACT_ERROR_CODE` naming the cause.

Attacks reach this computation only through :mod:`fl_election.clients.attack_hook`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from logging import WARNING
from typing import Any, TypeAlias

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.common.logger import log
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data import default_collate as _default_collate

from fl_election import contract
from fl_election.attacks import LabelFlipAttack, forge_float_gradient
from fl_election.audit import sanitize
from fl_election.contract import ContractError, TrainInstruction
from fl_election.data import (
    dirichlet_partition_indices,
    partition_indices,
    step_batch,
)
from fl_election.optim import SignMomentumSGD, fingerprint, flatten_arrays, unflatten_arrays
from fl_election.training import (
    LossFn,
    OutputsFn,
    TargetsFn,
    model_logits,
    partition_gradients,
    partition_seed,
    partition_signs,
    shared_rng,
    vote_parameters,
)
from fl_election.voting import local_majority, unpack_signs
from fl_election.wire import VOTE_KEYS, decode_vote, encode_vote

from .attack_hook import ActiveAttack, active_attack

__all__ = [
    "AugmentFn",
    "TrainData",
    "coded_client_app",
    "coded_train",
    "default_device",
]

#: One partition's samples or the whole training set: a pair of tensors ``(x, y)`` indexed
#: along the first axis, or anything map-style (``len`` and integer indexing: a list of
#: samples, a ``torch.utils.data.Dataset``) whose samples are ``(x, y)`` pairs, or dicts
#: read with ``keys=(input_key, target_key)``.
Samples: TypeAlias = tuple[torch.Tensor, torch.Tensor] | Dataset[Any] | Sequence[Any]
#: The training data of a node: the whole training set (identical on every node; the
#: library cuts it into the code's k partitions with the run's seed), or a mapping from
#: partition id to that partition's samples (a deployment where a node stores only the
#: partitions its row holds).
TrainData: TypeAlias = Samples | Mapping[int, Samples]
#: ``augment(x, step, partition, seed) -> x``: seeded augmentation of one slice (it must
#: depend only on its arguments, so every holder of a partition augments alike).
AugmentFn: TypeAlias = Callable[[torch.Tensor, int, int, int], torch.Tensor]

_default_collate_fn: Callable[[list[Any]], Any] = _default_collate


class _KeyedSamples(Dataset[tuple[Any, Any]]):
    """Dict samples read as ``(sample[input_key], sample[target_key])`` pairs."""

    def __init__(self, source: Any, keys: tuple[str, str]) -> None:
        self.source = source
        self.keys = keys

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        sample = self.source[index]
        return sample[self.keys[0]], sample[self.keys[1]]


#: Data already checked by :func:`_prepare`, by identity: (data, keys, what to train on).
_PREPARED: dict[int, tuple[Any, Any, Any]] = {}


def _is_data(source: Any) -> bool:
    """Whether ``source`` is data (not a function of the node's context returning data)."""
    if isinstance(source, (tuple, list, Mapping, Dataset)):
        return True
    return hasattr(source, "__getitem__") and hasattr(source, "__len__")


def _prepare(data: Any, keys: tuple[str, str] | None, *, partitions: bool = True) -> Any:
    """Check ``data`` once (one fetch) and return what the node trains on.

    Dict samples are wrapped to yield ``(x, y)`` pairs; other data comes back as it is.
    Checked data is remembered by identity, so a node pays the check once.

    Raises
    ------
    ContractError
        A ``ValueError`` naming what is wrong with the data and the fix.
    """
    entry = _PREPARED.get(id(data))
    if entry is not None and entry[0] is data and entry[1] == keys:
        return entry[2]
    if keys is not None and (
        not isinstance(keys, (tuple, list))
        or len(keys) != 2
        or not all(isinstance(k, str) for k in keys)
    ):
        raise ContractError(f"keys must be a pair of str (input key, target key), got {keys!r}")
    if partitions and isinstance(data, Mapping) and not _is_dict_sample_source(data):
        if not data:
            raise ContractError("training data is an empty mapping of partitions")
        prepared: Any = {}
        for partition, samples in data.items():
            if isinstance(partition, bool) or not isinstance(partition, (int, np.integer)):
                raise ContractError(
                    "a mapping as training data maps partition ids (int) to samples, got key "
                    f"{partition!r}"
                )
            try:
                prepared[int(partition)] = _prepare(samples, keys, partitions=False)
            except ContractError as error:
                raise ContractError(f"partition {partition}: {error}") from error
    else:
        prepared = _check_samples(data, keys)
    if len(_PREPARED) >= 64:
        _PREPARED.clear()
    _PREPARED[id(data)] = (data, keys, prepared)
    return prepared


def _is_dict_sample_source(data: Mapping[Any, Any]) -> bool:
    # A mapping keyed by str (a columnar dict, {"x": ..., "y": ...}) is not a partition map.
    return any(isinstance(key, str) for key in data)


def _check_samples(samples: Any, keys: tuple[str, str] | None) -> Any:
    """Check one sample set and return it (dict samples wrapped); see :func:`_prepare`."""
    if isinstance(samples, tuple):
        kinds = ", ".join(type(part).__name__ for part in samples)
        if len(samples) != 2 or not all(isinstance(part, torch.Tensor) for part in samples):
            raise ContractError(
                f"a tuple as data must be (x, y) tensors, got ({kinds}): convert them with "
                "torch.as_tensor, or pass a list of (x, y) samples or a Dataset"
            )
        x, y = samples
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
            raise ContractError(
                "tensor data (x, y) must hold the same positive number of samples along the "
                f"first axis, got shapes {tuple(x.shape)} and {tuple(y.shape)}"
            )
        return samples
    if not _is_data(samples) or isinstance(samples, (str, bytes)):
        raise ContractError(
            f"data must be (x, y) tensors, a list of (x, y) samples or a map-style Dataset "
            f"(len and integer indexing), got a {type(samples).__name__}"
        )
    try:
        count = len(samples)
    except TypeError as error:
        raise ContractError(
            f"data of type {type(samples).__name__} has no length: an iterable-style "
            "Dataset cannot be sliced per partition; use a map-style one (__len__, "
            "__getitem__)"
        ) from error
    if count == 0:
        raise ContractError(f"data ({type(samples).__name__}) is empty")
    with shared_rng(0, python_and_numpy=True):  # random transforms must not move any RNG
        try:
            first = samples[0]
        except Exception as error:
            raise ContractError(
                f"cannot fetch sample 0 of the data ({type(samples).__name__}): "
                f"{sanitize(error, 200)}"
            ) from error
        if keys is None:
            if isinstance(first, Mapping):
                raise ContractError(
                    f"the data yields dict samples (keys {sorted(map(str, first))}): pass "
                    "keys=(input_key, target_key), e.g. keys=('x', 'y'), to coded_client_app "
                    "/ coded_train"
                )
            if not isinstance(first, (tuple, list)) or len(first) != 2:
                raise ContractError(
                    f"the data's samples must be (x, y) pairs, got a {type(first).__name__}"
                    + (f" of length {len(first)}" if isinstance(first, (tuple, list)) else "")
                    + ": yield (x, y), or dicts read with keys=(input_key, target_key)"
                )
            adapted: Any = samples
        else:
            if not isinstance(first, Mapping):
                raise ContractError(
                    f"keys={tuple(keys)!r} reads dict samples, but the data yields a "
                    f"{type(first).__name__}: leave keys=None for (x, y) samples"
                )
            missing = [key for key in keys if key not in first]
            if missing:
                raise ContractError(
                    f"the data's dict samples have no key {missing[0]!r} (they have "
                    f"{sorted(map(str, first))}): pass keys=(input_key, target_key) naming two "
                    "of them"
                )
            adapted = _KeyedSamples(samples, (keys[0], keys[1]))
        try:
            x, y = _take(adapted, np.arange(min(2, count), dtype=np.int64))
        except Exception as error:
            raise ContractError(
                "the data's samples do not batch into (x, y) tensors with torch's "
                f"default_collate: {sanitize(error, 200)}"
            ) from error
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ContractError(
            f"the data's samples batch into ({type(x).__name__}, {type(y).__name__}), not "
            "(x, y) tensors: yield tensors (or numbers / NumPy arrays)"
        )
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ContractError(
            f"the data's samples batch into x of shape {tuple(x.shape)} and y of shape "
            f"{tuple(y.shape)}: x and y need one row per sample"
        )
    return adapted


#: Records of the node state (``context.state``) under ``downlink = "vote"``.
_STATE_MODEL = "fl-election.model"
_STATE_MOMENTUM = "fl-election.momentum"
_STATE_SIGNUM = "fl-election.signum"
#: Node state: the float worker momentum a node sends, and (an omniscient Byzantine) the
#: momentum of every partition's gradient, what the honest holders send.
_STATE_FLOAT_MOMENTUM = "fl-election.float-momentum"
_STATE_KNOWN_MOMENTUM = "fl-election.known-momentum"


def default_device() -> torch.device:
    """Return the device a coded client computes on: CUDA when torch sees one, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=16)
def _shards(num_samples: int, k: int, seed: int) -> tuple[np.ndarray, ...]:
    return tuple(partition_indices(num_samples, k, seed))


_SKEWED_SHARDS: dict[tuple[int, int, int, int, float], tuple[np.ndarray, ...]] = {}


def _skewed_shards(samples: Samples, k: int, seed: int, alpha: float) -> tuple[np.ndarray, ...]:
    """Label-skewed shards of ``samples`` (cached per data object, k, seed and alpha)."""
    labels_source = samples[1] if isinstance(samples, tuple) else samples
    if isinstance(labels_source, _KeyedSamples):
        labels_source = labels_source.source
    key = (id(labels_source), _num_samples(samples), k, seed, alpha)
    if key not in _SKEWED_SHARDS:
        if isinstance(samples, tuple):
            labels = samples[1].detach().cpu().numpy()
        else:
            labels = np.asarray([samples[i][1] for i in range(len(samples))])  # type: ignore[arg-type]
        if labels.ndim != 1:
            raise ContractError(
                "dirichlet-alpha needs one class label per sample (1-D targets), got targets "
                f"of shape {labels.shape}"
            )
        if len(_SKEWED_SHARDS) >= 16:
            _SKEWED_SHARDS.clear()
        _SKEWED_SHARDS[key] = tuple(dirichlet_partition_indices(labels, k, alpha, seed))
    return _SKEWED_SHARDS[key]


def _take(samples: Samples, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the ``(x, y)`` batch of ``samples`` at ``index``."""
    if isinstance(samples, tuple):
        x, y = samples
        where = torch.from_numpy(index)
        return x[where], y[where]
    batch = _default_collate_fn([samples[int(i)] for i in index])
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise ValueError("a Dataset used for training must yield (x, y) pairs")
    return batch[0], batch[1]


def _num_samples(samples: Samples) -> int:
    if isinstance(samples, tuple):
        if len(samples) != 2 or len(samples[0]) != len(samples[1]):
            raise ValueError("tensor training data must be a pair (x, y) of equal length")
        return len(samples[0])
    return len(samples)  # type: ignore[arg-type]


def partition_batch(
    data: TrainData, instruction: TrainInstruction, partition: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return partition ``partition``'s slice of the instruction's step minibatch.

    Parameters
    ----------
    data : TrainData
        The node's training data.
    instruction : TrainInstruction
        The train message's instruction (step, seed, k, slice size).
    partition : int
        The partition, in ``[0, k)``.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        The slice's inputs and targets (on the CPU, as stored). A ``Dataset``'s items are
        fetched with torch's CPU generator, Python's ``random`` and NumPy's global
        generator seeded by ``partition_seed(seed, step, partition, stream="data")``
        (restored afterwards), so random transforms draw the same on every holder.
    """
    k, seed, step = instruction.num_partitions, instruction.seed, instruction.step
    size = instruction.partition_batch_size
    if isinstance(data, Mapping):
        if partition not in data:
            raise ValueError(
                f"this node holds no data for partition {partition} (it has {sorted(data)})"
            )
        samples = data[partition]
        shard = np.arange(_num_samples(samples), dtype=np.int64)
    else:
        samples = data
        if instruction.dirichlet_alpha > 0:
            shard = _skewed_shards(samples, k, seed, instruction.dirichlet_alpha)[partition]
        else:
            shard = _shards(_num_samples(samples), k, seed)[partition]
    index = step_batch(shard, step, partition, seed, size)
    data_seed = partition_seed(seed, step, partition, stream="data")
    with shared_rng(data_seed, python_and_numpy=True):
        return _take(samples, index)


def _noise_seed(seed: int, step: int, worker: int) -> int:
    # Independent noise per worker: noisy copies of a partition disagree, as in the paper.
    return int(np.random.SeedSequence([seed, step, worker]).generate_state(1)[0])


@dataclass
class _Computed:
    vote: Mapping[str, np.ndarray[Any, Any]]
    losses: list[float]
    num_examples: int


#: What colluding omniscient Byzantines share: every partition's gradient signs (or float
#: gradients) at one step and model. One entry per process, so that ``b`` Byzantines
#: simulated in one process compute the ``k`` partitions once per step, not ``b`` times.
#: The entry holds the objects its key names (data, loss, augmentation), compared by
#: identity, so that a new object at a freed one's address never hits a stale entry.
_SHARED: list[tuple[tuple[Any, ...], tuple[Any, ...], np.ndarray]] = []


#: The float vector colluding float-only attackers send at one step (one entry per process).
_FORGED: list[tuple[tuple[Any, ...], np.ndarray]] = []


def _data_parts(data: TrainData) -> tuple[Any, ...]:
    return tuple(data) if isinstance(data, tuple) else (data,)


def _batches(
    data: TrainData,
    instruction: TrainInstruction,
    partitions: Sequence[int],
    augment: AugmentFn | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for j in partitions:
        x, y = partition_batch(data, instruction, j)
        if augment is not None:
            augment_seed = partition_seed(instruction.seed, instruction.step, j, stream="augment")
            with shared_rng(augment_seed, python_and_numpy=True):
                x = augment(x, instruction.step, j, instruction.seed)
        batches.append((x, y))
    return batches


def _compute_seeds(instruction: TrainInstruction, partitions: Sequence[int]) -> list[int]:
    """Seeds of the partitions' forward and backward passes, shared by all their holders."""
    return [partition_seed(instruction.seed, instruction.step, j) for j in partitions]


def _everyone(
    model: nn.Module,
    loss_fn: LossFn,
    data: TrainData,
    instruction: TrainInstruction,
    augment: AugmentFn | None,
    parameters: Sequence[torch.Tensor],
    model_key: int,
    per_partition: bool = False,
) -> np.ndarray:
    """Return what an omniscient adversary knows: all k partitions at this step.

    For a float payload, the ``(k, d)`` float32 gradients; for a sign vote, the int16
    ``sign_sum`` over the k partitions, or (``per_partition``) the ``(k, d)`` int8 signs
    themselves. Honest targets, no noise: the adversary knows the true gradients. Cached
    per process by (model fingerprint, step, data, loss, ...), so colluding Byzantines in
    one process share the computation.
    """
    key = (
        per_partition,
        model_key,
        instruction.step,
        instruction.seed,
        instruction.num_partitions,
        instruction.partition_batch_size,
        instruction.dirichlet_alpha,
        instruction.payload,
        instruction.vote_keys,
    )
    objects = (*_data_parts(data), loss_fn, augment)
    for cached_key, cached_objects, value in _SHARED:
        if cached_key == key and len(cached_objects) == len(objects):
            if all(a is b for a, b in zip(cached_objects, objects, strict=True)):
                return value
    _SHARED.clear()  # one entry: the previous step's is dead weight
    # The k extra forward passes must not move this node's batch-norm statistics (they
    # would differ between the Byzantine that computes and those that reuse the result).
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    everyone = range(instruction.num_partitions)
    batches = _batches(data, instruction, everyone, augment)
    # The honest holders' seeds, so the adversary sees the signs they compute.
    seeds = _compute_seeds(instruction, everyone)
    if instruction.payload == contract.PAYLOAD_GRADIENT:
        gradients, _ = partition_gradients(
            model, batches, loss_fn=loss_fn, parameters=parameters, seeds=seeds
        )
        known = gradients.numpy()
    else:
        result = partition_signs(
            model, batches, loss_fn=loss_fn, parameters=parameters, seeds=seeds
        )
        if per_partition:
            known = result.signs.to(torch.int8).numpy()
        else:
            known = result.signs.sum(dim=0, dtype=torch.int16).numpy()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(saved[name])
    known.setflags(write=False)  # shared by every Byzantine of the step: read only
    _SHARED.append((key, objects, known))
    return known


def _compute(
    model: nn.Module,
    loss_fn: LossFn,
    data: TrainData,
    instruction: TrainInstruction,
    attack_hook: ActiveAttack | None,
    augment: AugmentFn | None,
    noise_std: float,
    context: Context | None,
    model_key: int,
    outputs_fn: OutputsFn | None = None,
    label_flip_fn: TargetsFn | None = None,
) -> _Computed:
    """Gradients of the held partitions, then the vote (or the float gradient).

    An omniscient attack also needs every partition's signs or gradients
    (:func:`_everyone`, shared by colluding Byzantines of one process).
    """
    parameters = vote_parameters(model, instruction.vote_keys, instruction.num_coordinates)
    _check_float32(zip(instruction.vote_keys, parameters, strict=True))
    attack = attack_hook.attack if attack_hook is not None else None
    own = list(instruction.partition_ids)
    batches = _batches(data, instruction, own, augment)
    known = None
    if attack is not None and (attack.needs_sign_sum or attack.needs_partition_signs):
        known = _everyone(
            model,
            loss_fn,
            data,
            instruction,
            augment,
            parameters,
            model_key,
            per_partition=attack.needs_partition_signs,
        )
    targets_fn: TargetsFn | None = None
    if attack is not None and attack.poisons_data:
        flip = label_flip_fn if label_flip_fn is not None else LabelFlipAttack.flip

        def targets_fn(targets: torch.Tensor, outputs: Any) -> torch.Tensor:
            return flip(targets, model_logits(outputs, outputs_fn))

    if attack is not None and attack.perturbs_gradient:
        noise_std = float(getattr(attack, "std", noise_std))
    rows = list(range(len(own)))
    seeds = _compute_seeds(instruction, own)
    num_examples = sum(int(y.shape[0]) for _, y in batches)
    rng = attack_hook.rng if attack_hook is not None else np.random.default_rng(0)
    if instruction.payload == contract.PAYLOAD_GRADIENT and instruction.local_steps > 1:
        gradients, losses = _local_steps(
            model, loss_fn, data, instruction, own, augment, parameters, targets_fn
        )
    elif instruction.payload == contract.PAYLOAD_GRADIENT:
        gradients, losses = partition_gradients(
            model,
            batches,
            loss_fn=loss_fn,
            parameters=parameters,
            targets_fn=targets_fn,
            seeds=seeds,
        )
    if instruction.payload == contract.PAYLOAD_GRADIENT:
        payload = gradients.mean(dim=0).numpy().astype(np.float32)
        beta = instruction.worker_momentum
        if beta > 0.0:
            # Worker momentum (Karimireddy et al., ICML 2021): the node sends its moving
            # average; an omniscient Byzantine forges from every partition's average, which
            # is what the honest holders send.
            payload = _float_momentum(context, _STATE_FLOAT_MOMENTUM, payload, beta)
            if known is not None:
                known = _float_momentum(context, _STATE_KNOWN_MOMENTUM, known, beta)
        if attack is not None and attack.perturbs_gradient:
            # Noisy computation in float space: the noise is the attack.
            payload = payload + rng.normal(0.0, noise_std, payload.shape).astype(np.float32)
        elif attack is not None and attack.float_only:
            # A float-only attack forges from the stack alone, the same vector for every
            # colluding Byzantine: forge it once per step and process (a line search
            # evaluates the aggregator about 20 times).
            key = (model_key, instruction.step, instruction.seed, beta, attack)
            if _FORGED and _FORGED[0][0] == key:
                payload = _FORGED[0][1]
            else:
                payload = forge_float_gradient(attack, payload, known, rng)
                payload.setflags(write=False)
                _FORGED[:] = [(key, payload)]
        elif attack is not None:
            payload = forge_float_gradient(attack, payload, known, rng)
        vote: Mapping[str, np.ndarray[Any, Any]] = {contract.GRADIENT: payload}
    else:
        one_bit = instruction.tie_rule == contract.TIE_RULE_GRADIENT
        signum = None
        if instruction.worker_momentum > 0.0:
            signum = _signum_hook(context, own, instruction.worker_momentum)
        result = partition_signs(
            model,
            batches,
            loss_fn=loss_fn,
            parameters=parameters,
            targets_fn=targets_fn,
            noise_std=noise_std,
            noise_seed=_noise_seed(instruction.seed, instruction.step, instruction.worker_index),
            mean_of=rows if one_bit else (),
            gradient_hook=signum,
            seeds=seeds,
        )
        losses = result.losses
        if signum is not None:
            assert context is not None
            momenta = signum.momenta  # type: ignore[attr-defined]
            context.state[_STATE_SIGNUM] = ArrayRecord(
                {str(j): Array(m.numpy()) for j, m in momenta.items()}
            )
        honest = local_majority(result.signs)
        if one_bit:
            assert result.gradient_mean is not None
            honest = break_ties(honest, result.gradient_mean, parameters, instruction.weight_decay)
        if attack is not None and attack.needs_partition_signs:
            vote = encode_vote(attack.forge_from_partitions(known))  # type: ignore[attr-defined]
        elif attack is not None:
            vote = encode_vote(attack.forge(honest.numpy(), known, rng))
        else:
            vote = encode_vote(honest)
    if attack is not None and attack.inflates_num_examples:
        num_examples = attack.claimed_examples(num_examples)  # type: ignore[attr-defined]
    if attack_hook is not None:
        attack_hook.used = True
    return _Computed(vote=vote, losses=losses, num_examples=num_examples)


def _check_float32(parameters: Any) -> None:
    """Refuse voted parameters that are not float32 (the votes and the server are float32)."""
    wrong = [
        f"{key} ({str(p.dtype).removeprefix('torch.')})"
        for key, p in parameters
        if p.dtype != torch.float32
    ]
    if wrong:
        raise ContractError(
            f"the model's trainable parameters must be float32, got {', '.join(wrong[:5])}"
            + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
            + ": election coding votes on, and the server steps, float32 weights; call "
            "model.float() (the dtype is refused rather than converted silently)"
        )


def _local_steps(
    model: nn.Module,
    loss_fn: LossFn,
    data: TrainData,
    instruction: TrainInstruction,
    own: list[int],
    augment: AugmentFn | None,
    parameters: Sequence[torch.Tensor],
    targets_fn: TargetsFn | None,
) -> tuple[torch.Tensor, list[float]]:
    """FedAvg's local epochs: ``E`` SGD steps, then the pseudo-gradient ``(w_0 - w_E) / lr``.

    Local step ``e`` of round step ``t`` uses the minibatches of step ``t * E + e`` (fresh
    samples each step, the same for every holder of a partition); the step is plain SGD
    at the round's lr on the mean gradient of the node's partitions. The parameters are
    restored afterwards: what the node sends is the difference, as a ``(1, d)`` tensor.
    """
    steps, lr = instruction.local_steps, instruction.local_lr
    start = [p.detach().clone() for p in parameters]
    losses: list[float] = []
    try:
        for e in range(steps):
            local = dataclasses.replace(instruction, step=instruction.step * steps + e)
            gradients, step_losses = partition_gradients(
                model,
                _batches(data, local, own, augment),
                loss_fn=loss_fn,
                parameters=parameters,
                targets_fn=targets_fn,
                seeds=_compute_seeds(local, own),
            )
            losses += step_losses
            mean = gradients.mean(dim=0)
            offset = 0
            with torch.no_grad():
                for p in parameters:
                    size = p.numel()
                    p.sub_(lr * mean[offset : offset + size].view_as(p).to(p.device))
                    offset += size
        with torch.no_grad():
            moved = torch.cat(
                [
                    (s - p.detach()).reshape(-1).to("cpu")
                    for s, p in zip(start, parameters, strict=True)
                ]
            )
    finally:
        with torch.no_grad():
            for s, p in zip(start, parameters, strict=True):
                p.copy_(s)
    return (moved / lr).unsqueeze(0), losses


def _float_momentum(
    context: Context | None, key: str, value: np.ndarray, beta: float
) -> np.ndarray:
    """Return ``m = beta * m + (1 - beta) * value``, ``m`` kept in the node state under ``key``.

    ``m`` starts at zero (the first step sends ``(1 - beta) * value``, as Signum's
    :func:`_signum_hook` does), and restarts there when the shape changes.
    """
    if context is None:
        raise ContractError("worker momentum keeps state on the node: pass context=context")
    stored = context.state.array_records.get(key)
    average = (1.0 - beta) * np.asarray(value, dtype=np.float32)
    if stored is not None and "m" in stored:
        previous = stored["m"].numpy()
        if previous.shape == average.shape:
            average = beta * previous + average
    average = average.astype(np.float32)
    context.state[key] = ArrayRecord({"m": Array(average)})
    return average


def _signum_hook(
    context: Context | None, partitions: list[int], beta: float
) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """Return the hook that replaces each partition's gradient by its moving average.

    ``m_j = beta * m_j + (1 - beta) * g_j``, kept per partition ``j`` in the node state, so
    every honest holder of a partition computes the same ``m_j`` (Signum, worker side).
    """
    if context is None:
        raise ContractError("worker momentum keeps state on the node: pass context=context")
    stored = context.state.array_records.get(_STATE_SIGNUM)
    momenta: dict[int, torch.Tensor] = {}

    def hook(row: int, gradient: torch.Tensor) -> torch.Tensor:
        j = partitions[row]
        previous = stored.get(str(j)) if stored is not None else None
        current = gradient.to("cpu")
        if previous is not None and tuple(previous.shape) == tuple(current.shape):
            average = torch.from_numpy(previous.numpy()).mul_(beta).add_(current, alpha=1 - beta)
        else:
            average = current.mul(1 - beta)
        momenta[j] = average
        return average.to(gradient.device)

    hook.momenta = momenta  # type: ignore[attr-defined]
    return hook


def break_ties(
    vote: torch.Tensor,
    gradient_mean: torch.Tensor,
    parameters: Sequence[torch.Tensor],
    weight_decay: float,
) -> torch.Tensor:
    """Apply the 1-bit tie rule: a tied coordinate takes the regularised gradient's sign.

    Where the held partitions' signs tie (or all are exactly zero), the vote is the sign of
    ``mean gradient + weight_decay * w`` over the held partitions, and +1 where that is
    exactly zero. Every honest holder of the same partitions computes the same value, and a
    weight whose gradient is exactly zero (behind an always-blank pixel) is voted towards
    zero, as weight decay would move it, instead of drifting.

    Parameters
    ----------
    vote : torch.Tensor
        The int8 local majority in {-1, 0, +1}.
    gradient_mean : torch.Tensor
        The mean float gradient of the held partitions (vote order, CPU).
    parameters : Sequence[torch.Tensor]
        The voted parameters (vote order), for the weights.
    weight_decay : float
        The server's weight decay.

    Returns
    -------
    torch.Tensor
        The int8 vote in {-1, +1}.
    """
    ties = vote == 0
    if not bool(ties.any()):
        return vote
    weights = torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in parameters])
    regularised = gradient_mean + float(np.float32(weight_decay)) * weights
    broken = torch.where(regularised < 0, -1, 1).to(torch.int8)
    return torch.where(ties, broken, vote)


def _buffers(model: nn.Module, keys: Sequence[str]) -> ArrayRecord:
    state = model.state_dict()
    record = ArrayRecord()
    for key in keys:
        if key not in state or not state[key].dtype.is_floating_point:
            raise ContractError(
                f"buffer key {key!r} is not a float entry of this node's state dict"
            )
        record[key] = Array(state[key].detach().to("cpu", torch.float32).numpy())
    return record


def contract_error(msg: Message, error: ContractError) -> Message:
    """Return the error reply of a node that cannot follow the contract."""
    return Message(Error(code=contract.CONTRACT_ERROR_CODE, reason=str(error)), reply_to=msg)


def _apply_update(
    msg: Message, instruction: TrainInstruction, context: Context | None
) -> dict[str, np.ndarray]:
    """Return the round's model arrays, from the message or from the node's own copy.

    A full message carries the arrays (and, under ``downlink = "vote"``, the momentum);
    they replace the node's copy. An update message carries last round's direction: the
    node takes exactly the server's step on its copy and checks the fingerprint.
    """
    content = msg.content
    vote_mode = instruction.downlink == contract.DOWNLINK_VOTE
    if vote_mode and context is None:
        raise ContractError(
            "downlink='vote' keeps the model in the node's state: call coded_train with "
            "context=context"
        )
    if contract.ARRAYS in content.array_records:
        arrays = {k: v.numpy() for k, v in content.array_records[contract.ARRAYS].items()}
        _write_aliases(arrays, instruction)
        if vote_mode:
            assert context is not None
            context.state[_STATE_MODEL] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
            momentum = content.array_records.get(contract.MOMENTUM)
            if momentum is not None and contract.MOMENTUM_BUFFER in momentum:
                context.state[_STATE_MOMENTUM] = ArrayRecord(
                    {contract.MOMENTUM_BUFFER: momentum[contract.MOMENTUM_BUFFER]}
                )
            elif _STATE_MOMENTUM in context.state:
                del context.state[_STATE_MOMENTUM]
        return arrays
    if not vote_mode or contract.UPDATE not in content.array_records:
        raise ContractError(
            f"train message has neither {contract.ARRAYS!r} nor {contract.UPDATE!r}"
        )
    assert context is not None
    try:
        return _step_own_copy(content, instruction, context)
    except _Resync:
        raise
    except (ValueError, KeyError, TypeError) as error:  # a malformed broadcast
        context.state.pop(_STATE_MODEL, None)
        raise _Resync(f"the update cannot be applied ({sanitize(error, 120)})") from error


def _step_own_copy(
    content: RecordDict, instruction: TrainInstruction, context: Context
) -> dict[str, np.ndarray]:
    """Apply the update in ``content`` to the node's copy; return the new arrays."""
    if _STATE_MODEL not in context.state:
        raise _Resync("this node holds no copy of the model")
    arrays = {k: v.numpy() for k, v in context.state.array_records[_STATE_MODEL].items()}
    update = content.array_records[contract.UPDATE]
    config = content.config_records[contract.CONFIG]
    if config.get(contract.UPDATE_APPLIED, 0) == 1:
        keys = list(instruction.vote_keys)
        shapes = [arrays[k].shape for k in keys]
        planes = {k: update[k].numpy() for k in update.keys() if k in VOTE_KEYS}
        signs, abstain = decode_vote(planes, instruction.num_coordinates)
        direction = unpack_signs(signs, instruction.num_coordinates, abstain)
        optimizer = SignMomentumSGD(
            momentum=float(config[contract.MOMENTUM_COEFFICIENT]),  # type: ignore[arg-type]
            weight_decay=instruction.weight_decay,
        )
        stored = context.state.array_records.get(_STATE_MOMENTUM)
        if stored is not None:
            optimizer.buf = stored[contract.MOMENTUM_BUFFER].numpy()
        weights = flatten_arrays([arrays[k] for k in keys])
        updated = optimizer.step(weights, direction, float(config[contract.UPDATE_LR]))  # type: ignore[arg-type]
        arrays.update(zip(keys, unflatten_arrays(updated, shapes), strict=True))
        _write_aliases(arrays, instruction)
        assert optimizer.buf is not None
        context.state[_STATE_MOMENTUM] = ArrayRecord(
            {contract.MOMENTUM_BUFFER: Array(optimizer.buf)}
        )
    for key in instruction.buffer_keys:
        arrays[key] = update[key].numpy()
    expected = int(config[contract.MODEL_FINGERPRINT])  # type: ignore[arg-type]
    if model_fingerprint(arrays, instruction) != expected:
        del context.state[_STATE_MODEL]
        raise _Resync("this node's copy of the model differs from the server's")
    context.state[_STATE_MODEL] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return arrays


def _write_aliases(arrays: dict[str, np.ndarray], instruction: TrainInstruction) -> None:
    """Give every alias of a tied weight its voted key's array (one tensor, one value).

    ``load_state_dict`` copies the names of a shared tensor one after the other, so a stale
    alias written last would undo the update; every name therefore holds the same array.
    """
    for voted, aliases in instruction.tied_keys:
        if voted not in arrays:
            raise ContractError(f"tied key {voted!r} is not in the server's arrays")
        for alias in aliases:
            arrays[alias] = arrays[voted]


def model_fingerprint(arrays: Mapping[str, np.ndarray], instruction: TrainInstruction) -> int:
    """Return the fingerprint of what the server updates: voted arrays, then buffers."""
    keys = list(instruction.vote_keys) + list(instruction.buffer_keys)
    return fingerprint([arrays[k] for k in keys])


class _Resync(ContractError):
    """The node's copy of the model cannot be used: it needs the full model."""


def coded_train(
    msg: Message,
    model: nn.Module,
    loss_fn: LossFn,
    data: TrainData,
    *,
    context: Context | None = None,
    augment: AugmentFn | None = None,
    noise_std: float = 0.0,
    keys: tuple[str, str] | None = None,
    outputs_fn: OutputsFn | None = None,
    label_flip_fn: TargetsFn | None = None,
) -> Message:
    """Answer one election-coded train message: the node's vote, buffers and metrics.

    Parameters
    ----------
    msg : Message
        The train message (:data:`fl_election.contract.ARRAYS` and
        :data:`fl_election.contract.CONFIG`).
    model : torch.nn.Module
        The node's model (any architecture; frozen parameters and buffers allowed). The
        server's arrays are loaded into it; it computes on the device it is on.
    loss_fn : LossFn
        ``loss_fn(outputs, targets)`` returning a scalar tensor, e.g.
        ``torch.nn.BCEWithLogitsLoss()``.
    data : TrainData
        The training set (tensors ``(x, y)``, a list of ``(x, y)`` samples or a map-style
        ``Dataset``), the same on every node, or a mapping from partition id to that
        partition's samples. Checked on first use (one fetch); unusable data gets a
        contract-error reply naming the cause and the fix.
    context : Context | None (default: None)
        The node's context; needed under ``downlink = "vote"``, where the node keeps the
        model and the momentum in ``context.state`` and the server sends only updates.
    augment : AugmentFn | None (default: None)
        Seeded augmentation of each slice.
    noise_std : float (default: 0.0)
        Gaussian noise added to every gradient before its sign (noisy computation).
    keys : tuple[str, str] | None (default: None)
        For dict samples, ``(input_key, target_key)``; ``None``: samples are ``(x, y)``.
    outputs_fn : OutputsFn | None (default: None)
        Where the logits are in the model's outputs, for label flipping
        (:func:`fl_election.training.model_logits`; the loss sees the raw outputs).
    label_flip_fn : TargetsFn | None (default: None)
        ``label_flip_fn(targets, logits) -> targets``, the flip of a label-flipping
        Byzantine; ``None`` flips class labels and 0/1 targets and refuses others
        (:meth:`fl_election.attacks.LabelFlipAttack.flip`).

    Returns
    -------
    Message
        The reply; an error reply of code :data:`fl_election.contract.CONTRACT_ERROR_CODE`
        when the message or the model does not match the contract, of code
        :data:`fl_election.contract.RESYNC_ERROR_CODE` when the node's copy of the model
        is out of step (the server sends the full model next round).
    """
    started = time.perf_counter()
    try:
        config = msg.content[contract.CONFIG]
        if not isinstance(config, ConfigRecord):
            raise ContractError(f"train message has no ConfigRecord {contract.CONFIG!r}")
        instruction = TrainInstruction.from_config(config)
        data = _prepare(data, keys)
        contract.check_tying(dict(instruction.tied_keys), contract.tied_keys(model))
        arrays = _apply_update(msg, instruction, context)
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as error:  # torch's size / missing / unexpected key report
            raise ContractError(
                "the server's arrays do not fit this node's model (the two sides build "
                f"different models): {sanitize(error, 300)}"
            ) from error
        computed = _compute(
            model,
            loss_fn,
            data,
            instruction,
            active_attack(),
            augment,
            noise_std,
            context,
            model_key=model_fingerprint(arrays, instruction),
            outputs_fn=outputs_fn,
            label_flip_fn=label_flip_fn,
        )
        buffers = _buffers(model, instruction.buffer_keys)
    except _Resync as error:
        return Message(Error(code=contract.RESYNC_ERROR_CODE, reason=str(error)), reply_to=msg)
    except ContractError as error:
        return contract_error(msg, error)
    except KeyError as error:
        return contract_error(msg, ContractError(f"train message lacks {error}"))
    content = RecordDict(
        {
            contract.VOTE: ArrayRecord({k: Array(v) for k, v in computed.vote.items()}),
            contract.METRICS: MetricRecord(
                {
                    contract.METRIC_NUM_COORDINATES: instruction.num_coordinates,
                    contract.METRIC_NUM_EXAMPLES: computed.num_examples,
                    contract.METRIC_TRAIN_LOSS: float(np.mean(computed.losses)),
                    contract.METRIC_COMPUTE_TIME: time.perf_counter() - started,
                    contract.METRIC_MODEL_FINGERPRINT: model_fingerprint(arrays, instruction),
                }
            ),
        }
    )
    if instruction.buffer_keys:
        content[contract.BUFFERS] = buffers
    return Message(content=content, reply_to=msg)


def evaluate_model(
    model: nn.Module,
    loss_fn: LossFn,
    samples: Samples,
    batch_size: int = 1024,
    *,
    keys: tuple[str, str] | None = None,
    outputs_fn: OutputsFn | None = None,
) -> dict[str, float]:
    """Return the mean loss and the accuracy of ``model`` on ``samples``.

    The loss sees the model's raw outputs; accuracy reads the logits
    (:func:`fl_election.training.model_logits` with ``outputs_fn``): the argmax over two or
    more columns, ``logit > 0`` for a single logit. ``keys`` reads dict samples.
    """
    samples = _prepare(samples, keys, partitions=False)
    total = _num_samples(samples)
    if total == 0:
        raise ValueError("test data is empty")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, total, batch_size):
                index = np.arange(start, min(total, start + batch_size), dtype=np.int64)
                x, y = _take(samples, index)
                x, y = x.to(device), y.to(device)
                outputs = model(x)
                loss_sum += float(loss_fn(outputs, y)) * len(index)
                logits = model_logits(outputs, outputs_fn)
                if logits.ndim >= 2 and logits.shape[-1] >= 2:
                    predicted = logits.argmax(dim=-1)
                else:
                    predicted = (logits.reshape(y.shape) > 0).to(y.dtype)
                correct += int((predicted == y).sum())
    finally:
        model.train(was_training)
    return {"test-loss": loss_sum / total, "test-accuracy": correct / total}


_ModelSource: TypeAlias = nn.Module | Callable[[Context], nn.Module]
_DataSource: TypeAlias = TrainData | Callable[[Context], TrainData]


def coded_client_app(
    model: _ModelSource,
    loss_fn: LossFn,
    data: _DataSource,
    *,
    test_data: Samples | Callable[[Context], Samples] | None = None,
    mods: Sequence[Mod] = (),
    augment: AugmentFn | None = None,
    noise_std: float = 0.0,
    device: torch.device | str | None = None,
    keys: tuple[str, str] | None = None,
    outputs_fn: OutputsFn | None = None,
    label_flip_fn: TargetsFn | None = None,
) -> ClientApp:
    """Build an election-coded ClientApp from a model, a loss and data.

    Parameters
    ----------
    model : torch.nn.Module | Callable[[Context], torch.nn.Module]
        The model, or a function of the node's context returning it (called once per
        node and process). Its trainable parameters must be float32 (``model.float()``);
        another dtype is refused, here or in the node's first reply, never converted.
    loss_fn : LossFn
        ``loss_fn(outputs, targets)``, a scalar tensor; it gets the model's raw outputs.
    data : TrainData | Callable[[Context], TrainData]
        The training data, or a function of the node's context returning it (called once
        per node and process). Data given here is checked now (one sample fetched and
        batched): unusable data raises ``ValueError`` with the fix. A function's data is
        checked at the node's first train message, whose reply is then one contract
        error naming the cause and the fix (the server stops in round 1 when every
        node's is).
    test_data : Samples | Callable[[Context], Samples] | None (default: None)
        Data for federated evaluation (loss and accuracy); without it the app has no
        evaluate handler.
    mods : Sequence[Mod] (default: ())
        Mods of the train handler, e.g. ``[byzantine_mod]``.
    augment : AugmentFn | None (default: None)
        Seeded augmentation of each slice.
    noise_std : float (default: 0.0)
        Gaussian noise added to every gradient before its sign.
    device : torch.device | str | None (default: None)
        Where to compute; ``None`` uses CUDA when torch sees one (:func:`default_device`).
    keys : tuple[str, str] | None (default: None)
        For data (train and test) whose samples are dicts, ``(input_key, target_key)``;
        ``None``: samples are ``(x, y)`` pairs.
    outputs_fn : OutputsFn | None (default: None)
        Where the logits are in the model's outputs, for label flipping and accuracy;
        ``None`` applies :func:`fl_election.training.model_logits`'s rule (a tensor as it
        is, a tuple or list its element 0, a dict its ``"logits"``). The loss always gets
        the raw outputs.
    label_flip_fn : TargetsFn | None (default: None)
        ``label_flip_fn(targets, logits) -> targets`` for a label-flipping Byzantine;
        needed for targets that are not class labels or 0/1 (regression), which are
        refused otherwise.

    Returns
    -------
    ClientApp
        The app; its train handler is :func:`coded_train`.

    Raises
    ------
    ValueError
        When the data, the test data or the model given here cannot be used (the message
        names the cause and the fix).
    """
    if not _is_data(data) and not callable(data):
        raise ValueError(
            f"coded_client_app: data must be training data or a function of the node's "
            f"Context returning it, got a {type(data).__name__}"
        )
    if test_data is not None and not _is_data(test_data) and not callable(test_data):
        raise ValueError(
            f"coded_client_app: test_data must be samples or a function of the node's "
            f"Context returning them, got a {type(test_data).__name__}"
        )
    try:
        if _is_data(data):
            _prepare(data, keys)
        if test_data is not None and _is_data(test_data):
            _prepare(test_data, keys, partitions=False)
        if isinstance(model, nn.Module):
            _check_float32(
                (key, p) for key, p in model.named_parameters() if p.dtype.is_floating_point
            )
    except ContractError as error:
        raise ValueError(f"coded_client_app: {error}") from error
    app = ClientApp()
    target = torch.device(device) if device is not None else default_device()
    # Plain dicts, no locks: Flower's simulation pickles the app for its Ray workers, and
    # a ClientApp handles one message at a time.
    models: dict[int, nn.Module] = {}
    datasets: dict[int, Any] = {}

    def node_model(context: Context) -> nn.Module:
        if context.node_id not in models:
            built = model(context) if not isinstance(model, nn.Module) else model
            models[context.node_id] = built.to(target)
        return models[context.node_id]

    def node_data(context: Context, source: Any, key: int, partitions: bool) -> Any:
        """Return the node's data, checked (dict samples wrapped); ContractError if unusable."""
        if key not in datasets:
            loaded = source if _is_data(source) else source(context)
            try:
                datasets[key] = _prepare(loaded, keys, partitions=partitions)
            except ContractError as error:
                what = "training data" if partitions else "test data"
                raise ContractError(
                    f"the {what} returned by {getattr(source, '__name__', 'the data function')}"
                    f"(context) cannot be used: {error}"
                ) from error
        return datasets[key]

    @app.train(mods=list(mods))
    def train(msg: Message, context: Context) -> Message:
        try:
            train_data = node_data(context, data, 2 * context.node_id, True)
        except ContractError as error:
            return contract_error(msg, error)
        return coded_train(
            msg,
            node_model(context),
            loss_fn,
            train_data,
            context=context,
            augment=augment,
            noise_std=noise_std,
            outputs_fn=outputs_fn,
            label_flip_fn=label_flip_fn,
        )

    if test_data is not None:

        @app.evaluate()
        def evaluate(msg: Message, context: Context) -> Message:
            net = node_model(context)
            arrays = msg.content[contract.ARRAYS]
            assert isinstance(arrays, ArrayRecord)
            net.load_state_dict(arrays.to_torch_state_dict())
            try:
                samples = node_data(context, test_data, 2 * context.node_id + 1, False)
                metrics: dict[str, int | float | list[int] | list[float]] = dict(
                    evaluate_model(net, loss_fn, samples, outputs_fn=outputs_fn)
                )
            except Exception as error:
                # The server logs a failed evaluate reply at INFO only; say it loudly here.
                log(
                    WARNING,
                    "node %d: client-side evaluation failed, no metrics: %s",
                    context.node_id,
                    sanitize(error, 300),
                )
                raise
            metrics["num-examples"] = _num_samples(samples)
            return Message(RecordDict({contract.METRICS: MetricRecord(metrics)}), reply_to=msg)

    return app
