"""The gradient noise scale: the estimator against known answers, the measurement, the command."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench.analysis.noise_scale import draw_estimates, estimate, noise_coefficient
from bench.cli import main
from bench.results.errors import BenchError
from bench.results.noise import NoiseDraw, load_noise, parse_noise_scale

# --------------------------------------------------------------------------- synthetic gradients


def _gaussian_draws(seed, n_draws, g, std, small, k):
    """Per-example gradients G + noise (covariance diag(std²)): a micro-batch mean of ``small``
    examples is G + N(0, diag(std²)/small), exactly. ``k`` micro-batches per draw."""
    gen = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(n_draws):
        micro = g + torch.randn(k, g.numel(), generator=gen, dtype=torch.float64) * std / math.sqrt(small)
        big = micro.mean(0)
        draws.append(NoiseDraw(float((micro**2).sum(1).mean()), float(big.dot(big))))
    return draws


def test_estimator_is_unbiased_for_a_known_gradient_and_covariance():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(50, generator=gen, dtype=torch.float64) * 0.1
    std = torch.rand(50, generator=gen, dtype=torch.float64) + 0.5
    true_g2, true_trace = float(g.dot(g)), float((std**2).sum())
    small, k = 4, 8
    g2s, traces = [], []
    for seed in range(40):
        draws = _gaussian_draws(seed, 25, g, std, small, k)
        est = estimate(draws, small, small * k)
        g2s.append(est.gradient_sq_norm)
        traces.append(est.trace_sigma)
    for values, truth in ((g2s, true_g2), (traces, true_trace)):
        mean = sum(values) / len(values)
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
        assert abs(mean - truth) < 4 * se, (mean, truth, se)  # unbiased: within the seeds' error
        assert abs(mean - truth) < 0.05 * truth  # and close in absolute terms


def test_interval_covers_the_true_noise_scale_about_95_percent():
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(20, generator=gen, dtype=torch.float64) * 0.3
    std = torch.ones(20, dtype=torch.float64)
    truth = 20.0 / float(g.dot(g))
    covered = 0
    for seed in range(200):
        est = estimate(_gaussian_draws(seed, 60, g, std, 8, 8), 8, 64)
        covered += est.ci_low is not None and est.ci_low <= truth <= est.ci_high
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_one_draw_recovers_exact_norms_without_noise():
    """No noise: |g_small|² = |g_big|² = |G|², so tr(Σ) = 0 and |G|² exact."""
    g2, trace = draw_estimates(NoiseDraw(2.5, 2.5), 8, 64)
    assert g2 == pytest.approx(2.5) and trace == pytest.approx(0.0)


def test_unresolved_gradient_gives_no_value_and_bad_batches_are_refused():
    est = estimate([NoiseDraw(10.0, 1.0), NoiseDraw(9.0, 1.1)], 8, 16)  # |G|² estimate < 0
    assert est.noise_scale is None and est.ci_low is None and math.isinf(est.relative_half_width)
    with pytest.raises(ValueError):
        draw_estimates(NoiseDraw(1, 1), 16, 16)
    with pytest.raises(ValueError):
        noise_coefficient(64, population=32)


# --------------------------------------------------------------------------- finite population


def test_finite_population_correction_without_replacement():
    """A finite set of N per-example gradients with exact |G|² and tr(Σ) (N − 1 convention): batches
    drawn without replacement give unbiased values with the correction; without it |G|² is low
    by tr(Σ)/N."""
    gen = torch.Generator().manual_seed(3)
    n, d, small, k = 64, 10, 4, 8  # a draw takes half the set
    examples = torch.randn(n, d, generator=gen, dtype=torch.float64) + 0.25
    mean = examples.mean(0)
    true_g2 = float(mean.dot(mean))
    true_trace = float(((examples - mean) ** 2).sum() / (n - 1))
    draws = []
    for _ in range(20000):
        idx = torch.randperm(n, generator=gen)[: small * k]
        micro = examples[idx].reshape(k, small, d).mean(1)
        big = micro.mean(0)
        draws.append(NoiseDraw(float((micro**2).sum(1).mean()), float(big.dot(big))))
    corrected = estimate(draws, small, small * k, population=n)
    naive = estimate(draws, small, small * k)
    assert corrected.gradient_sq_norm == pytest.approx(true_g2, rel=0.03)
    assert corrected.trace_sigma == pytest.approx(true_trace, rel=0.03)
    assert corrected.noise_scale == pytest.approx(true_trace / true_g2, rel=0.05)
    assert naive.gradient_sq_norm == pytest.approx(true_g2 - true_trace / n, rel=0.05)
    assert abs(naive.gradient_sq_norm - true_g2) > 0.1 * true_g2  # the bias the correction removes


def test_a_draw_of_the_whole_set_is_the_exact_gradient():
    """B_big = N without replacement: |g_big|² is |G|², and c(N) = 0 makes the estimate exact."""
    g2, trace = draw_estimates(NoiseDraw(small_sq_norm=3.0, big_sq_norm=2.0), 4, 16, population=16)
    assert g2 == pytest.approx(2.0)
    assert trace == pytest.approx(1.0 / (1 / 4 - 1 / 16))


# --------------------------------------------------------------------------- measurement at fixed weights


def test_measure_noise_matches_per_example_gradients_and_leaves_weights_alone():
    from bench.jobs.noise import NoiseSettings, measure_noise
    from bench.measure.noise import exact_gradient_stats
    from tests.noise_data import teacher_images

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    data = teacher_images(512)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g2, trace = exact_gradient_stats(model, torch.nn.functional.cross_entropy, data)
    settings = NoiseSettings(
        small_batch=8, big_batch=128, target_rel_ci=0.05, max_time_seconds=30, min_draws=30
    )
    res = measure_noise(model, data, device="cpu", settings=settings)
    assert res.dataset_size == 512 and res.estimate.population == 512
    assert res.estimate.gradient_sq_norm == pytest.approx(g2, rel=0.25)
    assert res.estimate.trace_sigma == pytest.approx(trace, rel=0.1)
    assert res.noise_scale == pytest.approx(trace / g2, rel=0.25)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_batchnorm_buffers_are_restored(tmp_path):
    from bench.jobs.noise import NoiseSettings, measure_noise
    from tests.noise_data import teacher_images
    from tests.tiny_models import TinyCNN

    model = TinyCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_noise(model, teacher_images(64), device="cpu",
                  settings=NoiseSettings(small_batch=8, big_batch=32, max_time_seconds=0.5, min_draws=2))  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- the command


FAST = ["--small-batch", "8", "--big-batch", "32", "--max-time", "1", "--device", "cpu"]
TINY = "tests.tiny_models:tiny_cnn"


def test_noise_command_writes_a_result_and_a_history_row(tmp_path, capsys):
    out = tmp_path / "noise.json"
    code = main(["noise", TINY, "--dataset", "tests.noise_data:teacher_images", *FAST, "-o", str(out)])
    assert code == 0
    res = load_noise(out)
    assert res.kind == "noise" and res.dataset_size == 256 and res.big_batch == 32 and res.draws
    assert json.loads(out.read_text())["kind"] == "noise"
    from bench.results.store import list_runs

    runs = list_runs(tmp_path / ".bench" / "results.db")
    assert [r.kind for r in runs] == ["noise"] and runs[0].model == TINY
    assert "B_noise" in capsys.readouterr().out


def test_train_steps_and_checkpoint(tmp_path):
    from tests.tiny_models import TinyCNN

    ckpt = tmp_path / "w.pt"
    torch.save({"state_dict": TinyCNN().state_dict()}, ckpt)
    out = tmp_path / "n.json"
    args = ["noise", TINY, "--dataset", "tests.noise_data:teacher_images", *FAST, "-o", str(out)]
    assert main([*args, "--checkpoint", str(ckpt), "--train-steps", "3"]) == 0
    res = load_noise(out)
    assert res.train_steps == 3 and res.checkpoint == str(ckpt)


@pytest.mark.parametrize(
    "dataset, words",
    [
        ("tests.noise_data:empty", "the data set is empty"),
        ("tests.noise_data:wrong_channels", "does not fit the model"),
        ("tests.noise_data:singles", "not (input, target) pairs"),
        ("tests.noise_data:integer_images", "must be float tensors"),
        ("tests.noise_data:nothing_here", "has no callable"),
    ],
)
def test_bad_data_sets_are_one_error_line(dataset, words, capsys):
    assert main(["noise", TINY, "--dataset", dataset, *FAST, "--no-history"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and words in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--big-batch", "20"], "must be a multiple"),
        (["--big-batch", "512", "--small-batch", "8"], "larger than the data set"),
        (["--target-ci", "0"], "--target-ci"),
        (["--checkpoint", "nope.pt"], "no such file"),
    ],
)
def test_bad_options_are_one_error_line(extra, words, capsys):
    args = ["noise", TINY, "--dataset", "tests.noise_data:teacher_images", *FAST, "--no-history", *extra]
    assert main(args) == 2
    assert words in capsys.readouterr().err


def test_one_data_set_is_required(capsys):
    assert main(["noise", TINY, *FAST, "--no-history"]) == 2
    assert "give one data set" in capsys.readouterr().err


def test_noise_scale_from_a_number_or_a_file(tmp_path):
    assert parse_noise_scale("250") == (250.0, "given")
    with pytest.raises(BenchError, match="positive"):
        parse_noise_scale("-3")
    with pytest.raises(BenchError, match="no such file"):
        parse_noise_scale(str(tmp_path / "missing.json"))


# --------------------------------------------------------------------------- torchrun, 2 gloo processes


@pytest.mark.slow
def test_two_ranks_small_is_one_rank_big_is_the_all_reduced_gradient(tmp_path):
    """Under torchrun: the first draw's norms equal the ones computed here from the same weights and
    examples (rank r takes slice r of a permutation seeded alike on every rank)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.noise_data import teacher_images
    from tests.tiny_models import TinyCNN

    root = Path(__file__).resolve().parents[1]
    torch.manual_seed(0)
    model = TinyCNN()
    ckpt = tmp_path / "w.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "n.json"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "bench",
         "noise", TINY, "--dataset", "tests.noise_data:teacher_images", "--small-batch", "8", "--max-time", "2",
         "--device", "cpu", "--checkpoint", str(ckpt), "-o", str(out), "--no-history"],
        cwd=root, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = load_noise(out)
    assert (res.world_size, res.small_batch, res.big_batch) == (2, 8, 16) and res.draws
    data = teacher_images()
    chosen = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:16].tolist()
    grads = []
    for part in (chosen[:8], chosen[8:]):
        model.zero_grad()
        x = torch.stack([data[i][0] for i in part])
        y = torch.stack([data[i][1] for i in part])
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
    small = float(sum(g.dot(g) for g in grads) / 2)
    mean = (grads[0] + grads[1]) / 2
    first = res.draws[0]
    assert first.small_sq_norm == pytest.approx(small, rel=1e-4)
    assert first.big_sq_norm == pytest.approx(float(mean.dot(mean)), rel=1e-4)


def test_ctrl_c_keeps_the_draws_so_far(tmp_path, monkeypatch, capsys):
    """Ctrl-C after some draws: the file and the history get them, marked interrupted; exit 130."""
    import bench.cli.noise as cli_noise

    def interrupt_at_third(banner, every_seconds=1.0):
        def show(p):
            if p.draws == 3:
                raise KeyboardInterrupt

        return show

    monkeypatch.setattr(cli_noise, "_progress", interrupt_at_third)
    out = tmp_path / "n.json"
    args = [
        "noise",
        TINY,
        "--dataset",
        "tests.noise_data:teacher_images",
        *FAST,
        "--max-time",
        "60",
        "-o",
        str(out),
    ]
    assert main(args) == 130
    res = load_noise(out)
    assert res.status == "interrupted" and len(res.draws) == 3 and res.estimate.draws == 3
    assert "interrupted" in capsys.readouterr().err


def test_an_image_folder_is_read_as_the_loader_reads_it(tmp_path):
    from torchvision.io import write_jpeg

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(8):
            write_jpeg(
                torch.randint(0, 255, (3, 12, 12), dtype=torch.uint8),
                str(tmp_path / "imgs" / cls / f"{i}.jpg"),
            )
    out = tmp_path / "n.json"
    args = ["noise", TINY, "--data-dir", str(tmp_path / "imgs"), "--image-size", "8", "--small-batch", "4",
            "--max-time", "1", "--device", "cpu", "-o", str(out), "--no-history"]  # fmt: skip
    assert main(args) == 0
    res = load_noise(out)
    assert res.dataset_size == 16 and res.big_batch == 16  # the whole set, rounded to micro-batches
