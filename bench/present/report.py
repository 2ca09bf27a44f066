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
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench._version import __version__
from bench.analysis.diagnose import diagnose_run, mfu_note
from bench.analysis.recommend import KNEE_FRACTION, Recommendation
from bench.analysis.stats import interval_label
from bench.present.ab import side_sweeps
from bench.present.display import point_status
from bench.present.plots import Plot, ReportRun, make_plots  # noqa: F401 - the report's input and its plots
from bench.results import files, units
from bench.results.ab import ab_from_dict
from bench.results.codec import result_from_dict
from bench.results.errors import BenchError
from bench.results.maxbatch import MaxBatchResult, maxbatch_from_dict
from bench.results.schema import OK, OOM, Point, SweepResult
from bench.results.store import load_run_data, matching_max_batch, same_workload

GIB = 2**30
MIB = 2**20


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
    sweeps: list[tuple[str, SweepResult]] = []
    searches: list[tuple[str, dict[str, Any], MaxBatchResult]] = []
    fixed: dict[int, str] = {}  # index in sweeps -> label (the sides of an A/B run are "A" and "B")
    for ref in refs:
        source, data = load_run_data(ref, db_path)
        try:
            if data.get("kind") == "max_batch":
                searches.append((source, data, maxbatch_from_dict(data)))
            elif data.get("kind") == "ab":  # both sides, overlaid
                for name, side in zip(("A", "B"), side_sweeps(ab_from_dict(data)), strict=True):
                    fixed[len(sweeps)] = f"{name} ({side.notices[0][3:]})"
                    sweeps.append((source, side))
            else:
                sweeps.append((source, result_from_dict(data)))
        except BenchError as exc:
            raise BenchError(f"{source}: {exc}") from None
        except (TypeError, ValueError, KeyError) as exc:  # a mistyped field deeper down
            raise BenchError(f"{source}: malformed result ({exc})") from None
    if not sweeps:
        raise BenchError("a report needs at least one sweep run (max-batch results only add the safe max)")
    labels = run_labels([r for _, r in sweeps])
    labels = [fixed.get(i, label) for i, label in enumerate(labels)]
    runs = []
    for (source, result), label in zip(sweeps, labels, strict=True):
        match = next((m for _, d, m in searches if same_workload(result, d)), None)
        if match is None and (found := matching_max_batch(db_path, result)) is not None:
            match = maxbatch_from_dict(found)
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


def _point_row(p: Point, gpu: bool) -> dict[str, str]:
    s = p.step_stats
    mem = p.memory
    t = p.telemetry
    if p.status != OK:
        reason = (p.error or "").split(":")[0] if p.status == OOM else (p.error or "")
        return {"batch": str(p.batch_size), "status": p.status.upper(), "note": reason}
    row = {
        "batch": str(p.batch_size),
        "status": point_status(p),  # "contended 48%, ok" where other processes took a share of its cores
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
    # the picks stored with the run (``bench.jobs.report`` fills in those of a run stored without)
    rec = r.recommendation or Recommendation(best=None, knee=None, safe_max=None)
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


def _max_batch_line(search: MaxBatchResult | None) -> str | None:
    if search is None:
        return None
    mx, safe = search.max_batch_size, search.safe_batch_size
    probes = search.probe_count
    secs = search.seconds
    budget = search.budget_bytes
    parts = [f"exact max {mx}" if mx else "not even the smallest batch fit"]
    if search.failed_batch_size:
        parts.append(f"{search.failed_batch_size} ran out")
    if safe:
        parts.append(f"safe {safe}")
    if budget:
        parts.append(f"budget {fmt_bytes(budget)} ({search.budget_source})".replace(" ()", ""))
    parts.append(f"{probes} probes" + (f", {secs:.0f} s" if secs else ""))
    return "max batch: " + ", ".join(parts)


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

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):  # a '$' in a model name is text, not TeX
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
    files.write_atomic(html_path, env.get_template("report.html.j2").render(**context))
    files.write_atomic(md_path, env.get_template("report.md.j2").render(**context))
    files.write_atomic(
        out / "runs.json",
        json.dumps([{"label": s.label, "run_id": s.run_id, "source": s.source} for s in summaries], indent=2),
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
