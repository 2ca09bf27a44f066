"""Verdicts per point: the H100 fixture (host-bound at batches 16-64) and one synthetic run per verdict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.analysis import diagnose
from bench.analysis.stats import summarize
from bench.results.codec import dumps, load_result, result_from_dict
from bench.results.schema import OK, OOM, Diagnosis, MemoryStats, Point, StepBreakdown, Telemetry

DATA = Path(__file__).parent / "data"
H100 = DATA / "h100_sweep_efficientnet_b0_bf16_cl_b16-64.json"
GIB = 2**30


def _point(batch: int, step_ms: float, **kw) -> Point:
    steps = tuple(step_ms / 1000 * (1 + 0.001 * (i % 3)) for i in range(20))
    return Point(batch_size=batch, status=OK, step_seconds=steps, step_stats=summarize(steps), **kw)


def _verdicts(points, device="cuda", threads=None, evidence=False):
    run = load_result(str(H100))
    env = (
        run.environment
        if threads is None
        else dataclasses.replace(run.environment, torch_num_threads=threads)
    )
    run = dataclasses.replace(
        run, points=tuple(points), workload=dataclasses.replace(run.workload, device=device), environment=env
    )
    found = diagnose.diagnose_run(run)
    return found if evidence else [d.verdict if d else None for d in found]


def test_h100_fixture_reads_host_bound_at_16_to_64():
    run = load_result(str(H100))  # written by the schema before verdicts: no new fields
    verdicts = diagnose.diagnose_run(run)
    assert [p.batch_size for p in run.points] == [16, 32, 64]
    assert [d.verdict for d in verdicts] == ["host-bound"] * 3
    words = " ".join(verdicts[0].evidence)
    assert "kernel-active 17%" in words and "CPU 101%" in words and "flat" in words


def test_host_bound_needs_a_flat_step_time():
    tel = Telemetry(samples=10, gpu_kernel_active_percent=30.0, process_cpu_percent=100.0)
    flat = [_point(16, 45, telemetry=tel), _point(32, 46, telemetry=tel)]
    growing = [_point(16, 45, telemetry=tel), _point(32, 90, telemetry=tel)]
    assert _verdicts(flat) == ["host-bound", "host-bound"]
    assert _verdicts(growing) == ["unclear", "unclear"]


def test_device_bound_when_kernels_run_back_to_back():
    tel = Telemetry(samples=10, gpu_kernel_active_percent=97.0, process_cpu_percent=100.0)
    assert (
        _verdicts([_point(256, 57, telemetry=tel), _point(1024, 207, telemetry=tel)]) == ["device-bound"] * 2
    )


def test_a_cpu_is_never_device_bound_its_verdicts_say_how_busy_the_threads_are():
    """Issue 23 item 3: batch 2 was "device-bound" on a CPU, and every other verdict "unclear" with
    "process CPU 197% of one core", which tells a CPU user nothing."""
    busy = Telemetry(samples=10, process_cpu_percent=190.0)
    found = _verdicts([_point(8, 100, telemetry=busy), _point(16, 200, telemetry=busy)], "cpu", 2, True)
    assert [d.verdict for d in found] == ["cpu-bound"] * 2
    words = " ".join(found[0].evidence)
    assert (
        "1.9 of torch's 2 thread(s) busy (95%)" in words and "more cores" in words and "proportional" in words
    )
    idle = Telemetry(samples=10, process_cpu_percent=70.0)
    (d,) = _verdicts([_point(8, 100, telemetry=idle)], "cpu", 2, True)
    assert d.verdict == "threads-idle" and "0.7 of torch's 2 thread(s) busy (35%)" in d.evidence[0]
    middle = Telemetry(samples=10, process_cpu_percent=150.0)  # nothing to act on: nothing said
    assert [
        (d.verdict, d.evidence) for d in _verdicts([_point(8, 100, telemetry=middle)], "cpu", 2, True)
    ] == [("unclear", ())]
    for verdicts in (_verdicts([_point(8, 100, telemetry=busy), _point(16, 100, telemetry=busy)], "cpu", 2),):
        assert "device-bound" not in verdicts


def test_a_step_time_that_falls_with_the_batch_is_not_called_flat():
    """Issue 23: "4336.8 ms at batch 8 -> 512.0 ms at batch 16 (x0.12 for x2 the samples)" was
    "nearly flat", and so host-bound."""
    tel = Telemetry(samples=10, gpu_kernel_active_percent=30.0, process_cpu_percent=100.0)
    found = _verdicts([_point(8, 4336.8, telemetry=tel), _point(16, 512.0, telemetry=tel)], evidence=True)
    words = " ".join(e for d in found for e in d.evidence)
    assert "x0.12 for x2 the samples" in words and "nearly flat" not in words and "suspect" in words
    assert [d.verdict for d in found] == ["unclear", "unclear"]


def test_a_contended_point_says_so_first():
    from bench.analysis.contention import assess

    tel = Telemetry(samples=10, process_cpu_percent=190.0)
    (d,) = _verdicts([_point(8, 100, telemetry=tel, contention=assess(1.0, 2, 2))], "cpu", 2, True)
    assert d.verdict == "contended" and "took 50% of the 2 core(s)" in d.evidence[0]


def test_input_bound_from_data_wait():
    tel = Telemetry(samples=10, gpu_kernel_active_percent=20.0, process_cpu_percent=100.0)
    bd = StepBreakdown(forward_seconds=0.01, data_seconds=0.06, steps=20, data_wait_fraction=0.7)
    (d,) = diagnose.diagnose_run(
        dataclasses.replace(load_result(str(H100)), points=(_point(64, 80, telemetry=tel, breakdown=bd),))
    )
    assert d.verdict == "input-bound"
    assert "70%" in d.evidence[0]


def test_throttled_from_clock_event_reasons():
    tel = Telemetry(
        samples=10,
        gpu_kernel_active_percent=99.0,
        clock_event_reasons=("sw_power_cap", "hw_thermal_slowdown"),
        sm_clock_mhz_mean=1410.0,
    )
    assert _verdicts([_point(256, 60, telemetry=tel)]) == ["throttled"]


def test_idle_reason_alone_is_not_throttling():
    tel = Telemetry(samples=10, gpu_kernel_active_percent=99.0, clock_event_reasons=("gpu_idle",))
    assert _verdicts([_point(256, 60, telemetry=tel)]) == ["device-bound"]


def test_memory_bound_from_gpm_or_memory_controller():
    gpm = Telemetry(samples=10, gpu_kernel_active_percent=99.0, gpm_dram_bandwidth_percent=80.0)
    nvml = Telemetry(samples=10, gpu_kernel_active_percent=99.0, gpu_memory_controller_percent=75.0)
    assert _verdicts([_point(256, 60, telemetry=gpm)]) == ["memory-bound"]
    assert _verdicts([_point(256, 60, telemetry=nvml)]) == ["memory-bound"]


def test_allocator_pressure_near_the_limit_only():
    near = MemoryStats(device_peak_reserved_bytes=76 * GIB, device_total_bytes=80 * GIB)
    far = MemoryStats(device_peak_reserved_bytes=10 * GIB, device_total_bytes=80 * GIB)
    tel = Telemetry(samples=10, gpu_kernel_active_percent=99.0)
    assert _verdicts([_point(2048, 400, memory=near, num_alloc_retries=3, telemetry=tel)]) == [
        "allocator-pressure"
    ]
    assert _verdicts([_point(256, 60, memory=far, num_alloc_retries=3, telemetry=tel)]) == ["device-bound"]


def test_unclear_without_readings_and_none_for_failed_points():
    oom = Point(batch_size=512, status=OOM, error="CUDA out of memory")
    assert _verdicts([_point(16, 10), oom]) == ["unclear", None]


def test_with_diagnoses_round_trips_through_json():
    run = diagnose.with_diagnoses(load_result(str(H100)))
    again = result_from_dict(json.loads(dumps(run)))
    assert again.points[0].diagnosis == run.points[0].diagnosis
    assert isinstance(again.points[0].diagnosis, Diagnosis)
    assert again.points[0].diagnosis.verdict == "host-bound"


def test_new_point_fields_round_trip_and_old_files_load():
    p = _point(
        32,
        40,
        flops_per_sample=2.29e9,
        achieved_tflops=1.8,
        mfu=0.0018,
        num_alloc_retries=0,
        breakdown=StepBreakdown(0.01, 0.02, 0.003, None, 20, None),
    )
    run = dataclasses.replace(load_result(str(H100)), points=(p,))
    again = result_from_dict(json.loads(dumps(run)))
    assert again.points[0] == p
    old = load_result(str(H100)).points[0]
    assert old.diagnosis is None and old.breakdown is None and old.mfu is None
    assert old.telemetry.gpm_sm_active_percent is None


def test_mfu_note_only_when_tiny():
    run = load_result(str(H100))
    tiny = dataclasses.replace(run, points=(_point(1024, 207, mfu=0.011),))
    fine = dataclasses.replace(run, points=(_point(1024, 207, mfu=0.4),))
    assert "1.1%" in diagnose.mfu_note(tiny) and "depthwise" in diagnose.mfu_note(tiny)
    assert diagnose.mfu_note(fine) is None
    assert diagnose.mfu_note(run) is None  # no MFU recorded


@pytest.mark.parametrize("verdict", diagnose.VERDICTS)
def test_every_verdict_is_named(verdict):
    assert verdict.islower() and " " not in verdict


# --------------------------------------------------------------------------- CLI, table, report


def test_cli_diagnose_json_on_a_file_and_latest(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.results.store import import_file

    runner = CliRunner()
    res = runner.invoke(app, ["diagnose", str(H100), "--json", "--db", str(tmp_path / "none.db")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [p["diagnosis"]["verdict"] for p in doc["points"]] == ["host-bound"] * 3
    db = tmp_path / "h.db"
    import_file(db, str(H100))
    res = runner.invoke(app, ["diagnose", "latest", "--db", str(db)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert res.stdout.count("host-bound") == 3 and "kernel-active 17%" in res.stdout


def test_sweep_table_has_a_verdict_column():
    from rich.console import Console

    from bench.present.display import sweep_table

    console = Console(width=250, record=True)
    console.print(sweep_table(load_result(str(H100))))
    text = console.export_text()
    assert "verdict" in text and text.count("host-bound") == 3


def test_report_has_the_verdicts_mfu_note_and_breakdown_plot(tmp_path):
    from bench.jobs.report import write_report
    from bench.present.report import ReportRun

    run = load_result(str(H100))
    bd = StepBreakdown(forward_seconds=0.012, backward_seconds=0.025, optimizer_seconds=0.004, steps=20)
    points = tuple(dataclasses.replace(p, mfu=0.011, achieved_tflops=10.9, breakdown=bd) for p in run.points)
    files = write_report([ReportRun("h100", dataclasses.replace(run, points=points))], tmp_path / "r")
    md = files.markdown.read_text()
    assert md.count("**host-bound**") == 3
    assert "1.10%" in md and "depthwise" in md
    assert "breakdown" in files.plots
    assert 'data-verdict="host-bound"' in files.html.read_text()
