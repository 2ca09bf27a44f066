"""A model that measures at batch 2 and then fails hard (a BenchError, the user's to fix) when
its batch maker is asked for anything larger: "a failure in a later point" for the fault tests,
independent of how often the sweep builds the model."""

from __future__ import annotations

import torch

from bench.results.errors import BenchError
from tests.tiny_models import tiny_cnn

BENCH_INPUT_SHAPE = (3, 8, 8)


def model() -> torch.nn.Module:
    return tiny_cnn()


def bench_make_batch(batch_size: int, device: torch.device):
    if batch_size > 2:
        raise BenchError(f"fails_later: no data for batch {batch_size}")
    return torch.randn(batch_size, 3, 8, 8, device=device), torch.randint(0, 10, (batch_size,), device=device)
