"""The qs-promoter command line: one typer app, one sub-module per admin task."""

from __future__ import annotations

import typer

from promoter.cli import sandbox

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(sandbox.app, name="sandbox", help="A local stand-in for Qlik sites (QRS), for tests and demos.")
