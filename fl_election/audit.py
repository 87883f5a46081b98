"""The audit trail of a round: who was missing, who was rejected and why, what was decided.

Reasons are short codes (:data:`REASONS`), so that a result file can be read by a program;
the free text a node sends (an error reason) is sanitised by :func:`sanitize` before it is
logged or stored: a node controls it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "REASONS",
    "RESYNC_CAUSES",
    "Rejection",
    "RoundAudit",
    "sanitize",
]

#: Reason codes of a rejected reply.
REASONS: dict[str, str] = {
    "error": "the node replied with an error",
    "contract": "the node's model or reply does not follow the contract",
    "unexpected": "the node was not asked to vote this round",
    "duplicate": "the node replied twice (the first reply counts)",
    "no-vote": "the reply has no vote record",
    "bad-vote": "the vote does not decode to the round's length",
    "bad-buffers": "a buffer is missing, malformed or not finite",
    "bad-metrics": "a metric the server checks is missing or malformed",
    "resync": "the node's copy of the model is out of step (it asks for the full model)",
    "resync-limit": "the node needed the full model too often; its row is a fault this round",
}

#: Why a node was sent the full model again (:attr:`RoundAudit.resynced`): its reply of the
#: round before reported another model (``fingerprint-mismatch``), or was missing,
#: rejected (a reason code of :data:`REASONS`, ``resync`` among them) or withheld.
RESYNC_CAUSES: tuple[str, ...] = ("fingerprint-mismatch", "missing", "rejected", *REASONS)

_MAX_REASON = 200


def sanitize(text: object, limit: int = _MAX_REASON) -> str:
    """Return ``text`` as one printable line of at most ``limit`` characters.

    Control characters (newlines, escape sequences, NUL) become ``?``; longer text is cut
    and marked with ``...``.
    """
    raw = str(text)
    cleaned = "".join(
        ch if ch == " " or unicodedata.category(ch)[0] not in ("C", "Z") else "?"
        for ch in raw[: limit + 1]
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


@dataclass(frozen=True)
class Rejection:
    """One rejected reply."""

    node: int
    row: int | None
    code: str
    reason: str


@dataclass
class RoundAudit:
    """What happened in one round (stored per round in the result JSON).

    Attributes
    ----------
    round : int
        The round.
    voters : list[int]
        Code rows whose votes were accepted.
    missing : list[dict[str, int]]
        ``{"node", "row"}`` of each node asked that did not reply.
    rejected : list[dict[str, Any]]
        ``{"node", "row", "code", "reason"}`` of each rejected reply.
    decision : str
        ``"quorum"`` (applied), ``"over-fault-budget"`` (more rows missing or rejected
        than the fault budget allows, :mod:`fl_election.quorum`), ``"no-votes"``,
        ``"aggregator-declined"`` (the aggregation rule refused the votes, e.g. Bulyan
        with fewer than ``4b + 3``) or ``"non-finite"`` (the step would make the model
        non-finite).
    applied : bool
        Whether the model was updated.
    reassigned : list[dict[str, int]]
        ``{"row", "from", "to"}`` rows moved to a new node before this round (churn).
    resynced : list[dict[str, Any]]
        ``{"node", "row", "cause"}`` of each node sent the full model again this round
        (not its first one), with why its copy was out of step (:data:`RESYNC_CAUSES`).
    """

    round: int
    voters: list[int] = field(default_factory=list)
    missing: list[dict[str, int]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    decision: str = ""
    applied: bool = False
    reassigned: list[dict[str, int]] = field(default_factory=list)
    resynced: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)
