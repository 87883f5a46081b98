"""Shared randomness per partition: every holder of a partition draws the same random numbers.

Dropout, noise layers and random augmentation draw from global generators; unseeded, two
honest holders of one partition compute different gradient signs, and a Byzantine node then
decides the coordinates where they disagree, even under a certified code. The client seeds
them per (run seed, step, partition) (:func:`fl_election.training.partition_seed`) around the
partition's forward and backward passes and around the fetching of its samples.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.clientapp.typing import Mod
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset

from fl_election import contract
from fl_election.clients import coded, coded_client_app, make_byzantine_mod
from fl_election.codes import deterministic
from fl_election.contract import TrainInstruction
from fl_election.simulations.inprocess import InProcessGrid
from fl_election.strategies import ElectionCoding, vote_keys
from fl_election.training import partition_seed, partition_signs, shared_rng
from fl_election.voting import unpack_signs
from fl_election.wire import decode_vote

FEATURES, CLASSES, SAMPLES = 12, 4, 600


class Net(nn.Module):
    """An MLP with dropout (``p = 0`` makes it deterministic)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.hidden = nn.Linear(FEATURES, 32)
        self.dropout = nn.Dropout(p)
        self.out = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(functional.relu(self.hidden(x))))


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    return x, y


class NoisyDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A Dataset whose ``__getitem__`` adds random noise (a random augmentation)."""

    def __init__(self, source: str) -> None:
        self.x, self.y = tensors()
        self.source = source

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.source == "torch":
            noise = torch.randn(FEATURES)
        elif self.source == "numpy":
            noise = torch.from_numpy(np.random.standard_normal(FEATURES).astype(np.float32))  # noqa: NPY002
        else:
            noise = torch.tensor([random.gauss(0.0, 1.0) for _ in range(FEATURES)])
        return self.x[index] + noise, self.y[index]


def round_votes(
    dropout: float, data: Any, mods: Sequence[Mod] = (), *, check_restored: bool = False
) -> dict[int, np.ndarray]:
    """One round of deterministic(3, 1) (every node holds all 3 partitions): the votes by row.

    With ``check_restored``, also check that the round leaves the global generators (torch,
    NumPy, Python) as it found them.
    """
    torch.manual_seed(0)
    net = Net(dropout)
    code = deterministic(3, 1, tie_rule="forced")
    assert code.matrix.all()  # every row holds every partition
    strategy = ElectionCoding(
        code, byzantine_budget=1, batch_size=60, trainable_keys=vote_keys(net), downlink="full"
    )
    # Copies: building a model would draw from the generators during the round.
    app = coded_client_app(
        lambda context: copy.deepcopy(net), functional.cross_entropy, data, mods=mods
    )
    grid = InProcessGrid(app, 3, {})
    messages = list(
        strategy.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), grid)
    )
    before = generator_states()
    replies = list(grid.send_and_receive(messages))
    if check_restored:
        assert_same_states(generator_states(), before)
    rows = {
        m.metadata.dst_node_id: TrainInstruction.from_config(m.content[contract.CONFIG])
        for m in messages
    }
    votes = {}
    for reply in replies:
        assert not reply.has_error(), reply.error.reason
        instruction = rows[reply.metadata.src_node_id]
        d = instruction.num_coordinates
        planes = reply.content[contract.VOTE]
        signs, abstain = decode_vote({k: planes[k].numpy() for k in planes.keys()}, d)
        votes[instruction.worker_index] = unpack_signs(signs, d, abstain)
    assert sorted(votes) == [0, 1, 2]
    return votes


def generator_states() -> tuple[torch.Tensor, Any, Any]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002


def assert_same_states(after: tuple[Any, ...], before: tuple[Any, ...]) -> None:
    assert torch.equal(after[0], before[0])
    assert after[1][0] == before[1][0]
    np.testing.assert_array_equal(after[1][1], before[1][1])
    assert after[1][2:] == before[1][2:]
    assert after[2] == before[2]


@contextlib.contextmanager
def unseeded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Switch the shared randomness off (the behaviour before it existed)."""

    @contextlib.contextmanager
    def nothing(*args: object, **kwargs: object) -> Iterator[None]:
        yield

    with monkeypatch.context() as patch:
        patch.setattr(coded, "_compute_seeds", lambda instruction, partitions: None)
        patch.setattr(coded, "shared_rng", nothing)
        yield


def test_partition_seed_is_a_stable_pure_function():
    assert partition_seed(0, 1, 2) == partition_seed(0, 1, 2)
    assert partition_seed(0, 1, 2) == 8556305926202312166  # the same on every node and version
    seeds = {
        partition_seed(seed, step, partition, stream=stream)
        for seed in (0, 1)
        for step in (0, 1, 2)
        for partition in (0, 1, 2)
        for stream in ("compute", "data", "augment")
    }
    assert len(seeds) == 2 * 3 * 3 * 3
    assert all(0 <= s < 2**64 for s in seeds)
    with pytest.raises(ValueError, match="non-negative"):
        partition_seed(-1, 0, 0)
    with pytest.raises(ValueError, match="unknown stream"):
        partition_seed(0, 0, 0, stream="other")


def test_dropout_holders_of_the_same_partitions_send_bit_identical_votes():
    votes = round_votes(0.5, tensors())
    np.testing.assert_array_equal(votes[0], votes[1])
    np.testing.assert_array_equal(votes[1], votes[2])


@pytest.mark.parametrize("source", ["torch", "numpy", "python"])
def test_random_augmentation_in_a_dataset_gives_bit_identical_votes(source):
    votes = round_votes(0.0, NoisyDataset(source))
    np.testing.assert_array_equal(votes[0], votes[1])
    np.testing.assert_array_equal(votes[1], votes[2])


def test_augment_function_drawing_from_torch_gives_bit_identical_votes():
    def augment(x: torch.Tensor, step: int, partition: int, seed: int) -> torch.Tensor:
        return x + torch.randn_like(x)  # draws from the global generator

    torch.manual_seed(0)
    net = Net(0.0)
    strategy = ElectionCoding(
        deterministic(3, 1, tie_rule="forced"), byzantine_budget=1, batch_size=60,
        trainable_keys=vote_keys(net), downlink="full",
    )  # fmt: skip
    app = coded_client_app(lambda c: Net(0.0), functional.cross_entropy, tensors(), augment=augment)
    grid = InProcessGrid(app, 3, {})
    messages = list(
        strategy.configure_train(1, ArrayRecord(net.state_dict()), ConfigRecord(), grid)
    )
    planes = [r.content[contract.VOTE]["signs"].numpy() for r in grid.send_and_receive(messages)]
    np.testing.assert_array_equal(planes[0], planes[1])
    np.testing.assert_array_equal(planes[1], planes[2])


def test_a_reverse_byzantine_decides_no_coordinate_under_a_certified_code():
    votes = round_votes(0.2, tensors(), mods=[make_byzantine_mod("reverse", rows={0})])
    honest = votes[1]
    np.testing.assert_array_equal(votes[0], -honest)  # row 0 reverses
    decisive = votes[1] != votes[2]  # where the honest rows disagree, the Byzantine decides
    assert int(decisive.sum()) == 0
    elected = np.sign(votes[0].astype(np.int16) + votes[1] + votes[2])
    np.testing.assert_array_equal(elected, honest)


@pytest.mark.parametrize(
    "dropout, data",
    [
        pytest.param(0.5, "tensors", id="dropout"),
        pytest.param(0.0, "torch", id="dataset-torch"),
        pytest.param(0.0, "numpy", id="dataset-numpy"),
    ],
)
def test_without_the_shared_seeds_the_holders_disagree(monkeypatch, dropout, data):
    """The control: the tests above see the randomness that the seeds remove."""
    source = tensors() if data == "tensors" else NoisyDataset(data)
    with unseeded(monkeypatch):
        votes = round_votes(dropout, source)
    assert (votes[0] != votes[1]).any() or (votes[1] != votes[2]).any()


@pytest.mark.parametrize("source", ["torch", "numpy", "python"])
def test_the_callers_generators_are_restored(source):
    round_votes(0.5, NoisyDataset(source), check_restored=True)


def test_partition_signs_with_seeds_is_repeatable_and_restores_the_generator():
    torch.manual_seed(0)
    net = Net(0.5)
    x, y = tensors()
    batches = [(x[:20], y[:20]), (x[20:40], y[20:40])]
    state = torch.get_rng_state()
    first = partition_signs(net, batches, seeds=[1, 2]).signs
    assert torch.equal(torch.get_rng_state(), state)
    second = partition_signs(net, batches, seeds=[1, 2]).signs
    assert torch.equal(first, second)
    assert not torch.equal(first[0], partition_signs(net, batches[:1], seeds=[3]).signs[0])
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="one seed per batch"):
        partition_signs(net, batches, seeds=[1])


def test_shared_rng_restores_the_generators_when_the_block_raises():
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError), shared_rng(9, python_and_numpy=True):
        torch.rand(3)
        raise RuntimeError("boom")
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_dropout_is_shared_and_the_cuda_generator_restored():
    torch.manual_seed(0)
    net = Net(0.5).cuda()
    x, y = tensors()
    batches = [(x[:100], y[:100])]
    cuda_state = torch.cuda.get_rng_state()
    first = partition_signs(net, batches, seeds=[4]).signs
    torch.rand(10, device="cuda")  # the caller's generator moves on
    moved = torch.cuda.get_rng_state()
    second = partition_signs(net, batches, seeds=[4]).signs
    assert torch.equal(first, second)
    assert torch.equal(torch.cuda.get_rng_state(), moved)
    assert not torch.equal(cuda_state, moved)
