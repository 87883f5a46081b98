"""Per-partition gradient signs, full gradients and evaluation, for any model and loss.

A worker in election-coded SignSGD (Sohn, Han, Choi, Moon, "Election Coding for Distributed
Learning: Protecting SignSGD against Byzantine Attacks", NeurIPS 2020, arXiv:1910.06093)
computes, for every partition ``j`` it holds, the gradient ``g_j`` on that partition's slice of
the step's minibatch and its coordinate-wise sign ``s_j``. :func:`partition_signs` returns these
signs as a dense ``L x d`` int8 matrix (the client forms its local majority vote and packs it);
:func:`partition_gradients` returns the float gradients for the full-gradient median (FGM)
baseline.

The coordinates are those of the contract (:mod:`fl_election.contract`): the gradients of the
parameters named by the vote's keys, flattened in that order (:func:`vote_parameters`
checks them against the model). The loss is any callable ``loss_fn(outputs, targets)``
returning a scalar tensor; cross-entropy by default.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from fl_election import contract
from fl_election.contract import ContractError

__all__ = [
    "LossFn",
    "OutputsFn",
    "PartitionSigns",
    "TargetsFn",
    "evaluate",
    "model_logits",
    "partition_gradients",
    "partition_seed",
    "partition_signs",
    "shared_rng",
    "vote_parameters",
]

Batch = tuple[torch.Tensor, torch.Tensor]
#: ``loss_fn(outputs, targets) -> scalar tensor``, e.g. ``torch.nn.CrossEntropyLoss()``. The
#: loss sees the model's raw outputs (a tensor, a tuple, a dict: whatever ``forward`` returns).
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
#: ``outputs_fn(outputs) -> logits``: the logits tensor in what the model's ``forward``
#: returns, for whatever needs a tensor (label flipping, accuracy); see :func:`model_logits`.
OutputsFn = Callable[[Any], torch.Tensor]
#: ``targets_fn(targets, outputs) -> targets``: what the loss sees instead of the batch's
#: targets (a label-flipping attack uses it; it sees the model's raw outputs, to know the
#: classes: take their logits with :func:`model_logits`).
TargetsFn = Callable[[torch.Tensor, Any], torch.Tensor]

#: The random streams of one partition at one step (:func:`partition_seed`): the forward
#: and backward passes, the fetching of the samples (a ``Dataset``'s random transforms), the
#: client's augmentation function. Distinct, so that the three draw independent numbers.
SEED_STREAMS = {"compute": 1, "data": 2, "augment": 3}
#: Last entropy word of :func:`partition_seed`: keeps its seeds apart from other
#: ``SeedSequence([seed, step, ...])`` seeds of the library (the per-worker noise seed).
_PARTITION_SEED_TAG = 0x5EED_0001


def model_logits(outputs: Any, outputs_fn: OutputsFn | None = None) -> torch.Tensor:
    """Return the logits tensor in a model's outputs (the one rule, used everywhere).

    The loss always sees the raw outputs, so a custom loss that unpacks a tuple keeps
    working; label flipping and accuracy need one tensor, and take it here. With
    ``outputs_fn`` it is ``outputs_fn(outputs)``; without, the default rule: a tensor as it
    is, a tuple or list its element 0, a mapping its ``"logits"`` entry.

    Parameters
    ----------
    outputs : Any
        What the model's ``forward`` returned.
    outputs_fn : OutputsFn | None (default: None)
        The user's rule; ``None`` applies the default rule.

    Returns
    -------
    torch.Tensor
        The logits, one row per sample.

    Raises
    ------
    ContractError
        When the rule gives no tensor (the message names the type and the fix).
    """
    if outputs_fn is not None:
        logits = outputs_fn(outputs)
        rule = "outputs_fn"
    else:
        rule = "the default outputs rule (tensor; tuple or list -> element 0; dict -> 'logits')"
        if isinstance(outputs, (tuple, list)) and len(outputs) > 0:
            logits = outputs[0]
        elif isinstance(outputs, Mapping) and "logits" in outputs:
            logits = outputs["logits"]
        else:
            logits = outputs
    if not isinstance(logits, torch.Tensor):
        described = type(outputs).__name__
        if isinstance(outputs, Mapping):
            described += f" with keys {sorted(map(str, outputs))}"
        raise ContractError(
            f"cannot find the logits in the model's outputs (a {described}) with {rule}, "
            f"which gave a {type(logits).__name__}: pass outputs_fn=lambda outputs: ... "
            "returning the logits tensor to coded_client_app / coded_train"
        )
    return logits


def partition_seed(seed: int, step: int, partition: int, *, stream: str = "compute") -> int:
    """Return the seed every holder of ``partition`` uses at ``step`` (shared randomness).

    Election coding needs the honest holders of a partition to compute the same gradient
    sign; dropout, stochastic depth, noise layers or random augmentation draw from torch's
    generators, and unseeded they draw differently on every holder. Seeding them with this
    value around the partition's computation makes every holder draw the same numbers. A
    pure function of its arguments (NumPy's ``SeedSequence``, not Python's salted ``hash``),
    so it is the same on every node, process and platform.

    Parameters
    ----------
    seed : int
        The run's seed (the instruction's ``seed``), non-negative.
    step : int
        The training step, non-negative.
    partition : int
        The partition id, non-negative.
    stream : str (default: "compute")
        Which randomness: ``"compute"`` (forward and backward), ``"data"`` (fetching the
        samples) or ``"augment"`` (the client's augmentation function); see
        :data:`SEED_STREAMS`.

    Returns
    -------
    int
        A seed in ``[0, 2**64)``, accepted by ``torch.Generator.manual_seed``.

    Raises
    ------
    ValueError
        When an argument is negative or not an integer, or ``stream`` is unknown.
    """
    words = []
    for name, value in (("seed", seed), ("step", step), ("partition", partition)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        words.append(int(value))
    if stream not in SEED_STREAMS:
        raise ValueError(f"unknown stream {stream!r}; valid: {', '.join(SEED_STREAMS)}")
    words += [SEED_STREAMS[stream], _PARTITION_SEED_TAG]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)
    return int(state[0])


@contextlib.contextmanager
def shared_rng(
    seed: int | None, devices: Iterable[torch.device] = (), *, python_and_numpy: bool = False
) -> Iterator[None]:
    """Run the block with torch's generators seeded by ``seed``, then restore them.

    Seeds torch's CPU generator and the generator of every CUDA device in ``devices``
    (inside ``torch.random.fork_rng``, so the caller's states come back afterwards, also
    when the block raises). Generators of other accelerators are not seeded.

    Parameters
    ----------
    seed : int | None
        The seed (:func:`partition_seed`); ``None`` leaves every generator alone.
    devices : Iterable[torch.device] (default: ())
        Devices the block computes on; the CUDA ones among them are seeded too.
    python_and_numpy : bool (default: False)
        Also seed (and restore) Python's ``random`` and NumPy's global generator, which
        some augmentation libraries draw from.

    Yields
    ------
    None
    """
    if seed is None:
        yield
        return
    cuda = sorted(
        {
            device.index if device.index is not None else torch.cuda.current_device()
            for device in map(torch.device, devices)
            if device.type == "cuda"
        }
    )
    python_state = random.getstate() if python_and_numpy else None
    numpy_state = np.random.get_state() if python_and_numpy else None  # noqa: NPY002
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed)
            for index in cuda:
                torch.cuda.default_generators[index].manual_seed(seed)
            if python_and_numpy:
                random.seed(seed)
                np.random.seed(seed % 2**32)  # noqa: NPY002 (the global one, on purpose)
            yield
    finally:
        if python_state is not None:
            random.setstate(python_state)
        if numpy_state is not None:
            np.random.set_state(numpy_state)  # noqa: NPY002


def vote_parameters(
    model: nn.Module, keys: Sequence[str] | None = None, num_coordinates: int | None = None
) -> list[torch.Tensor]:
    """Return the parameters a vote covers, in vote order, after checking them.

    Parameters
    ----------
    model : torch.nn.Module
        The node's model.
    keys : Sequence[str] | None (default: None)
        The vote's keys (the instruction's ``vote-keys``); ``None`` takes
        :func:`fl_election.contract.vote_keys` (every trainable parameter in
        ``named_parameters`` order, a tied one once).
    num_coordinates : int | None (default: None)
        The vote's length the server expects; checked when given.

    Returns
    -------
    list[torch.Tensor]
        The parameters, in the order of ``keys``.

    Raises
    ------
    ContractError
        When a key is not a trainable parameter of ``model`` (a frozen parameter, a buffer,
        an unknown name) or the total size differs from ``num_coordinates``.
    """
    parameters = dict(model.named_parameters())
    if keys is None:
        keys = contract.vote_keys(model)
    chosen: list[torch.Tensor] = []
    for key in keys:
        if key not in parameters:
            tied_to = [v for v, names in contract.tied_keys(model).items() if key in names]
            if tied_to:
                raise ContractError(
                    f"vote key {key!r} is tied to {tied_to[0]!r} (one tensor): vote on it "
                    "once (trainable_keys=vote_keys(model), tied_keys=tied_keys(model))"
                )
            kind = "a buffer" if key in dict(model.named_buffers()) else "not in the model"
            raise ContractError(
                f"vote key {key!r} is {kind}, not a trainable parameter; the server must "
                "vote on trainable parameters only (trainable_keys=vote_keys(model))"
            )
        if not parameters[key].requires_grad:
            raise ContractError(
                f"vote key {key!r} is a frozen parameter (requires_grad=False) of this "
                "node's model; the server must not vote on it (trainable_keys=vote_keys(model))"
            )
        chosen.append(parameters[key])
    size = sum(p.numel() for p in chosen)
    if num_coordinates is not None and size != num_coordinates:
        raise ContractError(
            f"the vote keys cover {size} coordinates on this node, the server expects "
            f"{num_coordinates}: server and node models differ"
        )
    return chosen


@dataclass
class PartitionSigns:
    """Signs of the per-partition gradients of one worker at one step.

    Attributes
    ----------
    signs : torch.Tensor
        int8 tensor of shape ``(L, d)`` with entries in {-1, 0, +1}; row ``l`` is the sign of
        the flat gradient on batch ``l`` (an exactly zero coordinate gives 0).
    losses : list[float]
        Mean loss of each batch (before any update).
    num_examples : int
        Total number of samples over the batches.
    gradient_mean : torch.Tensor | None
        float32 mean of the (noisy) gradients of the rows asked for with ``mean_of``, on the
        CPU; ``None`` when none were asked for. The 1-bit tie rule uses it.
    """

    signs: torch.Tensor
    losses: list[float]
    num_examples: int
    gradient_mean: torch.Tensor | None = None


def partition_signs(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    loss_fn: LossFn = functional.cross_entropy,
    parameters: Sequence[torch.Tensor] | None = None,
    targets_fn: TargetsFn | None = None,
    noise_std: float = 0.0,
    noise_seed: int = 0,
    mean_of: Sequence[int] = (),
    gradient_hook: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    seeds: Sequence[int] | None = None,
) -> PartitionSigns:
    """Compute the sign of the gradient of every batch (one batch per held partition).

    For each batch: zero the gradients, forward in training mode, ``loss_fn``, backward,
    flatten the gradients of ``parameters`` in order, optionally add Gaussian noise (the
    reviewers' "noisy computation", std ``noise_std``), take the sign. Only one float
    gradient is alive at a time. The model's weights are not changed, but its BatchNorm
    running statistics are updated by every forward pass (as on a real worker), and the
    gradients are cleared on return.

    Parameters
    ----------
    model : torch.nn.Module
        The model; batches are moved to the device of its first parameter.
    batches : Sequence[tuple[torch.Tensor, torch.Tensor]]
        ``(x, y)`` pairs, one per partition, each with at least one sample.
    loss_fn : LossFn (default: cross-entropy)
        ``loss_fn(outputs, targets)``, a scalar tensor.
    parameters : Sequence[torch.Tensor] | None (default: None)
        The parameters whose gradients form the vector (:func:`vote_parameters`); ``None``
        takes every trainable parameter.
    targets_fn : TargetsFn | None (default: None)
        Replaces the targets the loss sees (``targets_fn(y, outputs)``).
    noise_std : float (default: 0.0)
        Standard deviation of the Gaussian noise added to each gradient before the sign; 0 adds
        none.
    noise_seed : int (default: 0)
        Seed of the noise generator; noise for batch ``l`` is the ``l``-th draw, so the result
        is reproducible.
    mean_of : Sequence[int] (default: ())
        Rows whose float gradients are averaged into ``gradient_mean`` (one more float
        vector alive).
    gradient_hook : Callable[[int, torch.Tensor], torch.Tensor] | None (default: None)
        ``hook(row, gradient) -> vector`` whose sign is taken instead of the gradient's
        (worker-side momentum keeps a moving average per partition this way).
    seeds : Sequence[int] | None (default: None)
        One seed per batch (:func:`partition_seed`): torch's generators are seeded with it
        around the batch's forward and backward passes (:func:`shared_rng`), so dropout and
        other random layers draw the same on every holder of the partition, and restored
        afterwards; ``None`` draws from the caller's generators.

    Returns
    -------
    PartitionSigns
        The ``L x d`` int8 signs (on the CPU), the losses and the number of samples.
    """
    _check_batches(batches)
    _check_seeds(seeds, batches)
    if not noise_std >= 0.0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    chosen = list(parameters) if parameters is not None else vote_parameters(model)
    dimension = sum(p.numel() for p in chosen)
    signs = torch.empty((len(batches), dimension), dtype=torch.int8)
    generator: torch.Generator | None = None
    if noise_std > 0.0:
        generator = torch.Generator(device="cpu").manual_seed(noise_seed)
    losses: list[float] = []
    num_examples = 0
    averaged = set(mean_of)
    total: torch.Tensor | None = None
    for row, (x, y) in enumerate(batches):
        seed = None if seeds is None else seeds[row]
        loss, gradient = _batch_gradient(model, x, y, loss_fn, chosen, targets_fn, seed)
        losses.append(loss)
        num_examples += int(y.shape[0])
        if generator is not None:
            # Drawn on the CPU so the noise is the same whatever device the model is on.
            noise = torch.randn(dimension, generator=generator, dtype=torch.float32)
            gradient.add_(noise.to(gradient.device), alpha=noise_std)
        if gradient_hook is not None:
            gradient = gradient_hook(row, gradient)
        signs[row].copy_(torch.sign(gradient))
        if row in averaged:
            total = gradient.clone() if total is None else total.add_(gradient)
        del gradient
    model.zero_grad(set_to_none=True)
    mean = None if total is None else (total / len(averaged)).to("cpu")
    return PartitionSigns(signs=signs, losses=losses, num_examples=num_examples, gradient_mean=mean)


def partition_gradients(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    loss_fn: LossFn = functional.cross_entropy,
    parameters: Sequence[torch.Tensor] | None = None,
    targets_fn: TargetsFn | None = None,
    seeds: Sequence[int] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Compute the full float32 gradient of every batch (for the FGM baseline).

    Parameters
    ----------
    model : torch.nn.Module
        The model; batches are moved to the device of its first parameter.
    batches : Sequence[tuple[torch.Tensor, torch.Tensor]]
        ``(x, y)`` pairs, one per partition, each with at least one sample.
    loss_fn : LossFn (default: cross-entropy)
        ``loss_fn(outputs, targets)``, a scalar tensor.
    parameters : Sequence[torch.Tensor] | None (default: None)
        The parameters whose gradients form the vector; ``None`` takes every trainable one.
    targets_fn : TargetsFn | None (default: None)
        Replaces the targets the loss sees (``targets_fn(y, outputs)``).
    seeds : Sequence[int] | None (default: None)
        One seed per batch, as in :func:`partition_signs`; ``None`` draws from the
        caller's generators.

    Returns
    -------
    tuple[torch.Tensor, list[float]]
        The ``L x d`` float32 gradients (on the CPU) and the mean loss of each batch.
    """
    _check_batches(batches)
    _check_seeds(seeds, batches)
    chosen = list(parameters) if parameters is not None else vote_parameters(model)
    gradients = torch.empty((len(batches), sum(p.numel() for p in chosen)), dtype=torch.float32)
    losses: list[float] = []
    for row, (x, y) in enumerate(batches):
        seed = None if seeds is None else seeds[row]
        loss, gradient = _batch_gradient(model, x, y, loss_fn, chosen, targets_fn, seed)
        losses.append(loss)
        gradients[row].copy_(gradient)
    model.zero_grad(set_to_none=True)
    return gradients, losses


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
    outputs_fn: OutputsFn | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``(x, y)``.

    Runs in evaluation mode without gradients and restores the previous mode afterwards.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    x : torch.Tensor
        Inputs.
    y : torch.Tensor
        Integer labels, one per input.
    batch_size : int (default: 1024)
        Evaluation batch size (positive).
    outputs_fn : OutputsFn | None (default: None)
        Where the logits are in the model's outputs (:func:`model_logits`).

    Returns
    -------
    tuple[float, float]
        ``(loss, accuracy)``, accuracy in [0, 1].
    """
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same positive number of samples, got {x.shape[0]} and "
            f"{y.shape[0]}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                inputs = x[start : start + batch_size].to(device)
                labels = y[start : start + batch_size].to(device)
                logits = model_logits(model(inputs), outputs_fn)
                total_loss += float(functional.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(dim=1) == labels).sum())
    finally:
        model.train(was_training)
    count = int(x.shape[0])
    return total_loss / count, correct / count


def _batch_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    parameters: Sequence[torch.Tensor],
    targets_fn: TargetsFn | None,
    seed: int | None = None,
) -> tuple[float, torch.Tensor]:
    """Loss on one batch (training mode) and the flat float32 gradient of ``parameters``.

    With a ``seed``, the forward and backward passes draw from torch's generators seeded
    with it (:func:`shared_rng`), and the caller's generator states are restored.
    """
    device = _model_device(model)
    model.train()
    model.zero_grad(set_to_none=True)
    devices = {p.device for p in model.parameters()} if seed is not None else set()
    with shared_rng(seed, devices):
        outputs = model(x.to(device))
        targets = y.to(device)
        if targets_fn is not None:
            targets = targets_fn(targets, outputs)
        loss = loss_fn(outputs, targets)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        loss.backward()  # type: ignore[no-untyped-call]
    pieces = [
        p.grad.detach().reshape(-1).to(torch.float32)
        if p.grad is not None
        else torch.zeros(p.numel(), dtype=torch.float32, device=p.device)
        for p in parameters
    ]
    flat = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float32, device=device)
    return float(loss.detach()), flat


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    raise ValueError("model has no parameters")


def _check_seeds(seeds: Sequence[int] | None, batches: Sequence[Batch]) -> None:
    if seeds is not None and len(seeds) != len(batches):
        raise ValueError(f"seeds must hold one seed per batch: {len(seeds)} for {len(batches)}")


def _check_batches(batches: Sequence[Batch]) -> None:
    if len(batches) == 0:
        raise ValueError("batches must hold at least one (x, y) pair")
    for index, (x, y) in enumerate(batches):
        if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"batch {index}: x and y must hold the same positive number of samples, got "
                f"{x.shape[0]} and {y.shape[0]}"
            )
