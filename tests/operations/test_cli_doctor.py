"""`qs-promoter doctor`: one OK/FAIL line per check, a fix for every failure, exit code 1 if any failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from prefect.client.orchestration import PrefectClient
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr
from typer.testing import CliRunner

from promoter.cli import app
from promoter.sandbox.s3 import S3Sandbox
from promoter.sandbox.seed import seed_app, seed_custom_property, seed_stream
from promoter.sandbox.server import Sandbox
from promoter.sandbox.serving import ServerThread, tcp_listener
from promoter.sandbox.smtp import SmtpSandbox
from promoter.settings import EmailSettings, Settings, WebhookSettings, write_settings
from promoter.webhook.app import create_app
from tests.fixtures.deployments import Registration

SECRET = "doctor-secret-0123456789abcdefgh"


@pytest.fixture
def healthy(
    sandbox_settings: Settings,
    smtp_server: SmtpSandbox,
    s3_server: S3Sandbox,
    registered_deployments: Registration,
    tmp_path: Path,
) -> Iterator[Path]:
    """A settings file for the sandbox sites, SMTP and S3, with a real webhook answering at its public URL."""
    sock = tcp_listener()
    port = sock.getsockname()[1]
    webhook = WebhookSettings(
        host="127.0.0.1",
        port=port,
        public_base_url=f"http://127.0.0.1:{port}",
        secret=SecretStr(SECRET),
        outbox_path=tmp_path / "outbox.db",
    )
    settings = sandbox_settings.model_copy(
        update={"email": smtp_server.settings(), "versioning": s3_server.settings(), "webhook": webhook}
    )
    api = registered_deployments.api_url
    application = create_app(settings, prefect_client_factory=lambda: PrefectClient(api=api))
    server = ServerThread(uvicorn.Config(application, log_level="warning", lifespan="on"), sock, "webhook")
    server.start()
    server.wait_started()
    try:
        config = write_settings(settings, tmp_path / "qs-promoter.toml")
        set_up = CliRunner().invoke(app, ["qlik", "setup", "--config", str(config)])
        assert set_up.exit_code == 0, set_up.output
        yield config
    finally:
        server.stop()


def test_every_check_passes_against_a_working_installation(healthy: Path, smtp_server: SmtpSandbox) -> None:
    """Sandbox sites set up by `qlik setup`, SMTP, S3, Prefect with the deployments and a running webhook:
    every line is OK,
    exit code 0; with --send-test-email the test message reaches the SMTP server."""
    result = CliRunner().invoke(
        app, ["doctor", "--config", str(healthy), "--send-test-email", "admin@acme.example"]
    )

    lines = [line for line in result.output.splitlines() if line.startswith(("OK", "FAIL"))]
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0].split(maxsplit=1)[1] for line in lines] == [
        "settings",
        "state",
        "webhook secret",
        "source certificates",
        "source QRS",
        "test certificates",
        "test QRS",
        "prod certificates",
        "prod QRS",
        "Qlik setup",
        "SMTP",
        "S3",
        "Prefect API",
        "deployments",
        "webhook",
    ]
    assert all(line.startswith("OK") for line in lines), result.output
    assert "all checks passed" in result.output
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ("admin@acme.example",)


def test_each_kind_of_failure_is_reported_with_a_fix(
    sandbox_settings: Settings,
    smtp_server: SmtpSandbox,
    s3_server: S3Sandbox,
    refused_port: int,
    tmp_path: Path,
) -> None:
    """Missing certificates, an untrusted server certificate, a bare source site, a wrong SMTP password,
    a missing bucket, no Prefect API and no webhook: each is one FAIL line with a fix, exit code 1."""
    empty = tmp_path / "no-certs"
    empty.mkdir()
    sites = dict(sandbox_settings.target_sites)
    sites["test"] = sites["test"].model_copy(update={"cert_dir": empty})
    # prod's server certificate is not signed by the dev CA that this folder trusts
    sites["prod"] = sites["prod"].model_copy(update={"cert_dir": sandbox_settings.source_site.cert_dir})
    nobody = refused_port  # no Prefect API and no webhook there
    settings = sandbox_settings.model_copy(
        update={
            "target_sites": sites,
            "email": smtp_server.settings(password=SecretStr("wrong-password")),
            "versioning": s3_server.settings(bucket="no-such-bucket"),
            "webhook": WebhookSettings(
                secret=SecretStr(SECRET), public_base_url=f"http://127.0.0.1:{nobody}"
            ),
        }
    )
    config = write_settings(settings, tmp_path / "qs-promoter.toml")

    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{nobody}/api"}):
        result = CliRunner().invoke(app, ["doctor", "--config", str(config)])

    failed = {
        line.split(":")[0].removeprefix("FAIL").strip(): line
        for line in result.output.splitlines()
        if line.startswith("FAIL")
    }
    fixes = [line for line in result.output.splitlines() if line.strip().startswith("fix:")]
    assert result.exit_code == 1, result.output
    assert sorted(failed) == [
        "Prefect API",
        "Qlik setup",
        "S3",
        "SMTP",
        "prod QRS",
        "test certificates",
        "webhook",
    ], result.output
    assert len(fixes) == len(failed)
    assert "client.pem missing" in failed["test certificates"]
    assert "qs-promoter up" in result.output  # the Prefect and webhook fixes
    assert "root.pem does not match the server certificate" in result.output
    assert "user or password not accepted" in failed["SMTP"]
    assert "wrong-password" not in result.output
    assert "the bucket does not exist" in failed["S3"]
    assert "OK    source QRS" in result.output


def test_an_unreadable_settings_file_is_the_only_check(tmp_path: Path) -> None:
    """A broken settings file fails the first check; nothing else is tried."""
    config = tmp_path / "qs-promoter.toml"
    config.write_text("[source_site\n", encoding="utf-8")

    result = CliRunner().invoke(app, ["doctor", "--config", str(config)])

    assert result.exit_code == 1
    assert result.output.startswith(f"FAIL  settings: {config}: not valid TOML")
    assert result.output.count("FAIL") == 1


def test_without_a_settings_file_doctor_says_to_copy_the_example_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a folder with no qs-promoter.toml, doctor fails one check, names the file it looked for,
    and gives the command that copies the commented example there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QSP_CONFIG", raising=False)
    expected = tmp_path / "qs-promoter.toml"

    result = CliRunner().invoke(app, ["doctor"])

    assert result.exit_code == 1
    first, fix = result.output.splitlines()[:2]
    assert first == f"FAIL  settings: no settings file at {expected}"
    assert fix.startswith("      fix: copy the commented example, then fill in your sites: ")
    example = Path(__file__).resolve().parents[2] / "qs-promoter.example.toml"
    assert f'"{example}" "{expected}"' in fix
    assert result.output.count("FAIL") == 1


def qlik_setup_line(config: Path, nobody: int) -> tuple[str, str]:
    """Doctor's "Qlik setup" line and the fix under it (Prefect and the webhook pointed at nothing)."""
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{nobody}/api"}):
        output = CliRunner().invoke(app, ["doctor", "--config", str(config)]).output
    lines = output.splitlines()
    [at] = [n for n, line in enumerate(lines) if line[6:].startswith("Qlik setup:")]
    fix = lines[at + 1].strip() if at + 1 < len(lines) and lines[at + 1].startswith("      fix:") else ""
    return lines[at], fix


def test_the_qlik_setup_is_checked_with_its_fix_until_qlik_setup_has_run(
    sandbox: Sandbox, sandbox_settings: Settings, refused_port: int, tmp_path: Path
) -> None:
    """On a source site with PromoteToServer offering a site no longer configured, and
    EmailAlertOnPublishTo on apps instead of streams, doctor fails the Qlik setup line, names the
    missing and the mismatched, and gives `qs-promoter qlik setup` as the fix; after it ran, the line
    is OK and lists what the source site has."""
    dev = sandbox.sites["dev"].repository
    seed_stream(sandbox.sites["test"].repository, "Everyone")
    seed_custom_property(dev, "PromoteToServer", ["test - Overwrite", "old - Overwrite"])
    seed_custom_property(dev, "EmailAlertOnPublishTo", ["True"], ["App"])
    webhook = WebhookSettings(secret=SecretStr(SECRET), public_base_url=f"http://127.0.0.1:{refused_port}")
    settings = sandbox_settings.model_copy(update={"email": EmailSettings(enabled=True), "webhook": webhook})
    config = write_settings(settings, tmp_path / "qs-promoter.toml")

    before, fix = qlik_setup_line(config, refused_port)
    setup = CliRunner().invoke(app, ["qlik", "setup", "--config", str(config)])
    after, _ = qlik_setup_line(config, refused_port)

    assert before.startswith("FAIL  Qlik setup: PromotionApproval is missing (on App)")
    assert (
        "PromoteToServer choice 'old - Overwrite' is not 'alias - Overwrite' or 'alias - Duplicate'" in before
    )
    assert "EmailAlertOnPublishTo cannot be set on Stream (only on App)" in before
    assert "PromoteToStream is missing" in before
    assert fix == "fix: run `qs-promoter qlik setup` (with --dry-run first to see what it changes)"
    assert setup.exit_code == 0, setup.output
    assert after.startswith("OK    Qlik setup: the source site has PromotionApproval, PromoteToServer,"), (
        after
    )


def test_a_stale_choice_still_in_use_is_a_warning_with_what_to_do(
    sandbox: Sandbox, sandbox_settings: Settings, refused_port: int, tmp_path: Path
) -> None:
    """A PromoteToServer choice of a site no longer configured that an app still has set cannot be
    removed: doctor warns (the check passes) and says to clear it in the QMC first."""
    dev = sandbox.sites["dev"].repository
    webhook = WebhookSettings(secret=SecretStr(SECRET), public_base_url=f"http://127.0.0.1:{refused_port}")
    config = write_settings(sandbox_settings.model_copy(update={"webhook": webhook}), tmp_path / "qs.toml")
    assert CliRunner().invoke(app, ["qlik", "setup", "--config", str(config)]).exit_code == 0
    seed_app(dev, "Sales", custom_properties={"PromoteToServer": ["prod - Overwrite"]})
    only_test = sandbox_settings.model_copy(
        update={"webhook": webhook, "target_sites": {"test": sandbox_settings.target_sites["test"]}}
    )
    config = write_settings(only_test, tmp_path / "qs.toml")
    assert CliRunner().invoke(app, ["qlik", "setup", "--config", str(config)]).exit_code == 0

    line, fix = qlik_setup_line(config, refused_port)

    assert line.startswith("WARN  Qlik setup: PromoteToServer choice 'prod - Overwrite' is not"), line
    assert "still in use: kept" in line
    assert fix == "fix: clear it where it is set (App) in the QMC, then run `qs-promoter qlik setup`"
