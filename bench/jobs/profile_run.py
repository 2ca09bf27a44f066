"""Run a profile's matrix: max-batch searches and sweeps, stored in the history, then one report.

Resume: every finished cell is recorded in a manifest (``.bench/profiles/<name>.json``) under a
fingerprint of the environment (host, device, torch version, driver) and the configuration
(workload, batch sizes, measurement settings). ``resume=True`` skips cells whose fingerprint is
already there with a complete result file. Results are written per cell as they finish, so Ctrl-C
leaves everything finished saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.hw import env as env_mod
from bench.jobs.maxbatch import find_max_batch
from bench.jobs.profiles import Profile, ProfileEntry
from bench.jobs.report import write_report
from bench.jobs.sweep import powers_of_two_up_to, run_sweep
from bench.jobs.trace import trace_batch
from bench.present.display import profile_lines, profile_table, sweep_table
from bench.present.report import ReportRun, run_labels
from bench.results import files
from bench.results.codec import load_result, to_dict
from bench.results.errors import BenchError, StickyCudaError, failure_text
from bench.results.maxbatch import MaxBatchResult, load_max_batch
from bench.results.schema import Environment, SweepResult
from bench.results.store import import_file, save_run

MANIFEST_DIR = Path(".bench") / "profiles"


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell of the matrix."""

    label: str
    sweep_path: str | None
    max_batch_path: str | None = None
    skipped: bool = False  # resumed: already measured for this environment and configuration
    sweep: SweepResult | None = None
    search: MaxBatchResult | None = None  # the max-batch search (this run's, or a resumed file's)
    error: str | None = None
    trace_dir: str | None = None  # PyTorch profiler trace of the best batch, when the profile asks
    stored: bool = False  # its runs are in the history


@dataclass
class SuiteResult:
    profile: Profile
    cells: list[CellOutcome] = field(default_factory=list)
    report_paths: list[str] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)  # history ids of the stored runs
    history_warning: str | None = None  # the history could not take the runs (measuring went on)
    notices: list[str] = field(default_factory=list)  # what went wrong around the measurements


def environment_key(env: Environment) -> dict[str, Any]:
    """The parts of the environment that make a measurement comparable."""
    return {
        "hostname": env.hostname,
        "device": env.device_label,
        "gpu_count": env.gpu_count,
        "torch": env.torch_version,
        "cuda": env.cuda_version,
        "driver": env.gpu_driver_version,
        "threads": env.torch_num_threads,
    }


def fingerprint(entry: ProfileEntry, env: Environment) -> str:
    payload = {
        "env": environment_key(env),
        "workload": to_dict(entry.workload),
        "batch_sizes": list(entry.batch_sizes) if entry.batch_sizes else None,
        "up_to_max": entry.up_to_max,
        "settings": to_dict(entry.settings),
        "max_batch": entry.max_batch,
        "granularity": entry.granularity,
        "memory_limit": entry.memory_limit,
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Manifest:
    """fingerprint -> {"sweep": path, "max_batch": path}; rewritten atomically after each cell."""

    def __init__(self, name: str, base: Path = MANIFEST_DIR) -> None:
        self.path = base / f"{name}.json"
        self.cells: dict[str, dict[str, str | None]] = {}
        if self.path.is_file():
            try:
                self.cells = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self.cells = {}  # a damaged manifest only costs a re-run

    def done(self, key: str) -> dict[str, str | None] | None:
        cell = self.cells.get(key)
        if not cell or not cell.get("sweep"):
            return None
        path = cell["sweep"]
        try:
            if load_result(path).status != "complete":
                return None
        except Exception:
            return None
        return cell

    def record(self, key: str, sweep: str | None, max_batch: str | None) -> None:
        self.cells[key] = {"sweep": sweep, "max_batch": max_batch}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        files.write_json_atomic(
            self.path, json.dumps(self.cells, indent=2)
        )  # no temp file left, even on a full disk


def slug(text: str) -> str:
    return files.slug(text).strip("_")


EventFn = Callable[[str, dict[str, Any]], None]


def run_profile(
    profile: Profile,
    *,
    resume: bool = False,
    results_dir: Path | str = Path("bench_results"),
    on_cell: Callable[[int, int, ProfileEntry, str], None] | None = None,
    on_sweep_event: Callable[[Any], None] | None = None,
    manifest_dir: Path = MANIFEST_DIR,
    db_path: Path | str | None = None,
) -> SuiteResult:
    """Run every cell of ``profile`` in order. KeyboardInterrupt propagates; finished cells stay saved.

    ``on_cell(index, total, entry, state)`` is called with state "start", "trace", "skip" or "done".
    ``db_path``: store each run in the history as soon as its cell finishes (resumed cells too, if
    they are not there yet), so an interruption or a later failure loses nothing.
    """
    environment = env_mod.collect()
    manifest = Manifest(profile.name, manifest_dir)
    out_dir = Path(results_dir) / slug(profile.name)
    suite = SuiteResult(profile=profile)
    notify = on_cell or (lambda i, n, e, s: None)
    total = len(profile.entries)
    for index, entry in enumerate(profile.entries):
        key = fingerprint(entry, environment)
        cell_name = slug(entry.label)
        if resume and (done := manifest.done(key)):
            search_path = done.get("max_batch")
            try:
                cell = CellOutcome(
                    label=entry.label,
                    sweep_path=done["sweep"],
                    max_batch_path=search_path,
                    skipped=True,
                    sweep=load_result(done["sweep"]),
                    search=_read_search(search_path),
                )
            except BenchError:  # its saved files are gone, truncated or corrupt: measure it again
                notify(index, total, entry, "redo")
            else:
                notify(index, total, entry, "skip")
                suite.cells.append(_stored(cell, db_path, suite))
                continue
        notify(index, total, entry, "start")
        max_result = None
        max_path = None
        sizes = entry.batch_sizes
        problems: list[str] = []  # what failed in this cell; the other cells still run
        sticky = False  # ... unless the CUDA context died: then nothing after it can run here
        if entry.max_batch:
            try:
                max_result, max_path = _search_max_batch(entry, out_dir / f"{cell_name}.max_batch.json")
            except Exception as exc:  # noqa: BLE001 - one cell's failure, said in one line
                problems.append(f"max-batch search failed: {failure_text(exc)}")
                sticky = sticky or isinstance(exc, StickyCudaError)
        if entry.up_to_max:  # "max": powers of two up to the searched safe batch, or nothing
            safe = (
                (max_result.safe_batch_size if max_result is not None else None)
                if entry.max_batch
                else _twin_safe_batch(suite, entry, profile)  # inference: its training twin's
            )
            if safe:
                sizes = powers_of_two_up_to(safe)
            elif not problems:
                problems.append("batch_sizes = 'max': the max-batch search found no batch that fits")
        sweep_path = out_dir / f"{cell_name}.json"
        result = None
        try:
            if entry.up_to_max and problems:  # no searched max: never sweep the defaults instead
                pass
            else:
                result = run_sweep(  # stored below with its search, once the cell is done
                    entry.workload, sizes, entry.settings, out_path=sweep_path, on_event=on_sweep_event,
                    search=max_result, noise_scale=entry.noise_scale, noise_source=entry.noise_source,
                )  # fmt: skip
                if result.best_point() is None:  # failed at every size without raising
                    problems.append("sweep failed: no batch size measured (every size failed)")
        except Exception as exc:  # noqa: BLE001 - the cell failed: keep what it measured, go on
            result = getattr(exc, "partial_result", None)  # every finished point, file finalised
            problems.append(f"sweep failed: {failure_text(exc)}")
            sticky = sticky or isinstance(exc, StickyCudaError)
        except KeyboardInterrupt:  # the points finished so far are in the file: keep them in the history
            if db_path is not None and sweep_path.is_file() and suite.history_warning is None:
                try:
                    import_file(db_path, str(sweep_path))
                except BenchError as exc:
                    suite.history_warning = str(exc)
            raise
        trace_dir = None
        if entry.trace and result is not None and (best := result.best_point()) is not None:
            notify(index, total, entry, "trace")
            try:
                trace_dir = _trace_best(entry, best.batch_size, out_dir / "traces" / cell_name)
            except Exception as exc:  # noqa: BLE001 - the measurements stand without their trace
                problems.append(f"trace failed: {failure_text(exc)}")
        if not problems:  # a failed cell is measured again by --resume
            try:
                manifest.record(key, str(sweep_path), max_path)
            except OSError as exc:  # a full disk: the measurements stand; only --resume forgets them
                note = f"cannot record the finished cell for --resume ({exc.strerror or exc})"
                if note not in suite.notices:
                    suite.notices.append(note)
        cell = CellOutcome(
            label=entry.label,
            sweep_path=str(sweep_path) if result is not None else None,
            max_batch_path=max_path,
            sweep=result,
            search=max_result,
            error="; ".join(problems) or None,
            trace_dir=trace_dir,
        )
        suite.cells.append(_stored(cell, db_path, suite))
        notify(index, total, entry, "failed" if problems else "done")
        if sticky and index + 1 < total:
            suite.notices.append(
                f"a sticky CUDA error in {entry.label} ended the profile: the {total - index - 1} "
                "configuration(s) after it were not run (this process's CUDA context is dead); "
                "run the profile again with --resume"
            )
            break
    return suite


def _twin_safe_batch(suite: SuiteResult, entry: ProfileEntry, profile: Profile) -> int | None:
    """The safe max searched for the training cell with the same model, precision, layout and
    input (training needs more memory than inference, so it is a safe bound for both)."""
    twin = replace(entry.workload, mode="train")
    for cell, done in zip(suite.cells, profile.entries, strict=False):
        if done.workload == twin and cell.search is not None:
            return cell.search.safe_batch_size
    return None


def _read_search(path: str | None) -> MaxBatchResult | None:
    """A resumed cell's max-batch search, read once from its file (None: none was run); a truncated
    or malformed file is one line naming it, not a crash later."""
    return load_max_batch(path) if path and Path(path).is_file() else None


def _stored(cell: CellOutcome, db_path: Path | str | None, suite: SuiteResult) -> CellOutcome:
    """Save the cell's runs in the history (replacing by run id: storing twice adds nothing).
    A history that cannot take them (read-only, full, corrupt) is remembered as the suite's one
    warning and not tried again: measuring goes on, the result files keep every run."""
    if db_path is None or suite.history_warning is not None:
        return cell

    try:
        for run in (cell.sweep, cell.search):
            if run is not None:
                suite.run_ids.append(save_run(db_path, run))
    except BenchError as exc:
        suite.history_warning = str(exc)
        return cell
    return replace(cell, stored=True)


def _search_max_batch(entry: ProfileEntry, out_path: Path) -> tuple[MaxBatchResult, str]:
    """Max-batch search for one cell; its JSON beside the sweep's (stored with the cell, later)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = find_max_batch(
        entry.workload, out_path=out_path, granularity=entry.granularity, memory_limit=entry.memory_limit
    )
    return result, str(out_path)


def _trace_best(entry: ProfileEntry, batch_size: int, out_dir: Path) -> str:
    """A PyTorch profiler trace (Perfetto/HTA) and top-operator table of the best batch; the Nsight
    Systems capture of the same workload is ``bench trace`` (it needs nsys on the machine)."""
    return str(trace_batch(entry.workload, batch_size, out_dir=out_dir, capture_nsys=False).out_dir)


def _copy_beside(path: str | None, report_dir: Path | str) -> str:
    """Copy a result file into ``report_dir/results/`` so the report travels with its data;
    returns the copy's path relative to the report."""
    if not path or not Path(path).is_file():
        return path or ""
    dest = Path(report_dir) / "results" / Path(path).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, dest)
    return f"results/{dest.name}"


def write_profile_report(suite: SuiteResult, report_dir: Path | str) -> Any:
    """One report over every cell of the matrix (resumed cells included), max batches attached."""
    cells = [c for c in suite.cells if c.sweep is not None]
    if not cells:
        return None
    labels = run_labels([c.sweep for c in cells])
    runs = []
    for cell, label in zip(cells, labels, strict=True):
        trace = None
        if cell.trace_dir:
            trace = os.path.relpath(cell.trace_dir, report_dir)
        source = _copy_beside(cell.sweep_path, report_dir)
        _copy_beside(cell.max_batch_path, report_dir)
        runs.append(
            ReportRun(label=label, result=cell.sweep, source=source, max_batch=cell.search, trace=trace)
        )
    profile = suite.profile
    title = f"bench run {profile.name}" + (f": {profile.description}" if profile.description else "")
    files = write_report(runs, report_dir, title=title)
    suite.report_paths[:] = [str(files.html), str(files.markdown)]
    return files


def finish_profile(
    suite: SuiteResult, *, db_path: Path | str, report_dir: Path | str | None, console: Any
) -> SuiteResult:
    """Store every measured run in the history, write the report (``report_dir``, else the
    profile's ``report``), and print the tables, the recommendations and what failed."""
    suite.cells[:] = [cell if cell.stored else _stored(cell, db_path, suite) for cell in suite.cells]
    for cell in suite.cells:
        if cell.sweep is not None and not cell.skipped:
            console.print(sweep_table(cell.sweep))
    console.print(profile_table(suite.profile.name, suite.cells))
    try:
        files = write_profile_report(suite, report_dir or suite.profile.report_dir)
    except OSError as exc:  # a full disk: the runs are in the history; say so in one line
        files = None
        suite.notices.append(f"report not written: {exc.strerror or exc} ({exc.filename or report_dir})")
    for line in profile_lines(suite.cells, files):
        console.print(line, highlight=False)
    return suite
