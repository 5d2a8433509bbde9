"""Denials end to end: the owner is told, and the app is unpublished or, if so configured, only stripped."""

from __future__ import annotations

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.sandbox.world import REP
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS

PROMOTION_PROPERTIES = {"PromoteToServer", "PromoteToStream", "PromotionApproval"}


async def test_a_denied_app_is_unpublished_back_to_its_owner(stage: Stage) -> None:
    """Deny (unpublish.auto on): nothing is promoted, the owner gets an unpublished copy, the published
    app is gone, and the owner receives the denial."""
    app = await stage.publish("Forecast")
    denied = await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], verdict="Deny")

    await handle_app_change(app.id, "updated")

    on_dev = await stage.apps("source")
    assert [(a.name, a.published, a.owner.user_id) for a in on_dev] == [("Forecast", False, REP.user_id)]
    assert on_dev[0].id != app.id
    assert await stage.apps("test") == []
    (denial,) = stage.mails()
    assert (str(denial["Subject"]), REP.email in str(denial["To"])) == (
        '[qs-promoter] Denied: "Forecast"',
        True,
    )
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(denied, stage.settings)) == "denied"


async def test_without_auto_unpublish_a_denied_app_stays_published_without_its_properties(
    stage: Stage,
) -> None:
    """Deny with unpublish.auto = false and no PromotionUnpublish: the app stays published in Sales,
    its promotion properties are removed, and the owner is told."""
    stage.reconfigure(unpublish={"auto": False})
    app = await stage.publish("Forecast")
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], verdict="Deny")

    await handle_app_change(app.id, "updated")

    (same,) = await stage.apps("source")
    assert (same.id, same.published, same.stream.id if same.stream else None) == (
        app.id,
        True,
        stage.world.sales_stream_id,
    )
    assert not PROMOTION_PROPERTIES & {cp.definition.name for cp in same.custom_properties}
    assert [str(m["Subject"]) for m in stage.mails()] == ['[qs-promoter] Denied: "Forecast"']
