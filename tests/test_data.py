from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fl_election.data import (
    DATASETS,
    DatasetSplits,
    augment_batch,
    flip_labels,
    load_dataset,
    partition_indices,
    step_batch,
)


def test_registry_lists_the_four_datasets() -> None:
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10")


def test_digits_shapes_split_and_standardization() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, DatasetSplits)
    assert ds.name == "digits"
    assert ds.train_x.shape == (1437, 1, 8, 8)
    assert ds.test_x.shape == (360, 1, 8, 8)
    assert ds.train_y.shape == (1437,)
    assert ds.test_y.shape == (360,)
    assert ds.train_x.dtype == torch.float32 and ds.test_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    assert ds.num_classes == 10
    assert ds.input_shape == (1, 8, 8)
    assert ds.augment is False
    # Standardized on the training set: each pixel has mean 0 and std 1 or 0 (constant pixels).
    flat = ds.train_x.reshape(ds.train_x.shape[0], -1).double()
    assert torch.allclose(flat.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    stds = flat.std(0, unbiased=False)
    assert bool(((stds - 1).abs() < 1e-4).logical_or(stds < 1e-6).all())
    assert int((stds > 0.5).sum()) > 50


def test_digits_split_is_stratified_and_disjoint() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    train_counts = torch.bincount(ds.train_y, minlength=10).numpy()
    test_counts = torch.bincount(ds.test_y, minlength=10).numpy()
    labels = load_digits().target
    total = np.bincount(labels, minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, total)
    # Stratified: every class keeps about 20 % of its samples in the test set.
    assert np.all(np.abs(test_counts - 0.2 * total) <= 1)


def test_load_dataset_is_cached_and_deterministic() -> None:
    assert load_dataset("digits") is load_dataset("digits")


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_torchvision_dataset_explains_how_to_get_it(name: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download=True") as info:
        load_dataset(name, root=str(tmp_path))
    assert "root" in str(info.value)
    # Nothing was downloaded.
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_partition_indices_disjoint_cover_near_equal() -> None:
    shards = partition_indices(1437, 15, seed=3)
    assert len(shards) == 15
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    everything = np.concatenate(shards)
    np.testing.assert_array_equal(np.sort(everything), np.arange(1437))
    again = partition_indices(1437, 15, seed=3)
    for a, b in zip(shards, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = partition_indices(1437, 15, seed=4)
    assert any(not np.array_equal(a, b) for a, b in zip(shards, other, strict=True))


@pytest.mark.parametrize(
    ("num_samples", "k", "seed"), [(0, 1, 0), (10, 0, 0), (10, 11, 0), (10, 2, -1)]
)
def test_partition_indices_rejects_bad_input(num_samples: int, k: int, seed: int) -> None:
    with pytest.raises(ValueError):
        partition_indices(num_samples, k, seed)


def test_step_batch_is_a_pure_function_of_its_arguments() -> None:
    shard = np.arange(100, 200)
    first = step_batch(shard, step=5, partition=2, seed=7, size=16)
    # A different array object with the same content, as another worker would hold.
    second = step_batch(shard.copy(), step=5, partition=2, seed=7, size=16)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.int64
    assert len(first) == 16
    assert len(set(first.tolist())) == 16  # without replacement
    assert set(first.tolist()) <= set(shard.tolist())


def test_step_batch_differs_across_steps_partitions_and_seeds() -> None:
    shard = np.arange(1000)
    base = step_batch(shard, 0, 0, 0, 16)
    assert not np.array_equal(base, step_batch(shard, 1, 0, 0, 16))
    assert not np.array_equal(base, step_batch(shard, 0, 1, 0, 16))
    assert not np.array_equal(base, step_batch(shard, 0, 0, 1, 16))


def test_step_batch_with_replacement_when_shard_is_small() -> None:
    shard = np.array([3, 8, 11])
    batch = step_batch(shard, 0, 0, 0, 10)
    assert len(batch) == 10
    assert set(batch.tolist()) <= {3, 8, 11}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shard": np.array([], dtype=np.int64)},
        {"shard": np.zeros((2, 2), dtype=np.int64)},
        {"size": 0},
        {"step": -1},
        {"partition": -1},
        {"seed": -1},
    ],
)
def test_step_batch_rejects_bad_input(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "shard": np.arange(10),
        "step": 0,
        "partition": 0,
        "seed": 0,
        "size": 4,
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        step_batch(**args)  # type: ignore[arg-type]


def _reference_augment(x: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    crop = padded[:, top : top + x.shape[1], left : left + x.shape[2]]
    return crop.flip(-1) if flip else crop


def test_augment_batch_is_deterministic_and_a_crop_or_flip() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 32, 32, generator=gen)
    first = augment_batch(x, step=3, partition=1, seed=9)
    second = augment_batch(x.clone(), step=3, partition=1, seed=9)
    assert first.shape == x.shape and first.dtype == x.dtype
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, augment_batch(x, step=4, partition=1, seed=9))
    assert not torch.equal(first, augment_batch(x, step=3, partition=2, seed=9))
    # Each output image is one of the 81 * 2 crops/flips of its own input.
    flips_seen = set()
    for image, out in zip(x, first, strict=True):
        matches = [
            (top, left, flip)
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
            if torch.equal(_reference_augment(image, top, left, flip), out)
        ]
        assert matches
        flips_seen.update(flip for _, _, flip in matches)
    assert flips_seen == {False, True}


def test_augment_batch_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        augment_batch(torch.zeros(4, 32, 32), 0, 0, 0)


def test_flip_labels() -> None:
    y = torch.tensor([0, 1, 9, 4])
    torch.testing.assert_close(flip_labels(y, 10), torch.tensor([9, 8, 0, 5]))
    torch.testing.assert_close(flip_labels(flip_labels(y, 10), 10), y)
    with pytest.raises(ValueError):
        flip_labels(torch.tensor([10]), 10)
    with pytest.raises(ValueError):
        flip_labels(torch.tensor([0.0]), 10)
    with pytest.raises(ValueError):
        flip_labels(y, 1)


def test_dirichlet_partitions_cover_every_sample_once_and_skew_the_labels():
    from fl_election.data import dirichlet_partition_indices, partition_indices

    labels = np.repeat(np.arange(10), 50)
    skewed = dirichlet_partition_indices(labels, 5, alpha=0.1, seed=3)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(500))
    assert all(len(shard) >= 1 for shard in skewed)
    again = dirichlet_partition_indices(labels, 5, alpha=0.1, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))

    def classes_per_shard(shards):
        # classes holding 90 % of each shard's samples, averaged over shards
        counts = []
        for shard in shards:
            sizes = np.sort(np.bincount(labels[shard], minlength=10))[::-1]
            counts.append(int(np.searchsorted(np.cumsum(sizes), 0.9 * len(shard)) + 1))
        return float(np.mean(counts))

    assert classes_per_shard(skewed) < 5 < classes_per_shard(partition_indices(500, 5, 3))
    tiny = dirichlet_partition_indices(np.zeros(6, dtype=int), 6, alpha=0.01, seed=0)
    assert all(len(shard) == 1 for shard in tiny)  # empty shards borrow a sample
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition_indices(labels, 5, alpha=0.0, seed=0)


def test_a_skewed_instruction_draws_each_slice_from_its_skewed_shard():
    import torch

    from fl_election.clients.coded import partition_batch
    from fl_election.contract import TrainInstruction

    y = torch.from_numpy(np.repeat(np.arange(10), 40))
    data = (torch.zeros(400, 2), y)

    def labels_seen(alpha):
        instruction = TrainInstruction(
            server_round=1, step=0, seed=1, worker_index=0, num_workers=5,
            num_partitions=5, partition_ids=(0,), partition_batch_size=40,
            vote_keys=("w",), num_coordinates=1, dirichlet_alpha=alpha,
        )  # fmt: skip
        return [len(set(partition_batch(data, instruction, j)[1].tolist())) for j in range(5)]

    assert np.mean(labels_seen(0.05)) < 6 < np.mean(labels_seen(0.0))
