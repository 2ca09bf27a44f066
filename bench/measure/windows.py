"""A side's child in ``bench ab``: one model, timed windows on request.

The parent (``bench.jobs.ab``) paces two such children, one per build, through a
``bench.jobs.isolate.ChildSession``: both start and warm up, then they take turns, one short timed
window each, so the two builds are measured a fraction of a second apart and a drift of the machine
hits both alike. While one measures, the other waits on its request pipe (it runs nothing).

Requests (``receive()``) and replies (``emit``), plain data so the two sides' bench versions need
only agree on them:

* ``("prepare", b)``: build the model (reused across sizes, ``ModelCache``), a fresh optimizer and
  batch for batch size ``b``, and run the warm-up steps; replies ``("prepared", b)``.
* ``("window", b)``: one timed window of the prepared step (``bench.measure.runner.measure``: device
  synchronised at its edges, steps timed on the device's timer, at least ``min_steps`` steps and
  ``max_time_seconds`` long); replies ``("window", b, samples_per_sec, window_seconds, step_seconds)``.
* ``None``: no more requests; the child returns ``{"torch_version": ...}``.

A failure (the build does not import, out of memory, a bad request) ends the child with its one
line, which the parent reports as the side's failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.hw.device import open_device
from bench.measure.models import resolve
from bench.measure.runner import measure
from bench.measure.step import ModelCache, PreparedStep, precision_mode, prepare
from bench.results.errors import BenchError
from bench.results.schema import MeasureSettings, Workload


def serve(
    workload: dict[str, Any],
    settings: dict[str, Any],
    *,
    emit: Callable[[Any], None],
    receive: Callable[[], Any],
) -> dict[str, Any]:
    """The child's body (``ChildSession("bench.measure.windows:serve", (workload, settings))``)."""
    import torch

    wl, st = Workload(**workload), MeasureSettings(**settings)
    timed = replace(st, warmup_steps=0)  # a window is steps of an already warm model
    device, cache, spec = open_device(wl.device), ModelCache(), resolve(wl.model)
    prepared: PreparedStep | None = None
    try:
        with precision_mode(wl.precision, device.kind, wl.cudnn_benchmark, wl.cudnn_benchmark_limit):
            while (request := receive()) is not None:
                kind, b = request[0], int(request[1])
                if kind == "prepare":
                    if prepared is not None:
                        prepared.release(device)
                    prepared = prepare(wl, spec, b, device, model_cache=cache)
                    for _ in range(st.warmup_steps):
                        prepared.step()
                    device.synchronize()
                    emit(("prepared", b))
                elif kind == "window" and prepared is not None and prepared.batch_size == b:
                    w = measure(prepared.step, b, timed, device=device)
                    sps = b * len(w.step_seconds) / w.window_seconds if w.window_seconds > 0 else 0.0
                    emit(("window", b, sps, w.window_seconds, list(w.step_seconds)))
                else:
                    raise BenchError(f"bad request {request!r}")
    finally:
        prepared = None
        cache.clear()
    return {"torch_version": torch.__version__}
