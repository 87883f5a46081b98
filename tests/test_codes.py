"""Tests for fl_election.codes: codes, constructors, registry and the exact certificate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_election.codes import (
    CODE_FACTORIES,
    AllocationCode,
    Certificate,
    bernoulli,
    certify,
    create_code,
    deterministic,
    max_tolerance,
    repetition,
    uncoded,
    worst_byzantine_set,
    wrong_vote_probability,
)

SPEC_ROWS = [[0], [1, 2, 3], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
KNOWN_BOUNDS = {
    (5, 1): 3.8,
    (7, 1): 4.43,
    (7, 2): 5.86,
    (9, 1): 5.33,
    (9, 2): 6.56,
    (9, 3): 7.89,
    (11, 1): 5.82,
    (11, 2): 7.64,
}


# --------------------------------------------------------------------------- naive references


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _local_votes(matrix: np.ndarray, pattern: tuple[int, ...]) -> list[int]:
    return [_sign(int(np.dot(row.astype(int), pattern))) for row in matrix]


def naive_attack(matrix: np.ndarray, b: int) -> tuple[bool, int]:
    """Straight from the definition: every pattern, every b-subset of Byzantines sending -mu.

    Returns (survives every attack, min over patterns of (votes equal to mu) - (votes -mu)).
    """
    n, k = matrix.shape
    survives = True
    worst = n + 1
    for pattern in itertools.product((1, -1), repeat=k):
        mu = _sign(sum(pattern))
        if mu == 0:
            continue
        votes = _local_votes(matrix, pattern)
        worst = min(worst, sum(v * mu for v in votes))
        for byzantine in itertools.combinations(range(n), b):
            total = sum(v for i, v in enumerate(votes) if i not in byzantine) - b * mu
            if _sign(total) != mu:
                survives = False
    return survives, worst


def global_vote(matrix: np.ndarray, pattern: tuple[int, ...], byzantine: tuple[int, ...]) -> int:
    votes = _local_votes(matrix, pattern)
    mu = _sign(sum(pattern))
    return _sign(sum(v for i, v in enumerate(votes) if i not in byzantine) - len(byzantine) * mu)


def naive_failure_probability(matrix: np.ndarray, byzantine: tuple[int, ...]) -> float:
    k = matrix.shape[1]
    fails = total = 0
    for pattern in itertools.product((1, -1), repeat=k):
        mu = _sign(sum(pattern))
        if mu == 0:
            continue
        total += 1
        fails += global_vote(matrix, pattern, byzantine) != mu
    return fails / total


def assert_valid_witness(code: AllocationCode, cert: Certificate) -> None:
    assert cert.witness_pattern is not None and cert.witness_byzantine is not None
    assert len(cert.witness_pattern) == code.k
    assert set(cert.witness_pattern) <= {1, -1}
    assert sum(cert.witness_pattern) > 0
    assert len(set(cert.witness_byzantine)) == cert.b
    # The adversary's b workers send -mu = -1 and the vote is then wrong or tied.
    assert global_vote(code.matrix, cert.witness_pattern, cert.witness_byzantine) != 1


small_matrices = st.integers(1, 7).flatmap(
    lambda n: st.integers(1, 7).flatmap(
        lambda k: st.lists(
            st.lists(st.integers(0, 1), min_size=k, max_size=k), min_size=n, max_size=n
        )
    )
)


# --------------------------------------------------------------------------- AllocationCode


def test_allocation_code_properties() -> None:
    code = AllocationCode.from_rows(SPEC_ROWS, 5, "spec")
    assert (code.n, code.k) == (5, 5)
    assert code.loads.tolist() == [1, 3, 5, 5, 5]
    assert code.max_load == 5
    assert code.ones == 19
    assert code.redundancy == pytest.approx(3.8)
    assert code.partitions_of(1) == (1, 2, 3)
    assert code.holders_of(0) == (0, 2, 3, 4)
    assert code.holders_of(4) == (2, 3, 4)
    text = str(code)
    assert "spec" in text and "n=5" in text and "k=5" in text and "r=3.800" in text
    assert "#...." in text and "#####" in text
    with pytest.raises(ValueError):
        code.matrix[0, 0] = 0
    with pytest.raises(ValueError, match="worker"):
        code.partitions_of(5)
    with pytest.raises(ValueError, match="partition"):
        code.holders_of(-1)


def test_allocation_code_equality_uses_matrix() -> None:
    a = AllocationCode(np.eye(3, dtype=np.uint8), "a")
    b = AllocationCode([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "b")
    c = AllocationCode(np.eye(3, dtype=np.uint8)[:, :2], "c")
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    # Same bytes, different shape: not equal.
    assert AllocationCode(np.ones((2, 3), np.uint8)) != AllocationCode(np.ones((3, 2), np.uint8))


def test_allocation_code_copies_input() -> None:
    raw = np.eye(3, dtype=np.uint8)
    code = AllocationCode(raw)
    raw[0, 1] = 1
    assert code.matrix[0, 1] == 0


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.ones(3), "2-D"),
        (np.ones((0, 3)), "n >= 1"),
        (np.ones((3, 0)), "k >= 1"),
        (np.array([[0, 2], [1, 1]]), "0 or 1"),
        (np.array([[0.5, 1.0]]), "0 or 1"),
        (np.array([[-1, 1]]), "0 or 1"),
    ],
)
def test_allocation_code_rejects_bad_matrix(matrix: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllocationCode(matrix)


def test_from_rows_rejects_out_of_range_partition() -> None:
    with pytest.raises(ValueError, match="outside"):
        AllocationCode.from_rows([[0, 3]], 3)


# --------------------------------------------------------------------------- constructors


def test_uncoded_is_identity() -> None:
    code = uncoded(4)
    assert np.array_equal(code.matrix, np.eye(4))
    assert code.redundancy == 1.0


def test_bernoulli_reproducible_and_seed_dependent() -> None:
    assert bernoulli(15, redundancy=3.0, seed=3) == bernoulli(15, redundancy=3.0, seed=3)
    assert bernoulli(15, redundancy=3.0, seed=3) != bernoulli(15, redundancy=3.0, seed=4)


def test_bernoulli_density_and_shape() -> None:
    code = bernoulli(200, k=30, redundancy=6.0, seed=1)
    assert (code.n, code.k) == (200, 30)
    assert code.matrix.mean() == pytest.approx(0.2, abs=0.02)
    assert bernoulli(10, p=1.0).ones == 100


def test_bernoulli_has_no_empty_worker() -> None:
    # p = 0.05, k = 10: about 60% of raw rows are empty, so redrawing is exercised.
    code = bernoulli(300, k=10, p=0.05, seed=0)
    assert code.loads.min() >= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 5, "p": 0.0}, r"\(0, 1\]"),
        ({"n": 5, "p": 1.5}, r"\(0, 1\]"),
        ({"n": 5, "p": -0.1}, r"\(0, 1\]"),
        ({"n": 5, "redundancy": 6.0}, r"\(0, 1\]"),
        ({"n": 5, "k": 0}, "k must be a positive integer"),
        ({"n": 0}, "n must be a positive integer"),
        ({"n": 5, "seed": -1}, "seed"),
    ],
)
def test_bernoulli_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bernoulli(**kwargs)  # type: ignore[arg-type]


def test_repetition_structure() -> None:
    code = repetition(6, 3)
    assert code.loads.tolist() == [3] * 6
    assert code.partitions_of(0) == code.partitions_of(2) == (0, 1, 2)
    assert code.partitions_of(3) == (3, 4, 5)
    assert code.holders_of(4) == (3, 4, 5)
    with pytest.raises(ValueError, match="divide"):
        repetition(7, 3)


def test_deterministic_rejects_bad_b() -> None:
    for b in (-1, 3, 4):
        with pytest.raises(ValueError, match="0 <= b < n/2"):
            deterministic(6, b)
    assert deterministic(6, 0) == uncoded(6)


# --------------------------------------------------------------------------- registry


def test_registry_names_and_create_code() -> None:
    assert set(CODE_FACTORIES) == {"uncoded", "bernoulli", "deterministic", "repetition"}
    assert create_code("uncoded", n=4) == uncoded(4)
    assert create_code("bernoulli", n=9, redundancy=2.0, seed=5) == bernoulli(
        9, redundancy=2.0, seed=5
    )
    assert create_code("repetition", n=6, group=2) == repetition(6, 2)
    assert create_code("deterministic", n=7, b=2) == deterministic(7, 2)


def test_create_code_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="unknown code 'ldpc'") as info:
        create_code("ldpc", n=5)
    for name in CODE_FACTORIES:
        assert name in str(info.value)


def test_create_code_passes_constructor_errors() -> None:
    with pytest.raises(ValueError, match="0 <= b < n/2"):
        create_code("deterministic", n=5, b=3)
    with pytest.raises(ValueError, match="bad parameters"):
        create_code("uncoded", n=5, b=1)


# --------------------------------------------------------------------------- certify


def test_spec_example_is_1_but_not_2_tolerant() -> None:
    code = AllocationCode.from_rows(SPEC_ROWS, 5)
    assert code.ones == 19
    one = certify(code, 1)
    assert one.tolerant and one.exact and one.method == "enumeration"
    assert one.worst_margin >= 1
    assert one.witness_pattern is None and one.witness_byzantine is None
    two = certify(code, 2)
    assert not two.tolerant and two.worst_margin <= 0
    assert_valid_witness(code, two)
    assert max_tolerance(code) == 1


def test_uncoded_not_1_tolerant_with_witness() -> None:
    for n in (3, 4, 5, 8, 11):
        code = uncoded(n)
        cert = certify(code, 1)
        assert not cert.tolerant
        assert_valid_witness(code, cert)
        assert certify(code, 0).tolerant
        assert max_tolerance(code) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=small_matrices, b_seed=st.integers(0, 10))
def test_certify_agrees_with_brute_force_attack(rows: list[list[int]], b_seed: int) -> None:
    matrix = np.array(rows, dtype=np.uint8)
    code = AllocationCode(matrix)
    b = b_seed % ((code.n + 1) // 2)
    survives, worst = naive_attack(matrix, b)
    cert = certify(code, b)
    assert cert.tolerant == survives
    assert cert.worst_margin == worst - 2 * b
    if not cert.tolerant:
        assert_valid_witness(code, cert)


def test_certify_checks_b_range() -> None:
    code = uncoded(6)
    for b in (-1, 3, 10):
        with pytest.raises(ValueError, match="b must satisfy 0 <= b < n/2"):
            certify(code, b)
    with pytest.raises(ValueError, match="method"):
        certify(code, 1, method="sat")


def test_milp_agrees_with_enumeration() -> None:
    rng = np.random.default_rng(7)
    for trial in range(6):
        n = int(rng.integers(5, 10))
        k = int(rng.integers(10, 15))
        code = bernoulli(n, k=k, p=float(rng.uniform(0.2, 0.7)), seed=trial)
        for b in range(0, (n + 1) // 2):
            by_enum = certify(code, b, method="enumeration")
            by_milp = certify(code, b, method="milp")
            assert by_milp.method == "milp" and by_milp.exact
            assert by_milp.tolerant == by_enum.tolerant
            assert by_milp.worst_margin == by_enum.worst_margin
            if not by_milp.tolerant:
                assert_valid_witness(code, by_milp)


def test_milp_on_tolerant_code() -> None:
    code = deterministic(11, 2)
    assert certify(code, 2, method="milp").tolerant
    assert not certify(code, max_tolerance(code) + 1, method="milp").tolerant


def test_sampled_certificate_says_it_is_an_estimate() -> None:
    code = AllocationCode.from_rows(SPEC_ROWS, 5)
    estimate = certify(code, 1, method="sampled", samples=500)
    assert estimate.tolerant and not estimate.exact
    assert estimate.method == "sampled" and estimate.samples == 500
    assert estimate.confidence == pytest.approx(0.95)
    assert "SAMPLED ESTIMATE" in str(estimate) and "not a proof" in str(estimate)
    broken = certify(uncoded(9), 1, method="sampled", samples=500)
    assert not broken.tolerant and not broken.exact
    assert_valid_witness(uncoded(9), broken)


def test_certificate_str_exact() -> None:
    text = str(certify(uncoded(5), 1))
    assert "NOT 1-tolerant" in text and "exact" in text and "witness" in text


def test_enumeration_is_exact_up_to_k24() -> None:
    # How long it takes is benchmarks/bench_certify.py's business (BENCHMARKS.md).
    code = bernoulli(25, k=24, redundancy=8.0, seed=0)
    cert = certify(code, 2)
    assert cert.exact and cert.method == "enumeration"


def test_max_tolerance_matches_certify() -> None:
    for n, b in [(7, 2), (9, 3), (10, 1), (12, 4)]:
        code = deterministic(n, b)
        top = max_tolerance(code)
        assert top >= b
        assert certify(code, top).tolerant
        if 2 * (top + 1) < n:
            assert not certify(code, top + 1).tolerant


# --------------------------------------------------------------------------- deterministic


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 15), data=st.data())
def test_deterministic_is_certified(n: int, data: st.DataObject) -> None:
    b = data.draw(st.integers(1, (n - 1) // 2))
    code = deterministic(n, b)
    assert (code.n, code.k) == (n, n)
    assert code.loads.min() >= 1
    assert certify(code, b).tolerant


def test_deterministic_every_small_pair_certified() -> None:
    for n in range(3, 16):
        for b in range(1, (n + 1) // 2):
            assert certify(deterministic(n, b), b).tolerant, (n, b)


@pytest.mark.parametrize(("n", "b"), [(17, 3), (17, 8), (21, 4), (25, 2)])
def test_deterministic_larger_n(n: int, b: int) -> None:
    assert certify(deterministic(n, b), b).tolerant


@pytest.mark.slow
@pytest.mark.parametrize("n", [16, 17, 18, 19, 20, 21, 22, 23, 24, 25])
def test_deterministic_larger_n_every_b(n: int) -> None:
    for b in range(1, (n + 1) // 2):
        assert certify(deterministic(n, b), b).tolerant, (n, b)


@pytest.mark.slow
def test_deterministic_beyond_enumeration_via_milp() -> None:
    code = deterministic(31, 3)
    assert certify(code, 3, method="milp").tolerant


def test_deterministic_meets_known_bounds() -> None:
    assert deterministic(5, 1).redundancy <= 3.8
    for (n, b), bound in KNOWN_BOUNDS.items():
        assert deterministic(n, b).redundancy <= bound + 1e-9, (n, b)


# --------------------------------------------------------------------------- attack analysis


def test_worst_byzantine_set_exact_matches_brute_force() -> None:
    code = bernoulli(6, k=5, redundancy=2.0, seed=2)
    b = 2
    chosen = worst_byzantine_set(code, b)
    assert chosen == tuple(sorted(chosen)) and len(chosen) == b
    probabilities = {
        subset: naive_failure_probability(code.matrix, subset)
        for subset in itertools.combinations(range(code.n), b)
    }
    assert probabilities[chosen] == pytest.approx(max(probabilities.values()))


def test_worst_byzantine_set_takes_always_correct_workers() -> None:
    # Workers 5 and 6 hold everything and always vote mu: losing them hurts most.
    code = AllocationCode(np.vstack([np.eye(5, dtype=np.uint8), np.ones((2, 5), np.uint8)]))
    assert worst_byzantine_set(code, 2) == (5, 6)
    assert worst_byzantine_set(code, 0) == ()


def test_worst_byzantine_set_ties_go_to_heavier_workers() -> None:
    # k = 4: every majority pattern has >= 3 positives, so worker 1 ({0,1,2}, load 3) and
    # worker 2 (everything, load 4) both always vote mu: an exact tie, broken by load.
    code = AllocationCode.from_rows([[0], [0, 1, 2], [0, 1, 2, 3], [1], [2]], 4)
    assert worst_byzantine_set(code, 1) == (2,)
    uniform = AllocationCode(np.ones((5, 3), dtype=np.uint8))
    assert worst_byzantine_set(uniform, 2) == (0, 1)


def test_worst_byzantine_set_heuristic_is_swap_optimal() -> None:
    code = bernoulli(9, k=19, redundancy=5.0, seed=4)  # k > 16: heuristic mode
    b = 2
    chosen = worst_byzantine_set(code, b, seed=1, samples=4000)
    assert len(set(chosen)) == b
    base = wrong_vote_probability(code, b, byzantine=chosen, samples=4000, seed=1)
    for slot in range(b):
        for worker in set(range(code.n)) - set(chosen):
            trial = list(chosen)
            trial[slot] = worker
            assert wrong_vote_probability(code, b, byzantine=trial, samples=4000, seed=1) <= base


def test_wrong_vote_probability_exact_matches_naive() -> None:
    code = bernoulli(7, k=6, redundancy=3.0, seed=9)
    byz = (1, 4)
    exact = wrong_vote_probability(code, 2, byzantine=byz, exact=True)
    assert exact == pytest.approx(naive_failure_probability(code.matrix, byz))
    assert wrong_vote_probability(code, 0, byzantine=()) == pytest.approx(
        naive_failure_probability(code.matrix, ())
    )


def test_wrong_vote_probability_monte_carlo_close_to_exact() -> None:
    code = bernoulli(9, k=13, redundancy=3.0, seed=3)
    byz = worst_byzantine_set(code, 3)
    exact = wrong_vote_probability(code, 3, byzantine=byz, exact=True)
    estimate = wrong_vote_probability(code, 3, byzantine=byz, exact=False, samples=20000, seed=5)
    assert estimate == pytest.approx(exact, abs=0.02)
    assert 0.0 < exact < 1.0
    # The default attacker is the worst set.
    assert wrong_vote_probability(code, 3, exact=True) == pytest.approx(exact)


def test_wrong_vote_probability_zero_for_tolerant_code() -> None:
    code = deterministic(9, 2)
    assert wrong_vote_probability(code, 2, exact=True) == 0.0
    assert wrong_vote_probability(uncoded(9), 2, exact=True) > 0.0


def test_wrong_vote_probability_validates_byzantine() -> None:
    code = uncoded(5)
    with pytest.raises(ValueError, match="distinct"):
        wrong_vote_probability(code, 2, byzantine=(1, 1))
    with pytest.raises(ValueError, match="distinct"):
        wrong_vote_probability(code, 2, byzantine=(1,))
    with pytest.raises(ValueError, match="lie in"):
        wrong_vote_probability(code, 1, byzantine=(7,))


def test_structured_family_is_tolerant_by_construction() -> None:
    from fl_election._search import structured_rows

    for n in range(3, 16):
        for b in range(0, (n + 1) // 2):
            code = AllocationCode.from_rows(structured_rows(n, b), n)
            assert code.loads.min() >= 1
            assert certify(code, b).tolerant, (n, b)


def test_table_entries_are_certified() -> None:
    import json

    from fl_election.codes import DETERMINISTIC_TABLE_PATH

    entries = json.loads(DETERMINISTIC_TABLE_PATH.read_text(encoding="utf-8"))["codes"]
    assert entries, "the searched table should not be empty"
    for entry in entries:
        n, b = entry["n"], entry["b"]
        code = AllocationCode.from_rows(entry["rows"], n)
        assert code.n == n and code.ones == entry["ones"]
        assert code.loads.min() >= 1
        if n <= 15:
            assert certify(code, b).tolerant, (n, b)
        # deterministic() never returns something heavier than the table entry.
        assert deterministic(n, b).ones <= entry["ones"]


# --------------------------------------------------------------------------- forced tie rule
#
# With a 1-bit uplink a worker whose local vote is a tie (even load split evenly) cannot
# abstain: it breaks the tie by a local rule the certificate does not trust, so the tie counts
# as a wrong vote (W). TIE_ROWS: worker 0 holds {0, 1} (load 2), workers 1-3 hold all three
# partitions. On the minimal majority layer (two +1 of three) the full workers always vote
# right; worker 0 votes right on +,+,- and ties on +,-,+ and -,+,+.
#   abstain: min (C - W) = 3 + 0 = 3 >= 2b + 1 = 3, margin 1: 1-tolerant.
#   forced:  min (C - W) = 3 - 1 = 2 < 3, margin 0: NOT 1-tolerant (the adversary corrupts a
#            full worker: -1 (forced tie) + 2 - 1 = 0, the master's vote ties).

TIE_ROWS = [[0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 2]]


def _forced_local_votes(matrix: np.ndarray, pattern: tuple[int, ...]) -> list[int]:
    """SPEC section 2 local votes, but a tie is broken against the target mu (wrong)."""
    mu = _sign(sum(pattern))
    votes = []
    for row in matrix:
        local = _sign(int(np.dot(row.astype(int), pattern)))
        votes.append(local if local != 0 else -mu)
    return votes


def naive_forced(matrix: np.ndarray, b: int) -> tuple[bool, int]:
    """Brute force over every pattern (not only the minimal layer) and every b-subset.

    Returns (the vote survives every attack, min over patterns of C - W) with ties counted as
    wrong votes.
    """
    n, k = matrix.shape
    survives = True
    worst = n + 1
    for pattern in itertools.product((1, -1), repeat=k):
        mu = _sign(sum(pattern))
        if mu == 0:
            continue
        votes = _forced_local_votes(matrix, pattern)
        correct = sum(v == mu for v in votes)
        wrong = sum(v == -mu for v in votes)
        assert correct + wrong == n  # nobody abstains under the forced rule
        worst = min(worst, correct - wrong)
        for byzantine in itertools.combinations(range(n), b):
            total = sum(v for i, v in enumerate(votes) if i not in byzantine) - b * mu
            if _sign(total) != mu:
                survives = False
    return survives, worst


def test_tie_rules_constant() -> None:
    from fl_election.codes import TIE_RULES

    assert TIE_RULES == ("abstain", "forced")


def test_forced_tie_breaks_hand_example() -> None:
    code = AllocationCode.from_rows(TIE_ROWS, 3)
    abstain = certify(code, 1)
    assert abstain.tolerant and abstain.worst_margin == 1 and abstain.tie_rule == "abstain"
    assert certify(code, 1, tie_rule="abstain") == abstain
    for method in ("enumeration", "milp"):
        forced = certify(code, 1, method=method, tie_rule="forced")
        assert not forced.tolerant and forced.exact, method
        assert forced.worst_margin == 0 and forced.tie_rule == "forced"
        # The witness: one of the two patterns where worker 0 ties; a full worker is taken.
        assert forced.witness_pattern in {(1, -1, 1), (-1, 1, 1)}
        assert forced.witness_byzantine is not None and forced.witness_byzantine[0] in {1, 2, 3}
        votes = _forced_local_votes(code.matrix, forced.witness_pattern)
        total = sum(v for i, v in enumerate(votes) if i not in forced.witness_byzantine) - 1
        assert _sign(total) != 1
        assert "ties forced" in str(forced) and "NOT 1-tolerant" in str(forced)
    assert "ties abstain" in str(abstain)
    sampled = certify(code, 1, method="sampled", samples=200, tie_rule="forced")
    assert not sampled.tolerant and sampled.worst_margin == 0 and sampled.tie_rule == "forced"
    assert certify(code, 1, method="sampled", samples=200).tolerant
    assert max_tolerance(code) == 1
    assert max_tolerance(code, tie_rule="forced") == 0
    assert max_tolerance(code, method="milp", tie_rule="forced") == 0
    assert naive_forced(code.matrix, 1) == (False, 2)
    assert naive_attack(code.matrix, 1) == (True, 3)


def test_forced_attack_analysis_hand_example() -> None:
    code = AllocationCode.from_rows(TIE_ROWS, 3)
    # Abstain: perfectly 1-tolerant, so no Byzantine set ever wins.
    assert wrong_vote_probability(code, 1, exact=True) == 0.0
    # Forced: majority patterns +++, ++-, +-+, -++; a corrupted full worker wins on the two
    # patterns where worker 0 ties; a corrupted worker 0 never wins.
    assert worst_byzantine_set(code, 1, tie_rule="forced") == (1,)
    assert wrong_vote_probability(code, 1, exact=True, tie_rule="forced") == pytest.approx(0.5)
    assert wrong_vote_probability(code, 1, byzantine=(0,), exact=True, tie_rule="forced") == 0.0
    monte_carlo = wrong_vote_probability(code, 1, exact=False, samples=4000, tie_rule="forced")
    assert monte_carlo == pytest.approx(0.5, abs=0.05)


def test_enumerate_violations_forced() -> None:
    from fl_election.certificate import enumerate_violations

    matrix = AllocationCode.from_rows(TIE_ROWS, 3).matrix
    worst, rows = enumerate_violations(matrix, 3, cap=10)
    assert worst == 3 and rows.shape == (0, 3)
    worst, rows = enumerate_violations(matrix, 3, cap=10, tie_rule="forced")
    assert worst == 2
    assert {tuple(int(v) for v in row) for row in rows} == {(1, 0, 1), (0, 1, 1)}


def test_certify_forced_matches_brute_force() -> None:
    rng = np.random.default_rng(2024)
    differs = 0
    for trial in range(120):
        n = int(rng.integers(1, 8))
        k = int(rng.integers(1, 9))
        matrix = (rng.random((n, k)) < rng.uniform(0.2, 0.9)).astype(np.uint8)
        code = AllocationCode(matrix)
        b = int(rng.integers(0, (n + 1) // 2))
        survives, worst = naive_forced(matrix, b)
        cert = certify(code, b, tie_rule="forced")
        assert cert.tolerant == survives, (trial, matrix.tolist(), b)
        assert cert.worst_margin == worst - 2 * b, (trial, matrix.tolist(), b)
        assert max_tolerance(code, tie_rule="forced") == max(0, (worst - 1) // 2)
        milp = certify(code, b, method="milp", tie_rule="forced")
        assert milp.worst_margin == cert.worst_margin and milp.tolerant == cert.tolerant
        if not cert.tolerant:
            assert cert.witness_pattern is not None and cert.witness_byzantine is not None
            assert sum(cert.witness_pattern) > 0 and len(set(cert.witness_byzantine)) == b
            votes = _forced_local_votes(matrix, cert.witness_pattern)
            kept = sum(v for i, v in enumerate(votes) if i not in cert.witness_byzantine)
            assert _sign(kept - b) != 1
        differs += cert.worst_margin != certify(code, b).worst_margin
    # The sample must exercise ties: a test that passes with "forced" read as "abstain" is no test.
    assert differs >= 10


def test_forced_is_never_more_lenient() -> None:
    rng = np.random.default_rng(5)
    for seed in range(20):
        code = bernoulli(9, k=10, redundancy=4.0, seed=seed)
        abstain = certify(code, 1).worst_margin
        forced = certify(code, 1, tie_rule="forced").worst_margin
        assert forced <= abstain
        # Odd loads cannot tie: both rules agree.
        odd = AllocationCode(np.ones((5, int(rng.integers(1, 6)) * 2 + 1), dtype=np.uint8))
        forced_cert, abstain_cert = certify(odd, 2, tie_rule="forced"), certify(odd, 2)
        assert forced_cert.worst_margin == abstain_cert.worst_margin
        assert forced_cert.tie_rule == "forced" and abstain_cert.tie_rule == "abstain"


@pytest.mark.parametrize(
    "call",
    [
        lambda: certify(uncoded(5), 1, tie_rule="majority"),
        lambda: certify(uncoded(5), 1, method="sampled", tie_rule="Forced"),
        lambda: max_tolerance(uncoded(5), tie_rule="coin"),
        lambda: worst_byzantine_set(uncoded(5), 1, tie_rule="coin"),
        lambda: wrong_vote_probability(uncoded(5), 1, tie_rule="coin"),
        lambda: deterministic(7, 2, tie_rule="coin"),
        lambda: create_code("deterministic", n=7, b=2, tie_rule="coin"),
    ],
)
def test_unknown_tie_rule_raises(call: object) -> None:
    with pytest.raises(ValueError, match=r"tie_rule.*abstain, forced"):
        call()  # type: ignore[operator]


def test_unknown_tie_rule_raises_in_search_tools() -> None:
    from fl_election._search import anneal, structured_rows
    from fl_election.certificate import enumerate_violations

    with pytest.raises(ValueError, match=r"abstain, forced"):
        enumerate_violations(uncoded(5).matrix, 3, cap=1, tie_rule="coin")
    with pytest.raises(ValueError, match=r"abstain, forced"):
        structured_rows(7, 2, tie_rule="coin")
    with pytest.raises(ValueError, match=r"abstain, forced"):
        anneal(np.ones((5, 5), dtype=np.uint8), 1, seconds=0.0, tie_rule="coin")


def _assert_forced_code(n: int, b: int) -> AllocationCode:
    code = deterministic(n, b, tie_rule="forced")
    assert (code.n, code.k) == (n, n)
    assert code.name == f"deterministic(n={n}, b={b}, ties=forced)"
    assert code.loads.min() >= 1
    assert np.all(code.loads % 2 == 1), (n, b, code.loads.tolist())  # no worker can tie
    assert certify(code, b, tie_rule="forced").tolerant, (n, b)
    return code


def test_deterministic_forced_every_small_pair_certified() -> None:
    from fl_election._search import structured_rows

    for n in range(3, 16):
        for b in range(1, (n + 1) // 2):
            code = _assert_forced_code(n, b)
            # Certified under the forced rule implies certified under the abstain rule.
            assert certify(code, b).tolerant
            # Never heavier than the forced structured family it falls back on.
            assert code.ones <= sum(len(row) for row in structured_rows(n, b, tie_rule="forced"))
    assert deterministic(9, 0, tie_rule="forced") == uncoded(9)


def test_deterministic_forced_keeps_an_already_forced_tolerant_code() -> None:
    # deterministic(7, 2) (abstain) has odd loads only, so it is forced-tolerant as it stands.
    abstain = deterministic(7, 2)
    assert certify(abstain, 2, tie_rule="forced").tolerant
    assert deterministic(7, 2, tie_rule="forced").ones <= abstain.ones
    # deterministic(5, 1) (abstain) relies on two tied pairs: not forced-tolerant.
    assert not certify(deterministic(5, 1), 1, tie_rule="forced").tolerant
    assert deterministic(5, 1, tie_rule="forced").ones == 19  # the paper's loads 1, 3, 5, 5, 5


def test_deterministic_default_rule_unchanged() -> None:
    assert deterministic(9, 2, tie_rule="abstain") == deterministic(9, 2)
    assert deterministic(9, 2).name == "deterministic(n=9, b=2)"


def test_structured_family_forced_is_tolerant_by_construction() -> None:
    from fl_election._search import structured_rows

    for n in range(3, 16):
        for b in range(0, (n + 1) // 2):
            rows = structured_rows(n, b, tie_rule="forced")
            assert all(len(row) % 2 == 1 or len(row) == n for row in rows)
            code = AllocationCode.from_rows(rows, n)
            assert certify(code, b, tie_rule="forced").tolerant, (n, b)


def test_oddify_and_improve_odd_keep_odd_loads() -> None:
    from fl_election._search import improve_odd, oddify

    start = deterministic(14, 1).matrix  # many load-2 workers
    odd = oddify(start, 1)
    assert np.all(odd.sum(axis=1) % 2 == 1) and odd.sum(axis=1).min() >= 1
    assert not certify(AllocationCode(odd), 1, tie_rule="forced").tolerant
    better = improve_odd(odd, 1)  # repairs, then lightens
    assert better is not None and np.all(better.sum(axis=1) % 2 == 1)
    assert certify(AllocationCode(better), 1, tie_rule="forced").tolerant
    # A repair that would need more ones than allowed gives up.
    assert improve_odd(odd, 1, max_ones=int(odd.sum())) is None
    with pytest.raises(ValueError, match="odd"):
        improve_odd(start, 1)


def test_anneal_forced_returns_forced_tolerant() -> None:
    from fl_election._search import anneal

    start = deterministic(7, 1, tie_rule="forced")
    found = anneal(start.matrix, 1, seconds=0.3, seed=1, tie_rule="forced")
    assert found.sum() <= start.ones
    assert certify(AllocationCode(found), 1, tie_rule="forced").tolerant


@pytest.mark.slow
@pytest.mark.parametrize("n", [16, 17, 18, 19, 20, 21, 22, 23, 24, 25])
def test_deterministic_forced_larger_n_every_b(n: int) -> None:
    for b in range(1, (n + 1) // 2):
        _assert_forced_code(n, b)


def test_deterministic_forced_beyond_search_is_structured() -> None:
    code = deterministic(30, 3, tie_rule="forced")
    assert np.all(code.loads % 2 == 1)
    assert certify(code, 3, method="milp", tie_rule="forced").tolerant
