"""Measure the webhook under QRS notification load: ack latency, what reaches Prefect, what is filtered out.

    .venv/bin/python benchmarks/intake.py [--notifications 5000] [--senders 200] [--apps 250]
                                          [--changes-per-app 2] [--irrelevant 1000]

A sandbox source site (in this process), a temporary Prefect server and the webhook (in its own
process, started like `qs-promoter webhook serve`, with the relevance pre-check) run on loopback.

Phase 1: ``--notifications`` app-update notifications for ``--apps`` apps that carry an approval,
each app said to be changed ``--changes-per-app`` times (the rest are duplicates, as QRS's
overlapping subscriptions send). Reported: ack latency percentiles seen by the senders, ack
throughput, the time until the outbox is empty, flow runs created and lost. The webhook keys a
run by the app's modifiedDate as QRS reports it, never by what a notification says, and the apps
do not change in QRS meanwhile: one run per app is right, and an app without one is lost.

Phase 2: ``--irrelevant`` updates of apps without any promotion property (most of a busy site's
traffic): the webhook's CPU seconds for them and the flow runs they caused (goal: none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from uuid import UUID

_HOME = Path(tempfile.mkdtemp(prefix="qsp-bench-prefect-"))
os.environ["PREFECT_HOME"] = str(_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.client.orchestration import PrefectClient  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId  # noqa: E402
from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect_server import prefect_server  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from results import write  # noqa: E402

from promoter.prefect_api import HANDLE_CHANGE, deployment_part  # noqa: E402
from promoter.sandbox.repository import Actor, Repository  # noqa: E402
from promoter.sandbox.seed import seed_app  # noqa: E402
from promoter.sandbox.server import Sandbox  # noqa: E402
from promoter.sandbox.serving import tcp_listener  # noqa: E402
from promoter.settings import Settings, SiteSettings, WebhookSettings, write_settings  # noqa: E402

SECRET = "bench-secret-0123456789abcdefghi"
REP = Actor("ACME", "rep")


@flow(name="handle-app-change")
def handle_app_change(app_id: str, trigger: str, change_id: str) -> None:
    """The deployment target; no worker runs it here: flow-run creation is what is measured."""


def change(app_id: str, modified: str) -> dict[str, object]:
    return {
        "changeType": 2, "objectType": "App", "objectID": app_id,
        "changedProperties": ["modifiedDate"], "engineID": "", "engineType": "",
        "originatorNodeID": str(UUID(int=1)), "originatorHostName": "dev",
        "originatorContextID": None, "createdDate": "2026-01-01T00:00:00.000Z",
        "modifiedDate": modified, "schemaPath": "ExternalChangeInfo",
    }  # fmt: skip


def workload(app_ids: list[str], notifications: int, changes_per_app: int) -> list[dict[str, object]]:
    """Notification k is for app k % apps; its modifiedDate is one of changes_per_app per app."""
    per_app = max(notifications // len(app_ids), 1)
    bodies = []
    for k in range(notifications):
        version = min((k // len(app_ids)) * changes_per_app // per_app, changes_per_app - 1)
        bodies.append(change(app_ids[k % len(app_ids)], f"2026-05-01T12:00:{version:02d}.000Z"))
    return bodies


async def send_all(host: str, port: int, bodies: list[dict[str, object]], senders: int) -> list[float]:
    """Post every body over ``senders`` keep-alive connections; each request's latency in seconds.

    A minimal HTTP/1.1 client on asyncio streams: an httpx client with 200 connections costs more
    CPU per request than the webhook itself, and on a small machine it would measure itself.
    """
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
        reader, writer = await asyncio.open_connection(host, port)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_for(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], drained_outbox: Path | None = None
) -> None:
    """Until the webhook answers /healthz, and (with ``drained_outbox``) nothing waits in that outbox.

    The outbox file is read, not /healthz's outbox_depth: the webhook reuses a health answer for a
    second, which would end the wait before the last notifications were counted.
    """
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"webhook exited with {process.returncode}")
        try:
            (await client.get("/healthz")).raise_for_status()
            if drained_outbox is None or not waiting_in(drained_outbox):
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the webhook did not get there within 600 s")


def waiting_in(outbox: Path) -> int:
    """Notifications in the webhook's outbox that have no flow run yet."""
    with closing(sqlite3.connect(f"file:{outbox.as_posix()}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox WHERE flow_run_id IS NULL").fetchone()[0])


async def run_changes(api_url: str, deployment_id: UUID, apps: set[str]) -> list[str]:
    """The change_id ("updated:<app id>:<QRS modifiedDate>") of every flow run created for ``apps``."""
    only_this = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    runs: list[FlowRun] = []
    async with PrefectClient(api=api_url) as prefect:
        while page := await prefect.read_flow_runs(flow_run_filter=only_this, limit=200, offset=len(runs)):
            runs += page
    # The server may hold other runs of the deployment (a shared test server): only ours count.
    changes = [str(run.parameters.get("change_id") or "") for run in runs]
    return [change for change in changes if change.count(":") >= 2 and change.split(":")[1] in apps]


def expected_changes(repository: Repository, apps: list[str]) -> set[str]:
    """For each app, the change_id its one flow run must have: the app's modifiedDate in QRS."""
    return {f"updated:{app}:{repository.get('app', app)['modifiedDate']}" for app in apps}


def pct(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100)
    return {"p50 ms": round(q[49], 1), "p99 ms": round(q[98], 1), "max ms": round(ms[-1], 1)}


async def measure(
    args: argparse.Namespace,
    port: int,
    process: subprocess.Popen[bytes],
    api_url: str,
    deployment_id: UUID,
    relevant: list[str],
    plain: list[str],
    expected: set[str],
    outbox: Path,
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        await wait_for(client, process)
        bodies = workload(relevant, args.notifications, args.changes_per_app)
        distinct = {(b["objectID"], b["modifiedDate"]) for b in bodies}
        started = time.perf_counter()
        latencies = await send_all("127.0.0.1", port, bodies, args.senders)
        acked_in = time.perf_counter() - started
        await wait_for(client, process, outbox)
        drained_in = time.perf_counter() - started
        runs = await run_changes(api_url, deployment_id, set(relevant))
        rows.append(
            {
                "phase": "relevant updates",
                "notifications": len(bodies),
                "senders": args.senders,
                **pct(latencies),
                "acks/s": round(len(bodies) / acked_in),
                "outbox empty after s": round(drained_in, 1),
                "distinct changes": len(distinct),
                "flow runs": len(runs),
                "duplicate runs": len(runs) - len(set(runs)),
                "lost": len(expected - set(runs)),
            }
        )

        before_cpu = cpu_seconds(process.pid)
        bodies = workload(plain, args.irrelevant, 1)
        senders = min(args.senders, 50)
        started = time.perf_counter()
        latencies = await send_all("127.0.0.1", port, bodies, senders)
        await wait_for(client, process, outbox)
        drained_in = time.perf_counter() - started
        runs = await run_changes(api_url, deployment_id, set(plain))
        rows.append(
            {
                "phase": "irrelevant updates",
                "notifications": len(bodies),
                "senders": senders,
                **pct(latencies),
                "outbox empty after s": round(drained_in, 1),
                "webhook CPU s": round(cpu_seconds(process.pid) - before_cpu, 2),
                "flow runs": len(runs),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=5000)
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--apps", type=int, default=250)
    parser.add_argument("--changes-per-app", type=int, default=2)
    parser.add_argument("--irrelevant", type=int, default=1000)
    parser.add_argument("--name", default="intake")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="qsp-bench-intake-"))
    with (
        Sandbox({"dev": ("127.0.0.1", 0)}, folder / "certs", folder / "data") as sandbox,
        prefect_server() as api_url,
    ):
        dev = sandbox.sites["dev"]
        approval = {"PromotionApproval": ["Approve"]}
        relevant = [
            seed_app(dev.repository, f"Approved {i}", owner=REP, custom_properties=approval)["id"]
            for i in range(args.apps)
        ]
        plain = [seed_app(dev.repository, f"Plain {i}", owner=REP)["id"] for i in range(args.irrelevant)]
        deployment_id = handle_app_change.to_deployment(name=deployment_part(HANDLE_CHANGE)).apply()
        listener = tcp_listener()
        port = listener.getsockname()[1]
        listener.close()
        settings = Settings(
            source_site=SiteSettings(host=dev.host, port=dev.port, cert_dir=dev.cert_dir),
            webhook=WebhookSettings(
                host="127.0.0.1", port=port, secret=SecretStr(SECRET), outbox_path=folder / "outbox.db"
            ),
        )
        config = write_settings(settings, folder / "qs-promoter.toml")
        env = {**os.environ, "PREFECT_API_URL": api_url}
        exe = str(Path(sys.executable).with_name("qs-promoter"))
        command = [exe, "webhook", "serve", "--config", str(config), "--log-level", "warning"]
        process = subprocess.Popen(command, env=env, cwd=folder)
        try:
            expected = expected_changes(dev.repository, relevant)
            outbox = settings.webhook.outbox_path
            rows = asyncio.run(
                measure(args, port, process, api_url, deployment_id, relevant, plain, expected, outbox)
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
    write(
        args.name,
        rows,
        {"webhook": "own process, relevance pre-check on", "Prefect": "temporary server, SQLite"},
    )


if __name__ == "__main__":
    main()
