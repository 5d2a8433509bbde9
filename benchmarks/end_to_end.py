"""Measure whole promotions through the real loop: QRS notification -> webhook -> executor -> target site.

    .venv/bin/python benchmarks/end_to_end.py [--runs 50] [--burst 100] [--soak 1000]
                                              [--database sqlite|postgresql]
                                              [--workers 1] [--worker-limit 8]
                                              [--executor in-process|process]
                                              [--restart-after-runs N]

The demo's setup (promoter/sandbox/demo.py) starts sandbox sites dev, test and prod, SMTP and
S3 stand-ins, a Prefect server (SQLite, or a throwaway database on the PostgreSQL at 127.0.0.1:5432), the
deployments, --workers executors (`qs-promoter executor`; with --executor process Prefect's
process workers, a Python process per flow run, as before the executor) and the webhook.
Approvals are made as the sales manager would, through QRS; a promotion counts as complete when
the ledger records its request as promoted (the last thing the flow does: after the target apps,
unpublishing and the emails). Every app is 1 MB, overwritten on test into one stream. Each phase
publishes its apps first (each publish alerts the stream's approvers, in a flow run of its own) and
waits for those alerts before the first approval: the approvals are timed on their own.

- latency: --runs apps, approved one at a time: approval -> complete, p50 and p95;
- burst: --burst apps approved at once: time from the first approval until all are complete,
  and none lost, none twice: per approval one promotion in the ledger and one app on test;
- soak: --soak apps, approved as fast as the executors take them (2 x --worker-limit approvals
  waiting at any time): the executor's memory (RSS) after them, its peak, and its restarts (it
  restarts itself after a number of runs or above an RSS ceiling, between runs; as `qs-promoter
  up` does, the benchmark starts it again);
- for each phase, CPU-seconds per approval of the executors (with their children, e.g. the
  process worker's process per flow run) and of the Prefect server (with its children), from
  /proc/<pid>/stat, from the first publish until the last promotion, divided by the approvals:
  a publish's alert run and the idle work over the phase (keeper runs, server services) count;
  a PostgreSQL server's own CPU does not;
- at the end, through the Prefect API: task runs per approval (of the approvals' change runs),
  flow runs Crashed, and flow runs that ran more than once (run_count > 1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.fixtures: throwaway databases

from processes import Meter, spent
from results import write

from promoter.approval import approval_key
from promoter.child_processes import Child
from promoter.notifications import callback_url
from promoter.prefect_api import with_prefect
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App
from promoter.sandbox.demo import Demo, run
from promoter.sandbox.world import MANAGER, REP, publish_as, set_properties
from promoter.services.stack import Stack, is_worker
from promoter.store.ledger import Ledger
from tests.fixtures.postgres import postgres_url, throwaway_database

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

APPROVAL = {
    "PromoteToServer": ["test - Overwrite"],
    "PromoteToStream": ["Everyone"],
    "PromotionApproval": ["Approve"],
}
TARGET, STREAM = "test", "Everyone"
DEADLINE = 1800.0
ALERTS_DEADLINE, ALERT_SECONDS = 60.0, 2.0  # for the publish alerts before the approvals
SOAK_SECONDS_PER_APPROVAL = 5.0  # the soak's deadline grows with it: 1,000 approvals take a while
EXECUTOR, SERVER = "executor", "prefect-server"  # roles of the metered processes
ENDED = ("promoted", "failed", "refused")
PAGE = 200  # the Prefect API's largest page
MB = 2**20
# The executor's restart after N runs, as `qs-promoter executor` reads it (and a benchmark sets it).
RESTART_RUNS_ENV = "QSP_EXECUTOR_RESTART_AFTER_RUNS"


def ended(ledger: Ledger, keys: list[str] | set[str]) -> dict[str, str]:
    """The keys whose request has ended, with how."""
    return {key: outcome for key in keys if (outcome := ledger.outcome(key) or "") in ENDED}


def wait_promoted(demo: Demo, keys: list[str]) -> dict[str, float]:
    """Poll the ledger until every key has ended (or the deadline); when each was first seen promoted.

    A key missing from the answer was lost (or failed): the caller counts it."""
    assert demo.settings is not None
    done: dict[str, float] = {}
    finished: set[str] = set()
    deadline = time.monotonic() + DEADLINE
    with Ledger(demo.settings.ledger_url.get_secret_value()) as ledger:
        while len(finished) < len(keys) and time.monotonic() < deadline:
            for key, outcome in ended(ledger, [k for k in keys if k not in finished]).items():
                finished.add(key)
                if outcome == "promoted":
                    done[key] = time.perf_counter()
                else:
                    print(f"{key}: {outcome}", flush=True)
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


def wait_alerted(demo: Demo, apps: list[App]) -> None:
    """Wait until the publish alerts of ``apps`` are done: the publishes are the benchmark's setup,
    and their runs queued in front of the approvals would be timed as the approvals' (the first
    approval of the latency phase waited 95 s behind 20 of them). Their CPU still counts."""
    assert demo.settings is not None
    keys = {approval_key(app, demo.settings, "published") for app in apps}
    deadline = time.monotonic() + ALERTS_DEADLINE + ALERT_SECONDS * len(keys)
    with Ledger(demo.settings.ledger_url.get_secret_value()) as ledger:
        while keys and time.monotonic() < deadline:
            keys = {key for key in keys if not ledger.outcome(key)}
            time.sleep(0.1)
    if keys:
        print(f"{len(keys)} publish alert(s) not done in time; measuring anyway", flush=True)


def approve(demo: Demo, app: App) -> str:
    assert demo.settings is not None and demo.world is not None
    approved = run(set_properties(demo.settings, MANAGER, app.id, demo.world, APPROVAL))
    return approval_key(approved, demo.settings)


# -- the processes ---------------------------------------------------------------------------


def stack_processes(stack: Stack) -> list[tuple[int, str]]:
    """The executors (or process workers) and the Prefect server this stack started, now."""
    return [
        (child.pid, EXECUTOR if is_worker(child) else SERVER)
        for child in list(stack.children)  # the watcher may replace an executor meanwhile
        if is_worker(child) or child.name == SERVER
    ]


def cpu_per_approval(phase: str, meter: Meter, before: dict[str, float], approvals: int) -> dict[str, Any]:
    after = meter.cpu()
    return {
        f"{phase}: executor CPU-s/approval": round(spent(before, after, EXECUTOR) / approvals, 2),
        f"{phase}: server CPU-s/approval": round(spent(before, after, SERVER) / approvals, 2),
    }


class Watcher:
    """The stack's watch (as `qs-promoter up` runs it) in a thread: an executor that exits for its
    planned restart is started again; a child that dies otherwise ends the watch and is kept."""

    def __init__(self, demo: Demo) -> None:
        assert demo.stack is not None
        self.demo, self.stack = demo, demo.stack
        self.died: Child | None = None
        self._thread = threading.Thread(target=self._watch, name="watch", daemon=True)

    def _watch(self) -> None:
        self.died = self.stack.watch()
        if self.died is not None:
            print(f"{self.died.name} exited with code {self.died.returncode}", flush=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.demo.stop_requested.set()  # ends the watch (and an executor start it is waiting on)
        self._thread.join(timeout=120)


# -- the phases ------------------------------------------------------------------------------


def latency(demo: Demo, meter: Meter, runs: int) -> tuple[dict[str, Any], list[App]]:
    before = meter.cpu()
    apps = publish(demo, runs, "latency")
    wait_alerted(demo, apps)
    seconds = []
    for app in apps:
        started = time.perf_counter()
        key = approve(demo, app)
        done = wait_promoted(demo, [key])
        if key not in done:
            raise SystemExit(f"{key}: not promoted within {DEADLINE:.0f} s")
        seconds.append(done[key] - started)
    q = statistics.quantiles(seconds, n=20, method="inclusive") if len(seconds) > 1 else [seconds[0]] * 19
    row = {
        "p50 s": round(statistics.median(seconds), 2),
        "p95 s": round(q[18], 2),
        "max s": round(max(seconds), 2),
    }
    return row | cpu_per_approval("latency", meter, before, runs), apps


def burst(demo: Demo, meter: Meter, count: int) -> tuple[dict[str, Any], list[App]]:
    before = meter.cpu()
    apps = publish(demo, count, "burst")
    wait_alerted(demo, apps)
    started = time.perf_counter()
    keys = [approve(demo, app) for app in apps]
    approved_in = time.perf_counter() - started
    done = sorted(finished - started for finished in wait_promoted(demo, keys).values())
    row: dict[str, Any] = {"approvals made in s": round(approved_in, 1)}
    if done:
        row |= {
            # A run that crashed before it started is only found again by reconcile (every 10
            # minutes): the last one can be far behind the rest, so the middle and 95 % are shown too.
            "half complete after s": round(done[(len(done) - 1) // 2], 1),
            "95 % complete after s": round(done[max(0, -(-len(done) * 95 // 100) - 1)], 1),
            "all complete after s": round(done[-1], 1) if len(done) == count else "never",
        }
    return row | cpu_per_approval("burst", meter, before, count) | once_each(demo, apps), apps


def once_each(demo: Demo, apps: list[App]) -> dict[str, Any]:
    """None lost, none twice: each app's promotions in the ledger, and its copies on the target."""
    assert demo.settings is not None and demo.world is not None
    ids = {app.id for app in apps}
    with Ledger(demo.settings.ledger_url.get_secret_value()) as ledger:
        promotions = Counter(p.app_id for p in ledger.promotions() if p.app_id in ids)
    stream = demo.world.target_streams[TARGET][STREAM]
    names = {app.name for app in apps}
    on_target = Counter(
        app.name
        for app in run(target_apps(demo))
        if app.name in names and app.stream is not None and app.stream.id == stream
    )
    return {
        "burst promoted once (ledger)": sum(1 for app in apps if promotions[app.id] == 1),
        "burst on target once": sum(1 for name in names if on_target[name] == 1),
        "burst lost": sum(1 for app in apps if promotions[app.id] == 0 or on_target[app.name] == 0),
        "burst twice": sum(1 for app in apps if promotions[app.id] > 1 or on_target[app.name] > 1),
    }


async def target_apps(demo: Demo) -> list[App]:
    assert demo.settings is not None
    async with QrsClient.for_site(demo.settings, TARGET) as qrs:
        return await qrs.apps()


def soak(demo: Demo, meter: Meter, count: int, waiting: int) -> tuple[dict[str, Any], list[App]]:
    """``count`` approvals, ``waiting`` at a time: the executors always have runs to take."""
    assert demo.settings is not None
    before = meter.cpu()
    apps = publish(demo, count, "soak")
    wait_alerted(demo, apps)
    started = time.perf_counter()
    queue, open_keys, outcomes = list(apps), set[str](), Counter[str]()
    deadline = time.monotonic() + DEADLINE + SOAK_SECONDS_PER_APPROVAL * count
    with Ledger(demo.settings.ledger_url.get_secret_value()) as ledger:
        while queue or open_keys:
            while queue and len(open_keys) < waiting:
                open_keys.add(approve(demo, queue.pop(0)))
            for key, outcome in ended(ledger, open_keys).items():
                open_keys.discard(key)
                outcomes[outcome] += 1
            if time.monotonic() > deadline:
                raise SystemExit(f"soak: {outcomes['promoted']} of {count} promoted by the deadline")
            time.sleep(0.05)
    row = {
        "soak": count,
        "soak complete after s": round(time.perf_counter() - started, 1),
        "soak not promoted": count - outcomes["promoted"],
    }
    return row | cpu_per_approval("soak", meter, before, count), apps


def executor_memory(meter: Meter, workers: int) -> dict[str, Any]:
    """RSS of the executors running now, the highest peak of every executor process, the restarts."""
    samples = meter.sample()
    pids = meter.pids(EXECUTOR)
    alive = [samples[pid].rss for pid in pids if samples[pid].rss]
    return {
        "executor RSS MB": round(max(alive) / MB) if alive else "gone",
        "executor peak RSS MB": round(max(samples[pid].peak for pid in pids) / MB),
        "executor restarts": len(pids) - workers,
    }


# -- the Prefect API at the end --------------------------------------------------------------


async def all_flow_runs(client: PrefectClient) -> list[FlowRun]:
    from prefect.client.schemas.sorting import FlowRunSort

    runs: list[FlowRun] = []
    # Oldest first: a run scheduled while pages are read lands on the last page, not in between.
    sort = FlowRunSort.EXPECTED_START_TIME_ASC
    while page := await client.read_flow_runs(sort=sort, limit=PAGE, offset=len(runs)):
        runs += page
    return runs


def run_counts(runs: list[FlowRun]) -> dict[str, int]:
    """Flow runs Crashed now, and flow runs that ran more than once (a retry, or reconcile's)."""
    return {
        "flow runs": len(runs),
        "flow runs crashed": sum(1 for r in runs if r.state is not None and r.state.is_crashed()),
        "flow runs run more than once": sum(1 for r in runs if r.run_count > 1),
    }


def change_runs(runs: list[FlowRun], apps: list[App]) -> list[UUID]:
    """The runs that acted on the approvals: trigger "updated" for these apps. Found by their
    parameters: a run renames itself once it knows what it does (e.g. "promote 'Sales' ...")."""
    ids = {str(app.id) for app in apps}
    return [
        r.id
        for r in runs
        if str(r.parameters.get("app_id")) in ids and r.parameters.get("trigger", "updated") == "updated"
    ]


async def task_run_count(client: PrefectClient, flow_run_ids: list[UUID]) -> int:
    """Task runs the server recorded for these flow runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    total = 0
    for first in range(0, len(flow_run_ids), 100):
        runs = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids[first : first + 100]))
        offset = 0
        while page := await client.read_task_runs(flow_run_filter=runs, limit=PAGE, offset=offset):
            offset += len(page)
        total += offset
    return total


def task_runs_per_approval(api_url: str, flow_run_ids: list[UUID], approvals: int) -> float:
    """Task runs of the approvals' change runs, per approval. The server records task runs from
    events, a moment after they ran: read until the count stands still."""
    counted, deadline = -1, time.monotonic() + 60
    while time.monotonic() < deadline:
        now = run(with_prefect(api_url, lambda client: task_run_count(client, flow_run_ids)))
        if now == counted:
            break
        counted = now
        time.sleep(2.0)
    return round(counted / approvals, 1)


# -- the run ---------------------------------------------------------------------------------


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
        stack = demo.stack
        assert stack is not None
        wait_subscribed(demo)
        for number in range(2, args.workers + 1):
            stack.start_worker(f"bench-{number}")
        row: dict[str, Any] = {
            "executor": args.executor,
            "database": args.database,
            "workers": args.workers,
            "runs per worker": args.worker_limit,
            "runs": args.runs,
        }
        approved: list[App] = []
        with Meter(lambda: stack_processes(stack)) as meter, Watcher(demo) as watcher:
            if args.runs:
                figures, apps = latency(demo, meter, args.runs)
                row, approved = row | figures, approved + apps
            row["burst"] = args.burst
            if args.burst:
                figures, apps = burst(demo, meter, args.burst)
                row, approved = row | figures, approved + apps
            if args.soak:
                waiting = 2 * args.worker_limit * args.workers
                figures, apps = soak(demo, meter, args.soak, waiting)
                row, approved = row | figures, approved + apps
            row |= executor_memory(meter, args.workers)
            runs = run(with_prefect(stack.api_url, all_flow_runs))
            if approved:
                ids = change_runs(runs, approved)
                row["task runs/approval"] = task_runs_per_approval(stack.api_url, ids, len(approved))
            row |= run_counts(runs)
            if watcher.died is not None:
                row["died"] = f"{watcher.died.name} (exit {watcher.died.returncode})"
        return row
    finally:
        demo.stop()


def restarts_in_force(executor: str) -> str:
    """When the executor restarts itself, as `qs-promoter executor` decides it in this environment."""
    if executor == "process":
        return "never (a process per flow run)"
    from promoter.services.executor import RESTART_ABOVE_BYTES, RESTART_AFTER_RUNS

    runs = int(os.environ.get(RESTART_RUNS_ENV) or RESTART_AFTER_RUNS)
    return (
        f"after {runs or 'unlimited'} runs taken ({RESTART_RUNS_ENV}, default {RESTART_AFTER_RUNS}) "
        f"or above {RESTART_ABOVE_BYTES // MB} MB RSS (the default), between runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--soak", type=int, default=0, help="approvals through the executors (target: 1000)")
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
    parser.add_argument(
        "--restart-after-runs", type=int, default=None, help="the executor restarts after this many runs"
    )
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if args.restart_after_runs is not None:
        os.environ[RESTART_RUNS_ENV] = str(args.restart_after_runs)  # the stack's children inherit it
    # The server must record task runs (they are counted), as an installation's does; a test
    # session's environment turns the recorder off, and the stack's server would inherit that.
    os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] = "true"
    os.environ["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"] = "true"
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
            "target": f"{TARGET}, Overwrite, 1 stream",
            "promotions per site at once": "2 (prefect.site_concurrency, the default)",
            "executor restarts": restarts_in_force(args.executor),
            "CPU-s/approval": "from /proc, from the first publish to the last promotion, divided by the "
            "approvals; executor: the executors or process workers and their children; server: the "
            "Prefect server and its children"
            + ("; PostgreSQL's own CPU is not counted" if args.database == "postgresql" else ""),
        },
    )


if __name__ == "__main__":
    main()
