"""Construction and offline search of low-redundancy perfectly b-tolerant allocation codes.

Supports :func:`fl_election.codes.deterministic` and ``scripts/search_codes.py``. The tolerance
condition is the one of Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning:
Protecting SignSGD against Byzantine Attacks", NeurIPS 2020 (arXiv:1910.06093): for every sign
pattern ``m`` with ``sum(m) > 0``, ``C - W >= 2b + 1`` (see :mod:`fl_election.certificate`).

Two tools:

* :func:`structured_rows`: a family generalizing the paper's ``n = 5`` example. ``f`` workers
  hold all ``k = n`` partitions (their vote is always right); the other workers hold pairwise
  *disjoint* blocks. Because the blocks are disjoint, the adversarial pattern (at most
  ``k - (k//2 + 1)`` entries ``-1``) is a knapsack: flipping the vote of a block of size ``s``
  costs ``s//2 + 1`` negatives and removes 2 from ``C - W``; making an even block abstain costs
  ``s/2`` and removes 1. The code is tolerant iff the knapsack's best damage is at most
  ``n - (2b + 1)``, which is computed exactly; the cheapest feasible family member is returned.
  Under the forced tie rule (a tie counts as a wrong vote, see
  :data:`fl_election.certificate.TIE_RULES`) an even block is flipped for ``s/2`` negatives.
* :func:`oddify`: turns a code into one whose every worker has an odd load (so no worker can
  tie and both tie rules agree), one greedy single-partition change per even-load worker. Under
  the forced rule, removing a partition from an even-load worker never lowers any vote (a load
  ``2L`` worker votes ``+1`` iff it sees ``>= L + 1`` positives; without one partition it needs
  only ``L``), and adding partition ``j`` breaks that worker's ties by ``m_j``.
* :func:`anneal`: simulated annealing over 0/1 matrices (``k = n``, no empty worker) minimizing
  ``ones + penalty * total deficit`` on a set of minimal-majority patterns, with incremental
  updates. For large ``k`` the pattern set is a random subset grown lazily with the violations
  that exact enumeration finds (a cutting-plane loop), so the returned matrix is always exactly
  certified.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from fl_election.certificate import TIE_RULES, enumerate_violations, minimal_majority_layer

__all__ = ["LOCAL_SEARCH_MAX_K", "anneal", "improve_odd", "oddify", "structured_rows"]

#: Largest block size the structured family considers (and the family for ``n > 40`` uses 2).
_MAX_BLOCK = 4


def _max_damage(sizes: tuple[int, ...], budget: int, forced: bool = False) -> int:
    """Return the largest drop in ``C - W`` that ``budget`` negatives inflict on disjoint blocks.

    An even block tied by ``s/2`` negatives abstains (drop 1), or, when ``forced``, counts as a
    wrong vote (drop 2).
    """
    best = [0] * (budget + 1)
    for size in sizes:
        options = [(size // 2 + 1, 2)]
        if size % 2 == 0:
            options.append((size // 2, 2 if forced else 1))
        for spent in range(budget, -1, -1):
            for cost, damage in options:
                if cost <= spent and best[spent - cost] + damage > best[spent]:
                    best[spent] = best[spent - cost] + damage
    return best[budget]


@lru_cache(maxsize=256)
def _structured_blocks(n: int, b: int, forced: bool = False) -> tuple[int, tuple[int, ...]]:
    """Cheapest (number of full workers, block sizes) of the structured family for ``(n, b)``."""
    k = n
    budget = k - (k // 2 + 1)
    allowed = n - (2 * b + 1)
    max_block = _MAX_BLOCK if n <= 40 else 2
    best: tuple[int, int, tuple[int, ...]] = (n * k, n, ())
    size_range = range(1, max_block + 1)
    # counts[s-1] workers hold a block of size s; blocks are disjoint, so sum(s * count) <= k.
    bounds = [range(0, k // s + 1) for s in size_range]
    for counts in itertools.product(*bounds):
        used = sum(s * c for s, c in zip(size_range, counts, strict=True))
        small = sum(counts)
        if used > k or small > n or small == 0:
            continue
        full = n - small
        ones = full * k + used
        if ones >= best[0]:
            continue
        sizes = tuple(s for s, c in zip(size_range, counts, strict=True) for _ in range(c))
        if _max_damage(sizes, budget, forced) <= allowed:
            best = (ones, full, sizes)
    return best[1], best[2]


def structured_rows(n: int, b: int, *, tie_rule: str = "abstain") -> list[list[int]]:
    """Rows (partition ids per worker) of the cheapest structured b-tolerant code, ``k = n``.

    Parameters
    ----------
    n : int
        Number of workers and partitions.
    b : int
        Tolerated Byzantines, ``0 <= b < n/2``.
    tie_rule : str (default: "abstain")
        ``"abstain"`` or ``"forced"`` (a tied block counts as a wrong vote; the cheapest
        member then never has an even block, since one partition fewer is as strong).

    Returns
    -------
    list of list of int
        The first workers hold disjoint blocks (smallest first), the rest hold every partition.
    """
    if not 0 <= 2 * b < n:
        raise ValueError(f"b must satisfy 0 <= b < n/2 (n = {n}), got b = {b}")
    if tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie_rule {tie_rule!r}; valid: {', '.join(TIE_RULES)}")
    full, sizes = _structured_blocks(n, b, tie_rule == "forced")
    rows: list[list[int]] = []
    start = 0
    for size in sizes:
        rows.append(list(range(start, start + size)))
        start += size
    rows.extend([list(range(n)) for _ in range(full)])
    return rows


# --------------------------------------------------------------------------- odd loads

#: Most low-margin patterns the greedy steps below score their moves on (more only when a code
#: is far from tolerant; whatever they return is certified exactly by the caller).
_PATTERN_CAP = 200_000
#: Local search (:func:`improve_odd`) runs only up to this many partitions (it scores up to
#: about ``n k^2`` moves on the low-margin patterns at every step).
LOCAL_SEARCH_MAX_K = 17


def _rule_votes(
    hits: NDArray[np.int16], loads: NDArray[np.int16], forced: bool
) -> NDArray[np.int16]:
    local = 2 * hits - loads
    votes: NDArray[np.int16] = (
        np.where(local > 0, 1, -1).astype(np.int16) if forced else np.sign(local).astype(np.int16)
    )
    return votes


class _LowMargin:
    """Votes of a matrix on every minimal-majority pattern with ``C - W < need + 2``.

    No single-row change moves a pattern's ``C - W`` by more than 2, so the deficit
    ``sum max(0, need - (C - W))`` after any one-row change is exact on these patterns (up to
    :data:`_PATTERN_CAP` of them), and so is the worst margin when it is below ``need``.
    """

    def __init__(self, matrix: NDArray[np.uint8], need: int, forced: bool) -> None:
        k = matrix.shape[1]
        _, low = enumerate_violations(
            matrix, need + 2, _PATTERN_CAP, tie_rule="forced" if forced else "abstain"
        )
        #: False when the cap cut the list short (the scores are then estimates).
        self.complete = len(low) < _PATTERN_CAP
        # The minimizing pattern may come twice; drop repeats (rows packed into integers).
        packed = low.astype(np.int64) @ (np.int64(1) << np.arange(k, dtype=np.int64))
        _, first = np.unique(packed, return_index=True)
        # int16 throughout: every count is at most k, every margin at most n.
        self.patterns = low[np.sort(first)].astype(np.int16)  # (S, k)
        self.loads = matrix.sum(axis=1).astype(np.int16)
        self.held = matrix.astype(bool)
        self.patterns32 = self.patterns.astype(np.float32)
        # A float product uses BLAS; the counts are exact in float32 (at most k).
        self.hits = (self.patterns32 @ matrix.T.astype(np.float32)).astype(np.int16)  # (S, n)
        self.votes = _rule_votes(self.hits, self.loads[None, :], forced)
        self.margin = self.votes.sum(axis=1)
        self.need = need
        self.forced = forced
        self.deficit = int(np.maximum(0, need - self.margin).sum())

    def toggle(self, worker: int, partition: int) -> None:
        """Flip ``G[worker, partition]`` and keep only the patterns still below ``need + 2``.

        Exact when no vote goes down (as in :func:`oddify` under the forced rule): a pattern
        left out before had ``C - W >= need + 2`` and still has.
        """
        column = self.patterns[:, partition]
        held = bool(self.held[worker, partition])
        step = np.int16(-1 if held else 1)
        self.hits[:, worker] += step * column
        self.loads[worker] += step
        self.held[worker, partition] = not held
        votes = _rule_votes(self.hits[:, worker], self.loads[worker], self.forced)
        self.margin = self.margin + votes - self.votes[:, worker]
        self.votes[:, worker] = votes
        keep = self.margin < self.need + 2
        if not keep.all():
            self.patterns = self.patterns[keep]
            self.patterns32 = self.patterns32[keep]
            self.hits = self.hits[keep]
            self.votes = self.votes[keep]
            self.margin = self.margin[keep]
        self.deficit = int(np.maximum(0, self.need - self.margin).sum())


def _raised(
    ties: NDArray[np.float32],
    weight: NDArray[np.float32],
    positive: NDArray[np.float32],
    held: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """Weighted count of each even row's ties raised by toggling each partition, ``(E, k)``.

    ``ties`` is ``(S, E)`` (pattern is a tie of even row ``e``), ``weight`` ``(S,)``,
    ``positive`` the ``(S, k)`` patterns and ``held`` ``(E, k)``: dropping a held partition
    raises the ties where it is negative, adding a free one those where it is positive.
    """
    weighted = ties * weight[:, None]
    # float32 products use BLAS and stay exact: integer weights of at most 2 over at most
    # _PATTERN_CAP patterns are far below 2^24.
    on_positive = weighted.T @ positive
    on_negative = weighted.sum(axis=0)[:, None] - on_positive
    counts: NDArray[np.float64] = np.round(np.where(held, on_negative, on_positive)).astype(
        np.float64
    )
    return counts


def oddify(matrix: NDArray[np.uint8], b: int) -> NDArray[np.uint8]:
    """Give every worker an odd load by one greedy single-partition change per even row.

    Under the forced tie rule a row of even load ``2h`` votes ``+1`` iff it sees ``>= h + 1``
    positives. Dropping a held partition ``p`` (load ``2h - 1``, needs ``h``) or adding a free
    one ``p`` (load ``2h + 1``, needs ``h + 1``) never lowers that vote and raises it exactly on
    the row's ties (``h`` positives) where ``m_p = -1`` (drop) or ``m_p = +1`` (add): the change
    fixes how the row breaks its ties. At every step, over all still-even rows and all their
    single changes (a drop only if the load stays positive), applies the one that maximizes
    first the worst margin ``min (C - W)`` (capped at ``2b + 1``), then minus the total deficit
    ``sum max(0, 2b + 1 - (C - W))``; ties prefer drops, then the partition with the most
    holders (drop) or the fewest (add), then the lowest row and partition. Both scores are exact
    (weighted tie counts on the patterns with ``C - W < 2b + 3``). A forced-tolerant input stays
    forced-tolerant. The result is *not* certified here: the caller must
    :func:`fl_election.certificate.certify` it.

    Parameters
    ----------
    matrix : numpy.ndarray
        ``(n, k)`` 0/1 allocation matrix.
    b : int
        Tolerated Byzantines (sets the target ``2b + 1``).

    Returns
    -------
    numpy.ndarray
        A ``(n, k)`` uint8 matrix with every row sum odd (and every row non-empty).
    """
    current = matrix.astype(np.uint8).copy()
    n, k = current.shape
    need = 2 * b + 1
    low: _LowMargin | None = None
    while True:
        loads = current.sum(axis=1).astype(np.int64)
        even = [i for i in range(n) if loads[i] % 2 == 0]
        if not even:
            return current
        if low is None:
            # Every change only raises votes, so one enumeration serves every step.
            low = _LowMargin(current, need, forced=True)
        margin = low.margin.astype(np.float32)
        lowest = int(margin.min()) if margin.size else need
        # Levels below the cap: a move leaves the worst margin at `level` iff some pattern at
        # that level is not raised by it.
        levels = [v for v in (lowest, lowest + 1) if v < need]
        level_counts = [int((margin == v).sum()) for v in levels]
        gain = np.maximum(0, need - margin) - np.maximum(0, need - margin - 2)
        holders = current.sum(axis=0).astype(np.int64)
        # ties[s, e]: pattern s is a tie of the e-th even row. With P the patterns, the
        # weighted counts over each row's ties, for every partition j at once, are
        # (ties * w)^T @ P (positive at j) and sum(ties * w) - that (negative at j); a drop
        # raises the ties where j is negative, an add those where j is positive.
        positive = low.patterns32  # (S, k)
        ties = (low.hits[:, even] == (loads[even] // 2)[None, :]).astype(np.float32)

        held_even = current[even].astype(bool)
        deficits = np.round(low.deficit - _raised(ties, gain, positive, held_even)).astype(np.int64)
        worsts = np.full((len(even), k), min(lowest + 2, need), dtype=np.int64)
        for level, count in zip(reversed(levels), reversed(level_counts), strict=True):
            at_level = (margin == level).astype(np.float32)
            worsts[count - _raised(ties, at_level, positive, held_even) > 0] = level
        best_key: tuple[int, ...] | None = None
        best_change = (-1, -1, 0)
        for e, i in enumerate(even):
            held = current[i].astype(bool)
            deficit, worst = deficits[e], worsts[e]
            for j in range(k):
                if held[j] and loads[i] <= 1:
                    continue
                delta = -1 if held[j] else 1
                balance = -int(holders[j]) if held[j] else int(holders[j])
                key = (-int(worst[j]), int(deficit[j]), delta, balance, i, j)
                if best_key is None or key < best_key:
                    best_key, best_change = key, (i, j, delta)
        i, j, step = best_change
        current[i, j] = 1 if step > 0 else 0
        low.toggle(i, j)
        if not low.complete and 2 * len(low.patterns) < _PATTERN_CAP:
            low = _LowMargin(current, need, forced=True)  # refill a list the cap cut short


def _pair_scores(
    low: _LowMargin,
    worker: int,
    kinds: tuple[str, ...],
    weights: tuple[
        Callable[[NDArray[np.int16]], NDArray[np.float64]],
        Callable[[NDArray[np.int16]], NDArray[np.float64]],
    ],
) -> dict[str, NDArray[np.float64]]:
    """Weighted flip counts of every two-partition change of an odd-load row, as ``k x k``.

    A row of load ``2h + 1`` votes ``+1`` iff it sees ``>= h + 1`` positives. Dropping two held
    partitions ``p, q`` flips it up exactly on the patterns where it sees ``h`` positives and
    ``p, q`` are both negative, and down where it sees ``h + 1`` and both are positive; adding
    two free ones flips up on ``h`` with both positive and down on ``h + 1`` with both negative;
    swapping in a free ``p`` for a held ``q`` flips up on ``h`` with ``p`` positive and ``q``
    negative, down on ``h + 1`` with ``p`` negative and ``q`` positive. With ``up(m)`` and
    ``down(m)`` the effect of a flip on a pattern of margin ``m``, returns the summed effect of
    each move of the given ``kinds`` (``"remove"``, ``"add"``, ``"swap"``) as a matrix indexed
    ``[p, q]`` (for a swap, ``p`` comes in and ``q`` goes out).
    """
    up_weight, down_weight = weights
    load = int(low.loads[worker])
    half = (load - 1) // 2
    hits = low.hits[:, worker]

    def gram(
        on: NDArray[np.bool_], weight: Callable[[NDArray[np.int16]], NDArray[np.float64]]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        # X^T W X, X^T w and sum(w) on the selected patterns: every product of indicators
        # (positive or negative at p and q) expands into these. float32 (BLAS) is exact here:
        # integer weights of at most 2 over at most _PATTERN_CAP patterns.
        w = weight(low.margin[on]).astype(np.float32)
        keep = w != 0
        positive = low.patterns32[on][keep]
        weighted = positive * w[keep, None]
        gram_matrix: NDArray[np.float32] = weighted.T @ positive
        return gram_matrix, weighted.sum(axis=0), w.sum(dtype=np.float32)

    g_up, v_up, t_up = gram(hits == half, up_weight)
    g_down, v_down, t_down = gram(hits == half + 1, down_weight)
    out: dict[str, NDArray[np.float64]] = {}
    for kind in kinds:
        if kind == "remove":  # up: p, q negative; down: p, q positive
            value = t_up - v_up[:, None] - v_up[None, :] + g_up + g_down
        elif kind == "add":  # up: p, q positive; down: p, q negative
            value = g_up + t_down - v_down[:, None] - v_down[None, :] + g_down
        else:  # swap, p in and q out; up: p positive, q negative; down: the reverse
            value = v_up[:, None] - g_up + v_down[None, :] - g_down
        out[kind] = value.astype(np.float64)
    return out


def improve_odd(
    matrix: NDArray[np.uint8], b: int, *, max_ones: int | None = None, max_steps: int = 500
) -> NDArray[np.uint8] | None:
    """Greedy parity-keeping local search on an all-odd-loads matrix: repair, then lighten.

    With odd loads no worker ties, so the forced and abstain rules agree. *Repair*: while some
    minimal-majority pattern has ``C - W < 2b + 1``, apply the move (add two partitions to one
    row, or swap one held partition for a free one) that most lowers the total deficit
    ``sum max(0, 2b + 1 - (C - W))``, then adds the fewest ones; give up (``None``) when no
    move lowers it or the matrix would exceed ``max_ones``. *Lighten*: then, while some row
    (load >= 3) can drop two partitions without creating a deficit, drop the pair that lifts
    the most near-critical patterns (``C - W < 2b + 3``), then from the heaviest row. Further
    ties go to the lowest row and partitions. Every move is scored exactly, by weighted
    co-occurrence counts (:func:`_pair_scores`) on the patterns with ``C - W < 2b + 3``
    (re-enumerated at every step, up to a cap). The result is *not* certified here: the caller
    must :func:`fl_election.certificate.certify` it.

    Parameters
    ----------
    matrix : numpy.ndarray
        ``(n, k)`` 0/1 allocation matrix with every row sum odd.
    b : int
        Tolerated Byzantines (target ``C - W >= 2b + 1``).
    max_ones : int or None (default: None)
        Give up when repairing needs more ones than this.
    max_steps : int (default: 500)
        Most moves in all.

    Returns
    -------
    numpy.ndarray or None
        The improved matrix (rows still odd), or ``None`` when repair failed.
    """
    current = matrix.astype(np.uint8).copy()
    n, k = current.shape
    if np.any(current.sum(axis=1) % 2 == 0):
        raise ValueError("improve_odd needs every row sum odd; call oddify first")
    need = 2 * b + 1

    def deficit(m: NDArray[np.int16]) -> NDArray[np.float64]:
        return np.maximum(0, need - m.astype(np.float64))

    # Deficit change of an up flip (<= 0) and a down flip (>= 0) on a pattern of margin m.
    deficit_weights = (
        lambda m: deficit(m + 2) - deficit(m),
        lambda m: deficit(m - 2) - deficit(m),
    )
    # Minus the number of near-critical patterns (all of them: margin below need + 2) that a
    # move lifts by 2; a drop that keeps the deficit at 0 lowers none of them.
    tight_weights = (
        lambda m: -np.ones(m.shape, dtype=np.float64),
        lambda m: np.zeros(m.shape, dtype=np.float64),
    )
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    for _ in range(max_steps):
        low = _LowMargin(current, need, forced=True)
        repair = low.deficit > 0
        best_key: tuple[float, ...] | None = None
        best_move = (-1, -1, -1, 0)
        for i in range(n):
            held = current[i].astype(bool)
            if repair:
                scored = _pair_scores(low, i, ("add", "swap"), deficit_weights)
                options = [
                    (scored["add"], upper & ~held[:, None] & ~held[None, :], 2),
                    (scored["swap"], ~held[:, None] & held[None, :], 0),
                ]
            else:
                if held.sum() < 3:
                    continue
                remove = _pair_scores(low, i, ("remove",), deficit_weights)["remove"]
                tight = _pair_scores(low, i, ("remove",), tight_weights)["remove"]
                allowed = upper & held[:, None] & held[None, :] & (np.abs(remove) < 0.5)
                options = [(tight, allowed, -2)]
            for scores, allowed, change in options:
                if not allowed.any():
                    continue
                flat = np.flatnonzero(allowed)
                values = np.round(scores.ravel()[flat]).astype(np.int64)
                pick = int(np.argmin(values))
                if repair:
                    key: tuple[float, ...] = (int(values[pick]), change, i, int(flat[pick]))
                else:
                    key = (int(values[pick]), -int(held.sum()), i, int(flat[pick]))
                if best_key is None or key < best_key:
                    p, q = divmod(int(flat[pick]), k)
                    best_key, best_move = key, (i, p, q, change)
        if best_key is None:
            return None if repair else current
        i, p, q, change = best_move
        if repair:
            if best_key[0] >= 0:
                return None
            if max_ones is not None and int(current.sum()) + change > max_ones:
                return None
            current[i, p] = 1
            current[i, q] = 1 if change == 2 else 0
        else:
            current[i, p] = 0
            current[i, q] = 0
    return current if _LowMargin(current, need, forced=True).deficit == 0 else None


# --------------------------------------------------------------------------- annealing


def _vote16(local: NDArray[np.int16], forced: bool) -> NDArray[np.int16]:
    """Local votes from ``2 hits - load``; a tie is 0, or -1 (wrong) when ``forced``."""
    if forced:
        return np.where(local > 0, 1, -1).astype(np.int16)
    return np.sign(local).astype(np.int16)


class _AnnealState:
    """Incremental bookkeeping of votes on a fixed set of minimal-majority patterns."""

    def __init__(
        self,
        matrix: NDArray[np.uint8],
        patterns: NDArray[np.uint8],
        need: int,
        forced: bool = False,
    ) -> None:
        self.forced = forced
        self.matrix = matrix.astype(np.int8)
        self.patterns = patterns.astype(np.int16)
        self.columns = np.ascontiguousarray(self.patterns.T)  # (k, N)
        self.need = need
        self.loads = self.matrix.sum(axis=1).astype(np.int64)
        self.hits = (self.matrix.astype(np.int16) @ self.columns).astype(np.int16)  # (n, N)
        self.votes = _vote16(2 * self.hits - self.loads[:, None].astype(np.int16), forced)
        self.margin = self.votes.sum(axis=0, dtype=np.int16)
        self.deficit = int(np.maximum(0, need - self.margin).sum())
        self.ones = int(self.matrix.sum())

    def propose(self, worker: int, add: int, remove: int) -> tuple[NDArray[np.int16], int, int]:
        """Return the new hits row, deficit and load if ``add``/``remove`` (-1: none) change."""
        load = int(self.loads[worker])
        if add >= 0 and remove >= 0:
            hits = self.hits[worker] + (self.columns[add] - self.columns[remove])
        elif add >= 0:
            hits = self.hits[worker] + self.columns[add]
            load += 1
        else:
            hits = self.hits[worker] - self.columns[remove]
            load -= 1
        votes = _vote16(2 * hits - load, self.forced)
        margin = self.margin + (votes - self.votes[worker])
        deficit = self.need * margin.size - int(np.minimum(margin, self.need).sum())
        return hits, deficit, load

    def apply(self, worker: int, add: int, remove: int, hits: NDArray[np.int16], load: int) -> None:
        votes = _vote16(2 * hits - load, self.forced)
        self.margin += votes - self.votes[worker]
        self.votes[worker] = votes
        self.hits[worker] = hits
        self.loads[worker] = load
        if add >= 0:
            self.matrix[worker, add] = 1
            self.ones += 1
        if remove >= 0:
            self.matrix[worker, remove] = 0
            self.ones -= 1
        self.deficit = int(np.maximum(0, self.need - self.margin).sum())


def _anneal_on(
    start: NDArray[np.uint8],
    patterns: NDArray[np.uint8],
    need: int,
    steps: int,
    rng: np.random.Generator,
    penalty: float,
    temperatures: tuple[float, float],
    forced: bool = False,
) -> NDArray[np.uint8] | None:
    """One annealing run; returns the lightest matrix with zero deficit on ``patterns``."""
    state = _AnnealState(start, patterns, need, forced)
    n, k = start.shape
    best: NDArray[np.uint8] | None = None
    best_ones = math.inf
    if state.deficit == 0:
        best, best_ones = state.matrix.astype(np.uint8).copy(), state.ones
    hot, cold = temperatures
    ratio = (cold / hot) ** (1.0 / max(1, steps - 1))
    temp = hot
    for _ in range(steps):
        worker = int(rng.integers(n))
        row = state.matrix[worker]
        if rng.random() < 0.3:
            held = np.flatnonzero(row)
            free = np.flatnonzero(row == 0)
            if held.size == 0 or free.size == 0:
                temp *= ratio
                continue
            add, remove = int(rng.choice(free)), int(rng.choice(held))
            d_ones = 0
        else:
            j = int(rng.integers(k))
            if row[j]:
                if state.loads[worker] <= 1:
                    temp *= ratio
                    continue
                add, remove, d_ones = -1, j, -1
            else:
                add, remove, d_ones = j, -1, 1
        hits, deficit, load = state.propose(worker, add, remove)
        delta = d_ones + penalty * (deficit - state.deficit)
        if delta <= 0 or rng.random() < math.exp(-delta / temp):
            state.apply(worker, add, remove, hits, load)
            if state.deficit == 0 and state.ones < best_ones:
                best, best_ones = state.matrix.astype(np.uint8).copy(), state.ones
        temp *= ratio
    return best


def anneal(
    start: NDArray[np.uint8],
    b: int,
    *,
    seconds: float,
    seed: int = 0,
    steps_per_run: int = 20_000,
    pattern_limit: int = 60_000,
    penalty: float = 1.5,
    temperatures: tuple[float, float] = (1.5, 0.05),
    tie_rule: str = "abstain",
) -> NDArray[np.uint8]:
    """Lower the number of ones of a b-tolerant matrix by restarted simulated annealing.

    Parameters
    ----------
    start : numpy.ndarray
        ``(n, k)`` 0/1 matrix that is perfectly ``b``-tolerant (the fallback result).
    b : int
        Tolerated Byzantines.
    seconds : float
        Wall-time budget (checked between runs).
    seed : int (default: 0)
        Seed of the search.
    steps_per_run : int (default: 20000)
        Moves per annealing run; each run restarts from the best matrix so far.
    pattern_limit : int (default: 60000)
        Use every minimal-majority pattern when there are at most this many; otherwise a random
        subset of this size, grown with the violations exact enumeration finds.
    penalty : float (default: 1.5)
        Weight of the total deficit ``sum max(0, 2b + 1 - (C - W))`` in the energy.
    temperatures : tuple of float (default: (1.5, 0.05))
        Start and end temperature of the geometric schedule.
    tie_rule : str (default: "abstain")
        Vote model of the tolerance target: ``"abstain"`` or ``"forced"`` (a tie counts as a
        wrong vote; ``start`` must then be tolerant under that rule).

    Returns
    -------
    numpy.ndarray
        The lightest exactly certified matrix found (``start`` if nothing lighter).
    """
    if tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie_rule {tie_rule!r}; valid: {', '.join(TIE_RULES)}")
    forced = tie_rule == "forced"
    rng = np.random.default_rng(seed)
    n, k = start.shape
    need = 2 * b + 1
    t = k // 2 + 1
    full_layer = math.comb(k, t) <= pattern_limit
    if full_layer:
        patterns = minimal_majority_layer(k)
    else:
        picks = np.argsort(rng.random((pattern_limit, k)), axis=1)[:, :t]
        patterns = np.zeros((pattern_limit, k), dtype=np.uint8)
        patterns[np.arange(pattern_limit)[:, None], picks] = 1
    best = start.astype(np.uint8).copy()
    deadline = time.monotonic() + seconds
    current = best
    while time.monotonic() < deadline:
        found = _anneal_on(
            current, patterns, need, steps_per_run, rng, penalty, temperatures, forced
        )
        if found is None or found.sum() >= best.sum():
            current = best
            continue
        if not full_layer:
            worst, violations = enumerate_violations(found, need, cap=2000, tie_rule=tie_rule)
            if worst < need:
                patterns = np.concatenate([patterns, violations])
                current = best
                continue
        best = found
        current = best
    return best
