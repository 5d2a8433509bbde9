"""`qs-promoter up`: run the whole service here until Ctrl-C (Prefect server, executor, webhook)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from promoter.cli.options import ConfigFile, PrefectHost, PrefectPort, StateDir
from promoter.errors import SettingsError
from promoter.settings import Settings, config_path, load_settings

RegisterOnly = Annotated[
    bool,
    typer.Option(
        "--register-only",
        help="Only create the work pool, the deployments and the automation, then stop "
        "(for a server and worker run as services).",
    ),
]


DEFAULT_STATE_DIR = "var"


class RunsWith(StrEnum):
    """What runs the flow runs (values as StackOptions.executor spells them)."""

    IN_PROCESS = "in-process"
    PROCESS = "process"


Executor = Annotated[
    RunsWith,
    typer.Option(
        "--executor",
        envvar="QSP_EXECUTOR",
        help="What runs the flow runs: in-process (`qs-promoter executor`, every run in one process) "
        "or process (Prefect's process worker, a Python process per run).",
    ),
]


def up(
    config: ConfigFile = None,
    register_only: RegisterOnly = False,
    state_dir: StateDir = None,
    prefect_host: PrefectHost = "127.0.0.1",
    prefect_port: PrefectPort = 4200,
    executor: Executor = RunsWith.IN_PROCESS,
) -> None:
    """Run the whole service on this machine until Ctrl-C: Prefect server, executor and webhook.

    Starts what is missing: a Prefect server (unless PREFECT_API_URL is set), the flows it runs
    (work pool, deployments, and an automation that fails runs whose process died), the executor
    that runs them (`qs-promoter executor`; with --executor process, a Prefect worker instead) and
    the webhook that receives the source site's changes. An executor that exits for its planned
    restart is started again. When all is up it prints what to do next. Ctrl-C stops what it
    started, the executor first.
    """
    settings = settings_or_exit(config)
    state = state_folder(config, state_dir)
    # Before Prefect is imported here: its settings are read once, at import.
    os.environ["PREFECT_HOME"] = str(state / "prefect")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from promoter.services.stack import Interrupted, Stack, StackError, StackOptions, project_dir

    options = StackOptions(
        config=Path(os.path.abspath(config_path(config))),
        state_dir=state,
        project_dir=project_dir(),
        prefect_host=prefect_host,
        prefect_port=prefect_port,
        api_url=os.environ.get("PREFECT_API_URL") or None,
        executor="process" if executor is RunsWith.PROCESS else "in-process",
    )
    stack = Stack(settings, options, echo=echo)
    echo(f"settings: {options.config}")
    echo(settings.state_line(results=str(stack.results_dir), **{"Prefect and logs": str(state)}))
    with stop_on_signals(stack.stop_requested.set):
        try:
            stack.start(register_only=register_only)
        except Interrupted:
            echo("stopped before everything was up")
            raise typer.Exit(130) from None
        except StackError as exc:
            echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        if register_only:
            stack.stop()
            echo("registered; nothing else was started")
            return
        echo("")
        echo(f"Prefect UI: {stack.ui_url}")
        echo(
            f"webhook:    {settings.webhook.public_base_url} (QRS calls it; local {stack.webhook_local_url})"
        )
        echo(f"logs:       {options.log_dir}")
        echo("")
        echo(next_steps(settings, options.config, stack.ui_url))
        echo("Press Ctrl-C to stop.")
        died = stack.watch()
        if died is not None:
            echo(f"error: {died.name} exited with code {died.returncode}:\n{died.log_tail()}", err=True)
        echo("stopping ...")
        stack.stop()
        echo("stopped")
    if died is not None:
        raise typer.Exit(1)


def next_steps(settings: Settings, config: Path, ui_url: str) -> str:
    """What an admin does once everything is up: check, approve a first app, watch it in the UI."""
    names = settings.properties
    site = next(iter(settings.target_sites), "<target site>")
    qmc = f"https://{settings.source_site.public_fqdn or settings.source_site.host}/qmc"
    return "\n".join(
        [
            "Ready. Next:",
            f'  1. In another window: qs-promoter doctor --config "{config}"',
            "     (sites, certificates, Qlik setup, email, S3, this Prefect server and the webhook;",
            "     it says what to fix, e.g. run qs-promoter qlik setup).",
            f"  2. In the source site's QMC ({qmc}): Apps, pick an app published to a stream, Edit,",
            f"     set {names.promote_to_server} = '{site} - Duplicate', {names.promote_to_stream} =",
            f"     a stream of {site}, {names.promotion_approval} = Approve; Apply.",
            f"  3. Watch the promotion in the Prefect UI: {ui_url}/runs",
        ]
    )


def state_folder(config: Path | None, state_dir: Path | None) -> Path:
    """--state-dir (from the current folder, as any command-line path), else var/ beside the
    settings file: the same folder whichever folder `up` and `doctor` are started in."""
    if state_dir is not None:
        return Path(os.path.abspath(state_dir))
    return Path(os.path.abspath(config_path(config))).parent / DEFAULT_STATE_DIR


def settings_or_exit(config: Path | None) -> Settings:
    """The settings, or exit code 2 with the file and field named (webhook secret and TLS files checked)."""
    from promoter.webhook.address import require_tls_files
    from promoter.webhook.auth import require_secret

    try:
        settings = load_settings(config)
        require_secret(settings.webhook)
        require_tls_files(settings.webhook)
    except SettingsError as exc:
        echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, Ctrl-C, SIGTERM (and Ctrl-Break on Windows) call ``stop`` instead of
    raising; the children then inherit default (not ignored) signal handling."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread (e.g. a test runner's worker)
        return
    wanted = [signal.SIGINT, signal.SIGTERM]
    if sys.platform == "win32":
        wanted.append(signal.SIGBREAK)
    previous = {sig: signal.signal(sig, lambda *_: stop()) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def echo(message: str, *, err: bool = False) -> None:
    typer.echo(message, err=err)
