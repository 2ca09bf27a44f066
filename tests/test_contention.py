"""Contended measurements (issue 23 item 2): a point measured while other processes took a share
of the CPU it needed is marked so, with the share, in the JSON, the table and the report; the
recommendation does not rank it as if clean; no interval is printed as `inf`; the live display
and the table show the same interval. The neighbour is a scripted fake (``FakeCpuLoad``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from bench.analysis.contention import CONTENDED_PERCENT, assess, cores_needed
from bench.analysis.recommend import recommend
from bench.analysis.stats import interval_label, rel_interval_text
from bench.hw import cpu_load
from bench.hw.cpu_load import CpuLoadReading, FakeCpuLoad, PsutilCpuLoad, others_cores
from bench.hw.env import collect as _real_collect
from bench.present.display import LiveSweep, sweep_table
from bench.results.codec import load_result
from bench.results.schema import Contention, MeasureSettings, StepStats, Workload
from tests.test_faults import _noisy
from tests.test_recommend import sweep_of

TINY = "tests.tiny_models:tiny_cnn"
DATA = Path(__file__).parent / "data"
QUICK = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0, isolate=False)


def test_a_neighbour_on_one_of_two_cores_takes_half_of_a_cpu_sweep():
    """The issue's machine: 2 cores, torch on both; a neighbour busy on one core."""
    needed = cores_needed("cpu", cpus=2, torch_threads=2)
    c = assess(others_cores=1.0, cpus=2, needed=needed)
    assert (c.others_cpu_percent, c.felt_percent, c.cores_needed, c.contended) == (50.0, 50.0, 2, True)
    assert not assess(0.05, 2, needed).contended  # the sampler's own noise: 2.5%
    # a GPU run needs one core: a neighbour on 4 of 16 cores takes nothing from it
    gpu = assess(4.0, 16, cores_needed("cuda", cpus=16, torch_threads=16))
    assert gpu.felt_percent == 0.0 and not gpu.contended
    # ... until the others leave it less than its core: 15.5 of 16 busy takes half of it
    assert assess(15.5, 16, 1).felt_percent == pytest.approx(50.0)
    assert cores_needed("cpu", cpus=2, torch_threads=1, workers=4) == 2  # never more than the machine
    assert assess(CONTENDED_PERCENT / 100 * 2, 2, 2).contended  # the limit is inclusive


def test_others_cores_between_two_readings():
    fake = FakeCpuLoad(others=0.7, own=1.2, cpus=2)
    a, b = fake.read(), fake.read()
    assert others_cores(a, b) == pytest.approx(0.7)
    assert others_cores(b, b) is None  # no time passed
    # own time larger than the machine's (a reaped child's times landing late): never negative
    assert others_cores(CpuLoadReading(0, 0, 0, 2), CpuLoadReading(1, 1.0, 1.5, 2)) == 0.0


def test_the_real_meter_counts_its_own_busy_loop_as_its_own():
    meter = PsutilCpuLoad()
    start = meter.read()
    end = start
    while end.t_seconds - start.t_seconds < 0.3:  # burn a little CPU of our own
        sum(range(10_000))
        end = meter.read()
    assert end.own_busy_seconds > start.own_busy_seconds
    share = others_cores(start, end)
    assert share is not None and 0.0 <= share <= end.cpus


def _sweep(monkeypatch, tmp_path, others, settings=QUICK):
    from bench import run_sweep

    monkeypatch.setattr(cpu_load, "default_meter", lambda: FakeCpuLoad(others=others, cpus=2))
    out = tmp_path / "r.json"
    result = run_sweep(Workload(model=TINY, image_size=8, device="cpu"), [2, 4], settings, out_path=out)
    return result, out


def _two_threads(cwd=None):
    """The issue's machine whatever this one is: 2 cores, torch on both."""
    return replace(_real_collect(cwd), cpu_logical_cores=2, torch_num_threads=2)


def test_a_contended_sweep_is_marked_in_the_json_table_and_report_and_not_recommended(monkeypatch, tmp_path):
    from bench.hw import env

    monkeypatch.setattr(env, "collect", _two_threads)
    result, out = _sweep(monkeypatch, tmp_path, others=1.0)
    for p in result.points:
        assert p.contention == Contention(50.0, 50.0, 2, True)
    data = json.loads(out.read_text())
    assert data["points"][0]["contention"] == {
        "others_cpu_percent": 50.0, "felt_percent": 50.0, "cores_needed": 2, "contended": True,
    }  # fmt: skip
    assert load_result(str(out)).points[0].contention == result.points[0].contention
    rec = result.recommendation
    assert rec.best is None and rec.knee is None and rec.not_ranked == (2, 4)
    assert any("cannot recommend" in n for n in rec.notes)
    console = Console(width=80, record=True)
    console.print(sweep_table(result))
    text = console.export_text()
    assert text.count("contended 50%") == 2 and "…" not in text

    from bench.present.report import ReportRun, build_report

    files = build_report([ReportRun("r", result)], tmp_path / "rep")
    assert "contended 50%" in files.markdown.read_text() and "contended 50%" in files.html.read_text()


def test_a_quiet_neighbour_and_the_switch_off_leave_points_clean(monkeypatch, tmp_path):
    from bench.hw import env

    monkeypatch.setattr(env, "collect", _two_threads)
    quiet, _ = _sweep(monkeypatch, tmp_path, others=0.02)
    assert all(p.contention is not None and not p.contention.contended for p in quiet.points)
    off, out = _sweep(monkeypatch, tmp_path, others=1.0, settings=replace(QUICK, check_contention=False))
    assert all(p.contention is None for p in off.points)
    assert json.loads(out.read_text())["settings"]["check_contention"] is False


def test_old_files_load_without_contention():
    run = load_result(str(DATA / "cpu_resnet18.json"))
    assert all(p.contention is None for p in run.points) and run.settings.check_contention is True


def test_one_contended_batch_faster_than_the_clean_ones_stops_the_recommendation():
    slow, fast = _noisy(1, 100.0, 0.01, True), _noisy(2, 150.0, 0.01, True)
    fast_contended = replace(fast, contention=assess(1.0, 2, 2))
    rec = recommend(sweep_of([slow, fast_contended]))
    assert rec.best is None and rec.not_ranked == (2,)
    # contended but slower than a clean batch: the clean one is ranked, the other named
    slow_contended = replace(slow, contention=assess(1.0, 2, 2))
    rec = recommend(sweep_of([slow_contended, fast]))
    assert rec.best.batch_size == 2 and rec.not_ranked == (1,)
    assert "not ranked: batch 1 (contended 50%)" in " ".join(rec.notes)


def test_no_interval_is_printed_as_inf_and_the_live_display_matches_the_table():
    """The issue: the live display showed ±94.9% where the table showed ±1850.1%; a cell read
    ±CI95 inf."""
    p = _noisy(8, 1.8, 0.949, False)
    assert interval_label(p) == "±94.9%"
    assert interval_label(_noisy(8, 1.8, 1.7, False)) == "±170.0%"
    assert interval_label(_noisy(8, 1.8, float("inf"), False)) == "-"
    assert rel_interval_text(float("inf")) == "±>999%" and rel_interval_text(12.0) == "±>999%"

    class Progress:
        phase, steps, samples_per_sec, rel_ci_half_width = "measure", 12, 1.8, 0.949

    console = Console(width=200, record=True)
    live = LiveSweep(console)
    live.tasks[8] = live.progress.add_task("", total=None, batch=8, phase="start", detail="")
    live(type("E", (), {"kind": "progress", "batch_size": 8, "progress": Progress()})())
    assert "±94.9%" in live.progress.tasks[0].fields["detail"]
    table = Console(width=200, record=True)
    table.print(sweep_table(sweep_of([p])))
    assert "94.9%" in table.export_text() and "inf" not in table.export_text()


def test_a_step_stats_without_a_finite_interval_is_a_dash():
    p = _noisy(4, 10.0, 0.1, True)
    bad = replace(p, step_stats=replace(p.step_stats, rel_ci_half_width=float("nan")))
    assert interval_label(bad) == "-" and isinstance(p.step_stats, StepStats)


def test_the_switch_is_a_flag_and_a_profile_key(tmp_path):
    from bench.cli.common import build_settings
    from bench.jobs.profiles import load_profile

    assert build_settings(check_contention=False).check_contention is False
    path = tmp_path / "p.toml"
    path.write_text("models = ['resnet18']\ndevice = 'cpu'\n[measure]\ncheck_contention = false\n")
    (entry,) = load_profile(str(path)).entries
    assert entry.settings.check_contention is False


def test_bench_sweep_takes_no_contention_check(monkeypatch, tmp_path, capsys):
    from bench.cli import main

    monkeypatch.setattr(cpu_load, "default_meter", lambda: FakeCpuLoad(others=1.0, cpus=2))
    out = tmp_path / "r.json"
    args = ["sweep", TINY, "-b", "2", "--image-size", "8", "--warmup", "1", "--min-steps", "3",
            "--max-time", "0.2", "--min-time", "0", "--no-isolate", "--device", "cpu", "-o", str(out)]  # fmt: skip
    assert main([*args, "--no-contention-check"]) == 0
    assert json.loads(out.read_text())["points"][0]["contention"] is None


def test_bench_sweep_says_plainly_it_cannot_recommend(monkeypatch, tmp_path, capsys):
    from bench.cli import main
    from bench.hw import env

    monkeypatch.setattr(env, "collect", _two_threads)
    monkeypatch.setattr(cpu_load, "default_meter", lambda: FakeCpuLoad(others=1.0, cpus=2))
    args = ["sweep", TINY, "-b", "2,4", "--image-size", "8", "--warmup", "1", "--min-steps", "3",
            "--max-time", "0.2", "--min-time", "0", "--no-isolate", "--device", "cpu", "-o", str(tmp_path / "r.json")]  # fmt: skip
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "cannot recommend a batch size" in out and "no batch size to recommend" in out
    assert "best: batch" not in out and out.count("contended 50%") >= 2


def test_a_finished_child_process_counts_as_own_time():
    """An isolated point's child has exited (and been waited for) by the second reading: its CPU
    time is the measurement's own, not a neighbour's (else an idle machine would read contended)."""
    import subprocess
    import sys

    meter = PsutilCpuLoad()
    start = meter.read()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:\n    pass\n"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=120)
    end = meter.read()
    assert end.own_busy_seconds - start.own_busy_seconds >= 0.45
