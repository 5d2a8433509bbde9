"""`qs-promoter webhook serve`: receive QRS change notifications and turn them into Prefect flow runs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from promoter.cli.options import ConfigFile
from promoter.errors import SettingsError
from promoter.settings import load_settings

app = typer.Typer(no_args_is_help=True)


@app.callback()
def webhook() -> None:
    """The receiver of QRS change notifications."""


TlsCert = Annotated[
    Path | None,
    typer.Option(
        envvar="QSP_WEBHOOK_TLS_CERT",
        exists=True,
        dir_okay=False,
        help="Serve HTTPS with this certificate (PEM); QRS must trust its issuer. Default: webhook.tls_cert.",
    ),
]
TlsKey = Annotated[
    Path | None,
    typer.Option(
        envvar="QSP_WEBHOOK_TLS_KEY", exists=True, dir_okay=False, help="Private key of --tls-cert."
    ),
]
LogLevel = Annotated[
    str, typer.Option(envvar="QSP_LOG_LEVEL", help="critical, error, warning, info or debug.")
]


@app.command()
def serve(
    config: ConfigFile = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    log_level: LogLevel = "info",
) -> None:
    """Listen on webhook.host:webhook.port for the notifications QRS posts to the subscription URLs.

    Needs PREFECT_API_URL. Notifications are stored in webhook.outbox_path before QRS gets its
    answer, and submitted to the handle-app-change/on-qrs-change deployment in the background.
    """
    from promoter.subscriptions import last_subscription_check
    from promoter.webhook.address import require_tls_files
    from promoter.webhook.app import create_app
    from promoter.webhook.relevance import qrs_relevance
    from promoter.webhook.serving import serve as serve_webhook

    if (tls_cert is None) != (tls_key is None):
        typer.echo("error: --tls-cert and --tls-key go together", err=True)
        raise typer.Exit(2)
    try:
        settings = load_settings(config)
        if tls_cert is None:  # `up` passes no options: then webhook.tls_cert/tls_key decide
            require_tls_files(settings.webhook)
            tls_cert, tls_key = settings.webhook.tls_cert, settings.webhook.tls_key
        application = create_app(
            settings,
            relevant=qrs_relevance(settings),
            last_subscription_check=functools.partial(last_subscription_check, settings),
        )
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(settings.state_line())
    try:
        serve_webhook(application, log_level=log_level, tls_cert=tls_cert, tls_key=tls_key)
    except OSError as exc:  # the address cannot be bound: taken, or not this machine's
        where = f"{settings.webhook.host}:{settings.webhook.port}"
        typer.echo(f"error: cannot listen on {where}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
