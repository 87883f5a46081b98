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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from fl_election.contract import ContractError

__all__ = [
    "LossFn",
    "PartitionSigns",
    "TargetsFn",
    "evaluate",
    "partition_gradients",
    "partition_signs",
    "vote_parameters",
]

Batch = tuple[torch.Tensor, torch.Tensor]
#: ``loss_fn(outputs, targets) -> scalar tensor``, e.g. ``torch.nn.CrossEntropyLoss()``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``targets_fn(targets, outputs) -> targets``: what the loss sees instead of the batch's
#: targets (a label-flipping attack uses it; it sees the outputs to know the classes).
TargetsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def vote_parameters(
    model: nn.Module, keys: Sequence[str] | None = None, num_coordinates: int | None = None
) -> list[torch.Tensor]:
    """Return the parameters a vote covers, in vote order, after checking them.

    Parameters
    ----------
    model : torch.nn.Module
        The node's model.
    keys : Sequence[str] | None (default: None)
        The vote's keys (the instruction's ``vote-keys``); ``None`` takes every trainable
        parameter in ``named_parameters`` order.
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
        keys = [name for name, p in parameters.items() if p.requires_grad]
    chosen: list[torch.Tensor] = []
    for key in keys:
        if key not in parameters:
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

    Returns
    -------
    PartitionSigns
        The ``L x d`` int8 signs (on the CPU), the losses and the number of samples.
    """
    _check_batches(batches)
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
        loss, gradient = _batch_gradient(model, x, y, loss_fn, chosen, targets_fn)
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

    Returns
    -------
    tuple[torch.Tensor, list[float]]
        The ``L x d`` float32 gradients (on the CPU) and the mean loss of each batch.
    """
    _check_batches(batches)
    chosen = list(parameters) if parameters is not None else vote_parameters(model)
    gradients = torch.empty((len(batches), sum(p.numel() for p in chosen)), dtype=torch.float32)
    losses: list[float] = []
    for row, (x, y) in enumerate(batches):
        loss, gradient = _batch_gradient(model, x, y, loss_fn, chosen, targets_fn)
        losses.append(loss)
        gradients[row].copy_(gradient)
    model.zero_grad(set_to_none=True)
    return gradients, losses


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
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
                logits = model(inputs)
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
) -> tuple[float, torch.Tensor]:
    """Loss on one batch (training mode) and the flat float32 gradient of ``parameters``."""
    device = _model_device(model)
    model.train()
    model.zero_grad(set_to_none=True)
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


def _check_batches(batches: Sequence[Batch]) -> None:
    if len(batches) == 0:
        raise ValueError("batches must hold at least one (x, y) pair")
    for index, (x, y) in enumerate(batches):
        if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"batch {index}: x and y must hold the same positive number of samples, got "
                f"{x.shape[0]} and {y.shape[0]}"
            )
