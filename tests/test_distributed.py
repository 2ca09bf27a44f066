"""Data-parallel sweeps: env detection, combining ranks, scaling, and real gloo runs under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench.analysis.scaling import efficiency, scaling_rows, single_device_rates, with_efficiency
from bench.jobs import distributed as dd
from bench.jobs.launch import click_args, launch_sweeps, out_path_for, parse_nproc, scaling_path
from bench.results.codec import dumps, load_result, result_from_dict
from bench.results.errors import BenchError
from bench.results.schema import (
    ERROR,
    OK,
    OOM,
    Distributed,
    MeasureSettings,
    MemoryStats,
    Point,
    PointDistributed,
    RankStats,
    Workload,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_models:tiny_cnn"
FAST = ["--image-size", "8", "--warmup", "1", "--min-steps", "3", "--max-time", "0.5", "--min-time", "0"]
FIXTURE = ROOT / "tests" / "data" / "cpu_resnet18.json"


# --------------------------------------------------------------------------- env detection


def test_detect_none_outside_torchrun():
    assert dd.detect({}) is None


def test_detect_reads_torchrun_variables():
    env = dd.detect(
        {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "2"}
    )
    assert env == dd.RankEnv(rank=3, local_rank=1, world_size=8, local_world_size=4, nnodes=2)
    assert not env.is_main


@pytest.mark.parametrize(
    "environ, words",
    [
        ({"RANK": "0"}, "LOCAL_RANK, WORLD_SIZE not set"),
        ({"RANK": "x", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "not numeric"),
        ({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"}, "inconsistent"),
    ],
)
def test_detect_rejects_a_broken_environment(environ, words):
    with pytest.raises(BenchError, match=words):
        dd.detect(environ)


def test_rank_device_is_the_local_gpu():
    env = dd.RankEnv(rank=5, local_rank=1, world_size=8, local_world_size=4)
    assert dd.rank_device("cuda", env) == "cuda:1"
    assert dd.rank_device("cpu", env) == "cpu"
    with pytest.raises(BenchError, match="CUDA_VISIBLE_DEVICES"):
        dd.rank_device("cuda:3", env)


def test_timeout_parsing(monkeypatch):
    monkeypatch.delenv("BENCH_DIST_TIMEOUT", raising=False)
    assert dd.parse_timeout(None) == dd.DEFAULT_TIMEOUT_SECONDS
    monkeypatch.setenv("BENCH_DIST_TIMEOUT", "7")
    assert dd.parse_timeout(None) == 7.0
    with pytest.raises(BenchError, match="> 0"):
        dd.parse_timeout("0")


# --------------------------------------------------------------------------- combining ranks


def _point(rate_steps, window, status=OK, peak=100, error=None):
    steps = tuple([window / rate_steps] * rate_steps) if status == OK else ()
    return Point(
        batch_size=4, status=status, error=error, step_seconds=steps, window_seconds=window if status == OK else None,
        samples_per_sec=4 * rate_steps / window if status == OK else None, converged=True,
        memory=MemoryStats(device_peak_allocated_bytes=peak, host_peak_rss_bytes=peak * 10),
    )  # fmt: skip


def test_combine_divides_all_samples_by_the_slowest_window():
    points = [_point(10, 1.0, peak=100), _point(10, 1.25, peak=300)]
    ranks = [
        RankStats(rank=0, allreduce_seconds=0.2, allreduce_calls=10),
        RankStats(rank=1, allreduce_seconds=0.4, allreduce_calls=10),
    ]
    p = dd.combine(points, ranks, dataset_size=1000)
    assert p.samples_per_sec == pytest.approx(2 * 4 * 10 / 1.25)  # 64 samples/s, not 72
    d = p.distributed
    assert (d.world_size, d.per_rank_batch_size, d.global_batch_size) == (2, 4, 8)
    assert d.global_samples_per_sec == p.samples_per_sec
    assert d.allreduce_seconds_per_step == pytest.approx(0.3 / 10)
    assert p.memory.device_peak_allocated_bytes == 300  # the fullest rank
    assert p.epoch_seconds_estimate == pytest.approx(1000 / p.samples_per_sec)
    assert p.step_seconds == points[0].step_seconds  # rank 0's raw samples


def test_combine_names_the_ranks_that_failed():
    points = [_point(10, 1.0), _point(0, 0, status=OOM, error="CUDA out of memory")]
    p = dd.combine(points, [RankStats(rank=0), RankStats(rank=1, status=OOM)], dataset_size=10)
    assert p.status == OOM and p.samples_per_sec is None
    assert p.error == "rank 1: CUDA out of memory"


GLOO_TIMEOUT = (
    "RuntimeError: Got the following error when running the callback: RuntimeError: [/__w/pytorch/pytorch/"
    "third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms for recv operation"
)


def test_a_peer_that_gave_up_waiting_is_not_named_as_the_cause():
    """Rank 1 broke; rank 0's all-reduce then timed out. Both failed, but the cause is rank 1's
    (under load rank 0's timeout can arrive first: the error must not depend on that race)."""
    points = [
        _point(0, 0, status=ERROR, error=GLOO_TIMEOUT),
        _point(0, 0, status=ERROR, error="ValueError: rank 1 broke on purpose"),
    ]
    p = dd.combine(points, [RankStats(rank=0), RankStats(rank=1)], dataset_size=10)
    assert p.status == ERROR and p.error == "rank 1: ValueError: rank 1 broke on purpose"
    assert dd.waited_on_a_peer(GLOO_TIMEOUT) and dd.waited_on_a_peer(
        "NCCL watchdog caught collective operation timeout"
    )
    assert not dd.waited_on_a_peer("ValueError: rank 1 broke on purpose") and not dd.waited_on_a_peer(None)
    both = [
        _point(0, 0, status=ERROR, error="ValueError: x"),
        _point(0, 0, status=ERROR, error="ValueError: x"),
    ]
    assert dd.combine(both, [RankStats(rank=0), RankStats(rank=1)], dataset_size=10).error == "ValueError: x"


# --------------------------------------------------------------------------- schema, scaling, launcher


def test_old_files_load_without_a_distributed_block():
    r = load_result(str(FIXTURE))
    assert r.distributed is None and r.world_size == 1
    assert all(p.distributed is None for p in r.points)


def test_distributed_blocks_round_trip():
    r = load_result(str(FIXTURE))
    info = PointDistributed(
        world_size=2, per_rank_batch_size=4, global_batch_size=8, global_samples_per_sec=10.0,
        ranks=(RankStats(rank=0, memory=MemoryStats(host_peak_rss_bytes=5)), RankStats(rank=1)),
    )  # fmt: skip
    r = replace(r, distributed=Distributed(world_size=2, backend="gloo"),
                points=tuple(replace(p, distributed=info) for p in r.points))  # fmt: skip
    back = result_from_dict(json.loads(dumps(r)))
    assert back == r and back.world_size == 2


def _sweep(world, rates):
    base = load_result(str(FIXTURE))
    points = tuple(
        Point(batch_size=b, status=OK, samples_per_sec=s, step_seconds=(0.1, 0.1)) for b, s in rates.items()
    )
    dist = Distributed(world_size=world, backend="gloo") if world > 1 else None
    return replace(base, points=points, distributed=dist)


def test_scaling_efficiency_against_one_rank():
    one, two = _sweep(1, {4: 100.0, 8: 150.0}), _sweep(2, {4: 160.0, 8: 300.0})
    assert single_device_rates([two, one]) == {4: 100.0, 8: 150.0}
    rows = {(r.batch_size, r.world_size): r for r in scaling_rows([one, two])}
    assert rows[(4, 2)].efficiency == pytest.approx(0.8)
    assert rows[(8, 2)].efficiency == pytest.approx(1.0)
    assert rows[(4, 2)].global_batch_size == 8
    filled = with_efficiency(two, single_device_rates([one]))
    assert filled.points[0].distributed.scaling_efficiency == pytest.approx(0.8)
    assert efficiency(16652, 8, 2489) == pytest.approx(0.836, abs=1e-3)  # NVIDIA's 8xA100 AMP anchor


def test_parse_nproc():
    assert parse_nproc("4,1,2,2", "cpu", available=4) == (1, 2, 4)
    with pytest.raises(BenchError, match="only 2 CPU cores"):
        parse_nproc("1,4", "cpu", available=2)
    with pytest.raises(BenchError, match="only 1 GPUs"):
        parse_nproc("2", "cuda", available=1)
    with pytest.raises(BenchError, match="process counts"):
        parse_nproc("two", "cpu", available=2)


def test_launch_runs_torchrun_once_per_count_and_stops_at_a_failure(tmp_path):
    seen = []

    def fake_run(cmd):
        seen.append(cmd)
        return 0 if "--nproc-per-node=1" in cmd else 3

    base = tmp_path / "r.json"
    with pytest.raises(BenchError, match="the 2-process run failed .torchrun exit 3"):
        launch_sweeps((1, 2, 4), lambda n, path: ["sweep", "m", "--out", str(path)], base, run=fake_run)
    assert len(seen) == 2
    assert seen[0][1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert seen[1][-1] == str(out_path_for(base, 2, True)) == str(tmp_path / "r-np2.json")
    assert scaling_path(base) == tmp_path / "r-scaling.json"


def test_click_args_rebuild_the_command_line():
    import typer

    from bench.cli import app

    command = typer.main.get_command(app).commands["sweep"]
    ctx = command.make_context(
        "sweep", [TINY, "-b", "2,4", "--no-isolate", "--nproc", "2", "--max-time", "0.5"]
    )
    args = click_args(ctx, drop=("nproc",))
    assert args[0] == TINY
    pairs = dict(zip(args[1::2], args[2::2], strict=False))
    assert pairs["--batch-sizes"] == "2,4" and pairs["--max-time"] == "0.5"
    assert "--no-isolate" in args and "--nproc" not in args
    assert "--mode" not in args  # defaults are left to the default


# --------------------------------------------------------------------------- one-rank gloo group, in process


def test_one_rank_group_measures_in_ddp(tmp_path):
    from bench.hw.device import CpuDevice
    from bench.jobs.sweep import run_sweep

    wl = Workload(model=TINY, image_size=8, device="cpu")
    settings = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0)
    with dd.open_ranks(dd.SINGLE, CpuDevice(), 10.0, store=dd.one_rank_store()) as ranks:
        result = run_sweep(
            wl, [2, 4], settings, out_path=tmp_path / "r.json", ranks=ranks, annotate_steps=False
        )
    assert result.distributed.world_size == 1 and result.distributed.backend == "gloo"
    for p in result.points:
        assert p.status == OK
        d = p.distributed
        assert d.world_size == 1 and d.global_batch_size == p.batch_size
        assert d.allreduce_method == "comm-hook" and d.allreduce_seconds_per_step > 0
        assert d.ranks[0].allreduce_calls >= len(p.step_seconds)  # one bucket (at least) per step
    assert load_result(str(tmp_path / "r.json")).points[0].distributed.ranks[0].rank == 0


# --------------------------------------------------------------------------- torchrun, 2 gloo processes


def _env():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(nproc, *args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "bench", *args]  # fmt: skip


@pytest.mark.slow
def test_nproc_1_2_writes_global_figures_and_scaling(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "sweep", TINY, "-b", "4", *FAST, "--device", "cpu", "--nproc", "1,2",
         "-o", str(out), "--db", str(tmp_path / "h.db")],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data-parallel scaling" in proc.stdout
    two = json.loads((tmp_path / "r-np2.json").read_text())
    assert two["status"] == "complete"
    assert two["distributed"]["world_size"] == 2 and two["distributed"]["backend"] == "gloo"
    p = two["points"][0]
    d = p["distributed"]
    assert (d["per_rank_batch_size"], d["global_batch_size"]) == (4, 8)
    assert [r["rank"] for r in d["ranks"]] == [0, 1]
    assert all(r["samples_per_sec"] > 0 and r["allreduce_calls"] > 0 for r in d["ranks"])
    slowest = max(r["window_seconds"] for r in d["ranks"])
    assert p["samples_per_sec"] == pytest.approx(8 * len(p["step_seconds"]) / slowest)
    one = json.loads((tmp_path / "r-np1.json").read_text())
    base = one["points"][0]["samples_per_sec"]
    assert d["scaling_efficiency"] == pytest.approx(p["samples_per_sec"] / (2 * base))
    summary = json.loads(scaling_path(out).read_text())
    assert summary["kind"] == "scaling" and {r["world_size"] for r in summary["rows"]} == {1, 2}
    assert not list(tmp_path.glob(".bench-check-*"))  # rank 1 left nothing behind


@pytest.mark.slow
def test_a_failing_rank_is_one_clear_error_not_a_hang(tmp_path):
    out = tmp_path / "r.json"
    start = time.monotonic()
    proc = subprocess.run(
        _torchrun(2, "sweep", "tests.tiny_models:fails_on_rank_1", "-b", "4", *FAST, "--device", "cpu",
                  "--dist-timeout", "3", "-o", str(out), "--no-history"),
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode != 0
    assert time.monotonic() - start < 60
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert any("rank 1: batch 4 failed (ValueError: rank 1 broke on purpose)" in e for e in errors), (
        proc.stderr
    )
    assert not any("Traceback" in line and "bench/" in line for line in proc.stderr.splitlines())


@pytest.mark.slow
def test_ctrl_c_on_torchrun_marks_the_file_interrupted(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        _torchrun(2, "sweep", TINY, "-b", "2,4,8,16", "--image-size", "8", "--warmup", "1", "--max-time", "20",
                  "--min-time", "20", "--device", "cpu", "-o", str(out), "--no-history"),
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not out.exists():
        time.sleep(0.2)
    time.sleep(4)  # past set-up (FLOP count, model build: seconds on 2 busy cores), inside the window
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode != 0
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted", stderr[-2000:]
    assert len(data["points"]) < 4


def test_max_batch_probes_run_in_ddp_when_asked(monkeypatch):
    import torch.distributed as dist

    from bench.hw.device import CpuDevice
    from bench.jobs.maxbatch import probe_in_process

    wl = Workload(model=TINY, image_size=8, device="cpu")
    seen = []
    real = dd.timed_allreduce_hook

    def spy(state, bucket):
        seen.append(bucket.buffer().numel())
        return real(state, bucket)

    monkeypatch.setattr(dd, "timed_allreduce_hook", spy)
    try:
        rec = probe_in_process(wl, 4, CpuDevice(), steps=2, ddp=True)
        assert dist.is_initialized() and dist.get_world_size() == 1
    finally:
        dd.close_probe_group()
    assert rec.fits and seen  # gradients went through DDP's buckets
    assert not dist.is_initialized()
    assert probe_in_process(wl, 4, CpuDevice(), steps=2).fits and not dist.is_initialized()  # off by default


def test_max_batch_ddp_refused_under_torchrun(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(BenchError, match="one process with --ddp"):
        dd.check_ddp_probes()


def test_report_plots_scaling_across_world_sizes(tmp_path):
    from bench.present.plots import plot_scaling
    from bench.present.report import ReportRun

    one, two = _sweep(1, {4: 100.0}), _sweep(2, {4: 160.0})
    assert plot_scaling([ReportRun(label="a", result=one)]) is None  # one world size: nothing to plot
    fig = plot_scaling([ReportRun(label="a", result=one), ReportRun(label="b", result=two)])
    assert fig is not None and "scaling" in fig.get_suptitle()
