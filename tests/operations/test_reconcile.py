"""Reconcile end to end: real sandbox sites, a real Prefect server with the change deployment, the ledger.

No worker runs: the tests check which flow runs of handle-app-change exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.flows.reconcile import reconcile
from promoter.provenance import UploadSlot, new_upload_secret, upload_name, upload_token
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App, format_qrs_time, qrs_now
from promoter.reconcile import survey_source
from promoter.sandbox.repository import SYSTEM
from promoter.sandbox.world import MANAGER, REP, publish_as, set_properties
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS

DEPLOYMENT = "reconcile-tests"
APPROVED = {
    "PromoteToServer": ["test - Overwrite"],
    "PromoteToStream": ["Everyone"],
    "PromotionApproval": ["Approve"],
}


@pytest.fixture
def change_deployment(prefect_api: str) -> Iterator[UUID]:
    """handle-app-change deployed as handle-app-change/reconcile-tests (no worker: runs stay scheduled)."""
    yield handle_app_change.to_deployment(name=DEPLOYMENT).apply()  # type: ignore[misc]


async def runs_for(prefect_api: str, deployment_id: UUID, app_id: UUID) -> list[FlowRun]:
    only_this = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    async with PrefectClient(api=prefect_api) as client:
        runs = await client.read_flow_runs(flow_run_filter=only_this, limit=200)
    return [run for run in runs if run.parameters.get("app_id") == str(app_id)]


async def approved_app(stage: Stage, name: str) -> App:
    """The rep publishes an app to Sales, the manager approves it: QRS has no subscription to tell anyone."""
    file = stage.tmp / f"{name}.qvf"
    file.write_bytes(b"QVF " + name.encode())
    app = await publish_as(stage.settings, REP, file, name, stage.world.sales_stream_id)
    return await set_properties(stage.settings, MANAGER, app.id, stage.world, APPROVED)


async def test_an_approval_no_notification_announced_is_submitted_once(
    stage: Stage, prefect_api: str, change_deployment: UUID
) -> None:
    """Approved while nothing was subscribed: reconcile submits it, and a second reconcile adds no run."""
    app = await approved_app(stage, "Missed Approval")
    assert not stage.site("dev").repository.subscriptions

    first = await reconcile(deployment_name=f"handle-app-change/{DEPLOYMENT}", settle_seconds=0)
    second = await reconcile(deployment_name=f"handle-app-change/{DEPLOYMENT}", settle_seconds=0)

    assert first.startswith("1 missed request(s) submitted, 0 waiting")
    assert second.startswith("0 missed request(s) submitted, 1 waiting")
    key = approval_key(app, stage.settings)
    runs = await runs_for(prefect_api, change_deployment, app.id)
    assert [(r.parameters["trigger"], r.parameters["change_id"]) for r in runs] == [
        ("updated", f"reconcile:{key}")
    ]


async def test_an_approval_the_ledger_has_seen_is_not_submitted(
    stage: Stage, prefect_api: str, change_deployment: UUID
) -> None:
    """A request the ledger holds (its run is going or done) is left alone."""
    app = await approved_app(stage, "Handled Approval")
    with stage.ledger() as ledger:
        ledger.claim(approval_key(app, stage.settings), owner="an-earlier-run", app_id=app.id)

    await reconcile(deployment_name=f"handle-app-change/{DEPLOYMENT}", settle_seconds=0)

    assert await runs_for(prefect_api, change_deployment, app.id) == []


async def test_a_qrs_that_cannot_filter_on_property_names_is_scanned_in_full(stage: Stage) -> None:
    """If QRS refuses the custom-property filter (400), every published app is read and the rules pick."""
    app = await approved_app(stage, "Scanned In Full")
    stage.site("dev").add_fault("status", method="GET", path="^/qrs/app/full$", status=400, count=1)

    async with QrsClient.for_site(stage.settings, "source") as dev:
        survey = await survey_source(dev, stage.settings, None)

    assert [a.id for a in survey.apps] == [app.id]


async def upload_to_test(stage: Stage, name: str, age: timedelta) -> App:
    """An unpublished app on the test site, created ``age`` ago (the sandbox's clock is set back)."""
    file = stage.tmp / "leftover.qvf"
    file.write_bytes(b"QVF leftover")
    async with QrsClient.for_site(stage.settings, "test") as test:
        app = await test.upload_app(file, name)
    created = format_qrs_time(qrs_now() - age)
    await asyncio.to_thread(
        stage.site("test").repository.modify, "app", str(app.id), SYSTEM, createdDate=created
    )
    return app


async def test_the_sweep_deletes_old_temporary_uploads_only(
    stage: Stage, prefect_api: str, tmp_path: Path
) -> None:
    """On the target sites: an unpublished "[qs-promoter <token>-<secret>]" app older than an hour is deleted;
    a fresh one, an old one of a request still running, and an ordinary old app stay."""
    running_key = "approval:still-running"
    with stage.ledger() as ledger:
        ledger.claim(running_key, owner="a-running-run")

    def temporary(token: str) -> str:
        return upload_name("Sales", UploadSlot(token, new_upload_secret(), qrs_now()))

    old = await upload_to_test(stage, temporary("0123456789ab"), timedelta(hours=2))
    fresh = await upload_to_test(stage, temporary("123456789abc"), timedelta(minutes=5))
    in_use = await upload_to_test(stage, temporary(upload_token(running_key, "test")), timedelta(hours=2))
    ordinary = await upload_to_test(stage, "Sales", timedelta(hours=2))

    summary = await reconcile(deployment_name=f"handle-app-change/{DEPLOYMENT}", settle_seconds=0)

    async with QrsClient.for_site(stage.settings, "test") as test:
        left = {app.id for app in await test.apps()}
    assert (old.id in left, {fresh.id, in_use.id, ordinary.id} <= left) == (False, True), summary
    assert "1 leftover upload(s) deleted" in summary
