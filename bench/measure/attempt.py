"""One OOM-safe attempt on a device: run, classify what it raised, release, read the peaks.

A sweep point (``runner.run_point``), a max-batch probe (``probe.run_probe``) and
``PreparedStep.release`` all go through here, so they agree on what a failure was and on how memory
comes back::

    attempt = Attempt(device)
    with attempt:                        # resets the peak counters; a failure is caught here
        prepared = attempt.hold(prepare(...))
        first step ... ; attempt.end_first_step()   # first-step peak kept, counters reset
        steady steps ...
    prepared = None                      # the caller drops its own references too
    attempt.release()                    # outside the handler: release, gc, empty_cache, peaks
    attempt.failure                      # None, or Failure(kind, message)

Why release outside the ``with``: the exception's traceback holds the frames that hold the
tensors; once the handler is left they die, and ``gc.collect`` + ``empty_cache`` return them. After
a sticky CUDA error (an illegal memory access, a device-side assert) the context is gone and
``empty_cache`` itself raises: that is recorded (``cleanup_error``), never raised from here.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.results.errors import OOM, STICKY, BenchError, classify, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    """What an attempt raised: ``kind`` is ``errors.OOM``, ``errors.STICKY`` or ``errors.ERROR``;
    ``message`` its first line ("OutOfMemoryError: CUDA out of memory. Tried to allocate ...")."""

    kind: str
    message: str

    @property
    def oom(self) -> bool:
        return self.kind == OOM

    @property
    def sticky(self) -> bool:
        return self.kind == STICKY


def read_safely(fn: Callable[[], int | None]) -> int | None:
    """A device reading that cannot fail the caller (a dead CUDA context raises on most calls)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - a reading is data; a missing one is None
        return None


def release_memory(device: Any) -> str | None:
    """Collect garbage, then return the allocator's cached blocks to the device. Returns None, or
    the first line of what ``empty_cache`` raised (a sticky CUDA error left the context unusable)."""
    gc.collect()
    if device is None:
        return None
    try:
        device.empty_cache()
    except Exception as exc:  # noqa: BLE001 - after a sticky error: recorded, never raised
        return first_line(exc)
    return None


class Attempt:
    """Run something that may run out of memory (or kill the CUDA context) on ``device``.

    After ``release``: ``failure`` (None when it ran), the peaks since the last reset
    (``peak_allocated_bytes``/``peak_reserved_bytes``: the steady steps' when ``end_first_step`` was
    called, else the whole attempt's), the first step's peaks, the allocator retries during the
    attempt and ``cleanup_error``. A ``BenchError`` (the user's to fix), Ctrl-C and SystemExit are
    not caught.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self.failure: Failure | None = None
        self.first_step_peak_allocated_bytes: int | None = None
        self.first_step_peak_reserved_bytes: int | None = None
        self.peak_allocated_bytes: int | None = None
        self.peak_reserved_bytes: int | None = None
        self.alloc_retries: int | None = None
        self.cleanup_error: str | None = None
        self._retries_before: int | None = None
        self._held: list[Any] = []

    def __enter__(self) -> Attempt:
        self._retries_before = read_safely(self.device.alloc_retries)
        self.device.reset_peak()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, BenchError) or not isinstance(exc, Exception):
            return False
        self.failure = Failure(classify(exc), first_line(exc))
        return True  # the exception, its traceback and the tensors its frames hold go now

    def hold(self, obj: T) -> T:
        """Keep ``obj`` (a ``PreparedStep``, anything with ``release()``) to be released at the end."""
        self._held.append(obj)
        return obj

    def end_first_step(self, empty_cache: bool = True) -> None:
        """Call after the first step of a new shape, synchronised: keeps its peaks (cuDNN's autotune
        workspace lands there: 940 MiB at batch 1 on the H100, against 524 MiB steady at batch 8),
        returns the cached workspace (``empty_cache``) and resets the counters, so the peaks read
        at the end are the steady memory training runs at."""
        self.first_step_peak_allocated_bytes = read_safely(self.device.peak_allocated_bytes)
        self.first_step_peak_reserved_bytes = read_safely(self.device.peak_reserved_bytes)
        if empty_cache:
            self.device.empty_cache()
        self.device.reset_peak()

    def release(self) -> None:
        """Outside the ``with``: release what was held, collect, return the cache, read the peaks."""
        held, self._held = self._held, []
        for obj in held:
            release = getattr(obj, "release", None)
            if callable(release):
                release()
        del held
        self.cleanup_error = release_memory(self.device)
        self.peak_allocated_bytes = read_safely(self.device.peak_allocated_bytes)
        self.peak_reserved_bytes = read_safely(self.device.peak_reserved_bytes)
        after = read_safely(self.device.alloc_retries)
        if after is not None and self._retries_before is not None:
            self.alloc_retries = after - self._retries_before
