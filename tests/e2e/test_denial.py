"""Denials end to end: the owner is told, and the app is unpublished or, if so configured, only stripped."""

from __future__ import annotations

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.sandbox.world import MANAGER, REP, set_properties
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


async def test_a_deny_by_a_user_without_can_promote_changes_nothing(stage: Stage) -> None:
    """The rep (no CanPromote) sets Deny on the manager's published app: it stays published with the same
    id and its properties, no copy is made, the ledger says "refused", and the denial's refusal is emailed
    to the owner and the rep."""
    app = await stage.publish("Forecast", person=MANAGER)
    denied = await set_properties(stage.settings, REP, app.id, stage.world, {"PromotionApproval": ["Deny"]})

    reason = await handle_app_change(app.id, "updated")

    (same,) = await stage.apps("source")
    assert (same.id, same.published, same.stream.id if same.stream else None) == (
        app.id,
        True,
        stage.world.sales_stream_id,
    )
    assert [cp.value for cp in same.custom_properties] == ["Deny"]
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(denied, stage.settings)) == "refused", reason
    (refusal,) = stage.mails()
    assert str(refusal["Subject"]) == '[qs-promoter] Denial refused: "Forecast"'
    assert MANAGER.email in str(refusal["To"]) and REP.email in str(refusal["To"])
    assert "ACME\\rep does not have CanPromote" in refusal.get_body(("plain",)).get_content()
