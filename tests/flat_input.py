"""A factory whose module declares BENCH_INPUT_SHAPE (non-image input, default loss)."""

from torch import nn

BENCH_INPUT_SHAPE = (20,)


def flat() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5))
