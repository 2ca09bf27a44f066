"""Small model factories for tests (``tests.tiny_models:NAME`` on the bench command line)."""

from __future__ import annotations

import torch
from torch import nn

OOM_ABOVE = 4  # oom_above_4 raises CUDA OOM for batches larger than this


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(x.mean(dim=(2, 3)))


def tiny_cnn() -> nn.Module:
    return TinyCNN()


class OomAbove(TinyCNN):
    """Behaves like a GPU that runs out of memory above a known batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if x.shape[0] > OOM_ABOVE:
            big = torch.empty(1024, 1024)  # something for the traceback to hold on to
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 20.00 GiB (holding {big.numel()})"
            )
        return out


LIVE_MODELS: list = []  # weak references tests use to check cleanup


def oom_above_4() -> nn.Module:
    import weakref

    model = OomAbove()
    LIVE_MODELS.append(weakref.ref(model))
    return model


def not_a_module():
    return 42


def broken_model() -> nn.Module:
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("shape mismatch somewhere deep")

    return Broken()


class Fat(nn.Module):
    """A few wide convolutions: several MiB of activations per 64x64 sample, so a memory limit
    a little above the baseline is reached at a small, known-by-brute-force batch."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def fat() -> nn.Module:
    return Fat()


class OddOne(nn.Module):
    """Fails in training at some batch sizes only (as BatchNorm does at batch 1 on a 1x1 map),
    with a plain error, not an OOM; every size fails when ``fail_all`` is set."""

    def __init__(self, fail_all: bool = False, fail_above: int | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.fail_all = fail_all
        self.fail_above = fail_above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_above is not None and x.shape[0] > self.fail_above:
            # a RuntimeError, as library OOMs are, but not one: it must not be read as an OOM
            raise RuntimeError(f"shape '[{x.shape[0]}, 5]' is invalid for input of size {x.numel()}")
        if self.training and (self.fail_all or x.shape[0] == 1):
            raise ValueError("Expected more than 1 value per channel when training")
        return self.fc(x.flatten(1)[:, :4])


def fails_at_batch_1() -> nn.Module:
    return OddOne()


def fails_in_training() -> nn.Module:
    return OddOne(fail_all=True)


def fails_above_4() -> nn.Module:
    """Measures at batch 2 to 4, then fails with a plain (non-OOM) RuntimeError at every larger size."""
    return OddOne(fail_above=4)


class FailsOnRank1(TinyCNN):
    """Trains everywhere except on torchrun's rank 1 (a rank that fails while the others go on)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os

        if self.training and os.environ.get("RANK") == "1":
            raise ValueError("rank 1 broke on purpose")
        return super().forward(x)


def fails_on_rank_1() -> nn.Module:
    return FailsOnRank1()
