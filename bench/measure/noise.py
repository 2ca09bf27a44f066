"""Gradient norms at fixed weights, for the noise-scale estimator (``bench.analysis.noise_scale``).

A draw takes ``big`` distinct examples at random (without replacement, as an epoch's shuffled
batches are), splits them into micro-batches of ``small`` and runs one forward and backward per
micro-batch: |g_small|² of each micro-batch and |g_big|² of their mean come from the same
backward passes. The optimizer never steps while measuring, and the model's buffers (BatchNorm
running statistics) are put back afterwards: the weights measured are the weights given.

Under torchrun (``rank_draw``) the small gradient is this rank's own, read in a DDP comm hook
before the all-reduce, and the big one is the all-reduced gradient DDP leaves in ``.grad``: no
backward pass beyond the one training would do.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bench.measure.models import ModelSpec, _first_output
from bench.results.errors import BenchError, first_line
from bench.results.noise import NoiseDraw


def load_dataset(spec: str) -> Any:
    """``package.module:factory`` -> the map-style data set of (input, target) it returns."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise BenchError(f"--dataset {spec!r} must look like package.module:factory")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BenchError(f"--dataset: cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise BenchError(f"--dataset: module {module_name!r} has no callable {attr!r}")
    dataset = factory()
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise BenchError(
            f"--dataset {spec}: returned {type(dataset).__name__}, not a map-style data set (__len__, __getitem__)"
        )
    return dataset


def loss_function(spec: ModelSpec) -> Callable[[Any, Any], Any]:
    """The model's own loss (``bench_loss``) or cross-entropy, both a mean over the batch."""
    if spec.loss is not None:
        return spec.loss
    import torch

    return lambda out, y: torch.nn.functional.cross_entropy(_first_output(out), y)


class GradientSource:
    """Mean-loss gradients of ``model`` over chosen examples of ``dataset``, flattened."""

    def __init__(self, model: Any, loss: Callable[[Any, Any], Any], dataset: Any, device: str) -> None:
        self.model = model
        self.loss = loss
        self.dataset = dataset
        self.device = device
        self.params = [p for p in model.parameters() if p.requires_grad]

    def batch(self, indices: Sequence[int]) -> tuple[Any, Any]:
        from torch.utils.data import default_collate

        x, y = default_collate([self.dataset[int(i)] for i in indices])
        return x.to(self.device), y.to(self.device)

    def backward(self, indices: Sequence[int]) -> Any:
        """Zero the gradients, then one forward and backward of the mean loss over ``indices``."""
        self.model.zero_grad(set_to_none=True)
        x, y = self.batch(indices)
        loss = self.loss(self.model(x), y)
        loss.backward()
        return loss

    def flat_grad(self) -> Any:
        import torch

        return torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params]
        )

    def draw(self, micro_batches: Sequence[Sequence[int]]) -> NoiseDraw:
        """One draw: |g|² per micro-batch (their mean) and |mean of the g|² (equal-sized micro-batches)."""
        total = None
        small = []
        for indices in micro_batches:
            self.backward(indices)
            g = self.flat_grad().double()
            small.append(float(g.dot(g)))
            total = g if total is None else total.add_(g)
        big = total / len(micro_batches)  # type: ignore[operator]
        self.model.zero_grad(set_to_none=True)
        return NoiseDraw(small_sq_norm=sum(small) / len(small), big_sq_norm=float(big.dot(big)))


def draw_indices(population: int, small: int, big: int, generator: Any) -> list[list[int]]:
    """``big`` distinct indices out of ``population``, split into micro-batches of ``small``."""
    import torch

    chosen = torch.randperm(population, generator=generator)[:big].tolist()
    return [chosen[i : i + small] for i in range(0, big, small)]


@contextmanager
def frozen_buffers(model: Any) -> Iterator[None]:
    """Train mode (as training computes gradients), with the buffers restored afterwards."""
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        import torch

        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in saved:
                    v.copy_(saved[k])
        model.train(was_training)


def check_fits(source: GradientSource, size: int) -> None:
    """The data set's first examples through the model and loss: one ``error:`` line when the data
    set yields the wrong types or shapes, or the model cannot take them."""
    import torch

    n = len(source.dataset)
    if n == 0:
        raise BenchError("the data set is empty")
    item = source.dataset[0]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise BenchError(f"the data set yields {type(item).__name__}, not (input, target) pairs")
    x, y = item
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise BenchError(f"the data set's inputs must be float tensors, got {_describe(x)}")
    if not isinstance(y, (int, torch.Tensor)):
        raise BenchError(f"the data set's targets must be ints or tensors, got {_describe(y)}")
    try:
        with frozen_buffers(source.model):
            loss = source.backward(list(range(min(2, n, size))))
    except BenchError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise BenchError(
            f"the data set does not fit the model (inputs {tuple(x.shape)}, target {_describe(y)}): {first_line(exc)}"
        ) from None
    if loss.dim() != 0 or not torch.isfinite(loss):
        raise BenchError(f"the loss on the data set's first examples is {loss!r:.60}, not a finite scalar")
    source.model.zero_grad(set_to_none=True)


def _describe(v: Any) -> str:
    shape = getattr(v, "shape", None)
    return (
        f"{type(v).__name__} {tuple(shape)} {getattr(v, 'dtype', '')}".strip()
        if shape is not None
        else type(v).__name__
    )


def load_checkpoint(model: Any, path: str) -> None:
    """A state dict (or a dict holding one under ``state_dict``/``model``) into ``model``, strictly."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BenchError(f"--checkpoint {path}: no such file") from None
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not a checkpoint
        raise BenchError(f"--checkpoint {path}: not a torch state dict ({first_line(exc)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BenchError(f"--checkpoint {path}: holds {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BenchError(f"--checkpoint {path}: does not match the model ({first_line(exc)})") from None


def train_steps(source: GradientSource, steps: int, batch: int, lr: float, generator: Any) -> None:
    """``steps`` of SGD (momentum 0.9) on random batches: the weights of a later stage of training."""
    import torch

    if steps <= 0:
        return
    opt = torch.optim.SGD(source.params, lr=lr, momentum=0.9)
    n = len(source.dataset)
    source.model.train()
    for _ in range(steps):
        idx = torch.randperm(n, generator=generator)[: min(batch, n)].tolist()
        source.backward(idx)
        opt.step()
    source.model.zero_grad(set_to_none=True)


class LocalNormHook:
    """DDP comm-hook state: |bucket|² of this rank's gradient, summed over buckets before the all-reduce."""

    def __init__(self) -> None:
        self.sq_norm = 0.0
        self.process_group = None


def local_norm_allreduce_hook(state, bucket):  # noqa: ANN001 - DDP checks real annotations
    """The default averaging all-reduce, after adding this rank's bucket to |g_local|²."""
    import torch.distributed as dist

    tensor = bucket.buffer()
    state.sq_norm += float(tensor.double().pow(2).sum())
    tensor.div_(dist.get_world_size())
    fut = dist.all_reduce(tensor, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def rank_draw(source: GradientSource, hook: LocalNormHook, indices: Sequence[int]) -> NoiseDraw:
    """One draw under torchrun: ``source.model`` is in DDP with ``local_norm_allreduce_hook``.
    Small: this rank's |g_local|², averaged over the ranks; big: the all-reduced |g|²."""
    import torch
    import torch.distributed as dist

    hook.sq_norm = 0.0
    source.backward(indices)
    g = source.flat_grad().double()
    local = torch.tensor([hook.sq_norm], dtype=torch.float64, device=g.device)
    dist.all_reduce(local)
    source.model.zero_grad(set_to_none=True)
    return NoiseDraw(small_sq_norm=float(local) / dist.get_world_size(), big_sq_norm=float(g.dot(g)))


def exact_gradient_stats(
    model: Any, loss: Callable[[Any, Any], Any], dataset: Any, chunk: int = 256
) -> tuple[float, float]:
    """(|G|², tr(Σ)) over the whole data set from per-example gradients (``torch.func`` vmap of
    grad): G the mean gradient, Σ the per-example covariance with N − 1 in the denominator, the
    convention the estimator's finite-population correction uses. The reference the estimate is
    checked against; it needs a model without batch statistics (no BatchNorm in train mode)."""
    import torch
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def one(p: dict[str, Any], x: Any, y: Any) -> Any:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return loss(out, y.unsqueeze(0))

    per_example = vmap(grad(one), in_dims=(None, 0, 0))
    n = len(dataset)
    total = sq_total = None
    for start in range(0, n, chunk):
        x, y = GradientSource(model, loss, dataset, "cpu").batch(range(start, min(start + chunk, n)))
        g = per_example(params, x.to(next(model.parameters()).device), y.to(next(model.parameters()).device))
        flat = torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], dim=1).double()
        s, sq = flat.sum(0), flat.pow(2).sum()
        total = s if total is None else total + s
        sq_total = sq if sq_total is None else sq_total + sq
    mean = total / n  # type: ignore[operator]
    g2 = float(mean.dot(mean))
    trace = (float(sq_total) - n * g2) / (n - 1)  # Σ|g_i − G|² = Σ|g_i|² − N|G|²
    return g2, trace
