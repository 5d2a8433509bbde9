"""The chaos world: sandbox sites, SMTP, S3 and the whole stack (`qs-promoter up`) as child processes.

The Prefect server runs on a throwaway database on the machine's PostgreSQL (127.0.0.1:5432,
trust auth) when it answers, else on SQLite. PostgreSQL because the stack under fire writes
from a dozen processes at once: SQLite answers a share of those writes with "database is
locked" 503s (prefect-notes §2), which would add failures of the test harness to the faults
the test injects on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from promoter.launcher import Child, start_child
from promoter.orchestration import with_prefect
from promoter.qrs.client import QrsClient
from promoter.sandbox.s3 import S3Sandbox
from promoter.sandbox.server import Sandbox
from promoter.sandbox.smtp import SmtpSandbox
from promoter.sandbox.world import World, build_world
from promoter.settings import PrefectSettings, Settings, WebhookSettings, write_settings
from promoter.stack import Stack, StackOptions, free_port, project_dir

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

T = TypeVar("T")

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
# In-memory leases are lost when the Prefect server restarts, and a slot taken before the
# restart is then never given back (measured: qsp-app-* limits stuck at 1 of 1 for good, and
# keep-subscriptions' deployment slot with them). Leases on disk survive a restart.
LEASES_ON_DISK = {
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"
}


def run(coroutine: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coroutine

    return asyncio.run(wrapper())


@dataclass
class Chaos:
    """The running world and the stack; the test's levers to pull on it."""

    root: Path
    sandbox: Sandbox
    smtp: SmtpSandbox
    s3: S3Sandbox
    settings: Settings
    world: World
    stack: Stack
    database: str  # "PostgreSQL" or "SQLite": what the Prefect server runs on
    log: list[str] = field(default_factory=list)

    def prefect(self, call: Callable[[PrefectClient], Awaitable[T]]) -> T:
        return run(with_prefect(self.stack.api_url, call))

    def apps(self, site: str) -> list:  # type: ignore[type-arg]
        async def read() -> list:  # type: ignore[type-arg]
            async with QrsClient.for_site(self.settings, site) as qrs:
                return await qrs.apps()

        return run(read())

    def child(self, name: str) -> Child:
        return next(c for c in self.stack.children if c.name == name)

    # -- the faults that need process control ------------------------------------------------

    def stop_prefect_server(self) -> tuple[list[str], dict[str, str], Path]:
        """Stop the Prefect server as a service manager would; returns what starts it again."""
        server = self.child("prefect-server")
        command = [str(part) for part in server.process.args]  # type: ignore[union-attr]
        server.stop(15.0)
        self.stack.children.remove(server)
        env = self.stack.environment()
        env.pop("PREFECT_API_URL")
        return command, env, server.log_file

    def start_prefect_server(self, command: list[str], env: dict[str, str], log_file: Path) -> None:
        child = start_child("prefect-server", command, env=env, cwd=Path.cwd(), log_file=log_file)
        self.stack.children.append(child)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert child.alive(), child.log_tail()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.stack.api_url}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            time.sleep(0.25)
        raise TimeoutError(f"the Prefect server did not come back:\n{child.log_tail()}")

    def kill_worker(self) -> None:
        """kill -9 of the worker process alone (its flow-run processes are orphaned, as on a real crash)."""
        worker = self.child("worker")
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait(10)
        self.stack.children.remove(worker)

    def start_worker(self) -> None:
        """A new worker, as the service manager restarts a dead one."""
        self.stack._start_worker()


def postgres_database() -> tuple[str, Callable[[], None]] | None:
    """A throwaway database on the local PostgreSQL and how to drop it; None if it does not answer."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except Exception:  # no driver or no server: the caller falls back to SQLite
        return None
    name = f"qsp_chaos_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", drop


@pytest.fixture
def chaos(
    sandbox: Sandbox,
    sandbox_settings: Settings,
    smtp_server: SmtpSandbox,
    s3_server: S3Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Chaos]:
    """dev/test/prod, SMTP, S3 (versioned bucket) and the stack: Prefect server, deployments, worker,
    webhook, keep-subscriptions; everything stopped and the database dropped afterwards."""
    port = free_port()
    settings = sandbox_settings.model_copy(
        update={
            "email": smtp_server.settings(enabled=True),
            "versioning": s3_server.settings(enabled=True),
            "webhook": WebhookSettings(
                host="127.0.0.1",
                port=port,
                public_base_url=f"http://127.0.0.1:{port}",
                secret=SecretStr(secrets.token_urlsafe(24)),
                allowed_networks=[IPv4Network("127.0.0.0/8")],
                outbox_path=tmp_path / "outbox.db",
            ),
            "work_dir": tmp_path / "work",
            # Two promotions per site (the default) makes fifty approvals queue for minutes.
            "prefect": PrefectSettings(site_concurrency=4),
        }
    )
    world = run(build_world(settings))
    config = write_settings(settings, tmp_path / "qs-promoter.toml")
    database = postgres_database()
    if database is not None:
        monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", database[0])
    for name, value in LEASES_ON_DISK.items():
        monkeypatch.setenv(name, value)
    # The suite's 0.3 s log batches (tests/conftest.py) cost the server a request per run every 0.3 s.
    monkeypatch.setenv("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "2")
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    options = StackOptions(
        config=config,
        state_dir=tmp_path / "var",
        project_dir=project_dir(),
        prefect_port=free_port(),
        reuse_running_server=False,
    )
    stack = Stack(settings, options, echo=echo)
    try:
        stack.start()
        yield Chaos(
            tmp_path,
            sandbox,
            smtp_server,
            s3_server,
            settings,
            world,
            stack,
            "PostgreSQL" if database else "SQLite",
            lines,
        )
    finally:
        stack.stop()
        if database is not None:
            database[1]()
