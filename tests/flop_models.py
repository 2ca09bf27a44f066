"""Models with a FLOP count known by hand (``tests.flop_models:NAME`` on the command line)."""

from __future__ import annotations

from torch import nn

IN_FEATURES = 64
OUT_FEATURES = 10
BENCH_INPUT_SHAPE = (IN_FEATURES,)


def linear() -> nn.Module:
    """One Linear layer: 2*in*out FLOPs per sample forward. Training adds the weight gradient (as
    costly as the forward); the input is data, so no input gradient: 2x forward."""
    return nn.Linear(IN_FEATURES, OUT_FEATURES)


def mlp() -> nn.Module:
    """Linear(in, in) then Linear(in, out): the second layer also computes its input gradient, so it
    costs the textbook 3x forward in training; the first, 2x."""
    return nn.Sequential(nn.Linear(IN_FEATURES, IN_FEATURES), nn.Linear(IN_FEATURES, OUT_FEATURES))


def depthwise() -> nn.Module:
    """A depthwise 3x3 convolution (groups = channels) over 8x8 with 4 channels, then a head."""
    return nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.Flatten(), nn.Linear(256, 2))
