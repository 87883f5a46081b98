from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import trim_mean

from fl_election import aggregation
from fl_election.aggregation import coordinate_median, trimmed_mean, vote_agreement


def stack_of(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


# --------------------------------------------------------------------------- median


@pytest.mark.parametrize("n", [1, 2, 5, 6, 15])
def test_coordinate_median_matches_numpy(n: int) -> None:
    stack = stack_of(n, 37, seed=n)
    out = coordinate_median(stack)
    assert out.shape == (37,)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.median(stack.astype(np.float64), axis=0), rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    stack=arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    )
)
def test_coordinate_median_matches_numpy_on_any_stack(stack: np.ndarray) -> None:
    np.testing.assert_allclose(coordinate_median(stack), np.median(stack, axis=0), rtol=1e-12)


@pytest.mark.parametrize("n", [4, 7])
def test_aggregators_across_block_boundaries(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr(aggregation, "_BLOCK_COLUMNS", 7)
    stack = stack_of(n, 50, seed=11).astype(np.float64)
    np.testing.assert_allclose(coordinate_median(stack), np.median(stack, axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        trimmed_mean(stack, 0.25), trim_mean(stack, 0.25, axis=0), rtol=1e-12
    )


def test_coordinate_median_by_hand() -> None:
    stack = np.array([[1.0, 10.0], [3.0, -2.0], [2.0, 0.0], [100.0, 5.0], [-50.0, 1.0]])
    np.testing.assert_array_equal(coordinate_median(stack), [2.0, 1.0])


def test_coordinate_median_resists_a_byzantine_minority() -> None:
    # FGM: Byzantines send -g scaled up; the median stays near the honest gradient.
    honest = np.tile(np.array([1.0, -2.0, 0.5]), (7, 1))
    byzantine = np.tile(-1000.0 * np.array([1.0, -2.0, 0.5]), (3, 1))
    np.testing.assert_array_equal(coordinate_median(np.vstack([honest, byzantine])), honest[0])


def test_coordinate_median_allows_inf_but_rejects_nan_rows() -> None:
    stack = np.array([[np.inf, 1.0], [0.0, 2.0], [1.0, 3.0]])
    np.testing.assert_array_equal(coordinate_median(stack), [1.0, 2.0])
    bad = np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 3.0], [2.0, np.nan]])
    with pytest.raises(ValueError, match=r"rows \[1, 3\] contain NaN"):
        coordinate_median(bad)


def test_coordinate_median_promotes_integers() -> None:
    out = coordinate_median(np.array([[1, 2], [4, 3]], dtype=np.int8))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [2.5, 2.5])


@pytest.mark.parametrize(
    ("stack", "message"),
    [
        (np.zeros(3), "2-D"),
        (np.zeros((0, 3)), "at least one"),
        ([[1.0, 2.0]], "numpy array"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_aggregators_reject_bad_stacks(stack: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        coordinate_median(stack)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        trimmed_mean(stack, 0.1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- trimmed mean


@pytest.mark.parametrize(
    ("n", "beta"), [(1, 0.0), (5, 0.0), (5, 0.2), (10, 0.1), (10, 0.45), (15, 0.3)]
)
def test_trimmed_mean_matches_scipy(n: int, beta: float) -> None:
    stack = stack_of(n, 41, seed=n).astype(np.float64)
    out = trimmed_mean(stack, beta)
    assert out.shape == (41,)
    np.testing.assert_allclose(out, trim_mean(stack, beta, axis=0), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    stack=arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    ),
    beta=st.floats(0.0, 0.49),
)
def test_trimmed_mean_matches_a_sort_reference(stack: np.ndarray, beta: float) -> None:
    n = stack.shape[0]
    trim = int(np.floor(beta * n))
    reference = np.sort(stack, axis=0)[trim : n - trim].mean(axis=0)
    np.testing.assert_allclose(trimmed_mean(stack, beta), reference, rtol=1e-9, atol=1e-6)


def test_trimmed_mean_keeps_float32() -> None:
    assert trimmed_mean(stack_of(6, 4), 0.2).dtype == np.float32


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7, float("nan"), True])
def test_trimmed_mean_rejects_bad_beta(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        trimmed_mean(stack_of(5, 3), beta)


def test_trimmed_mean_rejects_nan() -> None:
    stack = stack_of(5, 3).astype(np.float64)
    stack[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        trimmed_mean(stack, 0.2)


# ------------------------------------------------------------------------- agreement


def test_vote_agreement_by_hand() -> None:
    votes = np.array([[1, 1, -1, 0], [-1, -1, 1, 0], [1, 0, -1, 1]], dtype=np.int8)
    result = np.array([1, 1, -1, 0], dtype=np.int8)
    out = vote_agreement(votes, result)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 0.25, 0.5])


def test_vote_agreement_matches_a_loop() -> None:
    rng = np.random.default_rng(3)
    votes = rng.integers(-1, 2, size=(9, 200)).astype(np.int8)
    result = np.sign(votes.astype(np.int64).sum(axis=0)).astype(np.int8)
    expected = [sum(int(v == r) for v, r in zip(row, result, strict=True)) / 200 for row in votes]
    np.testing.assert_allclose(vote_agreement(votes, result), expected)


@pytest.mark.parametrize(
    ("votes", "result", "message"),
    [
        (np.zeros(3, dtype=np.int8), np.zeros(3, dtype=np.int8), "2-D"),
        (np.zeros((2, 3), dtype=np.int8), np.zeros((1, 3), dtype=np.int8), "1-D"),
        (np.zeros((2, 3), dtype=np.int8), np.zeros(4, dtype=np.int8), "4"),
        (np.zeros((2, 3)), np.zeros(3, dtype=np.int8), "integer dtype"),
        (np.zeros((2, 0), dtype=np.int8), np.zeros(0, dtype=np.int8), "at least one coordinate"),
    ],
)
def test_vote_agreement_validates(votes: np.ndarray, result: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vote_agreement(votes, result)
