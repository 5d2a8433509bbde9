"""The subscription keeper against a real sandbox site and a real local receiver of notifications."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from promoter.errors import QrsError
from promoter.flows.subscriptions import keep_subscriptions
from promoter.notifications import KINDS, ChangeKind, callback_path, callback_url
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App
from promoter.qrs.retry import RetryPolicy
from promoter.sandbox.server import Sandbox
from promoter.settings import Settings
from promoter.subscriptions import (
    drop_subscriptions,
    ensure_subscriptions,
    last_subscription_check,
    list_subscriptions,
    open_keeper,
    sentinel_url,
    watch_seconds,
)
from tests.e2e.conftest import IN_PROCESS_FLOWS
from tests.operations.conftest import Delivery, Receiver

SECRET = "keeper-secret-0123456789abcdefgh"


def subscribed(sandbox: Sandbox) -> Counter[tuple[str, str]]:
    """The source site's subscriptions as (url, propertyName), counted."""
    return Counter((s.url, s.property_name) for s in sandbox.sites["dev"].repository.subscriptions.values())


def expected(settings: Settings) -> Counter[tuple[str, str]]:
    return Counter(
        {
            (callback_url(settings, "updated"), ""): 1,
            (callback_url(settings, "reloaded"), "lastReloadTime"): 1,
            (callback_url(settings, "published"), "publishTime"): 1,
            (sentinel_url(settings), ""): 1,
        }
    )


async def upload(settings: Settings, folder: Path, name: str = "Keeper Test") -> App:
    file = folder / "keeper.qvf"
    file.write_bytes(b"QVF keeper test")
    async with QrsClient.for_site(settings, "source") as dev:
        return await dev.upload_app(file, name)


def describe(description: str) -> Callable[[App], None]:
    def change(app: App) -> None:
        app.description = description

    return change


def on(kind: ChangeKind, app_id: UUID, after: float = 0.0) -> Callable[[Delivery], bool]:
    """A receiver predicate: a delivery on ``kind``'s callback about ``app_id`` after ``after``."""

    def wanted(delivery: Delivery) -> bool:
        return (
            delivery.path == callback_path(SECRET, kind)
            and delivery.at > after
            and any(c["objectID"] == str(app_id) for c in delivery.changes)
        )

    return wanted


def test_a_scheduled_run_watches_until_shortly_before_the_next_one_is_due() -> None:
    """On time: 45 s; 20 s late: 25 s; over a minute late: no watch; an explicit duration wins."""
    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    assert [
        watch_seconds(None, start, start),
        watch_seconds(None, start, start + timedelta(seconds=20)),
        watch_seconds(None, start, start + timedelta(seconds=70)),
        watch_seconds(3.0, start, start + timedelta(seconds=70)),
    ] == [45.0, 25.0, 0.0, 3.0]


@IN_PROCESS_FLOWS
async def test_two_keeper_runs_leave_each_subscription_once(
    keeper_settings: Settings, sandbox: Sandbox, prefect_api: str
) -> None:
    """Two runs of keep-subscriptions: the source site holds each of the three app subscriptions once
    (all app updates, reloads by lastReloadTime, publishes by publishTime) plus the keeper's sentinel."""
    await keep_subscriptions(duration_seconds=0)
    await keep_subscriptions(duration_seconds=0)

    assert subscribed(sandbox) == expected(keeper_settings)
    stored = await list_subscriptions(keeper_settings)
    assert sorted((r.kind, r.state) for r in stored) == sorted(
        [(k, "active") for k in KINDS] + [("sentinel", "active")]
    )
    assert {str(r.handle) for r in stored} == set(sandbox.sites["dev"].repository.subscriptions)


async def test_each_kind_of_change_reaches_its_callback(
    keeper_settings: Settings, sandbox: Sandbox, receiver: Receiver, tmp_path: Path
) -> None:
    """An update, a reload and a publish each arrive on their own callback URL; the sentinel never fires."""
    await ensure_subscriptions(keeper_settings)
    app = await upload(keeper_settings, tmp_path)
    async with QrsClient.for_site(keeper_settings, "source") as dev:
        stream = await dev.create_entity("stream", {"name": "Keeper"})
        await dev.update_app(app.id, describe("touched"))
        await receiver.wait_for(on("updated", app.id), within=5)
        await dev.reload_app(app.id)
        await receiver.wait_for(on("reloaded", app.id), within=5)
        await dev.publish_app(app.id, UUID(stream["id"]))
        await receiver.wait_for(on("published", app.id), within=5)

    assert not [d for d in receiver.deliveries() if "sentinel" in d.path]


async def test_a_restart_without_downtime_is_seen_by_the_next_probe(
    keeper_settings: Settings, sandbox: Sandbox
) -> None:
    """QRS restarting between two probes (never seen down) is caught: the sentinel it kept is gone."""
    async with open_keeper(keeper_settings) as keeper:
        await keeper.renew()
        before = await keeper.probe()
        sandbox.sites["dev"].restart()
        after = await keeper.probe()

    assert (before[0], after[0]) == ("ok", "restarted")


async def test_a_restart_between_runs_is_noticed_and_nothing_piles_up(
    keeper_settings: Settings, sandbox: Sandbox
) -> None:
    """A keeper pass after a restart finds the old handles gone, subscribes again, and holds one of each."""
    first = await ensure_subscriptions(keeper_settings)
    sandbox.sites["dev"].restart()

    second = await ensure_subscriptions(keeper_settings)

    assert (first.restart_seen, second.restart_seen, second.complete) == (False, True, True)
    assert subscribed(sandbox) == expected(keeper_settings)
    assert len(await list_subscriptions(keeper_settings)) == 4


async def test_drop_removes_our_subscriptions(keeper_settings: Settings, sandbox: Sandbox) -> None:
    """`subscriptions drop` deletes every handle we hold from QRS and forgets it."""
    await ensure_subscriptions(keeper_settings)

    dropped = await drop_subscriptions(keeper_settings)

    assert (len(dropped), subscribed(sandbox), await list_subscriptions(keeper_settings)) == (
        4,
        Counter(),
        [],
    )


async def test_an_error_answer_that_echoes_the_callback_url_does_not_leak_the_secret(
    keeper_settings: Settings, sandbox: Sandbox
) -> None:
    """QRS refusing a subscription with the URL in its answer: the recorded error hides the secret."""
    url = callback_url(keeper_settings, "updated")
    sandbox.sites["dev"].add_fault(
        "status", method="POST", path="^/qrs/notification$", status=400, body=f"Invalid uri {url}", count=1
    )

    renewal = await ensure_subscriptions(keeper_settings)

    errors = [r.error for r in renewal.rotations if r.error]
    assert len(errors) == 1 and SECRET not in errors[0] and "Invalid uri" in errors[0]


async def test_last_check_is_reported_for_the_health_check(
    keeper_settings: Settings, sandbox: Sandbox
) -> None:
    """No time before the keeper ever ran; afterwards the time it last found the subscriptions in place."""
    before = await asyncio.to_thread(last_subscription_check, keeper_settings)
    async with open_keeper(keeper_settings) as keeper:
        await keeper.renew()
        await keeper.probe()
        probed = await asyncio.to_thread(last_subscription_check, keeper_settings)
        sandbox.sites["dev"].restart(downtime=30.0)
        outcome, _ = await keeper.probe()
        while_down = await asyncio.to_thread(last_subscription_check, keeper_settings)

    assert before is None and probed is not None
    assert (outcome, while_down) == ("unreachable", probed)


async def test_an_outage_without_a_restart_ends_the_watch_when_qrs_is_back(
    keeper_settings: Settings, sandbox: Sandbox
) -> None:
    """A probe that finds QRS not answering, then one that finds it back: the watch ends with "back",
    so the keeper subscribes again although the sentinel survived (QRS may not 404 an unknown handle)."""
    async with open_keeper(keeper_settings) as keeper:
        await keeper.renew()
        sandbox.sites["dev"].add_fault("status", path="^/qrs/notification$", status=503, count=1)
        watch = await keeper.watch(5.0, 0.05)

    assert (watch.outcome, watch.failures) == ("back", 1)


@IN_PROCESS_FLOWS
async def test_a_keeper_run_that_starts_while_qrs_is_down_subscribes_once_it_is_back(
    keeper_settings: Settings, sandbox: Sandbox, prefect_api: str
) -> None:
    """The first renewal fails (QRS restarting); the run keeps probing and subscribes when QRS answers."""
    sandbox.sites["dev"].restart(downtime=1.0)

    summary = await keep_subscriptions(duration_seconds=3.0, probe_interval_seconds=0.25)

    assert subscribed(sandbox) == expected(keeper_settings)
    assert summary.startswith("4 of 4 subscriptions in place")


@pytest.mark.slow
@IN_PROCESS_FLOWS
async def test_delivery_resumes_within_10_s_of_a_repository_restart(
    keeper_settings: Settings, sandbox: Sandbox, receiver: Receiver, prefect_api: str, tmp_path: Path
) -> None:
    """With the keeper running (probe every 2 s), a QRS restart with 1 s downtime loses the subscriptions;
    the first app change delivered again reaches the receiver within 10 s of the restart."""
    site = sandbox.sites["dev"]
    app = await upload(keeper_settings, tmp_path)
    keeper = asyncio.create_task(keep_subscriptions(duration_seconds=8.0, probe_interval_seconds=2.0))
    toucher = QrsClient.for_site(keeper_settings, "source", retry=RetryPolicy(attempts=1))
    try:
        touches = 0

        async def touch_until_delivered(after: float, within: float) -> Delivery:
            """Change the app every 0.25 s (ignoring refusals while QRS is down) until one arrives."""
            nonlocal touches
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                touches += 1
                with contextlib.suppress(QrsError):
                    await toucher.update_app(app.id, describe(f"touch {touches}"))
                with contextlib.suppress(TimeoutError):
                    return await receiver.wait_for(on("updated", app.id, after), within=0.25)
            raise TimeoutError(f"nothing delivered within {within} s")

        await touch_until_delivered(after=0.0, within=10.0)  # the keeper has subscribed
        site.restart(downtime=1.0)
        restarted = time.monotonic()
        delivered = await touch_until_delivered(after=restarted, within=15.0)
        recovery = delivered.at - restarted
        print(f"\ndelivery resumed {recovery:.2f} s after the repository restart")
        summary = await keeper
    finally:
        await toucher.aclose()
        if not keeper.done():
            keeper.cancel()

    assert recovery < 10.0, summary
    assert subscribed(sandbox) == expected(keeper_settings)
