"""Pieces every CLI command shares: the console, option types, and workload flags parsed once.

Option types are defined here once and reused by each command (sweep, max-batch, trace, ...), so
the flags mean the same everywhere.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bench.cli.help import DATA_PANEL, OUTPUT_PANEL, WORKLOAD_PANEL
from bench.hw.device import check_device, default_device
from bench.measure.models import resolve
from bench.results.errors import BenchError
from bench.results.schema import MeasureSettings, Workload, default_min_time
from bench.results.store import DEFAULT_DB, import_file, save_run  # noqa: F401 - the commands take the default from here
from bench.results.units import fmt_bytes, fmt_seconds  # noqa: F401 - the commands format through these

DB_ENV = "BENCH_DB"  # overrides the default history path (tests point it into a temp folder)
DB_HELP = "the results history (SQLite); a relative path is relative to the current directory"


def _defaults(cls: type) -> SimpleNamespace:
    """A dataclass's field defaults by name: the flags default to what the library defaults to."""
    return SimpleNamespace(
        **{f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    )


WORKLOAD = _defaults(Workload)  # e.g. ``mode: ModeOpt = WORKLOAD.mode``
SETTINGS = _defaults(MeasureSettings)
DEFAULT_MODEL = "efficientnet_b0"

# Results and tables go to stdout, progress and notices to stderr. Redirected to a file or a CI
# log, rich would wrap tables at 80 columns; give them room instead.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

ModelArg = Annotated[
    str,
    typer.Argument(
        help="torchvision name (efficientnet_b0, resnet50, ...), timm:NAME, or package.module:factory"
    ),
]
ModeOpt = Annotated[
    str,
    typer.Option("--mode", help="train (fwd+loss+bwd+optimizer) or infer", rich_help_panel=WORKLOAD_PANEL),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32 (strict, TF32 off) | tf32 | bf16 | fp16 (autocast)",
        rich_help_panel=WORKLOAD_PANEL,
    ),
]
ChannelsLastOpt = Annotated[
    bool,
    typer.Option(
        "--channels-last/--no-channels-last",
        show_default="off",
        help="NHWC memory format (default: off)",
        rich_help_panel=WORKLOAD_PANEL,
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        show_default="off",
        help="torch.compile the model (default: off)",
        rich_help_panel=WORKLOAD_PANEL,
    ),
]
CompileModeOpt = Annotated[
    str | None,
    typer.Option(
        "--compile-mode",
        help="with --compile: default | reduce-overhead (CUDA graphs) | max-autotune | max-autotune-no-cudagraphs",
        rich_help_panel=WORKLOAD_PANEL,
    ),
]
ImageSizeOpt = Annotated[
    int, typer.Option("--image-size", help="input height = width, pixels", rich_help_panel=WORKLOAD_PANEL)
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device", help="cpu, cuda or cuda:N (default: cuda if available)", rich_help_panel=WORKLOAD_PANEL
    ),
]
H2dOpt = Annotated[
    bool,
    typer.Option(
        "--h2d/--no-h2d",
        show_default="off",
        help="copy the batch host->device (pinned) every step (default: off)",
        rich_help_panel=WORKLOAD_PANEL,
    ),
]
OptimizerOpt = Annotated[
    str, typer.Option("--optimizer", help="sgd (momentum 0.9) or adamw", rich_help_panel=WORKLOAD_PANEL)
]
CudnnBenchmarkOpt = Annotated[
    bool,
    typer.Option(
        "--cudnn-benchmark/--no-cudnn-benchmark",
        show_default="on",
        help="CUDA: cuDNN autotuning, as real training uses it; its cost lands in each new shape's first "
        "step (see the time accounting), never in the measured window (default: on)",
        rich_help_panel=WORKLOAD_PANEL,
    ),
]
CudnnBenchmarkLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--cudnn-benchmark-limit",
        min=0,
        help="CUDA: the most cuDNN algorithms autotuning tries per new shape "
        "(torch.backends.cudnn.benchmark_limit; torch's default 10, 0 = all): fewer shorten each first step",
    ),
]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="synthetic (a random batch already on the device) or loader (JPEGs decoded and augmented "
        "by a DataLoader every step)",
        rich_help_panel=DATA_PANEL,
    ),
]
WorkersOpt = Annotated[
    str,
    typer.Option(
        "--workers",
        help="--data loader: DataLoader worker processes; a list 0,2,4 runs the sweep once per count "
        "(one result file each) to show where the input pipeline sets the pace",
        rich_help_panel=DATA_PANEL,
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        help="--data loader: an ImageFolder tree (default: in-memory JPEGs)",
        rich_help_panel=DATA_PANEL,
    ),
]
DbOpt = Annotated[
    Path | None, typer.Option("--db", envvar=DB_ENV, help=DB_HELP, rich_help_panel=OUTPUT_PANEL)
]
DatasetSizeOpt = Annotated[
    int,
    typer.Option(
        "--dataset-size", help="samples per epoch for the epoch-time estimate", rich_help_panel=WORKLOAD_PANEL
    ),
]


def build_workload(model: str, *, device: str | None = None, **flags: Any) -> Workload:
    """Flags -> validated Workload (BenchError with one line on bad input). A flag left out takes
    Workload's default; ``device=None`` is CUDA when there is one, else the CPU."""
    device = default_device() if device is None else device  # '' is a mistake, not "the default"
    check_device(device)
    for name in ("mode", "precision", "optimizer", "data"):  # the choices are lower case
        if isinstance(flags.get(name), str):
            flags[name] = flags[name].lower()
    return Workload(model=model, device=device, **flags)


def check_workload(workload: Workload) -> None:
    """Device and model are the user's to fix: say so in one line before any display or banner."""
    check_device(workload.device)
    resolve(workload.model)


def build_settings(**kwargs: object) -> MeasureSettings:
    default_min_time(kwargs)
    try:
        return MeasureSettings(**kwargs)  # type: ignore[arg-type]
    except TypeError as exc:  # pragma: no cover - programming error
        raise BenchError(str(exc)) from None


def store_in_history(db: Path | None, result: object) -> bool:
    """Add a run to the history; a history problem is a warning, never a lost measurement.
    True when stored."""
    if db is None:
        return False

    try:
        if isinstance(result, str):
            import_file(db, result)
        else:
            save_run(db, result)
    except (BenchError, OSError) as exc:
        err_console.print(
            f"[yellow]warning:[/] not stored in the history: {escape(str(exc))}", highlight=False
        )
        return False
    return True
