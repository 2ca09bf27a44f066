"""A factory module that declares its own input and loss (a tiny sequence model)."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 50
SEQ = 12


class TinySeq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.out = nn.Linear(16, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(tokens))  # (B, SEQ, VOCAB)


def tiny_seq() -> nn.Module:
    return TinySeq()


def bench_make_batch(batch_size: int, device: torch.device):
    tokens = torch.randint(0, VOCAB, (batch_size, SEQ), device=device)
    return tokens, tokens


def bench_loss(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output.reshape(-1, VOCAB), targets.reshape(-1))


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)
