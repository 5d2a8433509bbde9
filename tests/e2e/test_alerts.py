"""Publish alerts end to end: publishing to a stream with EmailAlertOnPublishTo emails its approvers, once."""

from __future__ import annotations

from promoter.flows.handle import handle_app_change
from promoter.sandbox.world import MANAGER
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


async def test_publishing_to_sales_alerts_its_approvers_once(stage: Stage) -> None:
    """A publish to Sales emails the stream's approver with the hub link; the same publish handled again
    sends nothing more, and nothing is promoted."""
    app = await stage.publish("Quarterly Review")

    first = await handle_app_change(app.id, "published")
    second = await handle_app_change(app.id, "published")

    (alert,) = [received.message for received in stage.smtp.wait_for(1)]
    assert str(alert["To"]) == MANAGER.email
    assert str(alert["Subject"]) == '[qs-promoter] Published for review: "Quarterly Review" in Sales'
    assert stage.settings.source_site.hub_link(app.id) in alert.get_body(("plain",)).get_content()
    assert second.startswith("already handled") and not first.startswith("already handled")
    assert len(stage.smtp.messages) == 1
    assert (await stage.apps("test"), await stage.apps("prod")) == ([], [])
    with stage.ledger() as ledger:
        assert [e.kind for e in ledger.emails()] == ["publish-alert"]
