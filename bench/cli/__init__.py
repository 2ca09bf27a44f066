"""The ``bench`` command line: thin wrappers over library calls a user could make from Python.

Click runs in its standalone mode. Every user error arrives as BenchError and leaves as one
``error:`` line on stderr with exit code 2 (``CommandError``, a click usage error); click's own
errors about a command's options are the same one line, with the ``--help`` hint (those of
``bench`` itself, and ``bench`` alone, are click's: usage and help). Ctrl-C and
SIGTERM exit 130 after the results file is marked "interrupted". A bug is one ``internal error:``
line and exit 1 (``BENCH_TRACEBACK=1`` shows the traceback).

One module per group of commands, each with a ``register(app)``; the options they share are
declared once in ``bench.cli.common``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from bench.cli import ab, compare, history, info, maxbatch, noise, profiles, report, sweep, trace
from bench.cli.common import err_console
from bench.cli.help import use_panels
from bench.results.errors import BenchError, first_line


class CommandError(typer.BadParameter):
    """A BenchError (or a command's own usage error) on its way out: a click usage error, exit
    code 2, shown as one ``error:`` line.

    typer's click is reached through ``typer.BadParameter``, its public click usage error."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        err_console.print(f"[red]error:[/] {escape(self.message)}", highlight=False, soft_wrap=True)


class BenchGroup(TyperGroup):
    """The command group: turns what a command raises into click's exits."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, CommandError):
            raise
        except Exception as exc:
            if hasattr(exc, "exit_code") and hasattr(exc, "format_message"):  # click's: a bad option
                raise CommandError(_one_line(exc), exc.exit_code) from None
            if os.environ.get("BENCH_TRACEBACK"):  # a bug, not the user's input
                raise
            err_console.print(
                f"[red]internal error:[/] {escape(first_line(exc))} (set BENCH_TRACEBACK=1 for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None


def _one_line(exc: Any) -> str:
    """A click error of a command's options as one line, its ``--help`` hint kept."""
    ctx = getattr(exc, "ctx", None)
    hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return " ".join(exc.format_message().split()) + hint


app = typer.Typer(
    name="bench",
    help="Throughput profiler and benchmark suite for PyTorch training.",
    cls=BenchGroup,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click shows its errors itself (``ClickException.show``), one line for ours
)

# in this order in `bench --help`
for _commands in (sweep, info, maxbatch, noise, trace, compare, report, history, ab, profiles):
    _commands.register(app)
use_panels(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the command in click's standalone mode and returns its exit code."""
    command = typer.main.get_command(app)
    previous = _sigterm_as_interrupt()
    try:
        command.main(args=argv, prog_name="bench", standalone_mode=True)
    except SystemExit as exc:  # standalone mode always ends here
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


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
