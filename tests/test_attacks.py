from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm

from fl_election.attacks import (
    ATTACKS,
    MALFORM_KINDS,
    AlieAttack,
    DirectionalAttack,
    GaussianNoiseAttack,
    MalformedAttack,
    OmniscientAttack,
    SignAttack,
    alie_z,
    create_attack,
    malform,
    select_byzantine,
)

# The SPEC's perfectly 1-tolerant 5x5 code: worker 1 holds {1}, worker 2 holds {2,3,4},
# workers 3-5 hold everything.
SPEC_CODE = np.array(
    [
        [1, 0, 0, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
    ],
    dtype=np.int64,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_vote(d: int, seed: int = 0) -> np.ndarray:
    return rng(seed).integers(-1, 2, size=d).astype(np.int8)


def assert_vote(vote: np.ndarray, d: int) -> None:
    assert isinstance(vote, np.ndarray)
    assert vote.dtype == np.int8
    assert vote.shape == (d,)
    assert set(np.unique(vote).tolist()) <= {-1, 0, 1}


# ----------------------------------------------------------------------------- registry


def test_registry_names_match_classes() -> None:
    assert set(ATTACKS) == {
        "none",
        "reverse",
        "directional",
        "random",
        "omniscient",
        "ipm",
        "alie",
        "label-flip",
        "gaussian-noise",
        "silent",
        "malformed",
        # float-only (tests/test_float_attacks.py) and the adaptive sign attack
        "min-max",
        "min-sum",
        "optimal-alie",
        "optimal-ipm",
        "mimic",
        "inf",
        "sign-flipping",
        "num-examples-inflation",
        "min-margin",
    }
    for name, cls in ATTACKS.items():
        assert cls.name == name
        assert issubclass(cls, SignAttack)


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("omniscient", "needs_sign_sum"),
        ("ipm", "needs_sign_sum"),
        ("alie", "needs_sign_sum"),
        ("label-flip", "poisons_data"),
        ("gaussian-noise", "perturbs_gradient"),
        ("silent", "drops_reply"),
        ("malformed", "malforms_reply"),
    ],
)
def test_flags_are_set_exactly_where_the_attack_acts(name: str, flag: str) -> None:
    flags = ["needs_sign_sum", "poisons_data", "perturbs_gradient", "drops_reply", "malforms_reply"]
    cls = ATTACKS[name]
    assert getattr(cls, flag) is True
    for other in flags:
        if other != flag:
            assert getattr(cls, other) is False, (name, other)


@pytest.mark.parametrize("name", ["none", "reverse", "directional", "random"])
def test_vote_attacks_set_no_flag(name: str) -> None:
    cls = ATTACKS[name]
    assert not any(
        (
            cls.needs_sign_sum,
            cls.poisons_data,
            cls.perturbs_gradient,
            cls.drops_reply,
            cls.malforms_reply,
        )
    )


def test_unknown_attack_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown attack 'flip'") as info:
        create_attack("flip")
    for name in ATTACKS:
        assert name in str(info.value)


def test_create_attack_normalises_the_name() -> None:
    assert create_attack("Label_Flip").name == "label-flip"
    assert create_attack(" GAUSSIAN_noise ").name == "gaussian-noise"


def test_create_attack_rejects_unknown_params() -> None:
    with pytest.raises(ValueError, match="unknown parameter.*strength.*accepted: direction"):
        create_attack("directional", strength=2)
    with pytest.raises(ValueError, match="unknown parameter.*z.*accepted: none"):
        create_attack("reverse", z=1.0)


def test_create_attack_reports_missing_params() -> None:
    with pytest.raises(ValueError, match="requires parameter.*num_partitions"):
        create_attack("alie", z=1.0)


def test_create_attack_passes_params() -> None:
    attack = create_attack("directional", direction=-1)
    assert isinstance(attack, DirectionalAttack)
    assert attack.direction == -1
    alie = create_attack("alie", num_partitions=9, z=0.5)
    assert isinstance(alie, AlieAttack)
    assert (alie.num_partitions, alie.z) == (9, 0.5)
    assert isinstance(create_attack("gaussian-noise", std=0.1), GaussianNoiseAttack)
    assert create_attack("malformed", kind="nan") == MalformedAttack(kind="nan")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("directional", {"direction": 0}, "direction must be"),
        ("directional", {"direction": 2}, "direction must be"),
        ("directional", {"direction": True}, "direction must be"),
        ("directional", {"direction": 1.0}, "direction must be"),
        ("alie", {"num_partitions": 5, "z": -0.1}, "z must be"),
        ("alie", {"num_partitions": 5, "z": math.nan}, "z must be"),
        ("alie", {"num_partitions": 5, "z": math.inf}, "z must be"),
        ("alie", {"num_partitions": 0}, "num_partitions must be"),
        ("gaussian-noise", {"std": -1.0}, "std must be"),
        ("gaussian-noise", {"std": math.nan}, "std must be"),
        ("malformed", {"kind": "huge"}, "kind must be one of"),
    ],
)
def test_bad_param_values_are_rejected(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_attack(name, **params)


# ------------------------------------------------------------------------ forge inputs


@pytest.mark.parametrize(
    "vote",
    [
        np.array([1.0, -1.0]),
        np.array([2, 0], dtype=np.int8),
        np.array([[1, -1]], dtype=np.int8),
        [1, -1],
    ],
)
def test_forge_rejects_bad_votes(vote: object) -> None:
    with pytest.raises(ValueError, match="honest_vote"):
        create_attack("reverse").forge(vote, None, rng())  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["omniscient", "ipm"])
def test_sign_sum_attacks_check_sign_sum(name: str) -> None:
    attack = create_attack(name)
    vote = np.array([1, -1, 0], dtype=np.int8)
    with pytest.raises(ValueError, match="needs sign_sum"):
        attack.forge(vote, None, rng())
    with pytest.raises(ValueError, match="shape"):
        attack.forge(vote, np.array([1, 2]), rng())
    with pytest.raises(ValueError, match="integer dtype"):
        attack.forge(vote, np.array([1.0, 2.0, 3.0]), rng())


# ---------------------------------------------------------------------- vote attacks


def test_none_sends_the_honest_vote() -> None:
    vote = random_vote(50)
    out = create_attack("none").forge(vote, None, rng())
    assert_vote(out, 50)
    np.testing.assert_array_equal(out, vote)
    assert out is not vote


def test_reverse_negates_and_keeps_abstentions() -> None:
    vote = np.array([1, -1, 0, 1, 0], dtype=np.int8)
    out = create_attack("reverse").forge(vote, None, rng())
    assert_vote(out, 5)
    np.testing.assert_array_equal(out, [-1, 1, 0, -1, 0])


def test_reverse_accepts_wider_integer_votes() -> None:
    out = create_attack("reverse").forge(np.array([1, -1], dtype=np.int64), None, rng())
    assert_vote(out, 2)
    np.testing.assert_array_equal(out, [-1, 1])


@pytest.mark.parametrize("direction", [1, -1])
def test_directional_sends_one_sign_everywhere(direction: int) -> None:
    out = create_attack("directional", direction=direction).forge(random_vote(40), None, rng())
    assert_vote(out, 40)
    assert np.all(out == direction)


def test_directional_default_is_all_ones() -> None:
    out = create_attack("directional").forge(random_vote(7), None, rng())
    np.testing.assert_array_equal(out, np.ones(7))


def test_random_is_uniform_signs_and_seeded() -> None:
    attack = create_attack("random")
    vote = random_vote(20_000)
    first = attack.forge(vote, None, rng(3))
    assert_vote(first, 20_000)
    assert set(np.unique(first).tolist()) == {-1, 1}  # never abstains
    np.testing.assert_array_equal(first, attack.forge(vote, None, rng(3)))
    assert not np.array_equal(first, attack.forge(vote, None, rng(4)))
    # Mean of 20000 fair signs has std 1/sqrt(20000) ~ 0.007.
    assert abs(first.astype(np.float64).mean()) < 0.04


def test_random_does_not_depend_on_the_honest_vote() -> None:
    attack = create_attack("random")
    a = attack.forge(np.ones(100, dtype=np.int8), None, rng(1))
    b = attack.forge(-np.ones(100, dtype=np.int8), None, rng(1))
    np.testing.assert_array_equal(a, b)


def partition_signs(k: int, d: int, seed: int) -> np.ndarray:
    return (2 * rng(seed).integers(0, 2, size=(k, d)) - 1).astype(np.int8)


@pytest.mark.parametrize("name", ["omniscient", "ipm"])
def test_omniscient_and_ipm_send_minus_mu(name: str) -> None:
    signs = partition_signs(k=7, d=300, seed=5)
    sign_sum = signs.astype(np.int64).sum(axis=0)
    mu = np.sign(sign_sum)
    assert np.all(mu != 0)  # k odd: no ties
    out = create_attack(name).forge(random_vote(300, seed=6), sign_sum, rng())
    assert_vote(out, 300)
    np.testing.assert_array_equal(out, -mu)


@pytest.mark.parametrize("name", ["omniscient", "ipm"])
def test_omniscient_ties_send_the_opposite_of_the_honest_vote(name: str) -> None:
    sign_sum = np.array([0, 0, 0, 2, -4], dtype=np.int32)
    vote = np.array([1, -1, 0, -1, 1], dtype=np.int8)
    out = create_attack(name).forge(vote, sign_sum, rng())
    np.testing.assert_array_equal(out, [-1, 1, 0, -1, 1])


def test_omniscient_narrow_sign_sum_dtype() -> None:
    # int8 extremes must not overflow.
    sign_sum = np.array([-128, 127], dtype=np.int8)
    out = create_attack("omniscient").forge(np.zeros(2, dtype=np.int8), sign_sum, rng())
    np.testing.assert_array_equal(out, [1, -1])


def global_vote(code: np.ndarray, signs: np.ndarray, byzantine: tuple[int, ...]) -> np.ndarray:
    """Majority of majorities where the Byzantine rows send the omniscient attack."""
    sign_sum = signs.astype(np.int64).sum(axis=0)
    attack = OmniscientAttack()
    votes = []
    for i, row in enumerate(code):
        honest = np.sign(row @ signs.astype(np.int64)).astype(np.int8)
        votes.append(attack.forge(honest, sign_sum, rng()) if i in byzantine else honest)
    return np.sign(np.sum(votes, axis=0))


def test_omniscient_is_the_worst_case_of_the_tolerance_condition() -> None:
    # Every coordinate is one sign pattern over the 5 partitions.
    patterns = np.array(list(itertools.product([-1, 1], repeat=5)), dtype=np.int8).T
    mu = np.sign(patterns.sum(axis=0))
    # The SPEC's code is perfectly 1-tolerant: no single Byzantine changes any coordinate.
    for bad in itertools.combinations(range(5), 1):
        np.testing.assert_array_equal(global_vote(SPEC_CODE, patterns, bad), mu)
    # ... and not 2-tolerant: some pair of colluding Byzantines flips some coordinate.
    assert any(
        np.any(global_vote(SPEC_CODE, patterns, bad) != mu)
        for bad in itertools.combinations(range(5), 2)
    )
    # Uncoded SignSGD-MV is not even 1-tolerant against the same attack.
    identity = np.eye(5, dtype=np.int64)
    assert any(np.any(global_vote(identity, patterns, (i,)) != mu) for i in range(5))


# ------------------------------------------------------------------------------ ALIE


def test_alie_flips_exactly_the_low_margin_coordinates() -> None:
    k = 9  # threshold z * sqrt(k) = 3 for z = 1
    sign_sum = np.array([9, 5, 3, 1, -1, -3, -5, -9, 3, -7], dtype=np.int64)
    vote = np.array([1, 1, 0, -1, 1, -1, -1, -1, 1, 0], dtype=np.int8)
    out = create_attack("alie", num_partitions=k, z=1.0).forge(vote, sign_sum, rng())
    assert_vote(out, 10)
    expected = [1, 1, -1, -1, 1, 1, -1, -1, -1, -1]
    np.testing.assert_array_equal(out, expected)


def test_alie_against_a_loop_reference_on_random_partitions() -> None:
    k, d, z = 11, 500, 0.7
    signs = partition_signs(k, d, seed=8)
    sign_sum = signs.astype(np.int64).sum(axis=0)
    vote = random_vote(d, seed=9)
    out = AlieAttack(num_partitions=k, z=z).forge(vote, sign_sum, rng())
    limit = z * math.sqrt(k)
    for coord in range(d):
        mu = int(np.sign(sign_sum[coord]))
        assert out[coord] == (-mu if abs(int(sign_sum[coord])) <= limit else mu)
    # Low-margin coordinates exist and so do high-margin ones: the test saw both branches.
    assert 0 < np.sum(np.abs(sign_sum) <= limit) < d


def test_alie_zero_z_flips_only_ties_and_large_z_is_omniscient() -> None:
    sign_sum = np.array([0, 2, -2, 4, 0, -6], dtype=np.int64)
    vote = np.array([1, 1, -1, 1, -1, 0], dtype=np.int8)
    mu = np.sign(sign_sum)
    out = AlieAttack(num_partitions=6, z=0.0).forge(vote, sign_sum, rng())
    np.testing.assert_array_equal(out, [-1, 1, -1, 1, 1, -1])
    np.testing.assert_array_equal(out[mu != 0], mu[mu != 0])
    full = AlieAttack(num_partitions=6, z=10.0).forge(vote, sign_sum, rng())
    np.testing.assert_array_equal(full, OmniscientAttack().forge(vote, sign_sum, rng()))


def test_alie_low_margin_mask() -> None:
    mask = AlieAttack(num_partitions=4, z=1.5).low_margin(np.array([0, 2, 3, -3, 4]))
    np.testing.assert_array_equal(mask, [True, True, True, True, False])


def test_alie_rejects_sign_sums_larger_than_k() -> None:
    with pytest.raises(ValueError, match="exceeds num_partitions"):
        AlieAttack(num_partitions=3).forge(np.zeros(2, dtype=np.int8), np.array([5, 1]), rng())


@pytest.mark.parametrize(("n", "b"), [(5, 1), (5, 2), (9, 3), (15, 3), (15, 6), (100, 20)])
def test_alie_z_matches_the_alie_paper(n: int, b: int) -> None:
    needed = math.floor(n / 2 + 1) - b
    assert alie_z(n, b) == pytest.approx(max(0.0, norm.ppf((n - needed) / n)), rel=1e-9)


def test_alie_z_bounds() -> None:
    assert alie_z(15, 0) == 0.0
    with pytest.raises(ValueError, match="majority"):
        alie_z(5, 3)
    with pytest.raises(ValueError, match="num_workers"):
        alie_z(1, 0)
    with pytest.raises(ValueError, match="num_byzantine"):
        alie_z(5, 6)


# ------------------------------------------------------------- data/gradient/reply attacks


@pytest.mark.parametrize("name", ["label-flip", "gaussian-noise", "silent", "malformed"])
def test_non_vote_attacks_forge_the_honest_vote(name: str) -> None:
    vote = random_vote(30, seed=2)
    out = create_attack(name).forge(vote, None, rng())
    assert_vote(out, 30)
    np.testing.assert_array_equal(out, vote)


def test_malform_kinds_produce_what_they_promise() -> None:
    packed = rng(0).integers(0, 256, size=13, dtype=np.uint8)
    assert set(MALFORM_KINDS) == {"dtype", "length", "nan", "missing", "garbage"}

    dtype = malform(packed, "dtype", rng())
    assert dtype is not None and dtype.dtype == np.float32
    np.testing.assert_array_equal(dtype, packed.astype(np.float32))

    length = malform(packed, "length", rng())
    assert length is not None and length.dtype == np.uint8
    assert length.size < packed.size
    np.testing.assert_array_equal(length, packed[: length.size])

    nan = malform(packed, "nan", rng())
    assert nan is not None and np.issubdtype(nan.dtype, np.floating)
    assert nan.size == packed.size and np.isnan(nan).sum() == 1

    assert malform(packed, "missing", rng()) is None

    for seed in range(20):
        garbage = malform(packed, "garbage", rng(seed))
        assert garbage is not None and garbage.dtype == np.uint8
        assert garbage.size != packed.size


def test_malform_leaves_the_input_alone_and_validates() -> None:
    packed = np.arange(8, dtype=np.uint8)
    before = packed.copy()
    for kind in MALFORM_KINDS:
        malform(packed, kind, rng())
    np.testing.assert_array_equal(packed, before)
    with pytest.raises(ValueError, match="valid kinds: dtype"):
        malform(packed, "bogus", rng())
    with pytest.raises(ValueError, match="uint8"):
        malform(packed.astype(np.int8), "dtype", rng())
    with pytest.raises(ValueError, match="at least one byte"):
        malform(np.zeros(0, dtype=np.uint8), "length", rng())


def test_random_selection_is_reproducible_distinct_and_in_range() -> None:
    chosen = select_byzantine(15, 6, seed=7)
    assert chosen == select_byzantine(15, 6, seed=7)
    assert len(chosen) == 6 == len(set(chosen))
    assert all(0 <= i < 15 for i in chosen)
    assert list(chosen) == sorted(chosen)
    assert all(type(i) is int for i in chosen)
    seeds_sets = {select_byzantine(15, 6, seed=s) for s in range(20)}
    assert len(seeds_sets) > 1


def test_random_selection_edges() -> None:
    assert select_byzantine(5, 0) == ()
    assert select_byzantine(5, 5, seed=3) == (0, 1, 2, 3, 4)


def test_random_selection_is_roughly_uniform() -> None:
    counts = np.zeros(10)
    for seed in range(2000):
        counts[list(select_byzantine(10, 3, seed=seed))] += 1
    # Each worker is chosen with probability 0.3: 600 of 2000, std ~ 20.
    assert np.all(np.abs(counts - 600) < 100)


def test_explicit_selection() -> None:
    assert select_byzantine(9, 3, selection="explicit", ids=[8, 0, 4]) == (0, 4, 8)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([0, 9, 1], "out of range"),
        ([-1, 2, 3], "out of range"),
        ([1, 1, 2], "duplicates"),
        ([1, 2], "count = 3"),
        ([1, 2, 3, 4], "count = 3"),
        ([1.0, 2, 3], "integers"),
    ],
)
def test_explicit_selection_validates(ids: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_byzantine(9, 3, selection="explicit", ids=ids)  # type: ignore[arg-type]


def test_worst_selection_passes_the_set_through() -> None:
    assert select_byzantine(5, 2, selection="worst", worst=(4, 2)) == (2, 4)
    with pytest.raises(ValueError, match="needs the worst set"):
        select_byzantine(5, 2, selection="worst")
    with pytest.raises(ValueError, match="duplicates"):
        select_byzantine(5, 2, selection="worst", worst=(2, 2))
    with pytest.raises(ValueError, match="count = 2"):
        select_byzantine(5, 2, selection="worst", worst=(1,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 5, "count": 6}, "count must be"),
        ({"n": 5, "count": -1}, "count must be"),
        ({"n": 0, "count": 0}, "n must be"),
        ({"n": 5, "count": 1, "selection": "best"}, "valid selections: random, explicit, worst"),
        ({"n": 5, "count": 1, "ids": [1]}, "only used with selection='explicit'"),
        ({"n": 5, "count": 1, "worst": [1]}, "only used with selection='worst'"),
    ],
)
def test_select_byzantine_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_byzantine(**kwargs)  # type: ignore[arg-type]


def test_forge_gradient_reverse_is_minus_g_and_omniscient_uses_the_majority():
    from fl_election.attacks import create_attack, forge_gradient

    rng = np.random.default_rng(0)
    g = np.array([0.5, -2.0, 0.0, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(forge_gradient(create_attack("reverse"), g, None, rng), -g)
    sign_sum = np.array([3, -1, 2, -5])
    out = forge_gradient(create_attack("omniscient"), g, sign_sum, rng)
    np.testing.assert_array_equal(out, np.array([-0.5, 2.0, -0.0, 3.0], dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        forge_gradient(create_attack("reverse"), np.array([np.nan], dtype=np.float32), None, rng)
