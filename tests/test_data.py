"""The --data loader input pipeline: JPEG decode + augment in a DataLoader, data-wait recording."""

from __future__ import annotations

import pytest
import torch

from bench.analysis.diagnose import diagnose_point
from bench.analysis.stats import summarize
from bench.measure import data
from bench.results.errors import BenchError
from bench.results.schema import OK, Point, StepBreakdown, Workload
from tests.fakes import FakeClock

SMALL = (24, 32)  # source pixels: keeps encode/decode cheap in tests


@pytest.fixture(scope="module")
def jpegs():
    return data.synthetic_jpegs(count=8, source_hw=SMALL)


def test_synthetic_jpegs_are_real_jpegs_encoded_once(jpegs):
    assert len(jpegs) == 8
    assert all(j.dtype == torch.uint8 and j[0] == 0xFF and j[1] == 0xD8 for j in jpegs)  # SOI marker
    assert data.synthetic_jpegs(count=8, source_hw=SMALL) is jpegs


@pytest.mark.parametrize("workers", [0, 1])
def test_feed_yields_normalised_crops_and_labels(jpegs, workers):
    feed = data.open_feed(
        batch_size=4, image_size=16, num_classes=3, workers=workers, device="cpu", jpegs=jpegs
    )
    try:
        for _ in range(3):
            x, y = feed.next()
            assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
            assert y.shape == (4,) and int(y.max()) < 3
            assert float(x.min()) < 0 < float(x.max())  # normalised around the ImageNet mean
    finally:
        feed.close()
    assert len(feed.wait_seconds) == 3


class SlowDataset:
    """Each sample costs ``per_sample`` seconds of the fake clock: a loader slow on purpose."""

    def __init__(self, clock: FakeClock, per_sample: float) -> None:
        self.clock = clock
        self.per_sample = per_sample

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int):
        self.clock.advance(self.per_sample)
        return torch.zeros(3, 4, 4), 0


def test_slow_loader_reads_input_bound_with_most_of_the_step_waiting():
    clock = FakeClock()
    loader = data.make_loader(SlowDataset(clock, 0.004), 8, workers=0, pin_memory=False)
    feed = data.DataFeed(loader, "cpu", clock=clock)
    steps = []
    for _ in range(10):
        t0 = clock()
        feed.next()  # 8 samples x 4 ms = 32 ms of waiting
        clock.advance(0.010)  # the model's 10 ms of work
        steps.append(clock() - t0)
    wait = sum(feed.wait_seconds) / sum(steps)
    assert wait == pytest.approx(32 / 42)
    assert wait > 0.5
    bd = StepBreakdown(
        data_seconds=summarize(feed.wait_seconds).median_seconds, steps=10, data_wait_fraction=wait
    )
    point = Point(
        batch_size=8, status=OK, step_seconds=tuple(steps), step_stats=summarize(steps), breakdown=bd
    )
    d = diagnose_point(point, on_gpu=False)
    assert d.verdict == "input-bound"
    assert "76%" in d.evidence[0]


def test_workload_takes_data_settings_and_old_ones_default():
    wl = Workload(model="m", data="loader", workers=4)
    assert (wl.data, wl.workers, wl.data_dir) == ("loader", 4, None)
    assert (Workload(model="m").data, Workload(model="m").workers) == ("synthetic", 0)
    with pytest.raises(BenchError, match="data source"):
        Workload(model="m", data="disk")
    with pytest.raises(BenchError, match="needs --data loader"):
        Workload(model="m", data_dir="/tmp")
    with pytest.raises(BenchError, match="workers"):
        Workload(model="m", workers=-1)


def test_parse_workers():
    assert data.parse_workers("4") == [4]
    assert data.parse_workers("0,2,4") == [0, 2, 4]
    with pytest.raises(BenchError):
        data.parse_workers("two")
    with pytest.raises(BenchError):
        data.parse_workers("-1")


def test_image_folder_dir_is_checked(tmp_path, jpegs):
    with pytest.raises(BenchError, match="no such directory"):
        data.image_folder(str(tmp_path / "missing"), None)
    root = tmp_path / "images"  # not tmp_path itself: conftest keeps the test's history in tmp_path/.bench
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.jpg").write_bytes(bytes(jpegs[0].tolist()))
    (root / "dog").mkdir()
    (root / "dog" / "b.jpg").write_bytes(bytes(jpegs[1].tolist()))
    feed = data.open_feed(
        batch_size=2, image_size=16, num_classes=2, workers=0, device="cpu", data_dir=str(root)
    )
    x, y = feed.next()
    assert x.shape == (2, 3, 16, 16) and set(y.tolist()) <= {0, 1}
