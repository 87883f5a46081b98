"""The quorum rule (pure) and the strategy failing closed below it."""

from __future__ import annotations

from uuid import uuid4

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fl_election import contract
from fl_election.codes import deterministic, uncoded
from fl_election.quorum import QuorumRule, default_min_votes
from fl_election.strategies import ElectionCoding, QuorumError
from fl_election.voting import pack_signs


def test_two_b_plus_one_votes_are_needed():
    rule = QuorumRule(uncoded(15), 6)
    assert rule.min_votes == default_min_votes(6) == 13
    assert not rule.full_code_certified  # uncoded is not 6-tolerant
    assert rule.decide(range(13)).applied
    decision = rule.decide(range(12))
    assert not decision.applied and decision.reason == "too-few-votes"
    assert decision.votes == 12 and decision.needed == 13
    assert QuorumRule(uncoded(3), 0).decide([2]).applied  # b = 0: one vote is a vote


def test_a_certified_code_stays_certified_on_the_answering_rows():
    code = deterministic(7, 1, tie_rule="forced")
    rule = QuorumRule(code, 1)  # ties forced: the 1-bit uplink's certificate
    assert rule.full_code_certified
    assert rule.decide(range(7)).applied
    # find rows whose loss breaks the certificate, and rows whose loss does not
    outcomes = {
        rows: rule.decide(rows) for rows in (tuple(r for r in range(7) if r != x) for x in range(7))
    }
    assert any(not d.applied and d.reason == "not-certified" for d in outcomes.values()) or all(
        d.applied for d in outcomes.values()
    )
    heavy = int(np.argmax(code.loads))
    without_heavy = rule.decide(r for r in range(7) if r != heavy)
    from fl_election.codes import AllocationCode, certify

    sub = AllocationCode(code.matrix[[r for r in range(7) if r != heavy]])
    assert without_heavy.applied == certify(sub, 1, tie_rule="forced").tolerant
    # the abstain-rule code is not certified once ties count as wrong votes
    assert not QuorumRule(deterministic(7, 1), 1).full_code_certified
    assert QuorumRule(deterministic(7, 1), 1, tie_rule="abstain").full_code_certified


def test_min_votes_must_be_possible():
    with pytest.raises(ValueError, match="min_votes"):
        QuorumRule(uncoded(3), 1, min_votes=4)


class Grid:
    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)


def arrays():
    return ArrayRecord({"w": Array(np.linspace(-1, 1, 16).astype(np.float32))})


def configure(strategy, server_round, model, nodes):
    messages = list(strategy.configure_train(server_round, model, ConfigRecord(), Grid(nodes)))
    for m in messages:
        m.metadata.__dict__["_message_id"] = str(uuid4())
    return {m.metadata.dst_node_id: m for m in messages}


def vote(to, value=1):
    signs, _ = pack_signs(np.full(16, value, dtype=np.int8))
    content = RecordDict(
        {
            contract.VOTE: ArrayRecord({"signs": Array(signs)}),
            contract.METRICS: MetricRecord({contract.METRIC_NUM_COORDINATES: 16}),
        }
    )
    return Message(content, reply_to=to)


def test_below_quorum_the_model_is_unchanged_audited_and_the_run_stops_after_three():
    strategy = ElectionCoding(uncoded(5), byzantine_budget=2, trainable_keys=["w"], lr=0.1)
    model = arrays()
    nodes = [10, 11, 12, 13, 14]
    out = configure(strategy, 1, model, nodes)
    new, metrics = strategy.aggregate_train(1, [vote(out[n]) for n in nodes])
    assert new is not None and metrics["applied"] == 1
    for server_round in (2, 3):
        out = configure(strategy, server_round, new, nodes)
        replies = [vote(out[10]), vote(out[11]), Message(Error(1, "x"), reply_to=out[12])]
        unchanged, metrics = strategy.aggregate_train(server_round, replies)
        assert unchanged is None and metrics["applied"] == 0
        audit = strategy.audit[-1]
        assert audit.decision == "too-few-votes" and not audit.applied
        assert audit.voters == [0, 1]
        assert audit.missing == [{"node": 13, "row": 3}, {"node": 14, "row": 4}]
        assert audit.rejected[0]["node"] == 12 and audit.rejected[0]["code"] == "error"
        assert metrics["missing-rows"] == [3, 4] and metrics["rejected-rows"] == [2]
    out = configure(strategy, 4, new, nodes)
    with pytest.raises(QuorumError, match=r"node 13 \(row 3\).*node 12 \(row 2, error\)"):
        strategy.aggregate_train(
            4, [vote(out[10]), vote(out[11]), Message(Error(1, "x"), reply_to=out[12])]
        )


def test_a_round_at_quorum_resets_the_count():
    strategy = ElectionCoding(
        uncoded(3),
        byzantine_budget=1,
        trainable_keys=["w"],
        max_rounds_below_quorum=2,
        reassign_after=0,
    )
    model = arrays()
    for server_round, voters in enumerate([[1], [1, 2, 3], [1], [1, 2, 3], [1]], start=1):
        out = configure(strategy, server_round, model, [1, 2, 3])
        strategy.aggregate_train(server_round, [vote(out[n]) for n in voters])
    assert [a.applied for a in strategy.audit] == [False, True, False, True, False]


def test_rows_move_from_a_silent_node_to_a_spare_one():
    strategy = ElectionCoding(uncoded(3), trainable_keys=["w"], reassign_after=2)
    model = arrays()
    nodes = [1, 2, 3]
    for server_round in (1, 2):
        out = configure(strategy, server_round, model, nodes)
        strategy.aggregate_train(server_round, [vote(out[1]), vote(out[2])])  # 3 is silent
    # node 3 is still connected but silent for 2 rounds; node 9 joins without a row
    out = configure(strategy, 3, model, nodes + [9])
    assert strategy.node_to_worker == {1: 0, 2: 1, 9: 2}
    assert set(out) == {1, 2, 9}
    assert out[9].content[contract.CONFIG][contract.WORKER_INDEX] == 2
    strategy.aggregate_train(3, [vote(out[n]) for n in (1, 2, 9)])
    assert strategy.audit[-1].reassigned == [{"row": 2, "from": 3, "to": 9}]
    assert strategy.audit[-1].voters == [0, 1, 2]


def test_a_departed_node_gets_no_message_and_its_row_moves_when_a_node_joins():
    strategy = ElectionCoding(
        uncoded(3), trainable_keys=["w"], reassign_after=5, max_rounds_below_quorum=9
    )
    model = arrays()
    configure(strategy, 1, model, [1, 2, 3])
    out = configure(strategy, 2, model, [1, 2])  # node 3 left, no spare yet
    assert set(out) == {1, 2}
    out = configure(strategy, 3, model, [1, 2, 7])  # a replacement SuperNode appears
    assert set(out) == {1, 2, 7} and strategy.node_to_worker[7] == 2


def test_a_run_that_never_applied_a_vote_raises():
    from flwr.clientapp import ClientApp

    from fl_election.simulations.inprocess import InProcessGrid

    silent = ClientApp()

    @silent.train()
    def train(msg, context):
        return Message(Error(code=1, reason="down"), reply_to=msg)

    strategy = ElectionCoding(uncoded(3), trainable_keys=["w"], max_rounds_below_quorum=10)
    grid = InProcessGrid(silent, 3, {})
    with pytest.raises(QuorumError, match="no round's vote was ever applied"):
        strategy.start(grid=grid, initial_arrays=arrays(), num_rounds=2)


def test_with_the_defaults_a_silent_row_moves_before_the_run_stops():
    # deterministic(5, 1) is certified only with every row: a silent row stops the vote
    strategy = ElectionCoding(deterministic(5, 1), byzantine_budget=1, trainable_keys=["w"])
    assert strategy.reassign_after < strategy.max_rounds_below_quorum
    model = arrays()
    nodes = [10, 11, 12, 13, 14]
    for server_round in range(1, 6):
        connected = nodes + [99] if server_round >= 2 else nodes
        out = configure(strategy, server_round, model, connected)
        live = [n for n in out if n != 14]  # node 14 stays connected but never votes
        strategy.aggregate_train(server_round, [vote(out[n]) for n in live])
    moved = [a.reassigned for a in strategy.audit if a.reassigned]
    assert moved == [[{"row": strategy.node_to_worker[99], "from": 14, "to": 99}]]
    assert strategy.audit[-1].applied


def test_reassign_after_must_come_before_the_stop():
    with pytest.raises(ValueError, match="reassign_after"):
        ElectionCoding(uncoded(3), reassign_after=3, max_rounds_below_quorum=3)


def test_the_superlinks_node_unavailable_reply_is_not_a_rejection():
    from flwr.common.constant import SUPERLINK_NODE_ID

    strategy = ElectionCoding(uncoded(3), trainable_keys=["w"])
    out = configure(strategy, 1, arrays(), [1, 2, 3])
    unavailable = Message(Error(code=5, reason="node unavailable"), reply_to=out[3])
    unavailable.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    _, metrics = strategy.aggregate_train(1, [vote(out[1]), vote(out[2]), unavailable])
    assert metrics["rejected-replies"] == 0 and metrics["missing-rows"] == [2]
