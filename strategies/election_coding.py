"""Election coding for SignSGD with majority vote [Sohn et al., 2020].

Paper: "Election Coding for Distributed Learning: Protecting SignSGD against Byzantine
Attacks", J. Sohn, D.-J. Han, B. Choi, J. Moon, NeurIPS 2020, https://arxiv.org/abs/1910.06093

Each node is one worker, i.e. one row of an allocation code ``G``: it computes the gradient
sign of every data partition it holds, takes the local majority and sends it as a packed
1-bit vector. The server takes the global majority of those votes and applies a
sign-momentum step. With a perfectly b-tolerant code the vote equals the majority over
partitions whatever ``b`` Byzantine nodes send. Uncoded SignSGD with majority vote
[Bernstein et al., 2019] is this strategy with ``uncoded(n)``.

The algorithm is in :mod:`fl_election` (:func:`fl_election.voting.global_majority`,
:class:`fl_election.optim.SignMomentumSGD`); the messages follow
:mod:`fl_election.contract`; this module only translates between the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from flwr.supercore import log

from fl_election.codes import AllocationCode, create_code
from fl_election.voting import global_majority, packed_agreement
from fl_election.wire import VOTE_KEYS, decode_vote

from .base import DirectionStrategy, ParsedReply, RejectedReply

__all__ = ["ElectionCoding", "parse_vote"]


#: Bytes an ``.npy`` header may add to an array's payload.
NPY_HEADER_BYTES = 256


def parse_vote(
    vote: ArrayRecord, num_coordinates: int
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Decode a reply's vote record: sign plane, abstain plane, bytes that travelled.

    Names and sizes are checked before anything is deserialized, so an oversized or
    unknown array costs nothing; then :func:`fl_election.wire.decode_vote` checks dtypes,
    shapes and the compressed plane. Raises :class:`RejectedReply` on anything refused.
    """
    unknown = sorted(set(vote.keys()) - set(VOTE_KEYS))
    if unknown:
        raise RejectedReply(f"unexpected arrays in the vote: {unknown}")
    limit = (num_coordinates + 7) // 8 + NPY_HEADER_BYTES
    arrays: dict[str, np.ndarray] = {}
    for key in vote.keys():
        if len(vote[key].data) > limit:
            raise RejectedReply(f"{key!r} is larger than a plane of {num_coordinates} bits")
        try:
            arrays[key] = vote[key].numpy()
        except Exception as err:  # noqa: BLE001 - a payload that does not deserialize at all
            raise RejectedReply(f"{key!r} cannot be decoded") from err
    try:
        signs, abstain = decode_vote(arrays, num_coordinates)
    except ValueError as err:
        raise RejectedReply(str(err)) from err
    return signs, abstain, sum(a.nbytes for a in arrays.values())


class ElectionCoding(DirectionStrategy):
    """Election coding for SignSGD with majority vote [Sohn et al., 2020].

    Implementation based on https://arxiv.org/abs/1910.06093

    Parameters
    ----------
    code : AllocationCode | str
        The allocation code ``G`` (n workers x k partitions), or the name of one in
        :data:`fl_election.codes.CODE_FACTORIES` built with ``code_params``.
    code_params : Mapping[str, Any] | None (default: None)
        Parameters of a named code, e.g. ``{"n": 15, "redundancy": 3.0, "seed": 0}``.
    **kwargs : Any
        Settings of :class:`~fl_election.strategies.DirectionStrategy`: ``byzantine_budget``
        (``b``; with ``crash_budget`` ``c`` the fault budget ``f = b + c`` the code is
        certified for once, :mod:`fl_election.quorum`),
        ``lr``, ``lr_milestones``, ``lr_gamma``, ``momentum``, ``weight_decay``, ``seed``,
        ``batch_size``, ``trainable_keys``, ``buffer_keys``, ``crash_budget``,
        ``fault_rule``, ``certify_time_budget``, ``max_resyncs``, ``resync_window``,
        ``max_rounds_below_quorum``, ``reassign_after``, ``evaluate_every``,
        ``node_wait_timeout``.
    """

    def __init__(
        self,
        code: AllocationCode | str,
        *,
        code_params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(code, str):
            code = create_code(code, **dict(code_params or {}))
        elif code_params:
            raise ValueError("code_params is only used with a code name, not an AllocationCode")
        self.code = code
        super().__init__(code.n, **kwargs)

    def num_partitions_for(self, num_nodes: int) -> int:
        """Return ``k``, the code's partitions."""
        return self.code.k

    def allocation(self) -> AllocationCode:
        """Return the code."""
        return self.code

    def partitions_of(self, worker: int) -> tuple[int, ...]:
        """Return the partitions of the code's row ``worker``."""
        return tuple(int(p) for p in self.code.partitions_of(worker))

    def summary(self) -> None:
        """Log the code, its certified tolerance and the optimizer settings."""
        code = self.code
        log(INFO, "\t├──> Allocation code: %s", code.name)
        log(
            INFO,
            "\t│\t├── n = %d workers, k = %d partitions, redundancy r = %.2f, max load %d",
            code.n,
            code.k,
            code.redundancy,
            code.max_load,
        )
        certificate = self.quorum.certificate
        log(INFO, "\t│\t└── %s", str(certificate).splitlines()[0])
        if self.quorum.certified != "certified":
            log(
                WARNING,
                "\t│\t    the code is %s for the fault budget f = %d: the vote may be wrong "
                "on some sign patterns",
                self.quorum.certified,
                self.quorum.fault_budget,
            )
        self.summary_settings()

    def parse_payload(self, vote: ArrayRecord, num_coordinates: int) -> ParsedReply:
        """Decode a packed sign vote (:mod:`fl_election.wire`)."""
        signs, abstain, num_bytes = parse_vote(vote, num_coordinates)
        return ParsedReply(0, signs, abstain, {}, {}, num_bytes)

    def aggregate_payloads(
        self, votes: list[ParsedReply], num_coordinates: int
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Return the global majority ``v`` in {-1, 0, +1} of the packed votes.

        The metrics say how well the voters agreed with it.
        """
        planes = np.stack([v.payload for v in votes])
        abstain = [v.abstain for v in votes]
        direction = global_majority(planes, num_coordinates, abstain)
        agreement = packed_agreement(planes, abstain, direction)
        metrics = {
            "agreement": float(np.mean(agreement)),
            "min-agreement": float(np.min(agreement)),
            "abstain-fraction": float(np.mean(direction == 0)),
        }
        return direction.astype(np.float32), metrics
