"""Recommendations from a sweep (and a max-batch result) with known answers."""

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from bench.analysis.recommend import check_lr_reference, knee_point, recommend, scaled_lr
from bench.present.tables import recommendation_table as render
from bench.results.codec import load_result
from bench.results.errors import BenchError
from bench.results.schema import Point


def pt(b, sps, status="ok"):
    return Point(batch_size=b, status=status, samples_per_sec=sps if status == "ok" else None)


# the published A100 EfficientNet-b0 inference curve: flattens after 128
CURVE = [pt(1, 130), pt(8, 1004), pt(32, 3401), pt(64, 4656), pt(128, 5001), pt(256, 5154)]


def sweep_of(points):
    """A real SweepResult (the stored reference run) with these points."""
    return dataclasses.replace(
        load_result(str(Path(__file__).parent / "data" / "cpu_resnet18.json")), points=tuple(points)
    )


def max_result(safe=224, mx=240, headroom=0.06, exact=True, granularity=1, band_high=None):
    return SimpleNamespace(
        safe_batch_size=safe, max_batch_size=mx, headroom_fraction=headroom, exact=exact,
        granularity=granularity, band_high=band_high,
    )  # fmt: skip


@pytest.mark.parametrize(
    "kw, words",
    [
        ({}, "below the exact max 240"),
        ({"granularity": 8}, "below the max 240 (exact to 8)"),
        (
            {"exact": False, "band_high": 256},
            "below the max 240 (a band 240-256: the boundary did not repeat)",
        ),
        ({"exact": False}, "below the max 240 (not proven exact)"),
    ],
)
def test_safe_max_says_what_the_max_is_worth(kw, words):
    """A CPU max that did not repeat is a band: the recommendation never calls it exact."""
    rec = recommend(sweep_of(CURVE), max_result(**kw))
    assert words in rec.safe_max.why


def test_knee_on_reference_curve():
    assert knee_point(CURVE).batch_size == 128  # 5001 >= 0.95 * 5154 = 4896.3; 64's 4656 is not
    assert knee_point(CURVE, fraction=0.90).batch_size == 64  # 4656 is 90.3% of 5154
    assert knee_point(CURVE, fraction=0.99).batch_size == 256
    assert knee_point(list(reversed(CURVE))).batch_size == 128  # order of the points does not matter
    assert knee_point([pt(8, None, "oom")]) is None


def test_scaled_lr():
    lin, sq = scaled_lr(0.1, 256, 1024)
    assert lin == pytest.approx(0.4) and sq == pytest.approx(0.2)
    lin, sq = scaled_lr(0.1, 256, 64)
    assert lin == pytest.approx(0.025) and sq == pytest.approx(0.05)


def test_recommend_from_sweep_and_max():
    rec = recommend(sweep_of([*CURVE, pt(512, None, "oom")]), max_result(), base_batch=256, base_lr=0.1)
    assert (rec.best.batch_size, rec.knee.batch_size, rec.safe_max.batch_size) == (256, 128, 224)
    assert rec.best.samples_per_sec == 5154 and rec.knee.samples_per_sec == 5001
    assert "97.0%" in rec.knee.why  # 5001 / 5154
    assert rec.knee.lr_linear == pytest.approx(0.05) and rec.knee.lr_sqrt == pytest.approx(0.1 / math.sqrt(2))
    assert rec.safe_max.lr_linear == pytest.approx(0.0875)
    assert rec.safe_max.samples_per_sec is None  # 224 was not measured: never invented
    assert "6% headroom below the exact max 240" in rec.safe_max.why
    assert any("starting points" in n for n in rec.notes)
    assert any("sizes between 256 and 512 (out of memory) may be faster" in n for n in rec.notes)


def test_safe_max_throughput_when_measured_and_best_not_at_the_edge():
    points = [pt(16, 100.0), pt(32, 180.0), pt(64, 200.0), pt(100, 190.0)]
    rec = recommend(sweep_of(points), max_result(safe=100, mx=110))
    assert rec.best.batch_size == 64 and rec.knee.batch_size == 64  # 180 < 0.95 * 200
    assert rec.safe_max.samples_per_sec == 190.0
    assert rec.best.lr_linear is None and not any("larger ones" in n for n in rec.notes)


def test_nothing_completed():
    rec = recommend(sweep_of([pt(8, None, "oom")]))
    assert rec.best is None and rec.knee is None and rec.safe_max is None
    assert rec.notes == ("no batch size completed in the sweep",)


def test_max_batch_only():
    rec = recommend(None, max_result(safe=48, mx=52), base_batch=32, base_lr=0.01)
    assert rec.best is None and rec.safe_max.batch_size == 48
    assert rec.safe_max.lr_linear == pytest.approx(0.015)


@pytest.mark.parametrize(
    ("batch", "lr", "message"),
    [(256, None, "both"), (None, 0.1, "both"), (0, 0.1, "positive integer"), (256, -1.0, "positive number")],
)
def test_bad_lr_reference(batch, lr, message):
    with pytest.raises(BenchError, match=message):
        check_lr_reference(batch, lr)
    with pytest.raises(BenchError, match=message):
        recommend(sweep_of(CURVE), base_batch=batch, base_lr=lr)


def test_render_shows_the_picks_and_labels_lr_as_starting_points():
    rec = recommend(sweep_of(CURVE), max_result(safe=224), base_batch=256, base_lr=0.1)
    console = Console(width=250, record=True)
    console.print(render(rec))
    text = console.export_text()
    for expected in (
        "throughput-optimal",
        "knee",
        "safe max",
        "5,154.0",
        "not measured",
        "0.05",
        "starting points",
    ):
        assert expected in text


def test_recommend_for_sweeps_powers_of_two_up_to_the_safe_batch_then_picks():
    """The `bench recommend` pipeline as a library call: search, then the sweep it bounds, then the pick."""
    import contextlib

    from bench.jobs.recommend import recommend_for
    from bench.results.schema import MeasureSettings, Workload

    log = []
    search = max_result(safe=4, mx=5, headroom=0.1)

    def find(workload, **options):
        log.append(("find", options))
        return search

    def sweep(workload, sizes, settings, *, out_path, on_event, search, **kwargs):
        log.append(("sweep", list(sizes), on_event))
        done = sweep_of([pt(b, 100.0 * b) for b in sizes])
        return dataclasses.replace(done, recommendation=recommend(done, search))

    @contextlib.contextmanager
    def display():
        log.append("display")
        yield "live"

    run = recommend_for(
        Workload(model="m"), MeasureSettings(), out_path="r.json", on_search=lambda s: log.append(("shown", s)),
        sweep_display=display, find=find, sweep=sweep, cap=4,
    )  # fmt: skip
    assert log == [("find", {"cap": 4}), ("shown", search), "display", ("sweep", [1, 2, 4], "live")]
    assert run.search is search and run.sweep_path == Path("r.json")
    assert [p.batch_size for p in run.sweep.points] == [1, 2, 4]
    assert run.recommendation == recommend(run.sweep, search)


def test_recommend_for_stops_before_the_sweep_when_no_batch_keeps_the_headroom():
    from bench.jobs.recommend import recommend_for
    from bench.results.schema import MeasureSettings, Workload

    shown = []

    def sweep(*a, **k):
        raise AssertionError("nothing to sweep")

    with pytest.raises(BenchError, match="no batch size fits with headroom"):
        recommend_for(
            Workload(model="m"), MeasureSettings(), out_path="r.json", on_search=shown.append,
            find=lambda w, **o: max_result(safe=None), sweep=sweep,
        )  # fmt: skip
    assert len(shown) == 1  # the search is still shown (and stored by the CLI)
