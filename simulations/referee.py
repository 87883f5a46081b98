"""Simulation referee: the honest majority over partitions, for the vote error rate.

A simulation knows what a deployment cannot: every partition's true gradient. Each round
the referee recomputes, at the round's model, the gradient sign of each of the strategy's
``k`` partitions on exactly the slices the nodes were asked to use (the client API's
:func:`~fl_election.clients.coded.partition_batch`), sums them, and scores the direction
the strategy applied with :func:`fl_election.aggregation.vote_error_rate`. Honest targets,
no noise, no attack: the reference is what an all-honest vote over partitions elects.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import nn

from fl_election.aggregation import vote_error_rate
from fl_election.clients.coded import partition_batch
from fl_election.data import DatasetSplits
from fl_election.strategies import DirectionStrategy
from fl_election.training import partition_signs, vote_parameters

__all__ = ["VoteReferee"]


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

    def sign_sum(
        self, strategy: DirectionStrategy, run_round: int, arrays: ArrayRecord
    ) -> np.ndarray:
        """Return the sum of the k partition gradient signs at ``arrays`` in ``run_round``."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        instruction = strategy.instruction(run_round, 0)
        parameters = vote_parameters(self.model, instruction.vote_keys, instruction.num_coordinates)
        batches = [
            partition_batch(self.data, instruction, j) for j in range(instruction.num_partitions)
        ]
        result = partition_signs(
            self.model, batches, loss_fn=nn.functional.cross_entropy, parameters=parameters
        )
        return result.signs.sum(dim=0, dtype=torch.int32).numpy()

    def score(
        self,
        strategy: DirectionStrategy,
        run_round: int,
        arrays: ArrayRecord,
        direction: np.ndarray,
    ) -> float:
        """Return the vote error rate of ``direction``, applied at ``arrays`` in ``run_round``."""
        return vote_error_rate(direction, self.sign_sum(strategy, run_round, arrays))
