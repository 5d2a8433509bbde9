"""Approvals to streams a target site does not have: that site fails, and the source app stays where it is.

The sandbox's prod site has "Everyone" only; test has "Everyone" and "Review".
"""

from __future__ import annotations

from typing import Any

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.qrs.client import QrsClient
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage
from tests.e2e.test_duplicate import artifact_rows

pytestmark = IN_PROCESS_FLOWS

NOT_ON_PROD = "none of the requested streams exist on prod ('Review')"


def s3_versions(stage: Stage) -> list[dict[str, Any]]:
    listed = stage.s3.client().list_object_versions(Bucket=stage.settings.versioning.bucket)
    return list(listed.get("Versions", []))


def mail_text(stage: Stage, subject_start: str) -> str:
    (found,) = [m for m in stage.mails() if str(m["Subject"]).startswith(subject_start)]
    return str(found.get_body(("plain",)).get_content())


async def test_an_approval_to_a_stream_no_target_has_promotes_nothing_and_changes_nothing(
    stage: Stage,
) -> None:
    """Approved to prod's Review, which prod lacks: no S3 version, the app stays published in Sales,
    the run fails naming prod and Review, the results email says prod failed and why, and the
    ledger and the artifact say failed."""
    app = await stage.publish("Forecast")
    approved = await stage.approve(app.id, ["prod - Duplicate"], ["Review"], PromotionS3Versioning=["True"])

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_failed() and NOT_ON_PROD in (state.message or ""), state.message
    assert await stage.apps("prod") == []
    assert s3_versions(stage) == []
    (source,) = await stage.apps("source")
    assert (source.id, source.published) == (app.id, True)
    assert source.stream is not None and source.stream.id == stage.world.sales_stream_id
    results = mail_text(stage, "[qs-promoter] Promotion incomplete")
    assert "0 of 1 site(s) succeeded" in results
    assert f"Failed: {NOT_ON_PROD}" in results and "Stream Review does not exist on this site" in results
    assert "Versioned in S3" not in results
    rows = await artifact_rows(f"promotion-{app.id}")
    assert any(r["site"] == "prod" and r["result"].startswith("failed: none of the") for r in rows), rows
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(approved, stage.settings)) == "failed"
        (promotion,) = ledger.promotions()
        (prod,) = ledger.site_results(promotion.id)
    assert (promotion.status, promotion.s3_key, promotion.s3_version_id) == ("failed", None, None)
    assert (prod.site, prod.status, prod.streams) == ("prod", "failed", ())
    assert NOT_ON_PROD in prod.error


async def test_one_site_without_the_stream_keeps_the_source_published_until_a_retry_finishes_it(
    stage: Stage,
) -> None:
    """Approved to Review on test and prod (prod lacks it): test is promoted and versioned once, the
    source stays published; re-runs do not version again. Once an admin creates Review on prod, the
    next run promotes prod only, unpublishes the source, and the one S3 version stays the only one."""
    app = await stage.publish("Forecast")
    await stage.approve(
        app.id, ["test - Duplicate", "prod - Duplicate"], ["Review"], PromotionS3Versioning=["True"]
    )

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_failed() and NOT_ON_PROD in (state.message or ""), state.message
    assert [(a.name, a.stream.name if a.stream else None) for a in await stage.apps("test")] == [
        ("Forecast", "Review")
    ]
    (source,) = await stage.apps("source")
    assert (source.id, source.published) == (app.id, True)
    (version,) = s3_versions(stage)
    assert "1 of 2 site(s) succeeded" in mail_text(stage, "[qs-promoter] Promotion incomplete")

    await handle_app_change(app.id, "updated", return_state=True)  # prod still lacks Review
    assert [v["VersionId"] for v in s3_versions(stage)] == [version["VersionId"]]

    async with QrsClient.for_site(stage.settings, "prod") as prod:
        await prod.create_entity("stream", {"name": "Review"})  # as an admin would in the QMC
    await handle_app_change(app.id, "updated")

    assert [(a.name, a.stream.name if a.stream else None) for a in await stage.apps("prod")] == [
        ("Forecast", "Review")
    ]
    assert len(await stage.apps("test")) == 1
    (left,) = await stage.apps("source")
    assert (left.id != app.id, left.published) == (True, False)
    assert [v["VersionId"] for v in s3_versions(stage)] == [version["VersionId"]]
    assert "2 of 2 site(s) succeeded" in mail_text(stage, "[qs-promoter] Promoted")
    (promoted,) = await stage.apps("prod")
    assert f"S3 version {version['VersionId']}" in (promoted.description or "")
