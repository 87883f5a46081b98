"""The honest head-to-head's harness: one error metric, worker momentum, weights, oracles.

Each test pins one behaviour the head-to-head tables rest on and fails when it is switched
off: the metric is 0 for honest FedAvg (and not for an attacked step), float worker momentum
sends the moving average, a ``reported`` weight lets an inflating Byzantine steer FedAvg
while the server-assigned one does not, the attacker's oracle is the server's aggregator,
ByzFL's defences stay live under silent Byzantines, the bytes are the serialized messages,
and the tuner picks an interior lr.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from test_flower_robust import round_trip, small

from fl_election.aggregation import cosine_similarity, weighted_sign_error
from fl_election.attacks import MinMarginAttack, OptimalIpmAttack, min_margin_vote
from fl_election.clients.client_app import run_attack
from fl_election.clients.coded import _float_momentum
from fl_election.config import RunConfig
from fl_election.simulations import head_to_head
from fl_election.simulations.inprocess import run_inprocess
from fl_election.strategies import (
    FLOAT_AGGREGATORS,
    FlowerRobust,
    create_byzfl_aggregator,
    create_float_aggregator,
    vector_aggregate,
    vector_oracle,
)

# ------------------------------------------------------------------ one error metric


def test_the_weighted_sign_error_weighs_each_wrong_sign_by_the_true_gradients_mass():
    g = np.array([3.0, -1.0, 0.5, -0.5, 0.0])
    assert weighted_sign_error(2 * g, g) == 0.0  # any positive multiple of g: no error
    assert weighted_sign_error(np.sign(g), g) == 0.0  # the exact sign vote
    # the wrong sign where |g| = 1, an abstention where |g| = 0.5: 1.5 of 5 units of mass
    assert weighted_sign_error(np.array([1.0, 1.0, 0.0, -1.0, 7.0]), g) == pytest.approx(0.3)
    assert weighted_sign_error(-g, g) == 1.0
    assert weighted_sign_error(np.ones(2), np.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        weighted_sign_error(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        weighted_sign_error(np.array([np.nan, 1.0]), np.ones(2))


def test_the_cosine_is_one_for_the_honest_mean_and_minus_one_for_its_reverse():
    g = np.array([3.0, -1.0, 0.5])
    assert cosine_similarity(0.1 * g, g) == pytest.approx(1.0)
    assert cosine_similarity(-g, g) == pytest.approx(-1.0)
    assert cosine_similarity(np.zeros(3), g) == 0.0


def test_honest_fedavg_scores_zero_and_an_attacked_fedavg_does_not(tmp_path):
    honest = run_inprocess(
        small(tmp_path / "h", aggregation="fedavg", byzantine_count=0, attack="none")
    )
    for row in honest["rounds"]:
        assert row["weighted-sign-error"] < 1e-6
        assert row["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert "vote-error-rate" not in row  # the partition-majority rate: coded only
    attacked = run_inprocess(
        small(tmp_path / "a", aggregation="fedavg", attack="ipm", attack_epsilon=100.0)
    )
    assert min(r["weighted-sign-error"] for r in attacked["rounds"]) > 0.5
    assert max(r["cosine"] for r in attacked["rounds"]) < 0.0


def test_a_coded_run_keeps_the_partition_majority_rate_beside_the_shared_metric(tmp_path):
    record = run_inprocess(small(tmp_path, code="uncoded", byzantine_count=0, attack="none"))
    row = record["rounds"][0]
    assert {"weighted-sign-error", "cosine", "vote-error-rate"} <= set(row)


# ------------------------------------------------------------------ float worker momentum


def test_float_worker_momentum_sends_the_moving_average_kept_in_the_node_state():
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    g1, g2 = np.array([1.0, -2.0], np.float32), np.array([3.0, 0.0], np.float32)
    first = _float_momentum(context, "m", g1, 0.9)
    np.testing.assert_allclose(first, 0.1 * g1, rtol=1e-6)
    second = _float_momentum(context, "m", g2, 0.9)
    np.testing.assert_allclose(second, 0.9 * 0.1 * g1 + 0.1 * g2, rtol=1e-6)


def test_worker_momentum_changes_what_a_float_node_sends(tmp_path):
    plain = run_inprocess(
        small(tmp_path / "p", aggregation="fedavg", byzantine_count=0, attack="none")
    )
    smoothed = run_inprocess(
        small(
            tmp_path / "m",
            aggregation="fedavg",
            byzantine_count=0,
            attack="none",
            worker_momentum=0.9,
        )
    )
    # the step applied is the nodes' average momentum, no longer the step's honest mean
    assert plain["rounds"][1]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert smoothed["rounds"][1]["cosine"] < 0.999


# ------------------------------------------------------------------ num-examples weights


def test_reported_weights_let_an_inflating_byzantine_steer_fedavg_assigned_ones_do_not():
    gradients = {1: np.ones(4), 2: np.ones(4), 3: -np.ones(4)}

    def aggregate(weights: str, claim: int) -> np.ndarray:
        strategy = FlowerRobust(
            3, "fedavg", num_examples_weights=weights, lr=1.0, momentum=0.0,
            weight_decay=0.0, trainable_keys=["w"], byzantine_budget=1, batch_size=3,
        )  # fmt: skip
        replies_claim = {node: (claim if node == 3 else 1) for node in gradients}
        new, _ = round_trip(strategy, gradients, claims=replies_claim)
        assert new is not None
        return -new["w"].numpy()  # lr 1 from zero weights: the step is -direction

    assert np.all(aggregate("assigned", 100) > 0)  # 2 of 3 weigh the same: +1/3
    assert np.all(aggregate("reported", 100) < 0)  # the Byzantine's 100 outweighs 2
    np.testing.assert_allclose(aggregate("reported", 1), aggregate("assigned", 1))


def test_an_inflating_byzantine_reports_its_claim_in_a_real_run(tmp_path):
    record = run_inprocess(
        small(
            tmp_path,
            aggregation="fedavg",
            attack="num-examples-inflation",
            attack_inflation=50.0,
            num_examples_weights="reported",
        )
    )
    # the server audits the claim it was told to trust: two Byzantines per round
    assert all(r["num-examples-mismatch"] == 2 for r in record["rounds"])


@pytest.mark.parametrize(
    "values, key",
    [
        ({"num-examples-weights": "claimed"}, "num-examples-weights"),
        ({"attack-inflation": 0.5}, "attack-inflation"),
        ({"attack": "min-max", "aggregation": "election"}, "float aggregation"),
        ({"attack": "min-margin", "aggregation": "krum"}, "aggregation = 'election'"),
    ],
)
def test_the_head_to_head_knobs_are_checked_before_training(values, key):
    with pytest.raises(ValueError, match=key):
        RunConfig.from_run_config(values)


# ------------------------------------------------------------------ the attacker's oracle


@pytest.fixture
def server_identity():
    # Flower's Messages stamp the run's identity; the strategy's own aggregate_train needs
    # it to build its replies (the oracle does not).
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


@pytest.mark.parametrize("name", FLOAT_AGGREGATORS)
def test_the_attackers_oracle_is_the_servers_aggregator(name, server_identity):
    stack = np.random.default_rng(3).normal(size=(15, 40)).astype(np.float32)
    stack[:3] *= 8.0  # outliers, so the robust rules disagree with the mean
    reference = vector_aggregate(create_float_aggregator(name, 15, 3))(stack)
    np.testing.assert_allclose(vector_oracle(name, 15, 3)(stack), reference, atol=1e-5)


def test_the_optimal_attack_is_bound_to_the_runs_aggregator_and_min_margin_to_its_code():
    cfg = RunConfig(aggregation="fedmedian", attack="optimal-ipm", byzantine_count=3)
    attack = run_attack(cfg)
    assert isinstance(attack, OptimalIpmAttack) and attack.f == 3
    assert attack.aggregate is not None
    stack = np.random.default_rng(0).normal(size=(15, 8)).astype(np.float32)
    np.testing.assert_allclose(attack.aggregate(stack), np.median(stack, axis=0), rtol=1e-6)

    cfg = RunConfig(code="deterministic", attack="min-margin", byzantine_count=2)
    bound = run_attack(cfg)
    assert isinstance(bound, MinMarginAttack)
    code = cfg.allocation_code()
    assert bound.rows == tuple(code.partitions_of(i) for i in range(code.n))
    assert bound.byzantine_rows == tuple(sorted(cfg.byzantine_workers()))
    signs = np.random.default_rng(1).choice([-1, 1], size=(code.k, 16)).astype(np.int8)
    np.testing.assert_array_equal(
        bound.forge_from_partitions(signs),
        min_margin_vote(signs, bound.rows, bound.byzantine_rows),
    )


def test_min_margin_through_the_client_forges_from_every_partitions_sign(tmp_path):
    record = run_inprocess(
        small(
            tmp_path,
            code="uncoded",
            attack="min-margin",
            lr=0.001,
        )
    )
    # Uncoded, one partition per node: an honest vote elects the partition majority
    # exactly (test_flower_robust), so an error means the attack was mounted.
    assert max(r["vote-error-rate"] for r in record["rounds"]) > 0.0


# ------------------------------------------------------------------ ByzFL under silence


def test_a_byzfl_defence_stays_live_when_the_byzantines_are_silent():
    strategy = create_byzfl_aggregator("nnm-trmean", 15, 6)
    rng = np.random.default_rng(0)
    honest = 1.0 + 0.01 * rng.normal(size=(9, 5)).astype(np.float32)
    vector = strategy._robust_aggregate(honest)  # 9 replies, b = 6 silent: TrMean(f = 6) refuses
    assert vector is not None
    np.testing.assert_allclose(vector, 1.0, atol=0.05)


def test_silent_float_byzantines_sending_inf_are_rejected_and_training_goes_on(tmp_path):
    record = run_inprocess(small(tmp_path, aggregation="nnm-trmean", attack="inf"))
    assert all(r["rejected-replies"] == 2 for r in record["rounds"])
    assert all(r["audit"]["applied"] for r in record["rounds"])


# ------------------------------------------------------------------ wire bytes


def test_the_bytes_are_the_serialized_messages_both_ways(tmp_path):
    record = run_inprocess(small(tmp_path, aggregation="fedavg", byzantine_count=0, attack="none"))
    for row in record["rounds"]:
        # the protobuf messages carry the arrays and more (config, metrics, framing)
        assert row["wire-down-bytes"] > row["downlink-bytes"]
        assert row["wire-up-bytes"] > row["uplink-bytes"]


# ------------------------------------------------------------------ the tuner


def _fake_tuning_results(folder: Path, spec: dict, accuracy_of_lr) -> None:
    """Write the JSON of every tuning run the spec can ask for (nothing trains)."""
    profile = spec["profiles"]["ci"]
    for point in head_to_head.points(spec):
        for lr in spec["schemes"][point.scheme]["lr"]:
            for attack in head_to_head.attacks_of(spec, profile, point, tune=True):
                name = f"{point.name}-{attack}-lr{lr:g}"
                record = {"final": {"test-accuracy": accuracy_of_lr(lr)}}
                (folder / f"{name}.json").write_text(json.dumps(record))


def _one_scheme_spec(tmp_path: Path) -> dict:
    spec = head_to_head.load_spec()
    spec["schemes"] = {"mv": {"code": "uncoded", "lr": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]}}
    spec["byzantine-counts"] = [1]
    return spec


def test_the_tuner_climbs_the_ladder_until_the_best_lr_is_interior(tmp_path):
    spec = _one_scheme_spec(tmp_path)
    (tmp_path / "tune").mkdir()
    # accuracy peaks at lr 0.6: the tuner starts at 0.3-0.5 and must climb to 0.7
    _fake_tuning_results(tmp_path / "tune", spec, lambda lr: 1.0 - abs(lr - 0.6))
    chosen = head_to_head.tune(spec, spec["profiles"]["ci"], tmp_path, jobs=1)
    point = chosen["mv-coded-b1"]
    assert point["lr"] == 0.6 and not point["edge"]
    assert sorted(point["tried"]) == ["0.3", "0.4", "0.5", "0.6", "0.7"]


def test_the_tuner_marks_a_best_lr_at_the_ladders_end(tmp_path):
    spec = _one_scheme_spec(tmp_path)
    (tmp_path / "tune").mkdir()
    _fake_tuning_results(tmp_path / "tune", spec, lambda lr: lr)
    chosen = head_to_head.tune(spec, spec["profiles"]["ci"], tmp_path, jobs=1)
    assert chosen["mv-coded-b0"]["lr"] == 0.7 and chosen["mv-coded-b0"]["edge"]


# ------------------------------------------------------------------ local steps (FedAvg's E)


def test_local_steps_send_the_pseudo_gradient_of_several_sgd_steps(tmp_path):
    def run(steps: int) -> dict:
        return run_inprocess(
            small(
                tmp_path / str(steps),
                aggregation="fedavg",
                byzantine_count=0,
                attack="none",
                local_steps=steps,
            )
        )

    # one step sends the step's honest mean gradient; three send (w_0 - w_3) / lr, which
    # leaves its direction
    assert run(1)["rounds"][0]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert run(3)["rounds"][0]["cosine"] < 0.999


@pytest.mark.parametrize(
    "values, key",
    [
        ({"local-steps": 0}, "local-steps"),
        ({"local-steps": 5}, "float aggregation"),
        ({"local-steps": 5, "aggregation": "fedavg", "attack": "ipm"}, "local-steps = 1"),
    ],
)
def test_local_steps_are_checked_before_training(values, key):
    with pytest.raises(ValueError, match=key):
        RunConfig.from_run_config(values)


def test_the_head_to_head_runs_alie_at_baruchs_z_for_each_b():
    spec = head_to_head.load_spec()
    for b, z in ((1, 0.08), (3, 0.43), (6, 1.11)):
        point = head_to_head.Point("krum", "equal-batch", b)
        values = head_to_head.overrides(spec, point, "alie", 0.1, 10, "5")
        assert values["attack-z"] == pytest.approx(z, abs=0.01)
        assert values["byzantine-count"] == b and values["lr"] == 0.1
