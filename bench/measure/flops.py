"""FLOPs per sample, the device's dense peak FLOP/s, and model FLOP utilisation (MFU).

FLOPs are counted once per workload with ``torch.utils.flop_counter.FlopCounterMode`` on a batch of
two (on the meta device when the model allows it, else a tiny CPU batch): forward + loss + backward
for training, forward for inference. FlopCounterMode counts matmuls, convolutions and attention —
the operations a GPU's tensor-core peak refers to — and not elementwise work, normalisation or the
optimizer, which is the usual definition behind MFU (PaLM, Lightning's ``ThroughputMonitor``).

The peak table holds NVIDIA's *dense* figures (datasheets quote tensor-core numbers "with sparsity",
twice the dense rate; those are halved here). A GPU not in the table, and every CPU, has no peak:
``mfu`` is then ``None`` and not a guess. A MIG slice ("... MIG 3g.40gb") gets its share of the
whole GPU's peak: g of the 7 compute slices (approximate: a slice's share of the SMs differs by a
few percent; ``peak_notice`` says so). MFU is per GPU: under DDP the global FLOP/s are divided by
the world size times one GPU's peak.

Importing this module does not import torch; only ``count_flops_per_sample`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bench.measure.models import _first_output
from bench.results.errors import BenchError

# Dense peak TFLOP/s by precision. "fp32" is the non-tensor FP32 rate (bench's fp32 turns TF32 off);
# "tf32"/"bf16"/"fp16" are tensor-core rates with FP32 accumulate. None: the GPU has no such unit.
# Sources: NVIDIA datasheets (sparse tensor figures / 2), as also tabulated in Lightning's
# lightning/fabric/utilities/throughput.py.
PEAK_TFLOPS: dict[str, dict[str, float | None]] = {
    # H100 SXM5 datasheet: FP32 67, TF32 989 (sparse), BF16/FP16 1,979 (sparse).
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    # H100 PCIe datasheet: FP32 51, TF32 756 (sparse), BF16/FP16 1,513 (sparse).
    "H100 PCIe": {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0},
    # H100 NVL datasheet: FP32 60, TF32 835 (sparse), BF16/FP16 1,671 (sparse).
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    # H200 SXM datasheet: same compute as H100 SXM (FP32 67, TF32 989 / BF16 1,979 sparse).
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    # H200 NVL (same datasheet): FP32 60, TF32 835 (sparse), BF16/FP16 1,671 (sparse).
    "H200 NVL": {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5},
    # GH200 Grace Hopper datasheet: the H100 SXM's compute (FP32 67, TF32 989 / BF16 1,979 sparse).
    "GH200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
    # GB200 NVL72 datasheet, per Grace Blackwell superchip (two GPUs): TF32 5 PF, BF16/FP16 10 PF
    # (sparse) -> per GPU 1,250 / 2,500 dense; it gives no non-tensor FP32 rate (None: no guess).
    "GB200": {"fp32": None, "tf32": 1250.0, "bf16": 2500.0, "fp16": 2500.0},
    # HGX B200 datasheet, per GPU: FP32 75, TF32 2.2 PF (sparse), BF16/FP16 4.5 PF (sparse).
    "B200": {"fp32": 75.0, "tf32": 1100.0, "bf16": 2250.0, "fp16": 2250.0},
    # A100 datasheet (40 GB and 80 GB, SXM and PCIe alike): FP32 19.5, TF32 156, BF16/FP16 312 (dense).
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
    # A10 datasheet: FP32 31.2, TF32 62.5, BF16/FP16 125 (dense).
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
    # L4 datasheet: FP32 30.3, TF32 120 (sparse), BF16/FP16 242 (sparse).
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
    # L40S datasheet: FP32 91.6, TF32 366 (sparse), BF16/FP16 733 (sparse).
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05},
    # L40 datasheet: FP32 90.5, TF32 181 (sparse), BF16/FP16 362 (sparse).
    "L40": {"fp32": 90.5, "tf32": 90.5, "bf16": 181.0, "fp16": 181.0},
    # Ada whitepaper, RTX 4090: FP32 82.6; tensor FP16/BF16 with FP32 accumulate 165.2, TF32 82.6 (dense).
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2},
    # Blackwell RTX whitepaper, RTX 5090: FP32 104.8; FP16/BF16 (FP32 accumulate) 209.5, TF32 104.8 (dense).
    "RTX 5090": {"fp32": 104.8, "tf32": 104.8, "bf16": 209.5, "fp16": 209.5},
    # V100 SXM2 datasheet: FP32 15.7, tensor FP16 125; no TF32 (runs as FP32), no BF16 tensor cores.
    "V100 SXM": {"fp32": 15.7, "tf32": 15.7, "bf16": None, "fp16": 125.0},
    # V100 PCIe datasheet: FP32 14, tensor FP16 112.
    "V100 PCIe": {"fp32": 14.0, "tf32": 14.0, "bf16": None, "fp16": 112.0},
    # T4 datasheet: FP32 8.1, FP16 (mixed) 65; no TF32/BF16.
    "T4": {"fp32": 8.1, "tf32": 8.1, "bf16": None, "fp16": 65.0},
}

# NVML / torch device names -> table key, first match wins (order matters: "L40S" before "L40",
# "A100" before "A10"). Examples: "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB",
# "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB", "Tesla T4".
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"H100.*PCIE", "H100 PCIe"),
    (r"H100.*NVL", "H100 NVL"),
    (r"H100", "H100 SXM"),
    (r"GH200", "GH200"),
    (r"H200.*NVL", "H200 NVL"),
    (r"H200", "H200"),
    (r"GB200", "GB200"),
    (r"B200", "B200"),
    (r"A100", "A100"),
    (r"\bA10\b", "A10"),
    (r"\bL40S\b", "L40S"),
    (r"\bL40\b", "L40"),
    (r"\bL4\b", "L4"),
    (r"RTX 4090", "RTX 4090"),
    (r"RTX 5090", "RTX 5090"),
    (r"V100.*PCIE", "V100 PCIe"),
    (r"V100", "V100 SXM"),
    (r"\bT4\b", "T4"),
)


def gpu_key(device_name: str | None) -> str | None:
    """The peak table's key for an NVML/torch device name, or None when the GPU is not known."""
    if not device_name:
        return None
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return key
    return None


MIG_COMPUTE_SLICES = 7  # A100, H100, H200, B200: a MIG slice "Ng.xxgb" has N of 7 compute slices
_MIG = re.compile(r"\bMIG\s+(\d)g\.(\w+)", re.IGNORECASE)


def mig_slices(device_name: str | None) -> int | None:
    """The compute slices of a MIG device name ("NVIDIA H100 80GB HBM3 MIG 3g.40gb" -> 3), or None."""
    match = _MIG.search(device_name or "")
    return int(match.group(1)) if match else None


def peak_tflops(device_name: str | None, precision: str) -> float | None:
    """Dense peak TFLOP/s of a GPU (or of a MIG slice: its share) at bench's precision ("fp32" |
    "tf32" | "bf16" | "fp16"), or None."""
    key = gpu_key(device_name)
    if key is None:
        return None
    peak = PEAK_TFLOPS[key].get(precision)
    slices = mig_slices(device_name)
    if peak is None or slices is None:
        return peak
    return peak * min(slices, MIG_COMPUTE_SLICES) / MIG_COMPUTE_SLICES


def peak_notice(device_name: str | None, precision: str) -> str | None:
    """What a result should say about the peak its MFU divides by, when that is an approximation."""
    slices = mig_slices(device_name)
    if slices is None or peak_tflops(device_name, precision) is None:
        return None
    return (
        f"MFU on a MIG slice ({device_name}): the peak is {slices}/{MIG_COMPUTE_SLICES} of the whole GPU's, "
        "its share of compute slices (approximate: the slice's share of the SMs differs by a few percent)"
    )


def achieved_tflops(flops_per_sample: float | None, samples_per_sec: float | None) -> float | None:
    """Model FLOPs actually done per second, in TFLOP/s (10^12 FLOP/s)."""
    if not flops_per_sample or not samples_per_sec:
        return None
    return flops_per_sample * samples_per_sec / 1e12


def mfu(achieved: float | None, peak: float | None) -> float | None:
    """Model FLOP utilisation as a fraction (0.01 = 1%) of the dense peak; None without a peak."""
    if achieved is None or not peak:
        return None
    return achieved / peak


@dataclass(frozen=True)
class FlopFigures:
    """What a point records about FLOPs. All None when they could not be counted."""

    flops_per_sample: float | None = None  # model FLOPs per sample (train: fwd + bwd)
    achieved_tflops: float | None = None
    mfu: float | None = None  # fraction of the dense peak; None when the peak is unknown


def figures(
    flops_per_sample: float | None,
    samples_per_sec: float | None,
    device_name: str | None,
    precision: str,
    world_size: int = 1,
) -> FlopFigures:
    """The FLOP figures of one point from its count, throughput and device.

    ``samples_per_sec`` is the point's rate: under DDP the global one of ``world_size`` GPUs like
    ``device_name``. ``achieved_tflops`` is then global too, and ``mfu`` per GPU: the global FLOP/s
    over ``world_size`` times one GPU's peak (equal ranks keep the one-GPU MFU)."""
    achieved = achieved_tflops(flops_per_sample, samples_per_sec)
    peak = peak_tflops(device_name, precision)
    return FlopFigures(flops_per_sample, achieved, mfu(achieved, peak * world_size if peak else None))


# --------------------------------------------------------------------------- counting (imports torch)

COUNT_BATCH = 2  # two samples: BatchNorm in training mode refuses a batch of one after pooling

_cache: dict[tuple[Any, ...], float | None] = {}


def _conv_backward_flop(
    grad_out_shape: Any,
    x_shape: Any,
    w_shape: Any,
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: Any,
    output_mask: Any,
    out_shape: Any,
    **kwargs: Any,
) -> int:
    """Each requested gradient (input, weight) of a convolution costs one forward convolution.

    torch's own formula multiplies a grouped (e.g. depthwise) convolution's backward by the group
    count: EfficientNet-b0's training FLOPs come out 14x too high with it (torch 2.14)."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _count(torch: Any, spec: Any, mode: str, image_size: int, seq_len: int | None, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    tdev = torch.device(device)
    torch.manual_seed(0)
    with tdev:
        model = spec.build()
    model = model.to(tdev)
    train = mode == "train"
    model.train(train)
    if spec.make_batch is not None:
        kwargs = {"seq_len": seq_len} if seq_len is not None else {}
        x, y = spec.make_batch(COUNT_BATCH, tdev, **kwargs)
    else:
        shape = spec.input_shape or (3, image_size, image_size)
        x = torch.randn((COUNT_BATCH, *shape), device=tdev)
        y = None
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flop}
    )
    with counter:
        if train:
            out = model(x)
            if spec.loss is not None:
                loss = spec.loss(out, y)
            else:
                logits = _first_output(out)
                if y is None:
                    y = torch.zeros(logits.shape[0], dtype=torch.long, device=tdev)
                loss = torch.nn.functional.cross_entropy(logits, y)
            loss.backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops() / COUNT_BATCH


def count_flops_per_sample(
    spec: Any, mode: str, image_size: int = 224, seq_len: int | None = None
) -> float | None:
    """Model FLOPs per sample of one step (train: forward + backward; infer: forward), cached per
    workload shape. Tries the meta device first (no memory, no arithmetic), then a CPU batch of two;
    None when neither works (the point then records no FLOP figures)."""
    key = (spec.name, mode, image_size if spec.input_shape is None else spec.input_shape, seq_len)
    if key in _cache:
        return _cache[key]
    import torch

    result: float | None = None
    for device in ("meta", "cpu"):
        try:
            result = _count(torch, spec, mode, image_size, seq_len, device)
            break
        except BenchError:  # the user's factory exited or hung: theirs to fix, said once, not twice
            raise
        except Exception:  # a model that cannot run on meta (data-dependent shapes) tries CPU
            continue
    _cache[key] = result
    return result
