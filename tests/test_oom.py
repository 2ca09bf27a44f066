import gc
import json

import pytest
import torch

from bench.jobs.sweep import run_sweep
from bench.results.codec import load_result
from bench.results.errors import is_oom
from bench.results.schema import ERROR, OK, OOM, MeasureSettings, Workload
from tests import tiny_models

FAST = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0.0, isolate=False)


@pytest.mark.parametrize(
    "exc, expected",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), True),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes."
            ),
            True,
        ),
        (MemoryError(), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"), False),
        (ValueError("out of memory"), False),  # only RuntimeErrors carry library OOMs
    ],
)
def test_is_oom_classification(exc, expected):
    assert is_oom(exc) is expected


def test_sweep_records_oom_and_stops_growing(tmp_path):
    tiny_models.LIVE_MODELS.clear()
    out = tmp_path / "r.json"
    wl = Workload(model="tests.tiny_models:oom_above_4", image_size=8)
    result = run_sweep(wl, [2, 4, 8, 16], FAST, out_path=out)
    statuses = [(p.batch_size, p.status) for p in result.points]
    assert statuses == [(2, OK), (4, OK), (8, OOM)]  # 16 never attempted
    oom = result.points[-1]
    assert "OutOfMemoryError" in oom.error and "CUDA out of memory" in oom.error
    assert any("out of memory at batch 8" in n for n in result.notices)
    assert result.status == "complete"
    # the file on disk has the same points
    on_disk = load_result(str(out))
    assert [p.status for p in on_disk.points] == ["ok", "ok", "oom"]
    # every model built for the sweep, including the one that raised, has been freed
    gc.collect()
    assert tiny_models.LIVE_MODELS and all(ref() is None for ref in tiny_models.LIVE_MODELS)


def test_keep_going_after_oom(tmp_path):
    wl = Workload(model="tests.tiny_models:oom_above_4", image_size=8)
    settings = MeasureSettings(**{**FAST.__dict__, "stop_on_oom": False})
    result = run_sweep(wl, [4, 8, 16], settings, out_path=tmp_path / "r.json")
    assert [p.status for p in result.points] == [OK, OOM, OOM]


def test_non_oom_errors_stop_sweep_and_keep_finished_points(tmp_path):
    """A model that works at 2 and 4 and raises a plain RuntimeError above: two failures in a row
    stop the sweep (32 is never tried), recorded as errors, not OOMs, beside the points that ran."""
    wl = Workload(model="tests.tiny_models:fails_above_4", image_size=8)
    out = tmp_path / "r.json"
    seen = []  # the file as it stood after each point

    def on_event(e):
        if e.kind == "point_done":
            seen.append([p["batch_size"] for p in json.loads(out.read_text())["points"]])

    result = run_sweep(wl, [2, 4, 8, 16, 32], FAST, out_path=out, on_event=on_event)
    assert [(p.batch_size, p.status) for p in result.points] == [(2, OK), (4, OK), (8, ERROR), (16, ERROR)]
    assert "is invalid for input of size" in result.points[2].error
    assert any("2 sizes in a row failed: stopped" in n for n in result.notices)
    assert seen == [[2], [2, 4], [2, 4, 8], [2, 4, 8, 16]]  # each point on disk as soon as it finished
    assert [p.status for p in load_result(str(out)).points] == [OK, OK, ERROR, ERROR]
