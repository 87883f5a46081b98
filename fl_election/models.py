"""Models for election-coded SignSGD.

The paper (Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning: Protecting SignSGD
against Byzantine Attacks", NeurIPS 2020, arXiv:1910.06093) trains ResNet-18 on CIFAR-10; the
small MLP and CNN make the same method runnable on the offline digits dataset.

Which coordinates a vote covers is the contract's business (:mod:`fl_election.contract`):
trainable parameters only; BatchNorm running statistics travel as buffers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MODELS", "BasicBlock", "ResNet18", "create_model"]

MODELS: tuple[str, ...] = ("mlp", "cnn", "resnet18")
"""Names accepted by :func:`create_model`."""

_MLP_HIDDEN = 128


def create_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> nn.Module:
    """Build a model with a deterministic initialisation.

    The weights depend only on the arguments, not on torch's global random state (which is
    saved and restored), so a server and its clients that call this with the same ``seed``
    start from the same model.

    - ``"mlp"``: Flatten, Linear(F, 128), ReLU, Linear(128, 128), ReLU, Linear(128, classes).
    - ``"cnn"``: Conv3x3(C, 32), ReLU, MaxPool2, Conv3x3(32, 64), ReLU, AdaptiveAvgPool(4x4),
      Linear(1024, 128), ReLU, Linear(128, classes); works for 8x8, 28x28 and 32x32 inputs.
    - ``"resnet18"``: the CIFAR ResNet-18 (3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2],
      BatchNorm); 11,173,962 parameters for 3x32x32 inputs and 10 classes.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    input_shape : tuple[int, ...]
        Shape of one input; ``(C, H, W)`` for ``"cnn"`` and ``"resnet18"``.
    num_classes : int
        Number of output classes (at least 2).
    seed : int (default: 0)
        Seed of the initialisation.

    Returns
    -------
    torch.nn.Module
        The model, in training mode, on the CPU.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if len(input_shape) == 0 or any(size < 1 for size in input_shape):
        raise ValueError(f"input_shape must be non-empty with positive sizes, got {input_shape}")
    if name != "mlp" and len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs input_shape (C, H, W), got {input_shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "mlp":
            return _mlp(math.prod(input_shape), num_classes)
        if name == "cnn":
            return _cnn(input_shape[0], num_classes)
        return ResNet18(in_channels=input_shape[0], num_classes=num_classes)


def _mlp(num_features: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(num_features, _MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(_MLP_HIDDEN, _MLP_HIDDEN),
        nn.ReLU(),
        nn.Linear(_MLP_HIDDEN, num_classes),
    )


def _cnn(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(),
        # Adaptive pooling gives the same head for 8x8 (digits), 28x28 and 32x32 inputs.
        nn.AdaptiveAvgPool2d((4, 4)),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with BatchNorm and an identity/1x1 shortcut.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Output channels.
    stride : int (default: 1)
        Stride of the first convolution (and of the projection shortcut).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (He et al. 2016; 3x3 stem, no max-pool), as in the paper's runs.

    Parameters
    ----------
    in_channels : int (default: 3)
        Input channels.
    num_classes : int (default: 10)
        Output classes.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the logits."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        logits: torch.Tensor = self.linear(torch.flatten(self.pool(out), 1))
        return logits
