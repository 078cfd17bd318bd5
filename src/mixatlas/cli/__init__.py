"""The `mixatlas` command line. Thin: each stage's module parses options and calls one library function.

Heavy imports (torch, botorch, transformers) happen inside the commands so `mixatlas --help` is instant.
User mistakes raise `MixAtlasError`, printed here as one red line with exit code 2 (no traceback).
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mixatlas.cli import atlas_cmds, bench_cmds, corpus_cmds, proxy_cmds, recipe_cmds, search_cmds
from mixatlas.errors import MixAtlasError

app = typer.Typer(
    name="mixatlas",
    help="Find the best data mixture for midtraining a multimodal LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for module in (corpus_cmds, atlas_cmds, search_cmds, bench_cmds, proxy_cmds, recipe_cmds):
    module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from mixatlas import __version__

        typer.echo(f"mixatlas {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Find the best data mixture for midtraining a multimodal LLM."""

err_console = Console(stderr=True)


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwinds the run like KeyboardInterrupt (every `finally` and `with` block
    ends its children and puts in-flight work back), outside typer's own KeyboardInterrupt handling."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every user mistake (usage errors included) is one line and exit 2;
    SIGINT / SIGTERM stop the run cleanly with exit 130 / 143; `--debug` (anywhere) shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = app(args=args, prog_name="mixatlas", standalone_mode=False)
    except Stopped as exc:
        _error_line(exc, debug, f"stopped by {exc}; finished work is kept, rerun the same command to resume")
        code = 128 + exc.signum
    except MixAtlasError as exc:
        _error_line(exc, debug, f"[bold red]error:[/] {escape(str(exc))}")
        code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        code = 130
    except typer.TyperException as exc:  # click's usage errors: unknown option/command, bad value
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "mixatlas"
        message = " ".join(exc.format_message().split())
        if message:  # blank after a bare group command: its help was printed
            _error_line(exc, debug, f"[bold red]error:[/] {escape(message)} (see `{where} --help`)")
        code = 2
    except Exception as exc:  # a bug, not a user mistake
        _error_line(exc, debug, f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}; "
                    "rerun with --debug for the traceback and report it")
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.exit(code or 0)


def _error_line(exc: BaseException, debug: bool, line: str) -> None:
    if debug:
        err_console.print_exception(show_locals=False)
    err_console.print(line, highlight=False, soft_wrap=True, markup=True)
