"""S3 versioning end to end: the promoted app (without data) is kept as an S3 version named by its id."""

from __future__ import annotations

from promoter.flows.handle import handle_app_change
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


async def test_a_versioned_promotion_stores_the_app_without_data_and_names_the_version(stage: Stage) -> None:
    """PromotionS3Versioning True: one S3 version under a key holding the app id, smaller than the app
    (exported without data); its version id is in the target's description and the results email."""
    file = stage.app_file(256 * 1024, seed="versioned")
    app = await stage.publish("Margins", file)
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], PromotionS3Versioning=["True"])

    await handle_app_change(app.id, "updated")

    s3 = stage.s3.client()
    listed = s3.list_object_versions(Bucket=stage.settings.versioning.bucket)
    (version,) = listed["Versions"]
    assert str(app.id) in version["Key"] and version["Key"].endswith(".qvf")
    assert 0 < version["Size"] < file.stat().st_size
    (promoted,) = await stage.apps("test")
    assert f"S3 version {version['VersionId']}" in (promoted.description or "")
    results = next(m for m in stage.mails() if str(m["Subject"]).startswith("[qs-promoter] Promoted"))
    assert version["VersionId"] in results.get_body(("plain",)).get_content()
    with stage.ledger() as ledger:
        (promotion,) = ledger.promotions()
    assert (promotion.s3_key, promotion.s3_version_id) == (version["Key"], version["VersionId"])
