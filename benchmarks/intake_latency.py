"""Measure how fast the webhook acknowledges QRS notifications, and what reaches Prefect afterwards.

    .venv/bin/python benchmarks/intake_latency.py [--notifications 1000] [--senders 50] [--apps 100]
                                                  [--changes-per-app 2]

A temporary Prefect server (SQLite, as prefect_test_harness starts it) and the webhook (started
like `qs-promoter webhook serve`, in its own process, on loopback) run on this machine. The
senders post one change per request with ``--senders`` requests in flight. Each app gets
``notifications / apps`` notifications, which carry ``--changes-per-app`` distinct modifiedDates
(the rest are duplicates, as QRS's overlapping subscriptions produce). Reported: ack latency
percentiles measured by the senders, then how many flow runs the submitter created and how long
it took to empty the outbox. Everything shares the CPU, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID, uuid4

# Before prefect is imported: keep its home, database and results out of ~/.prefect.
_HOME = Path(tempfile.mkdtemp(prefix="qsp-bench-prefect-"))
os.environ["PREFECT_HOME"] = str(_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)

import httpx  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.client.orchestration import PrefectClient  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

SECRET = "bench-" + uuid4().hex
ROOT = Path(__file__).resolve().parent.parent


@flow(name="handle-app-change")
def handle_app_change(app_id: str, trigger: str, change_id: str) -> None:
    """The deployment target; no worker runs it here, only flow-run creation is measured."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, port: int) -> Path:
    config = folder / "qs-promoter.toml"
    config.write_text(
        '[source_site]\nhost = "dev.example"\n\n[webhook]\n'
        f'host = "127.0.0.1"\nport = {port}\nsecret = "{SECRET}"\n'
        f'outbox_path = "{(folder / "var" / "outbox.db").as_posix()}"\n',
        encoding="utf-8",
    )
    return config


def change(app_id: UUID, modified: str) -> dict[str, object]:
    return {
        "changeType": 2, "objectType": "App", "objectID": str(app_id),
        "changedProperties": ["modifiedDate"], "engineID": "", "engineType": "",
        "originatorNodeID": str(UUID(int=1)), "originatorHostName": "dev.example",
        "originatorContextID": None, "createdDate": "2026-01-01T00:00:00.000Z",
        "modifiedDate": modified, "schemaPath": "ExternalChangeInfo",
    }  # fmt: skip


def workload(notifications: int, apps: int, changes_per_app: int) -> list[dict[str, object]]:
    """Notification k is for app k % apps; its modifiedDate is one of changes_per_app per app."""
    app_ids = [uuid4() for _ in range(apps)]
    per_app = max(notifications // apps, 1)
    bodies = []
    for k in range(notifications):
        nth_for_app = k // apps
        version = min(nth_for_app * changes_per_app // per_app, changes_per_app - 1)
        bodies.append(change(app_ids[k % apps], f"2026-05-01T12:00:{version:02d}.000Z"))
    return bodies


async def wait_healthy(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"webhook exited with {process.returncode}")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("webhook did not become healthy within 60 s")


async def wait_drained(client: httpx.AsyncClient) -> dict[str, object]:
    """Poll /healthz (another process: nothing to wait on but its answer) until the outbox is empty."""
    while True:
        health: dict[str, object] = (await client.get("/healthz")).json()
        if not health["outbox_depth"]:
            return health
        await asyncio.sleep(0.2)


async def send_all(base_url: str, bodies: list[dict[str, object]], senders: int) -> list[float]:
    """Post every body over ``senders`` keep-alive connections; return each request's latency in seconds.

    A minimal HTTP/1.1 client on asyncio streams: an httpx client with 50 connections costs more
    CPU per request than the webhook itself, and on a small machine it would measure itself.
    """
    host, port = base_url.removeprefix("http://").split(":")
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        payload = json.dumps([body]).encode()
        queue.put_nowait(
            f"POST /qrs/{SECRET}/app-updated HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
    latencies: list[float] = []

    async def sender() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while not queue.empty():
                request = queue.get_nowait()
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"unexpected answer: {head!r} {answer!r}")
        finally:
            writer.close()

    await asyncio.gather(*(sender() for _ in range(senders)))
    return latencies


async def count_runs(api_url: str, deployment_id: UUID) -> int:
    only_this = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    total = 0
    async with PrefectClient(api=api_url) as prefect:
        while page := await prefect.read_flow_runs(flow_run_filter=only_this, limit=200, offset=total):
            total += len(page)
    return total


async def measure(
    base_url: str,
    process: subprocess.Popen[bytes],
    args: argparse.Namespace,
    api_url: str,
    deployment_id: UUID,
) -> None:
    bodies = workload(args.notifications, args.apps, args.changes_per_app)
    keys = {(b["objectID"], b["modifiedDate"]) for b in bodies}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        await wait_healthy(client, process)
        # Warm up: let the server import and compile what it does lazily on first use.
        await send_all(base_url, workload(args.senders, args.senders, 1), args.senders)
        started = time.perf_counter()
        latencies = await send_all(base_url, bodies, args.senders)
        sent_in = time.perf_counter() - started
        health = await wait_drained(client)
        drained_in = time.perf_counter() - started
    runs = await count_runs(api_url, deployment_id) - args.senders  # minus the warm-up runs

    ms = sorted(x * 1000 for x in latencies)
    pct = statistics.quantiles(ms, n=100)
    print(f"notifications          {len(ms)} from {args.senders} concurrent senders, {args.apps} apps")
    print(f"ack latency (ms)       p50 {pct[49]:.1f}  p90 {pct[89]:.1f}  p99 {pct[98]:.1f}  max {ms[-1]:.1f}")
    print(f"ack throughput         {len(ms) / sent_in:.0f} notifications/s ({sent_in:.2f} s)")
    print(f"distinct changes       {len(keys)} (app, modifiedDate)")
    print(f"flow runs created      {runs} (outbox empty {drained_in:.1f} s after the first notification)")
    print(f"last submit error      {health['last_submit_error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=1000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--changes-per-app", type=int, default=2)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="qsp-bench-") as folder,
        prefect_test_harness(server_startup_timeout=90),
    ):
        from prefect.settings import PREFECT_API_URL

        api_url = str(PREFECT_API_URL.value())
        deployment_id = handle_app_change.to_deployment(name="qs-promoter").apply()
        port = free_port()
        config = write_config(Path(folder), port)
        env = {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(ROOT)}
        serve = ["serve", "--config", str(config), "--log-level", "warning"]
        command = [sys.executable, "-c", "from promoter.cli.webhook import app; app()", *serve]
        process = subprocess.Popen(command, env=env, cwd=folder)
        try:
            asyncio.run(measure(f"http://127.0.0.1:{port}", process, args, api_url, deployment_id))
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
