"""Colluding omniscient Byzantines of one process compute every partition once per step.

``fl_election.clients.coded._everyone`` caches the all-partition computation in
``coded._SHARED``: per round the process computes each worker's own partitions (honest and
Byzantine) plus the ``k`` partitions once, not ``b`` times, and the run is the same as when
every Byzantine recomputes them.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MessageType

from fl_election.clients import coded
from fl_election.clients.client_app import app as client_app
from fl_election.config import RunConfig
from fl_election.simulations.experiment import run_experiment
from fl_election.simulations.inprocess import InProcessGrid

ROUNDS = 3

#: (aggregation, attack, the coded.py function that computes the partitions' gradients):
#: sign votes under election coding, float gradients under FGM.
SETUPS = [
    pytest.param("election", "omniscient", "partition_signs", id="election-omniscient"),
    pytest.param("fgm", "ipm", "partition_gradients", id="fgm-ipm"),
]


def config(tmp_path: Path, aggregation: str, attack: str) -> RunConfig:
    return RunConfig(
        num_server_rounds=ROUNDS,
        num_workers=15,
        num_partitions=5,  # k = 5 under the Bernoulli code (FGM: uncoded, k = n)
        code="bernoulli",
        redundancy=3.0,
        aggregation=aggregation,
        attack=attack,
        byzantine_count=6,
        byzantine_selection="random",
        batch_size=240,
        eval_every=ROUNDS,
        checkpoint_every=0,
        output_dir=str(tmp_path),
    )


class Recorder:
    """Per train round: partition gradient rows computed, ``_everyone`` calls."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.everyone_calls: list[int] = []


def run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cfg: RunConfig,
    function: str,
    *,
    share: bool = True,
) -> tuple[dict, Recorder]:
    """Run ``cfg`` in process, counting what ``coded`` computes; optionally without the cache."""
    recorder = Recorder()
    counts = {"rows": 0, "everyone": 0}
    compute = getattr(coded, function)
    everyone = coded._everyone

    def counting_compute(model, batches, *args, **kwargs):
        counts["rows"] += len(batches)
        return compute(model, batches, *args, **kwargs)

    def counting_everyone(*args, **kwargs):
        counts["everyone"] += 1
        try:
            return everyone(*args, **kwargs)
        finally:
            if not share:  # every Byzantine recomputes, as before the cache
                coded._SHARED.clear()

    grid = InProcessGrid(client_app, cfg.num_workers, cfg.to_run_config())
    send_and_receive = grid.send_and_receive

    def recording(messages, *, timeout=None):
        messages = list(messages)
        counts["rows"] = counts["everyone"] = 0
        replies = list(send_and_receive(messages, timeout=timeout))
        if messages and all(m.metadata.message_type == MessageType.TRAIN for m in messages):
            assert not [r.error.reason for r in replies if r.has_error()]
            recorder.rows.append(counts["rows"])
            recorder.everyone_calls.append(counts["everyone"])
        return replies

    coded._SHARED.clear()
    with monkeypatch.context() as patch:  # undone on return: the next run wraps the originals
        patch.setattr(coded, function, counting_compute)
        patch.setattr(coded, "_everyone", counting_everyone)
        patch.setattr(grid, "send_and_receive", recording)
        try:
            record = run_experiment(grid, cfg)
        finally:
            coded._SHARED.clear()
            gc.unfreeze()  # what the grid froze is collectable again (as run_inprocess does)
            gc.collect()
    return record, recorder


def untimed(rounds: list[dict]) -> list[dict]:
    """The per-round rows without the wall-clock figures."""
    return [{k: v for k, v in row.items() if k != "compute-time"} for row in rounds]


@pytest.mark.parametrize("aggregation, attack, function", SETUPS)
def test_the_all_partition_computation_happens_once_per_round(
    tmp_path, monkeypatch, aggregation, attack, function
):
    cfg = config(tmp_path, aggregation, attack)
    code = cfg.allocation_code()
    b, k = cfg.byzantine_count, cfg.k
    assert (b, k) == (6, 5 if aggregation == "election" else 15)
    assert len(cfg.byzantine_workers()) == b
    _, recorder = run(tmp_path, monkeypatch, cfg, function)
    own = int(np.sum(code.loads))  # every worker's own partitions, Byzantines included
    assert recorder.everyone_calls == [b] * ROUNDS  # every Byzantine asks ...
    assert recorder.rows == [own + k] * ROUNDS  # ... but k partitions are computed once
    assert own + k < own + b * k  # what b recomputations would have cost


@pytest.mark.parametrize("aggregation, attack, function", SETUPS)
def test_sharing_gives_the_same_run_as_every_byzantine_recomputing(
    tmp_path, monkeypatch, aggregation, attack, function
):
    shared_cfg = config(tmp_path / "shared", aggregation, attack)
    alone_cfg = config(tmp_path / "alone", aggregation, attack)
    shared, shared_counts = run(tmp_path, monkeypatch, shared_cfg, function)
    alone, alone_counts = run(tmp_path, monkeypatch, alone_cfg, function, share=False)
    b, k = shared_cfg.byzantine_count, shared_cfg.k
    # the second run did recompute: (b - 1) k more rows per round
    assert [a - s for a, s in zip(alone_counts.rows, shared_counts.rows, strict=True)] == [
        (b - 1) * k
    ] * ROUNDS
    assert shared["final"] == alone["final"]
    assert untimed(shared["rounds"]) == untimed(alone["rounds"])  # agreement, loss, audit ...
    a = np.load(next((tmp_path / "shared").glob("*.model.npz")))
    c = np.load(next((tmp_path / "alone").glob("*.model.npz")))
    assert sorted(a.files) == sorted(c.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], c[key])


def _instruction(k: int = 3) -> coded.TrainInstruction:
    from fl_election.contract import TrainInstruction

    return TrainInstruction(
        server_round=1,
        step=0,
        seed=0,
        worker_index=0,
        num_workers=5,
        num_partitions=k,
        partition_ids=(0,),
        partition_batch_size=4,
        vote_keys=("0.weight", "0.bias", "2.weight", "2.bias"),
        num_coordinates=4 * 3 + 3 + 3 * 2 + 2,
    )


def _bn_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, affine=False), torch.nn.Linear(3, 2)
    )


def test_the_shared_pass_leaves_batch_norm_statistics_alone_and_is_read_only():
    import torch

    model = _bn_model()
    data = (torch.randn(30, 4), torch.randint(0, 2, (30,)))
    instruction = _instruction()
    parameters = coded.vote_parameters(model, instruction.vote_keys, instruction.num_coordinates)
    before = model[1].running_mean.clone()
    coded._SHARED.clear()
    known = coded._everyone(
        model, torch.nn.functional.cross_entropy, data, instruction, None, parameters, 1
    )
    torch.testing.assert_close(model[1].running_mean, before)
    assert not known.flags.writeable


def test_a_new_data_object_never_hits_another_objects_entry():
    import torch

    model = _bn_model()
    instruction = _instruction()
    parameters = coded.vote_parameters(model, instruction.vote_keys, instruction.num_coordinates)
    loss = torch.nn.functional.cross_entropy
    coded._SHARED.clear()
    sums = []
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        data = (torch.randn(30, 4, generator=generator), torch.randint(0, 2, (30,)))
        known = coded._everyone(model, loss, data, instruction, None, parameters, 1)
        sums.append(known.copy())
        del data  # its id may be reused by the next object: it must not hit this entry
        gc.collect()
    assert len({s.tobytes() for s in sums}) == len(sums)
