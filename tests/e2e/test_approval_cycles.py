"""Approval cycles end to end: the copy each unpublish gives the owner continues the app's history.

The original keeps every approved version of an app as versions of one S3 object; here the ledger
knows which copy came from which app, so the S3 object, the target apps, rollback and the audit
export follow the app from one approval cycle to the next.
"""

from __future__ import annotations

import csv
from pathlib import Path
from uuid import UUID

from promoter.audit import export_csv
from promoter.flows.handle import handle_app_change
from promoter.flows.rollback import rollback_app
from promoter.qrs.models import App
from promoter.sandbox.world import REP, acting_as
from promoter.versioning import object_key
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS

APPROVAL = {"PromotionS3Versioning": ["True"]}


async def owners_copy(stage: Stage, published_id: UUID) -> App:
    """The unpublished copy the promotion gave the owner in place of the published app."""
    (copy,) = await stage.apps("source")
    assert (copy.id != published_id, copy.published, copy.owner.user_id) == (True, False, REP.user_id)
    return copy


async def republish(stage: Stage, copy: App, name: str, file: Path) -> App:
    """The owner works on the copy (new content, new name) and publishes it to Sales again."""
    async with acting_as(stage.settings, "source", REP) as dev:
        upload = await dev.upload_app(file, f"{name} (import)")
        await dev.replace_app(upload.id, copy.id)
        await dev.delete_app(upload.id)
        return await dev.publish_app(copy.id, stage.world.sales_stream_id, name)


def audit(stage: Stage) -> list[dict[str, str]]:
    path = stage.tmp / "audit.csv"
    with stage.ledger() as ledger:
        export_csv(ledger, path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


async def test_a_second_approval_of_the_owners_copy_continues_the_apps_history(stage: Stage) -> None:
    """Approve "Sales" (Overwrite to test), the owner gets a copy, renames it, changes it, publishes it
    again, and it is approved again: both versions are versions of the one S3 object of the first app,
    the same target app is replaced by identity (not published beside it under the new name), a
    rollback puts the first cycle's app back into it, and the audit export shows one history."""
    first_file, second_file = stage.app_file(seed="cycle 1"), stage.app_file(seed="cycle 2")
    app = await stage.publish("Sales", first_file)
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], **APPROVAL)
    await handle_app_change(app.id, "updated")
    (target,) = await stage.apps("test")
    copy = await owners_copy(stage, app.id)

    again = await republish(stage, copy, "Sales 2025", second_file)
    await stage.approve(again.id, ["test - Overwrite"], ["Everyone"], **APPROVAL)
    await handle_app_change(again.id, "updated")

    prefix = stage.settings.versioning.prefix
    key = object_key(prefix, app.id, "Sales")
    listed = stage.s3.client().list_object_versions(
        Bucket=stage.settings.versioning.bucket, Prefix=f"{prefix}apps/"
    )
    assert [v["Key"] for v in listed["Versions"]] == [key, key]
    with stage.ledger() as ledger:
        cycles = [(p.app_id, p.s3_key) for p in ledger.promotions()]
        last_copy = await owners_copy(stage, again.id)
        assert ledger.lineage(last_copy.id, last_copy.name).root_app_id == app.id
    assert cycles == [(app.id, key), (again.id, key)]
    on_test = await stage.apps("test")
    assert [(a.id, a.published) for a in on_test] == [(target.id, True)]
    assert stage.site("test").repository.app_file(str(target.id)).read_bytes() == second_file.read_bytes()

    said = await rollback_app("test", target.id)

    assert stage.site("test").repository.app_file(str(target.id)).read_bytes() == first_file.read_bytes()
    assert f"of app {app.id}" in said and str(again.id) in said, said
    rows = audit(stage)
    assert [(r["SourceAppId"], r["LineageAppId"], r["S3Key"]) for r in rows] == [
        (str(app.id), str(app.id), key),
        (str(again.id), str(app.id), key),
    ]
    assert rows[1]["PreviousS3VersionId"] == rows[0]["S3VersionId"] != ""


async def test_the_copy_is_known_to_continue_the_app_before_the_published_app_is_deleted(
    stage: Stage,
) -> None:
    """The source site refuses to delete the published app after the owner's copy is made: the run
    fails with the app still published, and the ledger already knows the copy continues it. A new
    run finishes the unpublish with that same copy (the owner gets one copy, not two), and it
    continues the app."""
    app = await stage.publish("Sales")
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], **APPROVAL)
    source = stage.site("dev")
    source.add_fault("status", method="DELETE", path=rf"^/qrs/app/{app.id}$", status=403, body="Forbidden")

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_failed(), state.message
    apps = {a.id: a for a in await stage.apps("source")}
    assert apps.pop(app.id).published
    (copy,) = apps.values()
    with stage.ledger() as ledger:
        assert ledger.lineage(copy.id, copy.name).root_app_id == app.id

    source.clear_faults()
    await handle_app_change(app.id, "updated")

    (left,) = await stage.apps("source")
    assert (left.id, left.published) == (copy.id, False)
    with stage.ledger() as ledger:
        assert ledger.lineage(left.id, left.name).root_app_id == app.id
