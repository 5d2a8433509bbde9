"""The original's emails end to end: who gets them, their subjects, the intended-targets email that a
quick promotion's results carry, and the publish alert that an early promotion must not swallow.

The original mails the app's owner only, with subjects that admins' mail rules match; qs-promoter does
the same by default, copies the approver when ``email.copy_approver`` is on, and writes the original's
subjects when ``email.subjects = "original"``. Its intended-targets and results emails came seconds
apart: a promotion that finishes within ``email.intended_targets_wait_seconds`` sends one results email
that says both; a slower one sends both, the intended targets while it still runs. A publish alert is
about the publish the webhook saw: an approval that promotes and unpublishes the app before the alert
run reads it does not cancel it.
"""

from __future__ import annotations

from email.message import EmailMessage

from promoter.flows.handle import handle_app_change
from promoter.sandbox.world import MANAGER, REP
from promoter.webhook.outbox import PendingChange
from promoter.webhook.relevance import qrs_relevance
from promoter.webhook.submitter import flow_parameters, idempotency_key
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


PUBLISH = r"^/qrs/app/[^/]+/publish$"


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


async def test_by_default_the_owner_alone_gets_the_approval_intended_and_results_emails(stage: Stage) -> None:
    """An approved promotion's emails go to the owner only, as the original did: the approver who
    set Approve is not copied. Quick, it sends two: the approval, and the results with the intended
    targets; the ledger records all three kinds as sent to the owner."""
    app = await stage.publish("Owner Only")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])

    await handle_app_change(app.id, "updated")

    received = stage.smtp.wait_for(2)
    assert [mail.rcpt_tos for mail in received] == [(REP.email,)] * 2
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

    received = stage.smtp.wait_for(3)  # approval, results (carrying the intended targets), denial
    assert [sorted(mail.rcpt_tos) for mail in received] == [sorted([REP.email, MANAGER.email])] * 3


async def test_original_subjects_are_the_originals_wording(stage: Stage) -> None:
    """email.subjects = "original": the publish alert, approval, intended-targets, results and denial
    emails carry the original's subjects, names quoted as it quoted them (the intended targets on
    their own here: no wait)."""
    stage.reconfigure(email={"subjects": "original", "intended_targets_wait_seconds": 0})
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


async def test_a_quick_promotion_sends_one_results_email_that_says_what_was_intended(stage: Stage) -> None:
    """Done before the intended-targets email is due, a promotion sends the approval and one results
    email: it lists the requested site, mode and streams, then where the app went, with the original's
    results subject. A second run of the same request sends nothing more."""
    stage.reconfigure(email={"subjects": "original", "intended_targets_wait_seconds": 600})
    app = await stage.publish("Quick One")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone", "Review"])

    await handle_app_change(app.id, "updated")
    again = await handle_app_change(app.id, "updated")

    approval, results = [received.message for received in stage.smtp.wait_for(2)]
    assert str(approval["Subject"]) == "'Quick One' promotion approved by: 'ACME\\manager'"
    assert str(results["Subject"]) == "'Quick One' promotion results"
    text = text_of(results)
    assert (
        text.index("Requested targets")
        < text.index("test (Duplicate): Everyone, Review")
        < text.index("Site test")
    )
    assert "Published in stream Everyone" in text
    assert again and len(stage.smtp.messages) == 2  # (the unpublished app is gone: nothing to send)
    with stage.ledger() as ledger:
        assert sorted(e.kind for e in ledger.emails()) == ["approval", "intended", "results"]


async def test_a_slow_promotion_sends_the_intended_targets_while_it_runs_then_the_results(
    stage: Stage,
) -> None:
    """A promotion still running when the intended-targets email is due (the target site takes
    3 s to publish; the wait is 0.5 s) sends it then, before the results; the results email does
    not repeat it. Three emails, as the original sent them."""
    stage.reconfigure(email={"intended_targets_wait_seconds": 0.5})
    stage.site("test").add_fault("latency", method="PUT", path=PUBLISH, seconds=3.0)
    app = await stage.publish("Slow One")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])

    await handle_app_change(app.id, "updated")

    received = [mail.message for mail in stage.smtp.wait_for(3)]
    subjects = [str(message["Subject"]) for message in received]
    assert subjects == [
        '[qs-promoter] Approved: "Slow One"',
        '[qs-promoter] Promotion requested: "Slow One"',
        '[qs-promoter] Promoted: "Slow One"',
    ]
    assert "test (Duplicate): Everyone" in text_of(received[1])
    assert "Requested targets" not in text_of(received[2])
    assert [a.name for a in await stage.apps("test")] == ["Slow One"]


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
