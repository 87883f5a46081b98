"""One experiment: build the model and strategy from a :class:`RunConfig`, train, record.

Used by the ServerApp (``flwr run .``), by the in-process grid (tests, sweeps) and by the
sweep runner, so all three produce the same JSON result: the config, the code and its
certificate, the Byzantine rows, per-round train metrics (agreement, abstentions,
rejected replies, uplink bytes) and test accuracy, and the final model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fl_election.config import FLOAT_AGGREGATIONS, RunConfig
from fl_election.contract import tied_keys, vote_keys
from fl_election.data import load_dataset
from fl_election.models import create_model
from fl_election.strategies import (
    DirectionStrategy,
    ElectionCoding,
    FlowerRobust,
    FullGradientMedian,
    create_float_aggregator,
)
from fl_election.training import evaluate

from .checkpoint import Checkpoint, checkpoint_path, read_checkpoint, write_checkpoint
from .referee import VoteReferee

#: Environment variable that anchors a relative ``output-dir`` (``flwr run`` starts the
#: ServerApp in a working directory of its own).
OUTPUT_ROOT_ENV = "FL_ELECTION_OUTPUT_ROOT"


def output_dir(cfg: RunConfig) -> Path:
    """Return the folder the run's outputs go to (created if needed)."""
    path = Path(cfg.output_dir).expanduser()
    if not path.is_absolute():
        path = Path(os.environ.get(OUTPUT_ROOT_ENV, os.getcwd())) / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_strategy(
    cfg: RunConfig,
    trainable_keys: list[str],
    tied: Mapping[str, Sequence[str]] | None = None,
) -> DirectionStrategy:
    """Return the strategy the config asks for (``tied``: the model's :func:`tied_keys`)."""
    common: dict[str, Any] = {
        "lr": cfg.lr,
        "lr_milestones": cfg.milestones,
        "lr_gamma": cfg.lr_gamma,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "byzantine_budget": cfg.byzantine_count,
        "crash_budget": cfg.crash_budget,
        "fault_rule": cfg.fault_rule,
        "certify_time_budget": cfg.certify_time_budget,
        "max_resyncs": cfg.max_resyncs,
        "resync_window": cfg.resync_window,
        "max_rounds_below_quorum": cfg.max_rounds_below_quorum,
        "reassign_after": cfg.reassign_after,
        "tie_rule": cfg.tie_rule,
        "downlink": cfg.downlink,
        "worker_momentum": cfg.worker_momentum,
        "dirichlet_alpha": cfg.dirichlet_alpha,
        "local_steps": cfg.local_steps,
        "trainable_keys": trainable_keys,
        "tied_keys": tied,
        "evaluate_every": cfg.client_eval_every,
    }
    if cfg.aggregation == "fgm":
        return FullGradientMedian(cfg.num_workers, **common)
    if cfg.aggregation in FLOAT_AGGREGATIONS:
        return FlowerRobust(
            cfg.num_workers,
            create_float_aggregator(cfg.aggregation, cfg.num_workers, cfg.byzantine_count),
            num_examples_weights=cfg.num_examples_weights,
            **common,
        )
    return ElectionCoding(cfg.allocation_code(), **common)


def run_experiment(
    grid: Grid, cfg: RunConfig, *, traffic: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Train with ``cfg`` over ``grid``; write and return the JSON result.

    Parameters
    ----------
    grid : Grid
        Flower grid (a simulation, a deployment, or :class:`InProcessGrid`).
    cfg : RunConfig
        The validated configuration.
    traffic : Sequence[Mapping[str, Any]] | None (default: None)
        The grid's record of serialized bytes per push (:class:`InProcessGrid.traffic`),
        filled as the run goes; its train pushes become each round's ``wire-down-bytes``
        and ``wire-up-bytes`` (the protobuf messages both ways, not only their arrays).

    Returns
    -------
    dict[str, Any]
        The result that was written to ``<output-dir>/<run-name>.json``.
    """
    started = time.time()
    torch.set_num_threads(cfg.num_threads)
    splits = load_dataset(cfg.dataset, root=cfg.data_root or None, download=cfg.download)
    model = create_model(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed)
    strategy = build_strategy(cfg, vote_keys(model), tied_keys(model))
    code = cfg.allocation_code()
    byzantine = cfg.byzantine_workers() if cfg.attack != "none" else ()
    if cfg.byzantine_selection == "node-config":
        log(INFO, "Byzantine workers: the SuperNodes whose node config says byzantine=true")
    else:
        log(INFO, "Byzantine workers (code rows): %s, attack %r", list(byzantine), cfg.attack)

    folder = output_dir(cfg)
    stem = cfg.default_run_name
    ckpt_path = checkpoint_path(folder, stem)
    initial_arrays = ArrayRecord(model.state_dict())
    test_history: dict[int, dict[str, float]] = {}
    rows: dict[int, dict[str, Any]] = {}
    if cfg.resume and ckpt_path.exists():
        resumed = _resume(ckpt_path, cfg, strategy)
        initial_arrays = ArrayRecord({k: Array(v) for k, v in resumed.arrays.items()})
        test_history = {int(k): v for k, v in resumed.state["test_history"].items()}
        rows = {int(k): v for k, v in resumed.state["rows"].items()}
        log(INFO, "Resuming %s after round %d (%s)", stem, resumed.round, ckpt_path)
    offset = strategy.round_offset

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        run_round = server_round + offset
        if server_round == 0 and offset:
            return None  # a resumed run has evaluated its starting point already
        metrics = None
        last = run_round == cfg.num_server_rounds
        if run_round % cfg.eval_every == 0 or last:
            model.load_state_dict(arrays.to_torch_state_dict())
            loss, accuracy = evaluate(model, splits.test_x, splits.test_y)
            test_history[run_round] = {"test-loss": loss, "test-accuracy": accuracy}
            log(
                INFO,
                "round %d/%d: test accuracy %.4f, test loss %.4f (%.0f s)",
                run_round,
                cfg.num_server_rounds,
                accuracy,
                loss,
                time.time() - started,
            )
            metrics = MetricRecord({"test-loss": loss, "test-accuracy": accuracy})
        if cfg.checkpoint_every and server_round and run_round % cfg.checkpoint_every == 0:
            _checkpoint(ckpt_path, cfg, strategy, arrays, rows, test_history)
        return metrics

    # Flower keeps the round's metrics in the result it returns at the end; the rows a
    # checkpoint needs are collected as the rounds go.
    original_aggregate_train = strategy.aggregate_train

    def aggregate_train(
        server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_arrays = strategy.round_arrays
        arrays, metrics = original_aggregate_train(server_round, replies)
        row: dict[str, Any] = {"round": server_round + offset}
        row.update(dict(metrics or {}))
        direction = strategy.last_direction
        if referee is not None and round_arrays is not None and direction is not None:
            row.update(
                referee.score(
                    strategy,
                    server_round + offset,
                    round_arrays,
                    direction,
                    coded=cfg.aggregation == "election",
                )
            )
        row["audit"] = strategy.audit[-1].to_json()
        rows[server_round + offset] = row
        return arrays, metrics

    referee = None
    if cfg.track_vote_error:
        referee = VoteReferee(
            create_model(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed), splits
        )
    strategy.aggregate_train = aggregate_train  # type: ignore[method-assign]
    remaining = cfg.num_server_rounds - offset
    result = None
    if remaining > 0:
        result = strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=remaining,
            timeout=cfg.round_timeout,
            train_config=ConfigRecord(),
            evaluate_fn=evaluate_fn,
        )

    train_traffic = [t for t in traffic or () if t["type"] == MessageType.TRAIN]
    wire = {offset + 1 + i: t for i, t in enumerate(train_traffic)}
    rounds = []
    for run_round in range(1, cfg.num_server_rounds + 1):
        row = dict(rows.get(run_round, {"round": run_round}))
        if run_round in wire:
            row["wire-down-bytes"] = int(wire[run_round]["down"])
            row["wire-up-bytes"] = int(wire[run_round]["up"])
        client_eval = result.evaluate_metrics_clientapp.get(run_round - offset) if result else None
        if client_eval is not None:
            row.update({f"client-{k}": v for k, v in dict(client_eval).items()})
        row.update(test_history.get(run_round, {}))
        rounds.append(row)
    final = test_history[cfg.num_server_rounds]
    record = {
        "config": cfg.to_run_config(),
        "code": {
            "name": code.name,
            "n": code.n,
            "k": code.k,
            "redundancy": code.redundancy,
            "max_load": code.max_load,
            "loads": [int(x) for x in code.loads],
            # The run's one certificate: the code against the fault budget f = b + c.
            "certificate": {
                "fault_budget": strategy.quorum.fault_budget,
                "verdict": strategy.quorum.certified,
                "status": strategy.quorum.certificate.status,
                "worst_margin": strategy.quorum.certificate.worst_margin,
                "ties": strategy.quorum.certificate.tie_rule,
            },
        },
        "byzantine_workers": (
            "node-config" if cfg.byzantine_selection == "node-config" else list(byzantine)
        ),
        "initial": test_history.get(0, {}),
        "final": final,
        "wall_seconds": time.time() - started,
        "rounds": rounds,
    }
    (folder / f"{stem}.json").write_text(json.dumps(record, indent=1))
    final_arrays = result.arrays if result and result.arrays is not None else initial_arrays
    arrays: dict[str, Any] = {key: array.numpy() for key, array in final_arrays.items()}
    np.savez(folder / f"{stem}.model.npz", **arrays)
    _plot(record, folder / f"{stem}.png")
    log(
        INFO,
        "final test accuracy %.4f after %d rounds, %.0f s; results in %s",
        final["test-accuracy"],
        cfg.num_server_rounds,
        record["wall_seconds"],
        folder / f"{stem}.json",
    )
    return record


def _checkpoint(
    path: Path,
    cfg: RunConfig,
    strategy: DirectionStrategy,
    arrays: ArrayRecord,
    rows: dict[int, dict[str, Any]],
    test_history: dict[int, dict[str, float]],
) -> None:
    """Write what a resumed run needs after the strategy's last round."""
    state = strategy.state_dict()
    momentum = state["optimizer"].pop("buf")
    write_checkpoint(
        path,
        Checkpoint(
            arrays={key: array.numpy() for key, array in arrays.items()},
            momentum=momentum,
            state={
                "config": _resumable(cfg),
                "strategy": state,
                "rows": {str(k): v for k, v in rows.items()},
                "test_history": {str(k): v for k, v in test_history.items()},
            },
        ),
    )


def _resumable(cfg: RunConfig) -> dict[str, Any]:
    """Return the config a checkpoint must match to be resumed (all but the resume knobs)."""
    values = cfg.to_run_config()
    for key in ("resume", "checkpoint-every", "num-server-rounds"):
        values.pop(key, None)
    return values


def _resume(path: Path, cfg: RunConfig, strategy: DirectionStrategy) -> Checkpoint:
    """Load a checkpoint into ``strategy``; refuse one of another configuration."""
    checkpoint = read_checkpoint(path)
    if checkpoint.state["config"] != _resumable(cfg):
        raise ValueError(
            f"{path} was written by another configuration; remove it or change run-name"
        )
    if checkpoint.round > cfg.num_server_rounds:
        raise ValueError(
            f"{path} holds round {checkpoint.round}, beyond num-server-rounds = "
            f"{cfg.num_server_rounds}"
        )
    state = dict(checkpoint.state["strategy"])
    state["optimizer"] = {**state["optimizer"], "buf": checkpoint.momentum}
    strategy.load_state_dict(state)
    return checkpoint


def _plot(record: dict[str, Any], path: Path) -> None:
    """Write the accuracy curve of one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(0, record["initial"]["test-accuracy"])] if record["initial"] else []
    points += [(r["round"], r["test-accuracy"]) for r in record["rounds"] if "test-accuracy" in r]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(*zip(*points, strict=True), marker=".")
    ax.set_xlabel("round (SignSGD step)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(Path(path).stem, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
