"""Model name -> ModelSpec: how to build the module, make a batch, and compute a loss.

Three sources, all randomly initialised (nothing is downloaded):
- torchvision names: ``efficientnet_b0``, ``resnet50``, ... (``torchvision.models.list_models()``)
- ``timm:NAME`` when timm is installed
- a user's ``package.module:factory`` returning an ``nn.Module``. It is treated as an image
  classifier (input 3xSxS, labels from the output's last dimension) unless its module defines, next
  to the factory, any of:
    ``BENCH_INPUT_SHAPE = (C, H, W)``  per-sample input shape (float input, randn)
    ``def bench_make_batch(batch_size, device): return inputs, targets``
    ``def bench_loss(output, targets): return scalar_tensor``
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.results.errors import BenchError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # "torchvision" | "timm" | "factory"
    build: Callable[[], Any]  # () -> nn.Module, random init, on CPU
    input_shape: tuple[int, ...] | None = None  # per sample; None = (3, image_size, image_size)
    make_batch: Callable[[int, Any], tuple[Any, Any]] | None = None  # (batch, device) -> (x, y)
    loss: Callable[[Any, Any], Any] | None = None  # (output, targets) -> scalar

    @property
    def is_image_classifier(self) -> bool:
        return self.make_batch is None


def torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models())


def timm_models() -> list[str] | None:
    """All timm model names, or None when timm is not installed."""
    try:
        import timm
    except ImportError:
        return None
    return sorted(timm.list_models())


def _unknown(name: str, candidates: list[str], extra: str = "", listing: str = "bench models") -> BenchError:
    scored = []
    for cand in candidates:
        ratio = difflib.SequenceMatcher(None, name.lower(), cand.lower()).ratio()
        if ratio >= 0.6:
            scored.append((-ratio, cand))  # best first; ties alphabetical (b0 before b7)
    close = [cand for _, cand in sorted(scored)[:4]]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return BenchError(f"unknown model {name!r}{extra}{hint} (see `{listing}`)")


def _first_output(out: Any) -> Any:
    """Models like inception_v3/googlenet return a namedtuple in train mode; use the logits."""
    if isinstance(out, tuple):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out


def _torchvision_spec(name: str) -> ModelSpec:
    import torchvision

    def build() -> Any:
        return torchvision.models.get_model(name, weights=None)

    return ModelSpec(name=name, source="torchvision", build=build)


def _timm_spec(name: str) -> ModelSpec:
    try:
        import timm
    except ImportError:
        raise BenchError(
            f"model {name!r} needs timm, which is not installed: pip install 'bench[timm]'"
        ) from None
    short = name.split(":", 1)[1]
    if not short or not timm.is_model(short):
        raise _unknown(short, timm.list_models(), " in timm", listing="bench models --timm")

    def build() -> Any:
        return timm.create_model(short, pretrained=False)

    return ModelSpec(name=name, source="timm", build=build)


def _factory_spec(name: str) -> ModelSpec:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise BenchError(f"model factory {name!r} must look like package.module:function")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:  # `bench` as a console script: make the
        sys.path.insert(0, cwd)  # user's own modules in the working directory importable
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BenchError(f"cannot import module {module_name!r} for model factory ({exc})") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise BenchError(f"module {module_name!r} has no callable {attr!r}")
    shape = getattr(module, "BENCH_INPUT_SHAPE", None)
    if shape is not None:
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise BenchError(f"{module_name}.BENCH_INPUT_SHAPE must be a tuple of ints") from None

    def build() -> Any:
        import torch

        model = call_user_factory(factory, name)
        if not isinstance(model, torch.nn.Module):
            raise BenchError(f"{name} returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return ModelSpec(
        name=name,
        source="factory",
        build=build,
        input_shape=shape,
        make_batch=getattr(module, "bench_make_batch", None),
        loss=getattr(module, "bench_loss", None),
    )


# Built-in models torchvision does not have (``bench.measure.zoo``): the short name a user types,
# and the factory results record it under (so runs by either name compare).
ZOO = {"transformer_lm": "bench.measure.zoo:transformer_lm"}


def zoo_models() -> list[str]:
    """The names of bench's own models (``bench models`` lists them with torchvision's)."""
    return sorted(ZOO)


BUILD_TIMEOUT_ENV = "BENCH_BUILD_TIMEOUT"
DEFAULT_BUILD_TIMEOUT_SECONDS = 600.0  # ten minutes: no real model takes that long to construct


def build_timeout_seconds() -> float:
    """How long a user's factory may take to return: ``$BENCH_BUILD_TIMEOUT`` seconds, else 600."""
    text = os.environ.get(BUILD_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_BUILD_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise BenchError(f"{BUILD_TIMEOUT_ENV}={text!r}: use a number of seconds > 0")
    return seconds


class _BuildTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _BuildTimeout in this thread after ``seconds`` (SIGALRM: the main thread on Unix; a
    no-op elsewhere). The factory runs in the caller's thread: torch's device context and grad
    mode are per thread, and ``with torch.device("meta"): factory()`` must see them."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise _BuildTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call_user_factory(factory: Callable[[], Any], name: str) -> Any:
    """``factory()`` as user code: it sees ``sys.argv == [name]`` (not bench's arguments, which an
    ``argparse.parse_args()`` inside would misread), its prints go to stderr (stdout may be bench's
    ``--json``), ``sys.exit`` in it is a one-line BenchError (not a silent exit 0), and it has
    ``build_timeout_seconds()`` to return (a factory that never returns is one line, not a hang)."""
    timeout = build_timeout_seconds()
    saved_argv = sys.argv
    sys.argv = [name]
    try:
        with contextlib.redirect_stdout(sys.stderr), _deadline(timeout):
            return factory()
    except _BuildTimeout:
        raise BenchError(
            f"the model factory {name} did not return within {timeout:g} s "
            f"(set {BUILD_TIMEOUT_ENV} to allow longer)"
        ) from None
    except SystemExit as exc:
        hint = (
            f" (argparse? it sees sys.argv == [{name!r}] here, not bench's arguments)"
            if exc.code == 2
            else ""
        )
        raise BenchError(f"the model factory {name} called sys.exit({exc.code!r}){hint}") from None
    finally:
        sys.argv = saved_argv


def resolve(name: str) -> ModelSpec:
    """Find a model by name; BenchError naming close matches when there is none."""
    name = name.strip()
    if not name:
        raise BenchError("model name is empty")
    name = ZOO.get(name, name)
    if name.startswith("timm:"):
        return _timm_spec(name)
    if ":" in name:
        return _factory_spec(name)
    names = torchvision_models()
    if name in names:
        return _torchvision_spec(name)
    timm_names = timm_models()
    if timm_names is not None and name in timm_names:  # a timm-only name: take it from timm
        return _timm_spec(f"timm:{name}")
    raise _unknown(name, names + zoo_models())
