from __future__ import annotations

import dataclasses
import math

import pytest

from fl_election.cost import (
    UPLINK_SCHEMES,
    RoundCost,
    compression_ratio,
    effective_redundancy,
    round_cost,
    uplink_bytes,
)

# Row sums of the SPEC's perfectly 1-tolerant 5x5 code ({1}, {2,3,4}, all, all, all).
SPEC_LOADS = [1, 3, 5, 5, 5]
RESNET18_PARAMS = 11_173_962


@pytest.mark.parametrize(
    ("d", "sign", "abstain", "float32"),
    [(1, 1, 2, 4), (8, 1, 2, 32), (9, 2, 4, 36), (16, 2, 4, 64), (1000, 125, 250, 4000)],
)
def test_uplink_bytes_by_hand(d: int, sign: int, abstain: int, float32: int) -> None:
    assert uplink_bytes(d, scheme="sign") == sign
    assert uplink_bytes(d, scheme="sign+abstain") == abstain
    assert uplink_bytes(d, scheme="float32") == float32


def test_uplink_bytes_resnet18() -> None:
    assert uplink_bytes(RESNET18_PARAMS, scheme="sign") == math.ceil(RESNET18_PARAMS / 8)
    assert uplink_bytes(RESNET18_PARAMS, scheme="float32") == 4 * RESNET18_PARAMS


@pytest.mark.parametrize(
    ("d", "scheme", "message"),
    [
        (0, "sign", "num_params must be >= 1"),
        (-5, "sign", "num_params must be >= 1"),
        (10.0, "sign", "num_params must be an integer"),
        (True, "sign", "num_params must be an integer"),
        (10, "int8", "valid schemes: sign, sign\\+abstain, float32"),
    ],
)
def test_uplink_bytes_rejects_bad_input(d: object, scheme: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        uplink_bytes(d, scheme=scheme)  # type: ignore[arg-type]


def test_compression_ratio() -> None:
    assert compression_ratio(1024) == 32.0
    assert compression_ratio(1024, "sign+abstain") == 16.0
    assert compression_ratio(1024, "float32") == 1.0
    # Padding the last byte costs a little when d is not a multiple of 8.
    assert compression_ratio(9) == pytest.approx(36 / 2)
    assert compression_ratio(RESNET18_PARAMS) == pytest.approx(32.0, rel=1e-6)
    assert set(UPLINK_SCHEMES) == {"sign", "sign+abstain", "float32"}


def test_effective_redundancy() -> None:
    # The paper's r_eff = 1.25 from r = 2.5 at half the minibatch.
    assert effective_redundancy(2.5, 0.5) == pytest.approx(1.25)
    assert effective_redundancy(3.0, 0.5) == pytest.approx(1.5)
    assert effective_redundancy(3.8, 1.0) == pytest.approx(3.8)


@pytest.mark.parametrize(
    ("r", "rho"), [(0.0, 0.5), (-1.0, 0.5), (2.0, 0.0), (2.0, math.inf), (math.nan, 1.0)]
)
def test_effective_redundancy_rejects_bad_input(r: float, rho: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        effective_redundancy(r, rho)


def test_round_cost_on_the_spec_code() -> None:
    d = 1_000_000
    cost = round_cost(
        SPEC_LOADS,
        grad_seconds=0.2,
        num_params=d,
        uplink_bytes_per_second=1e6,
        latency_seconds=0.05,
    )
    assert isinstance(cost, RoundCost)
    # The slowest workers hold all 5 partitions.
    assert cost.compute_seconds == pytest.approx(5 * 0.2)
    assert cost.max_load == 5
    assert cost.mean_load == pytest.approx(19 / 5)  # r = 3.8
    assert cost.load_imbalance == pytest.approx(5 / 3.8)
    # 125000 bytes per worker over a 1 MB/s link, in parallel.
    assert cost.uplink_bytes_per_worker == 125_000
    assert cost.uplink_bytes_total == 5 * 125_000
    assert cost.communication_seconds == pytest.approx(0.05 + 0.125)
    assert cost.total_seconds == pytest.approx(1.0 + 0.175)


def test_round_cost_sign_uplink_is_32x_smaller_than_float32() -> None:
    kwargs = {"grad_seconds": 0.1, "num_params": 8 * 10_000, "uplink_bytes_per_second": 1e5}
    sign = round_cost(SPEC_LOADS, scheme="sign", **kwargs)  # type: ignore[arg-type]
    fgm = round_cost([1] * 5, scheme="float32", **kwargs)  # type: ignore[arg-type]
    assert fgm.uplink_bytes_total == 32 * sign.uplink_bytes_total
    assert fgm.communication_seconds == pytest.approx(32 * sign.communication_seconds)
    # ... but the coded round computes 5 partition gradients, the uncoded one 1.
    assert sign.compute_seconds == pytest.approx(5 * fgm.compute_seconds)


def test_round_cost_shared_uplink_sends_everything_through_one_link() -> None:
    parallel = round_cost([2, 2, 2], grad_seconds=1.0, num_params=800, uplink_bytes_per_second=10)
    shared = round_cost(
        [2, 2, 2], grad_seconds=1.0, num_params=800, uplink_bytes_per_second=10, shared_uplink=True
    )
    assert parallel.communication_seconds == pytest.approx(100 / 10)
    assert shared.communication_seconds == pytest.approx(300 / 10)
    assert parallel.load_imbalance == pytest.approx(1.0)


def test_round_cost_uncoded_is_balanced() -> None:
    cost = round_cost([1] * 9, grad_seconds=0.3, num_params=64, uplink_bytes_per_second=8.0)
    assert cost.compute_seconds == pytest.approx(0.3)
    assert cost.load_imbalance == 1.0
    assert cost.communication_seconds == pytest.approx(1.0)


def test_round_cost_is_frozen() -> None:
    cost = round_cost([1], grad_seconds=1.0, num_params=8, uplink_bytes_per_second=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.total_seconds = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("loads", "kwargs", "message"),
    [
        ([], {}, "at least one worker"),
        ([0, 0], {}, "all 0"),
        ([1, -1], {}, "integers >= 0"),
        ([1, 2.5], {}, "integers >= 0"),
        ([1], {"grad_seconds": -1.0}, "grad_seconds"),
        ([1], {"uplink_bytes_per_second": 0.0}, "uplink_bytes_per_second"),
        ([1], {"latency_seconds": -0.1}, "latency_seconds"),
        ([1], {"latency_seconds": math.nan}, "latency_seconds"),
        ([1], {"scheme": "fp16"}, "valid schemes"),
    ],
)
def test_round_cost_rejects_bad_input(
    loads: list[object], kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "grad_seconds": 1.0,
        "num_params": 8,
        "uplink_bytes_per_second": 1.0,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        round_cost(loads, **arguments)  # type: ignore[arg-type]
