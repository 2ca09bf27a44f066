"""What only a GPU shows, on the CPU: a simulated CUDA device (``bench.hw.fake.FakeCudaDevice``) with a
per-new-shape autotune delay and workspace spike, shaped like the first H100 run of bench.

Time accounting, model reuse across batch sizes, the autotune cache across points, and the
max-batch search against a first-step spike, all with known answers.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import bench.hw.device as hw_device
from bench.analysis.accounting import first_step_label, summary_line
from bench.hw.fake import FakeCudaDevice
from bench.jobs.maxbatch import find_max_batch
from bench.measure.models import ModelSpec
from bench.measure.runner import run_point
from bench.measure.step import ModelCache
from bench.results.schema import OK, OOM, MeasureSettings, Workload
from tests.fakes import FakeClock, patch_everywhere

MiB = 2**20
GiB = 2**30

SETTINGS = MeasureSettings(
    warmup_steps=3, min_steps=5, max_steps=20, max_time_seconds=2.0, min_time_seconds=0.5, target_rel_ci=0.5
)


def gpu(clock: FakeClock, **kw) -> FakeCudaDevice:
    return FakeCudaDevice(clock, **kw)


def spec_for(device: FakeCudaDevice, name: str = "gpu_like") -> ModelSpec:
    return ModelSpec(name=name, source="factory", build=device.model, input_shape=(3, 8, 8))


def test_time_accounting_puts_autotune_in_the_first_step_never_in_the_window():
    clock = FakeClock()
    dev = gpu(clock, autotune_seconds=20.0, step_overhead_seconds=0.05, step_seconds_per_sample=0.0)
    wl = Workload(model="gpu_like", device="cuda", image_size=8)
    p = run_point(wl, spec_for(dev), 16, SETTINGS, dev, clock=clock)
    assert p.status == OK
    t = p.timing
    assert t.first_step_seconds == pytest.approx(20.05)  # autotune + one step
    assert t.warmup_seconds == pytest.approx(2 * 0.05)
    assert all(s == pytest.approx(0.05) for s in p.step_seconds)  # no autotune in any timed step
    assert t.measure_seconds == pytest.approx(p.window_seconds)
    assert t.total_seconds >= t.first_step_seconds + t.warmup_seconds + t.measure_seconds
    line = summary_line([t], t.total_seconds, first_step=first_step_label("cuda", False))
    assert line.startswith("1 point in ") and "s first steps (cuDNN autotune)" in line


def test_model_reuse_builds_once_and_keeps_the_autotune_cache_across_points():
    clock = FakeClock()
    dev = gpu(clock, autotune_seconds=20.0)
    wl = Workload(model="gpu_like", device="cuda", image_size=8)
    spec = spec_for(dev)
    cache = ModelCache()
    points = [run_point(wl, spec, b, SETTINGS, dev, clock=clock, model_cache=cache) for b in (16, 32, 16)]
    assert [p.status for p in points] == [OK, OK, OK]
    assert cache.builds == 1  # one model for the sweep
    # a new shape autotunes in its first step; batch 16 again (a repeat) finds the cache warm
    assert points[0].timing.first_step_seconds > 20 and points[1].timing.first_step_seconds > 20
    assert points[2].timing.first_step_seconds < 1
    assert points[2].timing.build_seconds is not None


def test_model_cache_resets_weights_grads_and_batchnorm_statistics():
    cache = ModelCache()
    model = cache.get(
        ("m", "cpu", False), lambda: torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    )
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    out = model(torch.randn(8, 4) * 5 + 3)
    out.sum().backward()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    again = cache.get(("m", "cpu", False), lambda: pytest.fail("rebuilt"))
    assert again is model and cache.builds == 1
    assert all(torch.equal(initial[k], v) for k, v in again.state_dict().items())  # weights and BN stats
    assert all(p.grad is None for p in again.parameters())
    other = cache.get(("other", "cpu", False), lambda: torch.nn.Linear(2, 2))
    assert other is not model and cache.builds == 2


def test_reused_model_measures_like_a_fresh_one():
    """Same simulated step time and memory with and without reuse: reuse changes only the build."""
    wl = Workload(model="gpu_like", device="cuda", image_size=8)

    def sweep(reuse: bool):
        clock = FakeClock()
        dev = gpu(clock)
        cache = ModelCache() if reuse else None
        return [
            run_point(wl, spec_for(dev), b, SETTINGS, dev, clock=clock, model_cache=cache) for b in (8, 64)
        ]

    fresh, reused = sweep(False), sweep(True)
    for a, b in zip(fresh, reused, strict=True):
        assert a.step_stats.median_seconds == pytest.approx(b.step_stats.median_seconds)
        assert a.memory.device_peak_allocated_bytes == b.memory.device_peak_allocated_bytes


def test_oom_point_has_timing_and_the_next_point_still_runs():
    clock = FakeClock()
    dev = gpu(clock, total_bytes=4 * GiB, per_sample_bytes=40 * MiB)
    wl = Workload(model="gpu_like", device="cuda", image_size=8)
    cache = ModelCache()
    big = run_point(wl, spec_for(dev), 200, SETTINGS, dev, clock=clock, model_cache=cache)
    assert big.status == OOM and "CUDA out of memory" in big.error
    assert big.timing.total_seconds is not None and big.timing.measure_seconds is None
    small = run_point(wl, spec_for(dev), 8, SETTINGS, dev, clock=clock, model_cache=cache)
    assert small.status == OK


@pytest.fixture
def fake_gpu(monkeypatch):
    """``find_max_batch`` on the simulated device: device checks and opening point at it."""
    clock = FakeClock()
    dev = gpu(clock, total_bytes=22 * GiB, fixed_bytes=300 * MiB, per_sample_bytes=40 * MiB,
              autotune_spike_bytes=900 * MiB, spike_until=32)  # fmt: skip
    patch_everywhere(monkeypatch, hw_device, "check_device", lambda spec: None)
    patch_everywhere(monkeypatch, hw_device, "open_device", lambda spec: dev)
    return dev


@pytest.mark.parametrize("autotune_probes", [False, True])
def test_max_batch_on_a_gpu_shaped_device_is_exact_in_few_probes(fake_gpu, autotune_probes, monkeypatch):
    dev = fake_gpu
    truth = max(
        b for b in range(1, 2000) if int((dev.fixed + dev.per_sample * b) * (1 + dev.overhead)) <= dev.total
    )
    wl = Workload(model="gpu_like", device="cuda", image_size=8)
    spec = spec_for(dev, "gpu_like_mb")
    import bench.measure.models

    original = bench.measure.models.resolve
    patch_everywhere(
        monkeypatch,
        bench.measure.models,
        "resolve",
        lambda name: spec if name == "gpu_like" else original(name),
    )
    res = find_max_batch(wl, soak_steps=5, autotune_probes=autotune_probes)
    assert res.granularity == 1 and res.exact
    assert res.max_batch_size == truth and res.failed_batch_size == truth + 1
    assert res.probe_count <= 9, [p.batch_size for p in res.probes]
    assert all(p.batch_size <= 1.25 * truth for p in res.probes)
    small = res.probes[
        0
    ]  # batch 1: with autotuning the first step carries its workspace, the steady steps not
    if autotune_probes:
        assert small.first_step_peak_bytes > small.steady_peak_bytes
    else:  # by default the probes do not autotune: only the soak did, at the max
        assert small.first_step_peak_bytes == small.steady_peak_bytes
        assert dev.tuned == {res.max_batch_size}
    assert small.steady_peak_bytes == pytest.approx(
        (dev.fixed + dev.per_sample) * (1 + dev.overhead), rel=0.01
    )
    assert res.memory_model.per_sample_bytes == pytest.approx(dev.per_sample * (1 + dev.overhead), rel=0.02)
    assert all(p.timing is not None and p.timing.total_seconds for p in res.probes)
    assert all(p.timing.first_step_seconds is not None for p in res.probes if p.fits)
    assert res.soak.ok and res.wall_seconds >= res.seconds * 0.99


def test_summary_line_accounts_for_every_part():
    from bench.results.schema import Timing

    timings = [
        Timing(build_seconds=1.0, first_step_seconds=20.0, warmup_seconds=0.2, measure_seconds=3.0,
               teardown_seconds=0.1, total_seconds=24.5),
        Timing(total_seconds=5.0),  # a probe killed over its budget: only its total is known
    ]  # fmt: skip
    line = summary_line(timings, 32.0, noun="probes", first_step=first_step_label("cuda", True))
    assert line == (
        "2 probes in 32 s: 20 s first steps (torch.compile, cuDNN autotune), 5.0 s stopped part-way, "
        "3.0 s measuring, 1.0 s building, 2.7 s other (setup, writing, display)"  # the rest last
    )
    # max-batch counts its soak apart from its probes, in the same one line
    line = summary_line(timings, 32.0, noun="probes", what="1 probe + 1 soak run")
    assert line.startswith("1 probe + 1 soak run in 32 s: 20 s first steps, ")


_FAKE_GPU: list[FakeCudaDevice] = []  # the device MainGpuLike drives (a module-level class pickles by name)


class MainGpuLike(torch.nn.Module):
    """FakeCudaDevice.model's network as a module-level class, re-homed to ``__main__`` in the test
    as if defined in the user's script or notebook."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":
            _FAKE_GPU[0].run_step(int(x.shape[0]))
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_a_model_class_from_main_is_probed_in_process_on_a_gpu(fake_gpu, monkeypatch):
    """A child process cannot import the caller's __main__: on a GPU the search probes in this
    process instead of failing (isolate=True becomes a notice)."""
    import __main__

    monkeypatch.setattr(MainGpuLike, "__module__", "__main__")
    monkeypatch.setattr(__main__, "MainGpuLike", MainGpuLike, raising=False)
    _FAKE_GPU[:] = [fake_gpu]
    try:
        res = find_max_batch(MainGpuLike(), device="cuda", isolate=True, image_size=8, soak_steps=2, cap=64)
    finally:
        _FAKE_GPU.clear()
    assert res.max_batch_size == 64 and res.cap_reached and res.soak.ok
    assert res.workload.model == "__main__.MainGpuLike"
    assert any(
        "isolate=True not honoured: class MainGpuLike is defined in __main__" in n for n in res.notices
    )


def test_headroom_is_not_inflated_by_the_first_step_spike(fake_gpu, monkeypatch):
    """The memory model's error is measured against the steady peaks it is fitted to: the autotune
    spike of small batches (first step only) must not widen the safe batch's headroom."""
    dev = fake_gpu
    import bench.measure.models

    spec = spec_for(dev, "gpu_like_headroom")
    original = bench.measure.models.resolve
    patch_everywhere(
        monkeypatch,
        bench.measure.models,
        "resolve",
        lambda name: spec if name == "gpu_like" else original(name),
    )
    res = find_max_batch(Workload(model="gpu_like", device="cuda", image_size=8), soak_steps=0)
    assert res.memory_model.max_relative_error < 0.01
    assert res.headroom_fraction < 0.10  # the allocator's 5% overhead, not the 900 MiB spike
    assert res.safe_batch_size >= 0.85 * res.max_batch_size


@pytest.mark.parametrize("flip", ["max_fails_again", "next_fits_again"])
def test_a_boundary_that_does_not_repeat_is_a_band_never_exact(fake_gpu, monkeypatch, flip):
    """repeat_boundary runs max and max + 1 once more; when either answers differently the result
    is a band (low = the largest size that fit every time), "exact" is withdrawn, and the notice
    says which size did what on its second run."""
    import bench.jobs.maxbatch as mb
    import bench.measure.models
    from bench.jobs.maxbatch import FIT
    from bench.jobs.maxbatch import OOM as PROBE_OOM

    dev = fake_gpu
    truth = max(
        b for b in range(1, 2000) if int((dev.fixed + dev.per_sample * b) * (1 + dev.overhead)) <= dev.total
    )
    seen: set[int] = set()
    original_probe = mb.probe_in_process

    def flaky(workload, b, *args, **kw):  # the second run of the boundary answers the other way
        rec = original_probe(workload, b, *args, **kw)
        again = b in seen
        seen.add(b)
        if again and flip == "max_fails_again" and b == truth:
            return replace(rec, outcome=PROBE_OOM)
        if again and flip == "next_fits_again" and b == truth + 1:
            return replace(rec, outcome=FIT, peak_bytes=dev.total)
        return rec

    monkeypatch.setattr(mb, "probe_in_process", flaky)
    spec = spec_for(dev, "gpu_like_band")
    original = bench.measure.models.resolve
    patch_everywhere(
        monkeypatch,
        bench.measure.models,
        "resolve",
        lambda name: spec if name == "gpu_like" else original(name),
    )
    res = find_max_batch(
        Workload(model="gpu_like", device="cuda", image_size=8), soak_steps=0, repeat_boundary=True
    )
    assert res.repeats is False and not res.exact
    again = [p.batch_size for p in res.probes if p.repeat]
    assert again == [truth, truth + 1]
    note = next(n for n in res.notices if "did not repeat" in n)
    if flip == "max_fails_again":
        assert res.band_low < truth and res.band_high == truth and res.max_batch_size == res.band_low
        assert f"batch {truth} failed on the second run" in note
    else:
        assert res.band_low == truth and res.band_high == truth + 1 and res.max_batch_size == truth
        assert f"batch {truth + 1} fit on the second run" in note
