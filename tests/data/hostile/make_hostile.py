"""Write the hostile result-file corpus (issue 23, item 16) into a folder: every file here must either
load or be refused in one `error:` line by every command that reads results (import, diagnose,
report, compare, history, baseline set). Generated from the valid CPU fixture, so the corpus follows
the schema as it changes; ``python tests/data/hostile/make_hostile.py DIR`` writes it by hand.

Each case is one name -> (a function of a fresh copy of the valid run -> the file's text)."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

VALID = Path(__file__).resolve().parents[1] / "cpu_resnet18.json"


def _point(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], str]:
    def make(run: dict[str, Any]) -> str:
        change(run["points"][0])
        return json.dumps(run)

    return make


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: p.update(values)


def _run(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], str]:
    def make(run: dict[str, Any]) -> str:
        change(run)
        return json.dumps(run)

    return make


def _deep(run: dict[str, Any]) -> str:
    return json.dumps(run)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _huge_int(run: dict[str, Any]) -> str:
    return json.dumps(run).replace('"batch_size": 2', '"batch_size": ' + "9" * 5000, 1)


def _nan_sps(run: dict[str, Any]) -> str:
    for p in run["points"]:
        p["samples_per_sec"] = float("nan")
    return json.dumps(run)  # NaN tokens: what an earlier bench (or a hand edit) may hold


def _inf_sps(sign: float) -> Callable[[dict[str, Any]], str]:
    def make(run: dict[str, Any]) -> str:
        run["points"][1]["samples_per_sec"] = sign * float("inf")
        return json.dumps(run)

    return make


def _set_steps(value: float) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        p["step_seconds"] = [value] * len(p["step_seconds"])
        if p.get("step_stats"):
            for key in ("median", "mean", "min", "max"):
                if key in p["step_stats"]:
                    p["step_stats"][key] = value

    return change


MARKUP = "[/x][bold]$\\undefinedcmd$[/bold]"

CASES: dict[str, Callable[[dict[str, Any]], str]] = {
    "valid": lambda run: json.dumps(run),
    "deep_nesting": _deep,
    "huge_int": _huge_int,
    "batch_zero": _point(_set(batch_size=0)),
    "batch_negative": _point(_set(batch_size=-4)),
    "batch_float": _point(_set(batch_size=2.5)),
    "nan_samples_per_sec": _nan_sps,
    "inf_samples_per_sec": _inf_sps(1.0),
    "minus_inf_samples_per_sec": _inf_sps(-1.0),
    "negative_samples_per_sec": _point(_set(samples_per_sec=-10.0)),
    "median_zero": _point(_set_steps(0.0)),
    "negative_steps": _point(_set_steps(-0.1)),
    "unknown_point_status": _point(_set(status="exploded")),
    "mathtext_model_name": _run(lambda r: r["workload"].update(model="$\\undefinedcmd$")),
    "markup_model_name": _run(lambda r: r["workload"].update(model=MARKUP)),
    "markup_error": _point(_set(status="error", error=MARKUP, samples_per_sec=None, step_seconds=[])),
    "markup_notice": _run(lambda r: r.update(notices=[MARKUP])),
    "negative_repeat": _run(lambda r: r["settings"].update(repeat=-3)),
    "repeats_not_a_list": _point(_set(repeats=5)),
    "points_not_a_list": _run(lambda r: r.update(points={"a": 1})),
    "no_points": _run(lambda r: r.update(points=[])),
    "all_failed": _run(
        lambda r: [
            p.update(status="error", error="boom", samples_per_sec=None, step_seconds=[]) for p in r["points"]
        ]
    ),
    "string_step": _point(_set(step_seconds=["fast"] * 3)),
    "null_workload": _run(lambda r: r.update(workload=None)),
    "not_an_object": lambda run: "[1, 2, 3]",
    "truncated": lambda run: json.dumps(run)[:200],
    "not_utf8": lambda run: "\udcff",  # written with surrogateescape: one raw 0xff byte
    "empty": lambda run: "",
    "unknown_kind": _run(lambda r: r.update(kind="teapot")),
    "future_schema": _run(lambda r: r.update(schema_version=999)),
}


def write_corpus(folder: Path) -> list[Path]:
    """Every case as ``folder/NAME.json``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    valid = json.loads(VALID.read_text(encoding="utf-8"))
    paths = []
    for name, make in CASES.items():
        path = folder / f"{name}.json"
        path.write_bytes(make(copy.deepcopy(valid)).encode("utf-8", "surrogateescape"))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(written)
