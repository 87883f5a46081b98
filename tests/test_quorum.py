"""The quorum rule (pure) and the strategy failing closed below it."""

from __future__ import annotations

import itertools
from uuid import uuid4

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fl_election import contract
from fl_election.codes import deterministic, uncoded
from fl_election.quorum import FaultBudgetRule
from fl_election.strategies import ElectionCoding, QuorumError
from fl_election.voting import pack_signs


def test_b_silent_rows_are_within_the_fault_budget_and_b_plus_one_are_not():
    code = deterministic(15, 6, tie_rule="forced")
    rule = FaultBudgetRule(code, 6)
    assert rule.fault_budget == 6 and rule.certified == "certified"
    everyone = range(15)
    for silent in itertools.combinations(range(15), 6):  # every set of 6 silent rows
        decision = rule.decide(everyone, (r for r in everyone if r not in silent))
        assert decision.applied and decision.faults == 6, silent
    for silent in [(0, 1, 2, 3, 4, 5, 6), (8, 9, 10, 11, 12, 13, 14)]:
        decision = rule.decide(everyone, (r for r in everyone if r not in silent))
        assert not decision.applied and decision.reason == "over-fault-budget"
        assert (decision.votes, decision.faults, decision.allowed) == (8, 7, 6)


def test_a_crash_budget_widens_the_rule_and_the_certificate_it_needs():
    rule = FaultBudgetRule(deterministic(7, 2, tie_rule="forced"), 1, crash_budget=1)
    assert rule.fault_budget == 2 and rule.certificate.b == 2 and rule.certified == "certified"
    assert rule.decide(range(7), range(5)).applied
    assert not rule.decide(range(7), range(4)).applied
    # the conservative variant counts every visible fault on top of b voting Byzantines
    strict = FaultBudgetRule(
        deterministic(7, 2, tie_rule="forced"), 1, crash_budget=1, fault_rule="conservative"
    )
    assert strict.allowed_faults == 1
    assert strict.decide(range(7), range(6)).applied
    assert not strict.decide(range(7), range(5)).applied
    # a code not certified for f keeps the count rule and says so
    loose = FaultBudgetRule(uncoded(15), 6)
    assert loose.certified == "not-certified" and loose.decide(range(15), range(9)).applied
    with pytest.raises(ValueError, match="fault budget"):
        FaultBudgetRule(uncoded(7), 2, crash_budget=2)
    with pytest.raises(ValueError, match="fault_rule"):
        FaultBudgetRule(uncoded(7), 1, fault_rule="lenient")


@pytest.mark.parametrize("n, f", [(5, 1), (7, 2), (9, 3)])
def test_abstaining_rows_never_flip_a_vote_the_certificate_covers(n, f):
    # The safety argument of fl_election.quorum, checked by brute force: for a code
    # certified f-tolerant (ties forced, counted wrong), every majority pattern, every set
    # of at most f faulty rows and every assignment of +1, -1 or abstain (0) to them
    # leaves the global vote on the majority sign.
    code = deterministic(n, f, tie_rule="forced")
    assert FaultBudgetRule(code, f).certified == "certified"
    g = code.matrix.astype(int)
    k = code.k
    for positives in itertools.combinations(range(k), k // 2 + 1):
        m = -np.ones(k, dtype=int)
        m[list(positives)] = 1
        honest = np.sign(g @ m)
        honest[honest == 0] = -1  # a forced tie, at its worst
        for size in range(f + 1):
            for faulty in itertools.combinations(range(n), size):
                rest = np.delete(honest, list(faulty)).sum()
                for votes in itertools.product((-1, 0, 1), repeat=size):
                    assert rest + sum(votes) >= 1, (positives, faulty, votes)


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
    # the fingerprint of the model the node was sent: it holds the round's model
    metrics = {
        contract.METRIC_NUM_COORDINATES: 16,
        contract.METRIC_MODEL_FINGERPRINT: to.content[contract.CONFIG][contract.MODEL_FINGERPRINT],
    }
    content = RecordDict(
        {
            contract.VOTE: ArrayRecord({"signs": Array(signs)}),
            contract.METRICS: MetricRecord(metrics),
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
        assert audit.decision == "over-fault-budget" and not audit.applied
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
    # a silent row is one fault: every round is applied, and the row still moves to a
    # spare after reassign_after rounds (a node that never answers is faulty, not slow)
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
    assert all(a.applied for a in strategy.audit)


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
