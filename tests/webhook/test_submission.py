"""From notification to flow run, against a real Prefect server: once per change, nothing lost.

No worker runs: the tests check that the flow runs exist, with the right parameters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi import FastAPI
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import run_flow_async

from promoter.flows.handle import change_run
from promoter.notifications import ChangeKind
from promoter.sandbox.repository import Actor
from promoter.sandbox.seed import seed_app
from promoter.sandbox.server import Sandbox
from promoter.settings import EmailSettings, Settings
from promoter.webhook.app import create_app
from promoter.webhook.outbox import Notice, Outbox, OutboxEntry
from promoter.webhook.relevance import qrs_relevance
from promoter.webhook.submitter import Relevance, Submitter
from tests.e2e.conftest import IN_PROCESS_FLOWS
from tests.webhook.support import (
    FAST,
    SECRET,
    TEST_DEPLOYMENT,
    SwitchableApi,
    alerting_stream,
    apply_deployment,
    client_for,
    make_settings,
    notification,
    serve,
    unused_url,
    wait_until,
    with_webhook,
)

pytestmark = pytest.mark.e2e

REP = Actor("ACME", "rep")


async def runs_for(prefect_api: str, deployment_id: UUID, app_ids: Iterable[object]) -> list[FlowRun]:
    """The flow runs of the deployment whose app_id parameter is one of ``app_ids``."""
    wanted = {str(a) for a in app_ids}
    only_this = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    found: list[FlowRun] = []
    async with PrefectClient(api=prefect_api) as client:
        while page := await client.read_flow_runs(flow_run_filter=only_this, limit=200, offset=len(found)):
            found += page
    return [run for run in found if run.parameters.get("app_id") in wanted]


async def outbox_entries(path: Path) -> list[OutboxEntry]:
    outbox = Outbox(path)
    await outbox.open()
    try:
        return await outbox.entries()
    finally:
        await outbox.close()


async def pending(path: Path) -> int:
    return sum(e.flow_run_id is None for e in await outbox_entries(path))


async def post(client: httpx.AsyncClient, kind: ChangeKind, body: list[dict[str, object]]) -> httpx.Response:
    return await client.post(f"/qrs/{SECRET}/app-{kind}", json=body)


async def test_a_notification_becomes_one_flow_run_with_the_change(
    tmp_path: Path, prefect_api: str, change_deployment: UUID
) -> None:
    """An accepted app change is stored, then submitted: a flow run with app_id, trigger and change_id
    (without a relevance check reading QRS, the change is known by its outbox entry, never by the
    modifiedDate its sender wrote)."""
    settings = make_settings(tmp_path)
    app_id = uuid4()
    app = create_app(
        settings,
        prefect_client_factory=client_for(prefect_api),
        deployment_name=TEST_DEPLOYMENT,
        submit_policy=FAST,
    )
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await post(client, "published", [notification(app_id, "2026-05-01T12:00:00.123Z")])
            (entry,) = await wait_until(lambda: all_submitted(settings.webhook.outbox_path), within=30)

    (run,) = await runs_for(prefect_api, change_deployment, [app_id])
    key = f"published:{app_id}:outbox-{entry.id}"
    assert response.status_code == 200
    assert run.parameters == {"app_id": str(app_id), "trigger": "published", "change_id": key}
    assert (run.idempotency_key, entry.flow_run_id) == (key, str(run.id))
    assert json.loads(entry.payload)["objectID"] == str(app_id)
    assert (run.name, "webhook" in run.tags) == (f"publish of app {app_id}", True)


def checked_by_qrs(settings: Settings, prefect_api: str) -> FastAPI:
    """The webhook as `serve` builds it: the relevance check reads each app from the sandbox QRS."""
    return create_app(
        settings,
        prefect_client_factory=client_for(prefect_api),
        deployment_name=TEST_DEPLOYMENT,
        relevant=qrs_relevance(settings),
        submit_policy=FAST,
    )


async def all_submitted(path: Path) -> list[OutboxEntry] | None:
    """Every entry of the outbox, once all of them have their flow run; None before."""
    entries = await outbox_entries(path)
    return entries if entries and all(e.flow_run_id for e in entries) else None


async def test_runs_are_named_by_the_change_and_the_app_from_their_first_second(
    tmp_path: Path, prefect_api: str, change_deployment: UUID, sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """A run is created with a name an admin reads in the run list: the change in words and the app's
    name as QRS showed it to the relevance check, on one line and at most 100 characters, whatever the
    owner typed; no Prefect random name in between."""
    settings = with_webhook(sandbox_settings, tmp_path)
    repo = sandbox.sites["dev"].repository
    approved = {"PromotionApproval": ["Approve"]}
    sales = seed_app(repo, "Sales KPIs", owner=REP, custom_properties=approved)["id"]
    hostile = seed_app(
        repo, "Q3\r\nforged [x](https://evil)" + "é" * 200, owner=REP, custom_properties=approved
    )
    app = checked_by_qrs(settings, prefect_api)
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            await post(client, "updated", [notification(sales), notification(hostile["id"])])
            await wait_until(lambda: all_submitted(settings.webhook.outbox_path))

    names = {
        r.parameters["app_id"]: r.name
        for r in await runs_for(prefect_api, change_deployment, [sales, hostile["id"]])
    }
    assert names[sales] == "change to app 'Sales KPIs'"
    assert names[hostile["id"]].startswith("change to app 'Q3 forged [x](https://evil)éé")
    assert names[hostile["id"]].endswith("…'") and len(names[hostile["id"]]) == 100
    assert "\n" not in names[hostile["id"]] and "\r" not in names[hostile["id"]]


@flow(name="named-like-handle-app-change", flow_run_name=change_run)
async def named_like_handle_app_change(app_id: str, trigger: str = "updated") -> None:
    """handle-app-change's run naming (the same callable) and nothing else."""


@IN_PROCESS_FLOWS
async def test_a_change_run_keeps_its_given_name_and_never_shows_a_random_one(prefect_api: str) -> None:
    """When a handle-app-change run starts, the name the webhook gave it (with the app's name) stays;
    a run created without one (a Custom run in the UI) is named by the change in words, not by
    Prefect's made-up name."""
    app_id = str(uuid4())
    parameters = {"app_id": app_id, "trigger": "reloaded"}
    async with PrefectClient(api=prefect_api) as client:
        given = await client.create_flow_run(
            named_like_handle_app_change, parameters=parameters, name="reload of app 'Sales'"
        )
        made_up = await client.create_flow_run(
            named_like_handle_app_change, parameters=parameters, name="malachite-mongrel"
        )
    for created in (given, made_up):
        await run_flow_async(named_like_handle_app_change, flow_run=created, parameters=parameters)
    async with PrefectClient(api=prefect_api) as client:
        names = [(await client.read_flow_run(r.id)).name for r in (given, made_up)]

    assert names == ["reload of app 'Sales'", f"reload of app {app_id}"]


async def test_ten_duplicate_notifications_make_one_flow_run(
    tmp_path: Path, prefect_api: str, change_deployment: UUID, sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """Ten notifications of one change, some arriving after its run was created, give exactly one flow
    run, keyed by the app's modifiedDate as QRS reports it."""
    settings = with_webhook(sandbox_settings, tmp_path)
    repo = sandbox.sites["dev"].repository
    app_id = seed_app(repo, "Approved", owner=REP, custom_properties={"PromotionApproval": ["Approve"]})["id"]
    body = [notification(app_id, "2026-05-02T08:30:00.000Z")]
    app = checked_by_qrs(settings, prefect_api)
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            first = await asyncio.gather(*(post(client, "updated", body) for _ in range(5)))
            await wait_until(lambda: all_submitted(settings.webhook.outbox_path))
            later = await asyncio.gather(*(post(client, "updated", body) for _ in range(5)))
            entries = await wait_until(lambda: all_submitted(settings.webhook.outbox_path))

    runs = await runs_for(prefect_api, change_deployment, [app_id])
    assert [r.status_code for r in first + later] == [200] * 10
    assert (len(entries), len(runs)) == (10, 1)
    assert {e.flow_run_id for e in entries} == {str(runs[0].id)}
    assert runs[0].idempotency_key == f"updated:{app_id}:{repo.get('app', app_id)['modifiedDate']}"


async def test_a_forged_modified_date_never_swallows_a_real_change(
    tmp_path: Path, prefect_api: str, change_deployment: UUID, sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """A sender who writes a far-future modifiedDate gets at most a run for the app as QRS has it; a
    real change later posted together with the same forgery gets its own run, keyed by QRS's date."""
    settings = with_webhook(sandbox_settings, tmp_path)
    repo = sandbox.sites["dev"].repository
    app_id = seed_app(repo, "Approved", owner=REP, custom_properties={"PromotionApproval": ["Approve"]})["id"]
    forged = notification(app_id, "9999-12-31T23:59:59.999Z")
    app = checked_by_qrs(settings, prefect_api)
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            await post(client, "updated", [forged])
            await wait_until(lambda: all_submitted(settings.webhook.outbox_path))
            before = repo.get("app", app_id)["modifiedDate"]
            changed = repo.modify("app", app_id, REP, description="changed for real")["modifiedDate"]
            await post(client, "updated", [notification(app_id, changed), forged])
            entries = await wait_until(lambda: all_submitted(settings.webhook.outbox_path))

    runs = {r.idempotency_key: str(r.id) for r in await runs_for(prefect_api, change_deployment, [app_id])}
    assert set(runs) == {f"updated:{app_id}:{before}", f"updated:{app_id}:{changed}"}
    assert [e.flow_run_id for e in entries] == [runs[f"updated:{app_id}:{before}"]] + [
        runs[f"updated:{app_id}:{changed}"]
    ] * 2


async def test_only_publishes_that_may_alert_become_flow_runs(
    tmp_path: Path, prefect_api: str, change_deployment: UUID, sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """One notification to app-published naming many apps makes a run only for the app published to a
    stream with EmailAlertOnPublishTo (email on, approvers set): not for one in a stream without it,
    an unpublished app, or apps that do not exist."""
    repo = sandbox.sites["dev"].repository
    alerts = alerting_stream(repo, "Alerts")
    email = EmailSettings(enabled=True, stream_approvers={alerts["id"]: ["manager@acme.example"]})
    settings = with_webhook(sandbox_settings, tmp_path).model_copy(update={"email": email})
    alerting = seed_app(repo, "Alerting", owner=REP, stream=alerts["id"])["id"]
    quiet = seed_app(repo, "Quiet", owner=REP, stream="Quiet stream")["id"]
    unpublished = seed_app(repo, "Unpublished", owner=REP)["id"]
    strangers = [str(uuid4()) for _ in range(20)]
    everyone = [alerting, quiet, unpublished, *strangers]
    app = checked_by_qrs(settings, prefect_api)
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await post(client, "published", [notification(a) for a in everyone])
            await wait_until(lambda: _none_pending(settings.webhook.outbox_path), within=60)

    runs = await runs_for(prefect_api, change_deployment, everyone)
    assert (response.status_code, response.json()) == (200, {"queued": 23, "ignored": 0})
    assert [r.parameters["app_id"] for r in runs] == [alerting]


async def test_a_burst_for_one_app_is_collapsed_into_a_run_for_the_newest_change(
    tmp_path: Path, prefect_api: str, change_deployment: UUID
) -> None:
    """Changes of one app and kind that wait together become one run (keyed, without a relevance check,
    by the newest of their outbox entries)."""
    settings = make_settings(tmp_path)
    app_id = uuid4()
    dates = [f"2026-05-03T09:00:0{i}.000Z" for i in range(5)]
    # Prefect is unreachable while the burst arrives, so all five are waiting when it is back.
    down = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with serve(down) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            for date in dates:
                await post(client, "reloaded", [notification(app_id, date)])
    up = create_app(
        settings,
        prefect_client_factory=client_for(prefect_api),
        deployment_name=TEST_DEPLOYMENT,
        submit_policy=FAST,
    )
    with serve(up):
        entries = await wait_until(lambda: all_submitted(settings.webhook.outbox_path))

    (run,) = await runs_for(prefect_api, change_deployment, [app_id])
    assert run.idempotency_key == f"reloaded:{app_id}:outbox-{entries[-1].id}"
    assert [e.flow_run_id for e in entries] == [str(run.id)] * 5


@pytest.mark.slow
async def test_prefect_down_keeps_every_notification_and_submits_each_once_when_back(
    tmp_path: Path, prefect_api: str, change_deployment: UUID, switchable_api: SwitchableApi
) -> None:
    """While the Prefect API is unreachable, 50 notifications are acked and kept; once it is back,
    each becomes exactly one flow run."""
    settings = make_settings(tmp_path)
    warm_up, *app_ids = [uuid4() for _ in range(51)]
    # A loaded CI machine's Prefect server on SQLite can take over a second per creation once it is
    # back; FAST's 1.5 s attempt timeout would then cancel half the attempts and starve the drain.
    patient = replace(FAST, attempt_timeout_seconds=5.0)
    app = create_app(
        settings,
        prefect_client_factory=client_for(switchable_api.url),
        deployment_name=TEST_DEPLOYMENT,
        submit_policy=patient,
    )
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            # A first run while the API is up, so the client has a live connection to lose.
            await post(client, "updated", [notification(warm_up)])
            await wait_until(lambda: all_submitted(settings.webhook.outbox_path))

            switchable_api.down()
            responses = await asyncio.gather(
                *(post(client, "updated", [notification(app_id)]) for app_id in app_ids)
            )
            # The submitter really tried (and failed) while the API was gone.
            await wait_until(lambda: _has_failed_attempts(settings.webhook.outbox_path), within=30, every=0.1)
            held = await pending(settings.webhook.outbox_path)
            health_down = (await client.get("/healthz")).json()

            switchable_api.up()
            await wait_until(lambda: _none_pending(settings.webhook.outbox_path), within=180, every=0.1)

    runs = await runs_for(prefect_api, change_deployment, app_ids)
    assert [r.status_code for r in responses] == [200] * 50
    assert (held, health_down["outbox_depth"], health_down["prefect_api_reachable"]) == (50, 50, False)
    assert sorted(r.parameters["app_id"] for r in runs) == sorted(str(a) for a in app_ids)


async def _has_failed_attempts(path: Path) -> bool:
    return any(e.attempts > 0 and e.last_error for e in await outbox_entries(path))


async def _none_pending(path: Path) -> bool:
    return await pending(path) == 0


async def test_entries_left_by_a_previous_process_are_submitted_after_restart(
    tmp_path: Path, prefect_api: str, change_deployment: UUID
) -> None:
    """Notifications stored while Prefect was unreachable are submitted by the next process on start."""
    settings = make_settings(tmp_path)
    app_id = uuid4()
    down = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with serve(down) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            await post(client, "updated", [notification(app_id)])
    left_behind = await pending(settings.webhook.outbox_path)

    up = create_app(
        settings,
        prefect_client_factory=client_for(prefect_api),
        deployment_name=TEST_DEPLOYMENT,
        submit_policy=FAST,
    )
    with serve(up):
        await wait_until(lambda: _none_pending(settings.webhook.outbox_path))

    assert (left_behind, len(await runs_for(prefect_api, change_deployment, [app_id]))) == (1, 1)


async def test_the_relevance_check_removes_changes_that_need_no_run(
    tmp_path: Path, prefect_api: str, change_deployment: UUID
) -> None:
    """A change the relevance check rejects is removed without a flow run; an accepted one gets its run."""
    settings = make_settings(tmp_path)
    boring, approved = uuid4(), uuid4()
    asked: list[tuple[str, str]] = []

    async def relevant(app_id: str, kind: str) -> Relevance:
        asked.append((app_id, kind))
        return Relevance(app_id == str(approved), "no approval properties set")

    app = create_app(
        settings,
        prefect_client_factory=client_for(prefect_api),
        deployment_name=TEST_DEPLOYMENT,
        relevant=relevant,
        submit_policy=FAST,
    )
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            await post(client, "updated", [notification(boring), notification(approved)])
            await wait_until(lambda: _none_pending(settings.webhook.outbox_path))
    entries = await outbox_entries(settings.webhook.outbox_path)

    runs = await runs_for(prefect_api, change_deployment, [boring, approved])
    assert sorted(asked) == sorted([(str(boring), "updated"), (str(approved), "updated")])
    assert [r.parameters["app_id"] for r in runs] == [str(approved)]
    assert [e.app_id for e in entries] == [str(approved)]


async def test_a_redeployed_deployment_is_found_again(tmp_path: Path, prefect_api: str) -> None:
    """After the deployment is deleted and applied again (new id), the next run goes to the new one."""
    settings = make_settings(tmp_path)
    first_app, second_app = uuid4(), uuid4()
    old_id = await asyncio.to_thread(apply_deployment, "webhook-tests-redeploy")
    app = create_app(
        settings,
        prefect_client_factory=client_for(prefect_api),
        deployment_name="handle-app-change/webhook-tests-redeploy",
        submit_policy=FAST,
    )
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            await post(client, "updated", [notification(first_app)])
            await wait_until(lambda: _none_pending(settings.webhook.outbox_path))
            async with PrefectClient(api=prefect_api) as prefect:
                await prefect.delete_deployment(old_id)
            new_id = await asyncio.to_thread(apply_deployment, "webhook-tests-redeploy")
            await post(client, "updated", [notification(second_app)])
            await wait_until(lambda: _none_pending(settings.webhook.outbox_path))

    assert old_id != new_id
    assert len(await runs_for(prefect_api, new_id, [second_app])) == 1


async def test_healthz_reports_outbox_prefect_and_subscriptions(tmp_path: Path, prefect_api: str) -> None:
    """/healthz shows the outbox depth and age, whether Prefect answers, and the keeper's last check."""
    settings = make_settings(tmp_path)
    checked = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    live = create_app(
        settings,
        prefect_client_factory=client_for(prefect_api),
        deployment_name=TEST_DEPLOYMENT,
        last_subscription_check=lambda: checked,
        submit_policy=FAST,
    )
    with serve(live) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            healthy = (await client.get("/healthz")).json()

    dead = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with serve(dead) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            await post(client, "updated", [notification(uuid4())])
            waiting = await client.get("/healthz")

    assert (healthy["status"], healthy["prefect_api_reachable"], healthy["outbox_depth"]) == ("ok", True, 0)
    assert healthy["last_subscription_check"] == "2026-05-01T12:00:00Z"
    assert waiting.status_code == 200
    body = waiting.json()
    assert (body["outbox_depth"], body["prefect_api_reachable"], body["last_subscription_check"]) == (
        1,
        False,
        None,
    )
    assert body["oldest_entry_age_seconds"] >= 0


async def test_the_submitter_drains_an_outbox_on_its_own(
    tmp_path: Path, prefect_api: str, change_deployment: UUID
) -> None:
    """Without the webhook: open the outbox, give the submitter a client, run it until the outbox is empty."""
    apps = [uuid4(), uuid4(), uuid4()]
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    try:
        await outbox.append(
            [Notice(str(a), "updated", "2026-05-04T10:00:00.000Z", json.dumps(notification(a))) for a in apps]
        )
        async with PrefectClient(api=prefect_api) as prefect:
            submitter = Submitter(outbox, prefect, deployment_name=TEST_DEPLOYMENT, policy=FAST)
            running = asyncio.create_task(submitter.run())
            await wait_until(lambda: _outbox_empty(outbox))
            running.cancel()
            with suppress(asyncio.CancelledError):
                await running
    finally:
        await outbox.close()

    assert (submitter.submitted, len(await runs_for(prefect_api, change_deployment, apps))) == (3, 3)


async def _outbox_empty(outbox: Outbox) -> bool:
    return (await outbox.stats()).depth == 0


@flow(name="handle-app-change-strict")
def strict_flow(app: int) -> None:
    """A flow whose parameters do not match what the webhook sends."""


async def test_a_change_prefect_refuses_stays_in_the_outbox(tmp_path: Path, prefect_api: str) -> None:
    """When Prefect refuses a run (here: parameters the deployment does not accept), the entry is kept,
    with its attempts counted and Prefect's reason recorded."""
    await asyncio.to_thread(lambda: strict_flow.to_deployment(name="webhook-tests").apply())
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    try:
        await outbox.append([Notice(str(uuid4()), "updated", "2026-05-04T10:00:00.000Z", "{}")])
        async with PrefectClient(api=prefect_api) as prefect:
            submitter = Submitter(
                outbox, prefect, deployment_name="handle-app-change-strict/webhook-tests", policy=FAST
            )
            running = asyncio.create_task(submitter.run())
            (entry,) = await wait_until(lambda: _refused_entries(outbox))
            running.cancel()
            with suppress(asyncio.CancelledError):
                await running
    finally:
        await outbox.close()

    assert (entry.flow_run_id, entry.attempts >= 1, submitter.submitted) == (None, True, 0)
    assert "HTTP 4" in (entry.last_error or "")


async def _refused_entries(outbox: Outbox) -> list[OutboxEntry]:
    return [e for e in await outbox.entries() if (e.last_error or "").startswith("HTTP 4")]
