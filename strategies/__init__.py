"""Flower Message-API strategies of fl-election (import as ``fl_election.strategies``).

``ElectionCoding`` is reusable in any Flower project the way ``FedAvg`` or ``Krum`` are:
pass it an allocation code and start it from a ``ServerApp``. ``FullGradientMedian`` is the
paper's float baseline; ``FlowerRobust`` runs Flower's own FedAvg, Krum, MultiKrum, Bulyan,
FedMedian or FedTrimmedAvg in the same harness, and ByzFL's defences (NNM, ARC,
CenteredClipping, geometric median) wrapped as Flower strategies (``ByzflAggregation``,
extra ``byzfl``). All are siblings over ``DirectionStrategy``.
"""

from fl_election.contract import tied_keys, vote_keys

from .base import DirectionStrategy, ParsedReply, QuorumError, RejectedReply
from .byzfl_robust import (
    BYZFL_DEFENCES,
    ByzflAggregation,
    create_byzfl_aggregator,
    vector_aggregate,
)
from .election_coding import ElectionCoding
from .float_aggregators import FLOAT_AGGREGATORS, create_float_aggregator, vector_oracle
from .flower_robust import FLOWER_STRATEGIES, FlowerRobust, create_flower_aggregator
from .full_gradient_median import FullGradientMedian

__all__ = [
    "BYZFL_DEFENCES",
    "ByzflAggregation",
    "DirectionStrategy",
    "ElectionCoding",
    "FLOAT_AGGREGATORS",
    "FLOWER_STRATEGIES",
    "FlowerRobust",
    "FullGradientMedian",
    "ParsedReply",
    "QuorumError",
    "RejectedReply",
    "create_byzfl_aggregator",
    "create_float_aggregator",
    "create_flower_aggregator",
    "tied_keys",
    "vector_aggregate",
    "vector_oracle",
    "vote_keys",
]
