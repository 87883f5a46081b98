"""Flower Message-API strategies of fl-election.

``ElectionCoding`` is reusable in any Flower project the way ``FedAvg`` or ``Krum`` are:
pass it an allocation code and start it from a ``ServerApp``.
"""

from .election_coding import ElectionCoding
from .full_gradient_median import FullGradientMedian

__all__ = ["ElectionCoding", "FullGradientMedian"]
