"""The end-to-end world: sandbox sites, SMTP, S3 and a Prefect server, configured as an admin would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from promoter.ledger import Ledger
from promoter.sandbox.s3 import S3Sandbox
from promoter.sandbox.server import Sandbox
from promoter.sandbox.smtp import SmtpSandbox
from promoter.sandbox.world import MANAGER, World, build_world
from promoter.settings import Settings, WebhookSettings, write_settings

# Prefect's in-process engine leaves sockets of its own API clients (log and event workers,
# per-loop client cache) to the garbage collector when a test's event loop closes. That is
# Prefect's, not ours; our own clients are checked for leaks in tests/qrs and tests/sandbox.
IN_PROCESS_FLOWS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@dataclass
class Stage:
    """Everything a scenario needs: the running parts, the settings file in force, the world's ids."""

    sandbox: Sandbox
    smtp: SmtpSandbox
    s3: S3Sandbox
    settings: Settings
    config: Path
    world: World
    tmp: Path

    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_url)

    def site(self, name: str):
        return self.sandbox.sites[name]


@pytest.fixture
def stage(
    sandbox: Sandbox,
    sandbox_settings: Settings,
    smtp_server: SmtpSandbox,
    s3_server: S3Sandbox,
    prefect_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stage]:
    """The dev/test/prod sandbox with the original's properties, people and streams, email and S3 on."""
    settings = sandbox_settings.model_copy(
        update={
            "email": smtp_server.settings(enabled=True),
            "versioning": s3_server.settings(enabled=True),
            "webhook": WebhookSettings(secret=SecretStr("e2e-webhook-secret-0123456789")),
            "work_dir": tmp_path / "work",
        }
    )
    world = asyncio.run(build_world(settings))
    approvers = {str(world.sales_stream_id): [MANAGER.email]}
    settings = settings.model_copy(
        update={"email": settings.email.model_copy(update={"stream_approvers": approvers})}
    )
    config = write_settings(settings, tmp_path / "qs-promoter.toml")
    monkeypatch.setenv("QSP_CONFIG", str(config))
    yield Stage(sandbox, smtp_server, s3_server, settings, config, world, tmp_path)
