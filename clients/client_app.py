"""The honest ClientApp of an election-coded run.

A node is one worker, one row of the allocation code. Each train message names the
partitions the node holds (``partition-ids``), the step and the seed; for every partition
the node takes that partition's slice of the step's global minibatch (the same samples on
every node holding it), computes the gradient, its sign, the local majority over its
partitions, and replies with the majority packed to 1 bit per coordinate
(:func:`fl_election.voting.pack_signs`). Byzantine behaviour is added from outside by the
mods in :mod:`clients.mods`; this file only knows honest work.

Wire format of a train reply (what :class:`strategies.ElectionCoding` reads):

- ``vote`` (ArrayRecord): ``signs`` (uint8 sign plane) and, only when the local vote has
  zeros, ``abstain`` or its zlib form ``abstain-zlib`` (:mod:`fl_election.wire`); or
  ``gradient`` (float32) when the server asked for
  ``payload = "gradient"`` (the FGM baseline); ``sign-sum`` (int16, sum of the partition
  signs) only when a mod asked for ``return-sign-sum``.
- ``buffers`` (ArrayRecord): float batch-norm statistics, for models that have them.
- ``metrics`` (MetricRecord): ``num-examples``, ``train-loss``, ``compute-time``,
  ``num-coordinates``, ``num-partitions``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.context import run_config
from clients.mods import byzantine_mod
from fl_election.config import ConfigValue, RunConfig
from fl_election.data import (
    DatasetSplits,
    augment_batch,
    flip_labels,
    load_dataset,
    partition_indices,
    step_batch,
)
from fl_election.models import buffer_names, create_model
from fl_election.training import evaluate as evaluate_model
from fl_election.training import partition_gradients, partition_signs
from fl_election.voting import local_majority
from fl_election.wire import encode_vote

app = ClientApp()

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def dataset(cfg: RunConfig) -> DatasetSplits:
    """Return the run's dataset (cached by :func:`fl_election.data.load_dataset`)."""
    return load_dataset(cfg.dataset, root=cfg.data_root or None, download=cfg.download)


@lru_cache(maxsize=8)
def _shards(num_samples: int, k: int, seed: int) -> tuple[np.ndarray, ...]:
    return tuple(partition_indices(num_samples, k, seed))


def load_model(cfg: RunConfig, splits: DatasetSplits, arrays: ArrayRecord) -> torch.nn.Module:
    """Build the run's model and load the server's arrays into it."""
    model = create_model(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed)
    model.load_state_dict(arrays.to_torch_state_dict())
    # A SuperNode on a GPU machine computes there; the training functions move each batch
    # to the model's device and hand back CPU tensors.
    return model.to(DEVICE)


def partition_batches(
    splits: DatasetSplits,
    partitions: list[int],
    *,
    step: int,
    seed: int,
    k: int,
    slice_size: int,
    label_flip: bool,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return each held partition's slice of the step's global minibatch."""
    shards = _shards(len(splits.train_y), k, seed)
    batches = []
    for j in partitions:
        if not 0 <= j < k:
            raise ValueError(f"partition id {j} is outside [0, {k - 1}]")
        index = torch.from_numpy(step_batch(shards[j], step, j, seed, slice_size))
        x, y = splits.train_x[index], splits.train_y[index]
        if splits.augment:
            x = augment_batch(x, step, j, seed)
        if label_flip:  # data poisoning, requested by a Byzantine mod
            y = flip_labels(y, splits.num_classes)
        batches.append((x, y))
    return batches


def _noise_seed(seed: int, step: int, worker: int) -> int:
    # Independent noise per worker: noisy copies of a partition disagree, as in the paper.
    return int(np.random.SeedSequence([seed, step, worker]).generate_state(1)[0])


@app.train(mods=[byzantine_mod])
def train(msg: Message, context: Context) -> Message:
    """Compute this worker's vote (or its float gradient for FGM) and reply."""
    started = time.perf_counter()
    cfg = run_config(context)
    torch.set_num_threads(cfg.num_threads)
    conf: Mapping[str, ConfigValue | list[int]] = msg.content["config"]
    step, seed = int(conf["step"]), int(conf["seed"])  # type: ignore[arg-type]
    k = int(conf["num-partitions"])  # type: ignore[arg-type]
    worker = int(conf.get("worker-index", 0))  # type: ignore[arg-type]
    partitions = [int(j) for j in conf["partition-ids"]]  # type: ignore[union-attr]
    splits = dataset(cfg)
    model = load_model(cfg, splits, msg.content["arrays"])
    batches = partition_batches(
        splits,
        partitions,
        step=step,
        seed=seed,
        k=k,
        slice_size=max(1, cfg.batch_size // k),
        label_flip=bool(conf.get("label-flip", False)),
    )

    vote = ArrayRecord()
    if conf.get("payload", "sign-vote") == "gradient":
        gradients, losses = partition_gradients(model, batches)
        vote["gradient"] = Array(gradients.mean(dim=0).numpy().astype(np.float32))
        if conf.get("return-sign-sum", False):
            signs = torch.sign(gradients).to(torch.int16)
            vote["sign-sum"] = Array(signs.sum(dim=0, dtype=torch.int16).numpy())
        num_coordinates = gradients.shape[1]
        num_examples = sum(len(y) for _, y in batches)
    else:
        noise_std = float(conf.get("grad-noise-std", cfg.grad_noise_std))  # type: ignore[arg-type]
        result = partition_signs(
            model, batches, noise_std=noise_std, noise_seed=_noise_seed(seed, step, worker)
        )
        for key, array in encode_vote(local_majority(result.signs)).items():
            vote[key] = Array(array)
        if conf.get("return-sign-sum", False):
            vote["sign-sum"] = Array(result.signs.sum(dim=0, dtype=torch.int16).numpy())
        losses, num_examples = result.losses, result.num_examples
        num_coordinates = result.signs.shape[1]

    content = RecordDict(
        {
            "vote": vote,
            "metrics": MetricRecord(
                {
                    "num-examples": num_examples,
                    "train-loss": float(np.mean(losses)),
                    "compute-time": time.perf_counter() - started,
                    "num-coordinates": int(num_coordinates),
                    "num-partitions": len(partitions),
                }
            ),
        }
    )
    names = buffer_names(model)
    if names:
        state = model.state_dict()
        content["buffers"] = ArrayRecord(
            {name: Array(state[name].detach().cpu().numpy().astype(np.float32)) for name in names}
        )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Report the received model's loss and accuracy on the test set."""
    cfg = run_config(context)
    torch.set_num_threads(cfg.num_threads)
    splits = dataset(cfg)
    model = load_model(cfg, splits, msg.content["arrays"])
    loss, accuracy = evaluate_model(model, splits.test_x, splits.test_y)
    metrics = MetricRecord(
        {"test-loss": loss, "test-accuracy": accuracy, "num-examples": len(splits.test_y)}
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
