"""ElectionCoding / FullGradientMedian: messages out, votes in, the update, bad replies."""

from __future__ import annotations

from uuid import uuid4

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fl_election import contract
from fl_election.codes import AllocationCode, uncoded
from fl_election.contract import ContractError, TrainInstruction
from fl_election.strategies import DirectionStrategy, ElectionCoding, FullGradientMedian
from fl_election.voting import pack_signs


class FakeGrid:
    """Just enough of a Grid for configure_train."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)


def model_arrays(d: int = 10) -> ArrayRecord:
    return ArrayRecord(
        {
            "w": Array(np.linspace(-1, 1, d).astype(np.float32)),
            "b": Array(np.zeros(2, dtype=np.float32)),
        }
    )


def sent(strategy, arrays, nodes=(30, 10, 20), server_round=1):
    messages = list(
        strategy.configure_train(server_round, arrays, ConfigRecord({"x": 1}), FakeGrid(nodes))
    )
    for m in messages:
        m.metadata.__dict__["_message_id"] = str(uuid4())
    return {m.metadata.dst_node_id: m for m in messages}


def vote_reply(instruction: Message, vote: np.ndarray, **extra) -> Message:
    signs, abstain = pack_signs(vote)
    record = ArrayRecord({"signs": Array(signs)})
    if abstain is not None:
        record["abstain"] = Array(abstain)
    for key, value in extra.items():
        record[key] = Array(value)
    metrics = {"num-examples": 4, "train-loss": 1.0, "num-coordinates": vote.size}
    content = RecordDict({"vote": record, "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=instruction)


def test_configure_train_sends_each_node_its_row_and_keeps_the_mapping():
    code = AllocationCode(np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=np.uint8), name="t")
    strategy = ElectionCoding(code, seed=7)
    first = sent(strategy, model_arrays(), nodes=(30, 10, 20))
    assert strategy.node_to_worker == {10: 0, 20: 1, 30: 2}
    configs = {n: m.content["config"] for n, m in first.items()}
    assert list(configs[10]["partition-ids"]) == [0, 2]
    assert list(configs[20]["partition-ids"]) == [1]
    assert list(configs[30]["partition-ids"]) == [0, 1, 2]
    assert configs[10]["seed"] == 7 and configs[10]["step"] == 0
    assert configs[10]["num-partitions"] == 3 and configs[10]["x"] == 1
    # a later round, nodes listed in another order: same rows
    second = sent(strategy, model_arrays(), nodes=(20, 30, 10), server_round=5)
    assert list(second[10].content["config"]["partition-ids"]) == [0, 2]
    assert second[10].content["config"]["step"] == 4


def test_aggregate_applies_the_majority_with_momentum_and_weight_decay():
    arrays = model_arrays()
    strategy = ElectionCoding(
        uncoded(3), lr=0.1, momentum=0.5, weight_decay=0.01, trainable_keys=["w", "b"]
    )
    out = sent(strategy, arrays)
    d = 12
    rng = np.random.default_rng(0)
    votes = {n: rng.choice([-1, 1], size=d).astype(np.int8) for n in out}
    replies = [vote_reply(out[n], votes[n]) for n in out]
    new, metrics = strategy.aggregate_train(1, replies)
    majority = np.sign(sum(votes.values()))
    w = np.concatenate([arrays["w"].numpy(), arrays["b"].numpy()])
    expected = w - 0.1 * (majority + 0.01 * w)
    got = np.concatenate([new["w"].numpy(), new["b"].numpy()])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert metrics["valid-votes"] == 3 and metrics["rejected-replies"] == 0
    assert metrics["uplink-bytes"] == 3 * 2
    agreement = np.mean([np.mean(votes[n] == majority) for n in out])
    assert metrics["agreement"] == pytest.approx(agreement)
    # second step: the momentum buffer carries the first direction
    out = sent(strategy, new, server_round=2)
    replies = [vote_reply(out[n], votes[n]) for n in out]
    newer, _ = strategy.aggregate_train(2, replies)
    buf = majority + 0.01 * w
    buf = 0.5 * buf + (majority + 0.01 * got)
    np.testing.assert_allclose(
        np.concatenate([newer["w"].numpy(), newer["b"].numpy()]), got - 0.1 * buf, rtol=1e-5
    )


def test_abstentions_travel_and_ties_give_zero():
    strategy = ElectionCoding(
        uncoded(4), lr=1.0, momentum=0.0, weight_decay=0.0, trainable_keys=["w", "b"]
    )
    arrays = model_arrays()
    out = sent(strategy, arrays, nodes=(1, 2, 3, 4))
    votes = [
        np.array([1, 1, 0, -1] * 3, dtype=np.int8),
        np.array([1, -1, 0, -1] * 3, dtype=np.int8),
        np.array([-1, -1, 0, 1] * 3, dtype=np.int8),
        np.array([1, 1, 0, -1] * 3, dtype=np.int8),
    ]
    replies = [vote_reply(out[n], v) for n, v in zip((1, 2, 3, 4), votes, strict=True)]
    new, metrics = strategy.aggregate_train(1, replies)
    direction = np.concatenate([arrays["w"].numpy(), arrays["b"].numpy()]) - np.concatenate(
        [new["w"].numpy(), new["b"].numpy()]
    )
    np.testing.assert_allclose(direction, np.array([1, 0, 0, -1] * 3, dtype=np.float32), atol=1e-6)
    assert metrics["abstain-fraction"] == pytest.approx(0.5)


def test_malformed_and_missing_replies_are_rejected_counted_and_the_vote_goes_on():
    strategy = ElectionCoding(
        uncoded(9),
        byzantine_budget=4,  # the 4 rejected rows are within the fault budget
        lr=1.0,
        momentum=0.0,
        weight_decay=0.0,
        trainable_keys=["w", "b"],
    )
    arrays = model_arrays()
    out = sent(strategy, arrays, nodes=range(1, 10))
    good = np.array([1, -1] * 6, dtype=np.int8)
    replies = [vote_reply(out[n], good) for n in (1, 2, 3, 8, 9)]
    # wrong dtype, wrong length, an error reply, missing vote, an extra array
    bad_dtype = vote_reply(out[4], good)
    bad_dtype.content["vote"]["signs"] = Array(np.zeros(2, dtype=np.float32))
    bad_len = vote_reply(out[5], good)
    bad_len.content["vote"]["signs"] = Array(np.zeros(5, dtype=np.uint8))
    error = Message(Error(code=1, reason="boom"), reply_to=out[6])
    no_vote = Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=out[7])
    duplicate = vote_reply(out[1], -good)
    replies += [bad_dtype, bad_len, error, no_vote, duplicate]
    new, metrics = strategy.aggregate_train(1, replies)
    assert metrics["valid-votes"] == 5
    assert metrics["rejected-replies"] == 5
    assert metrics["missing-replies"] == 0
    w = np.concatenate([arrays["w"].numpy(), arrays["b"].numpy()])
    np.testing.assert_allclose(np.concatenate([new["w"].numpy(), new["b"].numpy()]), w - good)


def test_no_valid_vote_leaves_the_model_unchanged_and_reports_missing_nodes():
    strategy = ElectionCoding(uncoded(3), trainable_keys=["w", "b"])
    out = sent(strategy, model_arrays())
    new, metrics = strategy.aggregate_train(
        1, [Message(Error(code=1, reason="x"), reply_to=out[10])]
    )
    assert new is None
    assert metrics["valid-votes"] == 0 and metrics["missing-replies"] == 2


def test_constructor_errors():
    with pytest.raises(ValueError, match="b = 2 must satisfy"):
        ElectionCoding(uncoded(4), byzantine_budget=2)
    with pytest.raises(ValueError, match="unknown"):
        ElectionCoding("no-such-code", code_params={"n": 3})
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        ElectionCoding(uncoded(3), lr=0)
    strategy = ElectionCoding("bernoulli", code_params={"n": 9, "redundancy": 2.0, "seed": 1})
    assert strategy.code.n == 9


def test_fgm_takes_the_coordinate_median_of_float_gradients():
    strategy = FullGradientMedian(
        3, lr=1.0, momentum=0.0, weight_decay=0.0, trainable_keys=["w", "b"]
    )
    arrays = model_arrays()
    out = sent(strategy, arrays)
    assert all(m.content["config"]["payload"] == "gradient" for m in out.values())
    grads = {
        10: np.arange(12, dtype=np.float32),
        20: -np.arange(12, dtype=np.float32),
        30: 100 * np.ones(12, dtype=np.float32),
    }
    replies = []
    for n, g in grads.items():
        content = RecordDict(
            {
                "vote": ArrayRecord({"gradient": Array(g)}),
                "metrics": MetricRecord({"num-examples": 1, "num-coordinates": 12}),
            }
        )
        replies.append(Message(content=content, reply_to=out[n]))
    nan = RecordDict({"vote": ArrayRecord({"gradient": Array(np.full(12, np.nan, np.float32))})})
    new, metrics = strategy.aggregate_train(1, replies + [Message(nan, reply_to=out[10])])
    w = np.concatenate([arrays["w"].numpy(), arrays["b"].numpy()])
    np.testing.assert_allclose(
        np.concatenate([new["w"].numpy(), new["b"].numpy()]),
        w - np.median(np.stack(list(grads.values())), axis=0),
    )
    assert metrics["rejected-replies"] == 1
    assert metrics["uplink-bytes"] == 3 * 12 * 4


def test_the_train_instruction_carries_the_whole_contract():
    strategy = ElectionCoding(uncoded(3), seed=3, batch_size=30, trainable_keys=["b", "w"])
    arrays = model_arrays()
    arrays["bn.running_mean"] = Array(np.zeros(2, dtype=np.float32))
    out = sent(strategy, arrays)
    instruction = TrainInstruction.from_config(out[10].content[contract.CONFIG])
    assert instruction.vote_keys == ("b", "w")  # the caller's order, not the record's
    assert instruction.num_coordinates == 12
    assert instruction.buffer_keys == ("bn.running_mean",)
    assert instruction.partition_batch_size == 10 and instruction.seed == 3
    assert instruction.payload == contract.PAYLOAD_SIGN_VOTE


def test_a_vote_of_the_wrong_length_is_rejected_even_when_it_packs_to_the_same_bytes():
    strategy = ElectionCoding(uncoded(3), trainable_keys=["w", "b"])
    out = sent(strategy, model_arrays())
    good = np.array([1, -1] * 6, dtype=np.int8)
    shifted = vote_reply(out[30], np.array([1, -1] * 5 + [1], dtype=np.int8))  # d - 1 = 11
    _, metrics = strategy.aggregate_train(
        1, [vote_reply(out[10], good), vote_reply(out[20], good), shifted]
    )
    assert metrics["valid-votes"] == 2 and metrics["rejected-replies"] == 1


def test_a_round_where_every_reply_breaks_the_contract_stops_the_run():
    strategy = ElectionCoding(uncoded(3), trainable_keys=["w", "b"])
    out = sent(strategy, model_arrays())
    replies = [
        Message(
            Error(code=contract.CONTRACT_ERROR_CODE, reason="vote key 'b' is a buffer"),
            reply_to=out[n],
        )
        for n in out
    ]
    with pytest.raises(ContractError, match="vote key 'b' is a buffer"):
        strategy.aggregate_train(1, replies)


def test_strategies_are_siblings_over_a_small_base():
    assert issubclass(ElectionCoding, DirectionStrategy)
    assert issubclass(FullGradientMedian, DirectionStrategy)
    assert not issubclass(FullGradientMedian, ElectionCoding)
    assert not hasattr(FullGradientMedian(3), "code")
