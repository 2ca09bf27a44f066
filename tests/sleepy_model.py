"""A model whose step takes a known time: forward sleeps BENCH_TEST_STEP_SECONDS (default 0.01).

Used by the pytest-plugin tests to give pytest-benchmark a known answer and a known slowdown.
With BENCH_TEST_FAKE_CLOCK=1 a step does not sleep but advances ``fake_clock`` (pass
``--benchmark-timer=sleepy_model.fake_clock``): the measured times are then exact, whatever the
load on the machine.
"""

import os
import time

import torch

BENCH_INPUT_SHAPE = (8,)
_FAKE_NOW_SECONDS = [0.0]


def fake_clock() -> float:
    """Seconds on a clock that moves only when a step runs (BENCH_TEST_FAKE_CLOCK=1)."""
    return _FAKE_NOW_SECONDS[0]


class Sleepy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        step_seconds = float(os.environ.get("BENCH_TEST_STEP_SECONDS", "0.01"))
        if os.environ.get("BENCH_TEST_FAKE_CLOCK"):
            _FAKE_NOW_SECONDS[0] += step_seconds
        else:
            time.sleep(step_seconds)
        return self.fc(x)


def build():
    return Sleepy()
