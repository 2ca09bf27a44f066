"""HTML and Markdown reports with plots, built from stored results. No torch here.

``build_report(runs, out_dir)`` writes three kinds of file into ``out_dir``:

- ``index.html``: one self-contained page (CSS inline, every plot an inline SVG) to open in a
  browser or attach to a design doc;
- ``report.md``: the same content for a pull request, its plots as PNG files beside it;
- ``<plot>.png``: one per plot (throughput, step time, epoch time, memory, utilisation, power,
  energy), for pasting anywhere.

The recommendation (throughput-optimal batch, knee, safe max) opens both pages. Several runs
overlay on each plot (fp32 vs bf16, GPU vs CPU, before vs after); each run gets a short label made
of whatever tells it apart from the others. A plot whose quantity no run measured is left out and
the page says why. Plotting uses matplotlib's object API (``Figure``, no pyplot global state, no
display needed); the page is a jinja2 template shipped in ``bench/present/templates``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis.diagnose import diagnose_run, mfu_note
from bench.analysis.recommend import KNEE_FRACTION, Recommendation, knee_point, recommend
from bench.analysis.stats import interval_label
from bench.present.goodput import CAPTION as GOODPUT_CAPTION
from bench.results import units
from bench.results.errors import BenchError
from bench.results.schema import OK, OOM, Point, SweepResult, result_from_dict

GIB = 2**30
MIB = 2**20


@dataclass(frozen=True)
class ReportRun:
    """One sweep in a report, with the label it is drawn under."""

    label: str
    result: SweepResult
    source: str = ""  # where it came from: a file path or "history #12"
    max_batch: dict[str, Any] | None = None  # a max-batch run's JSON for the same workload
    trace: str | None = None  # a trace folder for this run, relative to the report


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: "throughput" -> throughput.png, <figure id="plot-throughput">
    title: str
    caption: str
    svg: str  # inline SVG markup (no XML prologue)
    png: str  # file name beside report.md


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    pngs: tuple[Path, ...]
    plots: tuple[str, ...]  # names of the plots drawn
    omitted: tuple[str, ...] = ()  # "energy: ..." for plots left out, with the reason


@dataclass(frozen=True)
class RunSummary:
    """What the page says about one run, already formatted."""

    label: str
    source: str
    run_id: str
    status: str
    environment: str
    workload: str
    recommendation: Recommendation
    rows: list[dict[str, str]] = field(default_factory=list)
    notices: tuple[str, ...] = ()
    max_batch: str | None = None  # "exact max 240 (probes 5, 31 s), safe 224"
    trace: str | None = None
    diagnoses: list[dict[str, str]] = field(default_factory=list)  # one per measured point
    mfu_note: str | None = None  # why the MFU is tiny, when it is


# --------------------------------------------------------------------------- loading


def load_runs(refs: Sequence[str], db_path: Path | str) -> list[ReportRun]:
    """Resolve each ref (a JSON file, a history id, or ``latest``) to a run; max-batch results
    attach to the sweep of the same model and training workload. BenchError (one line) on a bad ref.
    """
    from bench.results.store import load_run_data, matching_max_batch, same_workload

    sweeps: list[tuple[str, SweepResult]] = []
    searches: list[tuple[str, dict[str, Any]]] = []
    for ref in refs:
        source, data = load_run_data(ref, db_path)
        try:
            if data.get("kind") == "max_batch":
                from bench.results.maxbatch import maxbatch_from_dict  # the typed check

                maxbatch_from_dict(data)
                searches.append((source, data))
            else:
                sweeps.append((source, result_from_dict(data)))
        except BenchError as exc:
            raise BenchError(f"{source}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:  # a mistyped field deeper down
            raise BenchError(f"{source}: malformed result ({exc})") from None
    if not sweeps:
        raise BenchError("a report needs at least one sweep run (max-batch results only add the safe max)")
    labels = run_labels([r for _, r in sweeps])
    runs = []
    for (source, result), label in zip(sweeps, labels, strict=True):
        match = next((d for _, d in searches if same_workload(result, d)), None)
        if match is None:
            match = matching_max_batch(db_path, result)
        runs.append(ReportRun(label=label, result=result, source=source, max_batch=match))
    return runs


def _short_device(result: SweepResult) -> str:
    label = result.environment.device_label
    return label.replace("NVIDIA ", "") if result.environment.gpus else f"CPU ({label})"


def _descriptors(r: SweepResult) -> list[tuple[str, str]]:
    wl = r.workload
    layout = (
        wl.precision + (" channels-last" if wl.channels_last else "") + (" compiled" if wl.compile else "")
    )
    size = f"seq {wl.seq_len}" if wl.seq_len else f"{wl.image_size}px"
    return [
        ("model", wl.model),
        ("mode", wl.mode),
        ("precision", layout),
        ("size", size),
        ("h2d", "with H2D copy" if wl.h2d else ""),
        ("data", f"loader {wl.workers} workers" if wl.data == "loader" else "synthetic data"),
        ("optimizer", wl.optimizer),
        ("device", _short_device(r)),
        ("ranks", f"{r.world_size} ranks (DDP)" if r.world_size > 1 else ""),
    ]


def run_labels(results: Sequence[SweepResult]) -> list[str]:
    """Short labels that tell the runs apart: only the descriptors that differ between them.

    One run: model, mode, precision and device. Runs that differ in nothing measured (before vs
    after a code change) are told apart by their start time, then by position.
    """
    if not results:
        return []
    descs = [_descriptors(r) for r in results]
    if len(results) == 1:
        d = dict(descs[0])
        return [" · ".join(x for x in (d["model"], d["mode"], d["precision"], d["device"]) if x)]
    keys = [k for k, _ in descs[0]]
    varying = [k for k in keys if len({dict(d)[k] for d in descs}) > 1]
    labels = [" · ".join(dict(d)[k] or f"no {k}" for k in varying) for d in descs]
    if len(set(labels)) < len(labels):
        stamps = [(r.started_at or r.run_id)[:16].replace("T", " ") for r in results]
        labels = [f"{lab} · {s}".strip(" ·") for lab, s in zip(labels, stamps, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return labels


# --------------------------------------------------------------------------- formatting


def fmt_bytes(n: float | None) -> str:
    return units.fmt_bytes(n, missing="–", digits=0, smallest="MiB")  # '1.50 GiB', '512 MiB'


def fmt_duration(seconds: float | None) -> str:
    return units.fmt_seconds(seconds, missing="–", coarse=True)  # '95.0 s', '4.5 min', '2.50 h'


def fmt_ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.2f}"


def fmt_num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _device_limit_bytes(r: SweepResult) -> tuple[int | None, str]:
    """The memory a point must fit in: the GPU's capacity, or the host's RAM for CPU runs."""
    if r.environment.gpus:
        total = next((p.memory.device_total_bytes for p in r.points if p.memory.device_total_bytes), None)
        return total or r.environment.gpus[0].memory_total_bytes, "device memory"
    return r.environment.ram_total_bytes, "host RAM"


def _point_row(p: Point, gpu: bool) -> dict[str, str]:
    s = p.step_stats
    mem = p.memory
    t = p.telemetry
    if p.status != OK:
        reason = (p.error or "").split(":")[0] if p.status == OOM else (p.error or "")
        return {"batch": str(p.batch_size), "status": p.status.upper(), "note": reason}
    row = {
        "batch": str(p.batch_size),
        "status": "ok" if p.converged else "ok (budget)",
        "samples_per_sec": fmt_num(p.samples_per_sec),
        "step_median_ms": fmt_ms(s.median_seconds if s else None),
        "step_p10_p90_ms": f"{fmt_ms(s.p10_seconds)}–{fmt_ms(s.p90_seconds)}" if s else "–",
        "ci": interval_label(p) if s else "–",  # between repeats when there are some, else steps
        "steps": str(s.count) if s else "–",
        "epoch": fmt_duration(p.epoch_seconds_estimate),
    }
    if gpu:
        row["memory"] = fmt_bytes(mem.device_peak_allocated_bytes)
        row["reserved"] = fmt_bytes(mem.device_peak_reserved_bytes)
        row["util"] = fmt_num(t.gpu_kernel_active_percent, 0)
        row["power"] = fmt_num(t.power_watts_mean, 0)
        row["jps"] = fmt_num(p.joules_per_sample, 3)
    else:
        row["memory"] = fmt_bytes(mem.host_peak_rss_bytes)
        row["util"] = fmt_num(t.system_cpu_percent, 0)
    return row


def _summarise(run: ReportRun) -> RunSummary:
    r = run.result
    env = r.environment
    wl = r.workload
    stored = r.recommendation  # `--noise-scale` is kept in the run: its goodput pick is redrawn
    noise = {"noise_scale": stored.noise_scale, "noise_source": stored.noise_scale_source} if stored else {}
    rec = recommend(r, run.max_batch, **(noise if noise.get("noise_scale") else {}))
    gpu = bool(env.gpus)
    parts = [
        env.device_label if gpu else f"{env.cpu_model} ({env.cpu_logical_cores} threads)",
        f"torch {env.torch_version}",
    ]
    if gpu:
        parts += [f"CUDA {env.cuda_version}", f"driver {env.gpu_driver_version}"]
    if env.git_commit:
        parts.append(f"commit {env.git_commit[:10]}" + (" (dirty)" if env.git_dirty else ""))
    parts.append(f"host {env.hostname}")
    size = f"sequence length {wl.seq_len}" if wl.seq_len else f"{wl.image_size}×{wl.image_size} images"
    workload = (
        f"{wl.model}, {wl.mode}, {wl.precision}"
        + (", channels-last" if wl.channels_last else "")
        + (", torch.compile" if wl.compile else "")
        + (", pinned H2D copy per step" if wl.h2d else "")
        + f", {size}, optimizer {wl.optimizer} (train), epoch = {wl.dataset_size:,} samples"
    )
    return RunSummary(
        label=run.label,
        source=run.source,
        run_id=r.run_id,
        status=r.status,
        environment=", ".join(str(p) for p in parts),
        workload=workload,
        recommendation=rec,
        rows=[_point_row(p, gpu) for p in r.points],
        notices=r.notices,
        max_batch=_max_batch_line(run.max_batch),
        trace=run.trace,
        diagnoses=_diagnosis_rows(r),
        mfu_note=mfu_note(r),
    )


def _diagnosis_rows(r: SweepResult) -> list[dict[str, str]]:
    rows = []
    for p, d in zip(r.points, diagnose_run(r), strict=True):
        if d is None:
            continue
        rows.append(
            {
                "batch": str(p.batch_size),
                "verdict": d.verdict,
                "evidence": "; ".join(d.evidence),
                "tflops": fmt_num(p.achieved_tflops, 2),
                "mfu": "–" if p.mfu is None else f"{p.mfu * 100:.2f}%",
            }
        )
    return rows


def _max_batch_line(search: dict[str, Any] | None) -> str | None:
    if not search:
        return None
    mx, safe = search.get("max_batch_size"), search.get("safe_batch_size")
    probes = search.get("probe_count", len(search.get("probes") or []))
    secs = search.get("seconds")
    budget = search.get("budget_bytes")
    parts = [f"exact max {mx}" if mx else "not even the smallest batch fit"]
    if search.get("failed_batch_size"):
        parts.append(f"{search['failed_batch_size']} ran out")
    if safe:
        parts.append(f"safe {safe}")
    if budget:
        parts.append(f"budget {fmt_bytes(budget)} ({search.get('budget_source', '')})".replace(" ()", ""))
    parts.append(f"{probes} probes" + (f", {secs:.0f} s" if secs else ""))
    return "max batch: " + ", ".join(parts)


# --------------------------------------------------------------------------- plots


def _series(r: SweepResult, value: Any) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for p in sorted(r.ok_points(), key=lambda p: p.batch_size):
        v = value(p)
        if v is not None and math.isfinite(v):
            xs.append(p.batch_size)
            ys.append(v)
    return xs, ys


def _first_oom(r: SweepResult) -> int | None:
    return min((p.batch_size for p in r.points if p.status == OOM), default=None)


def _batch_axis(ax: Any, runs: Sequence[ReportRun]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    sizes = sorted({p.batch_size for run in runs for p in run.result.points})
    ax.set_xscale("log", base=2)
    if sizes:
        ax.set_xlim(sizes[0] / 1.3, sizes[-1] * 1.3)
        ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("batch size (log₂)")
    ax.grid(True, alpha=0.3)


def _figure(title: str, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5 if ncols == 1 else 11, 4.2), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    fig.suptitle(title, fontsize=12)
    return fig, axes


def _colors(n: int) -> list[str]:
    cycle = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    return [cycle[i % len(cycle)] for i in range(n)]


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def plot_throughput(runs: Sequence[ReportRun]) -> Any | None:
    fig, (ax,) = _figure("Throughput: samples/sec vs batch size")
    drawn = False
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        xs, ys = _series(run.result, lambda p: p.samples_per_sec)
        if not xs:
            continue
        drawn = True
        ax.plot(xs, ys, "o-", color=color, label=run.label)
        best = max(zip(ys, xs, strict=True))
        knee = knee_point(list(run.result.points))
        ax.plot([best[1]], [best[0]], "*", color=color, markersize=14, markeredgecolor="black")
        if knee is not None and knee.batch_size != best[1]:
            ax.plot([knee.batch_size], [knee.samples_per_sec], "D", color="white", markeredgecolor=color,
                    markersize=8, markeredgewidth=2)  # fmt: skip
        oom = _first_oom(run.result)
        if oom is not None:
            ax.axvline(oom, color=color, linestyle=":", linewidth=1.5)
            ax.annotate(f"OOM at {oom}", (oom, 0), xytext=(-4, 6), textcoords="offset points",
                        rotation=90, color=color, fontsize=8, ha="right", va="bottom")  # fmt: skip
    if not drawn:
        return None
    _batch_axis(ax, runs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("samples/sec (measured window)")
    ax.plot([], [], "*", color="grey", markersize=12, markeredgecolor="black", label="best")
    ax.plot([], [], "D", color="white", markeredgecolor="grey", markeredgewidth=2,
            label=f"knee (≥{KNEE_FRACTION:.0%} of best)")  # fmt: skip
    _legend(ax)
    return fig


def plot_goodput(runs: Sequence[Any]) -> Any | None:
    """samples/s and goodput (samples/s ÷ (1 + B/B_noise)) against batch size, for runs that have B_noise."""
    rows = [(run, run.result.recommendation) for run in runs]
    rows = [(run, rec) for run, rec in rows if rec is not None and rec.goodput_rows]
    if not rows:
        return None
    fig, (ax,) = _figure("Goodput: samples/sec and useful samples/sec vs batch size")
    for (run, rec), color in zip(rows, _colors(len(rows)), strict=True):
        xs = [r.batch_size for r in rec.goodput_rows]
        good = [r.samples_per_sec / r.samples_factor for r in rec.goodput_rows]
        ax.plot(xs, [r.samples_per_sec for r in rec.goodput_rows], "o-", color=color, alpha=0.45,
                label=f"{run.label}: samples/s")  # fmt: skip
        ax.plot(xs, good, "s-", color=color, label=f"{run.label}: goodput (B_noise {rec.noise_scale:,.0f})")
        top = max(zip(good, xs, strict=True))
        ax.plot([top[1]], [top[0]], "*", color=color, markersize=14, markeredgecolor="black")
    _batch_axis(ax, [run for run, _ in rows])
    ax.set_ylim(bottom=0)
    ax.set_ylabel("samples/sec")
    _legend(ax)
    return fig


def plot_step_time(runs: Sequence[ReportRun]) -> Any | None:
    fig, (ax,) = _figure("Step time: median, bars p10–p90")
    drawn = False
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        pts = [p for p in sorted(run.result.ok_points(), key=lambda p: p.batch_size) if p.step_stats]
        if not pts:
            continue
        drawn = True
        xs = [p.batch_size for p in pts]
        med = [p.step_stats.median_seconds * 1000 for p in pts]  # type: ignore[union-attr]
        lo = [m - p.step_stats.p10_seconds * 1000 for m, p in zip(med, pts, strict=True)]  # type: ignore[union-attr]
        hi = [p.step_stats.p90_seconds * 1000 - m for m, p in zip(med, pts, strict=True)]  # type: ignore[union-attr]
        ax.errorbar(xs, med, yerr=[lo, hi], fmt="o-", color=color, capsize=4, label=run.label)
    if not drawn:
        return None
    from matplotlib.ticker import FuncFormatter

    _batch_axis(ax, runs)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.set_ylabel("step time (ms, log)")
    _legend(ax)
    return fig


def plot_epoch_time(runs: Sequence[ReportRun]) -> Any | None:
    fig, (ax,) = _figure("Epoch time (estimate from measured samples/sec)")
    series = [(run, *_series(run.result, lambda p: p.epoch_seconds_estimate)) for run in runs]
    top = max((max(ys) for _, _, ys in series if ys), default=None)
    if top is None:
        return None
    scale, unit = (3600, "hours") if top >= 2 * 3600 else (60, "minutes") if top >= 120 else (1, "seconds")
    for (run, xs, ys), color in zip(series, _colors(len(runs)), strict=True):
        if xs:
            size = run.result.workload.dataset_size
            ax.plot(xs, [y / scale for y in ys], "o-", color=color, label=f"{run.label} ({size:,} samples)")
    _batch_axis(ax, runs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"epoch time ({unit}, estimate)")
    _legend(ax)
    return fig


def plot_memory(runs: Sequence[ReportRun]) -> Any | None:
    fig, (ax,) = _figure("Peak memory vs batch size, limit dashed")
    drawn = False
    limits_drawn: set[int] = set()
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        r = run.result
        gpu = bool(r.environment.gpus)
        if gpu:
            xs, ys = _series(r, lambda p: p.memory.device_peak_allocated_bytes)
            rx, ry = _series(r, lambda p: p.memory.device_peak_reserved_bytes)
            if rx:
                ax.plot(rx, [y / GIB for y in ry], ":", color=color, alpha=0.8)
            what = "device allocated"
        else:
            xs, ys = _series(r, lambda p: p.memory.host_peak_rss_bytes)
            what = "host peak RSS"
        if not xs:
            continue
        drawn = True
        ax.plot(xs, [y / GIB for y in ys], "o-", color=color, label=f"{run.label}: {what}")
        limit, kind = _device_limit_bytes(r)
        if limit and limit not in limits_drawn:
            limits_drawn.add(limit)
            ax.axhline(limit / GIB, color=color, linestyle="--", linewidth=1.2)
            ax.annotate(f"{kind} {limit / GIB:.1f} GiB", (0.01, limit / GIB), xycoords=("axes fraction", "data"),
                        xytext=(0, 3), textcoords="offset points", color=color, fontsize=8)  # fmt: skip
        oom = _first_oom(r)
        if oom is not None and limit:
            ax.plot([oom], [limit / GIB], "X", color=color, markersize=11, markeredgecolor="black")
    if not drawn:
        return None
    _batch_axis(ax, runs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("peak memory (GiB)")
    if any(run.result.environment.gpus for run in runs):
        ax.plot([], [], ":", color="grey", label="device reserved (caching allocator)")
    if any(_first_oom(run.result) is not None for run in runs):
        ax.plot([], [], "X", color="grey", markeredgecolor="black", linestyle="none", label="out of memory")
    _legend(ax)
    return fig


def plot_utilisation(runs: Sequence[ReportRun]) -> Any | None:
    fig, (ax,) = _figure("Utilisation over the timed window")
    drawn = False
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        xs, ys = _series(run.result, lambda p: p.telemetry.gpu_kernel_active_percent)
        if xs:
            ax.plot(xs, ys, "o-", color=color, label=f"{run.label}: GPU kernel-active %")
            mx, my = _series(run.result, lambda p: p.telemetry.gpu_memory_controller_percent)
            if mx:
                ax.plot(mx, my, "s:", color=color, alpha=0.7, label=f"{run.label}: memory controller %")
        else:
            xs, ys = _series(run.result, lambda p: p.telemetry.system_cpu_percent)
            if xs:
                ax.plot(xs, ys, "^--", color=color, label=f"{run.label}: system CPU %")
        drawn = drawn or bool(xs)
    if not drawn:
        return None
    _batch_axis(ax, runs)
    ax.set_ylim(0, 105)
    ax.set_ylabel("percent")
    _legend(ax)
    return fig


def plot_power(runs: Sequence[ReportRun]) -> Any | None:
    fig, (ax,) = _figure("GPU power (mean over the timed window, max as bar top)")
    drawn = False
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        pts = [p for p in sorted(run.result.ok_points(), key=lambda p: p.batch_size)
               if p.telemetry.power_watts_mean is not None]  # fmt: skip
        if not pts:
            continue
        drawn = True
        xs = [p.batch_size for p in pts]
        mean = [p.telemetry.power_watts_mean for p in pts]
        up = [max(0.0, (p.telemetry.power_watts_max or m) - m) for p, m in zip(pts, mean, strict=True)]  # type: ignore[operator]
        ax.errorbar(xs, mean, yerr=[[0] * len(up), up], fmt="o-", color=color, capsize=3, label=run.label)
    if not drawn:
        return None
    _batch_axis(ax, runs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("power (W)")
    _legend(ax)
    return fig


def plot_energy(runs: Sequence[ReportRun]) -> Any | None:
    fig, (ax,) = _figure("Energy per sample (NVML energy counter)")
    drawn = False
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        xs, ys = _series(run.result, lambda p: p.joules_per_sample)
        if xs:
            drawn = True
            ax.plot(xs, ys, "o-", color=color, label=run.label)
    if not drawn:
        return None
    _batch_axis(ax, runs)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("joules per sample")
    _legend(ax)
    return fig


def plot_scaling(runs: Sequence[ReportRun]) -> Any | None:
    """Global samples/sec against world size, one line per per-rank batch; efficiency beside it."""
    from bench.analysis.scaling import scaling_rows

    results = [run.result for run in runs]
    if len({r.world_size for r in results}) < 2:
        return None
    rows = [row for row in scaling_rows(results) if row.global_samples_per_sec]
    batches = sorted({row.batch_size for row in rows})
    if not batches:
        return None
    fig, (ax, eff) = _figure("Data-parallel scaling (global samples/sec, efficiency vs 1 rank)", ncols=2)
    for b, color in zip(batches, _colors(len(batches)), strict=True):
        mine = sorted((row for row in rows if row.batch_size == b), key=lambda row: row.world_size)
        ax.plot([r.world_size for r in mine], [r.global_samples_per_sec for r in mine], "o-", color=color,
                label=f"batch {b}/rank")  # fmt: skip
        known = [r for r in mine if r.efficiency is not None]
        if known:
            eff.plot([r.world_size for r in known], [r.efficiency * 100 for r in known], "o-", color=color,
                     label=f"batch {b}/rank")  # fmt: skip
    sizes = sorted({row.world_size for row in rows})
    ax.plot(sizes, [0] * len(sizes), alpha=0)
    for axis in (ax, eff):
        axis.set_xticks(sizes)
        axis.set_xlabel("ranks (world size)")
    ax.set_ylabel("global samples/sec")
    ax.set_ylim(bottom=0)
    eff.axhline(100, linestyle="--", color="grey", linewidth=1)
    eff.set_ylabel("scaling efficiency (%)")
    eff.set_ylim(0, 110)
    _legend(ax)
    return fig


BREAKDOWN_PHASES = (
    ("data", "data_seconds", "#8c564b"),
    ("forward", "forward_seconds", "#1f77b4"),
    ("backward", "backward_seconds", "#ff7f0e"),
    ("optimizer", "optimizer_seconds", "#2ca02c"),
)


def plot_breakdown(runs: Sequence[ReportRun]) -> Any | None:
    """Stacked bars per batch size: median seconds of each annotated phase, one panel per run."""
    with_bd = [run for run in runs if any(p.breakdown is not None for p in run.result.ok_points())][:3]
    if not with_bd:
        return None
    fig, axes = _figure("Where a step's time goes (median ms per phase)", ncols=len(with_bd))
    for ax, run in zip(axes, with_bd, strict=True):
        points = sorted((p for p in run.result.ok_points() if p.breakdown), key=lambda p: p.batch_size)
        labels = [str(p.batch_size) for p in points]
        bottom = [0.0] * len(points)
        for phase, attr, color in BREAKDOWN_PHASES:
            values = [(getattr(p.breakdown, attr) or 0.0) * 1000 for p in points]
            if any(values):
                ax.bar(labels, values, bottom=bottom, color=color, label=phase)
                bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        steps = [(p.step_stats.median_seconds * 1000 if p.step_stats else 0.0) for p in points]
        ax.plot(labels, steps, "k_", markersize=18, label="step median")
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per step")
        ax.grid(True, axis="y", alpha=0.3)
        _legend(ax)
    return fig


# name, builder, caption, why it can be missing
PLOTS: tuple[tuple[str, Any, str, str], ...] = (
    ("scaling", plot_scaling,
     "Data-parallel runs (torchrun, DDP): global samples/sec = all ranks' samples over the slowest rank's window, "
     "by world size, one line per per-rank batch; efficiency = global / (N x the 1-rank rate at that batch).",
     ""),  # one world size: not worth a "not plotted" line
    ("throughput", plot_throughput,
     "Samples per second over each point's timed window (warm-up excluded). Star: best; diamond: the knee, "
     "the smallest batch within 95% of the best; dotted line: the first batch that ran out of memory.",
     "no batch size completed"),
    ("goodput", plot_goodput, GOODPUT_CAPTION, ""),  # only runs swept with --noise-scale
    ("step_time", plot_step_time,
     "Median time of one step (device-synchronised); bars span the 10th to 90th percentile of the timed steps.",
     "no batch size completed"),
    ("epoch_time", plot_epoch_time,
     "Dataset size divided by measured samples/sec: an estimate that ignores data loading and evaluation.",
     "no batch size completed"),
    ("memory", plot_memory,
     "Peak memory of each point: on GPU the caching allocator's peak allocated (solid) and reserved (dotted) "
     "bytes; on CPU the peak resident set of the process that ran the point. Dashed: the capacity it must fit in.",
     "no memory readings"),
    ("utilisation", plot_utilisation,
     "GPU kernel-active % is NVML's 'GPU utilisation': the share of time any kernel ran, not SM occupancy. "
     "CPU runs show system-wide CPU %.",
     "no utilisation readings (no NVML and no psutil samples)"),
    ("power", plot_power,
     "Board power from NVML, averaged over the timed window.", "no GPU power readings (no NVML)"),
    ("energy", plot_energy,
     "Energy counter read at both ends of the timed window (each after a device synchronise), per sample.",
     "no energy readings (needs an NVML energy counter: Volta or newer GPU)"),
    ("breakdown", plot_breakdown,
     "Median time of each annotated phase per step (CUDA events on GPU, host clocks on CPU); the black mark "
     "is the whole step's median. Data: waiting for and copying in the next batch.",
     "no step breakdown recorded (runs before it existed)"),
)  # fmt: skip


def _render(fig: Any, name: str, out_dir: Path) -> tuple[str, str]:
    """(inline SVG, PNG file name). Text stays text in the SVG; ids are salted per plot so several
    SVGs can share one page."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"bench-{name}"}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    png = f"{name}.png"
    fig.savefig(out_dir / png, format="png", dpi=120, metadata={"Software": None})
    return svg, png


def make_plots(runs: Sequence[ReportRun], out_dir: Path) -> tuple[list[Plot], list[str]]:
    plots, omitted = [], []
    for name, build, caption, missing in PLOTS:
        fig = build(runs)
        if fig is None:
            if missing:
                omitted.append(f"{name.replace('_', ' ')}: {missing}")
            continue
        svg, png = _render(fig, name, out_dir)
        plots.append(Plot(name=name, title=fig.get_suptitle(), caption=caption, svg=svg, png=png))
    return plots, omitted


# --------------------------------------------------------------------------- pages


_MD_ALWAYS = set("\\`*[]<>|~&")  # escaped wherever they appear (ASCII punctuation: `\x` is literal x)
_MD_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+[.)])")  # would start a heading, quote, list or rule


def md_escape(text: Any) -> str:
    """User text (model names, notices, errors, run ids, descriptions) as literal Markdown: it
    cannot end a table cell, start emphasis, a link, a heading or a list, or inject HTML. Newlines
    become spaces (a cell or a quoted line is one line). ``_`` inside a word stays as it is: it
    cannot open or close emphasis there, and ``resnet_50`` stays readable."""
    s = " ".join(str(text).splitlines()) if text is not None else ""
    out = []
    for i, ch in enumerate(s):
        if ch in _MD_ALWAYS:
            out.append("\\" + ch)
        elif ch == "_" and not (0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()):
            out.append("\\_")
        else:
            out.append(ch)
    escaped = "".join(out)
    return _MD_LINE_START.sub(
        lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], escaped, count=1
    )


def md_code(text: Any) -> str:
    """User text as one Markdown code span (paths, run ids): a fence longer than any run of
    backticks inside, so none can close it; newlines become spaces."""
    s = " ".join(str(text).splitlines())
    runs = re.findall(r"`+", s)
    fence = "`" * (max((len(r) for r in runs), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def md_url(text: Any) -> str:
    """A path as a Markdown link destination: spaces, parentheses and the like percent-encoded."""
    from urllib.parse import quote

    return quote(str(text), safe="/:.-_~")


def _templates() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("bench.present", "templates"),
        autoescape=select_autoescape(["html", "html.j2"], default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["md"] = md_escape
    env.filters["md_code"] = md_code
    env.filters["md_url"] = md_url
    return env


def build_report(runs: Sequence[ReportRun], out_dir: Path | str, *, title: str | None = None) -> ReportFiles:
    """Write index.html, report.md and one PNG per plot into ``out_dir``; return their paths."""
    if not runs:
        raise BenchError("a report needs at least one run")
    from bench._version import __version__

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    plots, omitted = make_plots(runs, out)
    summaries = [_summarise(run) for run in runs]
    models = sorted({run.result.workload.model for run in runs})
    context = {
        "title": title or f"bench report: {', '.join(models)}",
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        "runs": summaries,
        "plots": plots,
        "omitted": omitted,
        "knee_fraction": f"{KNEE_FRACTION:.0%}",
        "any_gpu": any(run.result.environment.gpus for run in runs),
    }
    env = _templates()
    html_path = out / "index.html"
    md_path = out / "report.md"
    html_path.write_text(env.get_template("report.html.j2").render(**context), encoding="utf-8")
    md_path.write_text(env.get_template("report.md.j2").render(**context), encoding="utf-8")
    (out / "runs.json").write_text(
        json.dumps([{"label": s.label, "run_id": s.run_id, "source": s.source} for s in summaries], indent=2),
        encoding="utf-8",
    )
    return ReportFiles(
        html=html_path,
        markdown=md_path,
        pngs=tuple(out / p.png for p in plots),
        plots=tuple(p.name for p in plots),
        omitted=tuple(omitted),
    )


# --------------------------------------------------------------------------- screenshot

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    import os

    explicit = os.environ.get("BENCH_CHROMIUM")
    if explicit:
        return explicit
    return next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)


def screenshot(html: Path | str, png: Path | str, *, width: int = 1280, height: int = 4200,
               chromium: str | None = None, timeout_seconds: float = 90) -> Path:  # fmt: skip
    """Render the page in headless Chromium to a PNG, as a reader would see it (no network needed:
    the page is self-contained). BenchError, one line, when Chromium is missing or fails."""
    exe = chromium or find_chromium()
    if exe is None:
        raise BenchError("no Chromium found: install Debian's `chromium` package or set BENCH_CHROMIUM")
    html_path, png_path = Path(html).resolve(), Path(png).resolve()
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
        "--no-first-run", "--force-device-scale-factor=1", f"--window-size={width},{height}",
        f"--screenshot={png_path}", html_path.as_uri(),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_seconds, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"Chromium failed to render {html_path.name}: {exc}") from None
    if proc.returncode != 0 or not png_path.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"Chromium failed to render {html_path.name} (exit {proc.returncode}): {tail[0]}")
    return png_path
