"""Flower Message-API strategies of fl-election (import as ``fl_election.strategies``).

``ElectionCoding`` is reusable in any Flower project the way ``FedAvg`` or ``Krum`` are:
pass it an allocation code and start it from a ``ServerApp``. ``FullGradientMedian`` is the
paper's float baseline; ``FlowerRobust`` runs Flower's own FedAvg, Krum, MultiKrum, Bulyan,
FedMedian or FedTrimmedAvg in the same harness. All are siblings over ``DirectionStrategy``.
"""

from fl_election.contract import tied_keys, vote_keys

from .base import DirectionStrategy, ParsedReply, QuorumError, RejectedReply
from .election_coding import ElectionCoding
from .flower_robust import FLOWER_STRATEGIES, FlowerRobust, create_flower_aggregator
from .full_gradient_median import FullGradientMedian

__all__ = [
    "DirectionStrategy",
    "ElectionCoding",
    "FLOWER_STRATEGIES",
    "FlowerRobust",
    "FullGradientMedian",
    "ParsedReply",
    "QuorumError",
    "RejectedReply",
    "create_flower_aggregator",
    "tied_keys",
    "vote_keys",
]
