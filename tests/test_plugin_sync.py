"""The bench_model fixture synchronises once per round, never per step (issue 12 item 5): a step
that drained the GPU queue each time would time launch latency, not the sweep's throughput."""

from __future__ import annotations

from types import SimpleNamespace

import bench.hw.device as hw_device
from bench.jobs.plugin import ModelStepRunner


class CountingDevice:
    """The real CPU device, counting synchronises and the steps run between them."""

    def __init__(self, inner):
        self._inner = inner
        self.syncs = 0

    def synchronize(self):
        self.syncs += 1
        self._inner.synchronize()

    def __getattr__(self, name):
        return getattr(self._inner, name)


class FakeBenchmark:
    """pytest-benchmark's ``pedantic`` as it calls the target: rounds x iterations."""

    def __init__(self):
        self.extra_info = {}
        self.stats = SimpleNamespace(stats=SimpleNamespace(median=0.01, mean=0.01))
        self.calls = 0

    def pedantic(self, fn, rounds, iterations, warmup_rounds=0):
        for _ in range(rounds * iterations):
            fn()
            self.calls += 1


def test_one_synchronise_per_round_not_per_step(monkeypatch):
    devices = []

    def open_counting(spec):
        devices.append(CountingDevice(original(spec)))
        return devices[-1]

    original = hw_device.open_device
    monkeypatch.setattr("bench.jobs.plugin.open_device", open_counting)  # where the plugin calls it
    bm = FakeBenchmark()
    runner = ModelStepRunner(bm, "cpu")
    runner("tests.tiny_models:tiny_cnn", batch_size=2, image_size=8, warmup=2, rounds=5, steps_per_round=4)
    runner.release()
    (dev,) = devices
    assert bm.calls == 5 * 4  # 20 timed steps
    assert dev.syncs == 1 + 5  # one after the warm-up, then one closing each round: not 20
    assert bm.extra_info["samples_per_sec"] == 2 / 0.01
