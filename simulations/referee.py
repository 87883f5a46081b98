"""Simulation referee: the honest gradient of each step, to score the applied direction.

A simulation knows what a deployment cannot: every partition's true gradient. Each round
the referee recomputes, at the round's model, the float gradient of each of the strategy's
``k`` partitions on exactly the slices the nodes were asked to use (the client API's
:func:`~fl_election.clients.coded.partition_batch`); honest targets, no noise, no attack.
It scores the direction the strategy applied with the metrics every scheme shares, against
the honest mean gradient ``g`` of the step's global minibatch (the mean of the ``k``
equal slices): :func:`~fl_election.aggregation.weighted_sign_error` (0 for honest FedAvg)
and :func:`~fl_election.aggregation.cosine_similarity`. For coded schemes it also records
the partition-majority error, :func:`~fl_election.aggregation.vote_error_rate` against the
majority of the ``k`` partition signs: what an all-honest vote over partitions elects, a
reference that means something only where nodes vote on partitions.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord
from torch import nn

from fl_election.aggregation import cosine_similarity, vote_error_rate, weighted_sign_error
from fl_election.clients.coded import partition_batch
from fl_election.data import DatasetSplits
from fl_election.strategies import DirectionStrategy
from fl_election.training import partition_gradients, vote_parameters

__all__ = [
    "METRIC_COSINE",
    "METRIC_PARTITION_MAJORITY_ERROR",
    "METRIC_WEIGHTED_SIGN_ERROR",
    "VoteReferee",
]

#: Round metric: :func:`~fl_election.aggregation.weighted_sign_error` of the applied step.
METRIC_WEIGHTED_SIGN_ERROR = "weighted-sign-error"
#: Round metric: :func:`~fl_election.aggregation.cosine_similarity` of the applied step.
METRIC_COSINE = "cosine"
#: Round metric (coded schemes): :func:`~fl_election.aggregation.vote_error_rate`.
METRIC_PARTITION_MAJORITY_ERROR = "vote-error-rate"


class VoteReferee:
    """Score each applied direction against the majority over the strategy's partitions.

    Parameters
    ----------
    model : torch.nn.Module
        A model of the run's architecture (the referee's own copy).
    splits : DatasetSplits
        The run's dataset; the training set is what the nodes hold.
    """

    def __init__(self, model: nn.Module, splits: DatasetSplits) -> None:
        self.model = model
        self.data = (splits.train_x, splits.train_y)

    def partition_gradients(
        self, strategy: DirectionStrategy, run_round: int, arrays: ArrayRecord
    ) -> np.ndarray:
        """Return the ``(k, d)`` honest gradients of the k partitions at ``arrays``."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        instruction = strategy.instruction(run_round, 0)
        parameters = vote_parameters(self.model, instruction.vote_keys, instruction.num_coordinates)
        batches = [
            partition_batch(self.data, instruction, j) for j in range(instruction.num_partitions)
        ]
        gradients, _ = partition_gradients(
            self.model, batches, loss_fn=nn.functional.cross_entropy, parameters=parameters
        )
        return gradients.numpy()

    def score(
        self,
        strategy: DirectionStrategy,
        run_round: int,
        arrays: ArrayRecord,
        direction: np.ndarray,
        *,
        coded: bool,
    ) -> dict[str, float]:
        """Return the round's metrics of ``direction``, applied at ``arrays`` in ``run_round``.

        ``coded``: also the partition-majority error (nodes vote on partitions).
        """
        gradients = self.partition_gradients(strategy, run_round, arrays)
        honest_mean = gradients.mean(axis=0, dtype=np.float64)
        metrics = {
            METRIC_WEIGHTED_SIGN_ERROR: weighted_sign_error(direction, honest_mean),
            METRIC_COSINE: cosine_similarity(direction, honest_mean),
        }
        if coded:
            sign_sum = np.sign(gradients).astype(np.int32).sum(axis=0)
            metrics[METRIC_PARTITION_MAJORITY_ERROR] = vote_error_rate(direction, sign_sum)
        return metrics
