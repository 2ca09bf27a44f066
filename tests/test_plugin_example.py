"""The pytest plugin as a user writes it (the README's example): benchmark a model step.

Run it as a benchmark, save it, and gate a later run on it with pytest-benchmark's own flags:

    pytest tests/test_plugin_example.py --benchmark-save=baseline
    pytest tests/test_plugin_example.py --benchmark-compare --benchmark-compare-fail=median:5%

``bench_model`` runs the warm-up outside the timing, synchronises the device after every timed
step, and puts samples/sec into the benchmark's ``extra_info`` (in ``--benchmark-json`` and saved
runs). Sizes here are tiny so the CPU suite stays fast; use real ones on a GPU.
"""

import torch


def test_resnet18_train_step(bench_model, benchmark):
    result = bench_model("resnet18", batch_size=4, image_size=32, warmup=2, rounds=5, device="cpu")
    assert result.samples_per_sec > 0
    assert benchmark.extra_info["samples_per_sec"] == result.samples_per_sec
    assert benchmark.extra_info["batch_size"] == 4 and benchmark.extra_info["mode"] == "train"


def test_your_own_module_is_left_untouched(bench_model):
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    before = [p.detach().clone() for p in net.parameters()]
    result = bench_model(net, batch_size=8, input_shape=(16,), mode="train", warmup=1, rounds=5, device="cpu")
    assert result.samples_per_sec > 0 and result.model == "Sequential"
    for p, q in zip(net.parameters(), before, strict=True):
        assert p.grad is None and torch.equal(p.detach(), q)  # a copy was trained, not yours
