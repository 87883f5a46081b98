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
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from fl_election.certificate import enumerate_violations, minimal_majority_layer

__all__ = ["anneal", "structured_rows"]

#: Largest block size the structured family considers (and the family for ``n > 40`` uses 2).
_MAX_BLOCK = 4


def _max_damage(sizes: tuple[int, ...], budget: int) -> int:
    """Return the largest drop in ``C - W`` that ``budget`` negatives inflict on disjoint blocks."""
    best = [0] * (budget + 1)
    for size in sizes:
        options = [(size // 2 + 1, 2)]
        if size % 2 == 0:
            options.append((size // 2, 1))
        for spent in range(budget, -1, -1):
            for cost, damage in options:
                if cost <= spent and best[spent - cost] + damage > best[spent]:
                    best[spent] = best[spent - cost] + damage
    return best[budget]


@lru_cache(maxsize=256)
def _structured_blocks(n: int, b: int) -> tuple[int, tuple[int, ...]]:
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
        if _max_damage(sizes, budget) <= allowed:
            best = (ones, full, sizes)
    return best[1], best[2]


def structured_rows(n: int, b: int) -> list[list[int]]:
    """Rows (partition ids per worker) of the cheapest structured b-tolerant code, ``k = n``.

    Parameters
    ----------
    n : int
        Number of workers and partitions.
    b : int
        Tolerated Byzantines, ``0 <= b < n/2``.

    Returns
    -------
    list of list of int
        The first workers hold disjoint blocks (smallest first), the rest hold every partition.
    """
    if not 0 <= 2 * b < n:
        raise ValueError(f"b must satisfy 0 <= b < n/2 (n = {n}), got b = {b}")
    full, sizes = _structured_blocks(n, b)
    rows: list[list[int]] = []
    start = 0
    for size in sizes:
        rows.append(list(range(start, start + size)))
        start += size
    rows.extend([list(range(n)) for _ in range(full)])
    return rows


# --------------------------------------------------------------------------- annealing


class _AnnealState:
    """Incremental bookkeeping of votes on a fixed set of minimal-majority patterns."""

    def __init__(self, matrix: NDArray[np.uint8], patterns: NDArray[np.uint8], need: int) -> None:
        self.matrix = matrix.astype(np.int8)
        self.patterns = patterns.astype(np.int16)
        self.columns = np.ascontiguousarray(self.patterns.T)  # (k, N)
        self.need = need
        self.loads = self.matrix.sum(axis=1).astype(np.int64)
        self.hits = (self.matrix.astype(np.int16) @ self.columns).astype(np.int16)  # (n, N)
        self.votes = np.sign(2 * self.hits - self.loads[:, None].astype(np.int16)).astype(np.int16)
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
        votes = np.sign(2 * hits - load)
        margin = self.margin + (votes - self.votes[worker])
        deficit = self.need * margin.size - int(np.minimum(margin, self.need).sum())
        return hits, deficit, load

    def apply(self, worker: int, add: int, remove: int, hits: NDArray[np.int16], load: int) -> None:
        votes = np.sign(2 * hits - load).astype(np.int16)
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
) -> NDArray[np.uint8] | None:
    """One annealing run; returns the lightest matrix with zero deficit on ``patterns``."""
    state = _AnnealState(start, patterns, need)
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

    Returns
    -------
    numpy.ndarray
        The lightest exactly certified matrix found (``start`` if nothing lighter).
    """
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
        found = _anneal_on(current, patterns, need, steps_per_run, rng, penalty, temperatures)
        if found is None or found.sum() >= best.sum():
            current = best
            continue
        if not full_layer:
            worst, violations = enumerate_violations(found, need, cap=2000)
            if worst < need:
                patterns = np.concatenate([patterns, violations])
                current = best
                continue
        best = found
        current = best
    return best
