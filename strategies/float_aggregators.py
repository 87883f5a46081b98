"""Every float aggregator of the harness by name: Flower's six and ByzFL's five.

One registry for the two places that need "the aggregator in use": the server
(:class:`~fl_election.strategies.FlowerRobust` runs the strategy
:func:`create_float_aggregator` builds) and a line-searching attacker (``optimal-alie`` /
``optimal-ipm``), which evaluates the same aggregator on stacked vectors with
:func:`vector_oracle`. The oracle calls Flower's and ByzFL's own math on arrays instead of
building 15 Messages per evaluation (an attacker evaluates it about 20 times per step, and a
node has no run identity to stamp Messages with); ``tests/test_float_aggregators.py``
checks it against the strategy's ``aggregate_train``
(:func:`~fl_election.strategies.byzfl_robust.vector_aggregate`) for every name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from .byzfl_robust import (
    BYZFL_DEFENCES,
    ByzflAggregation,
    create_byzfl_aggregator,
    run_stages,
)
from .flower_robust import FLOWER_STRATEGIES, create_flower_aggregator

__all__ = ["FLOAT_AGGREGATORS", "create_float_aggregator", "vector_oracle"]

Oracle = Callable[[np.ndarray], np.ndarray]

#: Names of every float aggregator :func:`create_float_aggregator` builds.
FLOAT_AGGREGATORS: tuple[str, ...] = (*FLOWER_STRATEGIES, *BYZFL_DEFENCES)


def create_float_aggregator(name: str, num_nodes: int, byzantine_budget: int) -> Strategy:
    """Return the Flower strategy that aggregates float gradients under ``name``.

    Parameters
    ----------
    name : str
        One of :data:`FLOAT_AGGREGATORS`: Flower's ``fedavg``, ``krum``, ``multikrum``,
        ``bulyan``, ``fedmedian``, ``fedtrimmedavg``, or ByzFL's ``nnm-trmean``,
        ``nnm-median``, ``arc-trmean``, ``centeredclipping``, ``geomedian``.
    num_nodes : int
        ``n``.
    byzantine_budget : int
        ``b``, the Byzantine count each defence is told.

    Returns
    -------
    flwr.serverapp.strategy.Strategy
        The strategy, whose ``aggregate_train`` aggregates.

    Raises
    ------
    ValueError
        On an unknown name (the message lists the valid ones) or an ``(n, b)`` the
        aggregator cannot run at.
    """
    if name in FLOWER_STRATEGIES:
        return create_flower_aggregator(name, num_nodes, byzantine_budget)
    if name in BYZFL_DEFENCES:
        return create_byzfl_aggregator(name, num_nodes, byzantine_budget)
    raise ValueError(
        f"unknown float aggregator {name!r}; valid: {', '.join(sorted(FLOAT_AGGREGATORS))}"
    )


def _krum_selection(vectors: np.ndarray, f: int, m: int) -> np.ndarray:
    """Return the ``m`` lowest Krum scores' indices (Flower's ``select_multikrum``, on arrays)."""
    norms = np.square(vectors).sum(axis=1)
    distances = norms[:, None] + norms[None, :] - 2 * vectors @ vectors.T
    closest = max(1, len(vectors) - f - 2)
    scores = [np.sum(row[np.argsort(row)[1 : closest + 1]]) for row in distances]
    return np.argsort(scores)[:m]


def _flower_oracle(name: str, n: int, b: int) -> Oracle:
    def fedavg(x: np.ndarray) -> np.ndarray:
        return np.asarray(x.mean(axis=0))

    def fedmedian(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.median(x, axis=0))

    def fedtrimmedavg(x: np.ndarray) -> np.ndarray:
        return np.asarray(trim_mean(x, b / n))

    def krum(x: np.ndarray) -> np.ndarray:
        return np.asarray(x[_krum_selection(x, b, 1)].mean(axis=0))

    def multikrum(x: np.ndarray) -> np.ndarray:
        return np.asarray(x[_krum_selection(x, b, n - b)].mean(axis=0))

    def bulyan(x: np.ndarray) -> np.ndarray:
        theta = len(x) - 2 * b
        selected = x[_krum_selection(x, b, theta)]
        median = np.median(selected, axis=0)
        closest = aggregate_n_closest_weights([median], [[v] for v in selected], theta - 2 * b)
        return np.asarray(closest[0])

    oracles: dict[str, Oracle] = {
        "fedavg": fedavg,
        "fedmedian": fedmedian,
        "fedtrimmedavg": fedtrimmedavg,
        "krum": krum,
        "multikrum": multikrum,
        "bulyan": bulyan,
    }
    return oracles[name]


def _byzfl_oracle(strategy: ByzflAggregation) -> Oracle:
    def oracle(x: np.ndarray) -> np.ndarray:
        # A stateful defence (CenteredClipping's centre) is evaluated on a copy: the
        # attacker's trials must not move it.
        pre_aggregators, aggregator = copy.deepcopy((strategy.pre_aggregators, strategy.aggregator))
        return run_stages(pre_aggregators, aggregator, x)

    return oracle


def vector_oracle(name: str, num_nodes: int, byzantine_budget: int) -> Oracle:
    """Return the aggregator ``name`` as a function of stacked vectors ``(m, d) -> (d,)``.

    What an attacker that knows the aggregator in use evaluates (the line search of
    ByzFL's optimal ALIE and IPM): the same math as :func:`create_float_aggregator`'s
    strategy, with equal weights, on arrays.

    Parameters
    ----------
    name : str
        One of :data:`FLOAT_AGGREGATORS`.
    num_nodes : int
        ``n``.
    byzantine_budget : int
        ``b``.

    Returns
    -------
    Callable[[numpy.ndarray], numpy.ndarray]
        The aggregate of the rows, float32.
    """
    strategy = create_float_aggregator(name, num_nodes, byzantine_budget)
    if isinstance(strategy, ByzflAggregation):
        inner = _byzfl_oracle(strategy)
    else:
        inner = _flower_oracle(name, num_nodes, byzantine_budget)

    def oracle(x: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.asarray(inner(np.asarray(x, dtype=np.float32)), np.float32)
        return result

    return oracle
