from __future__ import annotations

import pytest
import torch
from torch import nn

from fl_election.contract import ContractError, buffer_keys, vote_keys
from fl_election.models import MODELS, create_model
from fl_election.training import partition_gradients, vote_parameters


def num_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in vote_parameters(model))


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
    names = buffer_keys(model.state_dict(), vote_keys(model))
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


def test_vote_keys_skip_frozen_parameters_and_gradients_follow_their_order() -> None:
    model = _toy_model()
    keys = vote_keys(model)
    assert keys == ["0.weight", "1.weight", "1.bias", "2.weight", "2.bias"]
    assert num_trainable(model) == 12 + 4 + 4 + 8 + 2
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    model(x).sum()  # the vote order is the server's, not named_parameters order:
    reordered = list(reversed(keys))
    grads, _ = partition_gradients(model, [(x, y)], parameters=vote_parameters(model, reordered))
    assert grads.shape == (1, 30)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = torch.cat([dict(model.named_parameters())[k].grad.reshape(-1) for k in reordered])
    torch.testing.assert_close(grads[0], expected)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["0.bias"], "frozen parameter"),
        (["1.running_mean"], "is a buffer"),
        (["nope"], "not in the model"),
    ],
)
def test_vote_parameters_refuse_what_is_not_trainable(keys: list[str], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        vote_parameters(_toy_model(), keys)


def test_vote_parameters_check_the_length() -> None:
    with pytest.raises(
        ContractError, match="cover 30 coordinates on this node, the server expects 31"
    ):
        vote_parameters(_toy_model(), None, 31)


def test_buffer_keys_are_the_float_statistics_not_voted_on() -> None:
    model = _toy_model()
    assert buffer_keys(model.state_dict(), vote_keys(model)) == [
        "1.running_mean",
        "1.running_var",
    ]
