"""Authorization end to end: only an allowed user's approval promotes, only to the targets they approved."""

from __future__ import annotations

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.sandbox.world import MANAGER, REP, set_properties
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


async def test_an_approval_by_a_user_without_can_promote_is_refused(stage: Stage) -> None:
    """The rep (no CanPromote) approves their own app: nothing reaches test, the app stays published
    with its properties, the refusal is emailed, and the ledger says "refused"."""
    app = await stage.publish("Pricing")
    approved = await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], by=REP)

    reason = await handle_app_change(app.id, "updated")

    assert await stage.apps("test") == []
    (same,) = await stage.apps("source")
    assert (same.id, same.published, len(same.custom_properties)) == (app.id, True, 3)
    (refusal,) = stage.mails()
    assert str(refusal["Subject"]) == '[qs-promoter] Approval refused: "Pricing"'
    assert "does not have CanPromote" in refusal.get_body(("plain",)).get_content()
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(approved, stage.settings)) == "refused", reason


async def test_targets_added_after_the_approval_are_not_promoted_until_it_is_given_again(
    stage: Stage,
) -> None:
    """The manager approves with no targets; later the rep adds "prod - Overwrite": nothing reaches prod,
    the ledger says "outdated", and the owner (and the manager) are told to approve again. Once the manager
    clears and sets Approve again, the app is promoted, approved by the manager."""
    app = await stage.publish("Pricing")
    await set_properties(stage.settings, MANAGER, app.id, stage.world, {"PromotionApproval": ["Approve"]})
    await handle_app_change(app.id, "updated")
    targets = {"PromoteToServer": ["prod - Overwrite"], "PromoteToStream": ["Everyone"]}
    late = await set_properties(stage.settings, REP, app.id, stage.world, targets)

    reason = await handle_app_change(app.id, "updated")

    assert await stage.apps("prod") == []
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(late, stage.settings)) == "outdated", reason
        assert ledger.promotions() == []
    (notice,) = stage.mails()
    assert str(notice["Subject"]) == '[qs-promoter] Approval outdated: "Pricing"'
    assert REP.email in str(notice["To"]) and MANAGER.email in str(notice["To"])
    text = notice.get_body(("plain",)).get_content()
    assert "PromoteToServer 'prod - Overwrite' by ACME\\rep" in text and "Approve again" in text

    await set_properties(stage.settings, MANAGER, app.id, stage.world, {"PromotionApproval": []})
    await handle_app_change(app.id, "updated")
    await set_properties(stage.settings, MANAGER, app.id, stage.world, {"PromotionApproval": ["Approve"]})
    await handle_app_change(app.id, "updated")

    assert [a.name for a in await stage.apps("prod")] == ["Pricing"]
    with stage.ledger() as ledger:
        assert [p.approver for p in ledger.promotions()] == [MANAGER.account]


async def test_the_approver_recorded_is_who_set_the_approve_value(stage: Stage) -> None:
    """The rep notes "Pending" in PromotionApproval first; the manager adds Approve beside it. The approval
    is the manager's: the app is promoted and the ledger and the target app name the manager."""
    app = await stage.publish("Pricing")
    await set_properties(stage.settings, REP, app.id, stage.world, {"PromotionApproval": ["Pending"]})
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], PromotionApproval=["Pending", "Approve"])

    reason = await handle_app_change(app.id, "updated")

    (promoted,) = await stage.apps("test")
    assert f"approved by {MANAGER.account}" in (promoted.description or ""), reason
    with stage.ledger() as ledger:
        assert [p.approver for p in ledger.promotions()] == [MANAGER.account]
