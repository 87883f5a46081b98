"""Exact Byzantine-tolerance certificates and attack analysis for allocation codes.

Implements the tolerance condition of Sohn, Han, Choi, Moon, "Election Coding for Distributed
Learning: Protecting SignSGD against Byzantine Attacks", NeurIPS 2020 (arXiv:1910.06093), as
distilled in the project SPEC (section 2).

For one coordinate, partition ``j`` carries the sign ``m_j`` in {+1, -1}; worker ``i`` sends its
local majority ``c_i = sign(G_i . m)`` (a tie gives 0, the worker abstains) and the master takes
``v = sign(sum_i c_i)``. The target is ``mu = sign(sum_j m_j)``; by symmetry only patterns with
``mu = +1`` are checked. With ``C`` the number of workers whose vote equals ``mu`` and ``W`` the
number whose vote is ``-mu``, the worst ``b`` colluding Byzantines take over ``b`` correct voters
and send ``-mu``, so the vote survives iff ``C - W >= 2b + 1``. A code is *perfectly
b-tolerant* iff that holds for every pattern.

Conventions used throughout this module:

* ``worst_margin = min over patterns of (C - W - 2b)``; the code is b-tolerant iff
  ``worst_margin >= 1``.
* For even ``k`` the patterns with ``sum(m) = 0`` have no defined target and are skipped.
* ``tie_rule`` (:data:`TIE_RULES`) says what a worker whose local vote is a tie (``G_i . m = 0``:
  an even load split evenly, or no partition at all) sends. ``"abstain"``: 0, counted neither
  correct nor wrong (the 2-bit uplink of the SPEC, section 1). ``"forced"``: the worker breaks
  the tie by a local rule (for a 1-bit uplink, e.g. the sign of its summed float gradient) that
  the certificate does not trust, so a tie counts as a *wrong* vote (``W``). That is the
  adversary's worst case and it is attained: making every positive partition gradient tiny and
  every negative one large turns every tie wrong at once, consistently for workers that hold
  the same partitions. Workers with odd loads never tie, so both rules agree on them.
* ``C - W`` is monotone non-decreasing in every ``m_j`` under both tie rules (``G`` is
  non-negative and each local vote is a non-decreasing function of ``G_i . m``), so its minimum
  over ``{m : sum(m) > 0}`` is attained on the *minimal majority layer*: the patterns with
  exactly ``t = k // 2 + 1`` entries ``+1``. Enumeration, the integer program and the sampled
  estimate all work on that layer, which is exact and ``C(k, t) / 2^(k-1)`` times smaller.
* ``time_budget`` (seconds, ``None`` = no limit) bounds :func:`certify`,
  :func:`max_tolerance` and :func:`tolerance_bounds`; a run passes
  :data:`DEFAULT_CERTIFY_TIME_BUDGET`. At the budget the answer is what is *proven*: a
  breaking pattern already found (not tolerant), the integer program's dual bound (tolerant
  when ``ceil(bound) - 2b >= 1``), or else ``status="unknown"``. :attr:`Certificate.status`
  says which (:data:`CERTIFICATE_STATUSES`).
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fl_election.codes import AllocationCode

__all__ = [
    "CERTIFICATE_STATUSES",
    "CERTIFY_METHODS",
    "DEFAULT_CERTIFY_TIME_BUDGET",
    "TIE_RULES",
    "Certificate",
    "ToleranceBounds",
    "certify",
    "enumerate_violations",
    "max_tolerance",
    "minimal_majority_layer",
    "tolerance_bounds",
    "worst_byzantine_set",
    "wrong_vote_probability",
]

CertifyMethod = Literal["auto", "enumeration", "milp", "sampled"]
CERTIFY_METHODS: tuple[str, ...] = ("auto", "enumeration", "milp", "sampled")

TieRule = Literal["abstain", "forced"]
#: What a worker with a tied local vote sends, as far as the certificate is concerned:
#: ``"abstain"`` (0, neither correct nor wrong) or ``"forced"`` (broken by a local rule the
#: certificate does not trust, so counted as a wrong vote).
TIE_RULES: tuple[str, ...] = ("abstain", "forced")

#: ``method="auto"`` enumerates when ``C(k, k//2+1) * n`` is at most this many vote evaluations
#: (k = 24 with n = 25 is 6.2e7; k = 26 with n = 26 is 2.5e8), and solves a MILP beyond.
ENUMERATION_LIMIT = 300_000_000
#: Elements (pattern x worker) held in memory at once by the chunked enumeration.
_CHUNK_ELEMENTS = 1 << 22
#: Confidence attached to a sampled certificate that found no violation (rule of three).
SAMPLED_CONFIDENCE = 0.95
#: Default number of sampled patterns for ``method="sampled"``.
DEFAULT_SAMPLES = 100_000
#: Time budget (seconds) that callers outside the offline tools (the strategy, the run
#: config, the quorum rule) should pass as ``time_budget`` to :func:`certify`,
#: :func:`max_tolerance` and :func:`tolerance_bounds`, so that no certificate blocks a run
#: for minutes. ``None`` (no limit) remains the default of those functions.
DEFAULT_CERTIFY_TIME_BUDGET = 10.0
#: Values of :attr:`Certificate.status`: ``"exact"`` (every pattern covered), ``"bound"``
#: (time budget hit, but a proven bound or a breaking pattern decides the verdict),
#: ``"unknown"`` (time budget hit, undecided) and ``"sampled"`` (a Monte-Carlo estimate).
CERTIFICATE_STATUSES: tuple[str, ...] = ("exact", "bound", "unknown", "sampled")
#: Clock of the time budget (a module attribute so that tests can replace it).
_clock = time.monotonic
#: Slack when rounding the solver's floating-point dual bound up to an integer.
_BOUND_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Certificate:
    """Result of :func:`certify`: is a code perfectly ``b``-tolerant, and why (not).

    Parameters
    ----------
    b : int
        Number of Byzantine workers checked against.
    tolerant : bool
        ``True`` iff ``C - W >= 2b + 1`` for every checked sign pattern with ``mu = +1``
        (status ``"exact"``), is proven so by a bound (``"bound"``), or no sampled pattern broke
        the code (``"sampled"``). Always ``False`` when the status is ``"unknown"``, which is
        *not* a proof of non-tolerance.
    worst_margin : int
        ``min over patterns of (C - W - 2b)``; tolerant iff ``worst_margin >= 1``. When the
        status is not ``"exact"`` this is the minimum over the patterns examined only (sampled,
        enumerated before the time budget ran out, or the integer program's best solution): an
        upper bound on the true value, attained by ``witness_pattern`` when that is set.
    witness_pattern : tuple of int or None
        A pattern ``m`` in ``{+1, -1}^k`` with ``sum(m) > 0`` that breaks the code (``None`` when
        tolerant or unknown). It attains ``worst_margin``.
    witness_byzantine : tuple of int or None
        The ``b`` workers the adversary takes over for ``witness_pattern`` (sorted): workers whose
        local vote equals ``mu``, then (only if fewer than ``b`` vote ``mu``) abstainers, then
        wrong voters. ``None`` when tolerant or unknown.
    exact : bool
        ``True`` when every pattern was covered (enumeration or MILP, status ``"exact"``),
        ``False`` otherwise. A certificate with a witness proves non-tolerance all the same.
    method : str
        ``"enumeration"``, ``"milp"`` or ``"sampled"``.
    confidence : float or None (default: None)
        Sampled only: confidence of the statement "fewer than ``3 / samples`` of the
        minimal-majority patterns break the code" when no violation was found.
    samples : int or None (default: None)
        Sampled only: number of patterns drawn (fewer than asked when the time budget ran out).
    tie_rule : str (default: "abstain")
        The vote model checked (:data:`TIE_RULES`): ``"abstain"`` (a tied worker sends 0) or
        ``"forced"`` (a tied worker's forced vote is counted as wrong).
    status : str (default: "")
        One of :data:`CERTIFICATE_STATUSES`. ``"exact"``: every pattern covered. ``"bound"``:
        the time budget ran out, but the verdict is proven anyway, by
        ``proven_margin_lower_bound >= 1`` (tolerant) or by a witness (not tolerant).
        ``"unknown"``: the time budget ran out undecided (``tolerant`` is ``False``).
        ``"sampled"``: a Monte-Carlo estimate. The empty default means ``"exact"`` when
        ``exact`` is true, else ``"sampled"`` (what every certificate was before time budgets).
    proven_margin_lower_bound : int or None (default: None)
        A proven lower bound on the true ``min (C - W - 2b)`` over all patterns: equal to
        ``worst_margin`` when exact; the integer program's dual bound, rounded up, minus ``2b``
        when its time budget ran out; ``None`` when nothing is proven (sampled, enumeration cut
        short, or the solver had no bound yet).
    time_budget : float or None (default: None)
        The time budget (seconds) the certificate was computed under; ``None`` for no limit.
    """

    b: int
    tolerant: bool
    worst_margin: int
    witness_pattern: tuple[int, ...] | None
    witness_byzantine: tuple[int, ...] | None
    exact: bool
    method: str
    confidence: float | None = None
    samples: int | None = None
    tie_rule: str = "abstain"
    status: str = ""
    proven_margin_lower_bound: int | None = None
    time_budget: float | None = None

    def __post_init__(self) -> None:
        """Fill in the default status and check that it agrees with ``exact``."""
        if not self.status:
            object.__setattr__(self, "status", "exact" if self.exact else "sampled")
        if self.status not in CERTIFICATE_STATUSES:
            raise ValueError(
                f"unknown certificate status {self.status!r}; "
                f"valid: {', '.join(CERTIFICATE_STATUSES)}"
            )
        if self.exact != (self.status == "exact"):
            raise ValueError(f"exact = {self.exact} contradicts status {self.status!r}")
        if self.status == "unknown" and self.tolerant:
            raise ValueError("an 'unknown' certificate cannot be tolerant")

    def __str__(self) -> str:
        """Return a plain-language summary of the certificate, saying how it was decided."""
        verdict = "perfectly" if self.tolerant else "NOT"
        ties = _TIE_RULE_TEXT.get(self.tie_rule, f"ties {self.tie_rule}")
        budget = f"{self.time_budget:g} s" if self.time_budget is not None else "no limit"
        lines = []
        if self.status == "exact":
            lines.append(
                f"{verdict} {self.b}-tolerant (exact, {self.method}, {ties}); "
                f"worst margin C - W - 2b = {self.worst_margin} (needs >= 1)"
            )
        elif self.status == "bound" and self.tolerant:
            lines.append(
                f"perfectly {self.b}-tolerant (PROVEN BOUND, {self.method}, {ties}; time budget "
                f"{budget} ran out before the exact worst margin was found); worst margin "
                f"C - W - 2b >= {self.proven_margin_lower_bound} (needs >= 1), smallest found "
                f"{self.worst_margin}"
            )
        elif self.status == "bound":
            lines.append(
                f"NOT {self.b}-tolerant (PROVEN BY WITNESS, {self.method}, {ties}; time budget "
                f"{budget} ran out before the exact worst margin was found); margin "
                f"C - W - 2b of the witness = {self.worst_margin}"
            )
        elif self.status == "unknown":
            proven = self.proven_margin_lower_bound
            lower = f">= {proven}" if proven is not None else "unbounded below (no proof yet)"
            lines.append(
                f"UNKNOWN whether {self.b}-tolerant ({self.method}, {ties}): the time budget "
                f"{budget} ran out undecided; no breaking pattern found, smallest margin "
                f"C - W - 2b found = {self.worst_margin}, proven worst margin {lower} "
                "(needs >= 1)"
            )
        elif self.tolerant:
            bound = 3.0 / self.samples if self.samples else float("nan")
            conf = self.confidence if self.confidence is not None else SAMPLED_CONFIDENCE
            lines.append(
                f"SAMPLED ESTIMATE, not a proof: no violation of {self.b}-tolerance ({ties}) in "
                f"{self.samples} random minimal-majority patterns; with {conf:.0%} confidence "
                f"fewer than {bound:.2g} of those patterns break the code; smallest sampled "
                f"margin C - W - 2b = {self.worst_margin}"
            )
        else:
            lines.append(
                f"NOT {self.b}-tolerant ({ties}; sampled search found a breaking pattern, which "
                f"is a proof); smallest sampled margin C - W - 2b = {self.worst_margin}"
            )
        if self.witness_pattern is not None:
            signs = "".join("+" if s > 0 else "-" for s in self.witness_pattern)
            lines.append(f"  witness pattern m = {signs}")
            lines.append(f"  Byzantine workers = {list(self.witness_byzantine or ())}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ToleranceBounds:
    """Result of :func:`tolerance_bounds`: what is proven about a code's maximum tolerance.

    Parameters
    ----------
    proven : int
        Largest ``b`` proven perfectly ``b``-tolerant (0 when none is: also when even ``b = 0``
        fails or nothing was proven before the time budget ran out).
    at_most : int
        Largest ``b`` not disproven by a pattern examined (``>= proven``; 0 when even ``b = 0``
        is disproven). The true maximum tolerance lies in ``[proven, at_most]``.
    status : str
        ``"exact"`` (every pattern covered: ``proven == at_most`` is the maximum tolerance),
        ``"bound"`` (time budget hit, but ``proven == at_most`` all the same) or ``"unknown"``
        (time budget hit and ``proven < at_most``).
    method : str
        ``"enumeration"`` or ``"milp"``.
    time_budget : float or None (default: None)
        The time budget (seconds) used; ``None`` for no limit.
    """

    proven: int
    at_most: int
    status: str
    method: str
    time_budget: float | None = None

    def __str__(self) -> str:
        """Return a plain-language summary."""
        if self.status == "exact":
            return f"maximum tolerance {self.proven} (exact, {self.method})"
        budget = f"{self.time_budget:g} s" if self.time_budget is not None else "no limit"
        if self.status == "bound":
            return (
                f"maximum tolerance {self.proven} (PROVEN BOUND, {self.method}; time budget "
                f"{budget} ran out)"
            )
        return (
            f"maximum tolerance UNKNOWN in [{self.proven}, {self.at_most}]: proven "
            f"{self.proven}-tolerant only ({self.method}; time budget {budget} ran out)"
        )


_TIE_RULE_TEXT = {
    "abstain": "ties abstain",
    "forced": "ties forced, counted wrong",
}


# --------------------------------------------------------------------------- helpers


def _check_tie_rule(tie_rule: str) -> str:
    if not isinstance(tie_rule, str) or tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie_rule {tie_rule!r}; valid: {', '.join(TIE_RULES)}")
    return tie_rule


def _check_time_budget(time_budget: float | None) -> float | None:
    """Return the budget as a float; ``None`` passes. Raise unless finite and positive."""
    if time_budget is None:
        return None
    if isinstance(time_budget, bool) or not isinstance(time_budget, numbers.Real):
        raise ValueError(f"time_budget must be a number of seconds or None, got {time_budget!r}")
    value = float(time_budget)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"time_budget must be finite and > 0 seconds, got {time_budget!r}")
    return value


def _deadline(time_budget: float | None) -> float | None:
    return None if time_budget is None else _clock() + time_budget


def _as_matrix(code: AllocationCode) -> NDArray[np.uint8]:
    return code.matrix


def _check_b(b: int, n: int) -> int:
    try:
        b_int = operator.index(b)
    except TypeError:
        raise ValueError(f"b must be an integer, got {b!r}") from None
    if isinstance(b, bool) or b_int < 0 or 2 * b_int >= n:
        raise ValueError(f"b must satisfy 0 <= b < n/2 (n = {n}), got b = {b!r}")
    return b_int


def _threshold_positives(k: int) -> int:
    """Smallest number of +1 entries giving ``sum(m) > 0`` (the minimal majority layer)."""
    return k // 2 + 1


def _votes(
    matrix: NDArray[np.uint8], positives: NDArray[np.uint8], tie_rule: str = "abstain"
) -> NDArray[np.int8]:
    """Local votes ``c_i`` for 0/1 positive-indicator rows ``positives`` (shape ``(N, k)``).

    The rows must have ``mu = +1`` (more than ``k / 2`` positives): under ``tie_rule="forced"``
    a tie becomes ``-1 = -mu``, the wrong vote. Returns an ``(N, n)`` int8 array in
    {-1, 0, +1} ({-1, +1} when forced).
    """
    hits = positives.astype(np.float32) @ matrix.T.astype(np.float32)
    loads = matrix.sum(axis=1).astype(np.float32)
    local = 2.0 * hits - loads
    if tie_rule == "forced":
        forced: NDArray[np.int8] = np.where(local > 0, 1, -1).astype(np.int8)
        return forced
    votes: NDArray[np.int8] = np.sign(local).astype(np.int8)
    return votes


def minimal_majority_layer(k: int) -> NDArray[np.uint8]:
    """All 0/1 indicators of ``+1`` positions on the minimal majority layer.

    Parameters
    ----------
    k : int
        Number of partitions.

    Returns
    -------
    numpy.ndarray
        ``(C(k, k//2+1), k)`` uint8 array; row ``r`` marks the ``+1`` entries of a pattern with
        exactly ``k // 2 + 1`` positives (the hardest patterns with ``mu = +1``).
    """
    return _layer_cached(k).copy()


@lru_cache(maxsize=8)
def _layer_cached(k: int) -> NDArray[np.uint8]:
    t = _threshold_positives(k)
    combos = np.array(list(itertools.combinations(range(k), t)), dtype=np.intp)
    out = np.zeros((len(combos), k), dtype=np.uint8)
    out[np.arange(len(combos))[:, None], combos] = 1
    return out


@lru_cache(maxsize=16)
def _bit_table(width: int) -> tuple[NDArray[np.uint8], NDArray[np.intp]]:
    """All ``2**width`` bit vectors (row ``v`` is the binary expansion of ``v``) and popcounts."""
    values = np.arange(1 << width, dtype=np.int64)
    bits = ((values[:, None] >> np.arange(width)) & 1).astype(np.uint8)
    return bits, bits.sum(axis=1).astype(np.intp)


def _pattern_from_positives(positives: NDArray[np.uint8]) -> tuple[int, ...]:
    return tuple(int(v) for v in (2 * positives.astype(np.int64) - 1))


def _byzantine_for(votes: NDArray[np.int8], b: int, loads: NDArray[np.int64]) -> tuple[int, ...]:
    """Pick the ``b`` workers the worst adversary takes over: correct voters, heavier first.

    ``votes`` are the local votes under the certificate's tie rule (no 0 when forced).
    """
    order = sorted(range(len(votes)), key=lambda i: (-int(votes[i]), -int(loads[i]), i))
    return tuple(sorted(order[:b]))


# --------------------------------------------------------------------------- exact engines


def _enumerate_min(
    matrix: NDArray[np.uint8],
    threshold: int | None = None,
    cap: int = 0,
    tie_rule: str = "abstain",
) -> tuple[int, NDArray[np.uint8]]:
    """Exact ``min (C - W)`` over the minimal majority layer, by chunked vectorized enumeration.

    The ``k`` positions are split into a low half and a high half; for every split of the ``t``
    positives between the halves, the per-worker hit counts of both halves are tabulated once and
    combined by broadcasting, so the work is ``C(k, t) * n`` small-integer additions.

    Returns the minimum and the 0/1 positives indicator of a minimizing pattern; with a
    ``threshold``, returns instead the minimum and up to ``cap`` violating patterns (rows).
    Under ``tie_rule="forced"`` a worker votes ``+1`` iff ``2 hits - load > 0``, else ``-1``,
    so ``C - W = 2 * #{positive} - n``.
    """
    best, best_pos, found, _ = _enumerate_scan(matrix, threshold, cap, tie_rule, None)
    if threshold is not None:
        k = matrix.shape[1]
        if best >= threshold:
            return best, np.zeros((0, k), dtype=np.uint8)
        rows = np.concatenate([best_pos[None, :], *found])
        return best, rows[: max(cap, 1)].astype(np.uint8)
    return best, best_pos


def _enumerate_scan(
    matrix: NDArray[np.uint8],
    threshold: int | None,
    cap: int,
    tie_rule: str,
    deadline: float | None,
) -> tuple[int, NDArray[np.uint8], list[NDArray[np.uint8]], bool]:
    """Run the loop of :func:`_enumerate_min`, stopping between chunks past ``deadline``.

    Returns the smallest ``C - W`` seen, the positives of a pattern attaining it, the blocks
    of violating rows (with a ``threshold``) and whether every pattern was covered. At least
    one chunk is always evaluated, and the clock is read only between chunks.
    """
    forced = tie_rule == "forced"
    n, k = matrix.shape
    t = _threshold_positives(k)
    low_width = k // 2
    high_width = k - low_width
    low_bits, low_pop = _bit_table(low_width)
    high_bits, high_pop = _bit_table(high_width)
    loads = matrix.sum(axis=1).astype(np.int64)
    wide = 2 * k + int(loads.max()) >= 127
    dtype = np.int16 if wide else np.int8
    # 2 * hits - load, split as (2 * low_hits - load) + 2 * high_hits.
    low_part = (
        2 * (low_bits.astype(np.int64) @ matrix[:, :low_width].T.astype(np.int64)) - loads
    ).astype(dtype)
    high_part = (
        2 * (high_bits.astype(np.int64) @ matrix[:, low_width:].T.astype(np.int64))
    ).astype(dtype)
    best = n + 1
    best_pos: NDArray[np.uint8] = np.ones(k, dtype=np.uint8)
    found: list[NDArray[np.uint8]] = []  # blocks of violating rows
    found_rows = 0
    started = False
    for high_count in range(max(0, t - low_width), min(high_width, t) + 1):
        high_idx = np.flatnonzero(high_pop == high_count)
        low_idx = np.flatnonzero(low_pop == t - high_count)
        if high_idx.size == 0 or low_idx.size == 0:
            continue
        low_block = low_part[low_idx]
        rows = max(1, _CHUNK_ELEMENTS // (low_idx.size * n))
        for start in range(0, high_idx.size, rows):
            if started and deadline is not None and _clock() >= deadline:
                return best, best_pos, found, False
            started = True
            chunk = high_idx[start : start + rows]
            local = high_part[chunk][:, None, :] + low_block[None, :, :]
            if forced:
                margin = 2 * (local > 0).sum(axis=2, dtype=np.int32) - n
            else:
                margin = np.sign(local).sum(axis=2, dtype=np.int32)
            flat = int(np.argmin(margin))
            value = int(margin.flat[flat])
            if value < best:
                best = value
                hi_row, lo_row = divmod(flat, low_idx.size)
                best_pos = np.concatenate(
                    [low_bits[low_idx[lo_row]], high_bits[chunk[hi_row]]]
                ).astype(np.uint8)
            if threshold is not None and value < threshold and found_rows < cap:
                hi_rows, lo_rows = np.nonzero(margin < threshold)
                take = slice(0, cap - found_rows)
                block = np.concatenate(
                    [low_bits[low_idx[lo_rows[take]]], high_bits[chunk[hi_rows[take]]]], axis=1
                )
                found.append(block)
                found_rows += len(block)
    return best, best_pos, found, True


def enumerate_violations(
    matrix: NDArray[np.uint8], threshold: int, cap: int, *, tie_rule: str = "abstain"
) -> tuple[int, NDArray[np.uint8]]:
    """Exact ``min (C - W)`` and up to ``cap`` minimal-layer patterns with ``C - W < threshold``.

    Used by the offline code search as a lazy-constraint oracle.

    Parameters
    ----------
    matrix : numpy.ndarray
        ``(n, k)`` 0/1 allocation matrix.
    threshold : int
        Patterns with ``C - W < threshold`` are violations (``2b + 1`` for b-tolerance).
    cap : int
        Maximum number of violating patterns returned.
    tie_rule : str (default: "abstain")
        ``"abstain"`` or ``"forced"`` (a tie counts as a wrong vote); see :data:`TIE_RULES`.

    Returns
    -------
    tuple
        The exact minimum of ``C - W`` and a ``(r, k)`` uint8 array of positive indicators of
        violating patterns (``r <= cap``; the minimizing pattern is always included when it
        violates).
    """
    return _enumerate_min(matrix, threshold, cap, _check_tie_rule(tie_rule))


@dataclass(frozen=True)
class _MinSearch:
    """What one (possibly time-limited) search for ``min (C - W)`` established.

    ``upper`` is the smallest ``C - W`` of the patterns examined, attained by ``positives``;
    ``lower`` a proven lower bound on the true minimum (``None`` when nothing is proven);
    ``complete`` says every pattern was covered (then ``lower == upper`` is the minimum).
    """

    upper: int
    positives: NDArray[np.uint8]
    lower: int | None
    complete: bool
    method: str


def _milp_min(
    matrix: NDArray[np.uint8], tie_rule: str = "abstain"
) -> tuple[int, NDArray[np.uint8]]:
    """Exact ``min (C - W)`` over the minimal majority layer as a 0/1 integer program (HiGHS).

    Variables: ``x_j`` (partition ``j`` is ``+1``), ``p_i`` (worker ``i`` votes ``+1``),
    ``q_i`` (worker ``i`` votes ``-1``). With ``s_i = 2 G_i . x - L_i``:
    ``sum x = t``; ``s_i <= L_i p_i`` (a positive sum forces ``p_i``); ``s_i >= -L_i q_i``
    (a negative sum forces ``q_i``); ``q_i = 1 => s_i <= -1``; ``p_i + q_i <= 1``.
    Minimizing ``sum p - sum q`` yields exactly ``min_x (C - W)``, since for a fixed ``x`` the
    constraints only allow ``p_i >= [s_i > 0]`` and ``q_i <= [s_i < 0]``.

    Under ``tie_rule="forced"`` a tie votes ``-1``: the constraints become ``sum x = t``,
    ``s_i <= L_i p_i`` and ``p_i + q_i = 1`` (so ``q_i = 1`` is allowed whenever ``s_i <= 0``,
    tie included), and the same objective equals ``2 sum p - n`` with ``p_i >= [s_i > 0]``.
    """
    found = _milp_search(matrix, tie_rule, None)
    return found.upper, found.positives


def _milp_search(matrix: NDArray[np.uint8], tie_rule: str, deadline: float | None) -> _MinSearch:
    """Solve the integer program of :func:`_milp_min`, within ``deadline`` when one is given.

    At the deadline HiGHS stops (``options={"time_limit": ...}``, scipy status 1). Then its
    proven dual bound (``mip_dual_bound``, a lower bound on the objective, which equals
    ``min (C - W)``), rounded up, is the ``lower`` bound, and its best solution, if any, is the
    pattern examined (its ``C - W`` recomputed from the pattern, never the objective).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    n, k = matrix.shape
    t = _threshold_positives(k)
    g = matrix.astype(np.float64)
    loads = g.sum(axis=1)
    zeros = np.zeros((n, n))
    eye = np.eye(n)
    rows = [
        np.hstack([np.ones((1, k)), np.zeros((1, 2 * n))]),
        np.hstack([2 * g, -loads[:, None] * eye, zeros]),
        np.hstack([2 * g, zeros, loads[:, None] * eye]),
        np.hstack([2 * g, zeros, (loads + 1)[:, None] * eye]),
        np.hstack([np.zeros((n, k)), eye, eye]),
    ]
    lower = np.concatenate(
        [[t], np.full(n, -np.inf), loads, np.full(n, -np.inf), np.full(n, -np.inf)]
    )
    upper = np.concatenate([[t], loads, np.full(n, np.inf), 2 * loads, np.ones(n)])
    if tie_rule == "forced":
        # Keep the first two blocks and p + q = 1; drop the rows that tie q to s < 0.
        keep = np.r_[0 : 1 + n, 1 + 3 * n : 1 + 4 * n]
        rows = [np.vstack(rows)[keep]]
        lower = np.concatenate([lower[: 1 + n], np.ones(n)])
        upper = upper[keep]
    cost = np.concatenate([np.zeros(k), np.ones(n), -np.ones(n)])
    options: dict[str, float] = {}
    if deadline is not None:
        options["time_limit"] = max(deadline - _clock(), 1e-3)
    result = milp(
        cost,
        constraints=LinearConstraint(np.vstack(rows), lower, upper),
        integrality=np.ones(k + 2 * n),
        bounds=Bounds(0, 1),
        options=options,
    )
    timed_out = deadline is not None and result.status == 1
    if not timed_out and (result.status != 0 or result.x is None):
        raise RuntimeError(f"MILP certificate failed: {result.message}")
    positives: NDArray[np.uint8] | None = None
    if result.x is not None:
        positives = np.round(result.x[:k]).astype(np.uint8)
        if 2 * int(positives.sum()) <= k:  # not a mu = +1 pattern: never expected
            positives = None
    if positives is None:
        # No solution yet: examine one layer pattern, so that ``upper`` is a real margin.
        positives = np.zeros(k, dtype=np.uint8)
        positives[:t] = 1
    # Recompute C - W from the pattern itself rather than trusting the solver's objective.
    value = int(_votes(matrix, positives[None, :], tie_rule).sum())
    if not timed_out:
        return _MinSearch(value, positives, value, True, "milp")
    bound = getattr(result, "mip_dual_bound", None)
    proven: int | None = None
    if bound is not None and math.isfinite(float(bound)):
        # min (C - W) is an integer >= bound; the slack absorbs the solver's rounding.
        proven = min(math.ceil(float(bound) - _BOUND_TOLERANCE), value)
    return _MinSearch(value, positives, proven, False, "milp")


def _search_min(
    matrix: NDArray[np.uint8], method: str, tie_rule: str, deadline: float | None
) -> _MinSearch:
    """Search ``min (C - W)`` with the exact ``method`` (``"auto"`` resolved), to ``deadline``."""
    n, k = matrix.shape
    if method == "auto":
        cost = math.comb(k, _threshold_positives(k)) * n
        method = "enumeration" if k <= 24 or cost <= ENUMERATION_LIMIT else "milp"
    if method == "enumeration":
        best, positives, _, complete = _enumerate_scan(matrix, None, 0, tie_rule, deadline)
        return _MinSearch(best, positives, best if complete else None, complete, method)
    return _milp_search(matrix, tie_rule, deadline)


def _exact_min(
    matrix: NDArray[np.uint8], method: str, tie_rule: str = "abstain"
) -> tuple[int, NDArray[np.uint8], str]:
    found = _search_min(matrix, method, tie_rule, None)
    return found.upper, found.positives, found.method


# --------------------------------------------------------------------------- public API


def certify(
    code: AllocationCode,
    b: int,
    *,
    method: str = "auto",
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    tie_rule: str = "abstain",
    time_budget: float | None = None,
) -> Certificate:
    """Check whether ``code`` is perfectly ``b``-tolerant (SPEC section 2).

    Parameters
    ----------
    code : AllocationCode
        The allocation code ``G`` (shape ``(n, k)``).
    b : int
        Number of colluding omniscient Byzantine workers, ``0 <= b < n/2``.
    method : str (default: "auto")
        ``"enumeration"``: exact, vectorized over the minimal majority layer (``C(k, k//2+1)``
        patterns; k = 24, n = 25 takes well under a second). ``"milp"``: exact, a 0/1 integer
        program solved by HiGHS via :func:`scipy.optimize.milp`. ``"sampled"``: a Monte-Carlo
        estimate over ``samples`` random minimal-majority patterns (not a proof of tolerance, but
        a breaking pattern it finds is a proof of non-tolerance). ``"auto"``: enumeration when
        ``k <= 24`` or the enumeration is small enough, otherwise MILP.
    samples : int (default: 100000)
        Number of patterns for ``method="sampled"``.
    seed : int (default: 0)
        Seed of the sampled estimate.
    tie_rule : str (default: "abstain")
        What a worker with a tied local vote sends (:data:`TIE_RULES`): ``"abstain"`` (0,
        neither correct nor wrong) or ``"forced"`` (a 1-bit uplink breaks the tie by a local
        rule the certificate does not trust: the tie counts as a wrong vote). A code certified
        under ``"forced"`` is also certified under ``"abstain"``; the converse fails when some
        even-load worker can tie.
    time_budget : float or None (default: None)
        Seconds the check may take; ``None`` for no limit (every pattern is covered, status
        ``"exact"``). Callers inside a run should pass :data:`DEFAULT_CERTIFY_TIME_BUDGET`.
        At the budget the search stops and the certificate's ``status`` says what is proven:
        enumeration reads the clock between chunks (at least one chunk is evaluated), so a
        breaking pattern already found proves non-tolerance (``"bound"``), else the result is
        ``"unknown"``; the integer program gets the remaining time as HiGHS's ``time_limit``,
        and then its dual bound proves tolerance when ``ceil(bound) - 2b >= 1``, its best
        solution proves non-tolerance when that pattern's margin is ``< 1`` (``"bound"``),
        else ``"unknown"``. The sampled estimate stops drawing at the budget. The overshoot is
        one enumeration chunk (about 2^22 pattern x worker elements) or the solver's own
        reaction time to its limit.

    Returns
    -------
    Certificate
        Verdict, status, worst margin ``min (C - W - 2b)`` (or the smallest one seen when the
        status is not ``"exact"``) and, when proven not tolerant, a witness pattern and the
        ``b`` workers the adversary takes over. An ``"unknown"`` certificate has
        ``tolerant=False`` but proves nothing either way.

    Raises
    ------
    ValueError
        If ``b`` is not an integer with ``0 <= b < n/2``, ``method`` or ``tie_rule`` is unknown,
        ``samples < 1``, or ``time_budget`` is neither ``None`` nor a finite number ``> 0``.
    """
    matrix = _as_matrix(code)
    n, k = matrix.shape
    b = _check_b(b, n)
    if method not in CERTIFY_METHODS:
        raise ValueError(f"unknown certify method {method!r}; valid: {', '.join(CERTIFY_METHODS)}")
    tie_rule = _check_tie_rule(tie_rule)
    time_budget = _check_time_budget(time_budget)
    deadline = _deadline(time_budget)
    loads = matrix.sum(axis=1).astype(np.int64)
    if method == "sampled":
        return _certify_sampled(matrix, b, samples, seed, tie_rule, deadline, time_budget)
    found = _search_min(matrix, method, tie_rule, deadline)
    margin = found.upper - 2 * b
    proven = None if found.lower is None else found.lower - 2 * b
    if found.complete:
        status, tolerant = "exact", margin >= 1
    elif margin < 1:
        status, tolerant = "bound", False
    elif proven is not None and proven >= 1:
        status, tolerant = "bound", True
    else:
        status, tolerant = "unknown", False
    witness: tuple[int, ...] | None = None
    byzantine: tuple[int, ...] | None = None
    if margin < 1:
        witness = _pattern_from_positives(found.positives)
        votes = _votes(matrix, found.positives[None, :], tie_rule)[0]
        byzantine = _byzantine_for(votes, b, loads)
    return Certificate(
        b,
        tolerant,
        margin,
        witness,
        byzantine,
        found.complete,
        found.method,
        tie_rule=tie_rule,
        status=status,
        proven_margin_lower_bound=proven,
        time_budget=time_budget,
    )


def _certify_sampled(
    matrix: NDArray[np.uint8],
    b: int,
    samples: int,
    seed: int,
    tie_rule: str,
    deadline: float | None = None,
    time_budget: float | None = None,
) -> Certificate:
    if isinstance(samples, bool) or operator.index(samples) < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    n, k = matrix.shape
    t = _threshold_positives(k)
    rng = np.random.default_rng(seed)
    loads = matrix.sum(axis=1).astype(np.int64)
    best = n + 1
    best_pos = np.ones(k, dtype=np.uint8)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, k))
    drawn = 0
    while drawn < samples:
        if drawn and deadline is not None and _clock() >= deadline:
            break
        size = min(chunk, samples - drawn)
        # A uniformly random t-subset per row: the t smallest of k i.i.d. uniforms.
        ranks = np.argsort(rng.random((size, k)), axis=1)[:, :t]
        positives = np.zeros((size, k), dtype=np.uint8)
        positives[np.arange(size)[:, None], ranks] = 1
        margins = _votes(matrix, positives, tie_rule).sum(axis=1, dtype=np.int32)
        row = int(np.argmin(margins))
        if int(margins[row]) < best:
            best = int(margins[row])
            best_pos = positives[row]
        drawn += size
    margin = best - 2 * b
    tolerant = margin >= 1
    witness: tuple[int, ...] | None = None
    byzantine: tuple[int, ...] | None = None
    if not tolerant:
        witness = _pattern_from_positives(best_pos)
        byzantine = _byzantine_for(_votes(matrix, best_pos[None, :], tie_rule)[0], b, loads)
    return Certificate(
        b,
        tolerant,
        margin,
        witness,
        byzantine,
        False,
        "sampled",
        SAMPLED_CONFIDENCE,
        drawn,
        tie_rule,
        status="sampled",
        time_budget=time_budget,
    )


def tolerance_bounds(
    code: AllocationCode,
    *,
    method: str = "auto",
    tie_rule: str = "abstain",
    time_budget: float | None = None,
) -> ToleranceBounds:
    """Bound the largest ``b`` for which ``code`` is perfectly ``b``-tolerant, within a budget.

    One search for ``min (C - W)`` answers every ``b`` (tolerance is monotone in ``b``). With
    a ``time_budget`` the search may stop early: the proven lower bound on ``min (C - W)``
    (the integer program's dual bound) gives ``proven``, the smallest ``C - W`` of a pattern
    examined gives ``at_most``.

    Parameters
    ----------
    code : AllocationCode
        The allocation code.
    method : str (default: "auto")
        ``"auto"``, ``"enumeration"`` or ``"milp"`` (exact methods only). A cut-short
        enumeration proves no lower bound: prefer ``"milp"`` (what ``"auto"`` picks for
        large ``k``) when the budget may run out.
    tie_rule : str (default: "abstain")
        ``"abstain"`` or ``"forced"`` (a tie counts as a wrong vote); see :func:`certify`.
    time_budget : float or None (default: None)
        Seconds the search may take; ``None`` for no limit (status ``"exact"``). See
        :func:`certify`.

    Returns
    -------
    ToleranceBounds
        ``proven`` (largest ``b`` proven), ``at_most`` (largest ``b`` not disproven) and
        ``status`` (``"exact"``, ``"bound"`` when ``proven == at_most`` although the budget
        ran out, ``"unknown"`` otherwise).

    Raises
    ------
    ValueError
        If ``method`` is not exact, ``tie_rule`` is unknown or ``time_budget`` is neither
        ``None`` nor a finite number ``> 0``.
    """
    if method not in ("auto", "enumeration", "milp"):
        raise ValueError(
            f"max_tolerance needs an exact method (auto, enumeration, milp), got {method!r}"
        )
    tie_rule = _check_tie_rule(tie_rule)
    time_budget = _check_time_budget(time_budget)
    found = _search_min(_as_matrix(code), method, tie_rule, _deadline(time_budget))
    at_most = max(0, (found.upper - 1) // 2)
    proven = 0 if found.lower is None else max(0, (found.lower - 1) // 2)
    if found.complete:
        status = "exact"
    else:
        status = "bound" if proven == at_most else "unknown"
    return ToleranceBounds(proven, at_most, status, found.method, time_budget)


def max_tolerance(
    code: AllocationCode,
    *,
    method: str = "auto",
    tie_rule: str = "abstain",
    time_budget: float | None = None,
) -> int:
    """Largest ``b`` for which ``code`` is perfectly ``b``-tolerant (0 if none).

    Tolerance is monotone in ``b`` (the condition is ``min (C - W) >= 2b + 1``), so one exact
    evaluation of ``min (C - W)`` answers every ``b``.

    Parameters
    ----------
    code : AllocationCode
        The allocation code.
    method : str (default: "auto")
        ``"auto"``, ``"enumeration"`` or ``"milp"`` (exact methods only).
    tie_rule : str (default: "abstain")
        ``"abstain"`` or ``"forced"`` (a tie counts as a wrong vote); see :func:`certify`.
    time_budget : float or None (default: None)
        Seconds the search may take; ``None`` for no limit. When the budget runs out the
        result is the largest ``b`` *proven* (possibly below the true maximum, 0 when nothing
        is proven); :func:`tolerance_bounds` says whether it is exact and how far it may be off.

    Returns
    -------
    int
        ``max(0, (min (C - W) - 1) // 2)``, which is always ``< n/2``; with a budget that ran
        out, the same formula on the proven lower bound of ``min (C - W)``.

    Raises
    ------
    ValueError
        If ``method`` is not exact, ``tie_rule`` is unknown or ``time_budget`` is neither
        ``None`` nor a finite number ``> 0``.
    """
    return tolerance_bounds(code, method=method, tie_rule=tie_rule, time_budget=time_budget).proven


# --------------------------------------------------------------------------- attack analysis


#: Exact enumeration of patterns for the attack analysis up to this many partitions.
_EXACT_ATTACK_MAX_K = 16
#: Exact search over Byzantine subsets when there are at most this many of them.
_EXACT_SUBSET_LIMIT = 5000


def _majority_patterns_exact(k: int) -> NDArray[np.uint8]:
    """Positive indicators of all patterns with ``sum(m) > 0`` (uniform law given mu = +1)."""
    bits, pop = _bit_table(k)
    return bits[2 * pop > k]


def _majority_patterns_sampled(k: int, samples: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Draw uniform patterns conditioned on ``sum(m) != 0``, mirrored to ``mu = +1``."""
    out: list[NDArray[np.uint8]] = []
    have = 0
    while have < samples:
        draw = rng.integers(0, 2, size=(samples - have + 16, k), dtype=np.uint8)
        positives = draw.sum(axis=1, dtype=np.int64)
        draw = draw[2 * positives != k]
        flip = 2 * draw.sum(axis=1, dtype=np.int64) < k
        draw[flip] = 1 - draw[flip]
        out.append(draw)
        have += len(draw)
    return np.concatenate(out)[:samples]


def _failure_counts(
    votes: NDArray[np.int8], subsets: NDArray[np.float32], sent: int
) -> NDArray[np.int64]:
    """For each 0/1 subset row, the number of patterns whose vote is wrong or tied.

    The subset's workers send ``-mu`` (i.e. ``-1``, ``sent`` of them counted), the others their
    honest local votes.
    """
    total = votes.sum(axis=1, dtype=np.int64).astype(np.float32)
    votes32 = votes.astype(np.float32)
    counts = np.zeros(len(subsets), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(votes)))
    for start in range(0, len(subsets), step):
        block = subsets[start : start + step]
        removed = votes32 @ block.T
        final = total[:, None] - removed - float(sent)
        counts[start : start + step] = (final <= 0).sum(axis=0)
    return counts


def _load_order(loads: NDArray[np.int64]) -> list[int]:
    return sorted(range(len(loads)), key=lambda i: (-int(loads[i]), i))


def worst_byzantine_set(
    code: AllocationCode,
    b: int,
    *,
    seed: int = 0,
    samples: int = 20_000,
    tie_rule: str = "abstain",
) -> tuple[int, ...]:
    """Find the ``b`` workers an adversary who knows ``G`` (not the gradients) should corrupt.

    The adversary maximizes the probability, over uniformly random sign patterns ``m`` (given
    ``sum(m) != 0``), that the global vote is wrong or tied when its ``b`` workers send ``-mu``.

    Exact (every pattern, every ``b``-subset) when ``k <= 16`` and there are at most 5000
    subsets. Otherwise heuristic on ``samples`` sampled patterns: greedy (each step adds the
    worker that maximizes the failures counted as if every still-unchosen Byzantine flipped one
    more correct vote), then single swaps while they strictly improve the sampled failure count.
    Ties go to higher-load workers, then lower indices.

    Parameters
    ----------
    code : AllocationCode
        The allocation code.
    b : int
        Number of Byzantine workers, ``0 <= b < n/2``.
    seed : int (default: 0)
        Seed of the sampled patterns (heuristic mode only).
    samples : int (default: 20000)
        Number of sampled patterns (heuristic mode only).
    tie_rule : str (default: "abstain")
        Honest local votes under ``"abstain"`` (a tie sends 0) or ``"forced"`` (a tie is
        counted as a wrong vote, ``-mu``); see :func:`certify`.

    Returns
    -------
    tuple of int
        The sorted worker indices.
    """
    matrix = _as_matrix(code)
    n, k = matrix.shape
    b = _check_b(b, n)
    tie_rule = _check_tie_rule(tie_rule)
    if b == 0:
        return ()
    loads = matrix.sum(axis=1).astype(np.int64)
    order = _load_order(loads)
    n_subsets = math.comb(n, b)
    if k <= _EXACT_ATTACK_MAX_K and n_subsets <= _EXACT_SUBSET_LIMIT:
        votes = _votes(matrix, _majority_patterns_exact(k), tie_rule)
        combos = list(itertools.combinations(order, b))
        subsets = np.zeros((len(combos), n), dtype=np.float32)
        for row, combo in enumerate(combos):
            subsets[row, list(combo)] = 1.0
        counts = _failure_counts(votes, subsets, b)
        # argmax returns the first maximum: combinations of the load-ordered workers come in
        # lexicographic order, so ties favour higher-load workers.
        return tuple(sorted(combos[int(np.argmax(counts))]))
    rng = np.random.default_rng(seed)
    votes = _votes(matrix, _majority_patterns_sampled(k, samples, rng), tie_rule)
    chosen: list[int] = []
    for step in range(b):
        candidates = [w for w in order if w not in chosen]
        subsets = np.zeros((len(candidates), n), dtype=np.float32)
        subsets[:, chosen] = 1.0
        subsets[np.arange(len(candidates)), candidates] = 1.0
        remaining = b - step - 1
        counts = _failure_counts(votes, subsets, step + 1 + 2 * remaining)
        chosen.append(candidates[int(np.argmax(counts))])
    chosen = _swap_refine(votes, chosen, order, n)
    return tuple(sorted(chosen))


def _swap_refine(votes: NDArray[np.int8], chosen: list[int], order: list[int], n: int) -> list[int]:
    def score(members: Sequence[int]) -> int:
        row = np.zeros((1, n), dtype=np.float32)
        row[0, list(members)] = 1.0
        return int(_failure_counts(votes, row, len(members))[0])

    best = score(chosen)
    improved = True
    while improved:
        improved = False
        for slot in range(len(chosen)):
            for candidate in order:
                if candidate in chosen:
                    continue
                trial = chosen.copy()
                trial[slot] = candidate
                value = score(trial)
                if value > best:
                    best, chosen, improved = value, trial, True
    return chosen


def wrong_vote_probability(
    code: AllocationCode,
    b: int,
    *,
    byzantine: Sequence[int] | None = None,
    samples: int = 20_000,
    seed: int = 0,
    exact: bool | None = None,
    tie_rule: str = "abstain",
) -> float:
    """Probability that the global vote is not ``mu`` (wrong or tied) under a ``-mu`` attack.

    Sign patterns ``m`` are uniform on ``{+1, -1}^k`` conditioned on ``sum(m) != 0`` (for even
    ``k`` the tied patterns have no target). The Byzantine workers send ``-mu``; the others
    send their honest local votes.

    Parameters
    ----------
    code : AllocationCode
        The allocation code (typically a random one).
    b : int
        Number of Byzantine workers, ``0 <= b < n/2``.
    byzantine : sequence of int or None (default: None)
        The corrupted workers (``b`` distinct indices); ``None`` uses
        :func:`worst_byzantine_set` ``(code, b, seed=seed)``.
    samples : int (default: 20000)
        Number of Monte-Carlo patterns.
    seed : int (default: 0)
        Seed of the Monte-Carlo patterns.
    exact : bool or None (default: None)
        ``True``: enumerate every majority pattern (only for ``k <= 20``);
        ``False``: Monte Carlo; ``None``: exact when ``2^k <= samples``, else Monte Carlo.
    tie_rule : str (default: "abstain")
        Honest local votes under ``"abstain"`` (a tie sends 0) or ``"forced"`` (a tie is
        counted as a wrong vote, ``-mu``: the worst case of an untrusted tie-break); also passed
        to :func:`worst_byzantine_set` when ``byzantine`` is ``None``.

    Returns
    -------
    float
        The (estimated or exact) probability.
    """
    matrix = _as_matrix(code)
    n, k = matrix.shape
    b = _check_b(b, n)
    if isinstance(samples, bool) or operator.index(samples) < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    tie_rule = _check_tie_rule(tie_rule)
    if byzantine is None:
        members = worst_byzantine_set(code, b, seed=seed, tie_rule=tie_rule)
    else:
        members = tuple(operator.index(w) for w in byzantine)
        if len(set(members)) != len(members) or len(members) != b:
            raise ValueError(f"byzantine must list b = {b} distinct workers, got {byzantine!r}")
        if any(w < 0 or w >= n for w in members):
            raise ValueError(f"byzantine workers must lie in [0, {n}), got {byzantine!r}")
    use_exact = (1 << k) <= samples if exact is None else exact
    if use_exact:
        if k > 20:
            raise ValueError(f"exact=True enumerates 2^k patterns; k = {k} is too large (max 20)")
        patterns = _majority_patterns_exact(k)
    else:
        patterns = _majority_patterns_sampled(k, samples, np.random.default_rng(seed))
    subset = np.zeros((1, n), dtype=np.float32)
    subset[0, list(members)] = 1.0
    failures = 0
    step = max(1, _CHUNK_ELEMENTS // max(n, k))
    for start in range(0, len(patterns), step):
        votes = _votes(matrix, patterns[start : start + step], tie_rule)
        failures += int(_failure_counts(votes, subset, len(members))[0])
    return failures / len(patterns)
