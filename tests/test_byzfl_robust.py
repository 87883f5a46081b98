"""ByzFL's defences as a Flower strategy wrapper, and the vector oracle of the attacks."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import FedAvg
from test_flower_robust import round_trip

from fl_election import contract
from fl_election.strategies import (
    BYZFL_DEFENCES,
    ByzflAggregation,
    FlowerRobust,
    create_byzfl_aggregator,
    create_flower_aggregator,
    vector_aggregate,
)

byzfl = pytest.importorskip("byzfl")

N, B = 7, 2


def reference(name: str, b: int) -> tuple[list, object]:
    """ByzFL's own pipeline of each defence, built here from ByzFL's classes."""
    return {
        "nnm-trmean": ([byzfl.NNM(f=b)], byzfl.TrMean(f=b)),
        "nnm-median": ([byzfl.NNM(f=b)], byzfl.Median()),
        "arc-trmean": ([byzfl.ARC(f=b)], byzfl.TrMean(f=b)),
        "centeredclipping": ([], byzfl.CenteredClipping()),
        "geomedian": ([], byzfl.GeometricMedian()),
    }[name]


def run_reference(name: str, b: int, vectors: np.ndarray) -> np.ndarray:
    pre, agg = reference(name, b)
    x = vectors.astype(np.float32).copy()  # ARC clips in place
    for stage in pre:
        x = np.asarray(stage(x))
    return np.asarray(agg(x), dtype=np.float32)


def stack_with_outlier(seed: int = 0, m: int = N, d: int = 10) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 0.5, size=(m, d)).astype(np.float32)
    x[-1] = 1000.0  # far outside CenteredClipping's tau = 100 around 0
    x[-2] = -700.0
    return x


def reply(record: ArrayRecord, weight: float = 1.0, **metrics: float) -> Message:
    return Message(
        RecordDict(
            {"arrays": record, "metrics": MetricRecord({"num-examples": weight, **metrics})}
        ),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )


def gradient_replies(vectors: np.ndarray) -> list[Message]:
    return [reply(ArrayRecord({contract.GRADIENT: Array(v.copy())})) for v in vectors]


@pytest.mark.parametrize("name", sorted(BYZFL_DEFENCES))
def test_each_defence_is_byzfls_pipeline_not_the_mean(name):
    x = stack_with_outlier()
    arrays, metrics = create_byzfl_aggregator(name, N, B).aggregate_train(1, gradient_replies(x))
    assert arrays is not None and list(arrays.keys()) == [contract.GRADIENT]
    got = arrays[contract.GRADIENT].numpy()
    assert got.dtype == np.float32 and got.shape == (10,)
    np.testing.assert_allclose(got, run_reference(name, B, x), rtol=1e-6, atol=1e-6)
    fedavg, _ = FedAvg().aggregate_train(1, gradient_replies(x))
    assert fedavg is not None
    mean = fedavg[contract.GRADIENT].numpy()
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    assert np.max(np.abs(got - mean)) > 1.0  # not a delegation to FedAvg
    assert metrics is not None and "num-examples" not in metrics


def test_weights_weigh_only_the_metrics():
    x = stack_with_outlier(d=4)
    replies = [
        reply(ArrayRecord({"g": Array(v.copy())}), weight=w, loss=float(i))
        for i, (v, w) in enumerate(zip(x, [1, 1, 1, 1, 1, 1, 1000], strict=True))
    ]
    arrays, metrics = create_byzfl_aggregator("nnm-median", N, B).aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["g"].numpy(), run_reference("nnm-median", B, x), atol=1e-6)
    assert metrics["loss"] == pytest.approx(6 * 1000 / 1006 + 15 / 1006)


def test_multi_key_array_records_round_trip_keys_and_shapes():
    rng = np.random.default_rng(1)
    shapes = {"conv.weight": (2, 3, 2), "conv.bias": (2,), "fc": (4, 1), "scale": ()}
    records = [
        {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(N)
    ]
    replies = [reply(ArrayRecord({k: Array(np.asarray(v)) for k, v in r.items()})) for r in records]
    arrays, _ = create_byzfl_aggregator("nnm-trmean", N, B).aggregate_train(1, replies)
    assert arrays is not None
    assert list(arrays.keys()) == list(shapes)
    flat = np.stack([np.concatenate([r[k].reshape(-1) for k in shapes]) for r in records])
    expected = run_reference("nnm-trmean", B, flat)
    offset = 0
    for key, shape in shapes.items():
        got = arrays[key].numpy()
        assert got.shape == shape and got.dtype == np.float32
        size = int(np.prod(shape))
        np.testing.assert_allclose(got.reshape(-1), expected[offset : offset + size], atol=1e-6)
        offset += size


def test_inconsistent_replies_are_refused_as_flower_refuses_them():
    strategy = create_byzfl_aggregator("geomedian", 3, 1)
    same_keys_other_shape = [
        reply(ArrayRecord({"g": Array(np.zeros(3, dtype=np.float32))})),
        reply(ArrayRecord({"g": Array(np.zeros((3, 1), dtype=np.float32))})),
    ]
    with pytest.raises(InconsistentMessageReplies, match="shapes"):
        strategy.aggregate_train(1, same_keys_other_shape)
    other_keys = [
        reply(ArrayRecord({"g": Array(np.zeros(3, dtype=np.float32))})),
        reply(ArrayRecord({"h": Array(np.zeros(3, dtype=np.float32))})),
    ]
    with pytest.raises(InconsistentMessageReplies):
        strategy.aggregate_train(1, other_keys)


def test_a_reply_with_an_error_is_skipped():
    x = stack_with_outlier()
    replies = gradient_replies(x)
    failed = Message(Error(code=0, reason="node crashed"), reply_to=replies[0])
    arrays, _ = create_byzfl_aggregator("nnm-trmean", N + 1, B).aggregate_train(
        1, [*replies, failed]
    )
    assert arrays is not None
    np.testing.assert_allclose(
        arrays[contract.GRADIENT].numpy(), run_reference("nnm-trmean", B, x), atol=1e-6
    )
    assert create_byzfl_aggregator("geomedian", 3, 1).aggregate_train(1, [failed]) == (
        None,
        None,
    )


def test_a_round_byzfl_refuses_is_declined_and_leaves_the_state():
    strategy = create_byzfl_aggregator("nnm-trmean", N, B)
    x = stack_with_outlier()[:4]  # TrMean(f=2) needs more than 2f = 4: f is fitted to 1
    arrays, _ = strategy.aggregate_train(1, gradient_replies(x))
    assert arrays is not None
    fitted = byzfl.TrMean(f=1)(byzfl.NNM(f=1)(x.copy()))
    np.testing.assert_allclose(arrays[contract.GRADIENT].numpy(), fitted, atol=1e-6)
    huge = np.full_like(x, 3e38)  # finite replies whose aggregate is not: declined
    assert strategy.aggregate_train(1, gradient_replies(huge)) == (None, None)
    # A stage that fails after a stateful one ran: the state is rolled back.
    broken = ByzflAggregation(FedAvg(), byzfl.Median(), [byzfl.CenteredClipping()])
    assert broken.aggregate_train(1, gradient_replies(x)) == (None, None)  # (d,), not (m, d)
    assert broken.pre_aggregators[0].m is None


def test_centered_clipping_keeps_its_centre_and_the_oracle_does_not_move_it():
    strategy = create_byzfl_aggregator("centeredclipping", N, B)
    pre, agg = reference("centeredclipping", B)
    x1, x2 = stack_with_outlier(1), stack_with_outlier(2)
    oracle = vector_aggregate(strategy)
    for x in (x1, x2):
        arrays, _ = strategy.aggregate_train(1, gradient_replies(x))
        assert arrays is not None
        expected = np.asarray(agg(x.copy()), dtype=np.float32)  # ByzFL's stateful instance
        np.testing.assert_allclose(arrays[contract.GRADIENT].numpy(), expected, atol=1e-5)
        # The oracle sees the current centre but leaves it where it is.
        before = strategy.aggregator.m.copy()
        probe = oracle(x2)
        np.testing.assert_array_equal(strategy.aggregator.m, before)
        np.testing.assert_allclose(probe, _with_centre(before)(x2.copy()), atol=1e-5)


def _with_centre(m: np.ndarray) -> object:
    cc = byzfl.CenteredClipping()
    cc.m = m.copy()
    return cc


def test_unknown_or_impossible_defences_are_refused():
    with pytest.raises(ValueError, match="valid: arc-trmean, centeredclipping, geomedian"):
        create_byzfl_aggregator("nnm", N, B)
    with pytest.raises(ValueError, match="b < n / 2"):
        create_byzfl_aggregator("nnm-trmean", 4, 2)
    assert set(BYZFL_DEFENCES) == {
        "nnm-trmean",
        "nnm-median",
        "arc-trmean",
        "centeredclipping",
        "geomedian",
    }


def test_the_wrapper_delegates_to_the_wrapped_strategy():
    inner = FedAvg(fraction_evaluate=0.0, weighted_by_key="samples")
    strategy = ByzflAggregation(inner, byzfl.TrMean(f=1), [byzfl.NNM(f=1)])
    assert strategy.weighted_by_key == "samples"
    assert list(strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord(), None)) == []
    assert "NNM(f=1) -> TrMean(f=1)" in repr(strategy)
    strategy.summary()  # the pipeline, then FedAvg's own settings


def test_the_oracle_is_the_strategys_own_aggregation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    level = logging.getLogger("flwr").level
    median = vector_aggregate(create_flower_aggregator("fedmedian", 5, 1))(x)
    assert logging.getLogger("flwr").level == level  # silenced only during the call
    assert median.dtype == np.float32 and median.shape == (8,)
    np.testing.assert_allclose(median, np.median(x, axis=0), rtol=1e-6)
    x = stack_with_outlier(4)
    for name in ("nnm-trmean", "arc-trmean", "geomedian"):
        got = vector_aggregate(create_byzfl_aggregator(name, N, B))(x)
        np.testing.assert_allclose(got, run_reference(name, B, x), rtol=1e-6, atol=1e-6)
    bulyan = vector_aggregate(create_flower_aggregator("bulyan", 7, 1))
    with pytest.raises(ValueError, match="declined"):
        bulyan(x[:5])  # fewer than 4b + 3


def test_a_byzfl_defence_plugs_into_the_harness():
    n, b = 7, 2
    strategy = FlowerRobust(
        n,
        aggregator=create_byzfl_aggregator("nnm-trmean", n, b),
        byzantine_budget=b,
        lr=1.0,
        momentum=0.0,
        weight_decay=0.0,
        trainable_keys=["w"],
    )
    x = stack_with_outlier(5, m=n, d=6)
    gradients = {10 + i: g for i, g in enumerate(x)}
    new, metrics = round_trip(strategy, gradients)
    assert metrics["applied"] == 1
    step = -new["w"].numpy()  # lr 1, no momentum: w = -direction
    np.testing.assert_allclose(step, run_reference("nnm-trmean", b, x), atol=1e-5)
    assert np.all(np.abs(step - x.mean(axis=0)) > 1.0)
