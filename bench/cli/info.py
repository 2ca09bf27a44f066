"""``bench env`` and ``bench models``: what results are recorded with, and what can be measured."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bench.cli.common import console, err_console
from bench.hw import env
from bench.measure.models import timm_models, torchvision_models, zoo_models
from bench.present.display import environment_table
from bench.results.codec import to_dict
from bench.results.errors import BenchError


def env_cmd(
    json_only: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the machine and software environment results are recorded with."""
    info = env.collect()
    if json_only:
        print(json.dumps(to_dict(info), indent=2))
        return

    console.print(environment_table(info))


def models(
    filter: Annotated[str | None, typer.Argument(help="substring to filter names")] = None,
    timm: Annotated[bool, typer.Option("--timm", help="also list timm models")] = False,
) -> None:
    """List model names bench can build (torchvision, bench's own; timm with --timm)."""
    names = torchvision_models() + zoo_models()
    if timm:
        extra = timm_models()
        if extra is None:
            raise BenchError("timm is not installed: pip install 'bench[timm]'")
        names += [f"timm:{n}" for n in extra]
    if filter:
        names = [n for n in names if filter.lower() in n.lower()]
    for n in names:
        print(n)
    if not timm:
        err_console.print("[dim]also: timm:NAME (bench models --timm), or your own package.module:factory[/]")


def register(app: typer.Typer) -> None:
    app.command("env")(env_cmd)
    app.command()(models)
