"""Agreement of same-partition holders with dropout, with and without shared seeds.

    python benchmarks/bench_shared_randomness.py            # 20 rounds, dropout 0.2
    python benchmarks/bench_shared_randomness.py 20 0.5

A digits MLP with two ``Dropout(p)`` layers, ``deterministic(3, 1, tie_rule="forced")``
(every node holds all three partitions) and one ``reverse`` Byzantine on row 0. Prints, per
setting, the agreement of two holders' partition signs on the same model and batches, and
the fraction of coordinates where the two honest rows disagree (what the Byzantine then
decides). "shared=False" switches the library's seeding off (``_compute_seeds`` and
``shared_rng`` replaced), as the library behaved before it seeded.
"""

from __future__ import annotations

import contextlib
import copy
import sys

import numpy as np
import torch
from flwr.app import ArrayRecord, MessageType
from torch import nn
from torch.nn import functional

from fl_election import contract
from fl_election.clients import coded, coded_client_app, make_byzantine_mod, partition_batch
from fl_election.codes import deterministic
from fl_election.contract import TrainInstruction
from fl_election.data import load_dataset
from fl_election.simulations.inprocess import InProcessGrid
from fl_election.strategies import ElectionCoding, vote_keys
from fl_election.training import partition_signs, vote_parameters
from fl_election.voting import unpack_signs
from fl_election.wire import decode_vote

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
DROPOUT = float(sys.argv[2]) if len(sys.argv) > 2 else 0.2
device = "cuda" if torch.cuda.is_available() else "cpu"
data = load_dataset("digits")
train = (data.train_x, data.train_y)


def make_net():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Dropout(DROPOUT),
        nn.Linear(128, 10),
    )


@contextlib.contextmanager
def nothing(*a, **k):
    yield


def run(shared: bool):
    torch.manual_seed(0)
    net = make_net()
    strategy = ElectionCoding(
        deterministic(3, 1, tie_rule="forced"),
        byzantine_budget=1,
        lr=0.01,
        batch_size=240,
        trainable_keys=vote_keys(net),
        downlink="full",
    )
    app = coded_client_app(
        lambda c: copy.deepcopy(net),
        functional.cross_entropy,
        train,
        mods=[make_byzantine_mod("reverse", rows={0})],
        device=device,
    )
    grid = InProcessGrid(app, 3, {})
    send = grid.send_and_receive
    decisive, agreement = [], []
    probe = make_net().to(device)

    def recording(messages, *, timeout=None):
        messages = list(messages)
        replies = list(send(messages, timeout=timeout))
        if messages and all(m.metadata.message_type == MessageType.TRAIN for m in messages):
            ins = {
                m.metadata.dst_node_id: TrainInstruction.from_config(m.content[contract.CONFIG])
                for m in messages
            }
            votes = {}
            for r in replies:
                i = ins[r.metadata.src_node_id]
                d = i.num_coordinates
                p = r.content[contract.VOTE]
                s, a = decode_vote({k: p[k].numpy() for k in p.keys()}, d)
                votes[i.worker_index] = unpack_signs(s, d, a)
            decisive.append(float(np.mean(votes[1] != votes[2])))
            # partition-level agreement of two holders on the same model and batches
            m = messages[0]
            i = ins[m.metadata.dst_node_id]
            probe.load_state_dict(m.content[contract.ARRAYS].to_torch_state_dict())
            params = vote_parameters(probe, i.vote_keys)
            batches = [partition_batch(train, i, j) for j in range(i.num_partitions)]
            seeds = coded._compute_seeds(i, range(i.num_partitions)) if shared else None
            a1 = partition_signs(probe, batches, parameters=params, seeds=seeds).signs
            a2 = partition_signs(probe, batches, parameters=params, seeds=seeds).signs
            agreement.append((a1 == a2).float().mean(dim=1).tolist())
        return replies

    grid.send_and_receive = recording
    with contextlib.ExitStack() as stack:
        if not shared:
            saved = (coded._compute_seeds, coded.shared_rng)
            coded._compute_seeds = lambda instruction, partitions: None
            coded.shared_rng = nothing
            stack.callback(
                lambda: (
                    setattr(coded, "_compute_seeds", saved[0])
                    or setattr(coded, "shared_rng", saved[1])
                )
            )
        strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=ROUNDS)
    agr = np.array(agreement)
    print(f"shared={shared} device={device} dropout={DROPOUT} rounds={ROUNDS}")
    print(
        f"  same-partition holder agreement: mean {agr.mean():.4f} "
        f"min {agr.min():.4f} max {agr.max():.4f}"
    )
    share = np.array(decisive) * 100
    print(
        f"  reverse Byzantine decides: mean {share.mean():.2f}% "
        f"min {share.min():.2f}% max {share.max():.2f}%"
    )


if __name__ == "__main__":
    run(False)
    run(True)
