"""A model whose step takes a known time: forward sleeps BENCH_TEST_STEP_SECONDS (default 0.01).

Used by the pytest-plugin tests to give pytest-benchmark a known answer and a known slowdown.
"""

import os
import time

import torch

BENCH_INPUT_SHAPE = (8,)


class Sleepy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        time.sleep(float(os.environ.get("BENCH_TEST_STEP_SECONDS", "0.01")))
        return self.fc(x)


def build():
    return Sleepy()
