"""The demo: sandbox Qlik sites, SMTP and S3 on this machine, the real stack, and the original's workflow.

Every step goes through the real loop: a QRS change notification reaches the webhook, is kept
in its outbox, becomes a flow run, and the executor runs it. Each step is verified from the
outside (QRS reads, the SMTP server's mailbox, S3 versions) within a bounded wait.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Network
from pathlib import Path
from typing import TypeVar
from uuid import UUID

from pydantic import SecretStr

from promoter.errors import PromoterError
from promoter.notifications import callback_url
from promoter.prefect_api import HANDLE_CHANGE, recent_runs, run_states, with_prefect
from promoter.sandbox.s3 import S3Sandbox
from promoter.sandbox.server import Sandbox
from promoter.sandbox.smtp import ReceivedMail, SmtpSandbox
from promoter.sandbox.world import MANAGER, REP, World, build_world, publish_as, set_properties
from promoter.services.stack import (
    IN_PROCESS,
    ExecutorKind,
    Stack,
    StackOptions,
    free_port,
    port_free,
    project_dir,
)
from promoter.settings import PrefectSettings, Settings, SiteSettings, WebhookSettings, write_settings

T = TypeVar("T")

# Linux routes all of 127/8 to loopback, so each site can have the real QRS port.
PREFERRED_SITES = {"dev": ("127.0.0.1", 4242), "test": ("127.0.0.2", 4242), "prod": ("127.0.0.3", 4242)}
PREFECT_PORT = 4200
WEBHOOK_PORT = 8787
STEP_TIMEOUT = 120.0
APP_NAME = "Sales Dashboard"
# Kept between runs: the Prefect database (its history shows in the UI, and a restart is faster).
KEEP = {"prefect"}


class StepFailed(PromoterError):
    """A step of the scenario was not verified in time; the message says which and what was seen."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(f"{title}: {detail}")
        self.title = title


@dataclass
class Step:
    title: str
    seconds: float  # since the scenario began


@dataclass
class Demo:
    """The stand-ins, the settings, the stack and the scenario; ``run()`` then ``stop()``."""

    root: Path  # absolute, e.g. <cwd>/var/demo
    echo: Callable[[str], None] = print
    stop_requested: threading.Event = field(default_factory=threading.Event)
    step_timeout: float = STEP_TIMEOUT
    sandbox: Sandbox | None = None
    smtp: SmtpSandbox | None = None
    s3: S3Sandbox | None = None
    stack: Stack | None = None
    settings: Settings | None = None
    world: World | None = None
    steps: list[Step] = field(default_factory=list)
    began: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    app_id: UUID | None = None
    s3_version: str = ""
    worker_limit: int | None = None  # settings prefect.worker_limit (the benchmarks bound it)
    executor: ExecutorKind = IN_PROCESS  # the benchmarks also measure Prefect's process worker

    # -- the parts -------------------------------------------------------------------------

    def prepare(self) -> None:
        """Start the stand-ins, build the Qlik world, write the settings file, start the stack."""
        self.began = time.monotonic()
        self.started_at = datetime.now(UTC)
        self._clean()
        self._start_sites()
        self.smtp = SmtpSandbox(
            security="starttls",
            username="promoter",
            password=secrets.token_urlsafe(12),
            folder=self.root / "smtp",
        ).start()
        self.s3 = S3Sandbox().start()
        self.echo(f"SMTP server (STARTTLS, AUTH): 127.0.0.1:{self.smtp.port}")
        self.echo(f"S3 endpoint (versioned bucket {self.s3.bucket}): {self.s3.endpoint_url}")
        self.settings = self._write_settings()
        self.echo(f"settings: {self.config}")
        prefect_port = PREFECT_PORT
        if not port_free("127.0.0.1", prefect_port):
            prefect_port = free_port()
            while prefect_port == self.settings.webhook.port:  # both picked while neither is bound
                prefect_port = free_port()
            self.echo(f"note: port {PREFECT_PORT} is taken; the Prefect server uses {prefect_port}")
        options = StackOptions(
            config=self.config,
            state_dir=self.root,
            project_dir=project_dir(),
            prefect_port=prefect_port,
            reuse_running_server=False,  # never register the demo into someone else's server
            executor=self.executor,
        )
        self.stack = Stack(self.settings, options, echo=self.echo, stop_requested=self.stop_requested)
        self.stack.start()
        self._passed("the stack is up: Prefect server, deployments, executor, webhook")

    @property
    def config(self) -> Path:
        return self.root / "qs-promoter.toml"

    def _clean(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in self.root.iterdir():
            if entry.name in KEEP:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _start_sites(self) -> None:
        certs, data = self.root / "certs", self.root / "sites"
        try:
            self.sandbox = Sandbox(PREFERRED_SITES, certs, data).start()
        except OSError as exc:
            self.echo(
                f"note: cannot bind 127.0.0.1-3:4242 ({exc.strerror or exc}); "
                "the sites use free ports on 127.0.0.1 instead"
            )
            shutil.rmtree(certs, ignore_errors=True)
            self.sandbox = Sandbox({name: ("127.0.0.1", 0) for name in PREFERRED_SITES}, certs, data).start()
        for site in self.sandbox.sites.values():
            self.echo(f"sandbox Qlik site {site.name}: {site.base_url} (certificates in {site.cert_dir})")

    def _site(self, name: str) -> SiteSettings:
        assert self.sandbox is not None
        site = self.sandbox.sites[name]
        return SiteSettings(host=site.host, port=site.port, cert_dir=site.cert_dir)

    def _write_settings(self) -> Settings:
        assert self.sandbox is not None and self.smtp is not None and self.s3 is not None
        port = WEBHOOK_PORT if port_free("127.0.0.1", WEBHOOK_PORT) else free_port()
        if port != WEBHOOK_PORT:
            self.echo(f"note: port {WEBHOOK_PORT} is taken; the webhook uses {port}")
        settings = Settings(
            source_site=self._site("dev"),
            target_sites={"test": self._site("test"), "prod": self._site("prod")},
            cert_root=self.root / "certs",
            email=self.smtp.settings(enabled=True),
            versioning=self.s3.settings(enabled=True),
            webhook=WebhookSettings(
                host="127.0.0.1",
                port=port,
                public_base_url=f"http://127.0.0.1:{port}",
                secret=SecretStr(secrets.token_urlsafe(24)),
                allowed_networks=[IPv4Network("127.0.0.0/8")],
                outbox_path=self.root / "outbox.db",
            ),
            ledger_url=f"sqlite:///{(self.root / 'ledger.db').as_posix()}",
            work_dir=self.root / "work",
            prefect=PrefectSettings(worker_limit=self.worker_limit),
        )
        self.world = run(build_world(settings))
        approvers = {str(self.world.sales_stream_id): [MANAGER.email]}
        settings = settings.model_copy(
            update={"email": settings.email.model_copy(update={"stream_approvers": approvers})}
        )
        write_settings(settings, self.config)
        return settings

    # -- the scenario ----------------------------------------------------------------------

    def run_scenario(self) -> None:
        """The seed README's workflow; raises StepFailed at the first step not verified in time."""
        settings, world, smtp = self.settings, self.world, self.smtp
        assert settings is not None and world is not None and smtp is not None and self.sandbox is not None
        dev = self.sandbox.sites["dev"]
        wanted = {callback_url(settings, "updated"), callback_url(settings, "published")}
        self.wait(
            "keep-subscriptions registered the QRS change subscriptions on dev",
            lambda: wanted <= {s.url for s in dev.repository.subscriptions.values()} or None,
            lambda: f"{len(dev.repository.subscriptions)} subscription(s) on dev",
        )

        app_file = self.root / "work" / "sales-dashboard.qvf"
        app_file.parent.mkdir(parents=True, exist_ok=True)
        app_file.write_bytes(b"QVF demo: Sales Dashboard, quarterly revenue by region\n" * 4096)
        app = run(publish_as(settings, REP, app_file, APP_NAME, world.sales_stream_id))
        self.app_id = app.id
        self._passed(f"{REP.name} (rep) published {APP_NAME!r} to the Sales stream on dev")

        self.wait(
            f"publish alert emailed to {MANAGER.name} (manager)",
            lambda: self._mail(MANAGER.email, "Published for review"),
            lambda: self._mailbox(),
        )

        approval = {
            "PromoteToServer": ["test - Overwrite", "prod - Duplicate"],
            "PromoteToStream": ["Everyone"],
            "PromotionS3Versioning": ["True"],
            "PromotionApproval": ["Approve"],
        }
        run(set_properties(settings, MANAGER, app.id, world, approval))
        self._passed(f"{MANAGER.name} approved: test - Overwrite, prod - Duplicate, stream Everyone, S3 True")

        self.wait(
            f"promoted: {APP_NAME!r} is in Everyone on test and on prod (QRS reads)",
            lambda: run(self._promoted()) or None,
            lambda: "not yet in Everyone on both target sites",
        )
        self.wait(
            "versioned: a new S3 version of the app exists",
            self._versioned,
            lambda: f"no version under {settings.versioning.prefix}apps/{app.id}/",
        )
        self.wait(
            "unpublished on dev: the published app is gone, the rep owns an unpublished copy",
            lambda: run(self._unpublished()) or None,
            lambda: "the published app is still in Sales, or no copy for the rep",
        )
        self.wait(
            "promotion results emailed",
            lambda: self._mail(REP.email, "Promoted"),
            lambda: self._mailbox(),
        )
        self.wait(
            "the flow runs that did it completed: publish alert and promotion (Prefect API)",
            self._handled,
            lambda: ", ".join(f"{name}: {state}" for name, state in self._handle_runs()) or "no runs",
        )

    def wait(self, title: str, check: Callable[[], object], seen: Callable[[], str]) -> object:
        """Poll ``check`` (truthy = verified) until ``step_timeout``; print the step or raise StepFailed."""
        deadline = time.monotonic() + self.step_timeout
        while not self.stop_requested.is_set():
            result = check()
            if result:
                self._passed(title)
                return result
            if time.monotonic() > deadline:
                raise StepFailed(title, f"not verified within {self.step_timeout:.0f} s; seen: {seen()}")
            self.stop_requested.wait(0.5)
        raise StepFailed(title, "stopped")

    def _passed(self, title: str) -> None:
        elapsed = time.monotonic() - self.began
        self.steps.append(Step(title, elapsed))
        self.echo(f"[{elapsed:6.1f} s] OK  {title}")

    def _mail(self, address: str, subject_word: str) -> ReceivedMail | None:
        assert self.smtp is not None
        for received in self.smtp.messages:
            subject = str(received.message["Subject"] or "")
            if address in received.rcpt_tos and subject_word in subject and APP_NAME in subject:
                return received
        return None

    def _mailbox(self) -> str:
        assert self.smtp is not None
        subjects = [str(m.message["Subject"]) for m in self.smtp.messages]
        return f"{len(subjects)} email(s): {subjects}"

    async def _promoted(self) -> bool:
        from promoter.qrs.client import QrsClient

        assert self.settings is not None and self.world is not None
        for site in ("test", "prod"):
            async with QrsClient.for_site(self.settings, site) as qrs:
                everyone = self.world.target_streams[site]["Everyone"]
                if not await qrs.apps_named_in_stream(APP_NAME, everyone):
                    return False
        return True

    def _versioned(self) -> str | None:
        from promoter.versioning import list_versions, s3_client

        assert self.settings is not None
        versioning = self.settings.versioning
        s3 = s3_client(versioning)
        try:
            versions = list_versions(s3, versioning.bucket, f"{versioning.prefix}apps/{self.app_id}/")
        finally:
            s3.close()
        if versions:
            self.s3_version = f"s3://{versioning.bucket}/{versions[0].key} version {versions[0].version_id}"
        return self.s3_version or None

    async def _unpublished(self) -> bool:
        from promoter.qrs.client import QrsClient

        assert self.settings is not None
        async with QrsClient.for_site(self.settings, "source") as dev:
            apps = await dev.apps()
        original_gone = not any(a.id == self.app_id for a in apps)
        copy = any(a.name == APP_NAME and not a.published and a.owner.user_id == REP.user_id for a in apps)
        return original_gone and copy

    def _handle_runs(self) -> list[tuple[str, str]]:
        """(name, state) of this session's handle-app-change runs (earlier demos' runs stay in the DB)."""
        assert self.stack is not None
        api = self.stack.api_url
        return run(with_prefect(api, lambda client: run_states(client, HANDLE_CHANGE, self.started_at)))

    def _handled(self) -> bool:
        runs = self._handle_runs()
        broken = [f"{name}: {state}" for name, state in runs if state in ("FAILED", "CRASHED", "CANCELLED")]
        if broken:
            raise StepFailed("flow runs", f"{', '.join(broken)} (see the Prefect UI and {self.root / 'log'})")
        return len(runs) >= 2 and all(state == "COMPLETED" for _, state in runs)

    # -- the end ---------------------------------------------------------------------------

    def save_mail(self) -> list[Path]:
        """Write every email the SMTP stand-in received to <root>/mail/NN-subject.eml."""
        if self.smtp is None:
            return []
        folder = self.root / "mail"
        folder.mkdir(parents=True, exist_ok=True)
        saved = []
        for number, received in enumerate(self.smtp.messages, start=1):
            slug = re.sub(r"[^A-Za-z0-9]+", "-", str(received.message["Subject"] or "mail")).strip("-")[:60]
            path = folder / f"{number:02d}-{slug}.eml"
            path.write_bytes(received.raw)
            saved.append(path)
        return saved

    def where_to_look(self) -> list[str]:
        lines = []
        if self.stack is not None and self.stack.api_url:
            lines.append(f"Prefect UI:   {self.stack.ui_url}  (flow runs, logs, the promotion artifact)")
        lines.append(f"emails:       {self.root / 'mail'}  (.eml files, open them in any mail program)")
        if self.s3_version and self.s3 is not None:
            lines.append(f"S3 versions:  {self.s3_version} at {self.s3.endpoint_url}")
        lines.append(f"settings:     {self.config}")
        lines.append(f"logs:         {self.root / 'log'}")
        return lines

    def flow_run_report(self) -> list[str]:
        """The newest flow runs and their states (for a failed step: what the executor did)."""
        if self.stack is None or not self.stack.api_url:
            return []
        try:
            runs = run(with_prefect(self.stack.api_url, recent_runs))
        except Exception as exc:  # a report for a failure must not fail itself
            return [f"  (flow runs not readable: {type(exc).__name__})"]
        return [f"  {name}: {state}" for name, state in runs]

    def stop(self) -> None:
        """Stop the stack (executor first), then the stand-ins."""
        if self.stack is not None:
            self.stack.stop()
        for part in (self.s3, self.smtp, self.sandbox):
            if part is not None:
                part.stop()


def run(coroutine: Awaitable[T]) -> T:
    """Run one coroutine to completion from the demo's synchronous script."""

    async def wrapper() -> T:
        return await coroutine

    return asyncio.run(wrapper())
