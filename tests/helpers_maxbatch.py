"""Factories and a fake device for the max-batch tests (``tests.helpers_maxbatch:NAME``)."""

from __future__ import annotations

import weakref

from torch import nn

from bench.hw.device import CpuDevice
from tests.tiny_models import TinyCNN

LIVE: list[weakref.ref] = []  # every model built by the factories below
KEPT: list[nn.Module] = []  # what the leaky factory hoards


def tracked() -> nn.Module:
    model = TinyCNN()
    LIVE.append(weakref.ref(model))
    return model


def leaky() -> nn.Module:
    """A factory with a bug: it keeps every model it builds alive."""
    model = tracked()
    KEPT.append(model)
    return model


class CountingDevice(CpuDevice):
    """A CPU device whose 'allocated bytes' are 1000 per live model built by this module: lets the
    leak check be tested without a GPU. A model on the meta device (the class count builds one)
    holds no memory, as on a real GPU."""

    def allocated_bytes(self) -> int | None:
        live = [ref() for ref in LIVE]
        return 1000 * sum(m is not None and next(m.parameters()).device.type != "meta" for m in live)
