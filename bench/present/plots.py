"""The report's plots: throughput, step time, epoch time, memory, utilisation, power, energy,
data-parallel scaling and the step breakdown, several runs overlaid on each. matplotlib's object
API (``Figure``: no pyplot global state, no display); each plot is rendered as an inline SVG for
the HTML page and a PNG beside the Markdown. No torch here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.analysis.recommend import KNEE_FRACTION, knee_point
from bench.analysis.scaling import scaling_rows
from bench.present.goodput import CAPTION as GOODPUT_CAPTION
from bench.results.maxbatch import MaxBatchResult
from bench.results.schema import OOM, SweepResult

GIB = 2**30
MIB = 2**20


def _device_limit_bytes(r: SweepResult) -> tuple[int | None, str]:
    """The memory a point must fit in: the GPU's capacity, or the host's RAM for CPU runs."""
    if r.environment.gpus:
        total = next((p.memory.device_total_bytes for p in r.points if p.memory.device_total_bytes), None)
        return total or r.environment.gpus[0].memory_total_bytes, "device memory"
    return r.environment.ram_total_bytes, "host RAM"


@dataclass(frozen=True)
class ReportRun:
    """One sweep in a report, with the label it is drawn under."""

    label: str
    result: SweepResult
    source: str = ""  # where it came from: a file path or "history #12"
    max_batch: MaxBatchResult | None = None  # a max-batch search of the same workload
    trace: str | None = None  # a trace folder for this run, relative to the report


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: "throughput" -> throughput.png, <figure id="plot-throughput">
    title: str
    caption: str
    svg: str  # inline SVG markup (no XML prologue)
    png: str  # file name beside report.md


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
