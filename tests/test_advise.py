"""Advice with a measured effect: flagged points re-measured with a fake measure of known gain."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.analysis.stats import summarize
from bench.jobs import advise
from bench.present.tables import advice_lines
from bench.results.codec import dumps, load_result, result_from_dict
from bench.results.errors import BenchError
from bench.results.schema import ERROR, OK, OOM, Point, StepBreakdown, Telemetry, Workload

DATA = Path(__file__).parent / "data"
H100 = DATA / "h100_sweep_efficientnet_b0_bf16_cl_b16-64.json"


def _point(batch: int, step_ms: float, **kw) -> Point:
    steps = tuple(step_ms / 1000 * (1 + 0.001 * (i % 3)) for i in range(20))
    return Point(
        batch_size=batch,
        status=OK,
        step_seconds=steps,
        step_stats=summarize(steps),
        samples_per_sec=batch / (step_ms / 1000),
        **kw,
    )


class FakeMeasure:
    """Step time divided by a known factor per change (compile x1.5, CUDA graphs x2, workers x3)."""

    def __init__(self, result, fail: str | None = None) -> None:
        self.base = {p.batch_size: p for p in result.points}
        self.calls: list[tuple[int, Workload]] = []
        self.fail = fail

    def __call__(self, workload: Workload, batch_size: int) -> Point:
        self.calls.append((batch_size, workload))
        if self.fail == "compile" and workload.compile:
            raise BenchError("torch.compile needs a C compiler")
        if self.fail == "oom":
            return Point(batch_size=batch_size, status=OOM, error="CUDA out of memory")
        factor = 1.0
        if workload.compile:
            factor = 2.0 if workload.compile_mode == "reduce-overhead" else 1.5
        if workload.data == "loader":
            factor = 3.0
        base = self.base[batch_size]
        after = _point(batch_size, base.step_stats.median_seconds * 1000 / factor)
        return dataclasses.replace(after, samples_per_sec=base.samples_per_sec * factor)


def test_host_bound_h100_points_get_compile_and_cuda_graph_gains():
    run = load_result(str(H100))  # host-bound at 16, 32, 64 (an older file: verdicts recomputed)
    measure = FakeMeasure(run)
    advice = advise.advise(run, measure)
    assert [(a.batch_size, a.change) for a in advice] == [
        (b, c) for b in (16, 32, 64) for c in ("--compile", "--compile --compile-mode reduce-overhead")
    ]
    assert all(a.verdict == "host-bound" and a.status == OK for a in advice)
    assert [a.gain for a in advice] == pytest.approx([1.5, 2.0] * 3, rel=1e-3)
    for a in advice:
        assert a.after_samples_per_sec == pytest.approx(a.before_samples_per_sec * a.gain)
        assert a.significant is True
    # the changed workloads differ from the run's only in what the change names
    (_, w1), (_, w2) = measure.calls[:2]
    assert dataclasses.replace(w1, compile=False) == run.workload
    assert w2.compile and w2.compile_mode == "reduce-overhead"


def test_cpu_host_bound_tries_compile_only_and_a_compiled_run_nothing():
    w = Workload(model="m", device="cpu")
    assert [c.label for c in advise.changes_for("host-bound", w)] == ["--compile"]
    assert advise.changes_for("host-bound", dataclasses.replace(w, compile=True)) == []
    cuda = dataclasses.replace(w, device="cuda", compile=True)
    assert [c.label for c in advise.changes_for("host-bound", cuda)] == [
        "--compile --compile-mode reduce-overhead"
    ]
    assert advise.changes_for("device-bound", cuda) == []


def test_input_bound_doubles_the_workers_within_the_cores():
    w = Workload(model="m", data="loader", workers=0)
    assert [c.label for c in advise.changes_for("input-bound", w, cpu_count=16)] == ["--workers 2"]
    w4 = dataclasses.replace(w, workers=4)
    assert [c.label for c in advise.changes_for("input-bound", w4, cpu_count=16)] == ["--workers 8"]
    assert [c.label for c in advise.changes_for("input-bound", w4, cpu_count=6)] == ["--workers 6"]
    assert advise.changes_for("input-bound", w4, cpu_count=4) == []  # no more cores to give
    assert advise.changes_for("input-bound", dataclasses.replace(w, data="synthetic")) == []


def test_input_bound_point_measured_with_more_workers():
    run = load_result(str(H100))
    bd = StepBreakdown(forward_seconds=0.01, data_seconds=0.06, steps=20, data_wait_fraction=0.7)
    tel = Telemetry(samples=10, gpu_kernel_active_percent=20.0, process_cpu_percent=100.0)
    run = dataclasses.replace(
        run,
        workload=dataclasses.replace(run.workload, data="loader", workers=2),
        points=(_point(64, 80, telemetry=tel, breakdown=bd),),
    )
    measure = FakeMeasure(run)
    (a,) = advise.advise(run, measure, cpu_count=8)
    assert (a.verdict, a.change, a.status) == ("input-bound", "--workers 4", OK)
    assert a.gain == pytest.approx(3.0, rel=1e-3)
    assert measure.calls[0][1].workers == 4


def test_a_failed_change_is_kept_without_a_gain_and_not_suggested():
    run = load_result(str(H100))
    advice = advise.advise(run, FakeMeasure(run, fail="compile"), batch_sizes=[32])
    assert [(a.batch_size, a.status, a.gain) for a in advice] == [(32, ERROR, None), (32, ERROR, None)]
    assert "C compiler" in advice[0].error
    lines = advice_lines(advice)
    assert all("not suggested" in line and "x" not in line.split("->")[1][:3] for line in lines)
    oom = advise.advise(run, FakeMeasure(run, fail="oom"), batch_sizes=[16])
    assert {a.status for a in oom} == {OOM}


def test_only_flagged_points_are_measured():
    run = load_result(str(H100))
    tel = Telemetry(samples=10, gpu_kernel_active_percent=97.0, process_cpu_percent=100.0)
    busy = dataclasses.replace(run, points=(_point(256, 57, telemetry=tel), _point(1024, 207, telemetry=tel)))
    measure = FakeMeasure(busy)
    assert advise.advise(busy, measure) == ()
    assert measure.calls == []


def test_lines_show_the_number_beside_each_change():
    run = load_result(str(H100))
    advice = advise.advise(run, FakeMeasure(run), batch_sizes=[16])
    lines = advice_lines(advice)
    assert lines[0].startswith("batch 16 (host-bound): --compile -> ")
    assert "x1.50 (+50%)" in lines[0] and "x2.00 (+100%)" in lines[1]
    same = dataclasses.replace(advice[0], gain=1.01, significant=False)
    assert "within noise" in advice_lines([same])[0]


def test_advice_round_trips_and_old_files_load_without_it(tmp_path):
    run = load_result(str(H100))
    assert run.advice == ()
    run = advise.with_advice(run, FakeMeasure(run), batch_sizes=[16])
    again = result_from_dict(__import__("json").loads(dumps(run)))
    assert again.advice == run.advice and len(again.advice) == 2


def test_compile_mode_is_validated():
    with pytest.raises(BenchError, match="needs --compile"):
        Workload(model="m", compile_mode="reduce-overhead")
    with pytest.raises(BenchError, match="unknown compile mode"):
        Workload(model="m", compile=True, compile_mode="fast")


# --------------------------------------------------------------------------- command line

TINY = "tests.tiny_models:tiny_cnn"
FAST = ["--image-size", "8", "--warmup", "1", "--min-steps", "3", "--max-time", "0.3", "--min-time", "0"]


def test_sweep_advise_prints_and_stores_the_measured_gain(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bench.cli import app

    # a CPU run reads device-bound or unclear, never host-bound: script one change for any verdict
    # and a measure of known effect (1.25x), so the wiring is what is tested
    def changes(verdict, workload, cpu_count=None):
        return [advise.Change("--compile", dataclasses.replace(workload, compile=True))]

    def fake_sweep_measure(settings, annotate_steps=False):
        def measure(workload, batch_size):
            assert workload.compile
            return _point(batch_size, 8.0)  # batch 2 in 8 ms: 250 samples/s

        return measure

    monkeypatch.setattr(advise, "changes_for", changes)
    monkeypatch.setattr("bench.jobs.sweep.sweep_measure", fake_sweep_measure)  # where the sweep job calls it
    out = tmp_path / "r.json"
    res = CliRunner().invoke(
        app,
        ["sweep", TINY, "-b", "2", *FAST, "--no-isolate", "--no-history", "-o", str(out), "--advise"],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    run = load_result(str(out))
    (a,) = run.advice
    assert (a.batch_size, a.change, a.status) == (2, "--compile", OK)
    assert a.after_samples_per_sec == pytest.approx(250.0)  # batch 2 / 8 ms
    assert a.gain == pytest.approx(250.0 / run.points[0].samples_per_sec)
    assert "measured advice" in res.stdout and "batch 2 (" in res.stdout and "--compile ->" in res.stdout
    shown = CliRunner().invoke(app, ["diagnose", str(out), "--json"])
    assert json.loads(shown.stdout)["advice"][0]["gain"] == pytest.approx(a.gain)


def test_workers_list_runs_one_sweep_per_count(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    out = tmp_path / "loader.json"
    args = ["sweep", TINY, "-b", "2", *FAST, "--no-isolate", "--no-history", "--data", "loader"]
    res = CliRunner().invoke(app, [*args, "--workers", "0,1", "-o", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    runs = [load_result(str(tmp_path / f"loader-w{n}.json")) for n in (0, 1)]
    assert [r.workload.workers for r in runs] == [0, 1]
    assert all(
        r.points[0].status == OK and r.points[0].breakdown.data_wait_fraction is not None for r in runs
    )
    assert "by loader workers" in res.stdout and "0 workers" in res.stdout and "1 workers" in res.stdout
    bad = CliRunner().invoke(app, ["sweep", TINY, "--workers", "0,2", "--no-history"])
    assert bad.exit_code == 2 and "needs --data loader" in bad.output


@pytest.mark.slow
def test_advise_measures_for_real_with_more_loader_workers(tmp_path):
    """Issue 23 item 12: the re-measuring path itself, with nothing replaced: a CPU sweep through
    the input pipeline, its point flagged input-bound, then ``finish_sweep(advise=True)`` measures
    the point again with more workers, in a fresh child process with live DataLoader workers
    (as `bench sweep --advise` does), and keeps the gain. The verdict is set rather than measured,
    so the test does not depend on how fast this machine decodes JPEGs."""
    from bench import MeasureSettings, run_sweep
    from bench.jobs.sweep import finish_sweep
    from bench.results.schema import Diagnosis

    settings = MeasureSettings(
        warmup_steps=1, min_steps=3, max_time_seconds=0.5, min_time_seconds=0, isolate=True
    )
    workload = Workload(model=TINY, image_size=16, device="cpu", data="loader", workers=0)
    run = run_sweep(workload, [4], settings, out_path=tmp_path / "r.json", on_event=lambda e: None)
    (point,) = run.points
    assert point.status == OK and point.breakdown.data_wait_fraction is not None
    flagged = dataclasses.replace(
        run, points=(dataclasses.replace(point, diagnosis=Diagnosis("input-bound", ("set by the test",))),)
    )
    seen = []
    done = finish_sweep(flagged, advise=True, on_event=seen.append)
    (a,) = done.advice
    assert a.change.startswith("--workers ") and a.status == OK, a
    assert a.after_samples_per_sec > 0 and a.gain == pytest.approx(
        a.after_samples_per_sec / point.samples_per_sec
    )
    assert any(e.kind == "advice" and "again with --workers" in e.message for e in seen)
    assert done.recommendation is not None
