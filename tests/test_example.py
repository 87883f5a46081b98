"""The outside example app, and every attack mounted on its client through the app path.

``examples/breast-cancer`` is a Flower app of its own (its own model with a frozen
parameter, float buffers and BatchNorm, a BCE loss on a single logit, its own data). Here
it runs end to end in-process, and each attack of the registry is mounted on a client built
from its model, loss and data with the client API and the Byzantine mod: the vote that
comes back must be exactly what the attack defines, so switching any attack off fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fl_election import contract
from fl_election.attacks import ATTACKS, AlieAttack, RandomAttack, forge_gradient
from fl_election.clients import (
    byzantine_mod,
    coded_client_app,
    make_byzantine_mod,
    partition_batch,
)
from fl_election.clients.mods import SILENT_ERROR_CODE
from fl_election.codes import deterministic
from fl_election.contract import ContractError, TrainInstruction
from fl_election.simulations.inprocess import InProcessGrid
from fl_election.strategies import ElectionCoding, FullGradientMedian, vote_keys
from fl_election.training import partition_gradients, vote_parameters
from fl_election.voting import unpack_signs
from fl_election.wire import decode_vote

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "breast-cancer"
sys.path.insert(0, str(EXAMPLE))

from bcapp.client_app import app as example_client_app  # noqa: E402
from bcapp.server_app import app as example_server_app  # noqa: E402
from bcapp.task import Net, load_data, loss_fn  # noqa: E402

TRAIN, TEST = load_data()
NODES = [1000 + i for i in range(5)]
BYZANTINE_ROW = 1  # holds several partitions in deterministic(5, b=1)


class RecordingGrid(InProcessGrid):
    """An in-process grid that keeps every reply (to read the federated evaluation)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.log: list[Message] = []

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        replies = list(super().pull_messages(message_ids))
        self.log.extend(replies)
        return replies


def test_the_example_trains_under_a_byzantine_node():
    node_configs = [{"partition-id": i} for i in range(5)]
    node_configs[3] = {"byzantine": "true", "attack": "omniscient"}
    run_config = {"num-server-rounds": 30}
    grid = RecordingGrid(example_client_app, 5, run_config, node_configs)
    context = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    example_server_app(grid, context)  # what flwr run and run_apps do
    evaluations = [
        m.content["metrics"]["test-accuracy"]
        for m in grid.log
        if m.has_content() and "test-accuracy" in m.content.metric_records.get("metrics", {})
    ]
    assert len(evaluations) == 3 * 5  # rounds 10, 20, 30, five nodes
    assert min(evaluations[-5:]) >= 0.9
    train_replies = [m for m in grid.log if m.has_content() and "vote" in m.content]
    assert len(train_replies) == 30 * 5


def example_message(strategy, row: int) -> Message:
    """The train message the example's strategy sends to code row ``row`` in round 3."""

    class Grid:
        def get_node_ids(self):  # noqa: D102
            return NODES

    net = Net()
    arrays = ArrayRecord(net.state_dict())
    messages = strategy.configure_train(3, arrays, ConfigRecord(), Grid())
    return next(m for m in messages if m.metadata.dst_node_id == NODES[row])


def deliver(app: ClientApp, message: Message, node_config=None) -> Message:
    grid = InProcessGrid(app, 5, {}, node_configs=[node_config or {}] * 5)
    return list(grid.pull_messages(grid.push_messages([message])))[0]


def the_vote(reply: Message, d: int) -> np.ndarray:
    vote = reply.content[contract.VOTE]
    signs, abstain = decode_vote({k: vote[k].numpy() for k in vote.keys()}, d)
    return unpack_signs(signs, d, abstain)


def reference_gradients(
    message: Message, partitions, *, targets_fn=None, noise_std=0.0, noise_seed=0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-partition float gradients (noise added as the client does) and the weights."""
    instruction = TrainInstruction.from_config(message.content[contract.CONFIG])
    net = Net()
    net.load_state_dict(message.content[contract.ARRAYS].to_torch_state_dict())
    batches = [partition_batch(TRAIN, instruction, j) for j in partitions]
    params = vote_parameters(net, instruction.vote_keys)
    grads, _ = partition_gradients(
        net, batches, loss_fn=loss_fn, parameters=params, targets_fn=targets_fn
    )
    if noise_std:
        generator = torch.Generator().manual_seed(noise_seed)
        for row in range(grads.shape[0]):
            noise = torch.randn(grads.shape[1], generator=generator, dtype=torch.float32)
            grads[row].add_(noise, alpha=noise_std)
    weights = torch.cat([p.detach().reshape(-1) for p in params])
    return grads, weights


def reference_signs(message: Message, partitions, **kwargs) -> torch.Tensor:
    """Per-partition signs computed directly, without the client API or the mod."""
    return torch.sign(reference_gradients(message, partitions, **kwargs)[0]).to(torch.int8)


def honest_vote(message: Message, **kwargs) -> np.ndarray:
    """The 1-bit honest vote, from the contract's definition of the tie rule."""
    instruction = TrainInstruction.from_config(message.content[contract.CONFIG])
    grads, weights = reference_gradients(message, list(instruction.partition_ids), **kwargs)
    vote = torch.sign(torch.sign(grads).sum(dim=0))
    regularised = grads.mean(dim=0) + instruction.weight_decay * weights
    tie_break = torch.where(regularised < 0, -1.0, 1.0)
    return torch.where(vote == 0, tie_break, vote).to(torch.int8).numpy()


def noise_seed(instruction: TrainInstruction) -> int:
    sequence = np.random.SeedSequence(
        [instruction.seed, instruction.step, instruction.worker_index]
    )
    return int(sequence.generate_state(1)[0])


def attack_rng(instruction: TrainInstruction) -> np.random.Generator:
    return np.random.default_rng(
        [instruction.seed, instruction.step, instruction.worker_index, 0xB7]
    )


def expected_vote(name: str, message: Message, params: dict) -> np.ndarray:
    instruction = TrainInstruction.from_config(message.content[contract.CONFIG])
    everyone = list(range(instruction.num_partitions))
    honest = honest_vote(message)
    assert set(np.unique(honest)) <= {-1, 1}  # one bit per coordinate
    if name in ("none", "malformed"):
        return honest
    if name == "reverse":
        return -honest
    if name == "directional":
        return np.full_like(honest, params.get("attack-direction", 1))
    if name == "random":
        return RandomAttack().forge(honest, None, attack_rng(instruction))
    all_signs = reference_signs(message, everyone)
    sign_sum = all_signs.sum(dim=0).numpy().astype(np.int64)
    mu = np.sign(sign_sum).astype(np.int8)
    if name in ("omniscient", "ipm"):
        return np.where(mu != 0, -mu, -honest).astype(np.int8)
    if name == "alie":
        attack = AlieAttack(num_partitions=instruction.num_partitions, z=params["attack-z"])
        return attack.forge(honest, sign_sum, attack_rng(instruction))
    if name == "label-flip":
        return honest_vote(message, targets_fn=lambda y, out: 1 - y)
    if name == "gaussian-noise":
        return honest_vote(
            message, noise_std=params["attack-std"], noise_seed=noise_seed(instruction)
        )
    raise AssertionError(f"no expectation for {name}")


ATTACK_PARAMS = {
    "directional": {"attack-direction": -1},
    "alie": {"attack-z": 0.5},
    "gaussian-noise": {"attack-std": 0.05},
    "malformed": {"malformed-kind": "garbage"},
}


#: Attacks on sign votes from one node's view (the float-only ones forge float gradients,
#: tests/test_float_attacks.py; min-margin needs the code's rows, test_min_margin_*).
SIGN_VOTE_ATTACKS = sorted(
    name for name, cls in ATTACKS.items() if not (cls.float_only or cls.needs_partition_signs)
)


@pytest.mark.parametrize("name", SIGN_VOTE_ATTACKS)
def test_every_attack_through_the_mod_on_the_example_client(name: str) -> None:
    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )
    message = example_message(strategy, BYZANTINE_ROW)
    instruction = TrainInstruction.from_config(message.content[contract.CONFIG])
    assert len(instruction.partition_ids) >= 2
    params = ATTACK_PARAMS.get(name, {})
    mod = make_byzantine_mod(name, rows={BYZANTINE_ROW}, **params)
    app = coded_client_app(Net(), loss_fn, TRAIN, mods=[mod])
    reply = deliver(app, message)
    d = instruction.num_coordinates
    if name == "silent":
        assert reply.has_error() and reply.error.code == SILENT_ERROR_CODE
        return
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    if name == "malformed":
        vote = reply.content[contract.VOTE]
        assert vote["signs"].numpy().size > (d + 7) // 8  # garbage is always too long
        with pytest.raises(ValueError):
            the_vote(reply, d)
        _, metrics = strategy.aggregate_train(3, [reply])
        assert metrics["valid-votes"] == 0 and metrics["rejected-replies"] == 1
        return
    got = the_vote(reply, d)
    want = expected_vote(name, message, params)
    np.testing.assert_array_equal(got, want)
    honest = expected_vote("none", message, {})
    if name != "none":
        assert not np.array_equal(got, honest), f"{name} sent the honest vote"


def test_a_node_config_marks_the_example_client_byzantine() -> None:
    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )
    message = example_message(strategy, 0)
    d = TrainInstruction.from_config(message.content[contract.CONFIG]).num_coordinates
    reply = deliver(example_client_app, message, {"byzantine": "true", "attack": "reverse"})
    np.testing.assert_array_equal(the_vote(reply, d), -expected_vote("none", message, {}))
    honest = deliver(example_client_app, message, {"byzantine": "false"})
    np.testing.assert_array_equal(the_vote(honest, d), expected_vote("none", message, {}))


@pytest.mark.parametrize("name", ["reverse", "omniscient", "gaussian-noise", "label-flip"])
def test_float_attacks_on_the_example_client(name: str) -> None:
    strategy = FullGradientMedian(5, batch_size=100, trainable_keys=vote_keys(Net()))
    message = example_message(strategy, 2)
    instruction = TrainInstruction.from_config(message.content[contract.CONFIG])
    params = ATTACK_PARAMS.get(name, {})
    app = coded_client_app(
        Net(), loss_fn, TRAIN, mods=[make_byzantine_mod(name, rows={2}, **params)]
    )
    got = deliver(app, message).content[contract.VOTE][contract.GRADIENT].numpy()
    honest = deliver(coded_client_app(Net(), loss_fn, TRAIN), message)
    g = honest.content[contract.VOTE][contract.GRADIENT].numpy()
    net = Net()
    net.load_state_dict(message.content[contract.ARRAYS].to_torch_state_dict())
    params_ = vote_parameters(net, instruction.vote_keys)
    if name == "reverse":
        np.testing.assert_array_equal(got, -g)
    elif name == "omniscient":
        batches = [partition_batch(TRAIN, instruction, j) for j in range(5)]
        grads, _ = partition_gradients(net, batches, loss_fn=loss_fn, parameters=params_)
        sign_sum = torch.sign(grads).to(torch.int16).sum(dim=0).numpy()
        mean = grads.mean(dim=0).numpy()
        rng = attack_rng(instruction)
        # to float32 rounding: the node's k passes may run batched in another order
        np.testing.assert_allclose(
            got, forge_gradient(ATTACKS["omniscient"](), mean, sign_sum, rng), rtol=1e-6, atol=1e-9
        )
    elif name == "label-flip":
        batch = [partition_batch(TRAIN, instruction, 2)]
        flipped, _ = partition_gradients(
            net, batch, loss_fn=loss_fn, parameters=params_, targets_fn=lambda y, out: 1 - y
        )
        np.testing.assert_allclose(got, flipped[0].numpy(), rtol=1e-6)
    else:
        assert not np.array_equal(got, g)
        assert np.std(got - g) == pytest.approx(params["attack-std"], rel=0.2)


def test_the_mod_refuses_a_client_that_ignores_the_hook() -> None:
    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )
    message = example_message(strategy, 0)
    app = ClientApp()

    @app.train(mods=[make_byzantine_mod("omniscient", rows={0})])
    def train(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"vote": ArrayRecord()}), reply_to=msg)

    reply = deliver(app, message)
    assert reply.has_error() and "client API" in reply.error.reason


def test_the_mod_does_not_touch_the_honest_handlers_input() -> None:
    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )
    message = example_message(strategy, BYZANTINE_ROW)
    seen: list[dict] = []
    inner = coded_client_app(Net(), loss_fn, TRAIN)

    def spy(msg: Message, context: Context, call_next):  # noqa: ANN001
        seen.append(dict(msg.content[contract.CONFIG]))
        return call_next(msg, context)

    app = coded_client_app(
        Net(), loss_fn, TRAIN, mods=[make_byzantine_mod("omniscient", rows={1}), spy]
    )
    deliver(app, message)
    assert seen == [dict(message.content[contract.CONFIG])]
    assert inner is not app


def test_the_client_app_survives_the_pickling_of_flowers_ray_simulation() -> None:
    import cloudpickle

    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )
    message = example_message(strategy, 0)
    app = coded_client_app(Net(), loss_fn, TRAIN, test_data=TEST, mods=[byzantine_mod])
    deliver(app, message)  # a used app (models and data cached) pickles too
    again = cloudpickle.loads(cloudpickle.dumps(app))
    d = TrainInstruction.from_config(message.content[contract.CONFIG]).num_coordinates
    np.testing.assert_array_equal(
        the_vote(deliver(again, message), d), expected_vote("none", message, {})
    )


def test_a_node_whose_model_differs_refuses_with_a_contract_error() -> None:
    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )
    message = example_message(strategy, 0)
    other = Net()
    other.hidden = torch.nn.Linear(30, 17)
    reply = deliver(coded_client_app(other, loss_fn, TRAIN), message)
    assert reply.has_error() and reply.error.code == contract.CONTRACT_ERROR_CODE
    assert "do not fit this node's model" in reply.error.reason
    with pytest.raises(ContractError, match="do not fit"):
        strategy.aggregate_train(3, [reply])


def test_a_select_rule_may_name_the_attack() -> None:
    strategy = ElectionCoding(
        deterministic(5, b=1), byzantine_budget=1, batch_size=100, trainable_keys=vote_keys(Net())
    )
    message = example_message(strategy, 0)
    mod = make_byzantine_mod(select=lambda context, instruction: "reverse")
    reply = deliver(coded_client_app(Net(), loss_fn, TRAIN, mods=[mod]), message)
    d = TrainInstruction.from_config(message.content[contract.CONFIG]).num_coordinates
    np.testing.assert_array_equal(the_vote(reply, d), -expected_vote("none", message, {}))
