"""Helpers for the sandbox's own tests: a bare QRS caller that adds the Xrfkey, nothing more."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from promoter.qrs.tls import site_tls
from promoter.sandbox.server import Sandbox, SandboxSite
from tests.fixtures.sandbox import SITES

API_USER = "UserDirectory=INTERNAL; UserId=sa_api"


class Qrs:
    """An httpx client for one sandbox site that sends a fresh Xrfkey (param + header) per call."""

    def __init__(self, site: SandboxSite, user: str | None = API_USER) -> None:
        headers = {"X-Qlik-User": user} if user else {}
        self.site = site
        self.http = httpx.Client(base_url=site.base_url, verify=site_tls(site.cert_dir), headers=headers)

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        key = secrets.token_hex(8)
        headers = {"X-Qlik-Xrfkey": key, **kw.pop("headers", {})}
        if "?" in path:  # httpx drops a URL's own query when params= is given: append instead
            return self.http.request(method, f"{path}&xrfkey={key}", headers=headers, **kw)
        return self.http.request(
            method, path, params={**(params or {}), "xrfkey": key}, headers=headers, **kw
        )

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.call("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.call("PUT", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.call("DELETE", path, **kw)

    def upload(self, name: str, content: bytes, **params: Any) -> dict[str, Any]:
        answer = self.post(
            "/qrs/app/upload",
            params={"name": name, **params},
            content=content,
            headers={"Content-Type": "application/vnd.qlik.sense.app"},
        )
        assert answer.status_code == 201, answer.text
        return answer.json()

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """dev, test and prod in this process: the sandbox's own tests check one site's QRS behaviour,
    and a process per site would add seconds to each of them (test_site_process.py covers that mode)."""
    root = tmp_path_factory.mktemp("sandbox")
    sites = {name: ("127.0.0.1", 0) for name in SITES}
    with Sandbox(sites, root / "certs", root / "data", processes=False) as running:
        yield running


@pytest.fixture
def dev(sandbox: Sandbox) -> SandboxSite:
    return sandbox.sites["dev"]


@pytest.fixture
def qrs(dev: SandboxSite) -> Iterator[Qrs]:
    """A QRS caller for the dev site, running as INTERNAL\\sa_api."""
    client = Qrs(dev)
    yield client
    client.close()


class Receiver:
    """A real HTTP server on loopback that records every POST it gets (a notification callback)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        self._arrived = threading.Condition()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        await asyncio.sleep(self.delay)
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._arrived:
            self.posts.append(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                    "body": body,
                }
            )
            self._arrived.notify_all()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.posts) >= count, timeout=timeout):
                raise TimeoutError(f"{len(self.posts)} of {count} POSTs after {timeout} s")
            return list(self.posts)

    def changes(self) -> list[dict[str, Any]]:
        return [change for post in self.posts for change in json.loads(post["body"])]


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """A callback receiver on a free loopback port and its base URL (http://127.0.0.1:PORT)."""
    sock = socket.create_server(("127.0.0.1", 0))
    app = Receiver()
    server = _QuietServer(uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.005)
    try:
        yield app, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
