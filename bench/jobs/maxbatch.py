"""The largest training batch that fits this hardware: real probes for ``bench.analysis.maxbatch_search``.

A probe (``bench.measure.probe``) builds a fresh model, optimizer and batch and runs ``PROBE_STEPS``
full training steps (forward, backward, optimizer step: the optimizer state exists from the first
step, and the peak is steady by the third), records peak memory and releases everything.

- GPU: the budget is the device memory free at the start (after returning our own cache), or
  ``memory_limit``, which also caps the caching allocator
  (``torch.cuda.set_per_process_memory_fraction``, restored afterwards). A probe fails on an
  out-of-memory error (``errors.classify``) or, with a limit, when its steady peak passes it.
  Probes run without cuDNN autotuning (``autotune_probes=False``): a search over algorithms per new
  shape cost 23-32 s a probe on the H100 and says nothing about memory. A sticky CUDA error (an
  illegal memory access, a device-side assert) ends the search at once: the finished probes are
  kept and stored, and the error says to use ``isolate=True`` (a fresh process per probe).
  Leaks are measured from one probe to the next. ``isolate=True`` runs each probe in a child.
- CPU: there is no OOM exception, and the kernel's OOM killer must never be reached. The budget is
  ``memory_limit`` (default: half the RAM available now). Every probe runs in its own child process;
  the parent kills a child whose RSS passes the budget (a failed probe), and otherwise the child's
  own lifetime peak RSS (VmHWM) must be within the budget for the probe to fit.

The chosen max then runs ``SOAK_STEPS`` steps the way training will (cuDNN autotuning as the
workload asks); if it fails, the search steps down until a size passes the soak. The safe batch
leaves headroom derived from what was measured (``bench.analysis.headroom``), the autotuned
algorithms' extra workspace included. The caller's model and optimizer are never touched: every
probe builds its own.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.analysis.headroom import (  # noqa: F401 - re-exported: tests and users import them here
    autotune_workspace_bytes,
    band,
    fit_memory_model,
    headroom,
    proven_bracket,
    safe_batch,
    soak_steps_for,
)
from bench.analysis.maxbatch_search import ProbeResult, search_down, search_max_batch
from bench.hw import env as env_mod
from bench.hw.device import check_device, default_device, open_device
from bench.jobs.distributed import check_ddp_probes
from bench.jobs.history import StoreArg, history_path, store_run
from bench.jobs.maxbatch_probes import (  # probe_in_process and probe_isolated: re-exported
    _allocated,
    _budget,
    _cap_allocator,
    _uncap_allocator,
    probe_in_process,
    probe_isolated,
)
from bench.jobs.sweep_loop import ResultWriter
from bench.measure.models import resolve
from bench.measure.probe import classes_in_main, spec_for_module
from bench.results import files
from bench.results.errors import STICKY, BenchError, StickyCudaError, classify_message, sticky_stop
from bench.results.maxbatch import (  # the results live in the results layer; re-exported here
    ERROR,
    FIT,  # noqa: F401 - re-exported
    OOM,  # noqa: F401 - re-exported
    OVER_BUDGET,
    PROBE_STEPS,
    MaxBatchResult,
    MemoryModelInfo,  # noqa: F401 - re-exported
    ProbeRecord,
    SoakResult,
    load_max_batch,  # noqa: F401 - re-exported
    maxbatch_from_dict,  # noqa: F401 - re-exported
)
from bench.results.schema import Workload, device_kind
from bench.results.units import parse_bytes  # noqa: F401 - re-exported

SOAK_STEPS = 20  # the chosen max runs this long before it is reported (at most; see headroom.SOAK_SHARE)
CPU_GRANULARITY = 8  # default on CPU: peak RSS noise is tens of samples at the edge
STOPPED_STICKY = "sticky CUDA error"


# --------------------------------------------------------------------------- search


def _in_main_message(label: str, names: list[str]) -> str:
    which = ", ".join(names)
    return (
        f"cannot search {label}: class {which} is defined in __main__ (your script or notebook), and on "
        "CPU every probe runs in a child process, which cannot import __main__. Define the class in a "
        "module you import (e.g. mymodels.py) and pass the model or the factory name "
        "'mymodels:build'; on a GPU (device='cuda', isolate=False, the default) the probes run in "
        "this process and take the model as it is"
    )


def check_options(*, granularity: int, cap: int | None, soak_steps: int) -> None:
    """Validate the search options where they enter (BenchError, one line)."""
    if not isinstance(granularity, int) or granularity < 1:
        raise BenchError(f"granularity must be a positive integer, got {granularity!r}")
    if cap is not None and (not isinstance(cap, int) or cap < granularity):
        raise BenchError(f"the batch cap {cap!r} is below the granularity {granularity}")
    if not isinstance(soak_steps, int) or soak_steps < 0:
        raise BenchError(f"soak steps must be a non-negative integer, got {soak_steps!r}")


def check_max_seconds(max_seconds: float | None) -> None:
    """The search's time budget: None, or a finite number of seconds > 0 (BenchError, one line)."""
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise BenchError(f"--max-seconds must be a finite number > 0, got {max_seconds!r}")


def default_granularity(device_kind: str) -> int:
    """GPU: exact to one sample (the caching allocator gives the same peak again). CPU: peak RSS of
    the same steps varies +-4% within minutes (~15% over a day), i.e. tens of samples at the edge,
    so a granularity of 1 would claim a precision the machine does not have."""
    return 1 if device_kind == "cuda" else CPU_GRANULARITY


def find_max_batch(
    model_or_workload: Any,
    *,
    out_path: Path | str | None = None,
    store: StoreArg = None,
    ddp: bool = False,
    **options: Any,
) -> MaxBatchResult:
    """The max-batch job, called by ``bench max-batch``, ``bench recommend``, profiles and Python
    users: the search (``_search``, whose options this takes), then the result file (``out_path``)
    and the history (``store``: True for the default history, a path for another).

    ``ddp``: probe with the model in DistributedDataParallel (one-process group), so its gradient
    buckets are allocated as in data-parallel training. A history that cannot take the result is
    a notice in it, never a lost search. An interrupted search (KeyboardInterrupt) proves nothing
    and is neither written nor stored. A sticky CUDA error raises ``StickyCudaError`` (one line:
    the batch, and ``--isolate``) after the probes that finished are written and stored.
    """

    db = history_path(store)
    if out_path is not None:  # an unwritable output is bad input: said before minutes of probing
        ResultWriter(out_path)
    if ddp:
        check_ddp_probes()
    try:
        result = _search(model_or_workload, ddp=ddp, **options)
    except StickyCudaError as exc:
        if isinstance(exc.partial_result, MaxBatchResult):
            exc.partial_result = _keep(exc.partial_result, db, out_path, ddp)
        raise
    return _keep(result, db, out_path, ddp)


def _keep(result: MaxBatchResult, db: Path | None, out_path: Path | str | None, ddp: bool) -> MaxBatchResult:
    """Store the result in the history and write its file; the result with any notice about it."""

    if ddp:
        note = "probes ran the model in DistributedDataParallel (one-process group): buckets allocated"
        result = replace(result, notices=(*result.notices, note))
    if (warning := store_run(db, result)) is not None:
        result = replace(result, notices=(*result.notices, warning))
    if out_path is not None:
        try:
            files.write_json_atomic(out_path, json.dumps(result.to_dict(), indent=2, allow_nan=False))
        except OSError as exc:
            raise BenchError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return result


def check_inputs(
    workload: Workload,
    *,
    out_path: Path | str | None = None,
    store: StoreArg = None,
    granularity: int | None = None,
    cap: int | None = None,
    soak_steps: int = SOAK_STEPS,
    memory_limit: str | int | None = None,
    max_seconds: float | None = None,
    **_: Any,
) -> None:
    """Bad input to ``find_max_batch`` as one BenchError line before anything starts (the command
    calls it before it says what it searches): options, device, model, output file, history."""

    g = granularity
    if g is None:
        g = min(default_granularity(device_kind(workload.device)), cap or 2**62)
    check_options(granularity=g, cap=cap, soak_steps=soak_steps)
    check_max_seconds(max_seconds)
    if memory_limit is not None:
        parse_bytes(memory_limit)
    check_device(workload.device)
    resolve(workload.model)
    if out_path is not None:
        ResultWriter(out_path)
    history_path(store)


class _StickyStop(Exception):
    """Inside ``_search``: a probe left the CUDA context unusable; no further probe can run."""

    def __init__(self, record: ProbeRecord) -> None:
        super().__init__(record.detail)
        self.record = record


def _workload_and_spec(
    model_or_workload: Any, input_shape: tuple[int, ...] | None, options: dict[str, Any]
) -> tuple[Workload, Any]:
    """The workload to search and, for a caller's ``nn.Module``, the spec that builds copies of it."""

    spec = None
    try:
        if isinstance(model_or_workload, Workload):
            workload = replace(model_or_workload, **options)
        elif isinstance(model_or_workload, str):
            options.setdefault("device", default_device())
            workload = Workload(model=model_or_workload, **options)
        elif hasattr(model_or_workload, "state_dict") and callable(model_or_workload):
            label, spec = spec_for_module(model_or_workload, input_shape)
            options.setdefault("device", default_device())
            workload = Workload(model=label, **options)
        else:
            raise BenchError(
                f"find_max_batch takes a Workload, a model name or an nn.Module, "
                f"not {type(model_or_workload).__name__}"
            )
    except TypeError as exc:
        raise BenchError(f"find_max_batch: {exc}") from None
    if input_shape is not None and spec is None:
        raise BenchError("input_shape applies to an nn.Module; a named model brings its own input")
    if workload.mode != "train":
        raise BenchError("max-batch searches the training batch: use mode 'train'")
    return workload, spec


def _search(
    model_or_workload: Any,
    *,
    granularity: int | None = None,
    memory_limit: str | int | None = None,
    cap: int | None = None,
    isolate: bool | None = None,
    soak_steps: int = SOAK_STEPS,
    input_shape: tuple[int, ...] | None = None,
    on_probe: Callable[[ProbeRecord], None] | None = None,
    max_seconds: float | None = None,
    repeat_boundary: bool | None = None,
    ddp: bool = False,
    autotune_probes: bool = False,
    **workload_options: Any,
) -> MaxBatchResult:
    """Largest training batch that fits, exact to ``granularity``, plus a safe batch to train with.

    ``model_or_workload``: a ``Workload``; a model name ("resnet50", "timm:...", "pkg.mod:factory");
    or your ``nn.Module`` (copied through serialisation: your model, its gradients and your optimizer
    are never touched; the search builds its own optimizer per ``optimizer=``). ``workload_options``
    are ``Workload`` fields (device, precision, image_size, channels_last, optimizer, ...), applied
    on top. ``input_shape``: the per-sample input shape for a module that is not a 3xHxW image
    classifier. ``memory_limit``: bytes or "8GiB"; on CPU the default is half the available RAM; on
    a GPU it also caps the caching allocator. ``cap``: never probe above it. ``on_probe`` sees every
    probe as it finishes (soak runs too).
    ``granularity``: None = 1 on a GPU, ``CPU_GRANULARITY`` on CPU (no finer than RSS noise).
    ``max_seconds``: stop probing once the probes took this long, with the best bracket so far
    (``exact=False``, ``stopped="time budget"``). ``repeat_boundary`` (default: on CPU) runs the
    max and max + granularity once more: where they do not repeat, the result is a band
    (``band_low``..``band_high``), never "exact". ``autotune_probes``: probe with cuDNN autotuning
    (default off: the soak alone runs with the workload's setting). A module whose class is defined
    in ``__main__`` (a script or notebook) is probed in this process on a GPU (``isolate=True`` is
    then a notice); on CPU, where probes need a child, it is a BenchError saying to move the class
    into a module.

    The result proves the answer: ``max_batch_size`` was run and fit, ``failed_batch_size`` (max +
    granularity) was run and did not. The soak is time-boxed to ``headroom.SOAK_SHARE`` of the search.
    """

    started_wall = dt.datetime.now(dt.timezone.utc)
    started = time.perf_counter()
    workload, spec = _workload_and_spec(model_or_workload, input_shape, workload_options)
    check_device(workload.device)
    if granularity is None:
        granularity = default_granularity(device_kind(workload.device))
        granularity = min(granularity, cap) if cap is not None and cap >= 1 else granularity
    check_options(granularity=granularity, cap=cap, soak_steps=soak_steps)
    check_max_seconds(max_seconds)
    if spec is None:
        resolve(workload.model)  # a bad name is the user's to fix, before any probe
    in_main = classes_in_main(model_or_workload) if spec is not None else []
    if in_main and device_kind(workload.device) == "cpu":  # CPU probes need a child: no way round
        raise BenchError(_in_main_message(workload.model, in_main))
    device = open_device(workload.device)
    isolate = True if device.kind == "cpu" else bool(isolate)  # CPU: the RSS budget needs a child
    budget, source, notices = _budget(device, memory_limit)
    if in_main and isolate:  # GPU: in-process probes load it; a child could not
        isolate = False
        notices.append(
            f"isolate=True not honoured: class {', '.join(in_main)} is defined in __main__, which a "
            "child process cannot import; the probes ran in this process"
        )
    enforce_budget = device.kind == "cpu" or memory_limit is not None
    autotune = workload.cudnn_benchmark and autotune_probes
    if device.kind == "cuda" and workload.cudnn_benchmark and not autotune:
        notices.append(
            "probes ran without cuDNN autotuning (its search costs seconds per new shape and says "
            "nothing about memory); the soak of the chosen max runs with it, as training will"
        )
    gc.collect()
    records: list[ProbeRecord] = []
    soaked: list[ProbeRecord] = []
    leaks: list[str] = []
    soaking = [False]  # the probes now are the soak's
    last_allocated: list[int | None] = [None]  # after the previous probe: leaks are judged from there
    fraction, previous_fraction = _cap_allocator(device, memory_limit, budget)  # a child takes it too
    if fraction is not None:
        notices.append(f"the caching allocator was capped at {fraction:.1%} of the device for the search")

    def probe(b: int, steps: int, autotune: bool = autotune) -> ProbeRecord:
        if isolate:
            rec = probe_isolated(
                workload, b, budget if device.kind == "cpu" else None, steps, spec=spec, ddp=ddp,
                cudnn_benchmark=autotune, memory_fraction=fraction,
            )  # fmt: skip
        else:
            rec = probe_in_process(
                workload, b, device, steps, spec=spec, previous_allocated_bytes=last_allocated[0], ddp=ddp,
                cudnn_benchmark=autotune,
            )  # fmt: skip
            if rec.leaked_bytes:
                leaks.append(
                    f"after batch {b}: {rec.leaked_bytes} bytes more allocated than after the probe before"
                )
            last_allocated[0] = _allocated(device)
        if rec.fits and enforce_budget and rec.peak_bytes is not None and rec.peak_bytes > budget:
            rec = replace(rec, outcome=OVER_BUDGET)
        sticky = not isolate and rec.outcome == ERROR and classify_message(rec.detail or "") == STICKY
        if rec.outcome == ERROR and b == granularity and steps == PROBE_STEPS and not sticky:
            hint = ""
            if b == 1 and "value per channel" in (rec.detail or ""):
                hint = " (BatchNorm cannot train on one sample here: use --granularity 2 or a larger --image-size)"
            raise BenchError(
                f"{workload.model} failed at batch {b} for a reason other than memory: {rec.detail}{hint}"
            )
        if on_probe is not None:
            on_probe(rec)
        if sticky:
            raise _StickyStop(rec)
        return rec

    def try_batch(b: int) -> ProbeResult:
        rec = probe(b, PROBE_STEPS)
        records.append(rec)
        # a non-memory error at a large batch (e.g. a 32-bit index limit in a kernel) also bounds it
        return ProbeResult(
            b, rec.fits, rec.peak_bytes, rec.seconds, rec.outcome, steady_peak_bytes=rec.steady_peak_bytes
        )

    def result(**fields: Any) -> MaxBatchResult:
        stamp = started_wall.strftime("%Y%m%d-%H%M%S")
        return MaxBatchResult(
            workload=workload, environment=env_mod.collect(), granularity=granularity, budget_bytes=budget,
            probes=tuple(records), budget_source=source, leaks=tuple(leaks), notices=tuple(notices),
            seconds=time.perf_counter() - started, wall_seconds=time.perf_counter() - started,
            run_id=f"maxbatch-{stamp}-{workload.model}-{workload.device}-{uuid.uuid4().hex[:8]}",
            started_at=started_wall.isoformat(timespec="seconds"), **fields,
        )  # fmt: skip

    try:
        found = search_max_batch(
            try_batch, budget_bytes=budget, granularity=granularity, cap=cap, max_seconds=max_seconds
        )
        max_b, failed_b, exact = found.max_batch_size, found.failed_batch_size, found.exact
        model = fit_memory_model(records)
        search_seconds = time.perf_counter() - started
        bands = _repeat_boundary(
            probe, records, notices, repeat_boundary if repeat_boundary is not None else device.kind == "cpu",
            found, granularity,
        )  # fmt: skip
        if bands is not None:
            max_b, failed_b, exact, band_low, band_high, repeats = bands
        else:
            band_low = band_high = repeats = None
        soak = None
        if max_b is not None and soak_steps > 0:
            soaking[0] = True
            steps = soak_steps_for(soak_steps, search_seconds, records, max_b)
            soak, max_b, failed_b, exact = _soak(
                probe, soaked, workload, max_b, failed_b, exact, steps, granularity
            )
    except _StickyStop as stop:
        raise _sticky_error(stop.record, soaking[0], records, soaked, notices, result) from None
    finally:
        if fraction is not None:
            _uncap_allocator(device, previous_fraction)
    # what autotuning added: the soak autotuned where the probes did not
    workspace = (
        autotune_workspace_bytes(records, soaked, model)
        if workload.cudnn_benchmark and not autotune
        else None
    )
    margin, why = headroom(device.kind, model, records, budget_bytes=budget, workspace_bytes=workspace)
    safe = safe_batch(max_b, granularity, budget, model, margin) if max_b is not None else None
    return result(
        max_batch_size=max_b, safe_batch_size=safe, memory_model=model, soak=soak, failed_batch_size=failed_b,
        exact=exact, cap_reached=found.cap_reached and max_b == found.max_batch_size, headroom_fraction=margin,
        headroom_reason=why, band_low=band_low, band_high=band_high, repeats=repeats, stopped=found.stopped,
    )  # fmt: skip


def _repeat_boundary(
    probe: Callable[..., ProbeRecord], records: list[ProbeRecord], notices: list[str], wanted: bool,
    found: Any, granularity: int,
) -> tuple[int | None, int | None, bool, int | None, int | None, bool] | None:  # fmt: skip
    """Does the certificate repeat? Run max and max + granularity once more. None: not checked;
    else (max, failed, exact, band_low, band_high, repeats)."""
    max_b, failed_b = found.max_batch_size, found.failed_batch_size
    if not (wanted and found.exact and max_b is not None and failed_b is not None):
        return None
    again = {}
    for b in (max_b, failed_b):
        rec = replace(probe(b, PROBE_STEPS), repeat=True)
        records.append(rec)
        again[b] = rec.fits
    if again[max_b] and not again[failed_b]:
        return max_b, failed_b, True, None, None, True
    low, high = band(records)
    failed = min((r.batch_size for r in records if not r.fits and r.batch_size > (low or 0)), default=None)
    flipped = ", ".join(
        f"batch {b} {'fit' if ok else 'failed'} on the second run"
        for b, ok in again.items()
        if ok != (b == max_b)
    )
    notices.append(
        f"the boundary did not repeat ({flipped}: peak memory varies between runs); reporting "
        f"{low}, the largest size that fit every time it ran; {high} fit at least once"
    )
    return low, failed, False, low, high, False


def _soak(
    probe: Callable[..., ProbeRecord], soaked: list[ProbeRecord], workload: Workload, max_b: int,
    failed_b: int | None, exact: bool, steps: int, granularity: int,
) -> tuple[SoakResult, int | None, int | None, bool]:  # fmt: skip
    """The chosen max for ``steps`` steps, the way training runs it (cuDNN autotuning as the
    workload asks); stepping down until a size passes. Returns the soak and (max, failed, exact)."""
    start = time.perf_counter()

    def try_soak(b: int) -> ProbeResult:
        rec = probe(b, steps, autotune=workload.cudnn_benchmark)
        soaked.append(rec)
        return ProbeResult(b, rec.fits, rec.peak_bytes, rec.seconds, rec.outcome)

    first = try_soak(max_b)
    if first.fits:
        detail = f"{steps} steps at batch {max_b} completed"
    else:
        down = search_down(try_soak, failed_batch_size=max_b, granularity=granularity)
        detail = f"batch {max_b} failed during {steps} steps ({first.outcome}); " + (
            f"batch {down.max_batch_size} passed" if down.max_batch_size else "no smaller batch passed"
        )
        max_b, failed_b, exact = down.max_batch_size, down.failed_batch_size, down.exact  # type: ignore[assignment]
    soak = SoakResult(
        batch_size=max_b, steps=steps, ok=max_b is not None, seconds=time.perf_counter() - start,
        detail=detail, probes=tuple(soaked),
    )  # fmt: skip
    return soak, max_b, failed_b, exact


def _sticky_error(
    rec: ProbeRecord, in_soak: bool, records: list[ProbeRecord], soaked: list[ProbeRecord],
    notices: list[str], result: Callable[..., MaxBatchResult],
) -> StickyCudaError:  # fmt: skip
    """The one line a sticky CUDA error ends the search with, carrying the finished probes (the
    proven bracket, ``exact=False``, no safe batch) as its ``partial_result``."""
    (soaked if in_soak else records).append(rec)
    done = len(records) + len(soaked) - 1
    error = sticky_stop(rec.batch_size, rec.detail or "", "search", f"{done} finished probe(s) kept")
    line = str(error)
    low, failed = proven_bracket([r for r in records if r is not rec])
    soak = None
    if soaked:
        soak = SoakResult(batch_size=None, steps=soaked[-1].steps, ok=False, seconds=sum(r.seconds for r in soaked),
                          detail=f"stopped by a sticky CUDA error at batch {rec.batch_size}", probes=tuple(soaked))  # fmt: skip
    notices.append(line)
    partial = result(
        max_batch_size=low, safe_batch_size=None, memory_model=fit_memory_model(records), soak=soak,
        failed_batch_size=failed, exact=False, cap_reached=False, headroom_fraction=0.0,
        headroom_reason="no safe batch: the search stopped at a sticky CUDA error", stopped=STOPPED_STICKY,
    )  # fmt: skip
    error.partial_result = partial
    return error
