"""bench's real CUDA code on a CPU, under ``bench.hw.fake_cuda`` (numbers from the H100 fixture).

What runs for real here: ``CudaDevice`` (every torch.cuda query it makes), ``CudaEventTimer`` inside
the runner's timed loop, the DDP hook's all-reduce events, ``open_monitor``'s device lookup and the
GPM readings through the sampler, and ``run_point`` end to end.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import pytest
import torch

from bench.hw import fake_cuda
from bench.hw.device import CudaDevice, CudaEventTimer, open_device
from bench.hw.fake import FakeNvml
from bench.hw.fake_cuda import GIB, H100, MIB, FakeCuda, install
from bench.hw.nvml import NullMonitor, NvmlMonitor, open_monitor
from bench.measure.runner import measure
from bench.results.errors import StickyCudaError, is_oom
from bench.results.schema import MeasureSettings
from tests.fakes import FakeClock

SETTINGS = MeasureSettings(warmup_steps=2, min_steps=10, max_time_seconds=1.0, min_time_seconds=0.5)


@pytest.fixture
def gpu():
    clock = FakeClock()
    with install(FakeCuda(H100, clock=clock)) as fake:
        yield fake, clock, CudaDevice(torch, 0, "cpu")


def step_of(fake, clock, host_seconds, device_seconds, launches=10):
    """A step as a training loop issues it: host work with kernel launches spread through it."""

    def step():
        for _ in range(launches):
            clock.advance(host_seconds / launches)
            fake.launch(device_seconds / launches)

    return step


def test_event_timer_times_a_host_bound_step_at_the_host_pace(gpu):
    fake, clock, device = gpu
    # H100 fixture, batch 64: 44.6 ms per step, the GPU kernel-active about 40% of it
    win = measure(step_of(fake, clock, 0.0446, 0.0178), 64, SETTINGS, device=device, clock=clock)
    assert statistics.median(win.step_seconds) == pytest.approx(0.0446, rel=1e-6)
    assert 64 * len(win.step_seconds) / win.window_seconds == pytest.approx(1435, rel=0.01)


def test_event_timer_times_a_device_bound_step_at_the_device_pace(gpu):
    fake, clock, device = gpu
    # batch 256: the queue never drains, each step is the device's 56.8 ms (4,350 samples/s there)
    win = measure(step_of(fake, clock, 0.044, 0.0568), 256, SETTINGS, device=device, clock=clock)
    assert statistics.median(win.step_seconds) == pytest.approx(0.0568, rel=1e-6)
    assert 256 * len(win.step_seconds) / win.window_seconds == pytest.approx(4507, rel=0.02)


def test_event_timer_reuses_its_events_between_chunks(gpu):
    fake, clock, device = gpu
    settings = MeasureSettings(warmup_steps=0, min_steps=10, max_time_seconds=3.0, min_time_seconds=1.0,
                               target_rel_ci=1e-9)  # fmt: skip
    win = measure(step_of(fake, clock, 0.01, 0.002, launches=1), 8, settings, device=device, clock=clock)
    assert len(win.step_seconds) >= 250  # three chunks of about a second
    assert fake.events_created <= 2 * 100  # the longest chunk (1 s of steps), not two per step of the point
    assert fake.records == 2 * len(win.step_seconds)


def test_cuda_device_reads_the_allocator_as_torch_reports_it(gpu):
    fake, clock, device = gpu
    device.reset_peak()
    fake.train_step(256)  # fixture: 10.9 GiB allocated, 11.8 GiB reserved at batch 256
    assert device.peak_allocated_bytes() / GIB == pytest.approx(10.9, abs=0.05)
    assert device.peak_reserved_bytes() / GIB == pytest.approx(11.8, abs=0.1)
    assert device.total_bytes() == 85_017_493_504
    free_before = device.free_bytes()
    device.empty_cache()
    # the cuBLAS workspace stays allocated: empty_cache never returns it
    assert device.allocated_bytes() == 32 * MIB
    assert device.free_bytes() > free_before
    assert device.free_bytes() == 85_017_493_504 - 750 * MIB - 32 * MIB
    assert device.name() == "NVIDIA H100 80GB HBM3"
    assert device.uuid() == "af3903b0-daff-ff5e-9c3f-c8f151d43d27"
    assert device.alloc_retries() == 0


def test_out_of_memory_past_the_device_and_past_a_memory_fraction(gpu):
    fake, clock, device = gpu
    with pytest.raises(torch.cuda.OutOfMemoryError) as exc:
        fake.train_step(2048)
    assert is_oom(exc.value) and "GPU 0 has a total capacity of 79.18 GiB" in str(exc.value)
    device.empty_cache()
    fake.train_step(256)
    torch.cuda.set_per_process_memory_fraction(0.1, 0)  # an 8.5 GB cap: batch 256 no longer fits
    device.empty_cache()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        fake.train_step(256)


def test_a_sticky_error_poisons_every_later_cuda_call(gpu):
    fake, clock, device = gpu
    with pytest.raises(RuntimeError, match="illegal memory access") as first:
        fake.fail("illegal memory access")
    assert isinstance(first.value, getattr(torch, "AcceleratorError", RuntimeError))
    assert not is_oom(first.value)
    for call in (
        device.synchronize,
        device.empty_cache,
        device.peak_allocated_bytes,
        device.make_timer().start,
    ):
        with pytest.raises(RuntimeError, match="illegal memory access"):
            call()


@pytest.fixture
def env_fake(monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_CUDA", "h100")
    yield
    fake_cuda.remove_env_fake()
    assert fake_cuda.active() is None and not torch.cuda.is_available()


def test_open_device_runs_the_cuda_class_under_the_env_fake(env_fake):
    device = open_device("cuda")
    assert isinstance(device, CudaDevice) and device.torch_device == "cpu"
    assert isinstance(device.make_timer(), CudaEventTimer)
    assert device.name() == "NVIDIA H100 80GB HBM3"
    monitor = open_monitor(device.index, device.uuid())
    assert isinstance(monitor, NvmlMonitor) and monitor.name() == "NVIDIA H100 80GB HBM3"


def test_a_sweep_runs_its_cuda_path_under_the_env_fake(env_fake, tmp_path):
    """The sweep job in-process on "cuda": CudaDevice, event timing, NVML telemetry and the MFU of
    an H100, all through the code a GPU runs."""
    from bench.jobs.sweep_loop import measure_sweep
    from bench.results.schema import Workload

    workload = Workload(model="tests.tiny_models:tiny_cnn", image_size=16, device="cuda", precision="bf16")
    settings = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0.05)
    result = measure_sweep(workload, [2, 4], settings, out_path=tmp_path / "r.json")
    assert result.status == "complete" and not result.settings.isolate
    assert result.environment.gpus[0].name == "NVIDIA H100 80GB HBM3"
    for p in result.points:
        assert p.status == "ok"
        assert p.memory.device_peak_allocated_bytes > H100.fixed_bytes
        assert p.memory.device_process_used_bytes is not None
        assert p.telemetry.power_watts_mean == 495.0
        assert p.mfu is not None and p.breakdown is not None


def test_an_unknown_fake_profile_is_one_error(monkeypatch):
    from bench.results.errors import BenchError

    monkeypatch.setenv("BENCH_FAKE_CUDA", "a100")
    with pytest.raises(BenchError, match="BENCH_FAKE_CUDA='a100': use one of h100"):
        open_device("cuda")


class MigNvml(FakeNvml):
    """NVML with two GPUs; GPU 0 split into MIG slices, the slice known by its "MIG-" UUID only."""

    def __init__(self, mig_uuid: str, **kwargs):
        super().__init__(**kwargs)
        self.mig_uuid = mig_uuid

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._check("nvmlDeviceGetHandleByUUID")
        if uuid == f"MIG-{self.mig_uuid}":
            return "mig-handle"
        raise Exception("NVML_ERROR_NOT_FOUND")

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check("nvmlDeviceGetHandleByIndex")
        return f"handle{index}"


def test_mig_slice_is_found_by_its_mig_uuid():
    mig = H100.as_mig("3g.40gb")
    with install(FakeCuda(mig, clock=FakeClock())):
        device = CudaDevice(torch, 0, "cpu")
        assert device.name() == "NVIDIA H100 80GB HBM3 MIG 3g.40gb"
        nvml = MigNvml(mig.uuid)
        monitor = open_monitor(0, device.uuid(), nvml=nvml)
        assert isinstance(monitor, NvmlMonitor) and monitor._handle == "mig-handle"


def test_an_unknown_uuid_never_falls_back_to_the_same_index():
    nvml = MigNvml("not-this-one")
    monitor = open_monitor(0, "3b1c5e2a-7f00-5d1e-9a2b-0c4d6e8f1a2b", nvml=nvml)
    assert isinstance(monitor, NullMonitor)
    assert "not reading NVML device 0" in monitor.reason
    assert "nvmlDeviceGetHandleByIndex" not in nvml.calls


def test_process_memory_inside_a_pid_namespace_is_null_with_the_reason(tmp_path, monkeypatch):
    import os

    from bench.hw import nvml as nvml_mod

    status = tmp_path / "status"
    status.write_text(f"Name:\tpython\nNSpid:\t{os.getpid()}\n")  # only the container's own PID
    own_pids = nvml_mod._own_pids
    monkeypatch.setattr(nvml_mod, "_own_pids", lambda: own_pids(str(status)))
    nvml = FakeNvml(processes=[(123456, 5 * GIB)])  # the host PID of this process
    monitor = NvmlMonitor(nvml, "handle0")
    assert monitor.process_memory_bytes() is None
    assert "PID namespace" in monitor.process_memory_reason and "123456" in monitor.process_memory_reason
    # where /proc shows the outer namespace too, NSpid's outer PID is the one NVML lists
    status.write_text(f"Name:\tpython\nNSpid:\t123456\t{os.getpid()}\n")
    assert monitor.process_memory_bytes() == 5 * GIB
    assert monitor.process_memory_reason is None


def test_allreduce_hook_spans_are_cuda_event_times(gpu):
    import torch.distributed as dist

    from bench.jobs.distributed import CommTimer, timed_allreduce_hook

    fake, clock, device = gpu
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        comm = CommTimer(device.make_timer)
        # the bucket's tensor is ready 3 ms of device work after DDP hands it over
        bucket = SimpleNamespace(buffer=lambda: (fake.launch(0.003), torch.ones(4))[1])
        out = timed_allreduce_hook(comm, bucket).wait()
        assert torch.equal(out, torch.ones(4))
        device.synchronize()
        assert comm.collect() == [pytest.approx(0.003)]
    finally:
        dist.destroy_process_group()


def test_run_point_end_to_end_on_the_fake_h100():
    from bench.measure.models import resolve
    from bench.measure.runner import run_point
    from bench.results.schema import Workload

    clock = FakeClock()
    with install(FakeCuda(H100, clock=clock), model_steps=True) as fake:
        device = CudaDevice(torch, 0, "cpu")
        # NVML as the fake's script says, its GPM rates timed on the same fake clock
        monitor = NvmlMonitor(FakeNvml(**fake.nvml_script()), "handle0", clock=clock)
        workload = Workload(
            model="tests.tiny_models:tiny_cnn", image_size=16, device="cuda", precision="bf16"
        )
        point = run_point(workload, resolve(workload.model), 8, SETTINGS, device, monitor, clock=clock)
        monitor.close()
    assert point.status == "ok", point.error
    scale = 16 * 16 / (224 * 224)
    step = H100.step_fixed_seconds + H100.step_seconds_per_sample * scale * 8
    assert point.step_stats.median_seconds == pytest.approx(step, rel=1e-6)  # the device's time: host is free
    expected = H100.fixed_bytes + int(H100.per_sample_bytes * scale * 8) + 32 * MIB
    assert point.memory.device_peak_allocated_bytes == expected
    assert point.memory.device_total_bytes == 85_017_493_504
    assert point.telemetry.gpu_kernel_active_percent == 93.0
    assert point.telemetry.power_watts_mean == 495.0
    assert point.telemetry.gpm_sm_active_percent == 88.0  # GPM: two samples at least 0.1 s apart
    assert point.telemetry.gpm_tensor_active_percent == 35.0


def test_a_sweep_says_why_per_process_memory_is_null(env_fake, tmp_path, monkeypatch):
    """In a container NVML lists the host's PID: the sweep keeps the reading null and says why."""
    from bench.jobs.sweep_loop import measure_sweep
    from bench.results.schema import Workload

    script = FakeCuda.nvml_script
    monkeypatch.setattr(FakeCuda, "nvml_script", lambda self: {**script(self), "processes": ((4242, GIB),)})
    workload = Workload(model="tests.tiny_models:tiny_cnn", image_size=16, device="cuda")
    settings = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.1, min_time_seconds=0.05)
    result = measure_sweep(workload, [2, 4], settings, out_path=tmp_path / "r.json")
    assert [p.memory.device_process_used_bytes for p in result.points] == [None, None]
    said = [n for n in result.notices if n.startswith("per-process GPU memory is null")]
    assert len(said) == 1 and "PID namespace" in said[0] and "4242" in said[0]


def test_allreduce_timers_are_read_and_reused_chunk_by_chunk(gpu):
    """Two buckets a step, three chunks of ten steps: the spans of each chunk are read at the chunk's
    synchronise and their events time the next chunk (40 events, not 2 per span held to the end)."""
    from bench.jobs.distributed import CommTimer

    fake, clock, device = gpu
    comm = CommTimer(device.make_timer)
    for _chunk in range(3):
        for _step in range(10):
            for _bucket in range(2):
                timer = comm.begin()
                fake.launch(0.001)
                timer.stop()
        device.synchronize()
        comm.harvest()
    spans = comm.collect()
    assert spans == [pytest.approx(0.001)] * 60
    assert fake.events_created == 2 * 20


def test_a_sweep_meets_a_sticky_error_at_a_scripted_batch(tmp_path):
    """The fake kills its context at batch 8 (a device-side assert): the point fails with CUDA's
    message, never as an OOM, and the points before it are kept."""
    from bench.jobs.sweep_loop import measure_sweep
    from bench.results.schema import Workload

    fake = FakeCuda(H100, sticky_from_batch=8, sticky_kind="device-side assert")
    workload = Workload(model="tests.tiny_models:tiny_cnn", image_size=16, device="cuda")
    settings = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.1, min_time_seconds=0.05)
    with install(fake, model_steps=True), pytest.raises(StickyCudaError) as stopped:
        measure_sweep(workload, [4, 8], settings, out_path=tmp_path / "r.json")
    message = str(stopped.value)  # one line: the batch, CUDA's words, what to do
    assert "\n" not in message and message.startswith("batch 8: ") and "device-side assert" in message
    assert "--isolate" in message
    result = stopped.value.partial_result
    assert [(p.batch_size, p.status) for p in result.points] == [(4, "ok")]  # kept, never an OOM
