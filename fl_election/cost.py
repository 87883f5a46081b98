"""Time and communication model of one training round.

Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning: Protecting SignSGD against
Byzantine Attacks", NeurIPS 2020, arXiv:1910.06093, measure training progress against time, and
the reviewers asked for the computational load and its non-uniformity to be discussed.  The
model here is the one the paper's plots assume: a synchronous round lasts as long as its
slowest worker, so its compute time is ``max_i load_i`` partition gradients, plus the time to
upload one vote.  The uplink is 1 bit per coordinate (``"sign"``), 2 bits when abstentions are
sent as a second bit plane (``"sign+abstain"``), or 32 bits for full float32 gradients (FGM).

The functions take the workers' loads (row sums of the allocation matrix) rather than a code
object, so this module depends on nothing but the standard library.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "UPLINK_SCHEMES",
    "RoundCost",
    "compression_ratio",
    "effective_redundancy",
    "round_cost",
    "uplink_bytes",
]

#: Uplink encodings :func:`uplink_bytes` knows: bits per coordinate.
UPLINK_SCHEMES: dict[str, int] = {"sign": 1, "sign+abstain": 2, "float32": 32}


def _check_positive_real(value: object, label: str, *, allow_zero: bool = False) -> float:
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(float(value))
        or (value < 0 if allow_zero else value <= 0)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{label} must be a finite number {bound}, got {value!r}")
    return float(value)


def uplink_bytes(num_params: int, *, scheme: str) -> int:
    """Return the bytes one worker uploads per round.

    Parameters
    ----------
    num_params : int
        Number of model coordinates ``d`` (at least 1).
    scheme : str
        ``"sign"``: one packed bit plane, ``ceil(d / 8)`` bytes; ``"sign+abstain"``: a sign plane
        and an abstain plane, ``2 * ceil(d / 8)``; ``"float32"``: ``4 * d``.

    Returns
    -------
    int
        Payload size in bytes (framing and headers not counted).
    """
    if not isinstance(num_params, numbers.Integral) or isinstance(num_params, bool):
        raise ValueError(f"num_params must be an integer, got {num_params!r}")
    if num_params < 1:
        raise ValueError(f"num_params must be >= 1, got {num_params}")
    if scheme not in UPLINK_SCHEMES:
        raise ValueError(
            f"unknown uplink scheme {scheme!r}; valid schemes: {', '.join(UPLINK_SCHEMES)}"
        )
    d = int(num_params)
    if scheme == "float32":
        return 4 * d
    return UPLINK_SCHEMES[scheme] * ((d + 7) // 8)


def compression_ratio(num_params: int, scheme: str = "sign") -> float:
    """Return how many times smaller the ``scheme`` upload is than float32.

    Parameters
    ----------
    num_params : int
        Number of model coordinates ``d`` (at least 1).
    scheme : str (default: "sign")
        Uplink scheme, one of :data:`UPLINK_SCHEMES`.

    Returns
    -------
    float
        ``uplink_bytes(d, "float32") / uplink_bytes(d, scheme)``; 32 for ``"sign"`` when ``d``
        is a multiple of 8.
    """
    return uplink_bytes(num_params, scheme="float32") / uplink_bytes(num_params, scheme=scheme)


def effective_redundancy(redundancy: float, batch_ratio: float) -> float:
    """Return the effective redundancy ``r_eff = rho * r``.

    Training with a minibatch reduced by a factor ``rho`` while each partition is computed by
    ``r`` workers on average costs ``rho * r`` times the uncoded computation (SPEC section 3;
    the paper's ``r = 2.5, rho = 0.5`` gives ``r_eff = 1.25``).

    Parameters
    ----------
    redundancy : float
        Mean redundancy ``r`` of the code, ``> 0``.
    batch_ratio : float
        Minibatch ratio ``rho`` relative to the uncoded run, ``> 0``.

    Returns
    -------
    float
        ``rho * r``.
    """
    r = _check_positive_real(redundancy, "redundancy")
    rho = _check_positive_real(batch_ratio, "batch_ratio")
    return rho * r


@dataclass(frozen=True)
class RoundCost:
    """Cost of one synchronous round.

    Attributes
    ----------
    compute_seconds : float
        ``max(loads) * grad_seconds``: the slowest worker's gradient time.
    communication_seconds : float
        Time to upload the votes (see :func:`round_cost`).
    total_seconds : float
        ``compute_seconds + communication_seconds``.
    mean_load : float
        Mean partitions per worker, the code's redundancy ``r = G.sum() / n``.
    max_load : int
        Largest load.
    load_imbalance : float
        ``max_load / mean_load`` (1 for a perfectly even code).
    uplink_bytes_per_worker : int
        Bytes one worker uploads.
    uplink_bytes_total : int
        Bytes all workers upload together.
    """

    compute_seconds: float
    communication_seconds: float
    total_seconds: float
    mean_load: float
    max_load: int
    load_imbalance: float
    uplink_bytes_per_worker: int
    uplink_bytes_total: int


def round_cost(
    loads: Sequence[int],
    *,
    grad_seconds: float,
    num_params: int,
    uplink_bytes_per_second: float,
    latency_seconds: float = 0.0,
    scheme: str = "sign",
    shared_uplink: bool = False,
) -> RoundCost:
    """Return the time and traffic of one round for the given worker loads.

    Every worker computes one gradient per partition it holds, in sequence, and then uploads
    one vote; the server waits for all of them, so the round takes the slowest worker's time.

    Parameters
    ----------
    loads : Sequence[int]
        Partitions held by each worker (row sums of the allocation matrix), each ``>= 0``, not
        all 0; every listed worker uploads a vote.
    grad_seconds : float
        Time to compute one partition's gradient, ``>= 0``.
    num_params : int
        Number of model coordinates ``d``.
    uplink_bytes_per_second : float
        Upload bandwidth, ``> 0``: of each worker's own link, or of the server's shared ingress
        when ``shared_uplink`` is true.
    latency_seconds : float (default: 0.0)
        Fixed per-round communication latency, ``>= 0``.
    scheme : str (default: "sign")
        Uplink encoding, one of :data:`UPLINK_SCHEMES`.
    shared_uplink : bool (default: False)
        ``False``: workers upload in parallel on their own links, so communication takes
        ``latency + bytes_per_worker / bandwidth``; ``True``: all uploads share one link,
        ``latency + bytes_total / bandwidth``.

    Returns
    -------
    RoundCost
        The round's cost.
    """
    load_list = list(loads)
    if not load_list:
        raise ValueError("loads must list at least one worker")
    for load in load_list:
        if not isinstance(load, numbers.Integral) or isinstance(load, bool) or load < 0:
            raise ValueError(f"loads must be integers >= 0, got {load!r}")
    max_load = int(max(load_list))
    if max_load == 0:
        raise ValueError("loads are all 0: no worker computes anything")
    grad_time = _check_positive_real(grad_seconds, "grad_seconds", allow_zero=True)
    bandwidth = _check_positive_real(uplink_bytes_per_second, "uplink_bytes_per_second")
    latency = _check_positive_real(latency_seconds, "latency_seconds", allow_zero=True)

    per_worker = uplink_bytes(num_params, scheme=scheme)
    total_bytes = per_worker * len(load_list)
    sent_on_one_link = total_bytes if shared_uplink else per_worker
    compute = max_load * grad_time
    communication = latency + sent_on_one_link / bandwidth
    mean_load = sum(int(load) for load in load_list) / len(load_list)
    return RoundCost(
        compute_seconds=compute,
        communication_seconds=communication,
        total_seconds=compute + communication,
        mean_load=mean_load,
        max_load=max_load,
        load_imbalance=max_load / mean_load,
        uplink_bytes_per_worker=per_worker,
        uplink_bytes_total=total_bytes,
    )
