"""The honest ClientApp of this project's experiments, built on the client API.

A node is one worker, one row of the allocation code. The model, the dataset and the
honest noise level come from the run config (:class:`fl_election.config.RunConfig`); the
work itself is :func:`fl_election.clients.coded_train`. Byzantine rows are chosen by the
run config too (``byzantine-count``, ``byzantine-selection``, ``byzantine-ids``, over the
code rows the strategy assigns, so ``worst`` picks the rows that hurt the code most); the
mod that mounts their attack is :func:`fl_election.clients.make_byzantine_mod`, which a
SuperNode's node config (``byzantine=true``) overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from fl_election import contract
from fl_election.aggregation import coordinate_median
from fl_election.attacks import SignAttack
from fl_election.config import ConfigValue, RunConfig
from fl_election.contract import TrainInstruction
from fl_election.data import DatasetSplits, augment_batch, load_dataset
from fl_election.models import create_model
from fl_election.strategies import vector_oracle
from fl_election.training import evaluate as evaluate_model

from .coded import coded_train, default_device
from .mods import make_byzantine_mod

app = ClientApp()

DEVICE = default_device()


@lru_cache(maxsize=8)
def _parse(items: frozenset[tuple[str, ConfigValue]]) -> RunConfig:
    # Only the server writes outputs: a node on another machine must not refuse the run
    # because the server's output folder does not exist there.
    return RunConfig.from_run_config({**dict(items), "output-dir": "outputs"})


def run_config(context: Context) -> RunConfig:
    """Return the validated :class:`RunConfig` of this node's run (cached per process)."""
    return _parse(frozenset(context.run_config.items()))


@lru_cache(maxsize=8)
def _byzantine_rows(cfg: RunConfig) -> frozenset[int]:
    return frozenset(cfg.byzantine_workers())


@lru_cache(maxsize=8)
def run_attack(cfg: RunConfig) -> SignAttack:
    """Return the run's attack, bound to what it needs beyond its parameters.

    ``min-margin`` gets the code's rows and the Byzantine rows; the line-searched
    ``optimal-alie`` / ``optimal-ipm`` get the aggregator in use (the one the server builds
    from the same run config, as :func:`~fl_election.strategies.vector_oracle` evaluates it
    on vectors; ``fgm``'s coordinate-wise median). Attacks never import
    aggregators: this is where the two meet.
    """
    # Any: the fields bound here belong to the subclasses, not to SignAttack.
    attack: Any = cfg.create_attack()
    fields = {f.name for f in dataclasses.fields(attack)}
    if attack.needs_partition_signs:
        code = cfg.allocation_code()
        rows = tuple(code.partitions_of(i) for i in range(code.n))
        attack = dataclasses.replace(
            attack, rows=rows, byzantine_rows=tuple(sorted(_byzantine_rows(cfg)))
        )
    if "aggregate" in fields:
        aggregate: Callable[[np.ndarray], np.ndarray]
        if cfg.aggregation == "fgm":
            aggregate = coordinate_median
        else:
            aggregate = vector_oracle(cfg.aggregation, cfg.num_workers, cfg.byzantine_count)
        attack = dataclasses.replace(attack, aggregate=aggregate)
    bound: SignAttack = attack
    return bound


def select_attack(context: Context, instruction: TrainInstruction) -> SignAttack | None:
    """Return the run config's attack for this node's code row, or ``None`` (honest)."""
    cfg = run_config(context)
    if cfg.byzantine_count == 0 or cfg.attack == "none":
        return None
    if instruction.worker_index not in _byzantine_rows(cfg):
        return None
    return run_attack(cfg)


def dataset(cfg: RunConfig) -> DatasetSplits:
    """Return the run's dataset (cached by :func:`fl_election.data.load_dataset`)."""
    return load_dataset(cfg.dataset, root=cfg.data_root or None, download=cfg.download)


_models: dict[tuple[str, tuple[int, ...], int], nn.Module] = {}


def node_model(cfg: RunConfig, splits: DatasetSplits) -> nn.Module:
    """Return the run's model, built once per process (each message loads its arrays)."""
    key = (cfg.model, splits.input_shape, splits.num_classes)
    if key not in _models:
        model = create_model(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed)
        # A SuperNode on a GPU machine computes there; the training functions move each
        # batch to the model's device and hand back CPU tensors.
        _models[key] = model.to(DEVICE)
    return _models[key]


@app.train(mods=[make_byzantine_mod(select=select_attack)])
def train(msg: Message, context: Context) -> Message:
    """Compute this worker's vote (or its float gradient for FGM) and reply."""
    cfg = run_config(context)
    torch.set_num_threads(cfg.num_threads)
    splits = dataset(cfg)
    return coded_train(
        msg,
        node_model(cfg, splits),
        nn.functional.cross_entropy,
        (splits.train_x, splits.train_y),
        context=context,
        augment=augment_batch if splits.augment else None,
        noise_std=cfg.grad_noise_std,
    )


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Report the received model's loss and accuracy on the test set."""
    cfg = run_config(context)
    torch.set_num_threads(cfg.num_threads)
    splits = dataset(cfg)
    arrays = msg.content[contract.ARRAYS]
    assert isinstance(arrays, ArrayRecord)
    model = node_model(cfg, splits)
    model.load_state_dict(arrays.to_torch_state_dict())
    loss, accuracy = evaluate_model(model, splits.test_x, splits.test_y)
    metrics = MetricRecord(
        {"test-loss": loss, "test-accuracy": accuracy, "num-examples": len(splits.test_y)}
    )
    return Message(content=RecordDict({contract.METRICS: metrics}), reply_to=msg)
