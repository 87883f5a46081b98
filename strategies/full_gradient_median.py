"""Full-gradient coordinate-wise median (FGM), the float baseline of [Sohn et al., 2020].

Paper: "Election Coding for Distributed Learning: Protecting SignSGD against Byzantine
Attacks", NeurIPS 2020, https://arxiv.org/abs/1910.06093 (Fig. A.4c), after the
coordinate-wise median of Yin et al., "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML 2018.

Every node computes the float32 gradient of its own partition (identity allocation) and
sends it whole, 32 times the uplink of a sign vote; the server takes the coordinate-wise
median and applies the same momentum step as :class:`ElectionCoding`, so the two differ
only in what travels and how it is aggregated.
"""

from __future__ import annotations

from logging import INFO

import numpy as np
from flwr.app import ArrayRecord
from flwr.supercore import log

from fl_election import contract
from fl_election.aggregation import coordinate_median

from .base import DirectionStrategy, ParsedReply, RejectedReply

__all__ = ["FullGradientMedian", "finite_direction"]


def finite_direction(direction: np.ndarray, num_coordinates: int) -> np.ndarray | None:
    """Return ``direction`` as a float32 vector of length ``d``, or None if it is not one.

    Every accepted gradient is finite, but an aggregate of large finite ones can still
    overflow (a sum, or the mean of a median's two middle values) or, cast to float32,
    leave its range: such a direction is declined (``None``), so the round is not applied
    and the model stays finite.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        vector = np.asarray(direction, dtype=np.float32).reshape(-1)
    if vector.shape != (num_coordinates,) or not np.all(np.isfinite(vector)):
        return None
    return vector


class FullGradientMedian(DirectionStrategy):
    """Coordinate-wise median of full float gradients (FGM) [Yin et al., 2018].

    Implementation based on https://arxiv.org/abs/1803.01498, as the baseline of
    https://arxiv.org/abs/1910.06093

    Parameters
    ----------
    num_nodes : int
        ``n``: nodes, each holding its own partition (identity allocation).
    **kwargs : Any
        Training settings of :class:`~fl_election.strategies.DirectionStrategy` (``lr``,
        ``momentum``, ``weight_decay``, ``seed``, ``batch_size``, ...).
    """

    payload = contract.PAYLOAD_GRADIENT

    def summary(self) -> None:
        """Log the aggregation rule and the optimizer settings."""
        log(INFO, "\t├──> Full-gradient median over n = %d nodes (float32 uplink)", self.num_nodes)
        self.summary_settings()

    def parse_payload(self, vote: ArrayRecord, num_coordinates: int) -> ParsedReply:
        """Check a float32 gradient of length ``d`` with finite entries."""
        if contract.GRADIENT not in vote:
            raise RejectedReply(f"reply has no {contract.VOTE}/{contract.GRADIENT} array")
        unknown = sorted(set(vote.keys()) - {contract.GRADIENT})
        if unknown:
            raise RejectedReply(f"unexpected arrays in the vote: {unknown}")
        if len(vote[contract.GRADIENT].data) > 4 * num_coordinates + 256:
            raise RejectedReply(f"gradient is larger than {num_coordinates} float32 values")
        try:
            gradient = vote[contract.GRADIENT].numpy()
        except Exception as err:  # noqa: BLE001 - a payload that does not deserialize at all
            raise RejectedReply("gradient cannot be decoded") from err
        if gradient.dtype != np.float32 or gradient.shape != (num_coordinates,):
            raise RejectedReply(
                f"gradient must be float32 of shape ({num_coordinates},), "
                f"got {gradient.dtype} of shape {gradient.shape}"
            )
        if not np.all(np.isfinite(gradient)):
            raise RejectedReply("gradient holds NaN or infinity")
        return ParsedReply(0, gradient, None, {}, {}, gradient.nbytes)

    def aggregate_payloads(
        self, votes: list[ParsedReply], num_coordinates: int
    ) -> tuple[np.ndarray | None, dict[str, float]]:
        """Return the coordinate-wise median of the accepted gradients (None if not finite)."""
        with np.errstate(over="ignore", invalid="ignore"):
            direction = coordinate_median(np.stack([v.payload for v in votes]))
        return finite_direction(direction, num_coordinates), {}
