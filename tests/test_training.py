from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from fl_election.models import create_model
from fl_election.training import (
    PartitionSigns,
    evaluate,
    partition_gradients,
    partition_signs,
)


def num_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _batches(count: int, size: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 1, 8, 8, generator=gen), torch.randint(0, 10, (size,), generator=gen))
        for _ in range(count)
    ]


def _manual_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads])


def test_partition_signs_match_manual_computation() -> None:
    model = create_model("mlp", (1, 8, 8), 10, seed=0)
    batches = _batches(3)
    before = [p.detach().clone() for p in model.parameters()]
    result = partition_signs(model, batches)
    assert isinstance(result, PartitionSigns)
    assert result.signs.dtype == torch.int8
    assert result.signs.shape == (3, num_trainable(model))
    assert result.num_examples == 12
    for row, (x, y) in enumerate(batches):
        loss, grad = _manual_gradient(model, x, y)
        assert result.losses[row] == pytest.approx(loss, rel=1e-6)
        assert torch.equal(result.signs[row], torch.sign(grad).to(torch.int8))
    # Weights untouched, gradients cleared.
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)
        assert b.grad is None


def test_exact_zero_gradients_give_zero_signs() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = _batches(1)[0]
    x[:, :, 0, 0] = 0.0  # input pixel 0 is zero: its weights get an exactly zero gradient
    signs = partition_signs(model, [(x, y)]).signs[0]
    weight_signs = signs[: 64 * 10].reshape(10, 64)
    assert bool((weight_signs[:, 0] == 0).all())
    assert bool((weight_signs[:, 1:] != 0).any())


def test_noise_changes_signs_only_when_std_positive_and_is_reproducible() -> None:
    model = create_model("mlp", (1, 8, 8), 10, seed=0)
    batches = _batches(2)
    clean = partition_signs(model, batches).signs
    zero_noise = partition_signs(model, batches, noise_std=0.0, noise_seed=42).signs
    assert torch.equal(clean, zero_noise)
    noisy = partition_signs(model, batches, noise_std=1.0, noise_seed=42).signs
    again = partition_signs(model, batches, noise_std=1.0, noise_seed=42).signs
    other = partition_signs(model, batches, noise_std=1.0, noise_seed=43).signs
    assert torch.equal(noisy, again)
    assert not torch.equal(noisy, clean)
    assert not torch.equal(noisy, other)
    # Noise std 1 swamps the gradients (magnitudes ~1e-2): signs become nearly coin flips.
    nonzero = clean != 0
    agreement = float((noisy[nonzero] == clean[nonzero]).float().mean())
    assert 0.45 < agreement < 0.65
    assert bool((noisy != 0).all())  # exact zeros of the clean gradient get a random sign
    # A tiny noise flips almost no sign of a non-zero gradient coordinate.
    tiny = partition_signs(model, batches, noise_std=1e-9, noise_seed=42).signs
    assert float((tiny[nonzero] == clean[nonzero]).float().mean()) > 0.99


def test_noise_matches_manual_gaussian_draw() -> None:
    model = create_model("mlp", (1, 8, 8), 10, seed=0)
    batches = _batches(2)
    result = partition_signs(model, batches, noise_std=0.01, noise_seed=7)
    gen = torch.Generator().manual_seed(7)
    d = num_trainable(model)
    for row, (x, y) in enumerate(batches):
        _, grad = _manual_gradient(model, x, y)
        noisy = grad + 0.01 * torch.randn(d, generator=gen)
        # Allow a handful of near-zero coordinates to differ by float rounding.
        assert float((result.signs[row] != torch.sign(noisy).to(torch.int8)).float().mean()) < 1e-3


def test_partition_gradients_match_manual_computation() -> None:
    model = create_model("cnn", (1, 8, 8), 10, seed=1)
    batches = _batches(2)
    grads, losses = partition_gradients(model, batches)
    assert grads.shape == (2, num_trainable(model)) and grads.dtype == torch.float32
    for row, (x, y) in enumerate(batches):
        loss, grad = _manual_gradient(model, x, y)
        assert losses[row] == pytest.approx(loss, rel=1e-6)
        torch.testing.assert_close(grads[row], grad)
    signs = partition_signs(model, batches).signs
    assert torch.equal(signs, torch.sign(grads).to(torch.int8))


def test_batchnorm_model_updates_running_stats_in_train_mode() -> None:
    model = create_model("resnet18", (1, 8, 8), 10, seed=0)
    before = model.bn1.running_mean.clone()
    result = partition_signs(model, _batches(1, size=4))
    assert result.signs.shape == (1, num_trainable(model))
    assert not torch.equal(before, model.bn1.running_mean)


def test_bad_batches_are_rejected() -> None:
    model = create_model("mlp", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="at least one"):
        partition_signs(model, [])
    with pytest.raises(ValueError, match="same positive"):
        partition_signs(model, [(torch.zeros(3, 1, 8, 8), torch.zeros(2, dtype=torch.int64))])
    with pytest.raises(ValueError, match="noise_std"):
        partition_signs(model, _batches(1), noise_std=-1.0)
    with pytest.raises(ValueError):
        partition_gradients(model, [])


def test_any_loss_and_targets_fn() -> None:
    # a single-logit model with a BCE loss (the loss is whatever callable the user has)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1], dtype=torch.float32)
    bce = nn.BCEWithLogitsLoss()

    def loss_fn(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return bce(out.squeeze(-1), t)

    grads, losses = partition_gradients(model, [(x, y)], loss_fn=loss_fn)
    params = list(model.parameters())
    manual = torch.autograd.grad(loss_fn(model(x), y), params)
    torch.testing.assert_close(grads[0], torch.cat([g.reshape(-1) for g in manual]))
    flipped, _ = partition_gradients(
        model, [(x, y)], loss_fn=loss_fn, targets_fn=lambda t, out: 1 - t
    )
    manual = torch.autograd.grad(loss_fn(model(x), 1 - y), params)
    torch.testing.assert_close(flipped[0], torch.cat([g.reshape(-1) for g in manual]))
    with pytest.raises(ValueError, match="scalar"):
        partition_signs(model, [(x, y)], loss_fn=lambda out, t: (out.squeeze(-1) - t) ** 2)


def test_evaluate_loss_and_accuracy() -> None:
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    model.train()
    loss, accuracy = evaluate(model, x, y, batch_size=3)
    expected = float(functional.cross_entropy(x, y))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert accuracy == pytest.approx(0.5)  # sample 3 is wrong, sample 4 is a tie -> argmax 0
    assert model.training  # mode restored
    with pytest.raises(ValueError):
        evaluate(model, x[:0], y[:0])
    with pytest.raises(ValueError):
        evaluate(model, x, y, batch_size=0)
