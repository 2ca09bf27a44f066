"""One entry per job: `bench sweep` and `bench.run_sweep` are the same call (bench.jobs.sweep.run_sweep),
with the same recommendation, history look-up and storing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.results.codec import dumps, load_result
from bench.results.store import list_runs, save_run
from tests.test_faults import SEARCH, _search_for

DATA = Path(__file__).parent / "data" / "cpu_resnet18.json"
TINY = "tests.tiny_models:tiny_cnn"


@pytest.fixture
def reference_loop(monkeypatch):
    """The measuring loop replaced by the stored reference run (3 points, known samples/sec): what
    the job does after the measurement is what is compared."""
    import bench.jobs.sweep

    def measure_sweep(workload, sizes, settings, *, out_path, finish, **kwargs):
        done = finish(dataclasses.replace(load_result(str(DATA)), run_id=Path(out_path).stem))
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(dumps(done))  # the loop's last write, after ``finish``
        return done

    monkeypatch.setattr(bench.jobs.sweep, "measure_sweep", measure_sweep)


def test_python_run_sweep_gives_the_command_s_result_and_stores_it(tmp_path, reference_loop, capsys):
    from bench import Workload, run_sweep

    db = tmp_path / "h.db"
    save_run(db, _search_for(DATA))  # `bench max-batch` earlier: safe batch 36 for this workload
    code = main(["sweep", "resnet18", "-b", "2,4,8", "--device", "cpu", "-o", str(tmp_path / "cli.json"),
                 "--db", str(db), "--base-batch", "4", "--base-lr", "0.1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    from_cli = load_result(str(tmp_path / "cli.json"))

    result = run_sweep(
        Workload(model="resnet18", image_size=32, device="cpu"), [2, 4, 8], store=db,
        out_path=tmp_path / "py.json", base_batch=4, base_lr=0.1,
    )  # fmt: skip
    assert result.recommendation is not None and result.recommendation == from_cli.recommendation
    assert result.recommendation.safe_max.batch_size == SEARCH["safe_batch_size"]  # from the history
    assert result.recommendation.best.lr_linear is not None
    assert load_result(str(tmp_path / "py.json")).recommendation == result.recommendation  # in the file
    kinds = [r.kind for r in list_runs(db)]
    assert kinds.count("sweep") == 2 and kinds.count("max_batch") == 1  # both stored, one search


def test_run_sweep_without_store_leaves_the_history_alone(tmp_path, reference_loop):
    from bench import Workload, run_sweep

    db = tmp_path / "h.db"
    save_run(db, _search_for(DATA))
    result = run_sweep(
        Workload(model="resnet18", image_size=32, device="cpu"), [2], out_path=tmp_path / "r.json"
    )
    assert result.recommendation.safe_max is None  # no history named: none looked up
    assert [r.kind for r in list_runs(db)] == ["max_batch"]


def test_a_real_library_sweep_stores_and_recommends(tmp_path):
    """Not faked: a tiny model through the whole job, stored in a temp history."""
    from bench import MeasureSettings, Workload, run_sweep

    settings = MeasureSettings(
        warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0, isolate=False
    )
    db = tmp_path / "h.db"
    result = run_sweep(
        Workload(model=TINY, image_size=8), [2, 4], settings, out_path=tmp_path / "r.json", store=db
    )
    rec = result.recommendation  # a pick, or (3-step points on a busy machine) the batches too noisy to rank
    assert rec is not None and (rec.best is not None or rec.not_ranked)
    rows = list_runs(db)
    assert [r.run_id for r in rows] == [result.run_id]
    stored = json.loads((tmp_path / "r.json").read_text())["recommendation"]
    assert (stored["best"] or {"batch_size": 2})["batch_size"] in (2, 4) and stored["not_ranked"] == list(
        rec.not_ranked
    )


def test_a_mistyped_history_folder_is_one_line_before_measuring(tmp_path, reference_loop):
    from bench import Workload, run_sweep
    from bench.results.errors import BenchError

    with pytest.raises(BenchError, match="does not exist"):
        run_sweep(Workload(model="resnet18", device="cpu"), [2], store=tmp_path / "typo" / "h.db")
    assert not (tmp_path / "typo").exists()
