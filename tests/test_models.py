from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fl_election.models import (
    MODELS,
    buffer_arrays,
    buffer_names,
    create_model,
    flat_grad,
    load_buffer_arrays,
    load_trainable_arrays,
    num_trainable,
    trainable_arrays,
    trainable_names,
)


def test_registry() -> None:
    assert MODELS == ("mlp", "cnn", "resnet18")
    with pytest.raises(ValueError, match="resnet18"):
        create_model("vgg", (1, 8, 8), 10)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_small_models_output_logits(name: str, shape: tuple[int, int, int]) -> None:
    model = create_model(name, shape, 10)
    out = model(torch.zeros(5, *shape))
    assert out.shape == (5, 10)


def test_mlp_accepts_flat_features() -> None:
    model = create_model("mlp", (64,), 3)
    assert model(torch.zeros(2, 64)).shape == (2, 3)
    # Flatten -> 64 -> 128 -> 128 -> 3 with biases.
    assert num_trainable(model) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 3 + 3


def test_resnet18_cifar_parameter_count_and_shapes() -> None:
    model = create_model("resnet18", (3, 32, 32), 10)
    # The CIFAR ResNet-18 of the paper: 11,173,962 trainable parameters.
    expected = sum(p.numel() for p in model.parameters())
    assert num_trainable(model) == expected == 11_173_962
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    names = buffer_names(model)
    assert names and all("running_" in n for n in names)
    assert not any("num_batches_tracked" in n for n in names)
    # 20 BatchNorm layers (stem, 16 in blocks, 3 projection shortcuts), two float buffers each.
    assert len(names) == 2 * 20


def test_model_input_shape_validation() -> None:
    with pytest.raises(ValueError):
        create_model("cnn", (64,), 10)
    with pytest.raises(ValueError):
        create_model("mlp", (), 10)
    with pytest.raises(ValueError):
        create_model("mlp", (1, 8, 8), 1)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_initialisation_is_seeded_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = create_model(name, (1, 8, 8), 10, seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(999)
    b = create_model(name, (1, 8, 8), 10, seed=5)
    c = create_model(name, (1, 8, 8), 10, seed=6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    )


def _toy_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # frozen parameters are not part of the vote
    return model


def test_trainable_names_and_flat_grad_order() -> None:
    model = _toy_model()
    assert trainable_names(model) == ["0.weight", "1.weight", "1.bias", "2.weight", "2.bias"]
    assert num_trainable(model) == 12 + 4 + 4 + 8 + 2
    model(torch.randn(6, 3)).sum().backward()
    grads = flat_grad(model)
    assert grads.dtype == torch.float32 and grads.shape == (30,)
    expected = torch.cat(
        [
            model[0].weight.grad.reshape(-1),
            model[1].weight.grad.reshape(-1),
            model[1].bias.grad.reshape(-1),
            model[2].weight.grad.reshape(-1),
            model[2].bias.grad.reshape(-1),
        ]
    )
    torch.testing.assert_close(grads, expected)


def test_flat_grad_fills_missing_gradients_with_zeros() -> None:
    model = _toy_model()
    model[2].weight.grad = torch.ones_like(model[2].weight)
    grads = flat_grad(model)
    assert grads.shape == (30,)
    assert float(grads.sum()) == 8.0


def test_buffer_names_exclude_integer_buffers() -> None:
    model = _toy_model()
    assert buffer_names(model) == ["1.running_mean", "1.running_var"]
    state_keys = list(model.state_dict())
    assert "1.num_batches_tracked" in state_keys


def test_array_round_trips() -> None:
    source = create_model("cnn", (1, 8, 8), 10, seed=1)
    target = create_model("cnn", (1, 8, 8), 10, seed=2)
    arrays = trainable_arrays(source)
    assert all(a.dtype == np.float32 for a in arrays)
    load_trainable_arrays(target, arrays)
    for a, b in zip(source.parameters(), target.parameters(), strict=True):
        assert torch.equal(a, b)
    # Copies, not views: changing the arrays does not touch the model.
    arrays[0][...] = 0
    assert not torch.equal(
        source.state_dict()[trainable_names(source)[0]], torch.zeros(arrays[0].shape)
    )

    bn_model = _toy_model()
    new_buffers = [np.full(4, 2.0, np.float32), np.full(4, 3.0, np.float32)]
    load_buffer_arrays(bn_model, new_buffers)
    for got, want in zip(buffer_arrays(bn_model), new_buffers, strict=True):
        np.testing.assert_array_equal(got, want)


def test_array_loading_validates_count_and_shapes() -> None:
    model = _toy_model()
    arrays = trainable_arrays(model)
    with pytest.raises(ValueError, match="expected 5"):
        load_trainable_arrays(model, arrays[:-1])
    arrays[0] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="0.weight"):
        load_trainable_arrays(model, arrays)
    with pytest.raises(ValueError):
        load_buffer_arrays(model, [np.zeros(4, np.float32)])
