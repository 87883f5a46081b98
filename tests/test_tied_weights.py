"""Tied weights: one tensor under several names is voted once and moves under every name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from torch import nn

from fl_election import contract
from fl_election.clients import coded_client_app
from fl_election.codes import deterministic
from fl_election.contract import ContractError
from fl_election.simulations.inprocess import InProcessGrid
from fl_election.strategies import ElectionCoding, tied_keys, vote_keys

V, D = 12, 8
TIES = {"emb.weight": ("head.weight",), "mid.weight": ("mid2.weight",)}


class TiedNet(nn.Module):
    """An embedding and its head sharing one matrix, and two layers sharing another."""

    def __init__(self, tie: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.mid = nn.Linear(D, D)
        self.mid2 = nn.Linear(D, D)
        self.head = nn.Linear(D, V, bias=False)
        if tie:
            self.mid2.weight = self.mid.weight
            self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mid2(torch.tanh(self.mid(self.emb(x)))))


def data(num: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (num,), generator=generator)
    return x, (x + 1) % V  # the next token


def test_the_helpers_vote_each_tensor_once_and_name_its_aliases():
    net = TiedNet()
    assert vote_keys(net) == ["emb.weight", "mid.weight", "mid.bias", "mid2.bias"]
    assert tied_keys(net) == TIES
    assert tied_keys(TiedNet(tie=False)) == {}
    assert set(net.state_dict()) == {*vote_keys(net), "head.weight", "mid2.weight"}


def run(rounds: int = 4, node_model: nn.Module | None = None, downlink: str = "vote"):
    torch.manual_seed(0)
    net = TiedNet()
    strategy = ElectionCoding(
        deterministic(5, b=1),
        byzantine_budget=1,
        lr=0.05,
        batch_size=100,
        trainable_keys=vote_keys(net),
        tied_keys=tied_keys(net),
        downlink=downlink,
    )
    app = coded_client_app(node_model or TiedNet(), nn.CrossEntropyLoss(), data())
    grid = InProcessGrid(app, 5, {})
    initial = {k: v.detach().clone().numpy() for k, v in net.state_dict().items()}
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds
    )
    return strategy, grid, initial, result


@pytest.mark.parametrize("downlink", ["vote", "full"])
def test_every_name_of_a_tied_weight_moves_identically_on_server_and_nodes(downlink):
    strategy, grid, initial, result = run(downlink=downlink)
    assert strategy.rounds_applied == 4
    final = {k: result.arrays[k].numpy() for k in result.arrays.keys()}
    for voted, aliases in TIES.items():
        assert not np.array_equal(final[voted], initial[voted])  # it trained
        for alias in aliases:
            np.testing.assert_array_equal(final[alias], final[voted])
    # the server's arrays load into one consistent model: the voted keys alone say the same
    voted_only = TiedNet()
    voted_only.load_state_dict(
        {k: torch.from_numpy(final[k]) for k in vote_keys(voted_only)}, strict=False
    )
    for key, value in voted_only.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), final[key])
    if downlink == "vote":  # every node's copy is the last round's model, under every name
        last = strategy.round_arrays
        assert last is not None
        for voted in TIES:
            assert not np.array_equal(last[voted].numpy(), initial[voted])
        for context in grid.contexts.values():
            copy = context.state.array_records["fl-election.model"]
            for key in copy.keys():
                np.testing.assert_array_equal(copy[key].numpy(), last[key].numpy())
            for voted, aliases in TIES.items():
                for alias in aliases:
                    np.testing.assert_array_equal(copy[alias].numpy(), copy[voted].numpy())


def test_an_untied_node_is_refused_against_a_tied_server_naming_the_keys():
    net = TiedNet()
    strategy = ElectionCoding(
        deterministic(5, b=1),
        byzantine_budget=1,
        batch_size=100,
        trainable_keys=vote_keys(net),
        tied_keys=tied_keys(net),
    )
    grid = InProcessGrid(coded_client_app(TiedNet(tie=False), nn.CrossEntropyLoss(), data()), 5, {})
    messages = list(
        strategy.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), grid)
    )
    replies = list(grid.send_and_receive(messages))
    assert len(replies) == 5
    for reply in replies:
        assert reply.has_error() and reply.error.code == contract.CONTRACT_ERROR_CODE
        for name in ("emb.weight", "head.weight", "mid.weight", "mid2.weight"):
            assert name in reply.error.reason, reply.error.reason
    # and a run of such nodes stops in round 1 with the reason
    with pytest.raises(ContractError, match="tied weights differ.*head.weight"):
        run(rounds=2, node_model=TiedNet(tie=False))


def test_a_tied_node_is_refused_against_a_server_that_ties_nothing():
    net = TiedNet()
    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(net)
    )
    grid = InProcessGrid(coded_client_app(TiedNet(), nn.CrossEntropyLoss(), data()), 5, {})
    messages = list(
        strategy.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), grid)
    )
    reply = list(grid.send_and_receive(messages[:1]))[0]
    assert reply.has_error() and reply.error.code == contract.CONTRACT_ERROR_CODE
    assert "head.weight" in reply.error.reason and "mid2.weight" in reply.error.reason


def test_the_tying_travels_in_the_instruction_and_is_checked():
    net = TiedNet()
    strategy = ElectionCoding(
        deterministic(5, b=1), trainable_keys=vote_keys(net), tied_keys=tied_keys(net)
    )
    strategy._read_layout(ArrayRecord(net.state_dict()))
    config = strategy.instruction(1, 0).to_config()
    assert config[contract.TIED_KEYS] == ["emb.weight", "head.weight", "mid.weight", "mid2.weight"]
    assert dict(contract.TrainInstruction.from_config(config).tied_keys) == TIES
    with pytest.raises(ContractError, match="tied-keys"):
        contract.TrainInstruction.from_config({**config, contract.TIED_KEYS: ["emb.weight"]})
    with pytest.raises(ContractError, match="aliases"):  # an alias is never voted on
        contract.TrainInstruction.from_config(
            {**config, contract.VOTE_KEYS: [*vote_keys(net), "head.weight"]}
        )
    # the default keys leave the aliases out
    default = ElectionCoding(deterministic(5, b=1), tied_keys=tied_keys(net))
    default._read_layout(ArrayRecord(net.state_dict()))
    assert default.trainable_keys == vote_keys(net)


def test_distinct_parameters_over_one_memory_are_refused():
    net = TiedNet(tie=False)
    net.mid2.weight = nn.Parameter(net.mid.weight.data)  # same memory, two parameters
    with pytest.raises(ContractError, match="same memory"):
        vote_keys(net)
