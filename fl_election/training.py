"""Per-partition gradient signs, full gradients and evaluation.

A worker in election-coded SignSGD (Sohn, Han, Choi, Moon, "Election Coding for Distributed
Learning: Protecting SignSGD against Byzantine Attacks", NeurIPS 2020, arXiv:1910.06093)
computes, for every partition ``j`` it holds, the gradient ``g_j`` on that partition's slice of
the step's minibatch and its coordinate-wise sign ``s_j``. :func:`partition_signs` returns these
signs as a dense ``L x d`` int8 matrix (the client forms its local majority vote and packs it);
:func:`partition_gradients` returns the float gradients for the full-gradient median (FGM)
baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from fl_election.models import flat_grad, num_trainable

__all__ = ["PartitionSigns", "evaluate", "partition_gradients", "partition_signs"]

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PartitionSigns:
    """Signs of the per-partition gradients of one worker at one step.

    Attributes
    ----------
    signs : torch.Tensor
        int8 tensor of shape ``(L, d)`` with entries in {-1, 0, +1}; row ``l`` is the sign of
        the flat gradient on batch ``l`` (an exactly zero coordinate gives 0).
    losses : list[float]
        Mean cross-entropy loss of each batch (before any update).
    num_examples : int
        Total number of samples over the batches.
    """

    signs: torch.Tensor
    losses: list[float]
    num_examples: int


def partition_signs(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    noise_std: float = 0.0,
    noise_seed: int = 0,
) -> PartitionSigns:
    """Compute the sign of the gradient of every batch (one batch per held partition).

    For each batch: zero the gradients, forward in training mode, mean cross-entropy, backward,
    flatten the trainable gradients (:func:`fl_election.models.flat_grad`), optionally add
    Gaussian noise (the reviewers' "noisy computation" attack, std ``noise_std``), take the sign.
    Only one float gradient is alive at a time. The model's weights are not changed, but its
    BatchNorm running statistics are updated by every forward pass (as on a real worker), and
    the gradients are cleared on return.

    Parameters
    ----------
    model : torch.nn.Module
        The model; batches are moved to the device of its first parameter.
    batches : Sequence[tuple[torch.Tensor, torch.Tensor]]
        ``(x, y)`` pairs, one per partition, each with at least one sample.
    noise_std : float (default: 0.0)
        Standard deviation of the Gaussian noise added to each gradient before the sign; 0 adds
        none.
    noise_seed : int (default: 0)
        Seed of the noise generator; noise for batch ``l`` is the ``l``-th draw, so the result
        is reproducible.

    Returns
    -------
    PartitionSigns
        The ``L x d`` int8 signs (on the CPU), the losses and the number of samples.
    """
    _check_batches(batches)
    if not noise_std >= 0.0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    dimension = num_trainable(model)
    signs = torch.empty((len(batches), dimension), dtype=torch.int8)
    generator: torch.Generator | None = None
    if noise_std > 0.0:
        generator = torch.Generator(device="cpu").manual_seed(noise_seed)
    losses: list[float] = []
    num_examples = 0
    for row, (x, y) in enumerate(batches):
        loss, gradient = _batch_gradient(model, x, y)
        losses.append(loss)
        num_examples += int(y.shape[0])
        if generator is not None:
            # Drawn on the CPU so the noise is the same whatever device the model is on.
            noise = torch.randn(dimension, generator=generator, dtype=torch.float32)
            gradient.add_(noise.to(gradient.device), alpha=noise_std)
        signs[row].copy_(torch.sign(gradient))
        del gradient
    model.zero_grad(set_to_none=True)
    return PartitionSigns(signs=signs, losses=losses, num_examples=num_examples)


def partition_gradients(
    model: nn.Module, batches: Sequence[Batch]
) -> tuple[torch.Tensor, list[float]]:
    """Compute the full float32 gradient of every batch (for the FGM baseline).

    Parameters
    ----------
    model : torch.nn.Module
        The model; batches are moved to the device of its first parameter.
    batches : Sequence[tuple[torch.Tensor, torch.Tensor]]
        ``(x, y)`` pairs, one per partition, each with at least one sample.

    Returns
    -------
    tuple[torch.Tensor, list[float]]
        The ``L x d`` float32 gradients (on the CPU) and the mean loss of each batch.
    """
    _check_batches(batches)
    gradients = torch.empty((len(batches), num_trainable(model)), dtype=torch.float32)
    losses: list[float] = []
    for row, (x, y) in enumerate(batches):
        loss, gradient = _batch_gradient(model, x, y)
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
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, torch.Tensor]:
    """Loss on one batch (training mode) and the flat gradient of the trainable parameters."""
    device = _model_device(model)
    model.train()
    model.zero_grad(set_to_none=True)
    loss = functional.cross_entropy(model(x.to(device)), y.to(device))
    loss.backward()  # type: ignore[no-untyped-call]
    return float(loss.detach()), flat_grad(model)


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
