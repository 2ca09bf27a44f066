"""Data sets for ``bench noise`` tests (``--dataset tests.noise_data:NAME``): made here, nothing downloaded."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def teacher_images(n: int = 256, classes: int = 10, size: int = 8, seed: int = 0) -> TensorDataset:
    """Random 3×size×size images labelled by a fixed random linear teacher: learnable, finite."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen)
    teacher = torch.randn(3 * size * size, classes, generator=gen)
    y = (x.flatten(1) @ teacher).argmax(1)
    return TensorDataset(x, y)


def empty() -> TensorDataset:
    return TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))


def wrong_channels() -> TensorDataset:
    """One channel where the model takes three."""
    return TensorDataset(torch.randn(32, 1, 8, 8), torch.zeros(32, dtype=torch.long))


class Singles:
    """Yields bare tensors, not (input, target) pairs."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.randn(3, 8, 8)


def singles() -> Singles:
    return Singles()


def integer_images() -> TensorDataset:
    return TensorDataset(torch.zeros(16, 3, 8, 8, dtype=torch.uint8), torch.zeros(16, dtype=torch.long))
