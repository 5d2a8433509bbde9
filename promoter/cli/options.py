"""Command-line options shared by several commands, each defined once with its variable and help."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promoter.settings import CONFIG_ENV

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_ENV,
        dir_okay=False,
        help="Settings file (TOML); default ./qs-promoter.toml.",
        show_default=False,
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="QSP_STATE_DIR",
        file_okay=False,
        help="Folder for the Prefect database (prefect/) and the logs (log/) of what `up` starts; "
        "default: var in the settings file's folder.",
        show_default=False,
    ),
]
PrefectHost = Annotated[
    str,
    typer.Option(
        "--prefect-host",
        envvar="QSP_PREFECT_HOST",
        help="Address the Prefect server listens on when `up` starts one (no PREFECT_API_URL set).",
    ),
]
PrefectPort = Annotated[
    int,
    typer.Option(
        "--prefect-port",
        envvar="QSP_PREFECT_PORT",
        min=1,
        max=65535,
        help="Port of the Prefect server (UI and API) when `up` starts one.",
    ),
]
RequestedBy = Annotated[
    str | None,
    typer.Option(
        "--requested-by",
        envvar="QSP_REQUESTED_BY",
        metavar="DOMAIN\\USER",
        help="Who asks (DOMAIN\\user); the ledger records it beside the OS account and host of this command.",
        show_default=False,
    ),
]
