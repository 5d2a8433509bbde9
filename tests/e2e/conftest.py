"""The end-to-end world: sandbox sites, SMTP, S3 and a Prefect server, configured as an admin would."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import SecretStr

from promoter.qrs.client import QrsClient
from promoter.qrs.models import App
from promoter.sandbox.s3 import S3Sandbox
from promoter.sandbox.server import Sandbox, SandboxSite
from promoter.sandbox.smtp import SmtpSandbox
from promoter.sandbox.synthetic import make_app_file
from promoter.sandbox.world import MANAGER, REP, Person, World, build_world, publish_as, set_properties
from promoter.settings import Settings, WebhookSettings, write_settings
from promoter.store.ledger import Ledger

# Prefect's in-process engine leaves sockets of its own API clients (log and event workers,
# per-loop client cache) to the garbage collector when a test's event loop closes. That is
# Prefect's, not ours; our own clients are checked for leaks in tests/qrs and tests/sandbox.
# tests/conftest.py collects the garbage as each such test ends, so no later test gets the warning.
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
    _files: Iterator[int] = field(default_factory=itertools.count)

    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_url.get_secret_value())

    def site(self, name: str) -> SandboxSite:
        return self.sandbox.sites[name]

    def reconfigure(self, **sections: dict[str, Any]) -> Settings:
        """Change settings sections (``unpublish={"auto": False}``) in the file every run reads."""
        updates = {
            name: getattr(self.settings, name).model_copy(update=values) for name, values in sections.items()
        }
        self.settings = self.settings.model_copy(update=updates)
        write_settings(self.settings, self.config)
        return self.settings

    def app_file(self, size: int = 64 * 1024, *, seed: str = "app") -> Path:
        """A synthetic QVF: 4 KiB of metadata, then a data part that an export without data drops."""
        return make_app_file(self.tmp / "apps" / f"{next(self._files)}.qvf", size, seed=seed)

    async def publish(self, name: str, file: Path | None = None, *, person: Person = REP) -> App:
        """``person`` uploads an app and publishes it to the Sales stream on dev."""
        app_file = file or self.app_file(seed=name)
        return await publish_as(self.settings, person, app_file, name, self.world.sales_stream_id)

    async def approve(
        self,
        app_id: UUID,
        servers: list[str],
        streams: list[str],
        *,
        by: Person = MANAGER,
        verdict: str = "Approve",
        **more: list[str],
    ) -> App:
        """``by`` sets PromoteToServer, PromoteToStream and PromotionApproval (and ``more``) in the QMC."""
        values = {"PromoteToServer": servers, "PromoteToStream": streams, "PromotionApproval": [verdict]}
        return await set_properties(self.settings, by, app_id, self.world, {**values, **more})

    async def apps(self, site: str) -> list[App]:
        """Every app on a site ("source" or a target alias), read through QRS."""
        async with QrsClient.for_site(self.settings, site) as qrs:
            return await qrs.apps()

    async def seed_target(self, site: str, name: str, stream: str, file: Path) -> App:
        """An app already published on a target site, as an admin put it there before qs-promoter."""
        async with QrsClient.for_site(self.settings, site) as qrs:
            app = await qrs.upload_app(file, name)
            return await qrs.publish_app(app.id, self.world.target_streams[site][stream])

    def mails(self) -> list[EmailMessage]:
        return [received.message for received in self.smtp.messages]

    def subjects(self) -> list[str]:
        return sorted(str(m["Subject"]) for m in self.mails())


class UploadCounter:
    """The app uploads a site receives from now on, and their bytes, from the sandbox's traffic counters."""

    UPLOAD = "POST /qrs/app/upload"

    def __init__(self, site: SandboxSite) -> None:
        self.site = site
        self.before = site.traffic()

    def _since(self, name: str) -> int:
        return self.site.traffic().get(name, 0) - self.before.get(name, 0)

    @property
    def uploads(self) -> int:
        return self._since(self.UPLOAD)

    @property
    def bytes_in(self) -> int:
        """Request body bytes the site received (uploads, and the small JSON bodies of PUTs)."""
        return self._since("bytes in")


def counting_uploads(stage: Stage, *sites: str) -> dict[str, UploadCounter]:
    return {name: UploadCounter(stage.site(name)) for name in sites}


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
            "webhook": WebhookSettings(secret=SecretStr("e2e-webhook-secret-0123456789abc")),
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
