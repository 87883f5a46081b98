"""Live under b faults: silent Byzantines, resync abuse, churn, non-finite steps."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict

from fl_election import contract
from fl_election.clients import coded_client_app
from fl_election.codes import deterministic, uncoded
from fl_election.config import RunConfig
from fl_election.simulations.inprocess import InProcessGrid, run_inprocess
from fl_election.strategies import ElectionCoding, FullGradientMedian, QuorumError, vote_keys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "breast-cancer"))
from bcapp.task import Net, load_data, loss_fn  # noqa: E402
from test_quorum import arrays, configure, vote  # noqa: E402

TRAIN, _ = load_data()


# ---------------------------------------------------------------- b silent Byzantines
@pytest.mark.parametrize("code", ["deterministic", "bernoulli"])
def test_b_silent_byzantines_never_stop_training(tmp_path, code):
    # The reproduction: 6 silent Byzantines of 15 stopped the run after 3 rounds.
    cfg = RunConfig(
        code=code,
        attack="silent",
        byzantine_count=6,
        num_server_rounds=5,
        eval_every=5,
        output_dir=str(tmp_path),
        checkpoint_every=0,
    )
    record = run_inprocess(cfg)
    audits = [r["audit"] for r in record["rounds"]]
    assert len(audits) == 5
    assert all(a["applied"] and a["decision"] == "quorum" for a in audits), audits
    assert all(len(a["voters"]) == 9 and len(a["rejected"]) == 6 for a in audits)
    assert record["code"]["certificate"]["fault_budget"] == 6
    # certified once for f = 6, never re-certified; the Bernoulli code is not, and says so
    certified = code == "deterministic"
    assert record["code"]["certificate"]["verdict"] == (
        "certified" if certified else "not-certified"
    )
    assert {r["certified-for-fault-budget"] for r in record["rounds"]} == {int(certified)}


def test_b_plus_one_faults_never_apply_a_round_and_stop_the_run():
    strategy = ElectionCoding(
        deterministic(7, 2, tie_rule="forced"), byzantine_budget=2, trainable_keys=["w"]
    )
    model = arrays()
    nodes = list(range(10, 17))
    for server_round in (1, 2):
        out = configure(strategy, server_round, model, nodes)
        silent = [Message(Error(1, "down"), reply_to=out[n]) for n in nodes[:2]]
        new, metrics = strategy.aggregate_train(
            server_round, [*silent, *(vote(out[n]) for n in nodes[3:])]
        )  # 2 silent + 1 missing = 3 faults > f = 2
        assert new is None and metrics["applied"] == 0
        assert strategy.audit[-1].decision == "over-fault-budget"
    out = configure(strategy, 3, model, nodes)
    with pytest.raises(QuorumError, match=r"3 rows faulty, fault budget allows 2"):
        strategy.aggregate_train(3, [vote(out[n]) for n in nodes[3:]])
    assert strategy.rounds_applied == 0


# ---------------------------------------------------------------- churn and b
def test_a_node_that_answers_keeps_its_row_and_one_faulty_for_reassign_after_loses_it():
    # Node 3 answers late in the reply list, or misses a single round: it keeps its row
    # although a spare (9) stands by. Only reassign_after = 2 faulty rounds in a row move it.
    strategy = ElectionCoding(uncoded(3), byzantine_budget=1, trainable_keys=["w"])
    model = arrays()
    nodes = [1, 2, 3, 9]
    pattern = {1: True, 2: False, 3: True, 4: False, 5: True, 6: False, 7: False}
    for server_round, answers in pattern.items():
        out = configure(strategy, server_round, model, nodes)
        replies = [vote(out[n]) for n in out if strategy.node_to_worker[n] != 2]
        if answers and 3 in out:
            replies.append(vote(out[3]))  # the slowest reply, still within the deadline
        strategy.aggregate_train(server_round, replies)
        if server_round <= 7:
            assert strategy.node_to_worker.get(3) == 2, server_round
    out = configure(strategy, 8, model, nodes)
    assert strategy.node_to_worker == {1: 0, 2: 1, 9: 2}
    assert strategy.audit[-1].round == 7
    assert all(a.applied for a in strategy.audit)  # one faulty row is within b = 1


# ---------------------------------------------------------------- non-finite steps
def test_a_step_that_would_make_the_model_non_finite_is_refused():
    strategy = FullGradientMedian(3, byzantine_budget=1, lr=1000.0, trainable_keys=["w"])
    model = arrays()
    out = configure(strategy, 1, model, [1, 2, 3])
    huge = np.full(16, 3.4e38, dtype=np.float32)  # finite in float32, inf after the step
    replies = [
        Message(
            RecordDict(
                {
                    contract.VOTE: ArrayRecord({"gradient": Array(huge)}),
                    contract.METRICS: MetricRecord({contract.METRIC_NUM_COORDINATES: 16}),
                }
            ),
            reply_to=out[n],
        )
        for n in (1, 2, 3)
    ]
    new, metrics = strategy.aggregate_train(1, replies)
    assert new is None and metrics["applied"] == 0
    assert strategy.audit[-1].decision == "non-finite"
    assert strategy.optimizer.buf is None  # the momentum is not touched either


# ---------------------------------------------------------------- resync abuse
N_NODES, N_ABUSERS, ROUNDS = 15, 6, 10


def run_with_abusers(max_resyncs: int, abusers: int):
    """Train n = 15 nodes; ``abusers`` of them ask for the full model every round.

    Half report another model's fingerprint with an otherwise valid vote, half answer
    ``resync``. Returns the strategy and each round's downlink bytes.
    """
    torch.manual_seed(0)
    net = Net()
    strategy = ElectionCoding(
        uncoded(N_NODES),
        byzantine_budget=N_ABUSERS,
        lr=0.01,
        batch_size=150,
        trainable_keys=vote_keys(net),
        max_resyncs=max_resyncs,
        resync_window=20,
    )
    grid = InProcessGrid(coded_client_app(Net(), loss_fn, TRAIN), N_NODES, {})
    honest_app = grid.client_app
    liars = set(range(1000, 1000 + abusers))

    def app(message, context):
        reply = honest_app(message, context)
        node = context.node_id
        if node not in liars or reply.has_error():
            return reply
        if node % 2:
            return Message(Error(contract.RESYNC_ERROR_CODE, "out of step"), reply_to=message)
        metrics = reply.content.metric_records[contract.METRICS]
        metrics[contract.METRIC_MODEL_FINGERPRINT] = (
            int(metrics[contract.METRIC_MODEL_FINGERPRINT]) ^ 1
        )
        return reply

    grid.client_app = app  # type: ignore[assignment]
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=ROUNDS
    )
    downlink = [int(result.train_metrics_clientapp[r]["downlink-bytes"]) for r in range(1, 11)]
    return strategy, downlink


def test_resync_abuse_is_audited_and_bounded():
    _, honest = run_with_abusers(max_resyncs=2, abusers=0)
    strategy, abused = run_with_abusers(max_resyncs=2, abusers=N_ABUSERS)
    _, unbounded = run_with_abusers(max_resyncs=10**6, abusers=N_ABUSERS)
    # A resync sends the model and the server's momentum (one float32 per voted coordinate).
    net = Net()
    d = sum(p.numel() for p in net.parameters() if p.requires_grad)
    full_model = sum(len(Array(v.numpy()).data) for v in net.state_dict().values())
    full_model += len(Array(np.zeros(d, dtype=np.float32)).data)
    # Each abuser is sent the model again at most max_resyncs times in the window; the
    # stated bound: honest bytes plus abusers * max_resyncs full models per window.
    bound = sum(honest[1:]) + N_ABUSERS * 2 * full_model
    print(
        f"downlink bytes, rounds 2-{ROUNDS}: honest {sum(honest[1:])}, 6 abusers limited "
        f"{sum(abused[1:])} ({sum(abused[1:]) / sum(honest[1:]):.1f}x), unlimited "
        f"{sum(unbounded[1:])} ({sum(unbounded[1:]) / sum(honest[1:]):.1f}x); bound {bound}"
    )
    assert sum(abused[1:]) <= bound
    assert sum(unbounded[1:]) > bound  # the limit is what keeps it under
    audits = {a.round: a for a in strategy.audit}
    causes = {(e["node"] % 2, e["cause"]) for a in strategy.audit for e in a.resynced}
    assert causes == {(0, "fingerprint-mismatch"), (1, "resync")}
    per_node = {
        n: sum(e["node"] == n for a in strategy.audit for e in a.resynced)
        for n in range(1000, 1006)
    }
    assert set(per_node.values()) == {2}, per_node
    limited = {r["node"] for r in audits[ROUNDS].rejected if r["code"] == "resync-limit"}
    assert limited == set(range(1000, 1006))
    assert all(a.applied for a in strategy.audit)  # six faulty rows are within b = 6
