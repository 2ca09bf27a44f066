"""`--help` in panels that stay readable at 80 columns.

Options name their panel with typer's ``rich_help_panel``; click's plain formatter (which wraps
words and never cuts a help text short, unlike rich's table cells at 80 columns) prints one
section per panel (``PANEL_ORDER``, then ``Options``). Flags show no type, values their
metavar.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

WORKLOAD_PANEL = "Workload"
DATA_PANEL = "Input data"
MEASURE_PANEL = "Measurement"
OUTPUT_PANEL = "Output and history"
ADVICE_PANEL = "Recommendation and advice"
DIST_PANEL = "Several processes (torchrun)"
PANEL_ORDER = (WORKLOAD_PANEL, DATA_PANEL, MEASURE_PANEL, OUTPUT_PANEL, ADVICE_PANEL, DIST_PANEL)


class PanelCommand(TyperCommand):
    """A command whose options are grouped by their ``rich_help_panel`` (``Options`` for the rest)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args: list[tuple[str, str]] = []
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        order = {title: i for i, title in enumerate(PANEL_ORDER)}
        for title, rows in sorted(panels.items(), key=lambda kv: order.get(kv[0], len(order))):
            with formatter.section(title):
                formatter.write_dl(rows)


def use_panels(app: Any) -> None:
    """Every command registered on ``app`` so far renders its help with ``PanelCommand``."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # typer's default
            info.cls = PanelCommand
