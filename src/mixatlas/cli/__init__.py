"""The `mixatlas` command line. Thin: each stage's module parses options and calls one library function.

Heavy imports (torch, botorch, transformers) happen inside the commands so `mixatlas --help` is instant.
User mistakes raise `MixAtlasError`, printed here as one red line with exit code 2 (no traceback).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

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


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one line."""
    try:
        app(standalone_mode=False)
    except MixAtlasError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
