"""Where a step's time goes: each annotated phase (data, forward, backward, optimizer) timed per step.

``PhaseTimes.wrap(annotate)`` returns an annotate function that times every phase with the
device's step timer (``Device.make_timer``: CUDA events on GPU, recorded on the stream without a
host sync; the host clock on CPU, where every op is synchronous) and then enters the inner
annotation (NVTX / profiler ranges when tracing). Phases of the warm-up steps are timed too and
dropped: the measured steps are the last ones.

The data phase is timed on the host clock everywhere: waiting for the loader is a host stall.
CUDA events on the compute stream would time the queue instead (a wait hidden behind queued work
reads as zero; the copy and layout conversion after it read as waiting). ``collect`` runs after
every synchronised chunk (the runner's ``on_synchronized``), so the CUDA events are read and
reused chunk by chunk instead of piling up to the end of the point.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from bench.hw.device import Device, StepTimer
from bench.results.schema import StepBreakdown

PHASES = ("data", "forward", "backward", "optimizer")


HOST_TIMED = ("data",)  # phases timed on the host clock, on every device


class PhaseTimes:
    def __init__(self, device: Device, clock: Callable[[], float] = time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self._timers: dict[str, StepTimer] = {}
        self._seconds: dict[str, list[float]] = {}

    def wrap(
        self, inner: Callable[[str], AbstractContextManager[Any]] | None = None
    ) -> Callable[[str], AbstractContextManager[Any]]:
        inner = inner or (lambda name: nullcontext())

        @contextmanager
        def annotate(name: str) -> Iterator[None]:
            timer = self._timers.get(name)
            if timer is None:
                on_host = name in HOST_TIMED and self.device.kind == "cuda"
                timer = self._timers[name] = StepTimer(self.clock) if on_host else self.device.make_timer()
            timer.start()
            try:
                with inner(name):
                    yield
            finally:
                timer.stop()

        return annotate

    def collect(self) -> dict[str, list[float]]:
        """Seconds per occurrence of each phase so far. CUDA events are read here: call it after a
        device synchronise (the runner does after the warm-up and after every chunk)."""
        for name, timer in self._timers.items():
            self._seconds.setdefault(name, []).extend(timer.collect())
        return self._seconds

    def breakdown(self, step_seconds: Sequence[float]) -> StepBreakdown | None:
        """Medians over the measured steps (the last ``len(step_seconds)`` occurrences of each phase)."""
        n = len(step_seconds)
        if n == 0:
            return None
        seconds = self.collect()
        medians: dict[str, float | None] = {}
        for phase in PHASES:
            values = seconds.get(phase, [])
            medians[phase] = statistics.median(values[-n:]) if len(values) >= n else None
        data = seconds.get("data", [])
        total = sum(step_seconds)
        fraction = sum(data[-n:]) / total if len(data) >= n and total > 0 else None
        if all(v is None for v in medians.values()):
            return None
        return StepBreakdown(
            forward_seconds=medians["forward"],
            backward_seconds=medians["backward"],
            optimizer_seconds=medians["optimizer"],
            data_seconds=medians["data"],
            steps=n,
            data_wait_fraction=fraction,
            data_wait_seconds=tuple(data[-n:]) if len(data) >= n else (),
        )
