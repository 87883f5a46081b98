"""One bit each way: the 1-bit tie rule and the vote-broadcast downlink."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fl_election import contract
from fl_election.clients import coded_client_app
from fl_election.codes import deterministic
from fl_election.config import RunConfig
from fl_election.simulations.inprocess import InProcessGrid, run_inprocess
from fl_election.strategies import ElectionCoding, vote_keys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "breast-cancer"))
from bcapp.task import Net, load_data, loss_fn  # noqa: E402

TRAIN, TEST = load_data()


def small(tmp_path: Path, **changes: object) -> RunConfig:
    values: dict[str, object] = dict(
        num_server_rounds=8,
        eval_every=4,
        num_workers=5,
        byzantine_count=1,
        attack="reverse",
        code="deterministic",
        batch_size=60,
        output_dir=str(tmp_path),
        lr=0.01,
        checkpoint_every=0,
    )
    values.update(changes)
    return RunConfig(**values)  # type: ignore[arg-type]


def test_vote_downlink_trains_the_bit_identical_model_at_a_fraction_of_the_bytes(tmp_path):
    vote = run_inprocess(small(tmp_path / "vote", downlink="vote"))
    full = run_inprocess(small(tmp_path / "full", downlink="full"))
    a = np.load(next((tmp_path / "vote").glob("*.model.npz")))
    b = np.load(next((tmp_path / "full").glob("*.model.npz")))
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    assert vote["final"] == full["final"]
    d = sum(a[key].size for key in a.files)
    full_bytes = [r["downlink-bytes"] for r in full["rounds"]]
    vote_bytes = [r["downlink-bytes"] for r in vote["rounds"]]
    assert full_bytes[0] == vote_bytes[0] >= 5 * 4 * d  # round 1: everyone gets the model
    assert all(f >= 5 * 4 * d for f in full_bytes)
    # later rounds: one sign plane (plus a zero-plane where the vote tied) per node
    assert all(v <= 5 * 2 * ((d + 7) // 8 + 64) for v in vote_bytes[2:]), vote_bytes
    assert vote_bytes[1] < full_bytes[1] / 10


@pytest.mark.parametrize("tie_rule, most", [("gradient", 1.001), ("abstain", 2.0)])
def test_the_tie_rule_sets_the_uplink_bits_per_coordinate(tmp_path, tie_rule, most):
    record = run_inprocess(small(tmp_path, tie_rule=tie_rule, num_server_rounds=3))
    bits = [r["uplink-bits-per-coordinate"] for r in record["rounds"]]
    assert all(b <= most for b in bits), bits
    if tie_rule == "abstain":  # digits: weights behind blank pixels have zero gradients
        assert all(b > 1.01 for b in bits), bits


def run_example(downlink: str, rounds: int = 6, tamper: int | None = None):
    torch.manual_seed(0)
    net = Net()
    strategy = ElectionCoding(
        deterministic(5, b=1),
        byzantine_budget=1,
        lr=0.01,
        batch_size=100,
        trainable_keys=vote_keys(net),
        downlink=downlink,
    )
    app = coded_client_app(Net(), loss_fn, TRAIN)
    grid = InProcessGrid(app, 5, {})
    if tamper is not None:
        original = strategy.configure_train

        def configure(server_round, arrays, config, grid_):
            if server_round == tamper:  # node 1002's copy of the model goes wrong
                state = grid.contexts[1002].state
                record = state.array_records["fl-election.model"]
                key = vote_keys(net)[0]
                record[key] = Array(record[key].numpy() + np.float32(1e-3))
            return original(server_round, arrays, config, grid_)

        strategy.configure_train = configure  # type: ignore[method-assign]
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=rounds
    )
    return strategy, result


def test_batchnorm_model_vote_downlink_matches_full_broadcast():
    _, vote = run_example("vote")
    _, full = run_example("full")
    for key in full.arrays.keys():
        np.testing.assert_array_equal(vote.arrays[key].numpy(), full.arrays[key].numpy())


def test_a_node_whose_copy_differs_resyncs_and_votes_again():
    strategy, _ = run_example("vote", rounds=6, tamper=3)
    audits = {a.round: a for a in strategy.audit}
    row = strategy.node_to_worker[1002]
    assert [r["code"] for r in audits[3].rejected] == ["resync"]
    assert audits[3].rejected[0]["node"] == 1002
    assert row in audits[4].voters and row in audits[6].voters


def test_a_malformed_broadcast_is_a_resync_not_a_crash():
    net = Net()
    strategy = ElectionCoding(deterministic(5, b=1), trainable_keys=vote_keys(net), batch_size=100)
    app = coded_client_app(Net(), loss_fn, TRAIN)
    grid = InProcessGrid(app, 5, {})
    arrays = ArrayRecord(net.state_dict())
    first = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
    replies = list(grid.send_and_receive(first))
    new, _ = strategy.aggregate_train(1, replies)
    second = list(strategy.configure_train(2, new, ConfigRecord(), grid))
    assert all(contract.UPDATE in m.content and contract.ARRAYS not in m.content for m in second)
    bad = second[0]
    bad.content[contract.UPDATE]["signs"] = Array(np.zeros(3, dtype=np.float32))
    reply = list(grid.send_and_receive([bad]))[0]
    assert reply.has_error() and reply.error.code == contract.RESYNC_ERROR_CODE
    # and the node is back to a full model next time
    again = Message(
        RecordDict({contract.ARRAYS: new, contract.CONFIG: bad.content[contract.CONFIG]}),
        dst_node_id=bad.metadata.dst_node_id,
        message_type=bad.metadata.message_type,
    )
    assert not list(grid.send_and_receive([again]))[0].has_error()


def test_worker_momentum_votes_the_sign_of_each_partitions_moving_average():
    from fl_election.clients import partition_batch
    from fl_election.codes import uncoded
    from fl_election.contract import TrainInstruction
    from fl_election.training import partition_gradients, vote_parameters
    from fl_election.voting import unpack_signs
    from fl_election.wire import decode_vote

    torch.manual_seed(0)
    net = Net()
    beta, wd = 0.9, 1e-4
    strategy = ElectionCoding(
        uncoded(5), trainable_keys=vote_keys(net), batch_size=100, worker_momentum=beta,
        momentum=0.0, weight_decay=wd, downlink="full",
    )  # fmt: skip
    app = coded_client_app(Net(), loss_fn, TRAIN)
    grid = InProcessGrid(app, 5, {})
    arrays = ArrayRecord(net.state_dict())
    node = 1002
    votes, instructions = [], []
    for server_round in (1, 2):
        message = next(
            m
            for m in strategy.configure_train(server_round, arrays, ConfigRecord(), grid)
            if m.metadata.dst_node_id == node
        )
        instructions.append(TrainInstruction.from_config(message.content[contract.CONFIG]))
        reply = list(grid.send_and_receive([message]))[0]
        d = instructions[-1].num_coordinates
        vote = reply.content[contract.VOTE]
        signs, abstain = decode_vote({k: vote[k].numpy() for k in vote.keys()}, d)
        votes.append(unpack_signs(signs, d, abstain))
    # the reference: the moving average of the partition's gradients over the two steps
    params = vote_parameters(net, vote_keys(net))
    average = None
    for instruction in instructions:
        (j,) = instruction.partition_ids
        batch = [partition_batch(TRAIN, instruction, j)]
        g, _ = partition_gradients(net, batch, loss_fn=loss_fn, parameters=params)
        average = g[0] * (1 - beta) if average is None else average * beta + g[0] * (1 - beta)
    weights = torch.cat([p.detach().reshape(-1) for p in params])
    tie_break = torch.where(average + wd * weights < 0, -1, 1)
    expected = torch.where(average != 0, torch.sign(average), tie_break).to(torch.int8)
    np.testing.assert_array_equal(votes[1], expected.numpy())
    plain = torch.sign(g[0])
    assert (torch.from_numpy(votes[1]) != plain).any()  # momentum changed some votes
    assert "fl-election.signum" in grid.contexts[node].state.array_records
