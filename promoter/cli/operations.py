"""Day-to-day admin commands: promote an app by hand, roll a target app back, export the audit CSV.

`promote` and `rollback` create flow runs of the registered deployments (the worker does the
work, the run shows in the Prefect UI), so they need PREFECT_API_URL (default: the server that
`qs-promoter up` starts on 127.0.0.1:4200).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID, uuid4

import typer

from promoter.approval import Mode
from promoter.cli.options import ConfigFile, RequestedBy
from promoter.errors import SettingsError
from promoter.manual import cli_requester
from promoter.prefect_api import PROMOTE, ROLLBACK
from promoter.settings import (
    CONFIG_ENV,
    Settings,
    config_path,
    hide_url_password,
    load_settings,
    url_without_password,
)

if TYPE_CHECKING:
    from promoter.prefect_api import RunProgress

WAIT_POLL_SECONDS = 2.0
# promote and rollback follow their run in the terminal unless told not to.
Follow = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Follow the run with a progress bar until it ends (the exit code says how); "
        "--no-wait only starts it and prints its link.",
    ),
]

AppId = Annotated[UUID, typer.Argument(help="The app's id (GUID), as the QMC shows it in the Apps list.")]
TargetAppId = Annotated[
    UUID, typer.Argument(help="The id of the app on the target site (the one that was overwritten).")
]
SiteAlias = Annotated[str, typer.Argument(help="The target site alias, as in PromoteToServer (e.g. test).")]
Sites = Annotated[
    list[str] | None,
    typer.Option(
        "--site",
        help="Target site alias; repeat for more: --site test --site prod. Default: the sites in the "
        "app's PromoteToServer.",
        show_default=False,
    ),
]
Streams = Annotated[
    list[str] | None,
    typer.Option(
        "--stream",
        help="Stream name on the target sites; repeat for more: --stream Sales --stream Finance. "
        "Default: the app's PromoteToStream.",
        show_default=False,
    ),
]
PromotionMode = Annotated[
    Mode | None,
    typer.Option(
        "--mode",
        case_sensitive=False,
        help="overwrite: replace the app promoted last time (or one of that name); duplicate: add a copy.",
        show_default=False,
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Overwrite: replace target apps changed by hand since qs-promoter placed them "
        "(with drift = hold such a site is otherwise held).",
    ),
]
VersionId = Annotated[
    str | None,
    typer.Option(
        "--version",
        help="S3 version id of the backup to restore; default: the backup taken before the last overwrite.",
        show_default=False,
    ),
]
CsvFile = Annotated[
    Path,
    typer.Option(
        "--csv", dir_okay=False, help="Where to write the CSV (UTF-8 with BOM, for Excel and Qlik)."
    ),
]

audit = typer.Typer(no_args_is_help=True)
subscriptions = typer.Typer(no_args_is_help=True)


def sites_or_exit(settings: Settings, sites: list[str] | None) -> None:
    """Exit with code 2 naming any --site that is not a configured target site."""
    unknown = [s for s in sites or [] if s not in settings.target_sites]
    if unknown:
        typer.echo(
            f"error: unknown site(s) {', '.join(unknown)}; configured: {', '.join(settings.target_sites)}",
            err=True,
        )
        raise typer.Exit(2)


def promote(
    app_id: AppId,
    site: Sites = None,
    stream: Streams = None,
    mode: PromotionMode = None,
    requested_by: RequestedBy = None,
    force: Force = False,
    wait: Follow = True,
    config: ConfigFile = None,
) -> None:
    """Promote an app now, without a new approval in the QMC; follow it until it is done.

    The source app stays where it is (no unpublish, properties kept). Each call is a new request.
    """
    settings = settings_or_exit(config)
    sites_or_exit(settings, site)
    parameters = {
        "app_id": str(app_id),
        "sites": site or None,
        "streams": stream or None,
        "mode": mode.value if mode else None,
        "requested_by": started_by(requested_by),
        **({"force": True} if force else {}),  # the flow's default otherwise: the run's parameters stay short
    }
    # Prefect keeps an idempotency key forever: a repeated promotion needs a fresh one.
    run_deployment(PROMOTE, parameters, f"manual:{app_id}:{uuid4()}", wait)


def plan(
    app_id: AppId,
    site: Sites = None,
    stream: Streams = None,
    mode: PromotionMode = None,
    requested_by: RequestedBy = None,
    config: ConfigFile = None,
) -> None:
    """Show what an approval of an app would do now, per target site, without changing anything.

    Reads the source app, the target sites and the ledger, and plans as a promotion does. With
    --site, --stream or --mode (as `promote` takes them), or for an app without an approval, the
    plan is of a manual promotion. Runs here, without the Prefect server.
    """
    from promoter.errors import PromoterError, QrsNotFound
    from promoter.flows.plan import build_plan
    from promoter.promotion_plan import render_text

    settings = settings_or_exit(config)
    sites_or_exit(settings, site)
    require_ledger(settings, config)
    # The reads of a run (sites, ledger) take their settings from the file QSP_CONFIG names.
    os.environ[CONFIG_ENV] = str(config_path(config).resolve())
    who = started_by(requested_by)
    try:
        with ledger_or_exit(settings):
            found = asyncio.run(
                build_plan(app_id, settings, sites=site, streams=stream, mode=mode, requested_by=who)
            )
    except QrsNotFound:
        typer.echo(f"error: app {app_id} does not exist on the source site", err=True)
        raise typer.Exit(1) from None
    except PromoterError as exc:
        typer.echo(f"error: could not plan the promotion of {app_id}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(render_text(found))


def rollback(
    site: SiteAlias,
    app_id: TargetAppId,
    version: VersionId = None,
    requested_by: RequestedBy = None,
    wait: Follow = True,
    config: ConfigFile = None,
) -> None:
    """Put a target app back as it was before the last overwrite, keeping its id (links keep working)."""
    settings = settings_or_exit(config)
    if site not in settings.target_sites:
        typer.echo(f"error: unknown site {site!r}; configured: {', '.join(settings.target_sites)}", err=True)
        raise typer.Exit(2)
    parameters = {
        "site_name": site,
        "target_app_id": str(app_id),
        "version_id": version,
        "requested_by": started_by(requested_by),
    }
    run_deployment(ROLLBACK, parameters, f"rollback:{site}:{app_id}:{uuid4()}", wait)


@audit.callback()
def audit_group() -> None:
    """The ledger of promotions, for a Qlik dashboard."""


@audit.command("export")
def audit_export(csv: CsvFile, config: ConfigFile = None) -> None:
    """Write every promotion (one row per site) from the ledger as CSV, for the auditing dashboard."""
    from promoter.audit import export_csv
    from promoter.store.ledger import Ledger

    settings = settings_or_exit(config)
    require_ledger(settings, config)
    with ledger_or_exit(settings):
        ledger = Ledger(settings.ledger_url.get_secret_value())
    with ledger:
        rows = export_csv(ledger, csv)
    typer.echo(f"{rows} row(s) written to {csv}")


@subscriptions.callback()
def subscriptions_group() -> None:
    """The QRS change subscriptions the webhook depends on (they vanish when QRS restarts)."""


@subscriptions.command("list")
def subscriptions_list(config: ConfigFile = None) -> None:
    """The change subscriptions qs-promoter holds on the source site (the QMC does not show them)."""
    from promoter.subscriptions import list_subscriptions

    settings = settings_or_exit(config)
    require_ledger(settings, config)
    with ledger_or_exit(settings):
        records = asyncio.run(list_subscriptions(settings))
    if not records:
        typer.echo("no subscriptions recorded (the keeper has not run yet)")
    for r in records:
        checked = f"last ok {r.last_ok:%Y-%m-%d %H:%M:%S}" if r.last_ok else "never confirmed"
        error = f"; last error: {r.last_error}" if r.last_error else ""
        typer.echo(f"{r.kind:<10} {r.handle}  {r.state:<8} {checked}{error}")


@subscriptions.command("ensure")
def subscriptions_ensure(config: ConfigFile = None) -> None:
    """Renew the change subscriptions now, without a gap, as qs-promoter does every minute."""
    from promoter.subscriptions import ensure_subscriptions

    renewal = asyncio.run(ensure_subscriptions(settings_or_exit(config)))
    typer.echo(renewal.summary())
    if not renewal.complete:
        raise typer.Exit(1)


@subscriptions.command("drop")
def subscriptions_drop(config: ConfigFile = None) -> None:
    """Delete our subscriptions from the source site (uninstall, or a move to another webhook URL).

    Stop the keeper first (pause keep-subscriptions/every-minute), or it subscribes again within a minute.
    """
    from promoter.subscriptions import drop_subscriptions

    dropped = asyncio.run(drop_subscriptions(settings_or_exit(config)))
    typer.echo(f"{len(dropped)} subscription(s) deleted from the source site")


def settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def require_ledger(settings: Settings, config: Path | None) -> None:
    """Exit code 1, naming the file looked for, when the SQLite ledger does not exist: opening it
    would create a new empty one, and a report from it would wrongly say nothing happened.
    (A server database is not a file: opening it shows whether it is there.)"""
    ledger = settings.ledger_file()
    if ledger is None or ledger.exists():  # a folder in its place: opening it says what is wrong
        return
    typer.echo(
        f"error: no ledger at {ledger} (ledger_url in {config_path(config).absolute()}); nothing "
        "was created. Relative paths in the settings start at the settings file's folder: is this "
        "the settings file that `qs-promoter up` or the executor uses?",
        err=True,
    )
    raise typer.Exit(1)


@contextmanager
def ledger_or_exit(settings: Settings) -> Iterator[None]:
    """Run the block; if the ledger database cannot be opened, end the command with one line naming
    it (never its password) and the driver's reason, and exit code 1, instead of a long traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    url = settings.ledger_url.get_secret_value()
    try:
        yield
    except (SQLAlchemyError, ImportError, OSError) as exc:  # down, refused, no driver, no folder
        reason = hide_url_password(database_reason(exc), url)
        typer.echo(f"error: cannot open the ledger database {url_without_password(url)}: {reason}", err=True)
        raise typer.Exit(1) from None


def database_reason(exc: BaseException) -> str:
    """The first line of what the database driver said (SQLAlchemy wraps it in lines of its own)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0].strip() if lines else type(cause).__name__


def started_by(requested_by: str | None) -> str:
    """Who starts the run, for the ledger: --requested-by (if given), this OS account and host."""
    return cli_requester(requested_by, current_account(), socket.gethostname())


def current_account() -> str:
    """DOMAIN\\user on Windows, the login name elsewhere: who ran the command, for the ledger."""
    domain = os.environ.get("USERDOMAIN")
    user = getpass.getuser()
    return f"{domain}\\{user}" if domain else user


def run_deployment(deployment: str, parameters: dict[str, Any], key: str, wait: bool) -> None:
    """Create a flow run of ``deployment``, print its name and URL, and with ``wait`` follow it to
    the end with a progress bar, then print what it did."""
    from promoter.cli.doctor import prefect_api_url
    from promoter.prefect_api import run_url, start_run, with_prefect

    api_url, _ = prefect_api_url()
    try:
        run = asyncio.run(
            with_prefect(api_url, lambda c: start_run(c, deployment, parameters, idempotency_key=key))
        )
    except Exception as exc:  # ObjectNotFound, connection refused, 5xx: all end the command the same way
        typer.echo(f"error: could not start {deployment} at {api_url}: {type(exc).__name__}: {exc}", err=True)
        typer.echo("hint: is the stack running (`qs-promoter up`) and PREFECT_API_URL right?", err=True)
        raise typer.Exit(1) from None
    link = run_url(api_url, run.id)
    typer.echo(f"flow run {run.name!r} ({run.id}): {link}")
    if not wait:
        return
    try:
        final = follow_in_terminal(api_url, run.id)
    except KeyboardInterrupt:
        typer.echo(f"stopped following; the run goes on: {link}", err=True)
        raise typer.Exit(130) from None
    typer.echo(f"{final.name}: {final.state}" + (f": {final.message}" if final.message else ""))
    for summary in final_summaries(api_url, run.id):
        show_markdown(summary)
    if not final.completed:
        raise typer.Exit(1)


# A run still Scheduled after this long has no executor taking it (one takes a run within a second).
NOBODY_TOOK_IT_SECONDS = 30.0


def follow_in_terminal(api_url: str, run_id: UUID) -> RunProgress:
    """A progress bar of the run until it ends: its state and steps done, filled by the run's
    progress artifacts (export, uploads) when it has any, pulsing until then."""
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from promoter.prefect_api import follow_run, with_prefect

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, TimeElapsedColumn()) as bar:
        shown = bar.add_task("Scheduled: waiting for the executor", total=None)

        started = time.monotonic()

        def seen(progress: RunProgress) -> None:
            known = progress.final or progress.percent is not None
            said = f"{progress.state}: {progress.steps_done} step(s) done"
            if progress.state == "Scheduled" and time.monotonic() - started > NOBODY_TOOK_IT_SECONDS:
                # Nothing takes a run while the executor is down: say so instead of waiting in silence.
                said = "Scheduled: no executor has taken it yet (is `qs-promoter up` running?)"
            bar.update(
                shown,
                description=escape(said),
                total=100 if known else None,
                completed=100 if progress.final else progress.percent or 0,
            )

        return asyncio.run(with_prefect(api_url, lambda c: follow_run(c, run_id, seen, WAIT_POLL_SECONDS)))


def final_summaries(api_url: str, run_id: UUID) -> list[str]:
    """The markdown the run left (a promotion's summary); none when Prefect cannot be read now."""
    from promoter.prefect_api import run_summaries, with_prefect

    try:
        return asyncio.run(with_prefect(api_url, lambda c: run_summaries(c, run_id)))
    except Exception:  # the outcome line is printed already; the summary is a bonus
        return []


def show_markdown(text: str) -> None:
    """Markdown (escaped app names and all) as the terminal can show it."""
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(text))
