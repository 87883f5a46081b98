"""Allocation codes for election-coded SignSGD with majority vote.

An allocation code is the ``(n, k)`` 0/1 matrix ``G`` of Sohn, Han, Choi, Moon, "Election Coding
for Distributed Learning: Protecting SignSGD against Byzantine Attacks", NeurIPS 2020
(arXiv:1910.06093): ``G[i, j] = 1`` iff worker ``i`` holds data partition ``j``. Worker ``i``
sends the majority of the signs of the partitions it holds; the master takes the majority of the
workers' votes.

This module is the public API for codes: the :class:`AllocationCode` value type, the
constructors :func:`uncoded`, :func:`bernoulli`, :func:`deterministic` and :func:`repetition`,
the registry :data:`CODE_FACTORIES` / :func:`create_code`, and (re-exported from
:mod:`fl_election.certificate`) the exact tolerance check :func:`certify` with
:class:`Certificate`, :func:`max_tolerance`, :func:`worst_byzantine_set` and
:func:`wrong_vote_probability`.

Deterministic codes come from a table of matrices found offline by simulated annealing
(``scripts/search_codes.py``, stored in ``fl_election/code_tables/deterministic_codes.json``,
every entry certified) and, where the table has no entry, from the structured family of
:func:`fl_election._search.structured_rows`, which is tolerant by construction. With
``tie_rule="forced"`` (a 1-bit uplink: a tied worker's vote is forced and counted as wrong),
:func:`deterministic` returns a code certified under that rule, with odd loads.
"""

from __future__ import annotations

import inspect
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fl_election._search import LOCAL_SEARCH_MAX_K, improve_odd, oddify, structured_rows
from fl_election.certificate import (
    CERTIFICATE_STATUSES,
    CERTIFY_METHODS,
    DEFAULT_CERTIFY_TIME_BUDGET,
    TIE_RULES,
    Certificate,
    ToleranceBounds,
    certify,
    max_tolerance,
    tolerance_bounds,
    worst_byzantine_set,
    wrong_vote_probability,
)

__all__ = [
    "CERTIFICATE_STATUSES",
    "CERTIFY_METHODS",
    "CODE_FACTORIES",
    "DEFAULT_CERTIFY_TIME_BUDGET",
    "DETERMINISTIC_TABLE_PATH",
    "TIE_RULES",
    "AllocationCode",
    "Certificate",
    "ToleranceBounds",
    "bernoulli",
    "certify",
    "create_code",
    "deterministic",
    "max_tolerance",
    "repetition",
    "tolerance_bounds",
    "uncoded",
    "worst_byzantine_set",
    "wrong_vote_probability",
]

#: The table of searched deterministic codes. It lives in ``code_tables/`` rather than
#: ``data/`` because ``fl_election/data.py`` (the dataset module) already owns that name.
DETERMINISTIC_TABLE_PATH = (
    Path(__file__).resolve().parent / "code_tables" / "deterministic_codes.json"
)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    return number


@dataclass(frozen=True, eq=False)
class AllocationCode:
    """An ``(n, k)`` 0/1 allocation matrix: which worker holds which data partition.

    Parameters
    ----------
    matrix : array_like
        2-D array of 0/1 entries, ``matrix[i, j] = 1`` iff worker ``i`` holds partition ``j``.
        Stored as a read-only ``numpy.uint8`` copy.
    name : str (default: "custom")
        Human-readable description, e.g. ``"bernoulli(n=15, k=15, r=3, seed=0)"``.

    Raises
    ------
    ValueError
        If the matrix is not 2-D, has a zero dimension or an entry other than 0 and 1.

    Notes
    -----
    Equality and hashing compare the matrix (shape and bytes) only, not the name.
    """

    matrix: NDArray[np.uint8]
    name: str = field(default="custom")

    def __post_init__(self) -> None:
        raw = np.asarray(self.matrix)
        if raw.ndim != 2:
            raise ValueError(f"allocation matrix must be 2-D, got shape {raw.shape}")
        n, k = raw.shape
        if n < 1 or k < 1:
            raise ValueError(
                f"allocation matrix needs n >= 1 workers and k >= 1 partitions, "
                f"got shape {raw.shape}"
            )
        if raw.dtype == np.bool_:
            raw = raw.astype(np.uint8)
        if not np.issubdtype(raw.dtype, np.number) or not np.isin(raw, (0, 1)).all():
            raise ValueError("allocation matrix entries must all be 0 or 1")
        frozen = np.ascontiguousarray(raw, dtype=np.uint8).copy()
        frozen.setflags(write=False)
        object.__setattr__(self, "matrix", frozen)
        object.__setattr__(self, "name", str(self.name))

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence[int]], k: int, name: str = "custom"
    ) -> AllocationCode:
        """Build a code from each worker's list of partition ids.

        Parameters
        ----------
        rows : sequence of sequence of int
            ``rows[i]`` lists the partitions (``0 <= j < k``) worker ``i`` holds.
        k : int
            Number of partitions.
        name : str (default: "custom")
            Name of the code.

        Returns
        -------
        AllocationCode
            The code.
        """
        k = _positive_int(k, "k")
        if len(rows) < 1:
            raise ValueError("rows must list at least one worker")
        matrix = np.zeros((len(rows), k), dtype=np.uint8)
        for worker, partitions in enumerate(rows):
            for partition in partitions:
                j = operator.index(partition)
                if not 0 <= j < k:
                    raise ValueError(f"worker {worker} lists partition {j}, outside [0, {k})")
                matrix[worker, j] = 1
        return cls(matrix, name)

    @property
    def n(self) -> int:
        """Number of workers (rows)."""
        return int(self.matrix.shape[0])

    @property
    def k(self) -> int:
        """Number of data partitions (columns)."""
        return int(self.matrix.shape[1])

    @property
    def loads(self) -> NDArray[np.int64]:
        """Per-worker load: the number of partitions each worker holds (row sums)."""
        row_sums: NDArray[np.int64] = self.matrix.sum(axis=1, dtype=np.int64)
        return row_sums

    @property
    def max_load(self) -> int:
        """Largest worker load (the straggler that sets the round time)."""
        return int(self.loads.max())

    @property
    def ones(self) -> int:
        """Total number of (worker, partition) assignments."""
        return int(self.matrix.sum(dtype=np.int64))

    @property
    def redundancy(self) -> float:
        """Mean redundancy ``r = G.sum() / n``."""
        return self.ones / self.n

    def partitions_of(self, worker: int) -> tuple[int, ...]:
        """Partitions held by ``worker`` (sorted)."""
        i = operator.index(worker)
        if not 0 <= i < self.n:
            raise ValueError(f"worker must lie in [0, {self.n}), got {worker!r}")
        return tuple(int(j) for j in np.flatnonzero(self.matrix[i]))

    def holders_of(self, partition: int) -> tuple[int, ...]:
        """Workers holding ``partition`` (sorted)."""
        j = operator.index(partition)
        if not 0 <= j < self.k:
            raise ValueError(f"partition must lie in [0, {self.k}), got {partition!r}")
        return tuple(int(i) for i in np.flatnonzero(self.matrix[:, j]))

    def __str__(self) -> str:
        """Name, shape, redundancy and the matrix drawn with ``#`` (held) and ``.`` (not held)."""
        width = len(str(self.n - 1))
        lines = [
            f"{self.name}: n={self.n} workers, k={self.k} partitions, "
            f"r={self.redundancy:.3f} ({self.ones} ones), max load {self.max_load}"
        ]
        for i, row in enumerate(self.matrix):
            drawn = "".join("#" if v else "." for v in row)
            lines.append(f"  worker {i:>{width}} | {drawn} | load {int(row.sum())}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"AllocationCode(name={self.name!r}, n={self.n}, k={self.k}, ones={self.ones})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AllocationCode):
            return NotImplemented
        return (
            self.matrix.shape == other.matrix.shape
            and self.matrix.tobytes() == other.matrix.tobytes()
        )

    def __hash__(self) -> int:
        return hash((self.matrix.shape, self.matrix.tobytes()))


def _from_array(matrix: ArrayLike, name: str) -> AllocationCode:
    return AllocationCode(np.asarray(matrix, dtype=np.uint8), name)


# --------------------------------------------------------------------------- constructors


def uncoded(n: int) -> AllocationCode:
    """Identity allocation: worker ``i`` holds partition ``i`` only (plain SignSGD-MV).

    Parameters
    ----------
    n : int
        Number of workers (and partitions).

    Returns
    -------
    AllocationCode
        ``G = I_n``, redundancy 1.
    """
    n = _positive_int(n, "n")
    return _from_array(np.eye(n, dtype=np.uint8), f"uncoded(n={n})")


def bernoulli(
    n: int,
    k: int | None = None,
    redundancy: float = 3.0,
    p: float | None = None,
    seed: int = 0,
) -> AllocationCode:
    """Random Bernoulli code: ``G[i, j] ~ Bernoulli(p)`` i.i.d.

    Rows that come out empty are redrawn (from the same generator) until non-empty, so every
    worker holds at least one partition; the mean redundancy is then slightly above ``k p``
    when ``p`` is small.

    Parameters
    ----------
    n : int
        Number of workers.
    k : int or None (default: None)
        Number of partitions; ``None`` means ``k = n``.
    redundancy : float (default: 3.0)
        Target mean redundancy ``r``; ``p = r / k``. Ignored when ``p`` is given.
    p : float or None (default: None)
        Assignment probability, in ``(0, 1]``.
    seed : int (default: 0)
        Seed of :func:`numpy.random.default_rng`; the same arguments give the same code.

    Returns
    -------
    AllocationCode
        The random code.

    Raises
    ------
    ValueError
        If ``n < 1``, ``k < 1``, ``p`` is outside ``(0, 1]`` or the seed is negative.
    """
    n = _positive_int(n, "n")
    k = n if k is None else _positive_int(k, "k")
    if p is None:
        prob = float(redundancy) / k
        source = f"r={float(redundancy):g}"
        if not 0.0 < prob <= 1.0:
            raise ValueError(
                f"p = redundancy / k = {float(redundancy):g} / {k} = {prob:g} must lie in (0, 1]"
            )
    else:
        prob = float(p)
        source = f"p={prob:g}"
        if not 0.0 < prob <= 1.0:
            raise ValueError(f"p must lie in (0, 1], got {p!r}")
    if isinstance(seed, bool) or operator.index(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    # Redrawing a row succeeds with probability 1 - (1-p)^k per try; refuse hopeless cases.
    if (1.0 - prob) ** k > 0.999:
        raise ValueError(f"p = {prob:g} is too small for k = {k}: almost every row would be empty")
    rng = np.random.default_rng(operator.index(seed))
    matrix = (rng.random((n, k)) < prob).astype(np.uint8)
    empty = np.flatnonzero(matrix.sum(axis=1) == 0)
    while empty.size:
        matrix[empty] = (rng.random((empty.size, k)) < prob).astype(np.uint8)
        empty = empty[matrix[empty].sum(axis=1) == 0]
    return _from_array(matrix, f"bernoulli(n={n}, k={k}, {source}, seed={operator.index(seed)})")


def repetition(n: int, group: int) -> AllocationCode:
    """Fractional repetition code (DRACO / DETOX style), ``k = n``.

    The workers are split into ``n / group`` consecutive groups of ``group`` workers; group
    ``g`` (workers ``g*group .. (g+1)*group - 1``) holds partitions ``g*group .. (g+1)*group - 1``,
    every worker of the group all of them. Every worker's load and the redundancy are ``group``.

    Parameters
    ----------
    n : int
        Number of workers (and partitions).
    group : int
        Group size; must divide ``n``.

    Returns
    -------
    AllocationCode
        The block-diagonal code of ``group x group`` all-ones blocks.

    Raises
    ------
    ValueError
        If ``group`` does not divide ``n`` or either is not positive.
    """
    n = _positive_int(n, "n")
    group = _positive_int(group, "group")
    if n % group:
        raise ValueError(f"group = {group} must divide n = {n}")
    matrix = np.kron(np.eye(n // group, dtype=np.uint8), np.ones((group, group), dtype=np.uint8))
    return _from_array(matrix, f"repetition(n={n}, group={group})")


#: ``deterministic(..., tie_rule="forced")`` searches (greedy odd loads, exact certificates) up
#: to this ``n`` and returns the forced-rule structured code beyond.
_FORCED_SEARCH_MAX_N = 25


@lru_cache(maxsize=1)
def _deterministic_table() -> dict[tuple[int, int], list[list[int]]]:
    if not DETERMINISTIC_TABLE_PATH.is_file():
        return {}
    raw = json.loads(DETERMINISTIC_TABLE_PATH.read_text(encoding="utf-8"))
    table: dict[tuple[int, int], list[list[int]]] = {}
    for entry in raw["codes"]:
        table[(int(entry["n"]), int(entry["b"]))] = [list(map(int, row)) for row in entry["rows"]]
    return table


def deterministic(n: int, b: int, *, tie_rule: str = "abstain") -> AllocationCode:
    """Perfectly ``b``-tolerant deterministic code with low redundancy, ``k = n``.

    With ``tie_rule="abstain"`` (the default), returns the lighter of (a) the searched matrix
    stored in the table (``n <= 25`` where the offline search ran; every entry certified
    exactly) and (b) the structured code of :func:`fl_election._search.structured_rows` (some
    workers hold every partition, the others disjoint blocks; tolerant by construction for every
    ``n`` and ``1 <= b < n/2``).

    With ``tie_rule="forced"`` (a 1-bit uplink, where a worker whose local vote is a tie breaks
    it by a local rule that the certificate counts as a wrong vote), starts from (a), (b) and
    (c), the structured code built for the forced rule (odd blocks; tolerant by construction),
    makes every even-load worker odd by one greedy single-partition change each
    (:func:`fl_election._search.oddify`), then, for ``n <= 17``, repairs and lightens each by a
    greedy parity-keeping local search (:func:`fl_election._search.improve_odd`), and returns
    the lightest candidate that ``certify(..., tie_rule="forced")`` passes (ties: lower maximum
    load; (c) if none beats it). Every worker of the result has an odd load, so no worker can
    ever tie and the result is certified under both rules. Up to ``n = 25`` this takes well
    under a second for ``n <= 15`` and a few seconds at most beyond; for ``n > 25`` it returns
    (c) without search or runtime certificate, like the abstain rule's structured code.

    Parameters
    ----------
    n : int
        Number of workers (and partitions).
    b : int
        Number of Byzantine workers to tolerate, ``0 <= b < n/2``; ``b = 0`` gives
        :func:`uncoded` (which is 0-tolerant under both rules).
    tie_rule : str (default: "abstain")
        The vote model the code must be certified under: ``"abstain"`` or ``"forced"``
        (:data:`TIE_RULES`).

    Returns
    -------
    AllocationCode
        A code for which ``certify(code, b, tie_rule=tie_rule).tolerant`` holds.

    Raises
    ------
    ValueError
        If ``b < 0`` or ``b >= n/2``, or ``tie_rule`` is unknown.
    """
    n = _positive_int(n, "n")
    if isinstance(b, bool):
        raise ValueError(f"b must be an integer, got {b!r}")
    try:
        b = operator.index(b)
    except TypeError:
        raise ValueError(f"b must be an integer, got {b!r}") from None
    if b < 0 or 2 * b >= n:
        raise ValueError(f"b must satisfy 0 <= b < n/2 (n = {n}), got b = {b}")
    if not isinstance(tie_rule, str) or tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie_rule {tie_rule!r}; valid: {', '.join(TIE_RULES)}")
    if b == 0:
        return uncoded(n)
    if tie_rule == "forced":
        return _deterministic_forced(n, b)
    return _deterministic_abstain(n, b, f"deterministic(n={n}, b={b})")[0]


def _deterministic_abstain(n: int, b: int, name: str) -> list[AllocationCode]:
    """Candidates of :func:`deterministic` under the abstain rule, lightest first."""
    candidates = [AllocationCode.from_rows(structured_rows(n, b), n, name)]
    rows = _deterministic_table().get((n, b))
    if rows is not None:
        candidates.append(AllocationCode.from_rows(rows, n, name))
    return sorted(candidates, key=lambda code: (code.ones, code.max_load))


def _deterministic_forced(n: int, b: int) -> AllocationCode:
    name = f"deterministic(n={n}, b={b}, ties=forced)"
    # Tolerant under the forced rule by construction: odd disjoint blocks, and full rows, which
    # vote right on every pattern with a majority. For even n a full row (load n) keeps doing
    # so without one partition (it still sees >= n/2 of its n - 1 positive), so drop one,
    # a different one per row.
    rows = structured_rows(n, b, tie_rule="forced")
    if n % 2 == 0:
        dropped = 0
        for row in rows:
            if len(row) == n:
                row.remove(dropped % n)
                dropped += 1
    fallback = AllocationCode.from_rows(rows, n, name)
    if n > _FORCED_SEARCH_MAX_N:
        return fallback
    best = fallback
    if not certify(best, b, tie_rule="forced").tolerant:  # a bug guard: never seen
        best = AllocationCode(np.ones((n, n), dtype=np.uint8), name)

    def consider(matrix: NDArray[np.uint8] | None) -> None:
        nonlocal best
        if matrix is None:
            return
        code = AllocationCode(matrix, name)
        if (code.ones, code.max_load) < (best.ones, best.max_load) and certify(
            code, b, tie_rule="forced"
        ).tolerant:
            best = code

    starts = [fallback, *_deterministic_abstain(n, b, name)]
    odd = [oddify(start.matrix, b) for start in starts]
    for matrix in odd:
        consider(matrix)
    if n <= LOCAL_SEARCH_MAX_K:
        for matrix in odd:
            consider(improve_odd(matrix, b, max_ones=best.ones))
    return best


# --------------------------------------------------------------------------- registry


CODE_FACTORIES: dict[str, Callable[..., AllocationCode]] = {
    "uncoded": uncoded,
    "bernoulli": bernoulli,
    "deterministic": deterministic,
    "repetition": repetition,
}


def create_code(name: str, **params: Any) -> AllocationCode:
    """Build a code by registry name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`CODE_FACTORIES`.
    **params : Any
        Keyword arguments of that constructor.

    Returns
    -------
    AllocationCode
        The code.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the valid names), if ``params`` do not fit
        the constructor, or if the constructor rejects them.
    """
    try:
        factory = CODE_FACTORIES[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(CODE_FACTORIES))
        raise ValueError(f"unknown code {name!r}; valid choices: {valid}") from None
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as error:
        raise ValueError(f"bad parameters for code {name!r}: {error}") from None
    return factory(**params)
