"""Behaviours that no other test pinned (issue 13): switching one off fails a test here.

- the server reports the *median* of the nodes' train loss and compute time, so a minority
  of nodes cannot steer them;
- a node whose node config names an ``attack`` without ``byzantine=true`` stays honest;
- what a resume restores bit for bit, and what it does not: the nodes' worker-momentum
  (Signum) averages start from zero in the first resumed round (``docs/resume.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from fl_election import contract
from fl_election.clients.client_app import app as client_app
from fl_election.clients.coded import _STATE_SIGNUM
from fl_election.codes import uncoded
from fl_election.config import ConfigValue, RunConfig
from fl_election.contract import TrainInstruction
from fl_election.data import load_dataset
from fl_election.models import create_model
from fl_election.simulations.experiment import build_strategy, run_experiment
from fl_election.simulations.inprocess import InProcessGrid, run_inprocess
from fl_election.strategies import ElectionCoding
from fl_election.voting import pack_signs

# ----------------------------------------------------------------- median of node metrics


class Grid:
    def __init__(self, nodes: Iterable[int]) -> None:
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def reply(to: Message, train_loss: float, compute_time: float) -> Message:
    signs, _ = pack_signs(np.ones(16, dtype=np.int8))
    metrics = MetricRecord(
        {
            contract.METRIC_NUM_COORDINATES: 16,
            contract.METRIC_TRAIN_LOSS: train_loss,
            contract.METRIC_COMPUTE_TIME: compute_time,
        }
    )
    content = RecordDict(
        {contract.VOTE: ArrayRecord({"signs": Array(signs)}), contract.METRICS: metrics}
    )
    return Message(content, reply_to=to)


def test_a_minority_of_nodes_cannot_steer_the_reported_metrics() -> None:
    strategy = ElectionCoding(uncoded(5), byzantine_budget=2, trainable_keys=["w"], lr=0.1)
    model = ArrayRecord({"w": Array(np.linspace(-1, 1, 16).astype(np.float32))})
    nodes = [10, 11, 12, 13, 14]
    grid: Any = Grid(nodes)  # the strategy asks a grid only for its node ids
    messages = list(strategy.configure_train(1, model, ConfigRecord(), grid))
    for m in messages:
        m.metadata.__dict__["_message_id"] = str(uuid4())
    out = {m.metadata.dst_node_id: m for m in messages}
    honest = {10: (0.5, 1.0), 11: (0.6, 2.0), 12: (0.6, 2.0)}
    liars = {13: (1e6, 1e9), 14: (1e6, 1e9)}  # two of five nodes report absurd values
    reported = {**honest, **liars}
    replies = [reply(out[n], *reported[n]) for n in nodes]
    new, metrics = strategy.aggregate_train(1, replies)
    assert new is not None and metrics is not None and metrics["applied"] == 1
    for column, key in enumerate((contract.METRIC_TRAIN_LOSS, contract.METRIC_COMPUTE_TIME)):
        values = [v[column] for v in honest.values()]
        value = metrics[key]
        assert isinstance(value, float)
        # the honest majority's median, inside the honest range ...
        assert value == float(np.median(values)) == sorted(values)[1]
        assert min(values) <= value <= max(values)
        # ... where a mean would follow the liars
        mean = float(np.mean([v[column] for v in reported.values()]))
        assert mean > 1000 * max(values)


# ---------------------------------------------------- node config: attack without byzantine


def node_config_run() -> RunConfig:
    return RunConfig.from_run_config(
        {
            "num-workers": 5,
            "byzantine-count": 1,
            "byzantine-selection": "node-config",
            "attack": "reverse",
            "code": "deterministic",
            "batch-size": 60,
        }
    )


def train_message(cfg: RunConfig, grid: InProcessGrid) -> Message:
    """The first-round train message of code row 0, to node 1000."""
    splits = load_dataset(cfg.dataset)
    model = create_model(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed)
    strategy = build_strategy(cfg, list(contract.vote_keys(model)))
    messages = strategy.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), grid)
    return next(m for m in messages if m.metadata.dst_node_id == 1000)


def deliver(cfg: RunConfig, message: Message, node_config: Mapping[str, ConfigValue]) -> Message:
    """Send ``message`` to node 1000 of a fresh grid whose nodes have ``node_config``."""
    node_configs = [{"partition-id": i, **node_config} for i in range(cfg.num_workers)]
    grid = InProcessGrid(client_app, cfg.num_workers, cfg.to_run_config(), node_configs)
    replies = list(grid.pull_messages(grid.push_messages([message])))
    assert len(replies) == 1 and not replies[0].has_error()
    return replies[0]


def vote_bytes(message: Message) -> dict[str, bytes]:
    vote = message.content[contract.VOTE]
    assert isinstance(vote, ArrayRecord)
    return {key: vote[key].numpy().tobytes() for key in vote.keys()}


def test_an_attack_in_the_node_config_without_byzantine_true_is_honest() -> None:
    cfg = node_config_run()
    message = train_message(cfg, InProcessGrid(client_app, cfg.num_workers, {}))
    honest = vote_bytes(deliver(cfg, message, {}))
    unmarked = vote_bytes(deliver(cfg, message, {"attack": "reverse"}))
    marked = vote_bytes(deliver(cfg, message, {"byzantine": "true", "attack": "reverse"}))
    assert unmarked == honest  # bit for bit the honest vote
    assert marked != honest  # the same node config with byzantine=true attacks


# ----------------------------------------------------------------------------------- resume


class ForgetfulGrid(InProcessGrid):
    """An in-process grid whose nodes lose their Signum averages before one round.

    What a resumed run's fresh nodes do at their first round, inside an unbroken run.
    """

    def __init__(self, *args: Any, forget_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.forget_at = forget_at
        self.forgotten = 0

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        for message in messages:
            if message.metadata.message_type != MessageType.TRAIN:
                continue
            config = message.content[contract.CONFIG]
            assert isinstance(config, ConfigRecord)
            if TrainInstruction.from_config(config).server_round == self.forget_at:
                state = self.contexts[message.metadata.dst_node_id].state
                if _STATE_SIGNUM in state:
                    del state[_STATE_SIGNUM]
                    self.forgotten += 1
        return super().push_messages(messages)


RESUME_SETTINGS: dict[str, ConfigValue] = {
    "num-workers": 5,
    "byzantine-count": 1,
    "attack": "reverse",
    "code": "deterministic",
    "batch-size": 60,
    "lr": 0.01,
    "momentum": 0.0,
    "eval-every": 3,
    "checkpoint-every": 3,
    "run-name": "run",
}
CHECKPOINT_ROUND = 3
ROUNDS = 6


def resume_config(folder: Path, worker_momentum: float, **changes: ConfigValue) -> RunConfig:
    return RunConfig.from_run_config(
        {
            **RESUME_SETTINGS,
            "worker-momentum": worker_momentum,
            "num-server-rounds": ROUNDS,
            "output-dir": str(folder),
            **changes,
        }
    )


def resumed_run(folder: Path, worker_momentum: float) -> dict[str, Any]:
    """Stop after the checkpoint round (a new process's state), then resume to the end."""
    run_inprocess(resume_config(folder, worker_momentum, **{"num-server-rounds": 3}))
    return run_inprocess(resume_config(folder, worker_momentum, resume=True))


def unbroken_run(
    folder: Path, worker_momentum: float, grid: InProcessGrid | None = None
) -> dict[str, Any]:
    cfg = resume_config(folder, worker_momentum)
    if grid is None:
        return run_inprocess(cfg)
    return run_experiment(grid, cfg)


def final_model(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "run.model.npz") as data:
        return {key: data[key] for key in data.files}


def train_rows(record: dict[str, Any], start: int) -> list[dict[str, Any]]:
    """Per-round train metrics from round ``start`` on, without the varying ones."""
    ignored = ("compute-time", "downlink-bytes", "wire-down-bytes", "wire-up-bytes")
    return [
        {k: v for k, v in row.items() if k not in ignored}
        for row in record["rounds"]
        if row["round"] >= start
    ]


def same_models(a: Path, b: Path) -> bool:
    x, y = final_model(a), final_model(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def test_without_worker_momentum_a_resume_is_bit_identical(tmp_path: Path) -> None:
    resumed = resumed_run(tmp_path / "resumed", 0.0)
    unbroken = unbroken_run(tmp_path / "unbroken", 0.0)
    assert same_models(tmp_path / "resumed", tmp_path / "unbroken")
    assert train_rows(resumed, 1) == train_rows(unbroken, 1)


def test_a_resume_restarts_the_worker_momentum_averages_from_zero(tmp_path: Path) -> None:
    worker_momentum = 0.5
    resumed = resumed_run(tmp_path / "resumed", worker_momentum)
    unbroken = unbroken_run(tmp_path / "unbroken", worker_momentum)
    cfg = resume_config(tmp_path / "forgetful", worker_momentum)
    forgetful = ForgetfulGrid(
        client_app, cfg.num_workers, cfg.to_run_config(), forget_at=CHECKPOINT_ROUND + 1
    )
    reference = unbroken_run(tmp_path / "forgetful", worker_momentum, forgetful)
    assert forgetful.forgotten == cfg.num_workers  # every node had averages to lose
    first = CHECKPOINT_ROUND + 1
    # up to the checkpoint, the resumed run is the unbroken one; from the first resumed
    # round on it differs, because the nodes' averages start from zero there ...
    assert train_rows(resumed, 1)[:CHECKPOINT_ROUND] == train_rows(unbroken, 1)[:CHECKPOINT_ROUND]
    assert train_rows(resumed, first)[0] != train_rows(unbroken, first)[0]
    assert not same_models(tmp_path / "resumed", tmp_path / "unbroken")
    # ... and that is the only difference: bit for bit the unbroken run whose nodes lose
    # their averages before round checkpoint + 1 (so a resume is deterministic)
    assert same_models(tmp_path / "resumed", tmp_path / "forgetful")
    assert train_rows(resumed, first) == train_rows(reference, first)
