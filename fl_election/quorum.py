"""When a round's votes may be applied: the quorum rule, failing closed.

A round's vote is applied only when the workers whose votes were accepted can still
outvote the ``b`` Byzantine workers the run is built to withstand. The server cannot tell
an honest node that crashed from a Byzantine one that stayed silent, so it assumes the
worst: all ``b`` Byzantines are among the accepted votes. Two conditions, both required:

1. **Votes.** At least ``min_votes`` accepted votes, by default ``2b + 1`` (then at least
   ``b + 1`` of them are honest, a majority of the voters). With ``b = 0`` one vote suffices.
2. **Certificate.** When the full code is certified perfectly ``b``-tolerant
   (:func:`fl_election.codes.certify`), the rows that answered must still be: the code
   restricted to them is certified again, exactly, and the verdict is cached per answering
   set. A code that is not certified for ``b`` with every row (a random Bernoulli code at
   large ``b``) promises no more with fewer rows, and only condition 1 applies.

Below quorum the model stays unchanged and the decision is recorded; the strategy stops
the run after a configurable number of such rounds in a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fl_election.codes import AllocationCode, certify

__all__ = ["QuorumDecision", "QuorumRule", "default_min_votes"]


def default_min_votes(b: int) -> int:
    """Return ``2b + 1``: the fewest accepted votes that outvote ``b`` Byzantines."""
    return 2 * b + 1


@dataclass(frozen=True)
class QuorumDecision:
    """The verdict on one round.

    Attributes
    ----------
    applied : bool
        Whether the round's vote may be applied.
    reason : str
        ``"quorum"`` when applied, else why not: ``"too-few-votes"`` or
        ``"not-certified"`` (the answering rows are no longer b-tolerant).
    votes : int
        Accepted votes.
    needed : int
        Votes the rule asks for.
    """

    applied: bool
    reason: str
    votes: int
    needed: int


@lru_cache(maxsize=1024)
def _certified(
    matrix_bytes: bytes, shape: tuple[int, int], rows: tuple[int, ...], b: int, ties: str
) -> bool:
    matrix = np.frombuffer(matrix_bytes, dtype=np.uint8).reshape(shape)
    sub = matrix[list(rows)]
    if len(rows) <= 2 * b or not sub.any():
        return False
    return certify(AllocationCode(sub), b, tie_rule=ties).tolerant


class QuorumRule:
    """The quorum rule of a run.

    Parameters
    ----------
    code : AllocationCode
        The run's code (the identity for the float baseline).
    b : int
        The Byzantine budget.
    min_votes : int | None (default: None)
        Accepted votes needed; ``None`` means ``2b + 1``. Must be at least 1 and at most n.
    tie_rule : str (default: "forced")
        The certificate's model of ties (:data:`fl_election.certificate.TIE_RULES`):
        ``"forced"`` for the 1-bit uplink, ``"abstain"`` when ties abstain.
    """

    def __init__(
        self,
        code: AllocationCode,
        b: int,
        min_votes: int | None = None,
        tie_rule: str = "forced",
    ) -> None:
        needed = default_min_votes(b) if min_votes is None else int(min_votes)
        if not 1 <= needed <= code.n:
            raise ValueError(f"min_votes must be in [1, n = {code.n}], got {needed}")
        self.code = code
        self.b = b
        self.min_votes = needed
        self.tie_rule = tie_rule
        self._key = (code.matrix.tobytes(), (code.n, code.k))
        self.full_code_certified = b > 0 and _certified(
            *self._key, tuple(range(code.n)), b, tie_rule
        )

    def decide(self, answering_rows: Iterable[int]) -> QuorumDecision:
        """Return the decision for a round whose accepted votes came from these rows."""
        rows = tuple(sorted(set(int(r) for r in answering_rows)))
        votes = len(rows)
        if votes < self.min_votes:
            return QuorumDecision(False, "too-few-votes", votes, self.min_votes)
        if (
            self.full_code_certified
            and votes < self.code.n
            and not _certified(*self._key, rows, self.b, self.tie_rule)
        ):
            return QuorumDecision(False, "not-certified", votes, self.min_votes)
        return QuorumDecision(True, "quorum", votes, self.min_votes)
