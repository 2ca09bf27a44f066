import gc
import json

from bench.jobs.sweep import run_sweep
from bench.results.codec import load_result
from bench.results.schema import ERROR, OK, OOM, MeasureSettings, Workload
from tests import tiny_models

FAST = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0.0, isolate=False)


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
