"""Flower's own robust strategies in the harness, float attacks, the vote error referee."""

from __future__ import annotations

import json
from uuid import uuid4

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, Krum

from fl_election.aggregation import vote_error_rate
from fl_election.attacks import create_attack, forge_float_gradient
from fl_election.config import RunConfig
from fl_election.simulations import plot_results, sweep
from fl_election.simulations.inprocess import run_inprocess
from fl_election.strategies import (
    FLOWER_STRATEGIES,
    FlowerRobust,
    FullGradientMedian,
    create_flower_aggregator,
)


class FakeGrid:
    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)


def arrays(d: int = 6) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.zeros(d, dtype=np.float32))})


def round_trip(strategy, gradients: dict[int, np.ndarray], nodes=None, claims=None):
    """Send round 1 to the nodes, answer with the gradients, return the update.

    ``claims``: the ``num-examples`` each node reports (default 1).
    """
    claims = claims or {}
    start = arrays(len(next(iter(gradients.values()))))
    grid = FakeGrid(nodes if nodes is not None else list(gradients))
    messages = list(strategy.configure_train(1, start, ConfigRecord(), grid))
    for m in messages:
        m.metadata.__dict__["_message_id"] = str(uuid4())
    out = {m.metadata.dst_node_id: m for m in messages}
    replies = [
        Message(
            RecordDict(
                {
                    "vote": ArrayRecord({"gradient": Array(g.astype(np.float32))}),
                    "metrics": MetricRecord(
                        {"num-examples": claims.get(node, 1), "num-coordinates": g.size}
                    ),
                }
            ),
            reply_to=out[node],
        )
        for node, g in gradients.items()
    ]
    new, metrics = strategy.aggregate_train(1, replies)
    return new, metrics


def flower(name: str, n: int, b: int) -> FlowerRobust:
    return FlowerRobust(
        n, name, byzantine_budget=b, lr=1.0, momentum=0.0, weight_decay=0.0, trainable_keys=["w"]
    )


def test_krum_picks_an_honest_gradient_that_the_mean_would_not():
    honest = {10 + i: np.full(6, 1.0 + 0.01 * i) for i in range(5)}
    byzantine = {20: np.full(6, -50.0), 21: np.full(6, -51.0)}
    new, metrics = round_trip(flower("krum", 7, 2), {**honest, **byzantine})
    step = -new["w"].numpy()  # lr 1, no momentum: w = -direction
    assert any(np.allclose(step, g) for g in honest.values())
    new_avg, _ = round_trip(flower("fedavg", 7, 2), {**honest, **byzantine})
    assert np.all(-new_avg["w"].numpy() < 0)  # the mean follows the Byzantines
    assert metrics["applied"] == 1


def test_median_and_trimmed_mean_are_flowers_own():
    rng = np.random.default_rng(0)
    grads = {10 + i: rng.normal(size=6) for i in range(7)}
    stack = np.stack(list(grads.values())).astype(np.float32)
    new, _ = round_trip(flower("fedmedian", 7, 2), grads)
    np.testing.assert_allclose(-new["w"].numpy(), np.median(stack, axis=0), rtol=1e-6)
    new, _ = round_trip(flower("fedtrimmedavg", 7, 2), grads)
    trimmed = np.sort(stack, axis=0)[2:-2].mean(axis=0)
    np.testing.assert_allclose(-new["w"].numpy(), trimmed, rtol=1e-5)


def test_bulyan_declines_too_few_replies_and_the_model_stays():
    strategy = flower("bulyan", 7, 1)
    grads = {10 + i: np.full(6, 1.0) for i in range(7)}
    new, metrics = round_trip(strategy, grads)
    assert metrics["applied"] == 1 and new is not None
    # 7 nodes asked, 6 answer: quorum (2b + 1 = 3) holds, Bulyan needs 4b + 3 = 7
    strategy = flower("bulyan", 7, 1)
    nodes = list(grads)
    del grads[16]
    new, metrics = round_trip(strategy, grads, nodes)
    assert new is None and metrics["applied"] == 0
    assert strategy.audit[-1].decision == "aggregator-declined"


# ---------------------------------------------------------------- server-known weights
# n = 15 nodes, b = 3 (Bulyan's 4b + 3 = 15), B = 240: every row computes on 16 samples, so
# the other 14 honest rows hold 224 of them.
PROBE_N, PROBE_B, PROBE_BATCH = 15, 3, 240
ASSIGNED = PROBE_BATCH // PROBE_N
PROBE_NODE = 10 + PROBE_N - 1
MISSING = object()
#: ``id -> (num-examples the probe node reports, its gradient's constant value or None)``.
PROBES = {
    "claims-1e6": (10**6, None),
    "minus-225-with-3.4e38-gradient": (-225, 3.4e38),
    "minus-the-others-sum": (-(PROBE_N - 1) * ASSIGNED, None),
    "zero": (0, None),
    "nan": (float("nan"), None),
    "string": ("16", None),
    "missing": (MISSING, None),
}


def probe_round(name: str, reported, huge, monkeypatch):
    """Round 1 of Flower ``name``, the probe node reporting ``reported`` examples.

    Returns the strategy, the new model, the round metrics and the weights the Flower
    strategy was handed.
    """
    strategy = FlowerRobust(
        PROBE_N,
        name,
        byzantine_budget=PROBE_B,
        batch_size=PROBE_BATCH,
        lr=1.0,
        momentum=0.0,
        weight_decay=0.0,
        trainable_keys=["w"],
    )
    seen: list[list[object]] = []
    inner = strategy.aggregator.aggregate_train

    def spy(server_round, replies):
        replies = list(replies)
        seen.append(
            [next(iter(m.content.metric_records.values()))["num-examples"] for m in replies]
        )
        return inner(server_round, replies)

    monkeypatch.setattr(strategy.aggregator, "aggregate_train", spy)
    rng = np.random.default_rng(13)
    gradients = {10 + i: rng.normal(size=6).astype(np.float32) for i in range(PROBE_N)}
    if huge is not None:
        gradients[PROBE_NODE] = np.full(6, huge, dtype=np.float32)
    grid = FakeGrid(list(gradients))
    messages = list(strategy.configure_train(1, arrays(6), ConfigRecord(), grid))
    for m in messages:
        m.metadata.__dict__["_message_id"] = str(uuid4())
    out = {m.metadata.dst_node_id: m for m in messages}
    replies = []
    for node, g in gradients.items():
        metrics = MetricRecord({"num-examples": ASSIGNED, "num-coordinates": g.size})
        if node == PROBE_NODE:
            if reported is MISSING:
                del metrics["num-examples"]
            else:  # past MetricRecord's type check, as a lenient decoder could let it
                metrics._data["num-examples"] = reported
        content = RecordDict({"vote": ArrayRecord({"gradient": Array(g)}), "metrics": metrics})
        replies.append(Message(content, reply_to=out[node]))
    new, round_metrics = strategy.aggregate_train(1, replies)
    return strategy, new, round_metrics, seen


@pytest.mark.parametrize("probe", sorted(PROBES))
@pytest.mark.parametrize("name", sorted(FLOWER_STRATEGIES))
def test_one_nodes_num_examples_changes_nothing(name, probe, monkeypatch):
    reported, huge = PROBES[probe]
    honest, honest_new, honest_metrics, _ = probe_round(name, ASSIGNED, huge, monkeypatch)
    strategy, new, metrics, seen = probe_round(name, reported, huge, monkeypatch)
    # no exception, the round applied, the model finite
    assert metrics["applied"] == 1 and new is not None
    assert np.all(np.isfinite(new["w"].numpy()))
    # the Flower strategy was handed the server's weights, never the node's value
    assert seen == [[ASSIGNED] * PROBE_N]
    # ... so the direction is bit-identical to the one with an honest report
    assert honest.last_direction is not None and strategy.last_direction is not None
    assert strategy.last_direction.tobytes() == honest.last_direction.tobytes()
    assert new["w"].numpy().tobytes() == honest_new["w"].numpy().tobytes()
    # the misreport is audited, and only the probe's
    assert honest_metrics["num-examples-mismatch"] == 0
    assert metrics["num-examples-mismatch"] == 1


def test_a_non_finite_aggregate_is_declined_and_the_model_stays():
    # Every accepted gradient is finite, but 15 of float32's largest overflow Flower's
    # trimmed mean: the round is declined, not applied as inf.
    strategy = flower("fedtrimmedavg", 15, 3)
    new, metrics = round_trip(strategy, {10 + i: np.full(6, 3.4e38) for i in range(15)})
    assert new is None and metrics["applied"] == 0
    assert strategy.audit[-1].decision == "aggregator-declined"
    assert strategy.last_direction is None

    class Wide(FedAvg):  # finite in float64, out of float32's range
        def aggregate_train(self, server_round, replies):
            return ArrayRecord({"gradient": Array(np.full(6, 1e39))}), None

    strategy = FlowerRobust(3, Wide(), lr=1.0, momentum=0.0, weight_decay=0.0, trainable_keys=["w"])
    new, metrics = round_trip(strategy, {10 + i: np.ones(6) for i in range(3)})
    assert new is None and strategy.audit[-1].decision == "aggregator-declined"
    # the float baseline's median of two float32 maxima overflows the same way
    fgm = FullGradientMedian(4, lr=1.0, momentum=0.0, weight_decay=0.0, trainable_keys=["w"])
    new, metrics = round_trip(fgm, {10 + i: np.full(6, 3.4e38) for i in range(4)})
    assert new is None and fgm.audit[-1].decision == "aggregator-declined"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_gradient_is_rejected(bad):
    grads = {10 + i: np.ones(6) for i in range(7)}
    grads[16] = np.array([1.0, bad, 1.0, 1.0, 1.0, 1.0])
    new, metrics = round_trip(flower("fedavg", 7, 2), grads)
    assert metrics["rejected-replies"] == 1 and metrics["applied"] == 1
    np.testing.assert_array_equal(new["w"].numpy(), -np.ones(6, dtype=np.float32))


def test_unknown_or_impossible_flower_strategies_are_refused():
    with pytest.raises(ValueError, match="unknown Flower strategy 'krom'"):
        create_flower_aggregator("krom", 15, 3)
    with pytest.raises(ValueError, match="2b \\+ 3"):
        create_flower_aggregator("krum", 14, 6)
    with pytest.raises(ValueError, match="4b \\+ 3"):
        create_flower_aggregator("bulyan", 15, 4)
    assert isinstance(create_flower_aggregator("krum", 15, 6), Krum)
    assert set(FLOWER_STRATEGIES) == {
        "fedavg", "krum", "multikrum", "bulyan", "fedmedian", "fedtrimmedavg"
    }  # fmt: skip
    with pytest.raises(ValueError, match="n >= 4b \\+ 3 = 27"):
        RunConfig(aggregation="bulyan", byzantine_count=6)
    with pytest.raises(ValueError, match="n >= 2b \\+ 3 = 15"):
        RunConfig(aggregation="multikrum", num_workers=14, byzantine_count=6)
    with pytest.raises(ValueError, match="attack-epsilon"):
        RunConfig(attack_epsilon=0.0)
    with pytest.raises(ValueError, match="dirichlet-alpha"):
        RunConfig(dirichlet_alpha=-1.0)


def test_float_attacks_follow_their_papers():
    rng = np.random.default_rng(0)
    parts = rng.normal(size=(5, 8)).astype(np.float32)
    own = parts[0]
    mean, std = parts.mean(axis=0), parts.std(axis=0)
    ipm = forge_float_gradient(create_attack("ipm", epsilon=0.5), own, parts, rng)
    np.testing.assert_allclose(ipm, -0.5 * mean, rtol=1e-6)
    alie = forge_float_gradient(create_attack("alie", num_partitions=5, z=1.5), own, parts, rng)
    np.testing.assert_allclose(alie, mean - 1.5 * std, rtol=1e-5)
    np.testing.assert_array_equal(
        forge_float_gradient(create_attack("reverse"), own, None, rng), -own
    )
    omniscient = forge_float_gradient(create_attack("omniscient"), own, parts, rng)
    mu = np.sign(np.sign(parts).sum(axis=0))
    np.testing.assert_allclose(omniscient, -np.abs(mean) * mu, rtol=1e-6)
    with pytest.raises(ValueError, match="every partition's gradient"):
        forge_float_gradient(create_attack("ipm"), own, None, rng)
    with pytest.raises(ValueError, match="epsilon"):
        create_attack("ipm", epsilon=-1.0)


def test_vote_error_rate_counts_misses_of_the_majority():
    sign_sum = np.array([3, -1, 0, 2, -5])
    assert vote_error_rate(np.array([1, -1, 1, 1, -1]), sign_sum) == 0.0
    assert vote_error_rate(np.array([-1, -1, -1, 0, -1]), sign_sum) == 0.5  # the tie is left out
    assert vote_error_rate(np.array([0.2, 0.5, 0.0, -1e-3, 9.0]), sign_sum) == 0.75
    assert vote_error_rate(np.zeros(2), np.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        vote_error_rate(np.ones(3), np.ones(2))


def small(tmp_path, **changes) -> RunConfig:
    values = dict(
        num_server_rounds=3,
        eval_every=3,
        num_workers=7,
        byzantine_count=2,
        attack="alie",
        batch_size=70,
        output_dir=str(tmp_path),
        lr=0.05,
        checkpoint_every=0,
        track_vote_error=True,
    )
    values.update(changes)
    return RunConfig(**values)  # type: ignore[arg-type]


def test_a_flower_strategy_trains_in_the_harness_with_float_traffic(tmp_path):
    record = run_inprocess(small(tmp_path, aggregation="multikrum"))
    first = record["rounds"][0]
    d = first["uplink-bits-per-coordinate"]
    assert d == 32.0  # float32 up
    assert first["downlink-bytes"] >= first["uplink-bytes"]  # the model down, whole
    # one error metric for every scheme; the partition-majority rate only for coded ones
    assert all(0.0 <= r["weighted-sign-error"] <= 1.0 for r in record["rounds"])
    assert all(-1.0 <= r["cosine"] <= 1.0 for r in record["rounds"])
    assert not any("vote-error-rate" in r for r in record["rounds"])
    assert (
        record["code"]["max_load"] == 1
        and record["code"]["certificate"]["verdict"] == "not-certified"
    )


def test_the_referee_sees_an_honest_vote_elect_the_majority_and_an_attack_miss_it(tmp_path):
    honest = run_inprocess(
        small(
            tmp_path / "h",
            code="uncoded",
            byzantine_count=0,
            attack="none",
            lr=0.001,
            tie_rule="abstain",
        )
    )
    attacked = run_inprocess(
        small(tmp_path / "a", code="uncoded", byzantine_count=3, attack="omniscient", lr=0.001)
    )
    honest_error = max(r["vote-error-rate"] for r in honest["rounds"])
    attacked_error = min(r["vote-error-rate"] for r in attacked["rounds"])
    # 7 honest one-partition votes, ties abstaining, elect exactly the majority
    assert honest_error == 0.0
    assert attacked_error > 0.2


def test_a_grid_sweep_runs_scores_the_worst_attack_and_skips_impossible_points(tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_text(
        'title = "grid"\nconf = "digits_head_to_head.toml"\nseeds = [0]\n\n'
        "[overrides]\nnum-server-rounds = 2\neval-every = 1\nnum-workers = 7\n"
        "batch-size = 70\n\n"
        '[schemes.mv]\ncode = "uncoded"\n[schemes.bulyan]\naggregation = "bulyan"\nlr = 0.1\n\n'
        '[attacks.gauss]\nattack = "gaussian-noise"\nattack-std = 1.0\n\n'
        '[grid.all]\nschemes = ["mv", "bulyan"]\nbyzantine-count = [1, 2]\n'
        'attacks = ["omniscient", "gauss"]\n'
    )
    out = tmp_path / "outputs"
    assert sweep.main([str(spec), "--output-dir", str(out)]) == 0
    meta = json.loads((out / "grid" / "sweep.json").read_text())
    assert sorted(meta["skipped"]) == ["bulyan-b2-gauss", "bulyan-b2-omniscient"]
    assert meta["points"]["mv-b2-gauss"] == {
        "scheme": "mv", "byzantine-count": 2, "attack": "gauss"
    }  # fmt: skip
    run = json.loads((out / "grid" / "mv-b2-gauss-seed0.json").read_text())
    assert run["config"]["attack-std"] == 1.0 and run["config"]["attack"] == "gaussian-noise"
    figures = tmp_path / "figures"
    assert plot_results.main(["--outputs", str(out), "--figures", str(figures)]) == 0
    table = (figures / "grid.md").read_text()
    finals = {
        attack: json.loads((out / "grid" / f"mv-b1-{attack}-seed0.json").read_text())["final"][
            "test-accuracy"
        ]
        for attack in ("omniscient", "gauss")
    }
    worst = min(finals, key=finals.__getitem__)
    assert f"| mv | {finals[worst]:.3f} ({worst}) |" in table
    assert "n/a (aggregation 'bulyan' needs num-workers n >= 4b + 3 = 11" in table
    assert (figures / "grid.png").stat().st_size > 0
