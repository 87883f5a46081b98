"""The app's own model, loss and data: nothing here comes from fl-election.

A tiny next-token task generated deterministically (no download): each sequence is an
arithmetic progression modulo ``VOCAB`` with a step of 1, 2 or 3, and the target is its
next token. Samples are dicts ``{"x": tokens, "y": next_token}``, as a Hugging Face
dataset yields them. The model has what trips a naive integration of a sequence model:
an embedding, a 1-D convolution, dropout, a LayerNorm, one linear layer applied twice
under two names (``block1`` and ``block2`` share their weight and bias) and an output
head tied to the embedding (``head.weight`` is ``embed.weight``).
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB, LENGTH, WIDTH = 16, 6, 32


def _sequences(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (count, 1), generator=generator)
    step = torch.randint(1, 4, (count, 1), generator=generator)
    tokens = (start + step * torch.arange(LENGTH + 1)) % VOCAB
    return tokens[:, :-1], tokens[:, -1]


def _samples(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    tokens, targets = _sequences(count, seed)
    return [{"x": x, "y": y} for x, y in zip(tokens, targets, strict=True)]


def load_data() -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Return ``(train, test)``: lists of samples ``{"x": tokens, "y": next_token}``."""
    return _samples(2000, seed=0), _samples(400, seed=1)


class Net(nn.Module):
    """Embedding -> Conv1d -> Dropout -> LayerNorm -> shared block twice -> tied head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.conv = nn.Conv1d(WIDTH, WIDTH, kernel_size=2)  # sees the last two tokens
        self.drop = nn.Dropout(0.1)
        self.norm = nn.LayerNorm(WIDTH)
        self.block1 = nn.Linear(WIDTH, WIDTH)
        self.block2 = self.block1  # two layers, one weight
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.embed.weight  # output head tied to the embedding

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return next-token logits, one row per sequence."""
        states = torch.relu(self.conv(self.embed(tokens).transpose(1, 2)))
        h = self.norm(self.drop(states[:, :, -1]))
        h = h + torch.tanh(self.block1(h))
        h = h + torch.tanh(self.block2(h))
        return self.head(h)


loss_fn = nn.CrossEntropyLoss()
