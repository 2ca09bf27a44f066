"""One training or inference step for one batch size: model, synthetic batch, precision, layout.

``prepare`` returns a ``PreparedStep`` whose ``step()`` runs exactly what a training loop runs:
forward, loss, backward, optimizer step, ``zero_grad(set_to_none=True)`` (train) or a forward under
``inference_mode`` (infer). The batch lives on the device unless ``h2d`` is set, in which case every
step pays a pinned host->device copy, as a real input pipeline does.

``annotate(name)`` returns a context manager wrapped around each phase (data, forward, backward,
optimizer); tracing plugs NVTX / profiler ranges in there. The default costs one no-op call.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from bench.hw.device import Device
from bench.measure.attempt import release_memory
from bench.measure.data import open_feed
from bench.measure.models import ModelSpec, _first_output
from bench.results.errors import BenchError, first_line, is_oom
from bench.results.schema import Workload

Annotate = Callable[[str], AbstractContextManager[Any]]


def _no_annotation(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


_num_classes_cache: dict[tuple[str, tuple[int, ...]], int] = {}


@contextlib.contextmanager
def precision_mode(
    precision: str, device_kind: str, cudnn_benchmark: bool = True, benchmark_limit: int | None = None
) -> Iterator[None]:
    """Set the float32 math mode the precision asks for, and restore it afterwards.

    fp32 means strict IEEE fp32 (TF32 off for matmul and cuDNN, although PyTorch enables TF32 for
    cuDNN convolutions by default); tf32 turns both on; bf16/fp16 use autocast and leave these at
    PyTorch's defaults. cuDNN autotuning (``cudnn_benchmark``) is on for CUDA by default, as in
    real training: the first step of every new shape pays for it (``Timing.first_step_seconds``),
    the warm-up keeps it out of the measured window, and its cache lives as long as the process,
    so an in-process sweep never autotunes a shape twice. ``benchmark_limit``: the most cuDNN
    algorithms autotuning tries per shape (``torch.backends.cudnn.benchmark_limit``; torch's default
    10, 0 = all); None leaves torch's setting.
    """
    import torch

    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.benchmark_limit,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch nags about the TF32 flag API
        if precision == "fp32":
            torch.set_float32_matmul_precision("highest")
            torch.backends.cudnn.allow_tf32 = False
        elif precision == "tf32":
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.allow_tf32 = True
        if device_kind == "cuda":
            torch.backends.cudnn.benchmark = cudnn_benchmark
            if benchmark_limit is not None:
                torch.backends.cudnn.benchmark_limit = benchmark_limit
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.set_float32_matmul_precision(saved[0])
            torch.backends.cudnn.allow_tf32 = saved[1]
            torch.backends.cudnn.benchmark = saved[2]
            torch.backends.cudnn.benchmark_limit = saved[3]


def _autocast(torch: Any, precision: str, device_kind: str) -> AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device_kind, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type=device_kind, dtype=torch.float16)
    return nullcontext()


@dataclass
class PreparedStep:
    """A ready-to-run step. Holds every reference so ``release`` can drop them all."""

    step: Callable[[], None]
    batch_size: int
    refs: dict[str, Any] = field(default_factory=dict)

    def release(self, device: Device | None = None) -> str | None:
        """Drop model, optimizer, grads and batch; collect; return cached device memory
        (``attempt.release_memory``: after a sticky CUDA error its failure is returned, not raised)."""
        self.refs.clear()
        self.step = _released
        return release_memory(device)


def _released() -> None:
    raise RuntimeError("step used after release()")


def _classes_from_output(out: Any) -> int:
    return int(_first_output(out).shape[-1])


def _num_classes(torch: Any, model: Any, spec: ModelSpec, x: Any) -> int:
    """How many classes the model predicts, for the synthetic labels, without a device forward.

    Counted once per (model, input shape): first on the meta device (a meta copy of the model and a
    meta input: no memory, no kernels, no cuDNN autotuning of a batch-1 shape that training never
    runs), else one sample through the model itself, wherever it lives.
    """
    key = (spec.name, tuple(x.shape[1:]))
    if key in _num_classes_cache:
        return _num_classes_cache[key]
    classes: int | None = None
    try:
        with torch.device("meta"):
            meta_model = spec.build()
        meta_model.eval()
        with torch.no_grad():
            classes = _classes_from_output(meta_model(torch.empty((1, *x.shape[1:]), device="meta")))
        del meta_model
    except Exception:  # a factory or an op without meta support: count on a real sample
        classes = None
    if classes is None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                classes = _classes_from_output(model(x[:1]))
        except Exception as exc:
            if is_oom(exc):
                raise
            shape = "x".join(str(s) for s in x.shape[1:])
            raise BenchError(
                f"model {spec.name} failed on a {shape} input ({first_line(exc)}); "
                "check --image-size (some models need 224)"
            ) from None
        finally:
            model.train(was_training)
    _num_classes_cache[key] = classes
    return classes


MODEL_REUSE_MAX_BYTES = 4 * 2**30  # above this, the host copy of the weights costs too much RAM


class ModelCache:
    """The model of an in-process sweep, built once and reused at every batch size.

    A fresh model per point cost seconds on the H100 (build, move to the device, and with
    torch.compile far more). Before each reuse the weights and buffers go back to their state as
    built (from a host copy, so device memory is what a fresh build holds), gradients are dropped,
    and ``prepare`` builds a fresh optimizer: no optimizer state, gradient or BatchNorm statistic
    carries from one batch size to the next. Models above ``MODEL_REUSE_MAX_BYTES`` are rebuilt.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._model: Any = None
        self._initial: dict[str, Any] | None = None
        self.builds = 0  # how many times a model was built (tests, time accounting)

    def get(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        import torch

        if self._key == key and self._model is not None:
            with torch.no_grad():
                self._model.load_state_dict(self._initial)
            self._model.zero_grad(set_to_none=True)
            return self._model
        self.clear()
        model = build()
        self.builds += 1
        state = model.state_dict()
        size = sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "numel"))
        if size <= MODEL_REUSE_MAX_BYTES:
            self._key, self._model = key, model
            self._initial = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        return model

    def clear(self) -> None:
        self._key = self._model = self._initial = None


def make_optimizer(torch: Any, name: str, params: Any) -> Any:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3)
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def prepare(
    workload: Workload,
    spec: ModelSpec,
    batch_size: int,
    device: Device,
    annotate: Annotate | None = None,
    wrap: Callable[[Any], Any] | None = None,
    model_cache: ModelCache | None = None,
) -> PreparedStep:
    """Build a model (or reuse ``model_cache``'s, reset to its state as built), a fresh optimizer
    and a synthetic batch (random values, never zeros) on the device.

    A fresh optimizer per batch size keeps peak-memory readings honest (no optimizer state carried
    over); torch.compile's caches are reset per batch size (no recompile limit across many sizes).
    ``wrap(model)`` returns what the training step calls instead of the model (DDP in a
    data-parallel run: its gradient buckets are allocated and its all-reduce runs every step).
    """
    import torch

    annotate = annotate or _no_annotation
    tdev = torch.device(device.torch_device)
    torch.manual_seed(0)
    if workload.compile:
        torch._dynamo.reset()

    def build() -> Any:
        built = spec.build().to(tdev)
        if workload.channels_last:
            built = built.to(memory_format=torch.channels_last)
        return built

    if model_cache is not None:
        model = model_cache.get((spec.name, str(tdev), workload.channels_last), build)
    else:
        model = build()
    train = workload.mode == "train"
    model.train(train)

    loader = workload.data == "loader"
    if loader and spec.make_batch is not None:
        raise BenchError(f"--data loader feeds images; model {spec.name} makes its own batches")
    if spec.make_batch is not None:
        kwargs = {}
        if workload.seq_len is not None:
            if "seq_len" not in inspect.signature(spec.make_batch).parameters:
                raise BenchError(f"model {spec.name} does not take a sequence length (seq_len)")
            kwargs["seq_len"] = workload.seq_len
        x, y = spec.make_batch(batch_size, tdev, **kwargs)
    elif loader:  # every step's batch comes from the loader: no synthetic one stays referenced
        shape = spec.input_shape or (3, workload.image_size, workload.image_size)
        classes = _num_classes(torch, model, spec, torch.randn((1, *shape), device=tdev))
        x = y = None
    else:
        shape = spec.input_shape or (3, workload.image_size, workload.image_size)
        x = torch.randn((batch_size, *shape), device=tdev)
        classes = _num_classes(torch, model, spec, x)
        y = torch.randint(0, classes, (batch_size,), device=tdev)
    if workload.channels_last and getattr(x, "dim", lambda: 0)() == 4:
        x = x.contiguous(memory_format=torch.channels_last)

    host_x = host_y = None
    if workload.h2d and device.kind == "cuda" and x is not None:
        host_x = x.detach().cpu().pin_memory()
        host_y = y.detach().cpu().pin_memory() if hasattr(y, "cpu") else None

    loss_fn = spec.loss or (lambda out, tgt: torch.nn.functional.cross_entropy(_first_output(out), tgt))
    net = wrap(model) if wrap is not None and train else model  # inference has no gradients to sync
    net = torch.compile(net, mode=workload.compile_mode) if workload.compile else net
    # CUDA graphs (reduce-overhead) replay into the same output buffers: each training step says
    # where a new iteration begins, so the previous step's outputs may be overwritten
    graphs = workload.compile and workload.compile_mode == "reduce-overhead" and device.kind == "cuda"
    mark_step = (
        getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None) if graphs else None
    )

    def autocast() -> AbstractContextManager[Any]:  # a fresh context per step
        return _autocast(torch, workload.precision, device.kind)

    refs: dict[str, Any] = {"model": model, "net": net, "x": x, "y": y}
    feed = None
    if loader:
        feed = open_feed(
            batch_size=batch_size,
            image_size=workload.image_size,
            num_classes=classes,
            workers=workload.workers,
            device=device.torch_device,
            data_dir=workload.data_dir,
            channels_last=workload.channels_last,
        )
        refs["feed"] = feed

    def copy_in() -> None:
        nonlocal x, y
        if feed is not None:  # the step waits for the loader's next batch: part of the step's time
            with annotate("data"):
                x, y = feed.next()
        elif host_x is not None:
            with annotate("data"):
                x.copy_(host_x, non_blocking=True)
                if host_y is not None:
                    y.copy_(host_y, non_blocking=True)

    if train:
        opt = make_optimizer(torch, workload.optimizer, model.parameters())
        scaler = torch.amp.GradScaler(device.kind) if workload.precision == "fp16" else None
        refs.update(opt=opt, scaler=scaler)

        def step() -> None:
            copy_in()
            if mark_step is not None:
                mark_step()
            with annotate("forward"):
                with autocast():
                    loss = loss_fn(net(x), y)
            with annotate("backward"):
                (scaler.scale(loss) if scaler is not None else loss).backward()
            with annotate("optimizer"):
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)

    else:
        model.eval()

        def step() -> None:
            copy_in()
            if mark_step is not None:
                mark_step()
            with annotate("forward"):
                with torch.inference_mode(), autocast():
                    net(x)

    if host_x is not None:
        refs.update(host_x=host_x, host_y=host_y)
    return PreparedStep(step=step, batch_size=batch_size, refs=refs)
