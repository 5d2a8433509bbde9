"""Emails end to end with hostile names and untidy addresses: nothing forged, nothing failed for want of one.

An app named with encoded words reaches every email kind as text; an owner's email attribute with two
addresses, none, or a bad approver entry in the settings never fails the promotion or the alert: the
bad parts are skipped with a warning in the run log, and an email with nobody to go to is not sent.
"""

from __future__ import annotations

import logging
from email import policy
from email.parser import BytesParser
from uuid import UUID

import pytest

from promoter.flows.handle import handle_app_change
from promoter.qrs.client import QrsClient
from promoter.qrs.models import CustomPropertyValue
from promoter.sandbox.world import GROUP, MANAGER, REP, Person, add_user
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage
from tests.security.email_wire import HEADERS

pytestmark = IN_PROCESS_FLOWS

FORGING_NAME = "Q3=?utf-8?q?=0D=0ABcc=3A_rep=40evil.example=0D=0AReply-To=3A_rep=40evil.example?="


async def add_person(stage: Stage, person: Person, *, may_promote: bool = False) -> UUID:
    """A user on the source site with ``person.email`` as the email attribute, as a directory sync makes
    one; ``may_promote`` gives CanPromote and the Sales_Admin group, like the manager."""
    definitions = stage.world.definitions
    custom = (
        [
            CustomPropertyValue(value="True", definition=definitions["CanPromote"]),
            CustomPropertyValue(value=GROUP, definition=definitions["CanPromoteGroup"]),
        ]
        if may_promote
        else []
    )
    async with QrsClient.for_site(stage.settings, "source") as qrs:
        return await add_user(qrs, person, custom)


async def test_an_app_named_with_encoded_words_forges_no_header_in_any_email(stage: Stage) -> None:
    """The publish alert, approval, intended-targets and results emails of an app whose name decodes to
    "\\r\\nBcc: ...\\r\\nReply-To: ..." arrive with exactly our headers, to exactly our people, and
    show the name as the text it is."""
    stage.reconfigure(email={"intended_targets_wait_seconds": 0})  # each of the four on its own
    app = await stage.publish(FORGING_NAME)
    await handle_app_change(app.id, "published")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])

    await handle_app_change(app.id, "updated")

    received = stage.smtp.wait_for(4)
    assert len(received) == 4
    for mail in received:
        message = BytesParser(policy=policy.default).parsebytes(mail.raw)
        assert list(message.keys()) == HEADERS
        assert set(mail.rcpt_tos) <= {REP.email, MANAGER.email}
        assert {a.addr_spec for a in message["To"].addresses} == set(mail.rcpt_tos)
        assert f'"{FORGING_NAME}"' in str(message["Subject"])
    assert [a.name for a in await stage.apps("test")] == [FORGING_NAME]


async def test_an_owner_with_two_addresses_gets_every_email_at_both(stage: Stage) -> None:
    """An email attribute "pat@...; pat.dev@..." is two addresses: the approval, intended-targets and
    results emails go to both (to the owner only, as in the original), and the app is promoted."""
    stage.reconfigure(email={"intended_targets_wait_seconds": 0})  # each of the three on its own
    pat = Person("ACME", "pat", "Pat Two", "pat@acme.example; Pat Dev <pat.dev@acme.example>")
    await add_person(stage, pat)
    app = await stage.publish("Two Addresses", person=pat)
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])

    await handle_app_change(app.id, "updated")

    assert [a.name for a in await stage.apps("test")] == ["Two Addresses"]
    received = stage.smtp.wait_for(3)
    assert [sorted(mail.rcpt_tos) for mail in received] == [
        sorted(["pat@acme.example", "pat.dev@acme.example"])
    ] * 3


async def test_an_owner_without_an_address_who_approves_is_promoted_without_email(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    """An owner who may promote approves their own app and has an empty email attribute: the app is
    promoted, no email is sent (nobody to send it to), and the run log says why."""
    lead = Person("ACME", "lead", "Lee Lead", "")
    await add_person(stage, lead, may_promote=True)
    app = await stage.publish("No Address", person=lead)
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"], by=lead)
    caplog.set_level(logging.WARNING)

    await handle_app_change(app.id, "updated")

    assert [a.name for a in await stage.apps("test")] == ["No Address"]
    assert stage.smtp.messages == []
    with stage.ledger() as ledger:
        assert ledger.emails() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "owner ACME\\lead (user attribute 'email'): no email address; nobody is emailed there" in warnings
    assert "no valid recipient address for the approval email: not sent" in warnings


async def test_a_bad_approver_entry_does_not_stop_the_publish_alert(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    """stream_approvers holds a typo and a list: the alert goes to every valid address, and the
    typo is named in a warning."""
    sales = str(stage.world.sales_stream_id)
    entries = ["morgan.manager(at)acme.example", f"{MANAGER.email}; deputy@acme.example"]
    stage.reconfigure(email={"stream_approvers": {sales: entries}})
    app = await stage.publish("Alerted Anyway")
    caplog.set_level(logging.WARNING)

    outcome = await handle_app_change(app.id, "published")

    (alert,) = stage.smtp.wait_for(1)
    assert not outcome.startswith("already handled")
    assert alert.rcpt_tos == (MANAGER.email, "deputy@acme.example")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "stream_approvers of stream Sales: 'morgan.manager(at)acme.example' is not an email address; skipped"
        in warnings
    )
