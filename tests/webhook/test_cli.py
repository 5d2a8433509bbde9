"""`qs-promoter webhook serve` refuses to start with settings that would make an unsafe webhook."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from promoter.cli.webhook import app
from tests.webhook.support import SECRET


def write_config(tmp_path: Path, secret: str) -> Path:
    config = tmp_path / "qs-promoter.toml"
    config.write_text(
        f'[source_site]\nhost = "dev.example"\n\n[webhook]\nhost = "127.0.0.1"\nsecret = "{secret}"\n'
        f'outbox_path = "{(tmp_path / "outbox.db").as_posix()}"\n',
        encoding="utf-8",
    )
    return config


def test_serve_refuses_a_short_secret(tmp_path: Path) -> None:
    """A secret under 32 characters stops `serve` with exit code 2 and a message naming the setting."""
    result = CliRunner().invoke(app, ["serve", "--config", str(write_config(tmp_path, "too-short"))])

    assert result.exit_code == 2
    assert "webhook.secret" in result.output and "at least 32 characters" in result.output
    assert "too-short" not in result.output


def test_serve_refuses_to_start_without_a_prefect_api_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PREFECT_API_URL, `serve` stops instead of starting a throw-away ephemeral Prefect server."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    # The session's Prefect test server may have set the URL in this thread's settings context.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["serve", "--config", str(write_config(tmp_path, SECRET))])

    assert result.exit_code == 2
    assert "PREFECT_API_URL is not set" in result.output
