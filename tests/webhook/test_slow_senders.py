"""Slow and noisy senders: connections that never finish a request, callers from elsewhere, floods.

Everything runs on loopback; sources are told apart by binding the client to 127.0.0.x. The
file-limit test runs the webhook as `qs-promoter webhook serve` in a child process whose own
file limit it lowers; the rest serve it in a thread of the test.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from ipaddress import ip_network
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from pydantic import SecretStr

from promoter.sandbox.serving import ServerThread
from promoter.settings import Settings, SiteSettings, WebhookSettings, write_settings
from promoter.webhook.app import create_app
from promoter.webhook.serving import prepare
from tests.webhook.support import (
    FAST,
    SECRET,
    client_for,
    make_settings,
    notification,
    serve,
    unused_url,
)

URL = f"/qrs/{SECRET}/app-updated"
# A request whose headers never end: the blank line that would close them is never sent.
UNFINISHED_HEAD = f"POST {URL} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n".encode()


def address_of(base_url: str) -> tuple[str, int]:
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


@contextmanager
def connections(
    address: tuple[str, int], count: int, first_bytes: bytes, source: str = "127.0.0.1"
) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` that each send ``first_bytes`` and then nothing."""
    with ExitStack() as stack:
        opened = []
        for _ in range(count):
            sock = stack.enter_context(
                socket.create_connection(address, timeout=10, source_address=(source, 0))
            )
            sock.sendall(first_bytes)
            opened.append(sock)
        yield opened


def closed_by_server(socks: list[socket.socket], within: float) -> tuple[list[socket.socket], bytes]:
    """Wait until the server closed each connection (or ``within`` seconds passed); returns the ones still
    open and everything the server sent on any of them."""
    received = b""
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + within
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=deadline - time.monotonic()):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except ConnectionError:
                    data = b""
                received += data
                if not data:
                    selector.unregister(key.fileobj)
        return [key.fileobj for key in selector.get_map().values()], received  # type: ignore[misc]


# -- the whole command under a low file limit ------------------------------------------------------

CHILD = """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
from promoter.cli import app
app(["webhook", "serve", "--config", sys.argv[1]], prog_name="qs-promoter")
"""


STARTUP_DEADLINE = 180


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@contextmanager
def webhook_process(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`qs-promoter webhook serve` with default limits in a child limited to 256 open files; yields its
    base URL and the file its output goes to. QRS and Prefect are unreachable (nothing is submitted)."""
    port = free_port()
    settings = Settings(
        source_site=SiteSettings(host="127.0.0.1", port=free_port()),
        webhook=WebhookSettings(
            host="127.0.0.1", port=port, secret=SecretStr(SECRET), outbox_path=tmp_path / "outbox.db"
        ),
    )
    config = write_settings(settings, tmp_path / "qs-promoter.toml")
    output = tmp_path / "webhook.log"
    env = {**os.environ, "PREFECT_API_URL": unused_url(), "PYTHONUNBUFFERED": "1"}
    with output.open("wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        # Generous: on a machine busy with other test runs, importing the command alone took 50 s.
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            assert child.poll() is None, output.read_text(encoding="utf-8", errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"the webhook did not start within {STARTUP_DEADLINE} s"
            try:
                httpx.get(f"{base_url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base_url, output
    finally:
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=15)


@pytest.mark.skipif(sys.platform == "win32", reason="the file limit is POSIX")
def test_slow_connections_neither_starve_a_notification_nor_exhaust_the_files(tmp_path: Path) -> None:
    """With 256 files allowed, 300 connections that never finish their headers do not keep a real
    notification from its 200 nor make the log say "Too many open files"; each of them is closed
    within the request timeout (5 s by default), and the refusals are summed up, not logged each."""
    with (
        webhook_process(tmp_path) as (base_url, output),
        connections(address_of(base_url), 300, UNFINISHED_HEAD) as slow,
    ):
        response = httpx.post(base_url + URL, json=[notification(uuid4())], timeout=10)
        still_open, answers = closed_by_server(slow, within=15)
    log = output.read_text(encoding="utf-8", errors="replace")

    assert (response.status_code, response.json()) == (200, {"queued": 1, "ignored": 0})
    assert (len(still_open), answers) == (0, b"")
    assert "Too many open files" not in log and "out of system resource" not in log
    assert "connection closed to make room" in log or "request not complete within 5 s" in log
    assert len(re.findall(r"refused 127\.0\.0\.1: ", log)) == 1


# -- in a thread: timeouts, sources, the limit ------------------------------------------------------


def test_a_request_not_complete_in_time_is_closed(tmp_path: Path) -> None:
    """A connection whose headers never end, and one whose body stops halfway, are closed after
    request_timeout_seconds with no answer; nothing is stored; a prompt sender is served meanwhile."""
    settings = make_settings(tmp_path, request_timeout_seconds=1)
    app = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    half_body = UNFINISHED_HEAD + b"Content-Length: 100\r\n\r\n[{"
    with serve(app) as base_url:
        address = address_of(base_url)
        with connections(address, 1, UNFINISHED_HEAD) as head, connections(address, 1, half_body) as body:
            started = time.monotonic()
            prompt = httpx.post(base_url + URL, json=[notification(uuid4())], timeout=10)
            still_open, answers = closed_by_server(head + body, within=10)
            took = time.monotonic() - started

    assert prompt.status_code == 200
    assert (still_open, answers) == ([], b"")
    assert 0.9 <= took < 10


def test_a_source_outside_the_networks_is_refused_before_its_request_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection from outside allowed_networks and monitoring_networks is closed at once, before its
    request is read (so no 403 comes back either); fifty of them make one log line at once and a
    summary, not fifty lines. Allowed sources are served."""
    caplog.set_level("WARNING", logger="promoter.webhook")
    settings = make_settings(
        tmp_path,
        allowed_networks=[ip_network("127.0.0.2/32")],
        monitoring_networks=[ip_network("127.0.0.3/32")],
    )
    app = create_app(
        settings,
        prefect_client_factory=client_for(unused_url()),
        submit_policy=FAST,
        refusal_summary_seconds=0.5,
    )
    request = b"GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n"
    with serve(app) as base_url:
        with connections(address_of(base_url), 50, request, source="127.0.0.1") as outsiders:
            still_open, answers = closed_by_server(outsiders, within=10)
        allowed = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        monitor = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        with allowed, monitor:
            posted = allowed.post(base_url + URL, json=[notification(uuid4())]).status_code
            checked = monitor.get(base_url + "/healthz").status_code
        lines = refusal_lines(caplog, expected=50)

    assert (still_open, answers) == ([], b"")
    assert (posted, checked) == (200, 200)
    assert len(lines) <= 5, lines
    assert lines[0].startswith("refused 127.0.0.1: connection from outside allowed_networks")


def refusal_lines(caplog: pytest.LogCaptureFixture, expected: int) -> list[str]:
    """The webhook's refusal lines, once they account for ``expected`` refusals (the first is logged
    alone, summaries say "refused N more"); fails after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
        counted = sum(
            int(m.group(1)) if (m := re.match(r"refused (\d+) more", line)) else 1 for line in lines
        )
        if counted >= expected:
            return lines
        assert time.monotonic() < deadline, f"{counted} of {expected} refusals logged: {lines}"
        time.sleep(0.05)


def test_at_the_connection_limit_the_longest_waiting_connection_makes_room(tmp_path: Path) -> None:
    """With max_connections taken by connections that owe their request, a real notification is still
    answered: the one that has waited longest is closed to make room, and the others are still served."""
    settings = make_settings(tmp_path, max_connections=6, request_timeout_seconds=60)
    app = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with (
        serve(app) as base_url,
        httpx.Client(base_url=base_url) as client,
        connections(address_of(base_url), 5, UNFINISHED_HEAD) as waiting,
    ):
        # Answered after the five were set up (connections are taken in order): the sixth, kept alive.
        assert client.get("/healthz").status_code == 200
        response = httpx.post(base_url + URL, json=[notification(uuid4())], timeout=10)
        oldest_open, _ = closed_by_server(waiting[:1], within=10)
        answers = [finish(sock) for sock in waiting[1:]]

    assert response.status_code == 200
    assert (oldest_open, answers) == ([], [200] * 4)


def finish(sock: socket.socket) -> int:
    """Send the rest of an unfinished request (an empty list of changes); the answer's status code."""
    sock.sendall(b"Content-Length: 2\r\nConnection: close\r\n\r\n[]")
    return status_of_answer(sock)


def status_of_answer(sock: socket.socket) -> int:
    """Read the answer to a request sent with "Connection: close" up to its end; its status code."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_connections_queued_before_the_server_accepts_do_not_crowd_out_a_notification(
    tmp_path: Path,
) -> None:
    """Sixty connections that owe their request and then a real notification all wait in the kernel's
    queue before the webhook accepts any (as on a busy machine): with max_connections 20 the
    notification still gets its 200. The webhook takes the queue in turns, closing the connections
    that have waited longest to make room, instead of refusing what one turn cannot hold; the
    newest nineteen slow connections are still open and served."""
    settings = make_settings(tmp_path, max_connections=20, request_timeout_seconds=60)
    app = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    body = json.dumps([notification(uuid4())]).encode()
    post = (
        f"POST {URL} HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    # Listening, not yet serving: the kernel completes each connection and queues it with its bytes.
    prepared = prepare(app, host="127.0.0.1", port=0, log_level="warning")
    server = ServerThread(prepared.config, prepared.sockets[0], name="webhook")
    with ExitStack() as stack:
        stack.callback(server.stop)  # closes the listening socket too, started or not
        slow = stack.enter_context(connections(address_of(prepared.base_url), 60, UNFINISHED_HEAD))
        (notifier,) = stack.enter_context(connections(address_of(prepared.base_url), 1, post))
        server.start()
        server.wait_started()
        status = status_of_answer(notifier)
        oldest_open, answers = closed_by_server(slow[:41], within=30)
        newest = [finish(sock) for sock in slow[41:]]

    assert status == 200
    assert (oldest_open, answers) == ([], b"")
    assert newest == [200] * 19
