"""Fifty approvals through the real stack while its parts fail, then exactly one promotion each.

The whole loop runs as in production: QRS notifications reach the webhook, its outbox, Prefect
flow runs, the worker's flow processes, the target sites, S3 and SMTP. Meanwhile the target sites
answer 5xx, stall, reset connections and cut uploads short; the source site's repository
restarts (its subscriptions are lost, approvals made in the gap are announced to nobody); the
Prefect server restarts; the worker is killed with SIGKILL during promotions and a new one is
started, as a service manager would. Nobody repairs anything by hand: keep-subscriptions
resubscribes, the webhook's outbox waits for Prefect, and the scheduled reconcile submits what
was missed and retries the runs that stopped. Then every count that matters is checked and printed.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest

from promoter.approval import approval_key
from promoter.prefect_api import HANDLE_CHANGE as HANDLE
from promoter.prefect_api import KEEP_SUBSCRIPTIONS as KEEPER
from promoter.prefect_api import RECONCILE
from promoter.qrs.models import App
from promoter.sandbox.synthetic import make_app_file
from promoter.sandbox.world import MANAGER, REP, publish_as, set_properties
from promoter.services.orchestration import ZOMBIE_AFTER
from promoter.store.ledger import Ledger
from tests.chaos.conftest import Chaos, run
from tests.e2e.conftest import IN_PROCESS_FLOWS

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.e2e, IN_PROCESS_FLOWS]

SEED = 20261127
APPS = 50
TARGETS = ("test", "prod")
POOL = "qs-promoter"
MAINTENANCE_QUEUE = "maintenance"
PROMOTIONS_AT_ONCE = 8  # change runs at once on the 2-core machine (each is a Python process)
RECONCILE_EVERY = timedelta(seconds=30)
# Reconcile as scheduled during the test: approvals older than 5 s count as missed (a queued
# notification run is recognised and left alone), leftover uploads older than a minute go, and a
# run Pending for a minute (its worker was killed before starting it) is crashed and retried.
RECONCILE_PARAMETERS = {"settle_seconds": 5.0, "leftover_age_minutes": 1.0, "pending_minutes": 1.0}
# Settling takes what the machine's throughput makes it (RELIABILITY.md: about 4 CPU-seconds per
# change run on two shared cores), so a deadline on the total failed healthy runs on a busy
# machine. What must fail is a system that stops: nothing promoted, no change run completed and
# no temporary app removed for longer than the slowest recovery relied on (a silent run crashed
# by the zombie automation, retried at the next reconcile, its new start Pending a minute at most).
STALL_LIMIT = (ZOMBIE_AFTER + 2 * RECONCILE_EVERY + timedelta(minutes=1)).total_seconds()
STEP_DEADLINE = 120.0
TEMPORARY = "[qs-promoter "
ACTIVE = ("SCHEDULED", "PENDING", "RUNNING", "CANCELLING")


@dataclass
class Approval:
    app: App  # as approved: its PromotionApproval value names the request
    sites: dict[str, str]  # site -> "Overwrite" | "Duplicate"
    streams: tuple[str, ...]
    versioned: bool
    key: str = ""


@dataclass
class Timeline:
    began: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str) -> float:
        self.marks[what] = time.monotonic() - self.began
        print(f"[{self.marks[what]:6.1f} s] {what}", flush=True)
        return self.marks[what]


class FaultLog(logging.Handler):
    """Counts the faults the sandbox sites actually injected (they log each one)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("sandbox fault"):
            self.counts[str(record.args[0]) if record.args else "?"] += 1  # type: ignore[index]


def wait(what: str, check: Callable[[], Any], timeout: float = STEP_DEADLINE, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return result


# -- the Prefect side ------------------------------------------------------------------------


async def handle_runs(client: PrefectClient) -> list[FlowRun]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = await client.read_deployment_by_name(HANDLE)
    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
    # Runs created while this pages shift the later pages: a run can come twice, it is kept once.
    runs: dict[UUID, FlowRun] = {}
    offset = 0
    while batch := await client.read_flow_runs(deployment_filter=only, limit=200, offset=offset):
        runs.update((r.id, r) for r in batch)
        offset += len(batch)
    return list(runs.values())


async def configure(client: PrefectClient) -> None:
    """What an admin would set up in the UI: at most PROMOTIONS_AT_ONCE change runs at a time on the
    default queue (the maintenance flows have their own, see prefect.yaml), and reconcile every
    30 s with a short settle time."""
    from prefect.client.schemas.schedules import IntervalSchedule

    default = await client.read_work_queue_by_name("default", work_pool_name=POOL)
    await client.update_work_queue(default.id, concurrency_limit=PROMOTIONS_AT_ONCE)
    for name in (KEEPER, RECONCILE):
        deployment = await client.read_deployment_by_name(name)
        assert deployment.work_queue_name == MAINTENANCE_QUEUE, (name, deployment.work_queue_name)
    deployment = await client.read_deployment_by_name(RECONCILE)
    await client.update_deployment_schedule(
        deployment.id,
        deployment.schedules[0].id,
        schedule=IntervalSchedule(interval=RECONCILE_EVERY),
        parameters=RECONCILE_PARAMETERS,
    )


async def keeper_watching(client: PrefectClient) -> bool:
    """A keep-subscriptions run has been watching the source site for a few seconds."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = await client.read_deployment_by_name(KEEPER)
    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
    runs = await client.read_flow_runs(deployment_filter=only, limit=50)
    now = time.time()
    return any(
        state(r) == "RUNNING" and r.start_time is not None and now - r.start_time.timestamp() > 3
        for r in runs
    )


async def maintenance_runs(client: PrefectClient) -> dict[str, str]:
    """keep-subscriptions and reconcile: their runs by state, and the longest delay to a start."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    found = {}
    for name in (KEEPER, RECONCILE):
        deployment = await client.read_deployment_by_name(name)
        only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        runs = [
            r
            for r in await client.read_flow_runs(deployment_filter=only, limit=200)
            if state(r) != "SCHEDULED"
        ]
        late = [
            (r.start_time - r.expected_start_time).total_seconds()
            for r in runs
            if r.start_time and r.expected_start_time
        ]
        states = dict(Counter(state(r) for r in runs))
        found[f"{name.split('/')[0]} runs"] = f"{states}, started at most {max(late, default=0):.0f} s late"
    return found


def state(run: FlowRun) -> str:
    return run.state.type.value if run.state else "?"


# -- the scenario ----------------------------------------------------------------------------


def plan_approvals(chaos: Chaos, rng: random.Random) -> list[Approval]:
    """APPS apps published by the rep before the stack listens; what the manager will approve for each."""
    world, settings = chaos.world, chaos.settings
    approvals = []
    for number in range(APPS):
        name = f"Chaos {number:02d} Sales"
        file = make_app_file(chaos.root / "apps" / f"{number}.qvf", 48 * 1024, seed=name)
        app = run(publish_as(settings, REP, file, name, world.sales_stream_id))
        modes = ("Overwrite", "Duplicate") if rng.random() < 0.75 else ("Duplicate", "Overwrite")
        streams = ("Everyone", "Review") if rng.random() < 0.3 else ("Everyone",)
        approvals.append(Approval(app, dict(zip(TARGETS, modes, strict=True)), streams, number % 10 == 0))
    return approvals


def seed_overwrites(chaos: Chaos, approvals: list[Approval]) -> dict[tuple[str, str], UUID]:
    """A few apps already on the targets under the same name: Overwrite must replace them in place."""

    async def seed(approval: Approval, site: str) -> UUID:
        from promoter.qrs.client import QrsClient

        file = make_app_file(chaos.root / "seeded" / f"{approval.app.id}-{site}.qvf", 8 * 1024, seed=site)
        async with QrsClient.for_site(chaos.settings, site) as qrs:
            app = await qrs.upload_app(file, approval.app.name)
            stream = chaos.world.target_streams[site]["Everyone"]
            return (await qrs.publish_app(app.id, stream)).id

    seeded = {}
    for approval in approvals[1:30:6]:
        site = next(s for s, mode in approval.sites.items() if mode == "Overwrite")
        seeded[(approval.app.name, site)] = run(seed(approval, site))
    return seeded


def approve(chaos: Chaos, batch: list[Approval]) -> None:
    for approval in batch:
        values = {
            "PromoteToServer": [f"{site} - {mode}" for site, mode in approval.sites.items()],
            "PromoteToStream": list(approval.streams),
            "PromotionApproval": ["Approve"],
        }
        if approval.versioned:
            values["PromotionS3Versioning"] = ["True"]
        approval.app = run(set_properties(chaos.settings, MANAGER, approval.app.id, chaos.world, values))
        approval.key = approval_key(approval.app, chaos.settings)


def inject_target_faults(chaos: Chaos) -> None:
    """On test and prod: cut uploads, reset connections, 5xx on 10 % of GETs and PUTs, stall 10 %."""
    for site in TARGETS:
        target = chaos.sandbox.sites[site]
        target.add_fault("abort", method="POST", path=r"^/qrs/app/upload$", after_bytes=16 * 1024, count=2)
        target.add_fault("reset", method="GET", path=r"^/qrs/", probability=0.03, count=6)
        target.add_fault("status", method="GET", path=r"^/qrs/", status=503, probability=0.1)
        target.add_fault("status", method="PUT", path=r"^/qrs/", status=500, probability=0.1)
        target.add_fault("latency", path=r"^/qrs/", seconds=0.5, probability=0.1)


def a_promotion_running(chaos: Chaos) -> list[str]:
    runs = chaos.prefect(handle_runs)
    return [str(r.id) for r in runs if state(r) == "RUNNING" and r.name.startswith("promote")]


def in_flight(chaos: Chaos) -> list[str]:
    return [str(r.id) for r in chaos.prefect(handle_runs) if state(r) in ("PENDING", "RUNNING")]


async def recovery(client: PrefectClient, run_ids: list[str], since: float) -> dict[str, str]:
    """For the runs in flight at ``since`` (Unix time): how many were crashed, retried by reconcile,
    and completed, and the seconds after ``since`` when the last of each got there."""
    tests: dict[str, Callable[[Any], bool]] = {
        "crashed": lambda s: s.type.value == "CRASHED",
        "retried by reconcile": lambda s: (s.message or "").startswith("Retried by reconcile"),
        "completed": lambda s: s.type.value == "COMPLETED",
    }
    seen: dict[str, list[float]] = {what: [] for what in tests}
    for run_id in run_ids:
        states = sorted(await client.read_flow_run_states(UUID(run_id)), key=lambda s: s.timestamp)
        after = [s for s in states if s.timestamp.timestamp() >= since]
        for what, test in tests.items():
            hit = next((s for s in after if test(s)), None)
            if hit is not None:
                seen[what].append(hit.timestamp.timestamp() - since)
    return {what: spread(times, len(run_ids)) for what, times in seen.items()}


def spread(times: list[float], out_of: int) -> str:
    return f"{len(times)} of {out_of}" + (f", the last after {max(times):.1f} s" if times else "")


def promoted_after(chaos: Chaos, keys: list[str], since: float) -> str:
    """How many of these requests the ledger shows promoted, and when the last one was (after ``since``)."""
    import sqlalchemy as sa

    from promoter.store.ledger import handled

    with Ledger(chaos.settings.ledger_url.get_secret_value()) as ledger, ledger.engine.connect() as conn:
        query = sa.select(handled.c.finished_at).where(
            handled.c.key.in_(keys), handled.c.outcome == "promoted"
        )
        times = [row.finished_at.timestamp() - since for row in conn.execute(query)]
    return spread(times, len(keys))


@dataclass(frozen=True)
class Progress:
    """Requests promoted in the ledger, change runs completed and still to run, and (once every
    request is promoted and no run is left) the temporary apps on the targets."""

    promoted: int
    completed: int
    active: int
    temporary: int | None

    def settled(self, approvals: int) -> bool:
        return self.promoted == approvals and self.active == 0 and self.temporary == 0

    def moves(self) -> tuple[int, int, int | None]:
        """What only grows (or, for temporary apps, shrinks) while the system works: runs going
        round Pending, Crashed, Scheduled without finishing are not progress."""
        return self.promoted, self.completed, self.temporary


def progress(chaos: Chaos, approvals: list[Approval]) -> Progress:
    with Ledger(chaos.settings.ledger_url.get_secret_value()) as ledger:
        promoted = sum(ledger.outcome(a.key) == "promoted" for a in approvals)
    runs = chaos.prefect(handle_runs)
    completed = sum(state(r) == "COMPLETED" for r in runs)
    active = sum(state(r) in ACTIVE for r in runs)
    temporary = None
    if promoted == len(approvals) and not active:
        temporary = sum(TEMPORARY in app.name for site in TARGETS for app in chaos.apps(site))
    return Progress(promoted, completed, active, temporary)


def wait_settled(chaos: Chaos, approvals: list[Approval], every: float = 2.0) -> None:
    """Until every request is promoted, no change run is left and no temporary app remains, for as
    long as the system keeps moving; TimeoutError once nothing moved for STALL_LIMIT."""
    last = progress(chaos, approvals)
    moved = time.monotonic()
    while not last.settled(len(approvals)):
        time.sleep(every)
        now = progress(chaos, approvals)
        if now.moves() != last.moves():
            moved = time.monotonic()
        elif time.monotonic() - moved > STALL_LIMIT:
            raise TimeoutError(f"the system to settle: nothing moved for {STALL_LIMIT:.0f} s; {now}")
        last = now


def test_fifty_approvals_survive_faults_restarts_and_a_killed_worker(chaos: Chaos) -> None:
    """Under target faults, a repository restart, a Prefect server restart and a worker kill -9,
    with no manual step: every approved app is promoted exactly once to each requested stream, no
    temporary app is left, no source app is lost, no email goes twice, and the ledger matches the
    sites. The counts checked are printed."""
    rng = random.Random(SEED)
    random.seed(SEED)  # the sandbox's fault probabilities
    faults = FaultLog()
    fault_logger = logging.getLogger("promoter.sandbox.controls")
    fault_logger.addHandler(faults)
    fault_logger.setLevel(logging.INFO)
    fault_logger.propagate = False  # counted, not printed: hundreds of lines
    timeline = Timeline()
    try:
        chaos.prefect(configure)  # first: the scheduler needs a moment to plan the new schedule
        approvals = plan_approvals(chaos, rng)
        seeded = seed_overwrites(chaos, approvals)
        wait("keep-subscriptions subscribed on dev", chaos.subscribed)
        timeline.mark(f"{APPS} apps published, subscriptions in place, reconcile every 30 s")
        inject_target_faults(chaos)
        batches = [approvals[0:10], approvals[10:14], approvals[14:26], approvals[26:36], approvals[36:]]

        approve(chaos, batches[0])
        timeline.mark(f"approved {len(batches[0])}; target faults on")
        wait("keep-subscriptions watching", lambda: chaos.prefect(keeper_watching), every=1.0)
        restarted = time.monotonic()
        chaos.sandbox.sites["dev"].restart()
        approve(chaos, batches[1])
        timeline.mark(f"dev repository restarted; approved {len(batches[1])} in the gap")
        wait("keep-subscriptions resubscribed", chaos.subscribed, every=0.1)
        keeper_seconds = time.monotonic() - restarted
        timeline.mark(f"keep-subscriptions resubscribed {keeper_seconds:.1f} s after the restart")

        approve(chaos, batches[2])
        timeline.mark(f"approved {len(batches[2])}")
        wait("a promotion running", lambda: a_promotion_running(chaos))
        command, env, log_file = chaos.stop_prefect_server()
        down = timeline.mark("Prefect server stopped")
        approve(chaos, batches[3])
        timeline.mark(f"approved {len(batches[3])} while the Prefect server is down (webhook outbox)")
        chaos.start_prefect_server(command, env, log_file)
        up = timeline.mark("Prefect server up again")

        approve(chaos, batches[4])
        timeline.mark(f"approved {len(batches[4])}: {APPS} in all")
        wait("a promotion running", lambda: a_promotion_running(chaos))
        victims = in_flight(chaos)
        chaos.kill_worker()
        killed = time.time()
        timeline.mark(f"worker killed (kill -9) with {len(victims)} change run(s) in flight")
        chaos.start_worker()
        timeline.mark("a new worker polls the pool")

        wait_settled(chaos, approvals)
        settled_at = timeline.mark("settled: every request promoted, no run left, no temporary app")
    finally:
        fault_logger.removeHandler(faults)
        fault_logger.propagate = True
        for site in chaos.sandbox.sites.values():
            site.clear_faults()

    counts, problems = check(chaos, approvals, seeded)
    runs = chaos.prefect(handle_runs)
    victim_runs = [r for r in runs if str(r.id) in victims]
    recovered = chaos.prefect(lambda client: recovery(client, victims, killed))
    by_app = {str(a.app.id): a.key for a in approvals}
    hit = [
        by_app[str(r.parameters.get("app_id"))]
        for r in victim_runs
        if str(r.parameters.get("app_id")) in by_app
    ]
    maintenance = chaos.prefect(maintenance_runs)
    counts |= {
        "database": chaos.database,
        "faults injected": dict(faults.counts),
        "Prefect server down s": round(up - down, 1),
        "keeper resubscribed after s": round(keeper_seconds, 1),
        "change runs in flight at the worker kill": len(victims),
        "their final states": dict(Counter(state(r) for r in victim_runs)),
        **{f"worker kill -> in-flight runs {what}": value for what, value in recovered.items()},
        "worker kill -> their requests promoted": promoted_after(chaos, hit, killed),
        "change runs": len(runs),
        "change runs submitted by reconcile": sum(
            1 for r in runs if str(r.parameters.get("change_id", "")).startswith("reconcile:")
        ),
        "change runs retried (run_count > 1)": sum(1 for r in runs if r.run_count > 1),
        "change run states": dict(Counter(state(r) for r in runs)),
        "settled after s": round(settled_at, 1),
        **maintenance,
    }
    report = "\n".join(f"  {name}: {value}" for name, value in counts.items())
    print(f"\nchaos run counts:\n{report}", flush=True)
    assert problems == [], f"{len(problems)} problem(s):\n" + "\n".join(problems[:40]) + f"\n{report}"


def check(chaos: Chaos, approvals: list[Approval], seeded: dict[tuple[str, str], UUID]) -> tuple[dict, list]:
    """Compare the sites, the mailbox and the ledger with what was approved; returns counts and problems."""
    problems: list[str] = []
    counts: Counter[str] = Counter()
    on_site = {site: chaos.apps(site) for site in TARGETS}
    streams = {
        site: {sid: name for name, sid in chaos.world.target_streams[site].items()} for site in TARGETS
    }
    temporary = [f"{site}: {a.name}" for site in TARGETS for a in on_site[site] if TEMPORARY in a.name]
    problems += [f"temporary app left on {t}" for t in temporary]
    ledger = Ledger(chaos.settings.ledger_url.get_secret_value())
    try:
        for approval in approvals:
            name = approval.app.name
            counts["approvals"] += 1
            outcome = ledger.outcome(approval.key)
            if outcome != "promoted":
                problems.append(f"{name}: ledger outcome {outcome!r}")
            promotion = ledger.promotion(approval.key)
            results = {r.site: r for r in ledger.site_results(promotion.id)} if promotion else {}
            for site, mode in approval.sites.items():
                named = [a for a in on_site[site] if a.name == name]
                placed = {streams[site].get(a.stream.id): a.id for a in named if a.published and a.stream}
                per_stream = Counter(
                    streams[site].get(a.stream.id) for a in named if a.published and a.stream
                )
                strays = [a.id for a in named if not a.published]
                for stream in approval.streams:
                    counts[f"{site}: target apps checked ({mode})"] += 1
                    if per_stream[stream] != 1:
                        problems.append(f"{name}: {per_stream[stream]} app(s) in {site}/{stream}, expected 1")
                if strays:
                    problems.append(f"{name}: unpublished app(s) with its name on {site}: {strays}")
                if (name, site) in seeded:
                    counts["overwrites into an existing app id"] += 1
                    if placed.get("Everyone") != seeded[(name, site)]:
                        problems.append(f"{name}: {site}/Everyone is not the seeded app replaced in place")
                result = results.get(site)
                wanted = {placed[s] for s in approval.streams if s in placed}
                if result is None or result.status != "done" or set(result.target_app_ids) != wanted:
                    problems.append(f"{name}: ledger site result on {site} does not match the site: {result}")
                else:
                    counts["ledger site results matching the sites"] += 1
    finally:
        ledger.close()

    source = chaos.apps("source")
    for approval in approvals:
        name, app_id = approval.app.name, approval.app.id
        left = [a for a in source if a.name == name]
        copies = [a for a in left if not a.published and a.owner.user_id == REP.user_id]
        if any(a.id == app_id for a in left):
            problems.append(f"{name}: the published source app is still there")
        elif len(copies) != 1 or len(left) != 1:
            problems.append(
                f"{name}: source holds {len(left)} app(s), {len(copies)} unpublished copy for the rep"
            )
        else:
            counts["source apps unpublished, copy owned by the rep"] += 1

    # A mailbox shows one message per Message-ID: an email sent again by the attempt after one that
    # was killed between the SMTP server's "250" and the ledger's record carries the same id.
    mails: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for received in chaos.smtp.messages:
        message_id = str(received.message["Message-ID"])
        if message_id in seen:
            counts["emails submitted again with their Message-ID (a killed attempt)"] += 1
            continue
        seen.add(message_id)
        subject = str(received.message["Subject"] or "")
        verdict = subject.split("]", 1)[-1].split(":", 1)[0].strip()
        app_id = str(received.message["X-Qlik-App-Id"])
        mails[(app_id, verdict)] += 1
        body = received.message.get_body(("plain",))
        if verdict == "Promoted" and body is not None and "Requested targets" in body.get_content():
            mails[(app_id, "Promotion requested")] += 1  # a quick promotion's results carry it
    twice = {k: n for k, n in mails.items() if n > 1}
    problems += [f"email {verdict!r} for app {app} sent {n} times" for (app, verdict), n in twice.items()]
    for approval in approvals:
        for verdict in ("Approved", "Promotion requested", "Promoted"):
            if mails[(str(approval.app.id), verdict)] != 1:
                problems.append(
                    f"{approval.app.name}: {mails[(str(approval.app.id), verdict)]} {verdict!r} email(s)"
                )
    counts["emails"] = sum(mails.values())
    counts["emails sent twice"] = len(twice)
    counts["'Promotion incomplete' emails (a run failed, then was retried)"] = sum(
        n for (_, verdict), n in mails.items() if verdict == "Promotion incomplete"
    )
    counts["temporary apps on the targets"] = len(temporary)
    return dict(counts), problems
