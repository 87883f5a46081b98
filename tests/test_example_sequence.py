"""The second outside example: a sequence model with tied weights and dict samples.

``examples/sequence`` is a Flower app of its own: an embedding, a 1-D convolution, dropout,
a LayerNorm, one linear layer under two names and a head tied to the embedding, trained on
a synthetic next-token task whose samples are dicts ``{"x": ..., "y": ...}``. It runs end
to end in-process under a ``reverse`` Byzantine node.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, Message, RecordDict

from fl_election.simulations.inprocess import InProcessGrid
from fl_election.strategies import tied_keys, vote_keys

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sequence"
sys.path.insert(0, str(EXAMPLE))

from seqapp.client_app import app as client_app  # noqa: E402
from seqapp.server_app import app as server_app  # noqa: E402
from seqapp.task import VOCAB, Net, load_data  # noqa: E402

TIES = {"embed.weight": ("head.weight",), "block1.weight": ("block2.weight",)}


def test_the_model_ties_what_the_server_app_declares() -> None:
    net = Net()
    ties = tied_keys(net)
    assert ties["embed.weight"] == ("head.weight",)
    assert ties["block1.weight"] == ("block2.weight",)
    assert not {"head.weight", "block2.weight", "block2.bias"} & set(vote_keys(net))
    train, _ = load_data()
    assert set(train[0]) == {"x", "y"}  # dict samples


def test_the_sequence_example_learns_under_a_reverse_byzantine_node() -> None:
    node_configs: list[dict] = [{} for _ in range(5)]
    node_configs[3] = {"byzantine": "true", "attack": "reverse"}
    run_config = {"num-server-rounds": 20}
    grid = InProcessGrid(client_app, 5, run_config, node_configs)
    replies: list[Message] = []
    pull = grid.pull_messages

    def recording_pull(message_ids):  # noqa: ANN001, ANN202
        got = list(pull(message_ids))
        replies.extend(got)
        return got

    grid.pull_messages = recording_pull  # type: ignore[method-assign]
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    server_app(grid, context)
    assert not [m.error.reason for m in replies if m.has_error()]
    accuracy = [
        m.content["metrics"]["test-accuracy"]
        for m in replies
        if "test-accuracy" in m.content.metric_records.get("metrics", {})
    ]
    assert len(accuracy) == 2 * 5  # rounds 10 and 20, five nodes
    assert min(accuracy[-5:]) >= 0.9 > 10 / VOCAB  # chance is 1 / VOCAB
    torch.manual_seed(0)  # as the server app does
    initial = Net()
    for node in grid.contexts.values():  # every node's copy, under every name
        copy = node.state.array_records["fl-election.model"]
        for voted, aliases in TIES.items():
            assert not np.array_equal(copy[voted].numpy(), initial.state_dict()[voted].numpy())
            for alias in aliases:
                np.testing.assert_array_equal(copy[alias].numpy(), copy[voted].numpy())
