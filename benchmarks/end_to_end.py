"""Measure whole promotions through the real loop: QRS notification -> webhook -> executor -> target site.

    .venv/bin/python benchmarks/end_to_end.py [--runs 50] [--burst 100] [--database sqlite|postgresql]
                                              [--workers 1] [--worker-limit 8]
                                              [--executor in-process|process]

The demo's setup (promoter/deployments/demo.py) starts sandbox sites dev, test and prod, SMTP and
S3 stand-ins, a Prefect server (SQLite, or a throwaway database on the PostgreSQL at 127.0.0.1:5432), the
deployments, --workers executors (`qs-promoter executor`; with --executor process Prefect's
process workers, a Python process per flow run, as before the executor) and the webhook.
Approvals are made as the sales manager would, through QRS; a promotion counts as complete when
the ledger records its request as promoted (the last thing the flow does: after the target apps,
unpublishing and the emails).

- latency: --runs apps of 1 MB, one at a time: approval -> complete, p50 and p95;
- burst: --burst apps approved at once: time from the first approval until all are complete.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.fixtures: throwaway databases

from results import write

from promoter.approval import approval_key
from promoter.deployments.demo import Demo, run
from promoter.ledger import Ledger
from promoter.qrs.models import App
from promoter.sandbox.world import MANAGER, REP, publish_as, set_properties
from promoter.webhook.callbacks import callback_url
from tests.fixtures.postgres import postgres_url, throwaway_database

APPROVAL = {
    "PromoteToServer": ["test - Overwrite"],
    "PromoteToStream": ["Everyone"],
    "PromotionApproval": ["Approve"],
}
DEADLINE = 1800.0


def wait_promoted(demo: Demo, keys: list[str]) -> dict[str, float]:
    """Poll the ledger until every key is promoted; returns when each was first seen so."""
    assert demo.settings is not None
    done: dict[str, float] = {}
    deadline = time.monotonic() + DEADLINE
    with Ledger(demo.settings.ledger_url.get_secret_value()) as ledger:
        while len(done) < len(keys):
            for key in keys:
                if key not in done:
                    outcome = ledger.outcome(key)
                    if outcome == "promoted":
                        done[key] = time.perf_counter()
                    elif outcome in ("failed", "refused"):
                        raise SystemExit(f"{key}: {outcome}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(done)} of {len(keys)} promotions completed in {DEADLINE:.0f} s")
            time.sleep(0.05)
    return done


def wait_subscribed(demo: Demo) -> None:
    """Approvals made before the keeper subscribed would only be found by reconcile (minutes later)."""
    assert demo.settings is not None and demo.sandbox is not None
    settings, dev = demo.settings, demo.sandbox.sites["dev"]
    wanted = {callback_url(settings, "updated"), callback_url(settings, "published")}
    demo.wait(
        "subscriptions in place on dev",
        lambda: wanted <= {s.url for s in dev.repository.subscriptions.values()},
        lambda: f"{len(dev.repository.subscriptions)} subscription(s)",
    )


def publish(demo: Demo, count: int, tag: str) -> list[App]:
    assert demo.settings is not None and demo.world is not None
    file = demo.root / "work" / "bench-1mb.qvf"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(os.urandom(1_000_000))
    return [
        run(publish_as(demo.settings, REP, file, f"Bench {tag} {i}", demo.world.sales_stream_id))
        for i in range(count)
    ]


def approve(demo: Demo, app: App) -> str:
    assert demo.settings is not None and demo.world is not None
    approved = run(set_properties(demo.settings, MANAGER, app.id, demo.world, APPROVAL))
    return approval_key(approved, demo.settings)


def latency(demo: Demo, runs: int) -> dict[str, Any]:
    seconds = []
    for app in publish(demo, runs, "latency"):
        started = time.perf_counter()
        key = approve(demo, app)
        seconds.append(wait_promoted(demo, [key])[key] - started)
    q = statistics.quantiles(seconds, n=20, method="inclusive") if len(seconds) > 1 else [seconds[0]] * 19
    return {
        "p50 s": round(statistics.median(seconds), 2),
        "p95 s": round(q[18], 2),
        "max s": round(max(seconds), 2),
    }


def burst(demo: Demo, count: int) -> dict[str, Any]:
    apps = publish(demo, count, "burst")
    started = time.perf_counter()
    keys = [approve(demo, app) for app in apps]
    approved_in = time.perf_counter() - started
    done = sorted(finished - started for finished in wait_promoted(demo, keys).values())
    return {
        "approvals made in s": round(approved_in, 1),
        # A run that crashed before it started is only found again by reconcile (every 10
        # minutes): the last one can be far behind the rest, so the middle and 95 % are shown too.
        "half complete after s": round(done[(len(done) - 1) // 2], 1),
        "95 % complete after s": round(done[max(0, -(-len(done) * 95 // 100) - 1)], 1),
        "all complete after s": round(done[-1], 1),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    demo = Demo(
        Path(tempfile.mkdtemp(prefix="qsp-bench-e2e-")),
        echo=lambda line: print(line, flush=True),
        worker_limit=args.worker_limit,
        executor=args.executor,
    )
    # SIGTERM (a timeout, a service manager) must still stop the stack's children in `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        demo.prepare()
        assert demo.stack is not None
        wait_subscribed(demo)
        for number in range(2, args.workers + 1):
            demo.stack.start_worker(f"bench-{number}")
        row: dict[str, Any] = {
            "executor": args.executor,
            "database": args.database,
            "workers": args.workers,
            "runs per worker": args.worker_limit,
            "runs": args.runs,
        }
        row |= latency(demo, args.runs) if args.runs else {}
        return row | {"burst": args.burst} | (burst(demo, args.burst) if args.burst else {})
    finally:
        demo.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    # With --executor process each flow run is a Python process of ~150 MB: 100 at once would swap.
    parser.add_argument("--worker-limit", type=int, default=8, help="flow runs one executor runs at once")
    parser.add_argument(
        "--executor",
        choices=["in-process", "process"],
        default="in-process",
        help="qs-promoter executor, or Prefect's process worker (the old way, to compare)",
    )
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    with contextlib.ExitStack() as cleanup:
        if args.database == "postgresql":
            database = cleanup.enter_context(throwaway_database("qsp_bench"))
            if database is None:
                raise SystemExit("PostgreSQL at 127.0.0.1:5432 does not answer")
            os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = postgres_url(database, "asyncpg")
        row = measure(args)
    write(
        args.name or f"end-to-end-{args.executor}-{args.database}-{args.workers}w",
        [row],
        {
            "app size": "1 MB",
            "target": "test, Overwrite, 1 stream",
            "promotions per site at once": "2 (prefect.site_concurrency, the default)",
        },
    )


if __name__ == "__main__":
    main()
