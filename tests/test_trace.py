"""bench trace: annotations, the PyTorch profiler trace, nsys command lines, and the CLI with a fake nsys."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import annotate, nsys, profiler
from bench.measure.runner import NO_HOOKS, measure
from bench.present import ops_tables
from bench.results.schema import MeasureSettings, Workload
from tests.fakes import FakeClock, FakeDevice

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_models:tiny_cnn"
CHILD = ["/usr/bin/python3", "-m", "bench", "trace", "resnet18", "--batch-size", "8", "--inside-nsys"]


# --------------------------------------------------------------------------- PyTorch profiler trace


@pytest.fixture(scope="module")
def resnet_trace(tmp_path_factory):
    """resnet18 at 32 px, batch 2 on CPU: 2 warm-up steps, 3 recorded steps."""
    path = tmp_path_factory.mktemp("trace") / "pytorch" / "rank0.pt.trace.json.gz"
    workload = Workload(model="resnet18", image_size=32, device="cpu")
    result = profiler.record_torch_trace(workload, 2, 3, 2, path)
    with gzip.open(result.trace_path, "rt", encoding="utf-8") as fh:
        return result, json.load(fh)


def _annotations(data):
    return [e for e in data["traceEvents"] if e.get("cat") == "user_annotation" and e.get("ph") == "X"]


def test_trace_has_every_measured_step_and_no_warmup(resnet_trace):
    _result, data = resnet_trace
    events = _annotations(data)
    steps = sorted(e["name"] for e in events if e["name"].startswith("step "))
    assert steps == ["step b=2 i=0 measure", "step b=2 i=1 measure", "step b=2 i=2 measure"]
    assert not [e for e in data["traceEvents"] if "warmup" in str(e.get("name", ""))]
    for phase in ("forward", "backward", "optimizer"):
        assert sum(e["name"] == phase for e in events) == 3, phase


def test_each_phase_range_sits_inside_one_step_range(resnet_trace):
    _result, data = resnet_trace
    events = _annotations(data)
    steps = [(e["ts"], e["ts"] + e["dur"]) for e in events if e["name"].startswith("step ")]
    for e in events:
        if e["name"] in ("forward", "backward", "optimizer"):
            inside = [s for s in steps if s[0] <= e["ts"] and e["ts"] + e["dur"] <= s[1]]
            assert len(inside) == 1, e["name"]


def test_trace_carries_rank_metadata_for_hta(resnet_trace):
    _result, data = resnet_trace
    assert data["distributedInfo"]["rank"] == 0
    assert data["distributedInfo"]["world_size"] == 1


def test_operator_rows_are_real_ops_not_annotations(resnet_trace):
    result, _data = resnet_trace
    names = {r.name for r in result.ops}
    assert any(n.startswith("aten::conv") or "convolution" in n for n in names)
    assert not {"forward", "backward", "optimizer"} & names
    assert not [n for n in names if n.startswith("step ") or n.startswith("ProfilerStep#")]
    assert result.measured_steps == 3 and result.samples_per_sec > 0


def test_add_distributed_info_keeps_existing_fields():
    data = profiler.add_distributed_info({"distributedInfo": {"backend": "nccl", "rank": 3}})
    assert data["distributedInfo"] == {"backend": "nccl", "rank": 3, "world_size": 1}
    assert profiler.add_distributed_info({})["distributedInfo"]["rank"] == 0


def test_profiler_schedule_skips_warmup():
    assert profiler.profiler_schedule_counts(5, 4) == (4, 1, 4)
    assert profiler.profiler_schedule_counts(0, 3) == (0, 0, 3)


def test_ops_table_ranks_by_self_time_per_step():
    rows = [
        profiler.OpRow("aten::small", calls=4, self_host_us=1000, host_total_us=1000, self_device_us=9000),
        profiler.OpRow("aten::big", calls=2, self_host_us=8000, host_total_us=8000, self_device_us=1000),
    ]
    text = ops_tables.ops_table_markdown(rows, measured_steps=2, device_kind="cuda")
    device_part, host_part = text.split("### Host")
    assert device_part.index("aten::small") < device_part.index("aten::big")  # 9 ms device first
    assert host_part.index("aten::big") < host_part.index("aten::small")
    assert "| `aten::big` | 1.0 | 4.000 | 88.9 |" in host_part  # 8 ms over 2 steps, 8/9 of the time
    cpu_text = ops_tables.ops_table_markdown(rows, measured_steps=2, device_kind="cpu")
    assert "Device" not in cpu_text and "self device" not in cpu_text


# --------------------------------------------------------------------------- annotations and hooks


def test_sweep_instrumentation_disabled_is_the_default_hooks():
    assert annotate.sweep_instrumentation(False, "cuda") == (None, NO_HOOKS)
    with pytest.raises(Exception, match="device kind"):
        annotate.sweep_instrumentation(True, "tpu")


def test_cpu_instrumentation_emits_profiler_ranges_without_nvtx():
    import torch

    mark, hooks = annotate.sweep_instrumentation(True, "cpu", batch_size=16)
    assert hooks._marks.push is None  # no NVTX on CPU
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with hooks.step("measure", 7):
            with mark("forward"):
                torch.ones(4).add_(1)
    names = {e.key for e in prof.key_averages()}
    assert {"step b=16 i=7 measure", "forward"} <= names


def test_cuda_hooks_bracket_only_the_measured_window(monkeypatch):
    """NVTX per step and phase; cudaProfilerStart right after the synchronise that opens the window."""
    log: list[str] = []
    monkeypatch.setattr(
        annotate,
        "_nvtx_backend",
        lambda: (lambda name, colour: log.append(f"push {name}"), lambda: log.append("pop")),
    )

    class FakeCudaProfiler:
        def start(self):
            log.append("cudaProfilerStart")

        def stop(self):
            log.append("cudaProfilerStop")

    class LoggingDevice(FakeDevice):
        def synchronize(self):
            log.append("sync")

    mark, hooks = annotate.sweep_instrumentation(True, "cuda", batch_size=4)
    hooks._cuda_profiler = FakeCudaProfiler()
    clock = FakeClock()

    def step():
        with mark("forward"):
            clock.advance(0.01)

    settings = MeasureSettings(
        warmup_steps=2, min_steps=3, max_steps=3, min_time_seconds=0, max_time_seconds=10
    )
    measure(step, 4, settings, device=LoggingDevice(clock), clock=clock, hooks=hooks)
    start, stop = log.index("cudaProfilerStart"), log.index("cudaProfilerStop")
    assert log[start - 1] == "sync" and log[stop - 1] == "sync"
    inside = [e for e in log[start:stop] if e.startswith("push step")]
    outside = [e for e in log[:start] + log[stop:] if e.startswith("push step")]
    assert inside == [f"push step b=4 i={i} measure" for i in range(3)]
    assert outside == ["push step b=4 i=0 warmup", "push step b=4 i=1 warmup"]
    assert log.count("push forward") == 5
    assert log.count("pop") == sum(e.startswith("push") for e in log)  # balanced


# --------------------------------------------------------------------------- nsys command lines


def test_nsys_command_for_a_current_release(tmp_path):
    cmd = nsys.build_nsys_command((2024, 5, 1), tmp_path / "nsys", CHILD)
    assert cmd[:2] == ["nsys", "profile"]
    assert "--trace=cuda,nvtx,osrt,cudnn,cublas" in cmd
    assert "--capture-range=cudaProfilerApi" in cmd
    assert "--capture-range-end=stop" in cmd
    assert "--force-overwrite=true" in cmd
    assert "--sample=none" in cmd
    out = cmd.index("--output")
    assert cmd[out + 1] == str(tmp_path / "nsys" / "profile")
    assert cmd[-len(CHILD) :] == CHILD  # the child comes last, untouched


def test_nsys_command_for_an_old_release_drops_newer_flags(tmp_path):
    cmd = nsys.build_nsys_command((2020, 5), tmp_path, CHILD, cpu_sampling=True)
    assert "--capture-range=cudaProfilerApi" in cmd
    assert not [a for a in cmd if a.startswith("--capture-range-end")]
    assert "--sample=cpu" in cmd  # before process-tree existed
    new = nsys.build_nsys_command((2021, 2), tmp_path, CHILD, cpu_sampling=True)
    assert "--capture-range-end=stop" in new and "--sample=process-tree" in new


def test_nsys_command_on_cpu_records_the_whole_run_with_sampling(tmp_path):
    cmd = nsys.build_nsys_command(None, tmp_path, CHILD, device_kind="cpu")
    assert "--trace=nvtx,osrt" in cmd
    assert not [a for a in cmd if a.startswith("--capture-range")]  # no CUDA range to wait for
    assert "--sample=process-tree" in cmd


def test_parse_nsys_version():
    assert nsys.parse_nsys_version("NVIDIA Nsight Systems version 2023.4.4.54-234433681190v0") == (
        2023,
        4,
        4,
        54,
    )
    assert nsys.parse_nsys_version("nsys 2020.5.1") == (2020, 5, 1)
    assert nsys.parse_nsys_version("garbage") is None


def test_stats_report_names_follow_version_or_help_text():
    assert nsys.stats_report_names((2023, 2), "cuda")[:2] == ["cuda_gpu_kern_sum", "cuda_api_sum"]
    assert nsys.stats_report_names((2022, 4), "cuda")[:2] == ["gpukernsum", "cudaapisum"]
    assert nsys.stats_report_names((2024, 1), "cpu") == ["nvtx_sum", "osrt_sum"]
    help_text = "  gpukernsum -- CUDA GPU Kernel Summary\n  nvtx_sum -- NVTX Range Summary\n"
    assert nsys.stats_report_names((2023, 1), "cuda", help_text) == ["gpukernsum", "nvtx_sum"]


# --------------------------------------------------------------------------- CLI with a fake nsys

FAKE_NSYS = """\
#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(json.dumps(args) + "\\n")
if args == ["--version"]:
    print("NVIDIA Nsight Systems version 2023.4.4.54-234433681190v0")
    sys.exit(0)
if args[:2] == ["stats", "--help-reports"]:
    print("cuda_gpu_kern_sum cuda_api_sum cuda_gpu_mem_time_sum nvtx_sum osrt_sum")
    sys.exit(0)
if args[0] == "profile":
    if {fail}:
        print("fake nsys: cannot start the collection", file=sys.stderr)
        sys.exit(3)
    child = args[args.index({python!r}):]
    rc = subprocess.run(child).returncode
    out = args[args.index("--output") + 1]
    if rc == 0:
        open(out + ".nsys-rep", "w").close()
    sys.exit(rc)
if args[0] == "stats":
    prefix = args[args.index("--output") + 1]
    for name in args[args.index("--report") + 1].split(","):
        open(prefix + "_" + name + ".csv", "w").write("Time (%),Name\\n")
"""


def _install_fake_nsys(tmp_path, monkeypatch, *, fail=False):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "nsys_calls.jsonl"
    script = bindir / "nsys"
    script.write_text(FAKE_NSYS.format(python=sys.executable, log=str(log), fail=fail))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def run_bench(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


FAST = ["--batch-size", "2", "--image-size", "8", "--steps", "2", "--warmup", "1", "--device", "cpu"]


@pytest.mark.slow
def test_cli_runs_the_workload_under_nsys_with_the_right_child_arguments(tmp_path, monkeypatch):
    log = _install_fake_nsys(tmp_path, monkeypatch)
    out = tmp_path / "out"
    proc = run_bench("trace", TINY, *FAST, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    profile = next(c for c in calls if c[0] == "profile")
    child = profile[profile.index(sys.executable) :]
    assert child[:5] == [sys.executable, "-m", "bench", "trace", TINY]
    assert child[-1] == "--inside-nsys"
    assert child[child.index("--batch-size") + 1] == "2" and child[child.index("--steps") + 1] == "2"
    assert child[child.index("--device") + 1] == "cpu"
    assert profile[profile.index("--output") + 1] == str(out / "nsys" / "profile")
    # the child really ran the annotated workload under the (fake) nsys
    assert (
        "bench trace (under nsys): batch 2, 2 measured steps"
        in (out / "nsys" / "nsys_profile.log").read_text()
    )
    stats = next(c for c in calls if c[0] == "stats" and "--report" in c)
    assert stats[stats.index("--report") + 1] == "nvtx_sum,osrt_sum"  # CPU run: no CUDA reports
    assert stats[-1] == str(out / "nsys" / "profile.nsys-rep")
    assert (out / "nsys" / "stats_nvtx_sum.csv").exists()
    assert (out / "pytorch" / "rank0.pt.trace.json.gz").exists()
    ops = (out / "ops.md").read_text()
    assert "Host: CPU time" in ops and "Device" not in ops  # a CPU run has no device table
    assert "nsys report:" in proc.stdout and "Top operators" in proc.stdout


@pytest.mark.slow
def test_cli_reports_nsys_failure_in_one_line_with_exit_2(tmp_path, monkeypatch):
    _install_fake_nsys(tmp_path, monkeypatch, fail=True)
    proc = run_bench("trace", TINY, *FAST, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "nsys profile failed (exit 3)" in errors[0] and "cannot start the collection" in errors[0]


@pytest.mark.slow
def test_cli_without_nsys_writes_the_command_as_a_script(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no nsys anywhere; python is called by absolute path
    out = tmp_path / "out"
    proc = run_bench("trace", TINY, *FAST, "--out", str(out), "--memory")
    assert proc.returncode == 0, proc.stderr
    script = out / "nsys_profile.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert text.startswith("#!/bin/sh")
    assert "nsys profile --trace=nvtx,osrt" in text
    assert f"-m bench trace {TINY} --batch-size 2" in text and "--inside-nsys" in text
    assert "nsys stats --report nvtx_sum,osrt_sum" in text
    lines = [ln for ln in proc.stdout.splitlines() if "nsys not found" in ln]
    assert len(lines) == 1 and str(script) in lines[0]
    assert "--memory needs CUDA" in proc.stdout
    assert (out / "pytorch" / "rank0.pt.trace.json.gz").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "1"], "--steps must be at least 2"),
        (["--nsys", "/nonexistent/nsys"], "--nsys /nonexistent/nsys: not an executable file"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, extra, message):
    proc = run_bench("trace", TINY, *FAST, "--out", str(tmp_path / "out"), *extra)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_script_is_runnable_shell(tmp_path):
    path = nsys.write_nsys_script(
        tmp_path / "s.sh", ["echo", "profile it"], ["echo", "stats"], str(tmp_path), "note"
    )
    proc = subprocess.run([str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split("\n")[:2] == ["profile it", "stats"]
    assert "set -e" in path.read_text().splitlines()


# --------------------------------------------------------------------------- operators vs kernels (issue 11)

BN_KERNEL = (
    "void at::native::batch_norm_collect_statistics_channels_last_kernel<at::native::Var, c10::BFloat16, float, 4>"
    "(c10::BFloat16 const*, float*, float*, float volatile*, int*, int, int, float)"
)
ADD_KERNEL = (
    "void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::CUDAFunctor_add"
    "<c10::BFloat16> >(at::TensorIteratorBase&, at::native::CUDAFunctor_add<c10::BFloat16> const&)::"
    "{lambda(int)#1}>(int, at::native::gpu_kernel_impl_nocast<at::native::CUDAFunctor_add<c10::BFloat16> >"
    "(at::TensorIteratorBase&, at::native::CUDAFunctor_add<c10::BFloat16> const&)::{lambda(int)#1})"
)


def test_kernel_names_are_shortened_readably():
    assert ops_tables.short_name(BN_KERNEL) == "batch_norm_collect_statistics_channels_last_kernel"
    assert ops_tables.short_name(ADD_KERNEL) == "elementwise_kernel [CUDAFunctor_add]"
    assert ops_tables.short_name("aten::native_batch_norm") == "aten::native_batch_norm"


def test_op_rows_tell_kernels_from_operators():
    class Ev:
        def __init__(self, key, device_type):
            self.key, self.count, self.device_type = key, 2, device_type
            self.self_cpu_time_total = self.cpu_time_total = 0.0
            self.self_device_time_total = 10.0

    rows = profiler.op_rows(
        [Ev("aten::mul", "DeviceType.CPU"), Ev(ADD_KERNEL, "DeviceType.CUDA"), Ev("forward", "x")]
    )
    assert [(r.name, r.kind) for r in rows] == [("aten::mul", "operator"), (ADD_KERNEL, "kernel")]


def test_each_device_microsecond_is_counted_once_per_table_as_share_of_the_step():
    """The H100 trace at batch 128: native_batch_norm's 5.3 ms/step include its 3.3 ms kernel.
    Side by side they summed past the step; now each table holds one kind."""
    rows = [
        profiler.OpRow("aten::native_batch_norm", 49, 2156, 6543, 5335),
        profiler.OpRow("aten::mul", 67, 1352, 2038, 2426),
        profiler.OpRow(BN_KERNEL, 49, 0, 0, 3299, kind="kernel"),
        profiler.OpRow(ADD_KERNEL, 48, 0, 0, 2066, kind="kernel"),
        profiler.OpRow("cudaLaunchKernel", 1074, 10704, 10704, 0),
    ]
    text = ops_tables.ops_table_markdown(rows, measured_steps=1, device_kind="cuda", step_seconds=0.0295)
    by_op, by_kernel, host = text.split("### ")[1:]
    assert (
        by_op.startswith("Device: GPU time by operator") and "kernel" not in by_op.split("\n", 1)[1].lower()
    )
    assert "batch_norm_collect" not in by_op and "aten::native_batch_norm" not in by_kernel
    assert "| `batch_norm_collect_statistics_channels_last_kernel` | 49.0 | 3.299 | 11.2 |" in by_kernel
    assert "| `aten::native_batch_norm` | 49.0 | 5.335 | 18.1 |" in by_op  # 5.335 of 29.5 ms
    assert "cudaLaunchKernel" in host and "elementwise_kernel" not in host
    assert "of the measured step (29.5 ms)" in text
    doc = ops_tables.ops_json(rows, 1, 0.0295)
    assert [k["name"] for k in doc["kernels"]] == [BN_KERNEL, ADD_KERNEL]  # full names in the JSON
    assert doc["kernels"][1]["short_name"] == "elementwise_kernel [CUDAFunctor_add]"
    assert doc["operators"][0]["device_share_of_step"] == pytest.approx(5.335 / 29.5)


def test_nsys_capture_without_nsys_writes_the_commands_as_a_script(tmp_path, monkeypatch):
    """The library half of `bench trace`'s nsys flow: no nsys on PATH -> the script, one line, no run."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    workload = Workload(model=TINY, device="cpu", image_size=8)
    heard = []
    lines = nsys.nsys_capture(workload, 2, 3, 1, tmp_path, None, on_status=heard.append)
    script = tmp_path / "nsys_profile.sh"
    assert len(lines) == 1 and "nsys not found" in lines[0] and str(script) in lines[0]
    assert heard == []  # nothing ran
    text = script.read_text()
    assert " ".join(nsys.child_argv(workload, 2, 3, 1)[1:]) in text
    assert str(tmp_path / "nsys" / "profile") in text  # the capture goes under out_dir/nsys
    assert not (tmp_path / "nsys" / "profile.nsys-rep").exists()
    assert profiler.default_trace_dir(workload, 2).parts[0] == "bench_traces"
