from __future__ import annotations

import dataclasses
import itertools
import sys

import numpy as np
import pytest

from fl_election.attacks import (
    ATTACKS,
    PERTURBATION_DIRECTIONS,
    InfAttack,
    IpmAttack,
    MimicAttack,
    MinMarginAttack,
    MinMaxAttack,
    MinSumAttack,
    NumExamplesInflationAttack,
    OmniscientAttack,
    OptimalAlieAttack,
    OptimalIpmAttack,
    SignAttack,
    SignFlippingAttack,
    create_attack,
    create_attack_from_config,
    forge_float_gradient,
    min_margin_vote,
)

byzfl = pytest.importorskip("byzfl")

FLOAT_ONLY = {
    "min-max": MinMaxAttack,
    "min-sum": MinSumAttack,
    "optimal-alie": OptimalAlieAttack,
    "optimal-ipm": OptimalIpmAttack,
    "mimic": MimicAttack,
    "inf": InfAttack,
    "sign-flipping": SignFlippingAttack,
    "num-examples-inflation": NumExamplesInflationAttack,
}

# A 5x3 stack on one line: row i is c_i * v, so the AGR-agnostic attacks have closed forms.
LINE_V = np.array([1.0, 2.0, 2.0])
LINE_C = np.array([0.0, 0.0, 0.0, 1.0, 5.0])
LINE = (LINE_C[:, None] * LINE_V).astype(np.float32)

# A generic 5x3 stack.
STACK = np.array(
    [
        [0.5, -1.0, 2.0],
        [1.5, 0.0, 1.0],
        [-0.5, -2.0, 3.0],
        [1.0, -0.5, 0.5],
        [2.0, -1.5, 1.5],
    ],
    dtype=np.float32,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def send(attack: SignAttack, stack: np.ndarray, own: int = 0) -> np.ndarray:
    """What a Byzantine holding row ``own`` sends, through the checked entry point."""
    return forge_float_gradient(attack, stack[own], stack, rng())


def median(vectors: np.ndarray) -> np.ndarray:
    return np.median(vectors, axis=0)


def assert_not_honest(sent: np.ndarray, stack: np.ndarray) -> None:
    """The attack is on: it sends neither the mean nor any honest row."""
    assert not np.allclose(sent, stack.mean(axis=0), atol=1e-3)
    for row in stack:
        assert not np.allclose(sent, row, atol=1e-3)


# ----------------------------------------------------------------------------- registry, flags


def test_new_attacks_are_registered_by_name() -> None:
    for name, cls in {**FLOAT_ONLY, "min-margin": MinMarginAttack}.items():
        assert ATTACKS[name] is cls
        assert cls.name == name
        assert isinstance(create_attack(name), cls)


@pytest.mark.parametrize("name", sorted(FLOAT_ONLY))
def test_float_only_flags_and_sign_form_raises(name: str) -> None:
    cls = ATTACKS[name]
    assert cls.float_only is True
    assert cls.needs_sign_sum is True
    assert cls.needs_partition_signs is False
    assert cls.inflates_num_examples is (name == "num-examples-inflation")
    attack = create_attack(name)
    vote = np.array([1, -1, 0], dtype=np.int8)
    with pytest.raises(ValueError, match=f"{name} is a float-only attack"):
        attack.forge(vote, np.array([1, -1, 0]), rng())
    with pytest.raises(ValueError, match=f"{name} is a float-only attack"):
        attack.forge(vote, None, rng())


def test_existing_attacks_are_not_float_only() -> None:
    for name in ("none", "reverse", "omniscient", "ipm", "alie", "label-flip", "silent"):
        cls = ATTACKS[name]
        assert not (cls.float_only or cls.inflates_num_examples or cls.needs_partition_signs)


def test_min_margin_flags() -> None:
    assert MinMarginAttack.needs_partition_signs is True
    assert MinMarginAttack.needs_sign_sum is True
    assert MinMarginAttack.float_only is False


def test_config_binds_f_from_the_byzantine_count() -> None:
    attack = create_attack_from_config("optimal-ipm", {"byzantine-count": 3}, num_partitions=15)
    assert isinstance(attack, OptimalIpmAttack)
    assert attack.f == 3
    alie = create_attack_from_config("optimal_alie", {"byzantine-count": 2}, num_partitions=15)
    assert isinstance(alie, OptimalAlieAttack)
    assert alie.f == 2
    for config in ({}, {"byzantine-count": 0}):  # absent, or no Byzantine: the default
        default = create_attack_from_config("optimal-ipm", config, num_partitions=15)
        assert isinstance(default, OptimalIpmAttack)
        assert default.f == 1


def test_config_reads_inflation_keys() -> None:
    attack = create_attack_from_config(
        "num-examples-inflation",
        {"attack-epsilon": 0.5, "attack-inflation": 10.0},
        num_partitions=15,
    )
    assert attack == NumExamplesInflationAttack(epsilon=0.5, factor=10.0)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("min-max", {"direction": "up"}, "min-max: direction must be one of std, unit, sign"),
        ("min-sum", {"direction": 1}, "min-sum: direction must be one of"),
        ("optimal-alie", {"f": 0}, "optimal-alie: f .* integer >= 1"),
        ("optimal-ipm", {"f": 1.5}, "optimal-ipm: f .* integer >= 1"),
        ("optimal-ipm", {"evals": 0}, "optimal-ipm: evals must be an integer >= 1"),
        ("optimal-ipm", {"aggregate": 3}, "optimal-ipm: aggregate must be a callable"),
        ("num-examples-inflation", {"epsilon": 0.0}, "epsilon must be a finite number > 0"),
        ("num-examples-inflation", {"factor": 0.5}, "factor must be a finite number >= 1"),
        ("num-examples-inflation", {"factor": float("inf")}, "factor must be a finite"),
        ("min-margin", {"byzantine_rows": (0,)}, "byzantine_rows must be distinct row"),
        ("min-margin", {"rows": ((0,), (-1,))}, "rows must hold partition indices"),
    ],
)
def test_bad_parameters_are_refused(name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_attack(name, **params)


# ----------------------------------------------------------------------------- min-max, min-sum


def test_min_max_closed_form_on_a_line() -> None:
    # m = t v; max_i |t - c_i| <= max |c_i - c_j| = 5 and t <= mean 1.2 give t = 0.
    for direction in ("std", "unit"):
        sent = send(MinMaxAttack(direction=direction), LINE)
        np.testing.assert_allclose(sent, 0.0 * LINE_V, atol=1e-4)
        assert not np.allclose(sent, LINE.mean(axis=0), atol=1e-2)


def test_min_sum_closed_form_on_a_line() -> None:
    # sum_i (t - c_i)^2 = 5 (t - 1.2)^2 + 18.8 <= max_i sum_j (c_i - c_j)^2 = 91 gives
    # t = 1.2 - 3.8 = -2.6: outside the honest gradients' range.
    for direction in ("std", "unit"):
        sent = send(MinSumAttack(direction=direction), LINE)
        np.testing.assert_allclose(sent, -2.6 * LINE_V, atol=1e-4)
        assert_not_honest(sent, LINE)


def max_distance(m: np.ndarray, stack: np.ndarray) -> float:
    return float(max(np.linalg.norm(m - g) for g in stack))


def min_max_bound(stack: np.ndarray) -> float:
    return float(max(np.linalg.norm(a - b) for a, b in itertools.product(stack, stack)))


def sum_sq(m: np.ndarray, stack: np.ndarray) -> float:
    return float(sum(np.linalg.norm(m - g) ** 2 for g in stack))


def min_sum_bound(stack: np.ndarray) -> float:
    return float(max(sum(np.linalg.norm(a - b) ** 2 for b in stack) for a in stack))


def expected_direction(stack: np.ndarray, direction: str) -> np.ndarray:
    mean = stack.mean(axis=0)
    if direction == "std":
        return -stack.std(axis=0, ddof=1)
    if direction == "unit":
        return -mean / np.linalg.norm(mean)
    return -np.sign(mean)


@pytest.mark.parametrize("direction", PERTURBATION_DIRECTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_max_gamma_sits_on_the_boundary(direction: str, seed: int) -> None:
    stack = rng(seed).normal(size=(5, 3)).astype(np.float64)
    attack = MinMaxAttack(direction=direction)
    p = expected_direction(stack, direction)
    np.testing.assert_allclose(attack.perturbation(stack), p)
    gamma = attack.gamma(stack)
    mean = stack.mean(axis=0)
    assert 0 < gamma < 19
    assert max_distance(mean + gamma * p, stack) <= min_max_bound(stack) + 1e-9
    assert max_distance(mean + (gamma + 1e-4) * p, stack) > min_max_bound(stack)
    sent = send(attack, stack.astype(np.float32))
    np.testing.assert_allclose(sent, mean + gamma * p, rtol=1e-5, atol=1e-6)
    assert_not_honest(sent, stack)


@pytest.mark.parametrize("direction", PERTURBATION_DIRECTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_sum_gamma_sits_on_the_boundary(direction: str, seed: int) -> None:
    stack = rng(seed).normal(size=(5, 3)).astype(np.float64)
    attack = MinSumAttack(direction=direction)
    p = expected_direction(stack, direction)
    gamma = attack.gamma(stack)
    mean = stack.mean(axis=0)
    assert 0 < gamma < 19
    assert sum_sq(mean + gamma * p, stack) <= min_sum_bound(stack) + 1e-9
    assert sum_sq(mean + (gamma + 1e-4) * p, stack) > min_sum_bound(stack)
    sent = send(attack, stack.astype(np.float32))
    np.testing.assert_allclose(sent, mean + gamma * p, rtol=1e-5, atol=1e-6)
    assert_not_honest(sent, stack)


def test_min_max_and_min_sum_differ() -> None:
    assert not np.allclose(send(MinMaxAttack(), STACK), send(MinSumAttack(), STACK), atol=1e-3)


@pytest.mark.parametrize("cls", [MinMaxAttack, MinSumAttack])
@pytest.mark.parametrize("direction", PERTURBATION_DIRECTIONS)
def test_agr_agnostic_degenerate_stacks_send_the_mean(cls: type, direction: str) -> None:
    one = np.array([[1.0, -2.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(send(cls(direction=direction), one), one[0])
    zero_mean = np.array([[1.0, -1.0], [-1.0, 1.0]], dtype=np.float32)
    sent = send(cls(direction=direction), zero_mean)
    assert np.all(np.isfinite(sent))
    if direction != "std":  # no direction to push along
        np.testing.assert_array_equal(sent, [0.0, 0.0])


def test_agr_agnostic_attacks_are_deterministic() -> None:
    a = forge_float_gradient(MinMaxAttack(), STACK[0], STACK, rng(1))
    b = forge_float_gradient(MinMaxAttack(), STACK[0], STACK, rng(2))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- ByzFL attacks


@pytest.mark.parametrize(
    ("cls", "byzfl_cls"),
    [
        (OptimalAlieAttack, "Optimal_ALittleIsEnough"),
        (OptimalIpmAttack, "Optimal_InnerProductManipulation"),
    ],
)
def test_optimal_attacks_match_byzfl_and_move_the_aggregate(cls: type, byzfl_cls: str) -> None:
    attack = dataclasses.replace(cls(f=2, evals=20), aggregate=median)
    sent = send(attack, STACK)
    assert sent.dtype == np.float32
    assert sent.shape == (3,)
    reference = getattr(byzfl, byzfl_cls)(agg=median, pre_agg_list=[], f=2, evals=20)(STACK)
    np.testing.assert_array_equal(sent, np.asarray(reference, dtype=np.float32))
    honest_mean = STACK.mean(axis=0)
    attacked = median(np.vstack([STACK, sent, sent]))
    assert np.linalg.norm(attacked - honest_mean) > np.linalg.norm(median(STACK) - honest_mean)
    assert_not_honest(sent, STACK)


@pytest.mark.parametrize("cls", [OptimalAlieAttack, OptimalIpmAttack])
def test_optimal_attacks_need_a_bound_aggregator(cls: type) -> None:
    with pytest.raises(ValueError, match=r"dataclasses.replace\(attack, aggregate=...\)"):
        send(cls(), STACK)


def test_optimal_attack_aggregate_is_not_compared_nor_shown() -> None:
    bound = dataclasses.replace(OptimalIpmAttack(f=2), aggregate=median)
    assert bound == OptimalIpmAttack(f=2)
    assert "aggregate" not in repr(bound)


def test_optimal_attack_rejects_an_aggregate_of_the_wrong_shape() -> None:
    attack = OptimalIpmAttack(aggregate=lambda vectors: vectors)
    with pytest.raises(ValueError, match="must return one vector"):
        send(attack, STACK)


def test_optimal_alie_with_one_partition_sends_the_mean() -> None:
    one = STACK[:1]
    np.testing.assert_array_equal(send(OptimalAlieAttack(aggregate=median), one), one[0])


def test_missing_byzfl_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "byzfl", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install fl-election\[byzfl\]"):
        send(MimicAttack(), STACK)
    with pytest.raises(ModuleNotFoundError, match=r"pip install fl-election\[byzfl\]"):
        send(OptimalIpmAttack(aggregate=median), STACK)


def test_mimic_sends_honest_vector_zero() -> None:
    sent = send(MimicAttack(), STACK, own=3)
    assert sent.dtype == np.float32
    np.testing.assert_array_equal(sent, STACK[0])
    assert not np.array_equal(sent, STACK[3])  # not the worker's own honest gradient
    sent[:] = 0  # a copy, not a view of the stack
    assert np.any(STACK[0] != 0)


def test_inf_sends_plus_infinity_everywhere() -> None:
    sent = send(InfAttack(), STACK)
    assert sent.dtype == np.float32
    assert sent.shape == (3,)
    assert np.all(np.isposinf(sent))


def test_sign_flipping_is_ipm_with_epsilon_one() -> None:
    sent = send(SignFlippingAttack(), STACK)
    assert sent.dtype == np.float32
    np.testing.assert_array_equal(sent, send(IpmAttack(epsilon=1.0), STACK))
    np.testing.assert_allclose(sent, -STACK.mean(axis=0), rtol=1e-6)
    assert_not_honest(sent, STACK)


# ----------------------------------------------------------------------------- inflation


def test_num_examples_inflation_sends_ipm_and_claims_more() -> None:
    attack = NumExamplesInflationAttack(epsilon=0.5, factor=100.0)
    sent = send(attack, STACK)
    np.testing.assert_allclose(sent, -0.5 * STACK.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(sent, send(IpmAttack(epsilon=0.5), STACK))
    assert_not_honest(sent, STACK)
    assert attack.claimed_examples(32) == 3200
    assert NumExamplesInflationAttack(factor=2.5).claimed_examples(3) == 8  # round(7.5) = 8
    assert NumExamplesInflationAttack(factor=1.0).claimed_examples(7) == 7
    assert NumExamplesInflationAttack().claimed_examples(0) == 0
    with pytest.raises(ValueError, match="assigned must be an integer >= 0"):
        attack.claimed_examples(-1)


# ----------------------------------------------------------------------------- min-margin

# Partitions 0, 1, 2; rows 0-2 hold one partition each, rows 3 and 4 hold all three and are
# Byzantine (b = 2). Columns: partition signs of five coordinates.
MM_SIGNS = np.array(
    [
        [1, 1, 1, -1, -1],
        [1, 1, 0, 0, -1],
        [1, -1, -1, 0, -1],
    ],
    dtype=np.int8,
)
MM_ROWS = ((0,), (1,), (2,), (0, 1, 2), (0, 1, 2))
MM_BYZANTINE = (3, 4)
# Honest M = [3, 1, 0, -1, -3]; mu = [+, +, (0 -> sign(M) = 0 -> +1), -, -];
# mu * M = [3, 1, 0, 1, 3] <= 2 at coordinates 1, 2, 3.
MM_EXPECTED = np.array([1, -1, -1, 1, -1], dtype=np.int8)


def test_min_margin_flips_exactly_the_swingable_coordinates() -> None:
    vote = min_margin_vote(MM_SIGNS, MM_ROWS, MM_BYZANTINE)
    assert vote.dtype == np.int8
    np.testing.assert_array_equal(vote, MM_EXPECTED)
    honest = np.sign(MM_SIGNS.astype(np.int64).sum(axis=0)).astype(np.int8)
    assert not np.array_equal(vote, honest)  # the attack is on
    # With b = 0 only the coordinates the honest nodes already lose (mu * M <= 0) flip.
    np.testing.assert_array_equal(
        min_margin_vote(MM_SIGNS, MM_ROWS, MM_BYZANTINE, num_byzantine=0),
        [1, 1, -1, -1, -1],
    )


def test_min_margin_attack_binds_the_code() -> None:
    attack = dataclasses.replace(
        create_attack("min-margin"), rows=MM_ROWS, byzantine_rows=MM_BYZANTINE
    )
    assert isinstance(attack, MinMarginAttack)
    np.testing.assert_array_equal(attack.forge_from_partitions(MM_SIGNS), MM_EXPECTED)
    with pytest.raises(ValueError, match="forge_from_partitions"):
        attack.forge(np.array([1, 1, 0, -1, -1], dtype=np.int8), np.array([3, 1, 0, -1, -3]), rng())
    with pytest.raises(ValueError, match=r"bind the code's rows"):
        MinMarginAttack().forge_from_partitions(MM_SIGNS)


def test_min_margin_float_form_keeps_the_mean_magnitudes() -> None:
    stack = (MM_SIGNS * np.array([[1.0], [2.0], [3.0]])).astype(np.float32)
    attack = MinMarginAttack(rows=MM_ROWS, byzantine_rows=MM_BYZANTINE)
    sent = send(attack, stack)
    np.testing.assert_allclose(sent, MM_EXPECTED * np.abs(stack.mean(axis=0)), rtol=1e-6)


def test_min_margin_refuses_bad_signs_and_rows() -> None:
    with pytest.raises(ValueError, match=r"entries must be in"):
        min_margin_vote(MM_SIGNS * 2, MM_ROWS, MM_BYZANTINE)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        min_margin_vote(MM_SIGNS, ((0,), (3,)), (1,))
    with pytest.raises(ValueError, match="byzantine_rows must be distinct"):
        min_margin_vote(MM_SIGNS, MM_ROWS, (3, 3))


def node_votes(signs: np.ndarray, rows: tuple[tuple[int, ...], ...]) -> np.ndarray:
    return np.array([np.sign(signs[list(row)].astype(np.int64).sum(axis=0)) for row in rows])


@pytest.mark.parametrize("seed", range(20))
def test_min_margin_elects_as_the_omniscient_attack_but_stealthily(seed: int) -> None:
    gen = rng(seed)
    k, d, n = 7, 40, 9  # k odd and no zero sign: mu is never a tie
    signs = gen.choice(np.array([-1, 1], dtype=np.int8), size=(k, d))
    rows = tuple(
        tuple(
            int(p) for p in sorted(gen.choice(k, size=int(gen.integers(1, k + 1)), replace=False))
        )
        for _ in range(n)
    )
    b = int(gen.integers(1, n // 2 + 1))
    byzantine = tuple(int(i) for i in gen.choice(n, size=b, replace=False))
    votes = node_votes(signs, rows)
    honest = [i for i in range(n) if i not in byzantine]
    margin = votes[honest].sum(axis=0)
    sign_sum = signs.astype(np.int64).sum(axis=0)
    mu = np.sign(sign_sum)

    vote = MinMarginAttack(rows=rows, byzantine_rows=byzantine).forge_from_partitions(signs)
    swing = mu * margin <= b
    np.testing.assert_array_equal(vote, np.where(swing, -mu, mu))  # exactly there
    np.testing.assert_array_equal(vote[~swing], mu[~swing])  # stealth elsewhere

    omniscient = OmniscientAttack()
    omniscient_total = margin + sum(
        omniscient.forge(votes[i].astype(np.int8), sign_sum, gen).astype(np.int64)
        for i in byzantine
    )
    min_margin_total = margin + b * vote.astype(np.int64)
    np.testing.assert_array_equal(np.sign(min_margin_total), np.sign(omniscient_total))
