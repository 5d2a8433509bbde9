"""One home for state: relative paths in the settings start at the settings file's folder, in every
process, whatever folder it was started in; reports refuse to invent an empty ledger."""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import threading
from pathlib import Path, PureWindowsPath
from uuid import uuid4

import pytest
from typer.testing import CliRunner

from promoter.child_processes import wait_for
from promoter.cli import app
from promoter.sandbox.server import Sandbox
from promoter.services.stack import UP_RECORD, free_port
from promoter.settings import Settings, SiteSettings, WebhookSettings, load_settings, under, write_settings
from promoter.store.ledger import Ledger, PromotionStart
from promoter.store.subscriptions import SubscriptionStore
from tests.fixtures.deployments import child_environment, cli_command
from tests.fixtures.stack import descendants

RELATIVE = """\
ledger_url = "sqlite:///var/ledger.db"
work_dir = "var/work"
cert_root = "certs"

[source_site]
host = "qlik-dev"

[target_sites.test]
host = "qlik-test"
cert_dir = "exports/test"

[email]
stream_approvers_csv = "approvers.csv"

[webhook]
outbox_path = "var/outbox.db"
"""
STREAM = "0b9b8a3e-1f4c-4f55-9a57-3d1f1e0a0c01"
UP_START_TIMEOUT = 300  # a fresh Prefect database on a busy 2-core box
UP_STOP_TIMEOUT = 90


def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The settings folder A, and two other folders B and C to start processes in."""
    made = tuple(tmp_path / name for name in ("a", "b", "c"))
    for folder in made:
        folder.mkdir()
    return made  # type: ignore[return-value]


def relative_settings(folder: Path) -> Path:
    config = folder / "qs-promoter.toml"
    config.write_text(RELATIVE, encoding="utf-8")
    (folder / "approvers.csv").write_text(f"StreamID,ApprovalEmailAddress\n{STREAM},a@acme.example\n")
    return config


def test_relative_paths_start_at_the_settings_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded from another folder, the ledger, outbox, work folder, certificates and the approvers CSV
    are absolute paths in the settings file's folder."""
    a, b, _ = folders(tmp_path)
    relative_settings(a)
    monkeypatch.chdir(b)

    settings = load_settings(Path("../a/qs-promoter.toml"))

    assert settings.ledger_url.get_secret_value() == f"sqlite:///{(a / 'var/ledger.db').as_posix()}"
    assert settings.ledger_file() == a / "var/ledger.db"
    assert settings.webhook.outbox_path == a / "var/outbox.db"
    assert settings.work_dir == a / "var/work"
    assert (settings.cert_dir("source"), settings.cert_dir("test")) == (
        a / "certs/source",
        a / "exports/test",
    )
    assert settings.email.approvers_for(STREAM) == ["a@acme.example"]  # the CSV was found from b
    assert settings.state_line().endswith(f"(relative paths from the settings file's folder {a})")


def test_environment_overrides_start_at_the_settings_files_folder_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path given in a QSP_ variable resolves like one in the file: a service and a shell
    with the same variables find the same files."""
    a, b, _ = folders(tmp_path)
    config = relative_settings(a)
    monkeypatch.chdir(b)
    monkeypatch.setenv("QSP_WEBHOOK__OUTBOX_PATH", "state/outbox.db")
    monkeypatch.setenv("QSP_LEDGER_URL", "sqlite:///state/ledger.db")

    settings = load_settings(config)

    assert (settings.webhook.outbox_path, settings.ledger_file()) == (
        a / "state/outbox.db",
        a / "state/ledger.db",
    )


def test_absolute_paths_and_server_databases_are_left_as_written(tmp_path: Path) -> None:
    """An absolute ledger file and a PostgreSQL URL are not touched (a server database is no file)."""
    config = tmp_path / "qs-promoter.toml"
    elsewhere = tmp_path / "elsewhere" / "ledger.db"
    config.write_text(f'ledger_url = "sqlite:///{elsewhere.as_posix()}"\n[source_site]\nhost = "q"\n')
    postgres = "postgresql+psycopg://qsp:pw@db.acme.example/qsp_ledger"
    server = tmp_path / "server.toml"
    server.write_text(f'ledger_url = "{postgres}"\n[source_site]\nhost = "q"\n')

    assert load_settings(config).ledger_file() == elsewhere
    assert load_settings(server).ledger_url.get_secret_value() == postgres
    assert load_settings(server).ledger_file() is None


def test_settings_without_a_file_keep_paths_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings made without a file (environment only) resolve against the current folder, and say so."""
    monkeypatch.chdir(tmp_path)

    settings = Settings(source_site=SiteSettings(host="qlik-dev"))

    assert settings.ledger_url.get_secret_value() == "sqlite:///var/ledger.db"
    assert settings.ledger_file() == tmp_path / "var/ledger.db"
    assert f"no settings file: relative paths from the current folder {tmp_path}" in settings.state_line()


def test_windows_paths_resolve_against_the_settings_folder() -> None:
    """On Windows a relative path joins the settings folder, a rooted one takes its drive, and a path
    with a drive stays as written."""
    base = PureWindowsPath(r"D:\qs-promoter")

    resolved = [under(base, PureWindowsPath(p)) for p in (r"var\ledger.db", r"\data\ledger.db", r"E:\l.db")]

    assert [str(p) for p in resolved] == [r"D:\qs-promoter\var\ledger.db", r"D:\data\ledger.db", r"E:\l.db"]


def write_ledger(settings: Settings) -> str:
    """One finished promotion with one site result and one subscription, written where the settings
    say the ledger is; returns the app name."""
    name = f"Sales {uuid4().hex[:6]}"
    with Ledger(settings.ledger_url.get_secret_value()) as ledger:
        promotion = ledger.start_promotion(
            PromotionStart(
                f"key-{name}", app_id=uuid4(), app_name=name, approver="ACME\\ann", owner="ACME\\bob",
                action="promote", trigger="approval",
            )
        )  # fmt: skip
        ledger.record_site_result(
            promotion, "test", mode="overwrite", streams=["Sales"], target_app_ids=[uuid4()], status="ok"
        )
        ledger.finish_promotion(promotion, "ok")
    with SubscriptionStore(settings.ledger_url.get_secret_value()) as store:
        store.adopt("updated", uuid4(), "hashed-url")
    return name


def test_audit_export_and_subscriptions_list_from_a_third_folder_read_the_same_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger written by a process in folder b is the one `audit export` and `subscriptions list`
    read when run in folder c, with a relative --config."""
    a, b, c = folders(tmp_path)
    relative_settings(a)
    monkeypatch.chdir(b)
    name = write_ledger(load_settings(Path("../a/qs-promoter.toml")))
    monkeypatch.chdir(c)

    exported = CliRunner().invoke(
        app, ["audit", "export", "--csv", "audit.csv", "--config", "../a/qs-promoter.toml"]
    )
    listed = CliRunner().invoke(app, ["subscriptions", "list", "--config", "../a/qs-promoter.toml"])

    assert exported.exit_code == 0, exported.output
    assert name in (c / "audit.csv").read_text(encoding="utf-8-sig")
    assert listed.exit_code == 0, listed.output
    assert listed.output.split()[0] == "updated"
    assert not (b / "var").exists() and not (c / "var").exists()


@pytest.mark.parametrize("command", ["audit export", "subscriptions list"])
def test_a_missing_ledger_is_named_and_not_created(tmp_path: Path, command: str) -> None:
    """With no ledger file yet, the report refuses (exit 1) naming the absolute file it looked for and
    the settings file, and creates neither the file nor its folder."""
    a, _, _ = folders(tmp_path)
    config = relative_settings(a)
    csv_option = ["--csv", str(tmp_path / "audit.csv")] if command == "audit export" else []

    result = CliRunner().invoke(app, [*command.split(), *csv_option, "--config", str(config)])

    assert result.exit_code == 1, result.output
    assert f"error: no ledger at {a / 'var/ledger.db'} (ledger_url in {config})" in result.output
    assert not (a / "var").exists() and not (tmp_path / "audit.csv").exists()


def test_doctor_prints_the_absolute_state_paths_and_the_prefect_server_it_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor, run in another folder, prints the ledger (not created yet), outbox, work folder,
    certificates and results as absolute paths, and the Prefect API it checked and that no `up` runs
    with this settings file's state folder."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    a, _, c = folders(tmp_path)
    relative_settings(a)
    monkeypatch.chdir(c)
    # No PREFECT_API_URL, as on a fresh machine: not the one a session's earlier test set for Prefect.
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["doctor", "--config", "../a/qs-promoter.toml"])

    state = next(line for line in result.output.splitlines() if line.startswith("OK    state:"))
    assert f"ledger {a / 'var/ledger.db'} (not created yet), outbox {a / 'var/outbox.db'}" in state
    assert f"work folder {a / 'var/work'}, certificates {a / 'certs'}, results " in state
    prefect = next(line for line in result.output.splitlines() if "Prefect API:" in line)
    assert "http://127.0.0.1:4200/api (default of `qs-promoter up`)" in prefect
    assert f"no `qs-promoter up` runs with the state folder {a / 'var'}" in prefect


@pytest.mark.slow
def test_up_from_one_folder_and_the_cli_from_another_share_one_ledger(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """`up` started in folder b with a settings file in folder a keeps its Prefect state beside the
    settings file, and its executor's first keep-subscriptions run writes the ledger there; run in
    folder c, `subscriptions list` and `audit export` read that ledger and `doctor` names the Prefect
    server `up` started. After Ctrl-C, `up`'s record of its server is gone."""
    a, b, c = folders(tmp_path)
    port = free_port()
    webhook = WebhookSettings(
        port=port,
        host="127.0.0.1",
        public_base_url=f"http://127.0.0.1:{port}",
        secret=secrets.token_urlsafe(32),
        outbox_path=Path("var/outbox.db"),
    )
    settings = sandbox_settings.model_copy(
        update={"webhook": webhook, "ledger_url": "sqlite:///var/ledger.db", "work_dir": Path("var/work")}
    )
    write_settings(settings, a / "qs-promoter.toml")
    config = "../a/qs-promoter.toml"
    env = child_environment()
    env.pop("PREFECT_API_URL", None)
    up = shlex.join(cli_command("up", "--config", config, "--prefect-port", str(free_port())))
    process = subprocess.Popen(
        ["/bin/sh", "-c", f"trap '' INT; exec {up}"],  # as `cmd &` starts it: SIGINT ignored
        cwd=b,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    )
    watchdog = threading.Timer(UP_START_TIMEOUT + UP_STOP_TIMEOUT, process.kill)  # never hang the suite
    watchdog.start()
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if "Press Ctrl-C to stop." in line:
                break
        output = "\n".join(lines)
        assert "Press Ctrl-C to stop." in output, output
        record_written = (a / "var" / UP_RECORD).is_file()

        def subscribed() -> bool:
            listed = cli(["subscriptions", "list", "--config", config], c, env)
            return listed.returncode == 0 and "updated" in listed.stdout

        keeper_wrote = wait_for(subscribed, UP_START_TIMEOUT, interval=1.0)
        exported = cli(["audit", "export", "--csv", "audit.csv", "--config", config], c, env)
        doctor = cli(["doctor", "--config", config], c, env)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=UP_STOP_TIMEOUT)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in descendants(process.pid):
            os.kill(pid, signal.SIGKILL)

    assert f"state: ledger {a / 'var/ledger.db'}, outbox {a / 'var/outbox.db'}" in output
    assert record_written and keeper_wrote, output
    assert (a / "var/ledger.db").is_file() and (a / "var/outbox.db").is_file()
    assert (a / "var/prefect").is_dir() and not (b / "var").exists() and not (c / "var").exists()
    assert exported.returncode == 0 and (c / "audit.csv").is_file(), exported.stdout + exported.stderr
    assert "the server `qs-promoter up` (pid" in doctor.stdout and "started" in doctor.stdout, doctor.stdout
    assert process.returncode == 0, output + rest
    assert not (a / "var" / UP_RECORD).exists()


def cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A qs-promoter command in its own process, started in ``cwd``."""
    return subprocess.run(
        cli_command(*args), cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120
    )
