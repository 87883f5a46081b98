"""The data and model shapes people use, checked once and clearly; no silent conversions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from torch import nn
from torch.utils.data import Dataset

from fl_election import contract
from fl_election.clients import coded, coded_client_app, make_byzantine_mod
from fl_election.codes import deterministic
from fl_election.contract import ContractError
from fl_election.simulations.inprocess import InProcessGrid
from fl_election.strategies import ElectionCoding, vote_keys

N, FEATURES, CLASSES = 300, 6, 3


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, FEATURES, generator=generator)
    return x, x[:, :CLASSES].argmax(dim=1)


class DictSamples(Dataset[dict[str, torch.Tensor]]):
    """A map-style Dataset of {"x": ..., "y": ...} samples."""

    def __init__(self) -> None:
        self.x, self.y = tensors()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}


class Net(nn.Module):
    """A linear classifier whose forward returns a tensor, a tuple or a dict."""

    def __init__(self, returns: str = "tensor", outputs: int = CLASSES) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(FEATURES, outputs)
        self.returns = returns

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.fc(x)
        if self.returns == "tuple":
            return logits, x.mean(dim=1)
        if self.returns == "dict":
            return {"aux": x.mean(dim=1), "logits": logits}
        if self.returns == "scores":
            return {"scores": logits}
        return logits


def ce(outputs: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy that takes the logits out of the raw outputs itself (a custom loss)."""
    if isinstance(outputs, tuple):
        outputs = outputs[0]
    elif isinstance(outputs, dict):
        outputs = outputs.get("logits", outputs.get("scores"))
    return nn.functional.cross_entropy(outputs, targets)


def strategy_for(net: nn.Module, evaluate_every: int = 0) -> ElectionCoding:
    return ElectionCoding(
        deterministic(5, b=1),
        byzantine_budget=1,
        lr=0.01,
        batch_size=50,
        trainable_keys=vote_keys(net),
        evaluate_every=evaluate_every,
    )


def run(app: Any, net: nn.Module, rounds: int = 2, evaluate_every: int = 0) -> Any:
    strategy = strategy_for(net, evaluate_every)
    result = strategy.start(
        grid=InProcessGrid(app, 5, {}),
        initial_arrays=ArrayRecord(net.state_dict()),
        num_rounds=rounds,
    )
    return strategy, result


def replies(app: Any, net: nn.Module) -> list[Any]:
    """One round's replies of the five nodes, without the strategy aggregating them."""
    strategy = strategy_for(net)
    grid = InProcessGrid(app, 5, {})
    messages = list(
        strategy.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), grid)
    )
    return list(grid.send_and_receive(messages))


def valid_votes(result: Any) -> list[int]:
    return [int(m["valid-votes"]) for _, m in sorted(result.train_metrics_clientapp.items())]


# ----------------------------------------------------------------------------- data shapes
def test_a_list_of_sample_pairs_trains() -> None:
    x, y = tensors()
    samples = [(x[i], y[i]) for i in range(N)]  # was: 'list' object is not callable
    net = Net()
    strategy, result = run(coded_client_app(Net(), ce, samples, test_data=samples), net, 2, 1)
    assert strategy.rounds_applied == 2 and valid_votes(result) == [5, 5]
    assert "test-accuracy" in result.evaluate_metrics_clientapp[2]


def test_dict_samples_train_and_evaluate_with_keys() -> None:
    net = Net()
    app = coded_client_app(Net(), ce, DictSamples(), test_data=DictSamples(), keys=("x", "y"))
    strategy, result = run(app, net, 2, 1)
    assert strategy.rounds_applied == 2 and valid_votes(result) == [5, 5]
    assert "test-accuracy" in result.evaluate_metrics_clientapp[2]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (DictSamples(), r"dict samples \(keys \['x', 'y'\]\): pass keys="),
        ((np.zeros((4, 2)), np.zeros(4)), "torch.as_tensor"),
        ([torch.zeros(3)] * 4, r"\(x, y\) pairs"),
        ((torch.zeros(4, 2), torch.zeros(3)), "same positive number of samples"),
        (42, "function of the node's Context"),
    ],
)
def test_bad_data_is_refused_at_construction_with_the_fix(data: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        coded_client_app(Net(), ce, data)


def test_wrong_keys_and_bad_test_data_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"no key 'label'.*pass keys="):
        coded_client_app(Net(), ce, DictSamples(), keys=("x", "label"))
    with pytest.raises(ValueError, match="leave keys=None"):
        coded_client_app(Net(), ce, tensors_as_list(), keys=("x", "y"))
    with pytest.raises(ValueError, match="pass keys="):
        coded_client_app(Net(), ce, tensors(), test_data=DictSamples())


def tensors_as_list() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = tensors()
    return [(x[i], y[i]) for i in range(N)]


def test_bad_data_from_a_per_node_factory_stops_the_run_in_round_1() -> None:
    calls: list[int] = []

    def load(context: Context) -> Any:
        calls.append(context.node_id)
        return DictSamples()  # dict samples, but no keys given

    net = Net()
    with pytest.raises(ContractError, match=r"every reply broke.*pass keys="):
        run(coded_client_app(Net(), ce, load), net, rounds=3)
    assert len(calls) == 5  # one round: each of the five nodes loaded its data once
    # each node's reply is one contract error naming the cause and the fix
    for reply in replies(coded_client_app(Net(), ce, load), net):
        assert reply.has_error() and reply.error.code == contract.CONTRACT_ERROR_CODE
        assert "load(context)" in reply.error.reason and "keys=" in reply.error.reason


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("returns", ["tuple", "dict"])
def test_tuple_and_dict_outputs_train_with_label_flip_and_evaluate(returns: str) -> None:
    net = Net(returns)
    mod = make_byzantine_mod("label-flip", rows={0})
    app = coded_client_app(Net(returns), ce, tensors(), test_data=tensors(), mods=[mod])
    strategy, result = run(app, net, 2, 1)
    assert valid_votes(result) == [5, 5]
    metrics = result.evaluate_metrics_clientapp[2]
    assert metrics and 0.0 <= float(metrics["test-accuracy"]) <= 1.0
    # the flipped row votes on other targets than the honest one
    honest = replies(coded_client_app(Net(returns), ce, tensors()), net)[0]
    flipped = replies(app, net)[0]
    planes = [r.content[contract.VOTE]["signs"].numpy() for r in (honest, flipped)]
    assert not np.array_equal(*planes)


def test_outputs_without_a_rule_are_refused_naming_the_type_and_outputs_fn() -> None:
    net = Net("scores")
    mod = make_byzantine_mod("label-flip", rows={0})
    reply = replies(coded_client_app(Net("scores"), ce, tensors(), mods=[mod]), net)[0]
    assert reply.has_error() and reply.error.code == contract.CONTRACT_ERROR_CODE
    assert "dict with keys ['scores']" in reply.error.reason
    assert "outputs_fn=" in reply.error.reason
    app = coded_client_app(
        Net("scores"), ce, tensors(), mods=[mod], outputs_fn=lambda out: out["scores"]
    )
    assert not replies(app, net)[0].has_error()


def test_a_failed_client_evaluation_is_logged_as_a_warning(monkeypatch) -> None:
    logged: list[tuple[int, str]] = []
    monkeypatch.setattr(coded, "log", lambda level, msg, *args: logged.append((level, msg)))
    net = Net("scores")
    app = coded_client_app(Net("scores"), ce, tensors(), test_data=tensors())
    run(app, net, 1, 1)
    assert any(level >= 30 and "evaluation failed" in msg for level, msg in logged)


# ----------------------------------------------------------------------------- no silent casts
def regression() -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = tensors()
    return x, x.sum(dim=1, keepdim=True)


def test_label_flip_refuses_regression_targets_unless_given_a_rule() -> None:
    net = Net(outputs=1)
    mod = make_byzantine_mod("label-flip", rows={0})
    app = coded_client_app(Net(outputs=1), nn.MSELoss(), regression(), mods=[mod])
    got = replies(app, net)
    assert not any(r.has_error() for r in got[1:])  # the honest rows vote
    assert got[0].has_error() and got[0].error.code == contract.CONTRACT_ERROR_CODE
    assert "torch.float32" in got[0].error.reason and "label_flip_fn=" in got[0].error.reason
    negate = coded_client_app(
        Net(outputs=1), nn.MSELoss(), regression(), mods=[mod], label_flip_fn=lambda y, z: -y
    )
    assert not replies(negate, net)[0].has_error()


def test_label_flip_still_flips_binary_float_targets() -> None:
    x, y = tensors()
    binary = (x, (y == 0).float().unsqueeze(1))
    net = Net(outputs=1)
    mod = make_byzantine_mod("label-flip", rows={0})
    app = coded_client_app(Net(outputs=1), nn.BCEWithLogitsLoss(), binary, mods=[mod])
    assert not replies(app, net)[0].has_error()


def test_a_float64_model_is_refused_not_converted() -> None:
    with pytest.raises(ValueError, match=r"fc.weight \(float64\).*model.float\(\)"):
        coded_client_app(Net().double(), ce, tensors())
    # a model built per node is refused in the node's reply
    reply = replies(coded_client_app(lambda c: Net().double(), ce, tensors()), Net())[0]
    assert reply.has_error() and "model.float()" in reply.error.reason
    # and the server refuses float64 voted arrays
    strategy = strategy_for(Net())
    grid = InProcessGrid(coded_client_app(Net(), ce, tensors()), 5, {})
    with pytest.raises(ContractError, match=r"fc.weight \(float64\).*model.float\(\)"):
        strategy.configure_train(1, ArrayRecord(Net().double().state_dict()), ConfigRecord(), grid)
