"""Real max-batch probes on CPU (child processes under an RSS budget), OOM cleanup, headroom."""

import gc
import json

import pytest
import torch

from bench.analysis.maxbatch_search import ProbeResult, search_max_batch
from bench.cli import main
from bench.hw.device import CpuDevice
from bench.jobs.maxbatch import (
    MemoryModelInfo,
    ProbeRecord,
    find_max_batch,
    headroom,
    parse_bytes,
    probe_in_process,
    probe_isolated,
    safe_batch,
)
from bench.results.errors import BenchError
from bench.results.schema import Workload
from tests import helpers_maxbatch, tiny_models
from tests.tiny_models import TinyCNN

MiB = 2**20
GiB = 2**30


def test_parse_bytes():
    assert parse_bytes("4GiB") == 4 * GiB
    assert parse_bytes("3000MB") == 3_000_000_000
    assert parse_bytes("1.5g") == int(1.5 * GiB)
    assert parse_bytes(" 512 MiB ") == 512 * MiB
    assert parse_bytes(12345) == 12345
    for bad in ("lots", "4XB", "-1GiB", "0", "", 0):
        with pytest.raises(BenchError):
            parse_bytes(bad)


@pytest.mark.slow
def test_oom_cleanup_in_process_nothing_leaks():
    """A model that raises CUDA OOM above batch 4: the search finds exactly 4, and every model built
    for a probe (including those that raised, whose tracebacks held tensors) is freed."""
    tiny_models.LIVE_MODELS.clear()
    wl = Workload(model="tests.tiny_models:oom_above_4", image_size=8)
    device = CpuDevice()
    outcomes = []

    def try_batch(b):
        rec = probe_in_process(wl, b, device)
        outcomes.append((b, rec.outcome))
        gc.collect()
        assert all(ref() is None for ref in tiny_models.LIVE_MODELS), f"leak after batch {b}"
        return ProbeResult(b, rec.fits, None, rec.seconds, rec.outcome)

    res = search_max_batch(try_batch, budget_bytes=None)
    assert res.max_batch_size == 4 and res.failed_batch_size == 5
    assert (5, "oom") in outcomes and (4, "fit") in outcomes
    assert all(outcome == ("fit" if b <= 4 else "oom") for b, outcome in outcomes)
    # one model per probe, plus one meta-device copy that counted the classes once; all dead
    assert len(tiny_models.LIVE_MODELS) == len(outcomes) + 1


def test_leak_check_reports_what_is_left_allocated():
    """The allocated-bytes baseline check: a clean factory leaves nothing, a leaky one is reported."""
    device = helpers_maxbatch.CountingDevice()
    helpers_maxbatch.LIVE.clear()
    helpers_maxbatch.KEPT.clear()
    clean = probe_in_process(
        Workload(model="tests.helpers_maxbatch:tracked", image_size=8), 2, device, previous_allocated_bytes=0
    )
    assert clean.fits and clean.leaked_bytes == 0
    leaky = probe_in_process(
        Workload(model="tests.helpers_maxbatch:leaky", image_size=8), 2, device, previous_allocated_bytes=0
    )
    assert leaky.fits and leaky.leaked_bytes == 1000  # one model kept alive by the factory
    helpers_maxbatch.KEPT.clear()


@pytest.mark.slow
def test_real_cpu_search_matches_brute_force(tmp_path):
    """Real child-process probes under an RSS budget, against brute force over the same probe, via
    the CLI (live lines, summary, JSON). ~25-30 MiB of RSS per 256x256 sample keeps the
    boundary well above RSS noise."""
    wl = Workload(model="tests.tiny_models:fat", image_size=256, device="cpu")
    two = probe_isolated(wl, 2, None)
    three = probe_isolated(wl, 3, None)
    assert two.fits and three.fits and three.peak_bytes > two.peak_bytes
    # Put the budget half a sample between batch 3 and 4. Batch 1's RSS varies by tens of MiB
    # between runs (allocator warm-up) while 2 and up are steady (~25-30 MiB a sample measured by
    # RSS, ~1 MiB noise), so the step is taken from 2 -> 3 and the boundary sits far from any noise.
    limit = three.peak_bytes + (three.peak_bytes - two.peak_bytes) // 2
    out = tmp_path / "max.json"
    code = main(
        ["max-batch", "tests.tiny_models:fat", "--image-size", "256", "--device", "cpu",
         "--memory-limit", str(limit), "--soak-steps", "3", "--out", str(out), "--db", str(tmp_path / "h.db"),
         "--granularity", "1"]
    )  # fmt: skip
    assert code == 0
    d = json.loads(out.read_text())
    assert list(d)[:13] == [
        "schema_version", "kind", "workload", "environment", "max_batch_size", "safe_batch_size",
        "granularity", "budget_bytes", "memory_model", "probes", "probe_count", "seconds", "soak",
    ]  # fmt: skip
    assert d["kind"] == "max_batch" and d["budget_bytes"] == limit
    mx = d["max_batch_size"]
    assert d["probe_count"] == len(d["probes"]) <= 8  # the search's, and max, max + 1 once more
    again = [p for p in d["probes"] if p["repeat"]]
    # The truth, independently of the search: memory grows with the batch (3 -> 6: ~100 MiB a sample
    # here), so the max is the size that fits while the next does not -- probed afresh, same probe, same
    # budget (a brute force from 2 upwards ended on the same two probes, eight probes later).
    if d["repeats"]:  # the usual case: the boundary sits half a sample from both sides
        by_size = {p["batch_size"]: p for p in d["probes"] + d["soak"]["probes"]}
        assert d["exact"] and by_size[mx]["outcome"] == "fit" and by_size[mx]["peak_bytes"] <= limit
        assert by_size[mx + 1]["outcome"] == "over_budget"
        assert [p["batch_size"] for p in again] == [mx, mx + 1]
        assert probe_isolated(wl, mx, limit).fits and not probe_isolated(wl, mx + 1, limit).fits
    else:  # RSS moved more than that between runs (a loaded machine): then a band, never "exact"
        assert not d["exact"] and d["band_low"] == mx <= d["band_high"]
        assert any("did not repeat" in n for n in d["notices"])
        assert probe_isolated(wl, max(1, d["band_low"] - 1), limit).fits
        assert not probe_isolated(wl, d["band_high"] + 2, limit).fits
    assert d["soak"]["ok"] and d["soak"]["steps"] == 3
    assert 1 <= d["safe_batch_size"] < mx or d["safe_batch_size"] is None
    # The fitted slope agrees with the step measured directly at the top of this test (RSS noise
    # moves both by a few MiB a sample; a fit thrown off by batch 1 or by failed probes would not).
    step = (three.steady_peak_bytes or three.peak_bytes) - (two.steady_peak_bytes or two.peak_bytes)
    assert 0.5 * step < d["memory_model"]["per_sample_bytes"] < 2 * step


@pytest.mark.slow
def test_your_model_and_optimizer_are_left_untouched():
    """find_max_batch(model) copies the module: weights, grads, mode and the caller's optimizer
    state are as they were, and the search's probes ran on its own copies."""
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    ptrs = [p.data_ptr() for p in model.parameters()]
    opt_state = {k: v["momentum_buffer"].clone() for k, v in opt.state.items()}

    res = find_max_batch(
        model, device="cpu", image_size=16, cap=2, soak_steps=2, memory_limit="3GiB", granularity=1
    )
    assert res.max_batch_size == 2 and res.cap_reached and res.soak.ok
    assert [p.batch_size for p in res.probes] == [1, 2]
    assert res.workload.model == "tests.tiny_models.TinyCNN" and res.workload.mode == "train"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    assert [p.data_ptr() for p in model.parameters()] == ptrs and not model.training
    assert all(torch.equal(opt_state[k], v["momentum_buffer"]) for k, v in opt.state.items())


def test_a_model_that_cannot_be_copied_is_one_line():
    class Local(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(BenchError, match="define its class at module level"):
        find_max_batch(Local(), device="cpu")


def test_bad_arguments():
    wl = Workload(model="resnet18", image_size=8, device="cpu")
    with pytest.raises(BenchError, match="granularity"):
        find_max_batch(wl, granularity=0)
    with pytest.raises(BenchError, match="below the granularity"):
        find_max_batch(wl, granularity=8, cap=4)
    with pytest.raises(BenchError, match="unknown model"):
        find_max_batch(Workload(model="resnet_nope", image_size=8, device="cpu"))
    with pytest.raises(BenchError, match="training"):
        find_max_batch(wl, mode="infer")
    with pytest.raises(BenchError, match="OOM killer"):
        find_max_batch(wl, memory_limit="900TiB")
    with pytest.raises(BenchError, match="not understood"):
        find_max_batch(wl, memory_limit="lots")
    with pytest.raises(BenchError, match="nn.Module"):
        find_max_batch(42)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "infer"], "training only"),
        (["--memory-limit", "lots"], "not understood"),
        (["--granularity", "0"], "granularity"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_cli_bad_input_one_line_exit_2(args, message, capsys, tmp_path):
    code = main(["max-batch", "tests.tiny_models:tiny_cnn", *args, "--db", str(tmp_path / "h.db")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_cli_recommend_needs_both_lr_flags(capsys):
    code = main(["recommend", "tests.tiny_models:tiny_cnn", "--device", "cpu", "--base-batch", "256"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--base-lr" in err and len(err.splitlines()) == 1


def rec(b, outcome, peak=None, allocated=None, reserved=None, retries=0):
    return ProbeRecord(b, outcome, peak, 1.0, peak_allocated_bytes=allocated, peak_reserved_bytes=reserved,
                       alloc_retries=retries)  # fmt: skip


def test_headroom_from_allocator_overhead_retries_and_model_error():
    exact = MemoryModelInfo(GiB, 100 * MiB, 0.0)
    probes = [rec(8, "fit", allocated=10 * GiB, reserved=11 * GiB), rec(100, "oom")]
    assert headroom("cuda", exact, probes)[0] == pytest.approx(0.10)  # reserved 10% over allocated
    probes.append(rec(4, "fit", allocated=GiB, reserved=GiB, retries=3))
    margin, why = headroom("cuda", exact, probes)
    assert margin == pytest.approx(0.15) and "3 allocator retries" in why
    assert headroom("cpu", MemoryModelInfo(GiB, 100 * MiB, 0.04), [rec(8, "fit", 2 * GiB)])[
        0
    ] == pytest.approx(0.08)
    assert headroom("cpu", exact, [rec(8, "fit", 2 * GiB)])[0] == pytest.approx(0.02)  # the floor
    assert headroom("cpu", MemoryModelInfo(GiB, MiB, 0.5), [])[0] == 0.25  # the ceiling


def test_safe_batch_arithmetic():
    model = MemoryModelInfo(fixed_bytes=GiB, per_sample_bytes=100 * MiB, max_relative_error=0.0)
    budget = 11 * GiB  # max by the model: 102
    # 10% headroom: (0.9 * 11 GiB - 1 GiB) / 100 MiB = 91.1 -> 91; granularity 8 -> 88
    assert safe_batch(102, 1, budget, model, 0.10) == 91
    assert safe_batch(96, 8, budget, model, 0.10) == 88
    assert safe_batch(102, 1, budget, model, 0.0) == 101  # at least one granule below the max
    assert safe_batch(1, 1, int(GiB + 100 * MiB), model, 0.10) is None  # batch 1 leaves no headroom
    assert safe_batch(100, 1, budget, None, 0.10) == 90  # no model: a share of the max


def test_memory_model_is_not_set_by_a_noisy_batch_one():
    """CPU RSS at batch 1 varies by tens of MiB (more on a busy machine): the reported model, fitted
    with weights on the larger batches, keeps the slope of the steps near the edge (~100 MiB/sample
    here) although batch 1 read 107 MiB high."""
    from bench.jobs.maxbatch import FIT, ProbeRecord, fit_memory_model

    peaks = {1: 950, 2: 909, 3: 1006}
    probes = [ProbeRecord(b, FIT, peaks[b] * MiB, 1.0) for b in (1, 2, 3)]
    probes.append(ProbeRecord(3, FIT, 1006 * MiB, 1.0, repeat=True))
    model = fit_memory_model(probes)
    assert 50 * MiB < model.per_sample_bytes < 110 * MiB


def test_a_probe_child_reports_its_own_peak_not_its_parents(tmp_path):
    """ru_maxrss survives exec: a child forked from a large process would report the parent's RSS as
    its own peak, and every small probe would look the same size (CI: 1.40 GB at batch 2 and at 3)."""
    import subprocess
    import sys

    ballast = bytearray(400 * 2**20)  # this process: 400 MiB more, touched
    ballast[::4096] = b"x" * len(ballast[::4096])
    code = "from bench.hw.host import own_peak_rss_bytes as f; print(f())"
    mine = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
    child = int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert child < mine - 300 * 2**20
    del ballast
