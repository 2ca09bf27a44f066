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
