"""Datasets, i.i.d. partitions and per-step minibatch slices for election-coded SignSGD.

The data model follows Sohn, Han, Choi, Moon, "Election Coding for Distributed Learning:
Protecting SignSGD against Byzantine Attacks", NeurIPS 2020 (arXiv:1910.06093): the training set
is split into ``k`` disjoint partitions; at every step one global minibatch of size ``B`` is cut
into ``k`` slices of ``B / k`` samples, slice ``j`` coming from partition ``j``. Every worker that
holds partition ``j`` must compute on exactly the same samples, so the slice (and its data
augmentation) is a pure function of ``(shard, step, partition, seed)``; see :func:`step_batch`
and :func:`augment_batch`.

Datasets are loaded whole into memory as tensors (they are small) and cached per process, since
simulation workers call :func:`load_dataset` every round.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_ROOT",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "DatasetSplits",
    "augment_batch",
    "flip_labels",
    "load_dataset",
    "partition_indices",
    "step_batch",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10")
"""Names accepted by :func:`load_dataset`."""

DEFAULT_DATA_ROOT = os.path.join("~", ".cache", "fl-election", "data")
"""Where torchvision datasets are looked for (and downloaded to) when ``root`` is None.

The environment variable ``FL_ELECTION_DATA`` overrides it.
"""

DIGITS_SPLIT_SEED = 0
"""``random_state`` of the stratified train/test split of the digits dataset."""

DIGITS_TEST_FRACTION = 0.2
"""Fraction of the 1797 digits samples held out for testing (360 test, 1437 train)."""

# Usual per-channel statistics of the training sets (pixel values in [0, 1]).
_CHANNEL_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

# Separates the augmentation random stream from the minibatch-sampling stream of the same
# (seed, step, partition), so that changing one never shifts the other.
_AUGMENT_STREAM = 1


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset held in memory as tensors.

    The tensors are shared by every caller of :func:`load_dataset` in a process (they are
    cached); do not modify them in place.

    Attributes
    ----------
    name : str
        Registry name, one of :data:`DATASETS`.
    train_x : torch.Tensor
        Training inputs, float32, shape ``(N, C, H, W)`` (or ``(N, F)``), normalized.
    train_y : torch.Tensor
        Training labels, int64, shape ``(N,)``.
    test_x : torch.Tensor
        Test inputs, float32, normalized like ``train_x``.
    test_y : torch.Tensor
        Test labels, int64.
    num_classes : int
        Number of classes; labels lie in ``[0, num_classes)``.
    input_shape : tuple[int, ...]
        Shape of one input, e.g. ``(1, 8, 8)``.
    augment : bool
        Whether training batches get random crop (pad 4) and horizontal flip
        (:func:`augment_batch`); True for CIFAR-10.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augment: bool


def load_dataset(name: str, root: str | None = None, download: bool = False) -> DatasetSplits:
    """Load a dataset into memory (cached per process).

    ``"digits"`` is scikit-learn's bundled 8x8 handwritten digits set (1797 samples, offline):
    pixels are scaled to [0, 1] (``x / 16``), split 80/20 with a stratified split seeded by
    :data:`DIGITS_SPLIT_SEED` (1437 train, 360 test), then standardized per pixel with the
    training set's mean and standard deviation (pixels that are constant on the training set
    are only centred). Inputs have shape ``(1, 8, 8)``.

    ``"mnist"``, ``"fashion-mnist"`` and ``"cifar10"`` come from torchvision, normalized with the
    usual per-channel mean and standard deviation. They are downloaded only when ``download`` is
    True; otherwise the files must already be under ``root``.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : str or None (default: None)
        Directory of the torchvision datasets; None means :data:`DEFAULT_DATA_ROOT` (or the
        ``FL_ELECTION_DATA`` environment variable). Ignored for ``"digits"``.
    download : bool (default: False)
        Download a missing torchvision dataset into ``root``.

    Returns
    -------
    DatasetSplits
        The dataset; the same object is returned for repeated calls with the same arguments.

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    FileNotFoundError
        If a torchvision dataset is absent and ``download`` is False.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        return _load_digits()
    if root is None:
        root = os.environ.get("FL_ELECTION_DATA", DEFAULT_DATA_ROOT)
    resolved_root = str(Path(root).expanduser().resolve())
    return _load_torchvision(name, resolved_root, bool(download))


@functools.lru_cache(maxsize=1)
def _load_digits() -> DatasetSplits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features, labels = load_digits(return_X_y=True)
    features = features.astype(np.float64) / 16.0
    train_x, test_x, train_y, test_y = train_test_split(
        features,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        random_state=DIGITS_SPLIT_SEED,
        stratify=labels,
    )
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    # Border pixels are always 0 in the training set: centre them but do not divide by 0.
    std = np.where(std > 0.0, std, 1.0)
    train_x = (train_x - mean) / std
    test_x = (test_x - mean) / std
    return DatasetSplits(
        name="digits",
        train_x=torch.from_numpy(train_x.astype(np.float32).reshape(-1, 1, 8, 8)),
        train_y=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        test_x=torch.from_numpy(test_x.astype(np.float32).reshape(-1, 1, 8, 8)),
        test_y=torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
        num_classes=10,
        input_shape=(1, 8, 8),
        augment=False,
    )


@functools.lru_cache(maxsize=8)
def _load_torchvision(name: str, root: str, download: bool) -> DatasetSplits:
    from torchvision import datasets

    dataset_classes = {
        "mnist": datasets.MNIST,
        "fashion-mnist": datasets.FashionMNIST,
        "cifar10": datasets.CIFAR10,
    }
    dataset_class = dataset_classes[name]
    try:
        train_set = dataset_class(root, train=True, download=download)
        test_set = dataset_class(root, train=False, download=download)
    except RuntimeError as error:
        # torchvision signals missing or corrupt files with a RuntimeError.
        if download:
            raise
        raise FileNotFoundError(
            f"dataset {name!r} not found under {root!r} ({error}). Either pass root= the "
            f"directory that holds torchvision's {dataset_class.__name__} files, or call "
            f"load_dataset({name!r}, root=..., download=True) on a machine with network access "
            "to download it there first."
        ) from error
    mean, std = _CHANNEL_STATS[name]
    train_x = _to_normalized_tensor(train_set.data, mean, std)
    test_x = _to_normalized_tensor(test_set.data, mean, std)
    return DatasetSplits(
        name=name,
        train_x=train_x,
        train_y=torch.as_tensor(np.asarray(train_set.targets), dtype=torch.int64),
        test_x=test_x,
        test_y=torch.as_tensor(np.asarray(test_set.targets), dtype=torch.int64),
        num_classes=len(train_set.classes),
        input_shape=tuple(int(size) for size in train_x.shape[1:]),
        augment=name == "cifar10",
    )


def _to_normalized_tensor(
    images: torch.Tensor | np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Turn uint8 images (N x H x W or N x H x W x C) into normalized float32 N x C x H x W."""
    pixels = torch.as_tensor(np.asarray(images)).to(torch.float32) / 255.0
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(1)
    else:
        pixels = pixels.permute(0, 3, 1, 2)
    mean_tensor = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((pixels - mean_tensor) / std_tensor).contiguous()


def partition_indices(num_samples: int, k: int, seed: int) -> list[np.ndarray]:
    """Split ``range(num_samples)`` into ``k`` disjoint i.i.d. shards of near-equal size.

    The samples are shuffled by ``np.random.default_rng(seed)`` and cut into ``k`` consecutive
    pieces whose sizes differ by at most one; each shard is returned sorted.

    Parameters
    ----------
    num_samples : int
        Size of the training set.
    k : int
        Number of partitions, ``1 <= k <= num_samples``.
    seed : int
        Non-negative seed of the shuffle.

    Returns
    -------
    list[np.ndarray]
        ``k`` int64 index arrays that together cover ``range(num_samples)`` exactly once.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must lie in [1, num_samples={num_samples}], got {k}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    permutation = np.random.default_rng(seed).permutation(num_samples).astype(np.int64)
    return [np.sort(shard) for shard in np.array_split(permutation, k)]


def dirichlet_partition_indices(
    labels: np.ndarray, k: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Split the samples into ``k`` label-skewed shards (Dirichlet, Hsu et al., 2019).

    Each class's samples, shuffled by ``np.random.default_rng(seed)``, are cut over the
    ``k`` shards in proportions drawn from Dirichlet(``alpha``); small ``alpha`` gives each
    shard few classes, large ``alpha`` approaches i.i.d. A shard left empty takes one
    sample from the largest shard, so every shard holds at least one sample.

    Parameters
    ----------
    labels : np.ndarray
        Integer class of every training sample (1-D).
    k : int
        Number of partitions, ``1 <= k <= len(labels)``.
    alpha : float
        Dirichlet concentration, finite and ``> 0``.
    seed : int
        Non-negative seed.

    Returns
    -------
    list[np.ndarray]
        ``k`` sorted int64 index arrays that together cover every sample exactly once.
    """
    labels = np.asarray(labels).reshape(-1)
    num_samples = labels.size
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must lie in [1, num_samples={num_samples}], got {k}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be finite and > 0, got {alpha}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(k)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(k, alpha))
        cuts = (np.cumsum(proportions)[:-1] * members.size).astype(np.int64)
        for j, part in enumerate(np.split(members, cuts)):
            shards[j].extend(int(i) for i in part)
    for j in range(k):
        if not shards[j]:
            largest = max(range(k), key=lambda i: len(shards[i]))
            shards[j].append(shards[largest].pop())
    return [np.sort(np.asarray(shard, dtype=np.int64)) for shard in shards]


def step_batch(shard: np.ndarray, step: int, partition: int, seed: int, size: int) -> np.ndarray:
    """Draw partition ``partition``'s slice of step ``step``'s global minibatch.

    ``size`` indices are drawn from ``shard`` without replacement (with replacement when
    ``size > len(shard)``) by ``np.random.default_rng([seed, step, partition])``. The result
    depends only on the arguments, so every worker holding the partition draws the same slice.

    Parameters
    ----------
    shard : np.ndarray
        The partition's sample indices (1-D, non-empty).
    step : int
        Training step (non-negative).
    partition : int
        Partition number (non-negative).
    seed : int
        Run seed shared by all workers (non-negative).
    size : int
        Slice size ``B / k`` (positive).

    Returns
    -------
    np.ndarray
        ``size`` int64 indices taken from ``shard``.
    """
    shard = np.asarray(shard)
    if shard.ndim != 1 or shard.size == 0:
        raise ValueError(f"shard must be a non-empty 1-D index array, got shape {shard.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    _check_stream_key(step, partition, seed)
    rng = np.random.default_rng([seed, step, partition])
    chosen: np.ndarray = rng.choice(shard, size=size, replace=size > shard.size)
    return chosen.astype(np.int64)


def augment_batch(
    x: torch.Tensor, step: int, partition: int, seed: int, *, padding: int = 4
) -> torch.Tensor:
    """Random crop (after zero padding) and random horizontal flip, seeded per slice.

    Each image is padded by ``padding`` pixels on every side, cropped back to its size at a
    random offset and mirrored with probability 1/2. The randomness comes from
    ``np.random.default_rng([seed, step, partition, 1])``, so every worker holding the
    partition produces the same augmented batch. Padding is 0 in the normalized space (the
    channel mean), not black.

    Parameters
    ----------
    x : torch.Tensor
        Images of shape ``(N, C, H, W)``.
    step : int
        Training step (non-negative).
    partition : int
        Partition number (non-negative).
    seed : int
        Run seed (non-negative).
    padding : int (default: 4)
        Padding before the crop (non-negative).

    Returns
    -------
    torch.Tensor
        A new tensor with the shape, dtype and device of ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    _check_stream_key(step, partition, seed)
    count, _, height, width = x.shape
    rng = np.random.default_rng([seed, step, partition, _AUGMENT_STREAM])
    top = rng.integers(0, 2 * padding + 1, size=count)
    left = rng.integers(0, 2 * padding + 1, size=count)
    flip = rng.random(size=count) < 0.5
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = torch.as_tensor(top[:, None] + np.arange(height)[None, :], device=x.device)
    column_offsets = np.where(flip[:, None], np.arange(width)[::-1], np.arange(width))
    columns = torch.as_tensor(left[:, None] + column_offsets, device=x.device)
    samples = torch.arange(count, device=x.device)
    # Advanced indices around a slice: result is (N, H, W, C); move channels back.
    cropped = padded[samples[:, None, None], :, rows[:, :, None], columns[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


def flip_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label-flipping attack: map label ``y`` to ``num_classes - 1 - y``.

    Parameters
    ----------
    y : torch.Tensor
        Integer labels in ``[0, num_classes)``.
    num_classes : int
        Number of classes (at least 2).

    Returns
    -------
    torch.Tensor
        The flipped labels (a new tensor).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {y.dtype}")
    if y.numel() > 0 and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]"
        )
    return (num_classes - 1) - y


def _check_stream_key(step: int, partition: int, seed: int) -> None:
    for label, value in (("step", step), ("partition", partition), ("seed", seed)):
        if value < 0:
            raise ValueError(f"{label} must be non-negative, got {value}")
