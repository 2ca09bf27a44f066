"""`--repeat N` through a real (tiny, in-process) sweep: interleaved rounds, every repeat kept, a
fresh model per round, the headline the median repeat, the time of every repeat accounted."""

from __future__ import annotations

import json
import statistics

from bench.cli import main
from bench.jobs.sweep import run_sweep
from bench.results.codec import load_result
from bench.results.schema import MeasureSettings, Workload
from tests.tiny_models import tiny_cnn

BUILDS: list[str] = []


def counted():
    """tiny_cnn, noting the device of every build (the class count and FLOPs build on "meta")."""
    import torch

    BUILDS.append(torch.empty(0).device.type)
    return tiny_cnn()


FAST = MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0.0, isolate=False)


def test_repeat_rounds_are_interleaved_fresh_and_all_kept(tmp_path):
    from dataclasses import replace

    BUILDS.clear()
    events = []
    res = run_sweep(
        Workload(model="tests.test_repeat:counted", image_size=8, device="cpu"), [2, 4],
        replace(FAST, repeat=3), out_path=tmp_path / "r.json", on_event=events.append,
    )  # fmt: skip
    order = [e.batch_size for e in events if e.kind == "point_start"]
    assert order == [2, 4, 2, 4, 2, 4]  # b1, b2, b1, b2, ...: drift hits every size alike
    assert BUILDS.count("cpu") == 3  # one real model per round, reused across the sizes of a round
    for p in res.points:
        assert len(p.repeats) == 3 and all(r.status == "ok" and r.samples_per_sec for r in p.repeats)
        assert p.samples_per_sec == statistics.median(r.samples_per_sec for r in p.repeats)
        assert p.timing.measure_seconds >= sum(r.window_seconds for r in p.repeats) * 0.999
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [len(p["repeats"]) for p in saved["points"]] == [3, 3] and saved["settings"]["repeat"] == 3
    assert load_result(str(tmp_path / "r.json")).points[0].repeat_samples_per_sec() == tuple(
        r.samples_per_sec for r in res.points[0].repeats
    )


def test_repeat_option_on_the_command(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["sweep", "tests.tiny_models:tiny_cnn", "-b", "2", "--image-size", "8", "--device", "cpu",
                 "--repeat", "2", "--no-isolate", "--warmup", "1", "--min-steps", "3", "--max-time", "0.2",
                 "--min-time", "0", "-o", str(out), "--db", str(tmp_path / "h.db")])  # fmt: skip
    assert code == 0
    point = json.loads(out.read_text())["points"][0]
    assert len(point["repeats"]) == 2
    assert "repeat 2 of 2: batch 2" in capsys.readouterr().err
    assert main(["sweep", "tests.tiny_models:tiny_cnn", "-b", "2", "--repeat", "0"]) == 2


def test_ctrl_c_in_round_four_keeps_rounds_one_to_three_in_the_file_and_the_history(
    tmp_path, monkeypatch, capsys
):
    """A repeat is a finished measurement: Ctrl-C during round 4 keeps rounds 1-3 of every size."""
    from bench.measure import runner

    real = runner.run_point
    calls = {"n": 0}

    def interrupted_in_round_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # sizes 2 and 4: round 4 starts with the 7th measurement
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(
        "bench.jobs.sweep_loop.run_point", interrupted_in_round_four
    )  # where the sweep calls it
    out, db = tmp_path / "r.json", tmp_path / "h.db"
    code = main(["sweep", "tests.tiny_models:tiny_cnn", "-b", "2,4", "--image-size", "8", "--device", "cpu",
                 "--repeat", "5", "--no-isolate", "--warmup", "1", "--min-steps", "3", "--max-time", "0.2",
                 "--min-time", "0", "-o", str(out), "--db", str(db)])  # fmt: skip
    assert code == 130, capsys.readouterr().err
    saved = json.loads(out.read_text())
    assert saved["status"] == "interrupted"
    assert [len(p["repeats"]) for p in saved["points"]] == [3, 3]
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        (stored,) = [json.loads(text) for (text,) in conn.execute("SELECT json FROM runs")]
    finally:
        conn.close()
    assert stored["status"] == "interrupted" and [len(p["repeats"]) for p in stored["points"]] == [3, 3]
