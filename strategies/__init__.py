"""Flower Message-API strategies of fl-election (import as ``fl_election.strategies``).

``ElectionCoding`` is reusable in any Flower project the way ``FedAvg`` or ``Krum`` are:
pass it an allocation code and start it from a ``ServerApp``. ``FullGradientMedian`` is the
paper's float baseline. Both are siblings over ``DirectionStrategy``.
"""

from fl_election.contract import vote_keys

from .base import DirectionStrategy, ParsedReply, QuorumError, RejectedReply
from .election_coding import ElectionCoding
from .full_gradient_median import FullGradientMedian

__all__ = [
    "DirectionStrategy",
    "ElectionCoding",
    "FullGradientMedian",
    "ParsedReply",
    "QuorumError",
    "RejectedReply",
    "vote_keys",
]
