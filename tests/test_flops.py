"""FLOPs per sample against hand counts; the peak table and MFU arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.measure import flops
from bench.measure.models import ModelSpec, resolve
from tests import flop_models

IN, OUT = flop_models.IN_FEATURES, flop_models.OUT_FEATURES


def test_linear_infer_is_two_in_out_per_sample():
    spec = resolve("tests.flop_models:linear")
    assert flops.count_flops_per_sample(spec, "infer") == 2 * IN * OUT


def test_linear_train_is_forward_plus_weight_gradient():
    spec = resolve("tests.flop_models:linear")
    assert flops.count_flops_per_sample(spec, "train") == 2 * (2 * IN * OUT)


def test_hidden_layer_trains_at_three_times_forward():
    spec = resolve("tests.flop_models:mlp")
    first, second = 2 * IN * IN, 2 * IN * OUT
    assert flops.count_flops_per_sample(spec, "infer") == first + second
    assert flops.count_flops_per_sample(spec, "train") == 2 * first + 3 * second


def test_depthwise_backward_is_not_multiplied_by_groups():
    """torch's formula counts a grouped conv's backward groups-times over; ours counts each gradient
    as one forward. Conv forward: 4 channels x 9 taps x 64 pixels x 2; the first layer's input
    needs no gradient, so train = forward + grad-weight for the conv, 3x for the head."""
    spec = ModelSpec(name="dw", source="factory", build=flop_models.depthwise, input_shape=(4, 8, 8))
    conv = 2 * 4 * 9 * 64
    head = 2 * 256 * 2
    assert flops.count_flops_per_sample(spec, "infer") == conv + head
    assert flops.count_flops_per_sample(spec, "train") == 2 * conv + 3 * head


def test_count_is_cached_per_workload():
    calls = []

    def build():
        calls.append(1)
        return flop_models.linear()

    spec = ModelSpec(name="cached-linear", source="factory", build=build, input_shape=(IN,))
    first = flops.count_flops_per_sample(spec, "infer")
    assert flops.count_flops_per_sample(spec, "infer") == first
    assert len(calls) == 1


def test_uncountable_model_is_none():
    def build():
        raise RuntimeError("cannot build")

    spec = ModelSpec(name="broken", source="factory", build=build, input_shape=(IN,))
    assert flops.count_flops_per_sample(spec, "train") is None


@pytest.mark.parametrize(
    "name, key",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA GB200", "GB200"),
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "H100 SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100-PCIE-40GB", "A100"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 5090", "RTX 5090"),
        ("Tesla V100-SXM2-16GB", "V100 SXM"),
        ("Tesla V100-PCIE-32GB", "V100 PCIe"),
        ("Tesla T4", "T4"),
        ("NVIDIA A10G", None),
        ("Intel(R) Xeon(R) Processor", None),
        (None, None),
    ],
)
def test_gpu_names_match_the_table(name, key):
    assert flops.gpu_key(name) == key


def test_peaks_are_dense_figures():
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert flops.peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == pytest.approx(156.0)
    assert flops.peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None
    assert flops.peak_tflops("cpu", "fp32") is None


def test_mfu_of_efficientnet_like_point_on_h100():
    """2.29 GFLOP/sample (EfficientNet-b0 train) at 4,941 samples/s is ~11.3 TFLOP/s: ~1.1% of 989."""
    fig = flops.figures(2.2932e9, 4941.0, "NVIDIA H100 80GB HBM3", "bf16")
    assert fig.achieved_tflops == pytest.approx(11.33, rel=1e-3)
    assert fig.mfu == pytest.approx(0.01145, rel=1e-2)


def test_mfu_is_none_without_a_peak_or_a_count():
    assert flops.figures(1e9, 100.0, "cpu", "fp32").mfu is None
    assert flops.figures(1e9, 100.0, "cpu", "fp32").achieved_tflops == pytest.approx(0.1)
    assert flops.figures(None, 100.0, "NVIDIA H100 PCIe", "bf16") == flops.FlopFigures()


def test_a_sweep_records_flops_and_mfu_per_point():
    """with_analysis puts FLOPs, TFLOP/s and MFU on every measured point of a sweep: on the H100
    fixture (bf16) against the H100 SXM dense peak; a failed point gets none."""
    from dataclasses import replace as dc_replace

    from bench.jobs.sweep import with_analysis
    from bench.results.codec import load_result

    run = load_result(str(Path(__file__).parent / "data" / "h100_sweep_efficientnet_b0_bf16_cl_b16-64.json"))
    run = dc_replace(run, points=(*run.points, dc_replace(run.points[-1], batch_size=4096, status="oom",
                                                          samples_per_sec=None)))  # fmt: skip
    done = with_analysis(run, 2.2932e9)
    for p in done.points:
        if p.status != "ok":
            assert p.mfu is None
            continue
        assert p.flops_per_sample == 2.2932e9
        assert p.achieved_tflops == pytest.approx(2.2932e9 * p.samples_per_sec / 1e12)
        assert p.mfu == pytest.approx(p.achieved_tflops / 989.4, rel=1e-6)
        assert p.diagnosis is not None


@pytest.mark.slow
def test_a_real_cpu_sweep_counts_flops_but_claims_no_mfu(tmp_path):
    from bench.jobs.sweep import run_sweep
    from bench.results.schema import MeasureSettings, Workload

    res = run_sweep(
        Workload(model="tests.tiny_models:tiny_cnn", image_size=8, device="cpu"), [2],
        MeasureSettings(warmup_steps=1, min_steps=3, max_time_seconds=0.2, min_time_seconds=0, isolate=False),
        out_path=tmp_path / "r.json",
    )  # fmt: skip
    (p,) = res.points
    assert p.flops_per_sample and p.flops_per_sample > 0 and p.achieved_tflops > 0
    assert p.mfu is None  # no dense peak for a CPU in the table: never a made-up figure


def test_peaks_of_h200_nvl_gb200_and_mig_slices():
    assert flops.peak_tflops("NVIDIA H200 NVL", "bf16") == pytest.approx(835.5)  # not the SXM's 989
    assert flops.peak_tflops("NVIDIA GB200", "bf16") == pytest.approx(2500.0)  # not B200's 2,250
    assert flops.peak_tflops("NVIDIA GB200", "fp32") is None  # no datasheet figure: no guess
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "bf16") == pytest.approx(989.4 * 3 / 7)
    assert flops.peak_tflops("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "tf32") == pytest.approx(156.0 / 7)
    assert "3/7 of the whole GPU" in flops.peak_notice("NVIDIA H100 80GB HBM3 MIG 3g.40gb", "bf16")
    assert flops.peak_notice("NVIDIA H100 80GB HBM3", "bf16") is None


def _fixture_run():
    from bench.results.codec import load_result

    return load_result(str(Path(__file__).parent / "data" / "h100_sweep_efficientnet_b0_bf16_cl_b16-64.json"))


def test_mfu_is_per_gpu_under_ddp():
    """H100 fixture, batch 64: 1,312 samples/s is MFU 0.0030 on one GPU. Eight equal ranks give
    8 x 1,312 global samples/s: still 0.0030 per GPU, not 0.0243."""
    from dataclasses import replace as dc_replace

    from bench.jobs.sweep import with_analysis
    from bench.results.schema import Distributed, PointDistributed

    run = _fixture_run()
    one = {p.batch_size: p.mfu for p in with_analysis(run, 2.29e9).points}
    assert one[64] == pytest.approx(0.0030, abs=5e-5)
    eight = dc_replace(
        run,
        distributed=Distributed(world_size=8, backend="nccl"),
        points=tuple(
            dc_replace(p, samples_per_sec=8 * p.samples_per_sec,
                       distributed=PointDistributed(world_size=8, global_samples_per_sec=8 * p.samples_per_sec))
            for p in run.points
        ),
    )  # fmt: skip
    done = {p.batch_size: p for p in with_analysis(eight, 2.29e9).points}
    assert done[64].mfu == pytest.approx(one[64], rel=1e-9)
    assert done[64].achieved_tflops == pytest.approx(8 * 2.29e9 * 1312.036 / 1e12, rel=1e-5)  # global


def test_mfu_uses_the_gpu_in_use_not_the_first():
    from dataclasses import replace as dc_replace

    from bench.jobs.sweep import with_analysis
    from bench.results.schema import GpuInfo

    run = _fixture_run()
    gpus = (GpuInfo(index=0, name="NVIDIA A100-SXM4-80GB"), GpuInfo(index=1, name="NVIDIA H100 80GB HBM3"))
    on_1 = dc_replace(
        run, environment=dc_replace(run.environment, gpus=gpus, gpu_count=2),
        workload=dc_replace(run.workload, device="cuda:1"),
    )  # fmt: skip
    p = {q.batch_size: q for q in with_analysis(on_1, 2.29e9).points}[64]
    assert p.mfu == pytest.approx(p.achieved_tflops / 989.4)  # the H100's peak, not the A100's 312
