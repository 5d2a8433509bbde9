"""`qs-promoter executor`: run the promotions (the work pool's flow runs) in one long-lived process."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from promoter.cli.options import ConfigFile
from promoter.cli.up import stop_on_signals
from promoter.errors import PromoterError, SettingsError
from promoter.settings import CONFIG_ENV, Settings, config_path, load_settings

Name = Annotated[
    str | None,
    typer.Option(
        envvar="QSP_EXECUTOR_NAME",
        help="The executor's name in the work pool, unique per machine; default qs-promoter-executor-<host>.",
        show_default=False,
    ),
]
Limit = Annotated[
    int | None,
    typer.Option(
        min=1,
        envvar="QSP_EXECUTOR_LIMIT",
        help="Flow runs at once; default prefect.worker_limit, else 8.",
        show_default=False,
    ),
]
StopGrace = Annotated[
    float | None,
    typer.Option(
        min=0,
        help="On SIGTERM/Ctrl-C: seconds running runs get to finish before they are cancelled; "
        "default 30 (the service manager's stop timeout must be longer).",
        show_default=False,
    ),
]
RestartAfterRuns = Annotated[
    int | None,
    typer.Option(
        min=0,
        envvar="QSP_EXECUTOR_RESTART_AFTER_RUNS",
        help="Exit with code 75 (to be started again) after this many runs; default 5000, 0: never.",
        show_default=False,
    ),
]
RestartAboveMb = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Exit with code 75 between runs once memory (RSS) is above this many MB; default 512, 0: never.",
        show_default=False,
    ),
]
# Tests only (a test stack passes it): hidden, so that no admin takes the waits out of production.
InstantRetries = Annotated[
    bool,
    typer.Option(
        "--instant-retries",
        hidden=True,
        help="Tests: retry failed steps and QRS calls as often as in production, without waiting.",
    ),
]


def executor(
    config: ConfigFile = None,
    name: Name = None,
    limit: Limit = None,
    stop_grace: StopGrace = None,
    restart_after_runs: RestartAfterRuns = None,
    restart_above_mb: RestartAboveMb = None,
    instant_retries: InstantRetries = False,
) -> None:
    """Run the promotions and scheduled checks in this process, several at once (for a service).

    `up` starts one; run it on its own as a service beside a Prefect server. It takes the runs of
    the work pool prefect.work_pool, like `prefect worker start` without a Python process per run. Needs
    PREFECT_API_URL and the deployments registered (qs-promoter up --register-only). Stops on
    Ctrl-C or SIGTERM (Ctrl-Break on Windows): no new runs, running ones get --stop-grace seconds,
    the rest are cancelled; a second signal cancels them at once. Exit codes: 0 stopped, 75 to be
    started again (run count or memory reached), 1 cannot run, 2 bad settings.
    """
    settings = settings_or_exit(config)
    prepare_environment(config)
    from promoter.webhook.app import require_prefect_api_url

    try:
        require_prefect_api_url()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if instant_retries:
        from promoter.tasks import retries  # imports Prefect: after prepare_environment

        retries.set_testing(True)
        typer.echo("retries: as in production, without waiting (--instant-retries)")

    from promoter.cli.doctor import prefect_results_folder
    from promoter.services.executor import (
        DEFAULT_LIMIT,
        RESTART_ABOVE_BYTES,
        RESTART_AFTER_RUNS,
        RESTART_EXIT_CODE,
        STOP_GRACE_SECONDS,
        Executor,
        ExecutorOptions,
        Outcome,
        serve,
    )
    from promoter.services.prefect_clients import share_tls_context

    logging.getLogger("promoter").setLevel(logging.INFO)  # Prefect's console handler prints it
    typer.echo(settings.state_line(results=prefect_results_folder()))
    grace = STOP_GRACE_SECONDS if stop_grace is None else stop_grace
    runs = RESTART_AFTER_RUNS if restart_after_runs is None else restart_after_runs
    memory = RESTART_ABOVE_BYTES if restart_above_mb is None else restart_above_mb * 2**20
    options = ExecutorOptions(
        pool=settings.prefect.work_pool,
        name=name or f"qs-promoter-executor-{socket.gethostname()}",
        limit=limit or settings.prefect.worker_limit or DEFAULT_LIMIT,
        stop_grace=grace,
        restart_after_runs=runs or None,
        restart_above_bytes=memory or None,
    )
    share_tls_context()  # a long-lived process: Prefect's per-client TLS setup is CPU it need not spend
    running = Executor(options)
    with stop_on_signals(running.request_stop):
        try:
            outcome = serve(running)
        except PromoterError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    if outcome is Outcome.RESTART:
        raise typer.Exit(RESTART_EXIT_CODE)


def settings_or_exit(config: Path | None) -> Settings:
    """The settings, or exit code 2 with the file and field named."""
    try:
        return load_settings(config)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def prepare_environment(config: Path | None) -> None:
    """What the flows and Prefect must find in the environment; before Prefect is imported (it
    reads its settings once, at import)."""
    from promoter.services.orchestration import HEARTBEAT_SECONDS

    # The flows read the settings file themselves, after the executor changed into the project
    # folder (the deployments' pull step): a relative path would no longer point at it.
    os.environ[CONFIG_ENV] = str(config_path(config).resolve())
    # Flow-run heartbeats at the pace the zombie-run automation expects (Prefect's default: 180 s).
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))
