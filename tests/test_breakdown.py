"""The step breakdown timed at the annotation points, with a fake clock of known cost."""

from __future__ import annotations

import pytest

from bench.analysis.diagnose import diagnose_point
from bench.measure import data
from bench.measure.breakdown import PhaseTimes
from bench.measure.runner import measure, point_from_window
from bench.results.schema import MeasureSettings, MemoryStats
from tests.fakes import FakeClock, FakeDevice
from tests.test_data import SlowDataset

SETTINGS = MeasureSettings(
    warmup_steps=2, min_steps=10, max_steps=10, max_time_seconds=100, min_time_seconds=0
)


def _train_step(clock, annotate, feed=None):
    def step():
        with annotate("data"):
            if feed is not None:
                feed.next()
            else:
                clock.advance(0.001)
        with annotate("forward"):
            clock.advance(0.010)
        with annotate("backward"):
            clock.advance(0.020)
        with annotate("optimizer"):
            clock.advance(0.003)

    return step


def test_phase_medians_over_the_measured_steps_only():
    clock = FakeClock()
    device = FakeDevice(clock)
    phases = PhaseTimes(device)
    step = _train_step(clock, phases.wrap())
    win = measure(step, 8, SETTINGS, device=device, clock=clock)
    bd = phases.breakdown(win.step_seconds)
    assert bd.steps == 10
    assert (bd.data_seconds, bd.forward_seconds, bd.backward_seconds, bd.optimizer_seconds) == pytest.approx(
        (0.001, 0.010, 0.020, 0.003)
    )
    assert bd.data_wait_fraction == pytest.approx(1 / 34)


def test_inner_annotation_still_runs():
    seen = []
    from contextlib import nullcontext

    phases = PhaseTimes(FakeDevice(FakeClock()))
    annotate = phases.wrap(lambda name: seen.append(name) or nullcontext())
    with annotate("forward"):
        pass
    assert seen == ["forward"]


def test_slow_loader_point_reads_input_bound():
    """A DataLoader whose samples cost 6 ms each (8 per batch) feeding a 33 ms step: 48 of 81 ms
    are spent waiting for data, and the verdict says so with the number."""
    clock = FakeClock()
    device = FakeDevice(clock)
    loader = data.make_loader(SlowDataset(clock, 0.006), 8, workers=0, pin_memory=False)
    feed = data.DataFeed(loader, "cpu", clock=clock)
    phases = PhaseTimes(device)
    win = measure(_train_step(clock, phases.wrap(), feed), 8, SETTINGS, device=device, clock=clock)
    point = point_from_window(8, win, 1000, MemoryStats(), None)
    bd = phases.breakdown(win.step_seconds)
    assert bd.data_wait_fraction == pytest.approx(48 / 81, rel=1e-3)  # 8 x 6 ms of 81 ms
    assert bd.data_wait_fraction > 0.5
    # the wait of every timed step is kept (issue 11 item 4), and it survives the JSON round trip
    assert len(bd.data_wait_seconds) == len(win.step_seconds)
    assert all(w == pytest.approx(0.048) for w in bd.data_wait_seconds)
    import dataclasses

    from bench.results.codec import point_from_dict, to_dict

    again = point_from_dict(to_dict(dataclasses.replace(point, breakdown=bd)))
    assert again.breakdown == bd

    d = diagnose_point(dataclasses.replace(point, breakdown=bd), on_gpu=False)
    assert d.verdict == "input-bound" and "59%" in d.evidence[0]


def test_gpu_data_wait_is_the_host_stall_not_the_compute_queue():
    """On a GPU the loop waits 30 ms for each batch while the device still runs the previous step's
    50 ms of kernels. CUDA events on the compute stream read that wait as 0 (both ends stamp when
    the queue reaches them); the host clock reads the 30 ms the loop stood still."""
    import torch

    from bench.hw.device import CudaDevice
    from bench.hw.fake_cuda import H100, FakeCuda, install

    clock = FakeClock()
    with install(FakeCuda(H100, clock=clock)) as fake:
        device = CudaDevice(torch, 0, "cpu")
        phases = PhaseTimes(device, clock)
        annotate = phases.wrap()

        def step():
            with annotate("data"):
                clock.advance(0.030)
            with annotate("forward"):
                fake.launch(0.050)

        win = measure(step, 64, SETTINGS, device=device, clock=clock, on_synchronized=phases.collect)
        bd = phases.breakdown(win.step_seconds)
    assert bd.data_seconds == pytest.approx(0.030)
    assert bd.forward_seconds == pytest.approx(0.050)
    # 10 steps: the first after the synchronise 30 + 50 ms, the others 50 ms (the wait overlaps)
    assert bd.data_wait_fraction == pytest.approx(10 * 0.030 / (0.080 + 9 * 0.050))
    # the events were read after every chunk and reused: 2 per forward of the longest chunk (10 steps)
    assert fake.events_created <= 2 * 10 + 2 * 10


def test_loader_mode_keeps_no_synthetic_batch():
    from bench.hw.device import CpuDevice
    from bench.measure.models import resolve
    from bench.measure.step import prepare
    from bench.results.schema import Workload

    workload = Workload(model="tests.tiny_models:tiny_cnn", image_size=16, data="loader", workers=0)
    prepared = prepare(workload, resolve(workload.model), 64, CpuDevice())
    try:
        assert prepared.refs["x"] is None and prepared.refs["y"] is None
        prepared.step()  # trains on the loader's batch
    finally:
        prepared.refs["feed"].close()
        prepared.release()


def test_annotation_overhead_benchmark_runs_on_cpu(capsys):
    from bench.benchmarks import annotation_overhead

    annotation_overhead.main(
        ["--model", "tests.tiny_models:tiny_cnn", "--image-size", "16", "--batch-size", "4", "--rounds", "1",
         "--seconds", "0.2", "--warmup", "1", "--range-repeats", "200"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "ratio annotated/plain: median" in out
    assert "instrumentation cost measured directly" in out
