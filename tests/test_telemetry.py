import os

import pytest

from bench.hw.fake import FakeNvml
from bench.hw.nvml import NullMonitor, decode_clock_event_reasons, open_monitor
from bench.measure.telemetry import Sampler
from tests.fakes import FakeClock


def make_sampler(nvml, clock):
    monitor = open_monitor(0, nvml=nvml)
    return Sampler(monitor, interval_seconds=0.05, clock=clock, cpu_percent=lambda: 40.0)


def test_only_the_timed_window_is_averaged():
    clock = FakeClock()
    # readings: idle (0%, 100 W) before the window, busy (90/100%, 400/500 W) inside, idle after
    nvml = FakeNvml(
        gpu_util=[0, 90, 100, 0],
        mem_util=[0, 30, 50, 0],
        power_mw=[100_000, 400_000, 500_000, 100_000],
        sm_clock_mhz=[300, 1900, 2000, 300],
        temperature_c=[40, 60, 70, 45],
        clock_event_mask=[0x1, 0x4, 0x0, 0x1],
    )
    s = make_sampler(nvml, clock)
    for t in (0.0, 1.0, 2.0, 3.0):
        clock.now = t
        s.sample_now()
    tel = s.summary(0.5, 2.5)
    assert tel.samples == 2
    assert tel.gpu_kernel_active_percent == pytest.approx(95.0)
    assert tel.gpu_memory_controller_percent == pytest.approx(40.0)
    assert tel.power_watts_mean == pytest.approx(450.0)
    assert tel.power_watts_max == pytest.approx(500.0)
    assert tel.sm_clock_mhz_mean == pytest.approx(1950.0)
    assert tel.temperature_c_max == pytest.approx(70.0)
    assert tel.clock_event_reasons == ("sw_power_cap",)
    assert tel.system_cpu_percent == pytest.approx(40.0)


def test_instant_power_preferred_then_averaged_fallback():
    nvml = FakeNvml(power_mw=[250_000])
    mon = open_monitor(0, nvml=nvml)
    assert mon.sample().power_watts == pytest.approx(250.0)
    assert "nvmlDeviceGetFieldValues" in nvml.calls
    old = FakeNvml(power_mw=[180_000], unsupported=["nvmlDeviceGetFieldValues"])
    mon = open_monitor(0, nvml=old)
    assert mon.sample().power_watts == pytest.approx(180.0)
    assert "nvmlDeviceGetPowerUsage" in old.calls


def test_unsupported_sensors_are_none_not_errors():
    nvml = FakeNvml(
        unsupported=[
            "nvmlDeviceGetUtilizationRates",
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetTemperature",
        ]
    )
    mon = open_monitor(0, nvml=nvml)
    sample = mon.sample()
    assert sample.kernel_active_percent is None
    assert sample.temperature_c is None
    assert sample.sm_clock_mhz == 1980
    assert mon.energy_millijoules() is None


def test_process_memory_matches_pid():
    nvml = FakeNvml(processes=[(1, 10), (os.getpid(), 3 * 2**30)])
    mon = open_monitor(0, nvml=nvml)
    assert mon.process_memory_bytes() == 3 * 2**30
    assert mon.process_memory_bytes(pid=999_999) is None


def test_no_nvml_gives_null_monitor_with_reason():
    mon = open_monitor(0, nvml=FakeNvml(init_error=RuntimeError("libnvidia-ml.so not found")))
    assert isinstance(mon, NullMonitor)
    assert "libnvidia-ml.so" in mon.reason
    assert mon.sample().power_watts is None
    assert open_monitor(None).available is False


def test_clock_event_reason_decoding():
    assert decode_clock_event_reasons(0) == ()
    assert decode_clock_event_reasons(0x4 | 0x20) == ("sw_power_cap", "sw_thermal_slowdown")
    assert decode_clock_event_reasons(0x1000) == ("other_0x1000",)


def test_background_thread_samples_and_stops():
    import time

    s = Sampler(NullMonitor("cpu"), interval_seconds=0.01)
    s.start()
    time.sleep(0.1)
    s.stop()
    n = len(s.readings)
    assert n >= 3
    time.sleep(0.05)
    assert len(s.readings) == n  # really stopped
    assert s.peak_rss_bytes() > 0
    tel = s.summary(s.readings[0].t, s.readings[-1].t)
    assert tel.gpu_kernel_active_percent is None
    assert tel.process_cpu_percent is not None


def test_busy_machine_is_noticed_before_a_cpu_sweep():
    from bench.measure.telemetry import busy_cpu_notice

    asked = []

    def reading(value):
        def read(interval):
            asked.append(interval)
            return value

        return read

    assert busy_cpu_notice(0.3, cpu_percent=reading(5.0)) is None
    assert busy_cpu_notice(0.3, cpu_percent=reading(25.0)) is None  # at the threshold: quiet
    note = busy_cpu_notice(0.3, cpu_percent=reading(93.0))
    assert note is not None and "93% busy" in note
    assert asked == [0.3, 0.3, 0.3]


# --------------------------------------------------------------------------- NVML GPM (Hopper+)


def gpm_sampler(nvml, clock):
    from bench.hw.nvml import NvmlMonitor

    monitor = NvmlMonitor(nvml, "handle0", clock=clock, gpm_min_interval_seconds=0.1)
    return monitor, Sampler(monitor, interval_seconds=0.05, clock=clock, cpu_percent=lambda: 40.0)


def test_gpm_metrics_are_rates_between_samples_averaged_over_the_window():
    clock = FakeClock()
    # each reading covers the interval since the one before: (SM active, tensor active, DRAM bw) %
    nvml = FakeNvml(gpm=[(40.0, 10.0, 70.0), (60.0, 30.0, 90.0), (5.0, 0.0, 5.0)])
    monitor, s = gpm_sampler(nvml, clock)
    for t in (0.0, 1.0, 2.0, 3.0):  # t=0: the first GPM sample, no interval yet
        clock.now = t
        s.sample_now()
    assert [r.gpu.gpm_sm_active_percent for r in s.readings] == [None, 40.0, 60.0, 5.0]
    tel = s.summary(0.5, 2.5)
    assert tel.gpm_sm_active_percent == pytest.approx(50.0)
    assert tel.gpm_tensor_active_percent == pytest.approx(20.0)
    assert tel.gpm_dram_bandwidth_percent == pytest.approx(80.0)
    assert tel.gpu_kernel_active_percent == pytest.approx(50.0)  # the NVML reading is unchanged
    monitor.close()
    assert nvml.gpm_samples_live == 0


def test_gpm_reading_too_soon_after_the_last_is_skipped_not_consumed():
    clock = FakeClock()
    nvml = FakeNvml(gpm=[(40.0, 10.0, 70.0), (60.0, 30.0, 90.0)])
    monitor, _ = gpm_sampler(nvml, clock)
    monitor.sample()
    clock.now = 0.05
    assert monitor.sample().gpm_sm_active_percent is None  # 50 ms: too short an interval
    clock.now = 0.2
    assert monitor.sample().gpm_sm_active_percent == 40.0
    assert nvml.calls.count("nvmlGpmMetricsGet") == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # not GPM-capable (before Hopper): isSupportedDevice 0
        {"gpm": [(1.0, 2.0, 3.0)], "unsupported": ["nvmlGpmQueryDeviceSupport"]},  # NotSupported
        {"gpm": [(1.0, 2.0, 3.0)], "unsupported": ["nvmlGpmSampleGet"]},  # driver refuses samples
        {"gpm": [(1.0, 2.0, 3.0)], "gpm_api": False},  # pynvml without nvmlGpmSampleGet
    ],
)
def test_gpm_not_supported_is_null_not_an_error(kwargs):
    clock = FakeClock()
    nvml = FakeNvml(**kwargs)
    monitor, s = gpm_sampler(nvml, clock)
    for t in (0.0, 1.0, 2.0):
        clock.now = t
        s.sample_now()
    tel = s.summary(0.0, 2.0)
    assert (tel.gpm_sm_active_percent, tel.gpm_tensor_active_percent, tel.gpm_dram_bandwidth_percent) == (
        None,
        None,
        None,
    )
    assert tel.gpu_kernel_active_percent == pytest.approx(50.0)  # the other readings still work
    assert nvml.gpm_samples_live == 0  # nothing allocated, or freed on the failure
    assert nvml.calls.count("nvmlGpmQueryDeviceSupport") <= 1  # switched off once, not asked again


def test_one_unsupported_gpm_metric_is_null_and_the_others_kept():
    clock = FakeClock()
    nvml = FakeNvml(gpm=[(70.0, None, 35.0)])
    monitor, _ = gpm_sampler(nvml, clock)
    monitor.sample()
    clock.now = 1.0
    g = monitor.sample()
    assert (g.gpm_sm_active_percent, g.gpm_tensor_active_percent, g.gpm_dram_bandwidth_percent) == (
        70.0,
        None,
        35.0,
    )
