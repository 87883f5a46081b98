"""When a round's vote may be applied: the fault-budget rule, failing closed.

A run is built to withstand a *fault budget* ``f = b + c``: at most ``b`` Byzantine rows
(nodes that send anything, or nothing) and at most ``c`` honest rows that crash, time out or
fall out of step (``crash-budget``, default 0). Every row the server expected a vote from
and got none that it accepts (missing, rejected, or withheld for abusing the downlink) is a
*visible fault*. The rule:

* **Safety.** When the full code ``G`` is certified perfectly ``f``-tolerant
  (:func:`fl_election.codes.certify`), every round with at most ``f`` visible faults elects
  the true majority sign on every coordinate. A missing vote is 0, the midpoint of ``+1``
  and ``-1``; the vote margin ``C - W`` is affine in each row's vote, so the margin with a
  row abstaining is the mean of the two margins with that row voting ``+1`` and ``-1``.
  The certificate bounds both from below by ``2f + 1 > 0`` for *any* choice of at most
  ``f`` rows, so the mean is positive too. Missing rows therefore never need a
  re-certification: the full code's certificate covers every round within the budget,
  however the faults split between silence and wrong votes.
* **Over budget.** More than ``f`` visible faults prove that the budget's assumption has
  failed. The round is not applied: the model stays unchanged, the round is audited, and
  after ``max-rounds-below-quorum`` such rounds in a row the run stops naming the nodes.
* **Liveness.** ``b`` silent Byzantines are ``b <= f`` visible faults: the ``n - b`` honest
  rows always make the round, so silence cannot stop a run.
* **Codes not certified for ``f``** (a random Bernoulli code at large ``b``, the uncoded
  baseline): the same count rule applies, and the run keeps reporting that a vote may be
  wrong (:attr:`FaultBudgetRule.certified` is ``"not-certified"`` or ``"unknown"``).

The vote-count quorum ``2b + 1`` of earlier versions is not used: it adds no safety that
the certificate does not already give (the certificate, not the head count, is what makes
the elected sign right), and with ``n < 3b + 1`` it let ``b`` silent Byzantines halt the
run. The conservative variant (``fault-rule = "conservative"``) assumes that every visible
fault is an honest node *on top of* ``b`` Byzantines that still vote: it applies a round
only when ``b + visible <= f``, which is safe with no assumption on crashes, and live under
``b`` silent Byzantines only when the code is certified for ``f >= 2b``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fl_election.certificate import DEFAULT_CERTIFY_TIME_BUDGET, Certificate, certify
from fl_election.codes import AllocationCode

__all__ = [
    "FAULT_RULES",
    "FaultBudgetRule",
    "QuorumDecision",
]

#: ``"budget"``: apply when visible faults <= f; ``"conservative"``: when b + visible <= f.
FAULT_RULES: tuple[str, ...] = ("budget", "conservative")


@dataclass(frozen=True)
class QuorumDecision:
    """The verdict on one round.

    Attributes
    ----------
    applied : bool
        Whether the round's vote may be applied.
    reason : str
        ``"quorum"`` when applied, else why not: ``"over-fault-budget"`` (more visible
        faults than the rule allows) or ``"no-votes"``.
    votes : int
        Accepted votes.
    faults : int
        Visible faults: expected rows without an accepted vote.
    allowed : int
        Visible faults the rule allows.
    """

    applied: bool
    reason: str
    votes: int
    faults: int
    allowed: int


class FaultBudgetRule:
    """The fault-budget rule of a run (module docstring).

    Parameters
    ----------
    code : AllocationCode
        The run's code (the identity for the float baselines).
    byzantine_budget : int
        ``b``, Byzantine rows the run withstands.
    crash_budget : int (default: 0)
        ``c``, honest rows that may fail on top of them; ``f = b + c`` must be ``< n/2``.
    tie_rule : str (default: "forced")
        The certificate's model of ties (:data:`fl_election.certificate.TIE_RULES`):
        ``"forced"`` for the 1-bit uplink, ``"abstain"`` when ties abstain.
    fault_rule : str (default: "budget")
        ``"budget"`` or ``"conservative"`` (:data:`FAULT_RULES`).
    time_budget : float | None (default: DEFAULT_CERTIFY_TIME_BUDGET)
        Seconds the one certification of the full code for ``f`` may take; at the budget
        the verdict is a proven bound or ``"unknown"``. ``None``: no limit.
    """

    def __init__(
        self,
        code: AllocationCode,
        byzantine_budget: int,
        crash_budget: int = 0,
        *,
        tie_rule: str = "forced",
        fault_rule: str = "budget",
        time_budget: float | None = DEFAULT_CERTIFY_TIME_BUDGET,
    ) -> None:
        b, c = int(byzantine_budget), int(crash_budget)
        if b < 0 or c < 0:
            raise ValueError(f"byzantine and crash budgets must be >= 0, got b = {b}, c = {c}")
        if not b + c < code.n / 2:
            raise ValueError(
                f"fault budget f = b + c = {b} + {c} must be < n/2 = {code.n / 2:g}: no "
                "majority survives half of the rows failing"
            )
        if fault_rule not in FAULT_RULES:
            raise ValueError(f"fault_rule must be one of {FAULT_RULES}, got {fault_rule!r}")
        self.code = code
        self.byzantine_budget = b
        self.crash_budget = c
        self.fault_budget = b + c
        self.fault_rule = fault_rule
        self.tie_rule = tie_rule
        #: Visible faults a round may have and still be applied.
        self.allowed_faults = self.fault_budget - (b if fault_rule == "conservative" else 0)
        #: The one certificate of the run: the full code against ``f`` rows.
        self.certificate: Certificate = certify(
            code, self.fault_budget, tie_rule=tie_rule, time_budget=time_budget
        )

    @property
    def certified(self) -> str:
        """``"certified"``, ``"not-certified"`` or ``"unknown"`` (the budget ran out)."""
        if self.certificate.status == "unknown":
            return "unknown"
        if self.certificate.tolerant and self.certificate.status in ("exact", "bound"):
            return "certified"
        return "not-certified"

    def decide(self, expected_rows: Iterable[int], accepted_rows: Iterable[int]) -> QuorumDecision:
        """Return the decision for a round.

        Parameters
        ----------
        expected_rows : Iterable[int]
            Rows the server expected a vote from (rows holding at least one partition).
        accepted_rows : Iterable[int]
            Rows whose votes were accepted.
        """
        expected = {int(r) for r in expected_rows}
        accepted = {int(r) for r in accepted_rows} & expected
        faults = len(expected - accepted)
        votes = len(accepted)
        if votes == 0:
            return QuorumDecision(False, "no-votes", votes, faults, self.allowed_faults)
        if faults > self.allowed_faults:
            return QuorumDecision(False, "over-fault-budget", votes, faults, self.allowed_faults)
        return QuorumDecision(True, "quorum", votes, faults, self.allowed_faults)
