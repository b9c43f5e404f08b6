"""The typer app: --version, and the commands in the order --help lists them, one module each."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from hpsearch.cli.coarse import coarse
from hpsearch.cli.console import out
from hpsearch.cli.final import final
from hpsearch.cli.refine import refine
from hpsearch.cli.report import report
from hpsearch.cli.sanity import sanity_check
from hpsearch.version import __version__

app = typer.Typer(
    help="Hyperparameter search the cs231n way: sanity checks, coarse random search, refine, report, final.\n\n"
    "Example: hpsearch coarse configs/smoke.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"hpsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")
    ] = None,
) -> None:
    """Hyperparameter search the cs231n way. Example: hpsearch coarse configs/smoke.yaml"""


app.command("sanity-check")(sanity_check)
app.command()(coarse)
app.command()(refine)
app.command()(report)
app.command()(final)
