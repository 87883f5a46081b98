"""The Byzantine mod's own rules: one mod per ClientApp, one log line per node, ``select``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_example import NODES, TRAIN, Net, example_message, expected_vote, loss_fn, the_vote

from fl_election import contract
from fl_election.clients import byzantine_mod, coded_client_app, make_byzantine_mod, mods
from fl_election.codes import deterministic
from fl_election.contract import TrainInstruction
from fl_election.simulations.inprocess import InProcessGrid
from fl_election.strategies import ElectionCoding, vote_keys


def strategy() -> ElectionCoding:
    return ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )


def ask(grid: InProcessGrid, row: int):  # noqa: ANN201
    message = example_message(strategy(), row)
    return message, list(grid.pull_messages(grid.push_messages([message])))[0]


@pytest.mark.parametrize(
    ("node_config", "row"),
    [({"byzantine": "true", "attack": "reverse"}, 0), ({}, 0), ({}, 2)],
    ids=["marked-byzantine", "row-attacks", "honest-row"],
)
def test_stacked_byzantine_mods_refuse_with_the_true_reason(node_config: dict, row: int) -> None:
    stacked = [byzantine_mod, make_byzantine_mod("reverse", rows={0})]
    app = coded_client_app(Net(), loss_fn, TRAIN, mods=stacked)
    _, reply = ask(InProcessGrid(app, 5, {}, node_configs=[node_config] * 5), row)
    assert reply.has_error()
    assert "two Byzantine mods are stacked" in reply.error.reason, reply.error.reason
    assert "client API" not in reply.error.reason


def test_one_mod_still_attacks_and_evaluation_passes_through() -> None:
    app = coded_client_app(Net(), loss_fn, TRAIN, mods=[make_byzantine_mod("reverse", rows={0})])
    message, reply = ask(InProcessGrid(app, 5, {}), 0)
    d = TrainInstruction.from_config(message.content[contract.CONFIG]).num_coordinates
    np.testing.assert_array_equal(the_vote(reply, d), -expected_vote("none", message, {}))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_attack_is_logged_once_per_node_even_in_a_fresh_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = Lines()
    logger = logging.getLogger("flwr")
    logger.addHandler(handler)
    # another test (a sweep) may have raised flwr's level: the INFO line must reach the
    # handler (setLevel, not the attribute: it also clears the logger's level cache)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        app = coded_client_app(Net(), loss_fn, TRAIN, mods=[byzantine_mod])
        marked = {"byzantine": "true", "attack": "reverse"}
        grid = InProcessGrid(app, 5, {}, node_configs=[marked] * 5)
        for _ in range(3):
            # Flower may start every message's ClientApp in a fresh process: only the
            # node's context (its state) survives, no module-level memory.
            monkeypatch.setattr(mods, "_ANNOUNCED", set(), raising=False)
            _, reply = ask(grid, 0)
            assert not reply.has_error()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    mounts = [line for line in handler.lines if "mounts attack" in line]
    assert mounts == [f"Byzantine mod: node {NODES[0]} (code row 0) mounts attack 'reverse'"]
    assert mods.STATE_KEY in grid.contexts[NODES[0]].state


def test_select_may_read_the_node_config() -> None:
    mod = make_byzantine_mod(select=lambda context, _: context.node_config.get("my-attack"))
    app = coded_client_app(Net(), loss_fn, TRAIN, mods=[mod])
    configs = [{"my-attack": "reverse"}] + [{}] * 4
    grid = InProcessGrid(app, 5, {}, node_configs=configs)
    message, reply = ask(grid, 0)
    d = TrainInstruction.from_config(message.content[contract.CONFIG]).num_coordinates
    np.testing.assert_array_equal(the_vote(reply, d), -expected_vote("none", message, {}))
    message, reply = ask(grid, 1)
    np.testing.assert_array_equal(the_vote(reply, d), expected_vote("none", message, {}))
