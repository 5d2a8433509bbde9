"""Helpers of the webhook tests: settings, QRS-shaped changes, a real uvicorn, a switchable Prefect API."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from fastapi import FastAPI
from prefect import flow
from prefect.client.orchestration import PrefectClient
from pydantic import SecretStr

from promoter.sandbox.repository import SYSTEM, Repository
from promoter.sandbox.seed import seed_custom_property, seed_stream
from promoter.sandbox.serving import ServerThread
from promoter.settings import Settings, SiteSettings, WebhookSettings
from promoter.webhook.serving import prepare
from promoter.webhook.submitter import SubmitPolicy

SECRET = "s3cret-for-tests-0123456789abcdef"
TEST_DEPLOYMENT = "handle-app-change/webhook-tests"
# Fast retries and polls: the behaviour is the production one, only the waits are shorter.
FAST = SubmitPolicy(
    max_in_flight=2,
    poll_seconds=0.5,
    first_backoff_seconds=0.05,
    max_backoff_seconds=0.5,
    attempt_timeout_seconds=1.5,
)


@flow(name="handle-app-change")
def handle_app_change(app_id: str, trigger: str, change_id: str) -> None:
    """Stands in for the real flow: the tests only check that runs are created, no worker runs them."""


def make_settings(tmp_path: Path, **webhook: Any) -> Settings:
    """Settings whose webhook has the test secret and an outbox under tmp_path; keywords override."""
    values: dict[str, Any] = {"secret": SecretStr(SECRET), "outbox_path": tmp_path / "var" / "outbox.db"}
    values.update(webhook)
    return Settings(source_site=SiteSettings(host="dev.example"), webhook=WebhookSettings(**values))


def with_webhook(settings: Settings, tmp_path: Path, **webhook: Any) -> Settings:
    """``settings`` (the sandbox's, say) with the test webhook of make_settings()."""
    return settings.model_copy(update={"webhook": make_settings(tmp_path, **webhook).webhook})


def unused_url() -> str:
    """An API URL on a loopback port nobody listens on: every connection is refused."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api"


def client_for(api_url: str) -> Callable[[], PrefectClient]:
    """A Prefect client factory for create_app (the server thread does not see the test's settings)."""
    return lambda: PrefectClient(api=api_url)


def notification(app_id: object, modified: str = "2026-05-01T12:00:00.000Z", **fields: Any) -> dict[str, Any]:
    """One change entry exactly as QRS posts it (qrs-facts §2.5), for an App update by default."""
    entry: dict[str, Any] = {
        "changeType": 2,
        "objectType": "App",
        "objectID": str(app_id),
        "changedProperties": ["modifiedDate"],
        "engineID": "",
        "engineType": "",
        "originatorNodeID": "6b3a6fa8-6f3d-4211-9823-75976a88623d",
        "originatorHostName": "dev.example",
        "originatorContextID": None,
        "createdDate": "2026-01-01T00:00:00.000Z",
        "modifiedDate": modified,
        "schemaPath": "ExternalChangeInfo",
    }
    entry.update(fields)
    return entry


@contextmanager
def serve(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run the app as `webhook serve` does (its lifespan, the connection guard) in a thread, on a
    free port of ``host``; yields the base URL."""
    prepared = prepare(app, host=host, port=0, log_level="warning")
    thread = ServerThread(prepared.config, prepared.sockets[0], name="webhook")
    thread.start()
    try:
        thread.wait_started()
        yield prepared.base_url
    finally:
        thread.stop()


async def wait_until(predicate: Callable[[], Any], within: float = 30.0, every: float = 0.05) -> Any:
    """Poll an async or sync predicate until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


class SwitchableApi:
    """A loopback TCP relay in front of the Prefect API. ``down()`` closes the port and cuts every
    open connection, so the API is really unreachable at that URL; ``up()`` listens again."""

    def __init__(self, target: str) -> None:
        host_port = target.split("//", 1)[1].split("/", 1)[0]
        self._target_host, port = host_port.rsplit(":", 1)
        self._target_port = int(port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="prefect-relay", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.Transport] = set()
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    def down(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(5)

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self._transports):
                transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self._target_host, self._target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        self._transports |= pair  # type: ignore[arg-type]
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._transports -= pair  # type: ignore[arg-type]
            for transport in pair:
                transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()


def apply_deployment(name: str) -> UUID:
    """Register handle-app-change under ``handle-app-change/<name>`` (no worker needed to create runs)."""
    deployment = handle_app_change.to_deployment(name=name)
    return deployment.apply()  # type: ignore[return-value]


def alerting_stream(repo: Repository, name: str) -> dict[str, Any]:
    """A stream whose EmailAlertOnPublishTo is True."""
    stream = seed_stream(repo, name)
    definition = seed_custom_property(repo, "EmailAlertOnPublishTo", ["True"], object_types=("Stream",))
    with repo.lock:
        values = [{"value": "True", "definition": {"id": definition["id"]}}]
        return repo.update(
            "stream", stream["id"], {**repo.get("stream", stream["id"]), "customProperties": values}, SYSTEM
        )
