"""The hook through which a Byzantine mod reaches a coded client's computation.

Some attacks act inside the client's computation, not on its reply: label flipping
changes the targets before the gradient, noisy computation perturbs each partition's
gradient before the sign, and the omniscient attacks (``omniscient``, ``ipm``, ``alie``)
need every partition's sign to forge their vote. A mod cannot do that from outside
without rewriting the honest handler's inputs, so it *declares* the attack instead: for
the duration of ``call_next`` the active attack is set in a :class:`contextvars.ContextVar`
(the mod and the ClientApp run in the same thread), and the client API
(:func:`fl_election.clients.coded_train`) reads it with :func:`active_attack`, applies it
where it acts, forges the vote and encodes it once. The client marks the hook as used;
a mod wrapping a ClientApp that never looked at the hook fails loudly instead of sending
an honest vote while claiming to attack.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from fl_election.attacks import SignAttack

__all__ = ["ActiveAttack", "active_attack", "attacking"]


@dataclass
class ActiveAttack:
    """The attack a Byzantine mod asks the client to mount on the current message.

    Attributes
    ----------
    attack : SignAttack
        The attack (:mod:`fl_election.attacks`).
    rng : numpy.random.Generator
        Randomness of randomised attacks, seeded per (seed, step, worker).
    used : bool
        Set by the client API once it has applied the attack.
    """

    attack: SignAttack
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    used: bool = False


_ACTIVE: ContextVar[ActiveAttack | None] = ContextVar("fl_election_active_attack", default=None)


def active_attack() -> ActiveAttack | None:
    """Return the attack declared for the message being handled, or ``None`` (honest)."""
    return _ACTIVE.get()


@contextmanager
def attacking(hook: ActiveAttack) -> Iterator[ActiveAttack]:
    """Declare ``hook`` as the active attack for the enclosed call."""
    token = _ACTIVE.set(hook)
    try:
        yield hook
    finally:
        _ACTIVE.reset(token)
