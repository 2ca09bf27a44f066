"""pytest plugin (registered as the ``pytest11`` entry point ``bench``): benchmark a model step
inside your own test suite, on top of pytest-benchmark.

    def test_resnet18_train_step(bench_model):
        result = bench_model("resnet18", batch_size=8, image_size=64)
        assert result.samples_per_sec > 0

``bench_model`` builds the model, optimizer and a random batch (never zeros) on the device exactly
as ``bench sweep`` does, runs the warm-up steps outside the timing (compilation, cuDNN autotuning,
allocator growth), then hands the step to pytest-benchmark's ``pedantic`` mode. Each round is a
chunk of ``steps_per_round`` steps with one device synchronise at its end (as a sweep times its
window): a synchronise after every step would drain the GPU's queue each time and measure launch
gaps a training loop never has. pytest-benchmark divides the round by its steps, so its statistics
are per step; samples/sec (from the median round), the workload and the device go into
``extra_info``, so ``--benchmark-save``, ``--benchmark-json``, ``--benchmark-compare`` and
``--benchmark-compare-fail=median:5%`` work on it unchanged.

``repeat=N`` measures N independent blocks of rounds, each with a fresh model, optimizer and batch,
and stores each block's samples/sec in ``extra_info["repeat_samples_per_sec"]``: the between-run
noise that ``bench compare`` gates on. With ``--bench-gate=SAVED.json`` (a pytest-benchmark JSON
saved with repeats) and ``--bench-threshold=10%``, the fixture fails a test whose throughput is a
``REGRESSION`` by that test (``bench.analysis.gate.gate_values``), and says so when it is INCONCLUSIVE.

Nothing heavy is imported until the fixture is used: this module loads in every pytest run of an
environment where bench is installed.
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
from dataclasses import dataclass
from typing import Any

import pytest

from bench.analysis.gate import INCONCLUSIVE, REGRESSION, gate_values, parse_threshold
from bench.hw.device import check_device, default_device, open_device
from bench.measure.models import resolve
from bench.measure.module_copy import module_spec
from bench.measure.step import precision_mode, prepare
from bench.results.errors import BenchError
from bench.results.schema import Workload


@dataclass(frozen=True)
class StepBenchmark:
    """What ``bench_model`` measured. ``None`` timings when pytest-benchmark is disabled."""

    model: str
    batch_size: int
    mode: str
    precision: str
    device: str
    median_seconds: float | None  # per step, median over rounds (a round: a synchronised chunk of steps)
    samples_per_sec: float | None  # batch_size / median_seconds
    repeat_samples_per_sec: tuple[float, ...] = ()  # one per independent repeat (repeat > 1)

    def extra_info(self) -> dict[str, Any]:
        return {
            k: v for k, v in self.__dict__.items() if k not in ("median_seconds", "repeat_samples_per_sec")
        } | {
            "step_median_seconds": self.median_seconds,
            "repeat_samples_per_sec": list(self.repeat_samples_per_sec),
        }


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("bench", "bench: model-step benchmarks (bench_model fixture)")
    group.addoption(
        "--bench-device",
        default=None,
        help="device for bench_model: cpu, cuda or cuda:N (default: cuda when available, else cpu)",
    )
    group.addoption(
        "--bench-gate",
        default=None,
        help="a pytest-benchmark JSON saved with bench_model(repeat=N): fail a test whose samples/sec "
        "regressed beyond --bench-threshold and beyond the noise between its repeats",
    )
    group.addoption("--bench-threshold", default="10%", help="threshold of --bench-gate (default 10%%)")


class ModelStepRunner:
    """The callable behind the ``bench_model`` fixture; one benchmark per test, as pytest-benchmark
    requires."""

    def __init__(
        self, benchmark: Any, device: str | None, gate: dict[str, Any] | None = None, threshold: str = "10%"
    ) -> None:
        self._benchmark = benchmark
        self._device_default = device
        self._gate = gate  # saved benchmark JSON, by --bench-gate
        self._threshold = threshold
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
        rounds: int = 10,
        steps_per_round: int = 5,
        repeat: int = 1,
    ) -> StepBenchmark:
        """Benchmark one step of ``model``: a name as in ``bench sweep`` (torchvision, ``timm:NAME``,
        ``pkg.module:factory``) or an ``nn.Module`` (a copy is measured; yours is not touched).
        ``input_shape``: the per-sample input of an ``nn.Module`` that is not a 3xSxS image classifier
        (a float tensor; labels come from the output's last dimension)."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise BenchError(f"batch_size must be a positive integer, got {batch_size!r}")
        if warmup < 0 or rounds < 1 or steps_per_round < 1 or repeat < 1:
            raise BenchError("warmup must be >= 0; rounds, steps_per_round and repeat >= 1")
        dev = device or self._device_default or default_device()
        if isinstance(model, str):
            spec = resolve(model)
            name = model
        else:
            name = type(model).__name__
            spec = module_spec(model, input_shape, label=f"module:{name}")  # a CPU copy, never on the device
        workload = Workload(
            model=spec.name, mode=mode, precision=precision, channels_last=channels_last, compile=compile,
            image_size=image_size, device=dev, optimizer=optimizer, seq_len=seq_len,
        )  # fmt: skip
        check_device(dev)
        self._device = open_device(dev)
        repeat_sps = []
        with precision_mode(precision, self._device.kind):
            for r in range(repeat):
                # Repeats before the last: a fresh model each, timed by hand the way the rounds are.
                # The last one is pytest-benchmark's, so its own statistics stay what they were.
                if self._prepared is not None:
                    self.release()
                self._prepared = prepare(workload, spec, batch_size, self._device)
                step, sync = self._prepared.step, self._device.synchronize
                for _ in range(warmup):
                    step()
                sync()
                if r < repeat - 1:
                    repeat_sps.append(
                        _timed_samples_per_sec(step, sync, batch_size, rounds * steps_per_round)
                    )
                    continue
                counter = itertools.count(1)

                def chunk_step(step: Any = step, sync: Any = sync, counter: Any = counter) -> None:
                    step()
                    if next(counter) % steps_per_round == 0:  # the round's last step: one synchronise
                        sync()

                self._benchmark.pedantic(
                    chunk_step, rounds=rounds, iterations=steps_per_round, warmup_rounds=0
                )
        median = _median_seconds(self._benchmark)
        sps = batch_size / median if median else None
        mean = _stat(self._benchmark, "mean")
        if repeat > 1 and mean:  # the whole block's steps over its time, as the other repeats
            repeat_sps.append(batch_size / mean)
        result = StepBenchmark(
            model=name, batch_size=batch_size, mode=mode, precision=precision, device=dev,
            median_seconds=median, samples_per_sec=sps,
            repeat_samples_per_sec=tuple(repeat_sps) if repeat > 1 else (),
        )  # fmt: skip
        self._benchmark.extra_info.update(result.extra_info())
        if self._gate is not None and sps:
            self._check_gate(result)
        if self._device.kind == "cuda":
            self._benchmark.extra_info["device_name"] = self._device.name()
        return result

    def _check_gate(self, result: StepBenchmark) -> None:
        """--bench-gate: this test's repeats against the saved run's, with bench compare's test."""
        name = getattr(self._benchmark, "name", None)
        saved = next((b for b in self._gate.get("benchmarks", []) if b.get("name") == name), None)
        if saved is None:
            return
        info = saved.get("extra_info") or {}
        base = info.get("repeat_samples_per_sec") or [info.get("samples_per_sec")]
        cur = list(result.repeat_samples_per_sec) or [result.samples_per_sec]
        v = gate_values([b for b in base if b], [c for c in cur if c], parse_threshold(self._threshold))
        line = f"{name}: samples/s {v.change:+.1%} vs --bench-gate ({len(base)} vs {len(cur)} repeats): {v.verdict}"
        if v.verdict == REGRESSION:
            pytest.fail(line, pytrace=False)
        if v.verdict == INCONCLUSIVE:
            more = f"; ~{v.repeats_needed} repeats would settle it" if v.repeats_needed else ""

            warnings.warn(f"{line}{more}", stacklevel=2)

    def release(self) -> None:
        if self._prepared is not None:
            self._prepared.release(self._device)
            self._prepared = None


def _timed_samples_per_sec(step: Any, sync: Any, batch_size: int, steps: int) -> float:
    """One repeat outside pytest-benchmark: ``steps`` steps between two synchronises, host clock."""
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch_size * steps / (time.perf_counter() - start)


def _median_seconds(benchmark: Any) -> float | None:
    """The median round time pytest-benchmark recorded; None when benchmarks are disabled."""
    return _stat(benchmark, "median")


def _stat(benchmark: Any, name: str) -> float | None:
    """One of pytest-benchmark's per-step statistics (seconds); None when benchmarks are disabled."""
    stats = getattr(benchmark, "stats", None)
    inner = getattr(stats, "stats", None)
    value = getattr(inner, name, None)
    return float(value) if value else None


@pytest.fixture
def bench_model(benchmark: Any, request: Any) -> Any:
    """Benchmark one training (or inference) step of a model; see ``bench.jobs.plugin``."""
    gate_path = request.config.getoption("--bench-gate", default=None)
    gate = None
    if gate_path:
        with open(gate_path, encoding="utf-8") as fh:
            gate = json.load(fh)
    runner = ModelStepRunner(
        benchmark,
        request.config.getoption("--bench-device", default=None),
        gate,
        request.config.getoption("--bench-threshold", default="10%"),
    )
    yield runner
    runner.release()
