"""The original's emails end to end: who gets them, their subjects, and the publish alert that an early
promotion must not swallow.

The original mails the app's owner only, with subjects that admins' mail rules match; qs-promoter does
the same by default, copies the approver when ``email.copy_approver`` is on, and writes the original's
subjects when ``email.subjects = "original"``. A publish alert is about the publish the webhook saw:
an approval that promotes and unpublishes the app before the alert run reads it does not cancel it.
"""

from __future__ import annotations

from promoter.flows.handle import handle_app_change
from promoter.sandbox.world import MANAGER, REP
from promoter.webhook.outbox import PendingChange
from promoter.webhook.relevance import qrs_relevance
from promoter.webhook.submitter import flow_parameters, idempotency_key
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


async def test_by_default_the_owner_alone_gets_the_approval_intended_and_results_emails(stage: Stage) -> None:
    """An approved promotion sends its three emails to the owner only, as the original did: the
    approver who set Approve is not copied."""
    app = await stage.publish("Owner Only")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])

    await handle_app_change(app.id, "updated")

    received = stage.smtp.wait_for(3)
    assert [mail.rcpt_tos for mail in received] == [(REP.email,)] * 3
    with stage.ledger() as ledger:
        assert sorted((e.kind, tuple(e.recipients)) for e in ledger.emails()) == [
            ("approval", (REP.email,)),
            ("intended", (REP.email,)),
            ("results", (REP.email,)),
        ]


async def test_copy_approver_sends_the_approver_each_email_too(stage: Stage) -> None:
    """With email.copy_approver = true, the approval, intended-targets and results emails go to the
    owner and to the approver; a denial too."""
    stage.reconfigure(email={"copy_approver": True})
    approved = await stage.publish("Copied")
    denied = await stage.publish("Copied Denial")
    await stage.approve(approved.id, ["test - Duplicate"], ["Everyone"])
    await stage.approve(denied.id, ["test - Duplicate"], ["Everyone"], verdict="Deny")

    await handle_app_change(approved.id, "updated")
    await handle_app_change(denied.id, "updated")

    received = stage.smtp.wait_for(4)
    assert [sorted(mail.rcpt_tos) for mail in received] == [sorted([REP.email, MANAGER.email])] * 4


async def test_original_subjects_are_the_originals_wording(stage: Stage) -> None:
    """email.subjects = "original": the publish alert, approval, intended-targets, results and denial
    emails carry the original's subjects, names quoted as it quoted them."""
    stage.reconfigure(email={"subjects": "original"})
    approved = await stage.publish("Sales Report")
    denied = await stage.publish("Draft Report")
    await handle_app_change(approved.id, "published")
    await stage.approve(approved.id, ["test - Duplicate"], ["Everyone"])
    await stage.approve(denied.id, ["test - Duplicate"], ["Everyone"], verdict="Deny")

    await handle_app_change(approved.id, "updated")
    await handle_app_change(denied.id, "updated")

    stage.smtp.wait_for(5)
    assert stage.subjects() == sorted(
        [
            "'Sales Report' published to: 'Sales'",
            "'Sales Report' promotion approved by: 'ACME\\manager'",
            "'Sales Report' promotion targets",
            "'Sales Report' promotion results",
            "'Draft Report' promotion denied by: 'ACME\\manager'",
        ]
    )


async def test_a_publish_alert_goes_out_after_an_approval_unpublished_the_app(stage: Stage) -> None:
    """The webhook reads the publish (stream, publishTime) when the notification comes; an approval
    promotes and unpublishes the app before the alert run starts. The run still alerts the Sales
    approvers about that publish, says the app no longer exists, and a second run sends nothing more."""
    app = await stage.publish("Quick Approval")
    relevance = await qrs_relevance(stage.settings)(str(app.id), "published")
    change = PendingChange(str(app.id), "published", "", (1,), 0)
    parameters = flow_parameters(change, idempotency_key(change, relevance.modified_date), relevance)
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])
    await handle_app_change(app.id, "updated")
    assert app.id not in {a.id for a in await stage.apps("source")}  # unpublished: the copy has a new id
    stage.smtp.clear()

    first = await handle_app_change(**parameters)
    second = await handle_app_change(**parameters)

    (alert,) = [received.message for received in stage.smtp.wait_for(1)]
    assert parameters["published_to"] == str(stage.world.sales_stream_id)
    assert str(alert["To"]) == MANAGER.email
    assert str(alert["Subject"]) == f'[qs-promoter] Published for review: "app {app.id}" in Sales'
    assert "no longer exists on the source site" in alert.get_body(("plain",)).get_content()
    assert second.startswith("already handled") and not first.startswith("already handled")
    assert len(stage.smtp.messages) == 1
