import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.results.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
TINY = "tests.tiny_models:tiny_cnn"
FAST = ["--image-size", "8", "--warmup", "1", "--min-steps", "3", "--max-time", "0.3", "--min-time", "0"]


def run_cli(*args, cwd=None):  # None: the test's own temp folder (conftest)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_sweep_end_to_end_writes_valid_json(tmp_path):
    out = tmp_path / "res.json"
    proc = run_cli("sweep", TINY, "-b", "1,2", *FAST, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert data["kind"] == "sweep"
    assert data["status"] == "complete"
    assert data["workload"]["model"] == TINY
    assert data["environment"]["torch_version"]
    assert data["environment"]["cpu_logical_cores"] >= 1
    assert [p["batch_size"] for p in data["points"]] == [1, 2]
    for p in data["points"]:
        assert p["status"] == "ok"
        assert p["samples_per_sec"] > 0
        assert len(p["step_seconds"]) >= 3
        # samples/sec is the measured window's throughput
        assert p["samples_per_sec"] == pytest.approx(
            p["batch_size"] * len(p["step_seconds"]) / p["window_seconds"]
        )
        assert p["memory"]["host_peak_rss_bytes"] > 0
        assert p["memory"]["host_rss_method"] == "child-maxrss"  # one process per point on CPU
        assert (
            p["step_stats"]["p10_seconds"]
            <= p["step_stats"]["median_seconds"]
            <= p["step_stats"]["p90_seconds"]
        )
    assert "samples/s" in proc.stdout  # the final table


@pytest.mark.slow
def test_json_flag_prints_result(tmp_path):
    proc = run_cli("sweep", TINY, "-b", "2", *FAST, "--no-isolate", "--json", "-o", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["points"][0]["batch_size"] == 2


@pytest.mark.slow
def test_env_and_models_commands():
    proc = run_cli("env", "--json")
    assert proc.returncode == 0
    assert "torch_version" in json.loads(proc.stdout)
    proc = run_cli("models", "efficientnet")
    assert "efficientnet_b0" in proc.stdout.split()


BAD_INPUTS = [
    (["-b", "0"], "batch size must be positive"),
    (["-b", "-4"], "batch size must be positive"),
    (["-b", "2.5"], "not an integer"),
    (["-b", "abc"], "not an integer"),
    (["-b", "1,,2"], "empty item"),
    (["-b", "64:8"], "empty"),
    (["--image-size", "0"], "image size must be a positive integer"),
    (["--image-size", "-3"], "image size must be a positive integer"),
    (["--image-size", "abc"], "--image-size"),
    (["--precision", "fp8"], "unknown precision"),
    (["--mode", "fly"], "unknown mode"),
    (["--device", "tpu"], "unknown device"),
    (["--max-time", "0"], "max time"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS)
def test_bad_input_one_line_exit_2(args, message, capsys, tmp_path):
    code = main(["sweep", TINY, *args, "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "r.json").exists()  # nothing was started


@pytest.mark.parametrize(
    "model, message",
    [
        ("efficientnet_bo", "did you mean efficientnet_b0"),
        ("no_such_pkg.mod:fn", "cannot import module"),
        ("tests.tiny_models:nope", "has no callable"),
        ("timm:not_a_timm_model_xyz", "unknown model"),
    ],
)
def test_unknown_model_or_factory(model, message, capsys, tmp_path):
    code = main(["sweep", model, "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_cuda_without_gpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["sweep", TINY, "--device", "cuda", "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no CUDA device" in err and len(err.splitlines()) == 1


def test_unwritable_output(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["sweep", TINY, *FAST, "-o", str(blocker / "sub" / "r.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot write results" in err and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_bad_input_via_real_process_has_no_traceback():
    proc = run_cli("sweep", "efficientnet_bo")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:")
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bench_console_script_exists():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="console_scripts")}
    assert "bench" in names


def test_a_failing_size_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = [
        "sweep",
        "tests.tiny_models:fails_at_batch_1",
        "-b",
        "1,2,4",
        *FAST,
        "--no-isolate",
        "-o",
        str(out),
    ]
    assert main([*args, "--db", str(tmp_path / "h.db")]) == 0
    data = json.loads(out.read_text())
    assert [p["status"] for p in data["points"]] == ["error", "ok", "ok"]
    assert "Expected more than 1 value" in data["points"][0]["error"]
    assert any("going on with the next size" in n for n in data["notices"])


def test_a_workload_failing_at_every_size_stops_after_two(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = [
        "sweep",
        "tests.tiny_models:fails_in_training",
        "-b",
        "1,2,4,8",
        *FAST,
        "--no-isolate",
        "-o",
        str(out),
    ]
    assert main([*args, "--db", str(tmp_path / "h.db")]) == 1
    data = json.loads(out.read_text())
    assert [p["status"] for p in data["points"]] == ["error", "error"] and data["status"] == "failed"
    assert "no batch size completed" in capsys.readouterr().err


def test_rerunning_to_the_same_file_keeps_both_runs_in_the_history(tmp_path):
    from bench.results.store import list_runs

    args = ["sweep", TINY, "-b", "2", *FAST, "--no-isolate", "-o", str(tmp_path / "r.json")]
    assert main([*args, "--db", str(tmp_path / "h.db")]) == 0
    assert main([*args, "--db", str(tmp_path / "h.db")]) == 0
    assert len({r.run_id for r in list_runs(tmp_path / "h.db")}) == 2


def test_max_batch_checks_its_output_path_before_probing(tmp_path, capsys):
    """An output that cannot be written is bad input, said before minutes of probing."""
    code = main(
        [
            "max-batch",
            TINY,
            "--image-size",
            "8",
            "--device",
            "cpu",
            "-o",
            str(tmp_path),
            "--db",
            str(tmp_path / "h.db"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot write results to" in err and "it is a directory" in err
    assert "searching" not in err  # no probe ran


@pytest.mark.slow
def test_sigterm_ends_a_sweep_like_ctrl_c_nothing_lost(tmp_path):
    """A scheduler's SIGTERM mid-sweep: exit 130, finished points kept, file marked interrupted,
    the run in the history."""
    import signal
    import time

    out, db = tmp_path / "r.json", tmp_path / "h.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    slow = ["--image-size", "8", "--warmup", "1", "--min-steps", "3", "--max-time", "2", "--min-time", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "sweep", TINY, "-b", "1,2,4,8,16,32,64", *slow, "--no-isolate", "-o", str(out), "--db", str(db)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the first point is finished and saved
        if out.exists() and json.loads(out.read_text())["points"]:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted"
    assert 1 <= len(data["points"]) < 7 and all(p["status"] == "ok" for p in data["points"])
    from bench.results.store import list_runs

    assert [r.status for r in list_runs(db)] == ["interrupted"]


def test_max_batch_exits_1_when_nothing_fits(tmp_path, capsys):
    out = tmp_path / "max.json"
    code = main(["max-batch", TINY, "--image-size", "8", "--device", "cpu", "--memory-limit", "1MiB",
                 "-o", str(out), "--db", str(tmp_path / "h.db")])  # fmt: skip
    assert code == 1
    assert "no batch fits" in capsys.readouterr().out
    assert json.loads(out.read_text())["max_batch_size"] is None  # the finding is still recorded


def test_error_lines_print_brackets_literally(capsys, monkeypatch):
    """An error text with rich-markup look-alikes ('[/x]', '[measure]') is printed as it is, one line,
    not swallowed as markup or crashing the printer (a gloo error once did)."""
    import bench.cli.sweep as cli_mod
    from bench.results.errors import BenchError

    def boom(*a, **k):
        raise BenchError("profile key [measure] bad; gloo said [/tmp/x] closed")

    monkeypatch.setattr(cli_mod, "build_workload", boom)
    assert main(["sweep", "tests.tiny_models:tiny_cnn", "--no-history"]) == 2
    err = capsys.readouterr().err
    assert "[measure]" in err and "[/tmp/x]" in err and len(err.strip().splitlines()) == 1
