"""Checkpoints of a run: everything a resumed run needs, written atomically.

One file, ``<output-dir>/<run-name>.ckpt.npz``: the model's arrays (``model/<key>``), the
optimizer's momentum buffer (``momentum``), and a JSON document (``state``) with the
round, the strategy's state (node-to-row map, quorum and churn counters, optimizer
hyper-parameters, vote and buffer keys), the config, the code and the result rows so far.
It is written to a temporary file in the same folder and renamed over the old one, so a
process killed at any moment leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Checkpoint", "checkpoint_path", "read_checkpoint", "write_checkpoint"]

_MODEL = "model/"
_MOMENTUM = "momentum"
_STATE = "state"


@dataclass
class Checkpoint:
    """A run's state after some round.

    Attributes
    ----------
    arrays : dict[str, numpy.ndarray]
        The model's arrays, in state-dict order.
    momentum : numpy.ndarray | None
        The optimizer's momentum buffer (``None`` before the first step).
    state : dict[str, Any]
        Everything else, JSON-ready (``state["strategy"]["round"]`` is the last round done).
    """

    arrays: dict[str, np.ndarray]
    momentum: np.ndarray | None
    state: dict[str, Any]

    @property
    def round(self) -> int:
        """The last round the checkpoint includes."""
        return int(self.state["strategy"]["round"])


def checkpoint_path(folder: Path, stem: str) -> Path:
    """Return the checkpoint file of run ``stem`` in ``folder``."""
    return folder / f"{stem}.ckpt.npz"


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename)."""
    payload: dict[str, np.ndarray] = {
        _MODEL + key: np.asarray(value) for key, value in checkpoint.arrays.items()
    }
    if checkpoint.momentum is not None:
        payload[_MOMENTUM] = np.asarray(checkpoint.momentum)
    state = json.dumps(checkpoint.state).encode()
    payload[_STATE] = np.frombuffer(state, dtype=np.uint8)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, **payload)  # type: ignore[arg-type]
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint`.

    Raises
    ------
    ValueError
        When the file is not such a checkpoint.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k[len(_MODEL) :]: data[k] for k in data.files if k.startswith(_MODEL)}
            momentum = data[_MOMENTUM] if _MOMENTUM in data.files else None
            state = json.loads(data[_STATE].tobytes().decode())
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path} is not a readable checkpoint ({err})") from err
    return Checkpoint(arrays=arrays, momentum=momentum, state=state)
