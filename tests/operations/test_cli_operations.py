"""`promote`, `rollback`, `audit export` and `subscriptions`: what an admin runs by hand."""

from __future__ import annotations

import asyncio
import csv
import re
import socket
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from promoter.cli import app
from promoter.cli.operations import current_account
from promoter.sandbox.server import Sandbox
from promoter.services.stack import free_port
from promoter.settings import Settings, SiteSettings, write_settings
from promoter.store.ledger import Ledger, PromotionStart
from tests.fixtures.deployments import Registration

RUN_URL = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")
# What a run started by these commands records as who started it, beside any --requested-by.
CLI_USER = f"{current_account()} on {socket.gethostname()} (qs-promoter CLI)"


@pytest.fixture
def config(sandbox_settings: Settings, tmp_path: Path) -> Path:
    return write_settings(sandbox_settings, tmp_path / "qs-promoter.toml")


def flow_run(api_url: str, output: str) -> dict:
    """The parameters, idempotency key and deployment of the run whose URL the command printed."""
    match = RUN_URL.search(output)
    assert match, output

    async def read() -> dict:
        async with PrefectClient(api=api_url) as client:
            run = await client.read_flow_run(UUID(match.group(1)))
            deployment = await client.read_deployment(run.deployment_id)
            flow = await client.read_flow(deployment.flow_id)
        return {
            "deployment": f"{flow.name}/{deployment.name}",
            "parameters": run.parameters,
            "key": run.idempotency_key,
        }

    return asyncio.run(read())


def test_promote_starts_a_new_run_of_promote_app_each_time(
    registered_deployments: Registration, config: Path
) -> None:
    """Each `promote` is a new request: a run of promote-app/manual with the given sites, streams
    and mode, named for what it does, its URL printed, and a fresh idempotency key (Prefect keeps
    keys forever). --no-wait only starts it."""
    app_id = uuid4()
    args = ["promote", str(app_id), "--config", str(config), "--site", "test", "--stream", "Everyone"]
    args += ["--mode", "duplicate", "--requested-by", "ACME\\admin", "--no-wait"]

    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args)

    runs = [flow_run(registered_deployments.api_url, r.output) for r in (first, second)]
    assert (first.exit_code, second.exit_code) == (0, 0), first.output + second.output
    assert runs[0]["deployment"] == "promote-app/manual"
    assert f"flow run 'manual promotion of app {app_id}'" in first.output
    assert runs[0]["parameters"] == {
        "app_id": str(app_id),
        "sites": ["test"],
        "streams": ["Everyone"],
        "mode": "duplicate",
        "requested_by": f"ACME\\admin, started by {CLI_USER}",
    }
    assert runs[0]["key"] != runs[1]["key"]
    assert f"{registered_deployments.api_url.removesuffix('/api')}/runs/flow-run/" in first.output


def test_promote_refuses_a_site_that_is_not_configured(config: Path) -> None:
    """A site alias the settings do not know is a usage error (exit 2) naming the configured ones."""
    result = CliRunner().invoke(app, ["promote", str(uuid4()), "--config", str(config), "--site", "qa"])

    assert result.exit_code == 2
    assert "unknown site(s) qa; configured: test, prod" in result.output


def test_promote_without_a_prefect_server_says_what_to_start(config: Path) -> None:
    """No Prefect API at PREFECT_API_URL: exit code 1 and a hint to start the stack."""
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        result = CliRunner().invoke(app, ["promote", str(uuid4()), "--config", str(config)])

    assert result.exit_code == 1
    assert "could not start promote-app/manual" in result.output
    assert "qs-promoter up" in result.output


def test_rollback_starts_a_run_of_rollback_app(registered_deployments: Registration, config: Path) -> None:
    """`rollback SITE APP_ID --version V` runs rollback-app/manual for that target app and version,
    recording the OS account and host that started it."""
    target = uuid4()

    result = CliRunner().invoke(
        app, ["rollback", "prod", str(target), "--version", "v-42", "--no-wait", "--config", str(config)]
    )

    run = flow_run(registered_deployments.api_url, result.output)
    assert result.exit_code == 0, result.output
    assert run["deployment"] == "rollback-app/manual"
    assert f"flow run 'rollback of app {target} on prod'" in result.output
    assert run["parameters"]["site_name"] == "prod"
    assert run["parameters"]["target_app_id"] == str(target)
    assert run["parameters"]["version_id"] == "v-42"
    assert run["parameters"]["requested_by"] == CLI_USER


def test_audit_export_writes_one_row_per_promoted_site(
    sandbox_settings: Settings, config: Path, tmp_path: Path
) -> None:
    """`audit export --csv FILE` writes the ledger as CSV (header first), one row per site."""
    with Ledger(sandbox_settings.ledger_url.get_secret_value()) as ledger:
        promotion = ledger.start_promotion(
            PromotionStart(
                "approval:demo",
                app_id=uuid4(),
                app_name="Sales Dashboard",
                approver="ACME\\manager",
                owner="ACME\\rep",
                action="promote",
                trigger="updated",
            )
        )
        for site in ("test", "prod"):
            ledger.record_site_result(
                promotion, site, mode="overwrite", streams=["Everyone"], target_app_ids=[uuid4()], status="ok"
            )
    out = tmp_path / "audit" / "promotions.csv"

    result = CliRunner().invoke(app, ["audit", "export", "--csv", str(out), "--config", str(config)])

    with out.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert result.exit_code == 0, result.output
    assert "2 row(s) written" in result.output
    assert len(rows) == 3
    assert all("Sales Dashboard" in row for row in rows[1:])


def test_subscriptions_ensure_list_and_drop(sandbox: Sandbox, config: Path) -> None:
    """`ensure` subscribes on the source site, `list` shows the handles, `drop` removes them again."""
    dev = sandbox.sites["dev"].repository

    ensured = CliRunner().invoke(app, ["subscriptions", "ensure", "--config", str(config)])
    on_dev = len(dev.subscriptions)
    listed = CliRunner().invoke(app, ["subscriptions", "list", "--config", str(config)])
    dropped = CliRunner().invoke(app, ["subscriptions", "drop", "--config", str(config)])

    assert (ensured.exit_code, listed.exit_code, dropped.exit_code) == (0, 0, 0), ensured.output
    assert on_dev == 4  # updated, reloaded, published and the sentinel
    assert "4 of 4 subscriptions in place" in ensured.output
    assert sorted(line.split()[0] for line in listed.output.splitlines()) == [
        "published",
        "reloaded",
        "sentinel",
        "updated",
    ]
    assert "4 subscription(s) deleted" in dropped.output
    assert len(dev.subscriptions) == 0


LEDGER_PASSWORD = "Ledger-Pw-4kT9"


def ledger_down(kind: str, tmp_path: Path) -> str:
    """A ledger URL whose database cannot be opened: PostgreSQL with nothing listening on its port, or
    an SQLite file whose path is a folder."""
    if kind == "postgresql":
        return f"postgresql+psycopg://qsp:{LEDGER_PASSWORD}@127.0.0.1:{free_port()}/qsp_ledger"
    (tmp_path / "ledger.db").mkdir()
    return f"sqlite:///{(tmp_path / 'ledger.db').as_posix()}"


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("command", ["audit export", "subscriptions list"])
def test_a_ledger_that_cannot_be_opened_is_one_line_naming_it(
    tmp_path: Path, kind: str, command: str
) -> None:
    """The ledger database down (or its file unusable): one line naming the database, without its
    password, and the driver's reason; exit code 1, and no traceback."""
    url = ledger_down(kind, tmp_path)
    settings = Settings(source_site=SiteSettings(host="qlik-dev"), ledger_url=url)
    config = write_settings(settings, tmp_path / "qs-promoter.toml")

    csv_option = ["--csv", str(tmp_path / "audit.csv")] if command == "audit export" else []

    result = CliRunner().invoke(app, [*command.split(), *csv_option, "--config", str(config)])

    lines = result.output.strip().splitlines()
    shown = url.replace(LEDGER_PASSWORD, "***")
    assert (result.exit_code, len(lines)) == (1, 1), result.output
    assert lines[0].startswith(f"error: cannot open the ledger database {shown}: ")
    reason = lines[0].rsplit(": ", 1)[1]
    assert ("refused" if kind == "postgresql" else "unable to open database file") in reason
    assert LEDGER_PASSWORD not in result.output and not (tmp_path / "audit.csv").exists()
