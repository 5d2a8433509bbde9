"""Fixtures for the scheduled operations: a real receiver of QRS notifications, and the end-to-end world."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from promoter.sandbox.server import Sandbox
from promoter.settings import Settings, WebhookSettings, write_settings
from tests.e2e.conftest import stage  # noqa: F401 - the end-to-end world, for the reconcile tests


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST the receiver got: the path, the change list, and when (time.monotonic())."""

    path: str
    changes: list[dict[str, Any]]
    at: float


class Receiver:
    """A plain HTTP server on a free loopback port that records every notification QRS posts."""

    def __init__(self) -> None:
        received: list[Delivery] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    received.append(Delivery(self.path, json.loads(body or b"[]"), time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the paths hold the webhook secret

        self._received = received
        self._lock = lock
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiver", daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._received)

    async def wait_for(self, wanted: Callable[[Delivery], bool], within: float) -> Delivery:
        """The first delivery that ``wanted`` accepts, polled for up to ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            found = [d for d in self.deliveries() if wanted(d)]
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no such delivery in {within} s; got {self.deliveries()}")
            await asyncio.sleep(0.02)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses every connection for the whole test.

    The port stays bound (not listening) until the test ends, so no other process or connection
    can take it meanwhile; a port merely found free (free_port()) can be taken before it is used.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real local HTTP receiver standing in for the webhook; stopped after the test."""
    with Receiver() as running:
        yield running


@pytest.fixture
def keeper_settings(
    sandbox: Sandbox,
    sandbox_settings: Settings,
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Settings whose callback URLs point at the receiver; also the settings file flows read (QSP_CONFIG)."""
    webhook = WebhookSettings(
        public_base_url=receiver.url, secret=SecretStr("keeper-secret-0123456789abcdefgh")
    )
    settings = sandbox_settings.model_copy(update={"webhook": webhook})
    config = write_settings(settings, tmp_path / "qs-promoter.toml")
    monkeypatch.setenv("QSP_CONFIG", str(config))
    return settings
