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
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fl_election.codes import max_tolerance
from fl_election.config import RunConfig
from fl_election.contract import vote_keys
from fl_election.data import load_dataset
from fl_election.models import create_model
from fl_election.strategies import DirectionStrategy, ElectionCoding, FullGradientMedian
from fl_election.training import evaluate

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


def build_strategy(cfg: RunConfig, trainable_keys: list[str]) -> DirectionStrategy:
    """Return the strategy the config asks for."""
    common: dict[str, Any] = {
        "lr": cfg.lr,
        "lr_milestones": cfg.milestones,
        "lr_gamma": cfg.lr_gamma,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "trainable_keys": trainable_keys,
        "evaluate_every": cfg.client_eval_every,
    }
    if cfg.aggregation == "fgm":
        return FullGradientMedian(cfg.num_workers, **common)
    return ElectionCoding(cfg.allocation_code(), byzantine_budget=cfg.byzantine_count, **common)


def run_experiment(grid: Grid, cfg: RunConfig) -> dict[str, Any]:
    """Train with ``cfg`` over ``grid``; write and return the JSON result.

    Parameters
    ----------
    grid : Grid
        Flower grid (a simulation, a deployment, or :class:`InProcessGrid`).
    cfg : RunConfig
        The validated configuration.

    Returns
    -------
    dict[str, Any]
        The result that was written to ``<output-dir>/<run-name>.json``.
    """
    started = time.time()
    torch.set_num_threads(cfg.num_threads)
    splits = load_dataset(cfg.dataset, root=cfg.data_root or None, download=cfg.download)
    model = create_model(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed)
    strategy = build_strategy(cfg, vote_keys(model))
    code = cfg.allocation_code()
    byzantine = cfg.byzantine_workers() if cfg.attack != "none" else ()
    if cfg.byzantine_selection == "node-config":
        log(INFO, "Byzantine workers: the SuperNodes whose node config says byzantine=true")
    else:
        log(INFO, "Byzantine workers (code rows): %s, attack %r", list(byzantine), cfg.attack)

    test_history: dict[int, dict[str, float]] = {}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        last = server_round == cfg.num_server_rounds
        if server_round % cfg.eval_every and not last:
            return None
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = evaluate(model, splits.test_x, splits.test_y)
        test_history[server_round] = {"test-loss": loss, "test-accuracy": accuracy}
        log(
            INFO,
            "round %d/%d: test accuracy %.4f, test loss %.4f (%.0f s)",
            server_round,
            cfg.num_server_rounds,
            accuracy,
            loss,
            time.time() - started,
        )
        return MetricRecord({"test-loss": loss, "test-accuracy": accuracy})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_server_rounds,
        timeout=cfg.round_timeout,
        train_config=ConfigRecord(),
        evaluate_fn=evaluate_fn,
    )

    rounds = []
    for server_round in range(1, cfg.num_server_rounds + 1):
        row: dict[str, Any] = {"round": server_round}
        train = result.train_metrics_clientapp.get(server_round)
        if train is not None:
            row.update(dict(train))
        client_eval = result.evaluate_metrics_clientapp.get(server_round)
        if client_eval is not None:
            row.update({f"client-{k}": v for k, v in dict(client_eval).items()})
        row.update(test_history.get(server_round, {}))
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
            "certified_tolerance": max_tolerance(code) if cfg.aggregation == "election" else None,
        },
        "byzantine_workers": (
            "node-config" if cfg.byzantine_selection == "node-config" else list(byzantine)
        ),
        "initial": test_history.get(0, {}),
        "final": final,
        "wall_seconds": time.time() - started,
        "rounds": rounds,
    }
    folder = output_dir(cfg)
    stem = cfg.default_run_name
    (folder / f"{stem}.json").write_text(json.dumps(record, indent=1))
    final_arrays = result.arrays if result.arrays is not None else ArrayRecord(model.state_dict())
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
