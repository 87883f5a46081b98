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

from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fl_election.aggregation import coordinate_median
from fl_election.codes import uncoded

from .election_coding import (
    VOTE_KEY,
    ElectionCoding,
    ParsedReply,
    RejectedReply,
    read_buffers_and_metrics,
)

#: Key of the float gradient inside the reply's ``vote`` ArrayRecord.
GRADIENT_KEY = "gradient"


def parse_gradient(
    message: Message,
    *,
    num_coordinates: int,
    buffer_shapes: Mapping[str, tuple[int, ...]],
) -> ParsedReply:
    """Check one FGM reply and return its gradient, or raise :class:`RejectedReply`."""
    node = message.metadata.src_node_id
    if message.has_error():
        raise RejectedReply(f"node {node} replied with an error: {message.error.reason}")
    records = message.content.array_records
    if VOTE_KEY not in records or GRADIENT_KEY not in records[VOTE_KEY]:
        raise RejectedReply(f"node {node}: reply has no {VOTE_KEY}/{GRADIENT_KEY} array")
    try:
        gradient = records[VOTE_KEY][GRADIENT_KEY].numpy()
    except Exception as err:  # a payload that does not deserialize at all
        raise RejectedReply(f"node {node}: gradient cannot be decoded ({err})") from err
    if gradient.dtype != np.float32 or gradient.shape != (num_coordinates,):
        raise RejectedReply(
            f"node {node}: gradient must be float32 of shape ({num_coordinates},), "
            f"got {gradient.dtype} of shape {gradient.shape}"
        )
    if not np.all(np.isfinite(gradient)):
        raise RejectedReply(f"node {node}: gradient holds NaN or infinity")
    buffers, metrics = read_buffers_and_metrics(message, buffer_shapes)
    return ParsedReply(
        node_id=node,
        payload=gradient,
        abstain=None,
        buffers=buffers,
        metrics=metrics,
        num_bytes=gradient.nbytes,
    )


class FullGradientMedian(ElectionCoding):
    """Coordinate-wise median of full float gradients (FGM) [Yin et al., 2018].

    Implementation based on https://arxiv.org/abs/1803.01498, as the baseline of
    https://arxiv.org/abs/1910.06093

    Parameters
    ----------
    num_nodes : int
        ``n``: nodes, each holding its own partition (identity allocation).
    **kwargs : Any
        Optimizer and run settings of :class:`ElectionCoding` (``lr``, ``momentum``,
        ``weight_decay``, ``seed``, ...).
    """

    def __init__(self, num_nodes: int, **kwargs: Any) -> None:
        super().__init__(uncoded(num_nodes), **kwargs)

    def summary(self) -> None:
        """Log the aggregation rule and the optimizer settings."""
        log(INFO, "\t├──> Full-gradient median over n = %d nodes (float32 uplink)", self.code.n)
        log(
            INFO,
            "\t└──> Optimizer: lr %g (x%g at %s), momentum %g, weight decay %g, seed %d",
            self.lr,
            self.lr_gamma,
            list(self.lr_milestones) or "never",
            self.optimizer.momentum,
            self.optimizer.weight_decay,
            self.seed,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask every node for its partition's float gradient instead of a vote."""
        config = ConfigRecord(dict(config))
        config["payload"] = "gradient"
        return super().configure_train(server_round, arrays, config, grid)

    def parse_reply(
        self,
        message: Message,
        num_coordinates: int,
        buffer_shapes: Mapping[str, tuple[int, ...]],
    ) -> ParsedReply:
        """Validate one reply carrying a float gradient."""
        return parse_gradient(message, num_coordinates=num_coordinates, buffer_shapes=buffer_shapes)

    def aggregate_payloads(
        self, votes: list[ParsedReply], num_coordinates: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Return the coordinate-wise median of the accepted gradients."""
        direction = coordinate_median(np.stack([v.payload for v in votes]))
        return direction.astype(np.float32), {}
