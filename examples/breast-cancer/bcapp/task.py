"""The app's own model, loss and data: nothing here comes from fl-election.

A 30-16-1 MLP with a single logit and a BCE loss on scikit-learn's bundled breast-cancer
data (569 samples, offline). The model deliberately has what trips a naive integration:
float buffers that are not batch-norm statistics (the input standardisation), a frozen
parameter, and a BatchNorm layer.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

_data = load_breast_cancer()
_x = torch.tensor(_data.data, dtype=torch.float32)
_y = torch.tensor(_data.target, dtype=torch.float32)
_order = torch.randperm(len(_y), generator=torch.Generator().manual_seed(0))
_train, _test = _order[:455], _order[455:]


def load_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Return ``(train, test)``, each a pair ``(features, targets)``."""
    return (_x[_train], _y[_train]), (_x[_test], _y[_test])


class Net(nn.Module):
    """Standardise, then 30-16-1 with BatchNorm; one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", _x[_train].mean(dim=0))
        self.register_buffer("std", _x[_train].std(dim=0))
        self.input_gain = nn.Parameter(torch.ones(30), requires_grad=False)  # frozen
        self.hidden = nn.Linear(30, 16)
        self.norm = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per sample."""
        z = (x - self.mean) / self.std * self.input_gain
        return self.out(torch.relu(self.norm(self.hidden(z)))).squeeze(-1)


loss_fn = nn.BCEWithLogitsLoss()
