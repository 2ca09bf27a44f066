import pytest

from bench.recommend import knee_point, recommend, scaled_lr
from bench.schema import Point


def pt(b, sps, status="ok"):
    return Point(batch_size=b, status=status, samples_per_sec=sps if status == "ok" else None)


# the published A100 EfficientNet-b0 inference curve: flattens after 128
CURVE = [pt(1, 130), pt(8, 1004), pt(32, 3401), pt(64, 4656), pt(128, 5001), pt(256, 5154)]


def test_knee_on_reference_curve():
    assert knee_point(CURVE).batch_size == 128  # 5001 >= 0.95 * 5154; 64 is not
    assert knee_point(CURVE, fraction=0.90).batch_size == 64  # 4656 is 90.3% of 5154
    assert knee_point(CURVE, fraction=0.99).batch_size == 256
    assert knee_point([pt(8, None, "oom")]) is None


def test_scaled_lr():
    lin, sq = scaled_lr(0.1, 256, 1024)
    assert lin == pytest.approx(0.4) and sq == pytest.approx(0.2)


def test_recommend_from_sweep_and_max(tmp_path):
    from types import SimpleNamespace

    sweep = SimpleNamespace(points=CURVE + [pt(512, None, "oom")], best_point=lambda: CURVE[-1])
    mx = SimpleNamespace(safe_batch_size=224, max_batch_size=240, headroom_fraction=0.06, soak_steps=20)
    rec = recommend(sweep, mx, base_batch=256, base_lr=0.1)
    assert rec.best.batch_size == 256 and rec.knee.batch_size == 128 and rec.safe_max.batch_size == 224
    assert rec.knee.lr_linear == pytest.approx(0.05)
    assert rec.safe_max.samples_per_sec is None  # not measured: never invented
