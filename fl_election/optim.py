"""Server-side update of election-coded SignSGD: momentum SGD on the majority-vote direction.

Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning: Protecting SignSGD against
Byzantine Attacks", NeurIPS 2020 (arXiv:1910.06093). As in the authors' code (borrowed from
DRACO), the master applies the global majority vote ``v`` with server-side momentum and weight
decay::

    d   = v + weight_decay * w
    buf = momentum * buf + d
    w   = w - lr * buf

The same update with the coordinate-wise median gradient as ``v`` is the FGM baseline. Pure
numpy, float32.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SignMomentumSGD", "fingerprint", "flatten_arrays", "step_lr", "unflatten_arrays"]

FloatArray = npt.NDArray[np.float32]


class SignMomentumSGD:
    """Momentum SGD with L2 weight decay added to the direction, on float32 vectors.

    The momentum buffer starts at zero and is created on the first :meth:`step`.

    Parameters
    ----------
    momentum : float (default: 0.9)
        Momentum coefficient, in ``[0, 1)``.
    weight_decay : float (default: 1e-4)
        L2 coefficient added to the direction, ``>= 0``.
    """

    def __init__(self, momentum: float = 0.9, weight_decay: float = 1e-4) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if not (weight_decay >= 0.0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.buf: FloatArray | None = None

    def step(self, params: npt.ArrayLike, direction: npt.ArrayLike, lr: float) -> FloatArray:
        """Apply one update and return the new parameters.

        Parameters
        ----------
        params : array_like
            Current parameters ``w`` (any shape; cast to float32; not modified).
        direction : array_like
            Update direction ``v`` with the shape of ``params``: the majority vote in
            {-1, 0, +1} or the median gradient.
        lr : float
            Learning rate, ``> 0``.

        Returns
        -------
        np.ndarray
            ``w - lr * buf`` as a new float32 array.
        """
        if not (lr > 0.0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        weights = np.asarray(params, dtype=np.float32)
        vote = np.asarray(direction, dtype=np.float32)
        if vote.shape != weights.shape:
            raise ValueError(
                f"direction has shape {vote.shape} but params have shape {weights.shape}"
            )
        if self.buf is not None and self.buf.shape != weights.shape:
            raise ValueError(
                f"params have shape {weights.shape} but the momentum buffer has shape "
                f"{self.buf.shape}"
            )
        update = vote + np.float32(self.weight_decay) * weights
        if self.buf is None:
            self.buf = update
        else:
            self.buf = np.float32(self.momentum) * self.buf + update
        new_weights: FloatArray = weights - np.float32(lr) * self.buf
        return new_weights

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and a copy of the momentum buffer (None before the first step)."""
        return {
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "buf": None if self.buf is None else self.buf.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`.

        Parameters
        ----------
        state : dict[str, Any]
            Must hold ``"momentum"``, ``"weight_decay"`` and ``"buf"`` (an array or None).
        """
        missing = {"momentum", "weight_decay", "buf"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        restored = SignMomentumSGD(float(state["momentum"]), float(state["weight_decay"]))
        self.momentum = restored.momentum
        self.weight_decay = restored.weight_decay
        buf = state["buf"]
        self.buf = None if buf is None else np.array(buf, dtype=np.float32, copy=True)


def step_lr(step: int, base_lr: float, milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """Step-decay learning rate: ``base_lr * gamma ** (number of milestones <= step)``.

    Parameters
    ----------
    step : int
        Current step (non-negative).
    base_lr : float
        Learning rate before the first milestone (``> 0``).
    milestones : Sequence[int] (default: ())
        Steps at which the rate is multiplied by ``gamma`` (non-negative).
    gamma : float (default: 0.1)
        Decay factor (``> 0``).

    Returns
    -------
    float
        The learning rate for ``step``.
    """
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if not (base_lr > 0.0 and math.isfinite(base_lr)):
        raise ValueError(f"base_lr must be a finite number > 0, got {base_lr}")
    if not (gamma > 0.0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma}")
    if any(milestone < 0 for milestone in milestones):
        raise ValueError(f"milestones must be non-negative, got {list(milestones)}")
    passed = sum(1 for milestone in milestones if step >= milestone)
    return float(base_lr * gamma**passed)


def flatten_arrays(arrays: Sequence[npt.ArrayLike]) -> FloatArray:
    """Concatenate arrays (raveled, C order) into one float32 vector.

    Parameters
    ----------
    arrays : Sequence[array_like]
        The arrays, e.g. a model's trainable parameters.

    Returns
    -------
    np.ndarray
        1-D float32 vector; empty if ``arrays`` is empty.
    """
    if len(arrays) == 0:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])


def unflatten_arrays(flat: npt.ArrayLike, shapes: Sequence[Sequence[int]]) -> list[FloatArray]:
    """Cut a flat vector back into float32 arrays of the given shapes (inverse of flatten).

    Parameters
    ----------
    flat : array_like
        1-D vector whose length is the total size of ``shapes``.
    shapes : Sequence[Sequence[int]]
        Target shapes, in order.

    Returns
    -------
    list[np.ndarray]
        New float32 arrays (copies, not views of ``flat``).
    """
    vector = np.asarray(flat, dtype=np.float32)
    if vector.ndim != 1:
        raise ValueError(f"flat must be 1-D, got shape {vector.shape}")
    if any(size < 0 for shape in shapes for size in shape):
        raise ValueError(f"shapes must have non-negative sizes, got {list(shapes)}")
    sizes = [math.prod(shape) for shape in shapes]
    if sum(sizes) != vector.size:
        raise ValueError(f"shapes hold {sum(sizes)} values but flat has {vector.size}")
    arrays: list[FloatArray] = []
    offset = 0
    for shape, size in zip(shapes, sizes, strict=True):
        arrays.append(vector[offset : offset + size].reshape(tuple(shape)).copy())
        offset += size
    return arrays


def fingerprint(arrays: Sequence[npt.ArrayLike]) -> int:
    """Return a 63-bit fingerprint of arrays (their dtypes, shapes and bytes, in order).

    Server and nodes compare it to know that a node's copy of the model is the server's,
    bit for bit (BLAKE2b, so an accidental match is out of the question).

    Parameters
    ----------
    arrays : Sequence[array_like]
        The arrays, in a fixed order.

    Returns
    -------
    int
        A non-negative integer below ``2**63`` (it fits a Flower ``MetricRecord``).
    """
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        value = np.ascontiguousarray(array)
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(value.reshape(-1).view(np.uint8).data)
    return int.from_bytes(digest.digest(), "big") & ((1 << 63) - 1)
