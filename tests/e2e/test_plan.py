"""See before you promote: a plan says what an approval would do now, per site, and changes nothing.

The plan is built with the planning step a promotion runs itself, so a promotion run right after
it does what it said: the same apps replaced, the same streams published, the same S3 key.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from typer.testing import CliRunner

from promoter.approval import Action, Mode
from promoter.cli import app as cli
from promoter.flows.handle import handle_app_change
from promoter.flows.plan import build_plan, plan_promotion
from promoter.promotion_plan import PlannedSite, PromotionPlan
from promoter.sandbox.world import MANAGER, REP
from promoter.store.database import metadata
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage
from tests.e2e.test_approval_cycles import owners_copy, republish

pytestmark = IN_PROCESS_FLOWS

VERSIONED = {"PromotionS3Versioning": ["True"]}
ADMIN = "ACME\\admin on ops01 (qs-promoter CLI)"


def by_site(plan: PromotionPlan) -> dict[str, PlannedSite]:
    return {s.target.site: s for s in plan.sites}


def what(site: PlannedSite) -> dict[str, Any]:
    """One site's plan as plain values: replaced apps with the rule that chose them, fresh publishes."""
    assert site.plan is not None, site.unreadable
    return {
        "mode": site.plan.mode,
        "replace": [(r.app_id, r.stream.name, r.matched_by) for r in site.plan.replace],
        "publish": site.plan.publish_upload_to.name if site.plan.publish_upload_to else None,
        "copies": [s.name for s in site.plan.copy_to],
        "missing": list(site.plan.streams_missing),
    }


async def everything(stage: Stage) -> dict[str, Any]:
    """Every app on every site (as QRS lists it) and every ledger row: what a plan must leave alone."""
    apps = {
        name: sorted(a.model_dump_json() for a in await stage.apps(name))
        for name in ("source", *stage.settings.target_sites)
    }
    with stage.ledger() as ledger, ledger.engine.connect() as conn:
        rows = {
            table.name: sorted(map(repr, conn.execute(sa.select(table)))) for table in metadata.sorted_tables
        }
    return {"apps": apps, "ledger": rows}


async def test_a_plan_shows_each_site_and_the_promotion_then_does_what_it_said(stage: Stage) -> None:
    """Approve "Sales" for test (Duplicate) and prod (Overwrite), streams Everyone and Review, where
    prod already has a "Sales" in Everyone and no Review: the plan says test publishes to Everyone and
    copies to Review, prod replaces the existing app by name and misses Review, names the S3 key, the
    owner as the emails' recipient, an unpublish, and the manager as allowed. The approval then runs:
    the same app is replaced, both test streams get the app, and the S3 key is the planned one."""
    existing = await stage.seed_target("prod", "Sales", "Everyone", stage.app_file(seed="old"))
    app = await stage.publish("Sales")
    await stage.approve(app.id, ["test - Duplicate", "prod - Overwrite"], ["Everyone", "Review"], **VERSIONED)

    plan = await build_plan(app.id, stage.settings, requested_by=ADMIN)

    sites = by_site(plan)
    assert what(sites["test"]) == {
        "mode": Mode.DUPLICATE,
        "replace": [],
        "publish": "Everyone",
        "copies": ["Review"],
        "missing": [],
    }
    assert what(sites["prod"]) == {
        "mode": Mode.OVERWRITE,
        "replace": [(existing.id, "Everyone", "name")],
        "publish": None,
        "copies": [],
        "missing": ["Review"],
    }
    assert (plan.request, plan.action, plan.asked_by) == ("approval", Action.PROMOTE, MANAGER.account)
    assert (plan.allowed, plan.unpublishes) == (True, True)
    assert "has CanPromote" in plan.allowed_reason
    assert [(e.kind, e.recipients, e.only_after_seconds) for e in plan.emails] == [
        ("approval", (REP.email,), None),
        ("intended targets", (REP.email,), 30),  # a quicker promotion puts it in the results email
        ("results", (REP.email,), None),
    ]
    assert plan.emails[0].subject == '[qs-promoter] Approved: "Sales"'

    await handle_app_change(app.id, "updated")

    with stage.ledger() as ledger:
        (promotion,) = ledger.promotions()
    assert promotion.s3_key == plan.s3_key and plan.s3_key is not None
    (replaced,) = await stage.apps("prod")
    assert (replaced.id, replaced.stream.name if replaced.stream else None) == (existing.id, "Everyone")
    on_test = sorted(a.stream.name for a in await stage.apps("test") if a.stream)
    assert on_test == ["Everyone", "Review"]
    sent_whatever_happens = [e.subject for e in plan.emails if e.only_after_seconds is None]
    assert sorted(str(m["Subject"]) for m in stage.mails()) == sorted(sent_whatever_happens)


async def test_a_second_approval_cycle_is_planned_by_identity_under_the_first_apps_s3_key(
    stage: Stage,
) -> None:
    """After a first promotion replaced prod's "Sales", the owner's copy is renamed "Sales 2025",
    published and approved again, and someone has put an app of that new name in prod's Everyone: the
    plan replaces the app the ledger remembers (by recorded identity), not the one of the same name,
    and names the first app's S3 key, which the second promotion then uses."""
    existing = await stage.seed_target("prod", "Sales", "Everyone", stage.app_file(seed="old"))
    app = await stage.publish("Sales")
    await stage.approve(app.id, ["prod - Overwrite"], ["Everyone"], **VERSIONED)
    await handle_app_change(app.id, "updated")
    copy = await owners_copy(stage, app.id)
    again = await republish(stage, copy, "Sales 2025", stage.app_file(seed="cycle 2"))
    stranger = await stage.seed_target("prod", "Sales 2025", "Everyone", stage.app_file(seed="other"))
    await stage.approve(again.id, ["prod - Overwrite"], ["Everyone"], **VERSIONED)

    plan = await build_plan(again.id, stage.settings, requested_by=ADMIN)

    assert what(by_site(plan)["prod"])["replace"] == [(existing.id, "Everyone", "ledger")]
    assert stranger.id not in [r.app_id for s in plan.sites if s.plan for r in s.plan.replace]
    await handle_app_change(again.id, "updated")
    with stage.ledger() as ledger:
        first, second = ledger.promotions()
    assert first.s3_key == second.s3_key == plan.s3_key
    assert f"continues app {app.id}" in plan.s3_note


async def test_a_plan_changes_nothing_on_any_site_or_in_the_ledger(stage: Stage) -> None:
    """The plan-promotion flow reads the sites (only GET requests reach them), writes nothing to any
    site or the ledger, and leaves the plan as the run's markdown artifact."""
    await stage.seed_target("test", "Sales", "Everyone", stage.app_file(seed="old"))
    app = await stage.publish("Sales")
    await stage.approve(app.id, ["test - Overwrite", "prod - Duplicate"], ["Everyone", "Review"])
    before = await everything(stage)
    traffic = {name: stage.site(name).traffic() for name in stage.sandbox.sites}

    text = await plan_promotion(app.id)

    assert await everything(stage) == before
    for name, earlier in traffic.items():
        calls = {k: v - earlier.get(k, 0) for k, v in stage.site(name).traffic().items() if " /" in k}
        assert [call for call, count in calls.items() if count and not call.startswith("GET ")] == [], name
    assert text.startswith("Plan for app Sales (") and "nothing has been changed" in text
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"plan-{app.id}"]))
        )
    assert found and "Nothing has been changed." in str(found[0].data)
    assert "#### Site test (Overwrite)" in str(found[0].data)


async def test_an_approver_without_can_promote_is_shown_as_not_allowed(stage: Stage) -> None:
    """The rep (no CanPromote) approves their own app: the plan says not allowed and why, that the
    refusal is emailed, and that nothing happens to the source app."""
    app = await stage.publish("Pricing")
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], by=REP)

    plan = await build_plan(app.id, stage.settings, requested_by=ADMIN)

    assert (plan.allowed, plan.promotes, plan.unpublishes, plan.s3_key) == (False, False, False, None)
    assert plan.allowed_reason == "ACME\\rep does not have CanPromote"
    assert [e.kind for e in plan.emails] == ["refusal"]
    assert plan.source_after == "left as it is"


async def test_an_app_without_an_approval_is_planned_as_a_manual_promotion(stage: Stage) -> None:
    """An app without an approval is planned as a manual promotion (promote-app), and says so; given
    a site, stream and mode it plans those, as `qs-promoter promote` would: nobody's rights checked,
    no approval email, the source app never unpublished."""
    app = await stage.publish("Inventory")

    plain = await build_plan(app.id, stage.settings, requested_by=ADMIN)
    given = await build_plan(
        app.id, stage.settings, sites=["test"], streams=["Review"], mode=Mode.DUPLICATE, requested_by=ADMIN
    )

    assert plain.request == "manual promotion" and "has no PromotionApproval" in plain.manual_because
    assert (given.request, given.action, given.asked_by) == ("manual promotion", Action.PROMOTE, ADMIN)
    assert (given.allowed, given.unpublishes, given.source_after) == (True, False, "left as it is")
    assert [what(s) for s in given.sites] == [
        {"mode": Mode.DUPLICATE, "replace": [], "publish": "Review", "copies": [], "missing": []}
    ]
    assert [e.kind for e in given.emails] == ["intended targets", "results"]


def test_the_plan_command_prints_the_plan(stage: Stage) -> None:
    """`qs-promoter plan APP_ID` runs in-process and prints the plan: each site, the S3 key, the
    emails with their recipients, the unpublish and whether the approver is allowed."""
    app = asyncio.run(stage.publish("Sales"))
    asyncio.run(stage.approve(app.id, ["test - Overwrite"], ["Everyone", "Review"], **VERSIONED))
    with stage.ledger():  # made when the stack first ran; `plan` never makes one of its own
        pass

    result = CliRunner().invoke(cli, ["plan", str(app.id), "--config", str(stage.config)])

    assert result.exit_code == 0, result.output
    out = result.output
    assert "site test (Overwrite):" in out
    assert "publish the app (a fresh upload) to Everyone" in out
    assert "publish a server-side copy of the upload to Review" in out
    assert f"S3 key: {stage.settings.versioning.prefix}apps/{app.id}/Sales.qvf" in out
    assert f'approval: [qs-promoter] Approved: "Sales" to {REP.email}' in out
    assert "unpublish the source app: yes" in out
    assert "allowed: yes: ACME\\manager has CanPromote" in out


def test_the_plan_command_names_an_app_that_does_not_exist(stage: Stage) -> None:
    """A plan of an app id the source site does not know ends with exit code 1 and says so."""
    missing = UUID(int=42)
    with stage.ledger():
        pass

    result = CliRunner().invoke(cli, ["plan", str(missing), "--config", str(stage.config)])

    assert result.exit_code == 1
    assert f"app {missing} does not exist on the source site" in result.output
