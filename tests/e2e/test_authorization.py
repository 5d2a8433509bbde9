"""Authorization end to end: an approval set by someone without CanPromote promotes nothing."""

from __future__ import annotations

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.sandbox.world import REP
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
