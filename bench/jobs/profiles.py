"""Declarative benchmark suites: a TOML profile -> a matrix of sweeps (and max-batch searches).

A profile (``profiles/NAME.toml``) is read with the standard library's tomllib and validated where it
enters: every error names the file, the key and what is wrong, and unknown keys are errors. Keys::

    description = "one line"              # also shown by `bench run --list`
    models      = ["efficientnet_b0"]     # required; torchvision, timm:NAME, pkg.mod:factory
    modes       = ["train"]               # train | infer
    precisions  = ["fp32"]                # fp32 | tf32 | bf16 | fp16
    channels_last = false                 # a bool, or a list of bools to cover both
    compile     = false                   # likewise
    device      = "auto"                  # auto | cpu | cuda | cuda:N
    image_size  = 224                     # pixels (image models)
    seq_len     = 256                     # tokens per sample (sequence models)
    dataset_size = 1281167                # samples per epoch, for the epoch estimate
    h2d         = false
    optimizer   = "sgd"
    batch_sizes = [1, 2, 4]               # a list, "8:256" (powers of two), or "max"
                                          # ("max": powers of two up to the searched max batch)
    max_batch   = false                   # search the largest batch that fits (train entries)
    granularity = 8                       # max-batch granularity (default: 1 on a GPU, 8 on CPU)
    memory_limit = "8GiB"                 # CPU max-batch budget (default: a safe share of RAM)
    trace       = false                   # also export a trace of the best batch
    report      = "reports/NAME"          # where `bench run` writes the report

    [data]                                # the input pipeline (default: a synthetic batch on the device)
    source  = "loader"                    # synthetic | loader (JPEGs decoded and augmented per step)
    workers = [0, 2, 4]                   # DataLoader workers: a count, or a list (one sweep each)
    dir     = "/data/imagenet/train"      # an ImageFolder tree (default: in-memory JPEGs)

    [measure]
    warmup = 5
    min_steps = 10
    max_time = 10.0                       # seconds of timed steps per point at most
    min_time = 1.0
    target_ci = 0.02
    sample_interval = 0.05
    isolate = true                        # each point in a fresh process (default: CPU yes, CUDA no)
    repeat = 3                            # independent measurements per batch size (regression gates)
    check_contention = true               # mark points other processes slowed down (not ranked)
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from bench.hw.device import check_device, default_device
from bench.jobs.sweep import parse_batch_sizes
from bench.measure.models import resolve
from bench.results.errors import BenchError
from bench.results.noise import parse_noise_scale
from bench.results.schema import DATA_SOURCES, MODES, PRECISIONS, MeasureSettings, Workload, default_min_time
from bench.results.units import parse_bytes


def shipped_profiles_dir() -> Path:
    """The profiles that ship with bench, wherever bench is installed.

    In a wheel they are package data, ``bench/profiles_data/*.toml`` (pyproject.toml maps the repository's
    top-level ``profiles/`` there); in a source checkout or an editable install, ``profiles/`` beside the package.
    """
    packaged = resources.files("bench") / "profiles_data"
    if packaged.is_dir():
        return Path(str(packaged))  # bench installs as plain files (zip-safe is not a goal): a real folder
    return Path(__file__).resolve().parents[2] / "profiles"


PROFILES_DIR = shipped_profiles_dir()

_TOP_KEYS = {
    "description", "models", "modes", "precisions", "channels_last", "compile", "device",
    "image_size", "seq_len", "dataset_size", "h2d", "optimizer", "batch_sizes", "max_batch",
    "granularity", "memory_limit", "trace", "report", "measure", "data", "noise_scale",
}  # fmt: skip
_DATA_KEYS = {"source", "workers", "dir"}
_MEASURE_KEYS = {
    "warmup": ("warmup_steps", int),
    "min_steps": ("min_steps", int),
    "max_steps": ("max_steps", int),
    "max_time": ("max_time_seconds", float),
    "min_time": ("min_time_seconds", float),
    "target_ci": ("target_rel_ci", float),
    "sample_interval": ("sample_interval_seconds", float),
    "isolate": ("isolate", bool),
    "repeat": ("repeat", int),
    "check_contention": ("check_contention", bool),
}


def _default(field_name: str) -> object:
    """A Workload field's default: the schema declares it once, profiles do not repeat it."""
    return {f.name: f.default for f in dataclasses.fields(Workload)}[field_name]


@dataclass(frozen=True)
class ProfileEntry:
    """One cell of the matrix: a workload and how to measure it."""

    workload: Workload
    batch_sizes: tuple[int, ...] | None  # None: the device's default (or up to the max batch)
    up_to_max: bool  # batch_sizes = "max": powers of two up to the searched max, plus the max
    settings: MeasureSettings
    max_batch: bool
    granularity: int | None  # None: the device's default (bench.jobs.maxbatch.default_granularity)
    memory_limit: str | None
    trace: bool
    noise_scale: float | None = None  # B_noise: adds goodput to the recommendation
    noise_source: str | None = None

    @property
    def label(self) -> str:
        w = self.workload
        parts = [w.model, w.mode, w.precision]
        if w.channels_last:
            parts.append("channels-last")
        if w.compile:
            parts.append("compile")
        if w.data == "loader":
            parts.append(f"loader {w.workers} workers")
        return " ".join(parts)


@dataclass(frozen=True)
class Profile:
    name: str
    path: str
    description: str
    entries: tuple[ProfileEntry, ...]
    report_dir: str


class _Checker:
    """Reads typed values out of the parsed TOML, raising errors that name file and key."""

    def __init__(self, path: str, data: dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix  # "measure." for keys of the [measure] table

    def fail(self, key: str, what: str) -> BenchError:
        return BenchError(f"{self.path}: key '{self.prefix}{key}': {what}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_names(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_names(kinds)}, got {type(value).__name__} {value!r}")
        return value

    def str_list(self, key: str, default: list[str], allowed: tuple[str, ...] | None = None) -> list[str]:
        value = self.get(key, (list, str), default)
        items = [value] if isinstance(value, str) else value
        if not items:
            raise self.fail(key, "must not be empty")
        for item in items:
            if not isinstance(item, str):
                raise self.fail(key, f"expected strings, got {item!r}")
            if allowed is not None and item.lower() not in allowed:
                raise self.fail(key, f"unknown value {item!r} (choose {', '.join(allowed)})")
        return [i.lower() if allowed else i for i in items]

    def bool_list(self, key: str) -> list[bool]:
        value = self.get(key, (bool, list), False)
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, bool) for v in items):
            raise self.fail(key, "expected true, false, or a list of them")
        return list(dict.fromkeys(items))

    def positive_int(self, key: str, default: int | None) -> int | None:
        value = self.get(key, int, default)
        if value is not None and value <= 0:
            raise self.fail(key, f"must be a positive integer, got {value}")
        return value


def _names(kinds: tuple[type, ...]) -> str:
    words = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def find_profile(name_or_path: str) -> Path:
    """'quickstart' -> profiles/quickstart.toml (in the cwd, else bench's own); or a path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise BenchError(f"profile {name_or_path}: no such file")
        return path
    for base in (Path("profiles"), PROFILES_DIR):
        candidate = base / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in PROFILES_DIR.glob("*.toml")) if PROFILES_DIR.is_dir() else []
    raise BenchError(
        f"no profile named {name_or_path!r}" + (f" (available: {', '.join(available)})" if available else "")
    )


def load_profile(name_or_path: str, device_override: str | None = None) -> Profile:
    """Parse and validate a profile; BenchError naming file and key on any problem."""
    path = find_profile(name_or_path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{where}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{where}: cannot read ({exc})") from None
    return parse_profile(data, where, path.stem, device_override)


def parse_profile(data: dict[str, Any], where: str, name: str, device_override: str | None = None) -> Profile:
    c = _Checker(where, data)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise c.fail(unknown[0], f"unknown key (known keys: {', '.join(sorted(_TOP_KEYS))})")
    if "models" not in data:
        raise c.fail("models", "required: a list of model names")
    models = c.str_list("models", [])
    if not models:
        raise c.fail("models", "expected a non-empty list of model names")
    for model in models:  # an unknown model fails now, not after the configurations before it ran
        try:
            resolve(model)
        except BenchError as exc:
            raise c.fail("models", str(exc)) from None
    modes = c.str_list("modes", ["train"], MODES)
    precisions = c.str_list("precisions", ["fp32"], PRECISIONS)
    channels_last = c.bool_list("channels_last")
    compiles = c.bool_list("compile")
    device = device_override if device_override is not None else c.get("device", str, "auto")
    if device == "auto":
        device = default_device()
    try:
        check_device(device)  # a GPU asked for where there is none fails here, not mid-run
    except BenchError as exc:
        if device_override is not None:
            raise BenchError(f"--device: {exc}") from None
        raise c.fail("device", str(exc)) from None
    image_size = c.positive_int("image_size", _default("image_size"))
    seq_len = c.positive_int("seq_len", None)
    dataset_size = c.positive_int("dataset_size", _default("dataset_size"))
    h2d = c.get("h2d", bool, _default("h2d"))
    optimizer = c.get("optimizer", str, _default("optimizer"))
    if optimizer not in ("sgd", "adamw"):
        raise c.fail("optimizer", f"unknown optimizer {optimizer!r} (choose sgd, adamw)")
    max_batch = c.get("max_batch", bool, False)
    granularity = c.positive_int("granularity", None)
    memory_limit = c.get("memory_limit", str, None)
    if memory_limit is not None:
        try:
            parse_bytes(memory_limit)
        except BenchError as exc:
            raise c.fail("memory_limit", str(exc)) from None
    trace = c.get("trace", bool, False)
    report = c.get("report", str, f"reports/{name}")
    description = c.get("description", str, "")
    noise = _noise_scale(c, where)

    raw_sizes = c.get("batch_sizes", (list, str), None)
    up_to_max = raw_sizes == "max"
    sizes: tuple[int, ...] | None = None
    if up_to_max and not max_batch:
        raise c.fail("batch_sizes", '"max" needs max_batch = true')
    if max_batch and "train" not in modes:
        raise c.fail("max_batch", 'the search is of the training step: add "train" to modes, or drop it')
    if isinstance(raw_sizes, list):
        if not raw_sizes or not all(isinstance(b, int) and not isinstance(b, bool) for b in raw_sizes):
            raise c.fail("batch_sizes", "expected a non-empty list of integers")
        try:
            sizes = parse_batch_sizes(",".join(str(b) for b in raw_sizes))
        except BenchError as exc:
            raise c.fail("batch_sizes", str(exc)) from None
    elif isinstance(raw_sizes, str) and not up_to_max:
        try:
            sizes = parse_batch_sizes(raw_sizes)
        except BenchError as exc:
            raise c.fail("batch_sizes", str(exc)) from None

    measure = c.get("measure", dict, {})
    mc = _Checker(where, measure, prefix="measure.")
    unknown = sorted(set(measure) - set(_MEASURE_KEYS))
    if unknown:
        raise mc.fail(unknown[0], f"unknown key (known keys: {', '.join(sorted(_MEASURE_KEYS))})")
    settings_kwargs = {}
    for key, (field_name, kind) in _MEASURE_KEYS.items():
        if key in measure:
            settings_kwargs[field_name] = mc.get(key, kind, None)
    default_min_time(settings_kwargs)
    try:
        settings = MeasureSettings(**settings_kwargs)
    except BenchError as exc:
        culprit = next(
            (
                k
                for k, (f, _) in _MEASURE_KEYS.items()
                if f in settings_kwargs and _fails_alone(f, settings_kwargs[f])
            ),
            None,
        )
        if culprit is not None:
            raise mc.fail(culprit, str(exc)) from None
        raise BenchError(f"{where}: table [measure]: {exc}") from None

    source, worker_counts, data_dir = _data_section(where, c.get("data", dict, {}))
    if source == "loader":
        for model in models:
            if resolve(model).make_batch is not None:
                raise BenchError(
                    f"{where}: key 'data.source': the loader feeds images; model {model} makes its own batches"
                )

    entries = []
    for model, mode, precision, cl, comp, workers in itertools.product(
        models, modes, precisions, channels_last, compiles, worker_counts
    ):
        try:
            workload = Workload(
                model=model, mode=mode, precision=precision, channels_last=cl, compile=comp,
                image_size=image_size, device=device, h2d=h2d, optimizer=optimizer,
                dataset_size=dataset_size, seq_len=seq_len,
                data=source, workers=workers, data_dir=data_dir,
            )  # fmt: skip
        except BenchError as exc:
            raise BenchError(f"{where}: {exc}") from None
        entries.append(
            ProfileEntry(
                workload=workload,
                batch_sizes=sizes,
                up_to_max=up_to_max,
                settings=settings,
                max_batch=max_batch and mode == "train",
                granularity=granularity,
                memory_limit=memory_limit,
                trace=trace,
                noise_scale=noise[0] if noise else None,
                noise_source=noise[1] if noise else None,
            )
        )
    return Profile(name=name, path=where, description=description, entries=tuple(entries), report_dir=report)


def _noise_scale(c: Any, where: str) -> tuple[float, str] | None:
    """``noise_scale = 230`` or ``noise_scale = "noise.json"`` (a `bench noise` result, relative
    to the profile's folder) -> (B_noise, its source)."""
    value = c.get("noise_scale", (float, str), None)
    if value is None:
        return None
    if isinstance(value, str) and not Path(value).is_absolute() and (Path(where).parent / value).is_file():
        value = str(Path(where).parent / value)
    try:
        return parse_noise_scale(value)
    except BenchError as exc:
        raise c.fail("noise_scale", str(exc)) from None


def _data_section(where: str, data: dict[str, Any]) -> tuple[str, list[int], str | None]:
    """The ``[data]`` table -> (source, worker counts, ImageFolder dir); errors name file and key."""
    dc = _Checker(where, data, prefix="data.")
    unknown = sorted(set(data) - _DATA_KEYS)
    if unknown:
        raise dc.fail(unknown[0], f"unknown key (known keys: {', '.join(sorted(_DATA_KEYS))})")
    source = dc.get("source", str, "loader" if data else "synthetic").lower()
    if source not in DATA_SOURCES:
        raise dc.fail("source", f"unknown value {source!r} (choose {', '.join(DATA_SOURCES)})")
    raw = dc.get("workers", (int, list), 0)
    counts = raw if isinstance(raw, list) else [raw]
    if not counts or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise dc.fail("workers", f"expected a count >= 0 or a non-empty list of them, got {raw!r}")
    data_dir = dc.get("dir", str, None)
    if source != "loader" and ("workers" in data or data_dir is not None):
        raise dc.fail("workers" if "workers" in data else "dir", 'needs source = "loader"')
    return source, list(dict.fromkeys(counts)), data_dir


def _fails_alone(field_name: str, value: Any) -> bool:
    """Is this one [measure] value invalid on its own (other settings at their defaults)?"""
    try:
        MeasureSettings(**{field_name: value})
    except BenchError:
        return True
    return False


def available_profiles() -> list[tuple[str, str]]:
    """(name, description) of the profiles shipped with bench (``shipped_profiles_dir()``)."""
    out = []
    for path in sorted(PROFILES_DIR.glob("*.toml")):
        try:
            desc = tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")
        except (OSError, tomllib.TOMLDecodeError):
            desc = "(unreadable)"
        out.append((path.stem, desc))
    return out
