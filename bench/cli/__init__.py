"""The ``bench`` command line: thin wrappers over library calls a user could make from Python.

Every user error arrives as BenchError (or a click usage error) and leaves as one line on stderr
with exit code 2. Ctrl-C exits 130 after the results file is marked "interrupted".

One module per group of commands, each with a ``register(app)``; the options they share are
declared once in ``bench.cli.common``.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

import typer
from rich.markup import escape

from bench.cli import info, maxbatch, noise, profiles, report, sweep, trace
from bench.cli.common import err_console
from bench.results.errors import BenchError, first_line

app = typer.Typer(
    name="bench",
    help="Throughput profiler and benchmark suite for PyTorch training.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# in this order in `bench --help`
for _commands in (sweep, info, maxbatch, noise, trace, report, profiles):
    _commands.register(app)


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(ClickException, UsageError, Exit, Abort) classes from click and typer's vendored copy.

    Newer typer vendors its own click (``typer._click``); older typer uses click itself.
    """
    modules = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass

    def classes(attr: str) -> tuple[type, ...]:
        return tuple(getattr(m, attr) for m in modules if hasattr(m, attr))

    return classes("ClickException"), classes("UsageError"), classes("Exit"), classes("Abort")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the typer app, turning user errors into one line and exit code 2."""
    click_error, usage_error, exit_error, abort_error = _click_exceptions()
    command = typer.main.get_command(app)
    previous = _sigterm_as_interrupt()
    try:
        rv = command.main(args=argv, prog_name="bench", standalone_mode=False)
    except BenchError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True, markup=True)
        return 2
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `bench` alone: show the help
            text = exc.format_message()  # older click: the help text; newer typer printed it
            if text.strip():
                print(text)
            return 0
        message = " ".join(exc.format_message().split())
        err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return 2
    except click_error as exc:
        message = " ".join(exc.format_message().split())
        err_console.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return getattr(exc, "exit_code", 1) or 1
    except abort_error:
        err_console.print("[yellow]aborted[/]")
        return 130
    except exit_error as exc:
        return getattr(exc, "exit_code", 0)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:  # a bug, not the user's input: one line, the traceback on request
        if os.environ.get("BENCH_TRACEBACK"):
            raise
        err_console.print(
            f"[red]internal error:[/] {escape(first_line(exc))} (set BENCH_TRACEBACK=1 for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return rv if isinstance(rv, int) else 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sigterm_as_interrupt() -> object | None:
    """SIGTERM (a batch scheduler's time limit, ``kill``) ends a run the way Ctrl-C does: finished
    points saved, the file marked "interrupted", the run in the history, child processes killed.
    Returns the previous handler to restore (None where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
