"""Goodput: batch sizes ranked by time to the same loss, on hand-made sweeps with known answers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from rich.console import Console

from bench.analysis.goodput import goodput_best, goodput_rows
from bench.analysis.recommend import recommend
from bench.present.tables import recommendation_table as render
from bench.results.codec import load_result, result_from_dict, to_dict
from bench.results.schema import Point

DATA = Path(__file__).parent / "data"


def pt(b, sps, status="ok"):
    return Point(batch_size=b, status=status, samples_per_sec=sps if status == "ok" else None)


# samples/s keeps rising with the batch, ever more slowly
SWEEP = [
    pt(8, 400.0),
    pt(16, 700.0),
    pt(32, 1000.0),
    pt(64, 1200.0),
    pt(128, 1300.0),
    pt(256, 1350.0),
    pt(512, None, "oom"),
]


def sweep_of(points):
    return dataclasses.replace(load_result(str(DATA / "cpu_resnet18.json")), points=tuple(points))


def test_relative_time_by_hand():
    """B_noise 64: time ∝ (B + 64)/sps: 8→0.180, 16→0.1143, 32→0.096, 64→0.1067, 128→0.1477, 256→0.237."""
    rows = goodput_rows(SWEEP, 64.0)
    assert [r.batch_size for r in rows] == [8, 16, 32, 64, 128, 256]  # the OOM point is left out
    best = goodput_best(rows)
    assert best.batch_size == 32 and best.relative_time == 1.0
    by = {r.batch_size: r for r in rows}
    assert by[64].relative_time == pytest.approx((128 / 1200) / (96 / 1000))
    assert by[8].relative_time == pytest.approx((72 / 400) / (96 / 1000))
    assert by[256].samples_factor == pytest.approx(1 + 256 / 64)


@pytest.mark.parametrize("noise, best", [(1.0, 8), (16.0, 16), (64.0, 32), (1000.0, 128), (1e6, 256)])
def test_a_bigger_noise_scale_favours_bigger_batches(noise, best):
    """B_noise → 0: every example counts once, so samples/B wins... the smallest batch;
    B_noise → ∞: time ∝ 1/sps, the throughput-optimal batch."""
    assert goodput_best(goodput_rows(SWEEP, noise)).batch_size == best


def test_recommendation_gains_the_goodput_pick_with_lr_and_the_lost_speed():
    rec = recommend(sweep_of(SWEEP), base_batch=32, base_lr=0.1, noise_scale=64.0, noise_source="given")
    assert rec.best.batch_size == 256 and rec.goodput.batch_size == 32
    assert rec.goodput.lr_linear == pytest.approx(0.1)  # the reference batch: its own LR
    assert len(rec.goodput_rows) == 6 and rec.noise_scale == 64.0
    lost = next(n for n in rec.notes if "statistical efficiency" in n)
    # 256 vs 32: 1.35× the samples/s, (1 + 4)/(1 + 0.5) = 3.33× the examples: 0.405× as fast
    assert "batch 256 runs 1.35× the samples/s of batch 32" in lost and "3.33× the examples" in lost
    assert "takes 2.47× as long" in lost and "100% of its extra speed" in lost
    assert any("grows as the loss falls" in n for n in rec.notes)
    console = Console(width=250, record=True)
    console.print(render(rec))
    text = console.export_text()
    assert "goodput-optimal" in text and "throughput-optimal" in text


def test_partly_lost_speed_is_said_as_a_share():
    rec = recommend(sweep_of(SWEEP), noise_scale=1000.0)
    assert rec.goodput.batch_size == 128 and rec.best.batch_size == 256
    lost = next(n for n in rec.notes if "statistical efficiency" in n)
    # 256 vs 128: 1.0385× the samples/s, 1.256/1.128 = 1.1135× the examples
    assert "1.04× the samples/s of batch 128" in lost and "1.11× the examples" in lost


def test_goodput_survives_the_result_file():
    result = dataclasses.replace(sweep_of(SWEEP), recommendation=recommend(sweep_of(SWEEP), noise_scale=64.0))
    back = result_from_dict(json.loads(json.dumps(to_dict(result))))
    assert back.recommendation == result.recommendation


def test_no_noise_scale_no_goodput():
    rec = recommend(sweep_of(SWEEP))
    assert rec.goodput is None and rec.goodput_rows == () and rec.noise_scale is None


def test_report_plots_goodput_for_a_run_with_a_noise_scale(tmp_path):
    from bench.jobs.report import write_report
    from bench.present.report import load_runs
    from bench.results.codec import dumps

    run = load_result(str(DATA / "cpu_resnet18.json"))
    run = dataclasses.replace(run, recommendation=recommend(run, noise_scale=50.0))
    path = tmp_path / "run.json"
    path.write_text(dumps(run))
    files = write_report(load_runs([str(path)], tmp_path / "none.db"), tmp_path / "rep")
    assert "goodput" in files.plots
    for text in (files.html.read_text(), files.markdown.read_text()):
        assert "goodput-optimal batch" in text and "B_noise 50" in text


def test_sweep_command_takes_a_noise_scale_number_or_file(tmp_path, capsys):
    from bench.cli import main

    assert main(["sweep", "tests.tiny_models:tiny_cnn", "-b", "2,4", "--image-size", "8", "--max-time", "0.3",
                 "--min-time", "0.1", "--warmup", "1", "--device", "cpu", "--no-isolate", "--noise-scale", "-1"]) == 2  # fmt: skip
    assert "--noise-scale must be a positive" in capsys.readouterr().err
    out = tmp_path / "s.json"
    code = main(["sweep", "tests.tiny_models:tiny_cnn", "-b", "2,4", "--image-size", "8", "--max-time", "0.3",
                 "--min-time", "0.1", "--warmup", "1", "--device", "cpu", "--no-isolate", "--noise-scale", "3",
                 "-o", str(out)])  # fmt: skip
    assert code == 0
    rec = load_result(str(out)).recommendation
    assert rec.noise_scale == 3.0
    if not rec.not_ranked:  # tiny points on a busy machine can be too noisy to rank (issue 23)
        assert rec.goodput is not None and len(rec.goodput_rows) == 2
        assert "goodput at B_noise 3" in capsys.readouterr().out


def test_a_profile_takes_a_noise_scale_number_or_result_file(tmp_path):
    from bench.jobs.profiles import load_profile
    from bench.results.errors import BenchError

    path = tmp_path / "p.toml"
    path.write_text("models = ['resnet18']\nnoise_scale = 120\n")
    (entry,) = load_profile(str(path)).entries
    assert entry.noise_scale == 120.0 and entry.noise_source == "given"
    noise = json.loads((DATA / "noise_tiny.json").read_text())
    (tmp_path / "noise.json").write_text(json.dumps(noise))
    path.write_text("models = ['resnet18']\nnoise_scale = 'noise.json'\n")  # beside the profile
    (entry,) = load_profile(str(path)).entries
    assert (
        entry.noise_scale == pytest.approx(noise["estimate"]["noise_scale"])
        and "noise.json" in entry.noise_source
    )
    path.write_text("models = ['resnet18']\nnoise_scale = 0\n")
    with pytest.raises(BenchError, match="noise_scale"):
        load_profile(str(path))
