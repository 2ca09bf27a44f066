"""pytest plugin (registered as the ``pytest11`` entry point ``bench``): benchmark a model step
inside your own test suite, on top of pytest-benchmark.

    def test_resnet18_train_step(bench_model):
        result = bench_model("resnet18", batch_size=8, image_size=64)
        assert result.samples_per_sec > 0

``bench_model`` builds the model, optimizer and a random batch (never zeros) on the device exactly
as ``bench sweep`` does, runs the warm-up steps outside the timing (compilation, cuDNN autotuning,
allocator growth), then hands one step to pytest-benchmark's ``pedantic`` mode: each round is one
step followed by a device synchronise, so on a GPU the round time is the step's real duration and
not its launch time. samples/sec (from the median round), the workload and the device go into
``extra_info``, so ``--benchmark-save``, ``--benchmark-json``, ``--benchmark-compare`` and
``--benchmark-compare-fail=median:5%`` work on it unchanged.

Nothing heavy is imported until the fixture is used: this module loads in every pytest run of an
environment where bench is installed.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class StepBenchmark:
    """What ``bench_model`` measured. ``None`` timings when pytest-benchmark is disabled."""

    model: str
    batch_size: int
    mode: str
    precision: str
    device: str
    median_seconds: float | None  # of one device-synchronised step
    samples_per_sec: float | None  # batch_size / median_seconds

    def extra_info(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "median_seconds"} | {
            "step_median_seconds": self.median_seconds
        }


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("bench", "bench: model-step benchmarks (bench_model fixture)")
    group.addoption(
        "--bench-device",
        default=None,
        help="device for bench_model: cpu, cuda or cuda:N (default: cuda when available, else cpu)",
    )


class ModelStepRunner:
    """The callable behind the ``bench_model`` fixture; one benchmark per test, as pytest-benchmark
    requires."""

    def __init__(self, benchmark: Any, device: str | None) -> None:
        self._benchmark = benchmark
        self._device_default = device
        self._prepared: Any = None
        self._device: Any = None

    def __call__(
        self,
        model: Any,
        *,
        batch_size: int,
        mode: str = "train",
        precision: str = "fp32",
        image_size: int = 224,
        channels_last: bool = False,
        compile: bool = False,
        optimizer: str = "sgd",
        seq_len: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        device: str | None = None,
        warmup: int = 5,
        rounds: int = 30,
    ) -> StepBenchmark:
        """Benchmark one step of ``model``: a name as in ``bench sweep`` (torchvision, ``timm:NAME``,
        ``pkg.module:factory``) or an ``nn.Module`` (a copy is measured; yours is not touched).
        ``input_shape``: the per-sample input of an ``nn.Module`` that is not a 3xSxS image classifier
        (a float tensor; labels come from the output's last dimension)."""
        from bench.errors import BenchError
        from bench.hw.device import check_device, default_device, open_device
        from bench.models import ModelSpec, resolve
        from bench.schema import Workload
        from bench.workload import precision_mode, prepare

        if not isinstance(batch_size, int) or batch_size <= 0:
            raise BenchError(f"batch_size must be a positive integer, got {batch_size!r}")
        if warmup < 0 or rounds < 1:
            raise BenchError("warmup must be >= 0 and rounds >= 1")
        dev = device or self._device_default or default_device()
        if isinstance(model, str):
            spec = resolve(model)
            name = model
        else:
            name = type(model).__name__
            frozen = copy.deepcopy(model).cpu()
            unique = f"module:{name}#{uuid.uuid4().hex[:8]}"  # prepare() caches per-name facts
            spec = ModelSpec(
                name=unique,
                source="module",
                build=lambda: copy.deepcopy(frozen),
                input_shape=tuple(input_shape) if input_shape else None,
            )
        workload = Workload(
            model=spec.name, mode=mode, precision=precision, channels_last=channels_last, compile=compile,
            image_size=image_size, device=dev, optimizer=optimizer, seq_len=seq_len,
        )  # fmt: skip
        check_device(dev)
        self._device = open_device(dev)
        with precision_mode(precision, self._device.kind):
            self._prepared = prepare(workload, spec, batch_size, self._device)
            step, sync = self._prepared.step, self._device.synchronize
            for _ in range(warmup):
                step()
            sync()

            def one_step() -> None:
                step()
                sync()

            self._benchmark.pedantic(one_step, rounds=rounds, iterations=1, warmup_rounds=0)
        median = _median_seconds(self._benchmark)
        result = StepBenchmark(
            model=name, batch_size=batch_size, mode=mode, precision=precision, device=dev,
            median_seconds=median, samples_per_sec=batch_size / median if median else None,
        )  # fmt: skip
        self._benchmark.extra_info.update(result.extra_info())
        if self._device.kind == "cuda":
            import torch

            self._benchmark.extra_info["device_name"] = torch.cuda.get_device_name(self._device.index)
        return result

    def release(self) -> None:
        if self._prepared is not None:
            self._prepared.release(self._device)
            self._prepared = None


def _median_seconds(benchmark: Any) -> float | None:
    """The median round time pytest-benchmark recorded; None when benchmarks are disabled."""
    stats = getattr(benchmark, "stats", None)
    inner = getattr(stats, "stats", None)
    median = getattr(inner, "median", None)
    return float(median) if median else None


@pytest.fixture
def bench_model(benchmark: Any, request: Any) -> Any:
    """Benchmark one training (or inference) step of a model; see ``bench.plugin``."""
    runner = ModelStepRunner(benchmark, request.config.getoption("--bench-device", default=None))
    yield runner
    runner.release()
