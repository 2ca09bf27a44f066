import itertools

import pytest

from bench.hw.fake import FakeNvml
from bench.hw.nvml import open_monitor
from bench.measure.runner import Hooks, Sync, measure, point_from_window
from bench.results.schema import MeasureSettings, MemoryStats
from tests.fakes import FakeClock, FakeDevice, ScriptedStep


def settings(**kw):
    base = dict(warmup_steps=3, min_steps=10, max_time_seconds=5.0, min_time_seconds=0.0)
    base.update(kw)
    return MeasureSettings(**base)


def test_warmup_excluded_and_throughput_exact():
    clock = FakeClock()
    # three slow warm-up steps (compile, autotune), then steady 20 ms steps
    step = ScriptedStep(clock, [1.0, 0.5, 0.3] + [0.020] * 1000)
    win = measure(step, 32, settings(), device=FakeDevice(clock), clock=clock)
    assert win.warmup_steps == 3
    assert all(t == pytest.approx(0.020) for t in win.step_seconds)
    assert len(win.step_seconds) == 10  # converged at min_steps: zero spread
    assert win.converged
    p = point_from_window(32, win, 1_281_167, MemoryStats(), None)
    assert p.samples_per_sec == pytest.approx(32 / 0.020)
    assert p.epoch_seconds_estimate == pytest.approx(1_281_167 / (32 / 0.020))
    assert p.step_stats.median_seconds == pytest.approx(0.020)


def test_noisy_steps_stop_at_time_budget():
    clock = FakeClock()
    step = ScriptedStep(clock, [0.01] * 3 + [0.01, 0.03] * 100_000)
    win = measure(step, 8, settings(max_time_seconds=2.0), device=FakeDevice(clock), clock=clock)
    assert not win.converged
    assert win.window_seconds == pytest.approx(2.0, abs=0.05)
    # samples/sec from the window: mean step 20 ms -> 400 samples/s
    p = point_from_window(8, win, 100, MemoryStats(), None)
    assert p.samples_per_sec == pytest.approx(400, rel=0.02)


def test_adaptive_keeps_going_until_ci_target():
    clock = FakeClock()
    noise = itertools.cycle([0.100, 0.104, 0.096, 0.102, 0.098])
    step = ScriptedStep(clock, [next(noise) for _ in range(5000)])
    win = measure(
        step, 1, settings(target_rel_ci=0.005, max_time_seconds=60.0), device=FakeDevice(clock), clock=clock
    )
    assert win.converged
    assert len(win.step_seconds) > 10  # needed more than the minimum to reach +-0.5%


def test_min_time_extends_short_windows():
    clock = FakeClock()
    step = ScriptedStep(clock, [0.001] * 10_000)
    win = measure(step, 1, settings(min_time_seconds=0.5), device=FakeDevice(clock), clock=clock)
    assert win.window_seconds >= 0.5
    assert len(win.step_seconds) >= 500


def test_max_steps_cap():
    clock = FakeClock()
    step = ScriptedStep(clock, [0.01, 0.03] * 10_000)
    win = measure(step, 1, settings(max_steps=12), device=FakeDevice(clock), clock=clock)
    assert len(win.step_seconds) == 12


def test_hooks_see_phases_and_window_edges():
    events = []

    class Recorder(Hooks):
        def step(self, phase, index):
            events.append((phase, index))
            return super().step(phase, index)

        def window_start(self):
            events.append("start")

        def window_stop(self):
            events.append("stop")

    clock = FakeClock()
    step = ScriptedStep(clock, [0.01] * 100)
    measure(step, 1, settings(warmup_steps=2), device=FakeDevice(clock), clock=clock, hooks=Recorder())
    assert events[:3] == [("warmup", 0), ("warmup", 1), "start"]
    assert events[-1] == "stop"
    measured = [e for e in events if isinstance(e, tuple) and e[0] == "measure"]
    assert [i for _, i in measured] == list(range(len(measured)))


def test_energy_from_counter_difference():
    clock = FakeClock()
    nvml = FakeNvml(energy_mj=[5_000_000, 5_600_000])  # 600 J across the window
    monitor = open_monitor(0, nvml=nvml)
    step = ScriptedStep(clock, [0.01] * 100)
    win = measure(step, 10, settings(), device=FakeDevice(clock), clock=clock, monitor=monitor)
    assert win.energy_joules == pytest.approx(600.0)
    p = point_from_window(10, win, 100, MemoryStats(), None)
    assert p.joules_per_sample == pytest.approx(600.0 / (10 * len(win.step_seconds)))


def test_device_synchronised_around_window():
    """Exactly: once to open the window, then at each chunk's start and end, never per step (a
    sync per step would serialise the GPU's queue and measure launch latency instead)."""

    class CountChunks(Sync):
        chunks = 0

        def chunk_steps(self, steps: int) -> int:
            self.chunks += 1
            return steps

    clock = FakeClock()
    dev = FakeDevice(clock)
    step = ScriptedStep(clock, [0.01] * 100)
    chunks = CountChunks()
    win = measure(step, 1, settings(warmup_steps=0), device=dev, clock=clock, sync=chunks)
    assert 1 <= chunks.chunks < len(win.step_seconds)
    assert dev.syncs == 1 + 2 * chunks.chunks  # window open; chunk start and end
    warm, warm_chunks = FakeDevice(clock), CountChunks()
    measure(
        ScriptedStep(clock, [0.01] * 100),
        1,
        settings(warmup_steps=2),
        device=warm,
        clock=clock,
        sync=warm_chunks,
    )
    assert warm.syncs == 2 + 1 + 2 * warm_chunks.chunks  # and once after each warm-up step (its time is read)
