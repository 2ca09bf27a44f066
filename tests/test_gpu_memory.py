"""Memory truth, autotune policy and sticky CUDA errors on the simulated GPU (``FakeCudaDevice``,
shaped like bench's first H100 run): first-step vs steady peaks, probes without cuDNN autotuning,
``--cudnn-benchmark-limit``, leaks judged from one probe to the next, the allocator capped by
``--memory-limit``, and a sticky error ending a sweep or a search with its finished work kept."""

from __future__ import annotations

import json

import pytest

import bench.hw.device as hw_device
import bench.measure.models
from bench.hw.fake import FakeCudaDevice
from bench.jobs.maxbatch import find_max_batch
from bench.jobs.sweep import run_sweep
from bench.measure.models import ModelSpec
from bench.measure.runner import run_point
from bench.results.codec import load_result, point_from_dict, to_dict
from bench.results.errors import StickyCudaError
from bench.results.schema import ERROR, OK, MeasureSettings, Workload
from tests.fakes import FakeClock, patch_everywhere

MiB = 2**20
GiB = 2**30
SETTINGS = MeasureSettings(
    warmup_steps=3, min_steps=5, max_steps=20, max_time_seconds=2.0, min_time_seconds=0.5, target_rel_ci=0.5
)
WL = Workload(model="gpu_like", device="cuda", image_size=8)


def spec_for(dev: FakeCudaDevice, name: str = "gpu_like") -> ModelSpec:
    return ModelSpec(name=name, source="factory", build=dev.model, input_shape=(3, 8, 8))


@pytest.fixture
def on_fake(monkeypatch):
    """Point the jobs at a simulated GPU: ``on_fake(dev)`` makes ``cuda`` open it and the model
    name "gpu_like" build its network."""

    def use(dev: FakeCudaDevice) -> FakeCudaDevice:
        patch_everywhere(monkeypatch, hw_device, "check_device", lambda spec: None)
        patch_everywhere(monkeypatch, hw_device, "open_device", lambda spec: dev)
        original = bench.measure.models.resolve
        spec = spec_for(dev, f"gpu_like_{id(dev)}")
        patch_everywhere(
            monkeypatch,
            bench.measure.models,
            "resolve",
            lambda name: spec if name == "gpu_like" else original(name),
        )
        return dev

    return use


def reserved(dev: FakeCudaDevice, batch: int, extra: int = 0) -> int:
    return int((dev.cublas_workspace + dev.fixed + dev.per_sample * batch + extra) * (1 + dev.overhead))


# --------------------------------------------------------------------------- peaks (sweep)


def test_sweep_point_keeps_the_first_step_peak_apart_from_the_steady_one():
    """The H100 run: batch 1's first step peaked at 940 MiB (cuDNN's autotune workspace), batch 8
    steady at 524 MiB. A point's device peaks are the steady ones; the first step's are kept apart."""
    clock = FakeClock()
    dev = FakeCudaDevice.h100(clock)
    one = run_point(WL, spec_for(dev), 1, SETTINGS, dev, clock=clock)
    eight = run_point(WL, spec_for(dev), 8, SETTINGS, dev, clock=clock)
    assert one.status == OK and eight.status == OK
    assert one.memory.first_step_peak_reserved_bytes == pytest.approx(940 * MiB, rel=0.01)
    assert one.memory.device_peak_reserved_bytes == reserved(dev, 1)  # steady: no workspace
    assert eight.memory.device_peak_reserved_bytes == pytest.approx(524 * MiB, rel=0.01)
    assert one.memory.device_peak_reserved_bytes < eight.memory.device_peak_reserved_bytes
    back = point_from_dict(to_dict(one))  # the JSON keeps both
    assert back.memory == one.memory
    old = to_dict(one)
    for key in ("first_step_peak_allocated_bytes", "first_step_peak_reserved_bytes"):
        del old["memory"][key]  # a file written before: loads, the fields are None
    assert point_from_dict(old).memory.first_step_peak_reserved_bytes is None


# --------------------------------------------------------------------------- autotune policy


def test_fake_autotunes_only_when_the_flag_is_on_and_once_per_shape():
    clock = FakeClock()
    dev = FakeCudaDevice.h100(clock)
    off = run_point(
        Workload(model="gpu_like", device="cuda", image_size=8, cudnn_benchmark=False),
        spec_for(dev), 16, SETTINGS, dev, clock=clock,
    )  # fmt: skip
    assert off.status == OK and off.timing.first_step_seconds < 1 and not dev.tuned
    on = run_point(WL, spec_for(dev), 16, SETTINGS, dev, clock=clock)
    assert on.timing.first_step_seconds == pytest.approx(25.0 + 0.045 + 16 * 0.0002)
    again = run_point(WL, spec_for(dev), 16, SETTINGS, dev, clock=clock)
    assert again.timing.first_step_seconds < 1 and dev.tuned == {16}  # cached per shape


def test_cudnn_benchmark_limit_shortens_the_first_step():
    clock = FakeClock()
    dev = FakeCudaDevice.h100(clock, autotune_algorithms=20)
    limited = Workload(model="gpu_like", device="cuda", image_size=8, cudnn_benchmark_limit=2)
    p = run_point(limited, spec_for(dev), 32, SETTINGS, dev, clock=clock)
    assert p.timing.first_step_seconds == pytest.approx(25.0 * 2 / 10 + 0.045 + 32 * 0.0002)
    every = Workload(model="gpu_like", device="cuda", image_size=8, cudnn_benchmark_limit=0)  # 0: all
    p = run_point(every, spec_for(dev), 64, SETTINGS, dev, clock=clock)
    assert p.timing.first_step_seconds == pytest.approx(25.0 * 20 / 10 + 0.045 + 64 * 0.0002)
    import torch

    assert torch.backends.cudnn.benchmark_limit == 10  # restored after the point


def test_sweep_table_shows_the_first_step_per_point(tmp_path, on_fake):
    from rich.console import Console

    from bench.present.display import sweep_table
    from bench.results.units import fmt_seconds

    dev = on_fake(FakeCudaDevice.h100(FakeClock()))
    result = run_sweep(WL, [8, 16], SETTINGS, out_path=tmp_path / "r.json", annotate_steps=False)
    firsts = [p.timing.first_step_seconds for p in result.points]
    assert all(f is not None for f in firsts) and dev.tuned == {8, 16}
    console = Console(width=250, record=True)
    console.print(sweep_table(result))
    text = console.export_text()
    assert "1st step" in text and all(fmt_seconds(f) in text for f in firsts)


def test_max_batch_probes_do_not_autotune_and_the_soak_does(on_fake):
    """Probes build without cuDNN autotuning (the H100 search paid 23-32 s a probe for it); the soak
    runs the chosen max with it, as training will. Here the autotuned algorithms hold 1 GiB more:
    the max without autotuning fails the soak, the search steps down to a size that holds with it,
    and the safe batch leaves that workspace's share of the budget free."""
    dev = on_fake(FakeCudaDevice(FakeClock(), total_bytes=22 * GiB, benchmark_workspace_bytes=GiB))
    res = find_max_batch(WL, soak_steps=5)
    plain = max(b for b in range(1, 2000) if reserved(dev, b) <= dev.total)
    tuned = max(b for b in range(1, 2000) if reserved(dev, b, GiB) <= dev.total)
    assert res.probes[-1].batch_size in (plain, plain + 1) and res.exact
    assert all(p.first_step_peak_bytes == p.steady_peak_bytes for p in res.probes if p.fits)  # no workspace
    assert not res.soak.probes[0].fits  # the plain max with autotuning: out of memory
    assert res.max_batch_size == res.soak.batch_size == tuned
    assert dev.tuned == {p.batch_size for p in res.soak.probes}  # only the soak autotuned
    assert dev.autotune_seconds_spent == pytest.approx(20.0 * len(dev.tuned))
    assert "cuDNN autotuning's workspace" in res.headroom_reason
    assert res.headroom_fraction >= 0.05 + GiB / res.budget_bytes - 0.01
    assert res.safe_batch_size < tuned
    assert any("probes ran without cuDNN autotuning" in n for n in res.notices)


# --------------------------------------------------------------------------- leaks


def test_cublas_workspace_is_not_a_leak_but_growth_between_probes_is(on_fake):
    """cuBLAS keeps its workspace in the caching allocator (32 MiB here, as on Hopper): measured
    against the bytes before the search every probe "leaked" it. Judged from one probe to the next,
    nothing leaks; a factory that keeps what it builds is still reported."""
    dev = on_fake(FakeCudaDevice.h100(FakeClock(), total_bytes=8 * GiB))
    res = find_max_batch(WL, soak_steps=0)
    assert dev.allocated == 32 * MiB and res.leaks == ()

    leaky = FakeCudaDevice.h100(FakeClock(), total_bytes=8 * GiB)
    kept = []

    def hoarding_factory():  # a bug in the user's factory: every model it builds stays alive
        model = FakeCudaDevice.model(leaky)
        kept.append(model)
        leaky.allocated += MiB
        return model

    leaky.model = hoarding_factory
    on_fake(leaky)
    res = find_max_batch(WL, soak_steps=0)
    assert res.leaks and all(f"{MiB} bytes more allocated" in line for line in res.leaks)
    assert len(res.leaks) == len(res.probes) - 1  # the first probe has none before it to compare


# --------------------------------------------------------------------------- --memory-limit


def test_memory_limit_caps_the_allocator_and_steady_peaks_decide(on_fake):
    """On a GPU the limit caps the caching allocator (set_per_process_memory_fraction, restored
    after), and the steady peaks are compared with it: batch 32's first step with autotuning
    (a 900 MiB workspace) would pass 2 GiB, its steady steps do not."""
    dev = on_fake(FakeCudaDevice(FakeClock(), total_bytes=22 * GiB))
    res = find_max_batch(WL, memory_limit="2GiB", autotune_probes=True, soak_steps=0)
    truth = max(b for b in range(1, 2000) if reserved(dev, b) <= 2 * GiB)
    assert res.budget_bytes == 2 * GiB and res.exact
    assert res.max_batch_size == truth and res.failed_batch_size == truth + 1
    assert dev.fractions_set == [pytest.approx(2 / 22), 1.0]  # capped for the search, then restored
    assert dev.fraction == 1.0
    assert any("capped" in n for n in res.notices)


# --------------------------------------------------------------------------- sticky CUDA errors


def test_sticky_error_ends_the_sweep_at_once_keeping_finished_points(tmp_path, on_fake):
    dev = on_fake(FakeCudaDevice.h100(FakeClock(), sticky_at=16))
    out, db = tmp_path / "r.json", tmp_path / "h.db"
    with pytest.raises(StickyCudaError) as caught:
        run_sweep(WL, [4, 8, 16, 32], SETTINGS, out_path=out, store=db, annotate_steps=False)
    line = str(caught.value)
    assert (
        line.startswith("batch 16: AcceleratorError: CUDA error: an illegal memory access")
        and "--isolate" in line
    )
    assert "\n" not in line and dev.dead  # one line; the context stayed dead (empty_cache raised inside)
    kept = load_result(str(out))
    assert kept.status == "failed" and [(p.batch_size, p.status) for p in kept.points] == [(4, OK), (8, OK)]
    from bench.results.store import list_runs

    assert len(list_runs(db, kind="sweep")) == 1  # stored with its finished points


def test_sticky_error_in_the_cli_is_one_error_line(tmp_path, on_fake, capsys):
    from bench.cli import main

    on_fake(FakeCudaDevice.h100(FakeClock(), sticky_at=8))
    code = main(
        ["sweep", "gpu_like", "--device", "cuda", "-b", "4,8,16", "--image-size", "8", "--warmup", "2",
         "--min-steps", "5", "--max-time", "1", "--no-nvtx", "-o", str(tmp_path / "r.json"), "--db", str(tmp_path / "h.db")]
    )  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert "batch 8" in errors[0] and "--isolate" in errors[0] and "Traceback" not in err
    assert [p["batch_size"] for p in json.loads((tmp_path / "r.json").read_text())["points"]] == [4]


def test_sticky_error_ends_the_search_and_keeps_the_probes(tmp_path, on_fake):
    """Batch 16 (the search's second probe) hits an illegal memory access: the search stops there,
    the probe is an error (never "does not fit": no failed size is claimed), batch 1 is kept as
    proven, and the file and the history have them."""
    dev = on_fake(FakeCudaDevice.h100(FakeClock(), sticky_at=16))
    out, db = tmp_path / "max.json", tmp_path / "h.db"
    with pytest.raises(StickyCudaError) as caught:
        find_max_batch(WL, out_path=out, store=db)
    assert str(caught.value).startswith("batch 16: AcceleratorError") and "--isolate" in str(caught.value)
    d = json.loads(out.read_text())
    assert [(p["batch_size"], p["outcome"]) for p in d["probes"]] == [(1, "fit"), (16, ERROR)]
    assert d["max_batch_size"] == 1 and d["failed_batch_size"] is None and not d["exact"]
    assert d["stopped"] == "sticky CUDA error" and d["safe_batch_size"] is None
    assert caught.value.partial_result.probe_count == 2 and dev.dead
    from bench.results.store import list_runs

    assert len(list_runs(db, kind="max_batch")) == 1


def test_after_a_sticky_error_the_cleanup_does_not_raise():
    """The attempt's clean-up (gc, empty_cache) after a sticky error: empty_cache raises on the dead
    context; that is recorded, never raised, and the point is an error, not an OOM."""
    clock = FakeClock()
    dev = FakeCudaDevice.h100(clock, sticky_at=4)
    p = run_point(WL, spec_for(dev), 4, SETTINGS, dev, clock=clock)
    assert p.status == ERROR and "illegal memory access" in p.error and dev.dead


def test_max_batch_cli_sticky_error_is_one_line_and_the_probes_are_written(tmp_path, on_fake, capsys):
    from bench.cli import main

    on_fake(FakeCudaDevice.h100(FakeClock(), sticky_at=16))
    out = tmp_path / "max.json"
    code = main(
        ["max-batch", "gpu_like", "--device", "cuda", "--image-size", "8", "-o", str(out),
         "--db", str(tmp_path / "h.db")]
    )  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "batch 16" in errors[0] and "--isolate" in errors[0]
    assert [p["batch_size"] for p in json.loads(out.read_text())["probes"]] == [1, 16]


def test_cudnn_benchmark_limit_option(tmp_path, on_fake, capsys):
    from bench.cli import main

    on_fake(FakeCudaDevice.h100(FakeClock()))
    out = tmp_path / "r.json"
    args = ["sweep", "gpu_like", "--device", "cuda", "-b", "4", "--image-size", "8", "--warmup", "2",
            "--min-steps", "5", "--max-time", "0.5", "--no-nvtx", "-o", str(out), "--no-history"]  # fmt: skip
    assert main([*args, "--cudnn-benchmark-limit", "2"]) == 0
    assert json.loads(out.read_text())["workload"]["cudnn_benchmark_limit"] == 2
    capsys.readouterr()
    assert main([*args, "--cudnn-benchmark-limit", "-1"]) == 2
    err = capsys.readouterr().err
    assert (
        len([line for line in err.splitlines() if line.startswith("error:")]) == 1 and "Traceback" not in err
    )
