"""Time budgets of the certificate (issue 13, item 4): a proven bound or "unknown", never a hang.

No test asserts on elapsed seconds: the clock is replaced where a test needs the budget to run
out at a known point, and HiGHS's answer is replaced where a test needs a known dual bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.optimize import OptimizeResult

from fl_election import certificate
from fl_election.certificate import (
    CERTIFICATE_STATUSES,
    DEFAULT_CERTIFY_TIME_BUDGET,
    Certificate,
    certify,
    max_tolerance,
    tolerance_bounds,
)
from fl_election.codes import AllocationCode, bernoulli, create_code, deterministic, uncoded

SPEC_ROWS = [[0], [1, 2, 3], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


def breaks_code(code: AllocationCode, cert: Certificate) -> bool:
    """Re-check a witness with the module's own vote model: the vote is then not ``mu``."""
    assert cert.witness_pattern is not None and cert.witness_byzantine is not None
    pattern = np.array(cert.witness_pattern)
    assert set(pattern.tolist()) <= {1, -1} and pattern.sum() > 0 and len(pattern) == code.k
    assert len(set(cert.witness_byzantine)) == cert.b
    positives = (pattern > 0).astype(np.uint8)[None, :]
    votes = certificate._votes(code.matrix, positives, cert.tie_rule)[0].astype(np.int64)
    honest = np.ones(code.n, dtype=bool)
    honest[list(cert.witness_byzantine)] = False
    total = int(votes[honest].sum()) - cert.b  # the b Byzantines send -mu
    return total <= 0


class SpentAfterFirstRead:
    """A clock whose first reading starts the budget and whose later ones are past it."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return 0.0 if self.reads == 1 else 1e9


def fake_milp(status: int, dual_bound: float | None, x: Any = None) -> Any:
    def solve(*args: Any, **kwargs: Any) -> OptimizeResult:
        assert "time_limit" in kwargs.get("options", {})
        return OptimizeResult(
            status=status, message="fake", x=x, mip_dual_bound=dual_bound, success=status == 0
        )

    return solve


# --------------------------------------------------------------------------- no budget


def test_no_budget_is_exact_and_unchanged() -> None:
    code = AllocationCode.from_rows(SPEC_ROWS, 5)
    one = certify(code, 1)
    assert one.status == "exact" and one.exact and one.tolerant and one.time_budget is None
    assert one.proven_margin_lower_bound == one.worst_margin
    two = certify(code, 2)
    assert two.status == "exact" and two.exact and not two.tolerant
    assert breaks_code(code, two)
    assert max_tolerance(code) == 1
    bounds = tolerance_bounds(code)
    assert (bounds.proven, bounds.at_most, bounds.status) == (1, 1, "exact")
    # A generous budget on a small code finishes: the same certificate, status exact.
    for method in ("enumeration", "milp"):
        free = certify(code, 2, method=method)
        timed = certify(code, 2, method=method, time_budget=600.0)
        assert timed.status == "exact" and timed.time_budget == 600.0
        assert (timed.tolerant, timed.worst_margin, timed.witness_pattern) == (
            free.tolerant,
            free.worst_margin,
            free.witness_pattern,
        )
        assert max_tolerance(code, method=method, time_budget=600.0) == 1


def test_old_constructor_calls_get_a_status() -> None:
    exact = Certificate(1, True, 1, None, None, True, "enumeration")
    sampled = Certificate(1, True, 1, None, None, False, "sampled", 0.95, 10)
    assert exact.status == "exact" and sampled.status == "sampled"
    assert sampled.proven_margin_lower_bound is None
    with pytest.raises(ValueError, match="status"):
        Certificate(1, True, 1, None, None, True, "milp", status="maybe")
    with pytest.raises(ValueError, match="contradicts"):
        Certificate(1, False, 1, None, None, True, "milp", status="unknown")


def test_default_budget_constant() -> None:
    assert DEFAULT_CERTIFY_TIME_BUDGET == 10.0
    assert "DEFAULT_CERTIFY_TIME_BUDGET" in certificate.__all__
    assert set(CERTIFICATE_STATUSES) == {"exact", "bound", "unknown", "sampled"}


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, math.nan, math.inf, -math.inf, "10", True])
def test_bad_budget_raises(bad: Any) -> None:
    code = uncoded(5)
    with pytest.raises(ValueError, match="time_budget"):
        certify(code, 1, time_budget=bad)
    with pytest.raises(ValueError, match="time_budget"):
        certify(code, 1, method="sampled", samples=10, time_budget=bad)
    with pytest.raises(ValueError, match="time_budget"):
        max_tolerance(code, time_budget=bad)
    with pytest.raises(ValueError, match="time_budget"):
        tolerance_bounds(code, time_budget=bad)


# --------------------------------------------------------------------------- enumeration


def test_enumeration_stops_at_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # k = 24, n = 25: about 15 chunks; the clock says the budget is spent after the first.
    code = deterministic(25, 6)
    assert certify(code, 6).tolerant  # exact: every chunk, no witness anywhere
    clock = SpentAfterFirstRead()
    monkeypatch.setattr(certificate, "_clock", clock)
    cert = certify(code, 6, method="enumeration", time_budget=1.0)
    assert clock.reads == 2  # the start, then one look between the first and second chunk
    assert cert.status == "unknown" and not cert.exact and not cert.tolerant
    assert cert.witness_pattern is None and cert.proven_margin_lower_bound is None
    assert cert.worst_margin >= 1  # the smallest margin of the chunk it saw
    text = str(cert)
    assert "UNKNOWN" in text and "NOT" not in text and "exact" not in text


def test_enumeration_witness_under_budget_is_a_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    code = uncoded(25)  # every minimal-majority pattern has C - W = 1: b = 1 breaks it
    clock = SpentAfterFirstRead()
    monkeypatch.setattr(certificate, "_clock", clock)
    cert = certify(code, 1, method="enumeration", time_budget=1.0)
    assert clock.reads == 2
    assert cert.status == "bound" and not cert.tolerant and not cert.exact
    assert cert.worst_margin < 1 and breaks_code(code, cert)
    assert "PROVEN BY WITNESS" in str(cert)


def test_enumeration_budget_with_forced_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    code = bernoulli(25, k=24, redundancy=4.0, seed=3)
    monkeypatch.setattr(certificate, "_clock", SpentAfterFirstRead())
    cert = certify(code, 5, method="enumeration", tie_rule="forced", time_budget=1.0)
    assert cert.status in ("bound", "unknown") and not cert.exact
    if cert.status == "bound":
        assert not cert.tolerant and breaks_code(code, cert)


def test_max_tolerance_cut_short_enumeration_proves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = deterministic(25, 6)
    monkeypatch.setattr(certificate, "_clock", SpentAfterFirstRead())
    bounds = tolerance_bounds(code, method="enumeration", time_budget=1.0)
    assert bounds.status == "unknown" and bounds.proven == 0 and bounds.at_most >= 6
    assert "UNKNOWN" in str(bounds)
    monkeypatch.setattr(certificate, "_clock", SpentAfterFirstRead())
    assert max_tolerance(code, method="enumeration", time_budget=1.0) == 0


def test_sampled_stops_drawing_at_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    code = AllocationCode.from_rows(SPEC_ROWS, 5)
    monkeypatch.setattr(certificate, "_CHUNK_ELEMENTS", 50)  # chunks of 10 patterns
    monkeypatch.setattr(certificate, "_clock", SpentAfterFirstRead())
    cert = certify(code, 1, method="sampled", samples=1000, time_budget=1.0)
    assert cert.status == "sampled" and cert.samples == 10 and cert.time_budget == 1.0


# --------------------------------------------------------------------------- MILP


def test_tiny_budget_on_a_large_code_never_claims_exact() -> None:
    code = create_code("bernoulli", n=63, k=30, redundancy=25, seed=0)
    for ties in ("forced", "abstain"):
        cert = certify(code, 3, tie_rule=ties, time_budget=0.05)
        assert cert.method == "milp"
        assert cert.status in ("bound", "unknown") and not cert.exact, str(cert)
        if cert.status == "unknown":
            assert not cert.tolerant and "UNKNOWN" in str(cert) and "NOT" not in str(cert)
        elif not cert.tolerant:
            assert breaks_code(code, cert)
        else:
            assert cert.proven_margin_lower_bound is not None
            assert cert.proven_margin_lower_bound >= 1
        bounds = tolerance_bounds(code, tie_rule=ties, time_budget=0.05)
        assert bounds.status in ("bound", "unknown") and bounds.proven <= bounds.at_most


def test_milp_gets_the_remaining_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize

    seen: list[float] = []
    real = scipy.optimize.milp

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["options"]["time_limit"])
        return real(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "milp", spy)
    cert = certify(deterministic(11, 2), 2, method="milp", time_budget=30.0)
    assert cert.status == "exact" and cert.tolerant
    assert len(seen) == 1 and 0 < seen[0] <= 30.0


def test_milp_dual_bound_proves_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize

    code = deterministic(11, 2)
    exact = certify(code, 2, method="milp")
    true_min = exact.worst_margin + 4  # min (C - W)
    # The solver stops at its time limit with no solution and a bound just under the minimum.
    monkeypatch.setattr(scipy.optimize, "milp", fake_milp(1, true_min - 0.5))
    cert = certify(code, 2, method="milp", time_budget=1.0)
    assert cert.status == "bound" and cert.tolerant and not cert.exact
    assert cert.proven_margin_lower_bound == exact.worst_margin
    assert cert.witness_pattern is None and "PROVEN BOUND" in str(cert)
    # Floating-point noise above an integer does not round the bound up past it.
    monkeypatch.setattr(scipy.optimize, "milp", fake_milp(1, true_min + 1e-9))
    assert certify(code, 2, method="milp", time_budget=1.0).proven_margin_lower_bound == (
        exact.worst_margin
    )
    # b = 3 asks for a margin the bound does not give: unknown, not "NOT tolerant".
    monkeypatch.setattr(scipy.optimize, "milp", fake_milp(1, true_min - 0.5))
    high = certify(code, 3, method="milp", time_budget=1.0)
    assert high.status in ("unknown", "bound")
    if high.status == "unknown":
        assert not high.tolerant and high.witness_pattern is None
    bounds = tolerance_bounds(code, method="milp", time_budget=1.0)
    assert bounds.proven == max_tolerance(code) and bounds.status in ("bound", "unknown")


def test_milp_without_bound_or_solution_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize

    code = deterministic(11, 2)
    for bound in (None, -math.inf, math.nan):
        monkeypatch.setattr(scipy.optimize, "milp", fake_milp(1, bound))
        cert = certify(code, 2, method="milp", time_budget=1.0)
        assert cert.status == "unknown" and not cert.tolerant and not cert.exact
        assert cert.proven_margin_lower_bound is None and cert.witness_pattern is None
        assert "UNKNOWN" in str(cert)
        assert max_tolerance(code, method="milp", time_budget=1.0) == 0


def test_milp_incumbent_witness_is_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize

    code = uncoded(9)  # k = 9, t = 5: C - W = 1 on every layer pattern
    x = np.zeros(9 + 2 * 9)
    x[:5] = 1.0
    # The solver's objective is not trusted: only the pattern x[:k] matters.
    monkeypatch.setattr(scipy.optimize, "milp", fake_milp(1, -9.0, x))
    cert = certify(code, 1, method="milp", time_budget=1.0)
    assert cert.status == "bound" and not cert.tolerant
    assert cert.worst_margin == 1 - 2 and breaks_code(code, cert)
    # The same pattern proves nothing against b = 0 (margin 1): unknown.
    zero = certify(code, 0, method="milp", time_budget=1.0)
    assert zero.status == "unknown" and zero.worst_margin == 1


def test_milp_other_failures_still_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.optimize

    monkeypatch.setattr(scipy.optimize, "milp", fake_milp(4, None))
    with pytest.raises(RuntimeError, match="MILP certificate failed"):
        certify(deterministic(11, 2), 2, method="milp", time_budget=1.0)
