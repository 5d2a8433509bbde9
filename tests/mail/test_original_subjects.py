"""The original's subjects (email.subjects = "original"): their exact text; names cannot forge a header.

The subjects still reach the message only through mail_headers.EncodedText, so the hostile names that
test_email_headers.py throws at our own wording arrive here, too, as the text they are.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from email import message_from_bytes, policy
from email.generator import BytesGenerator
from email.message import EmailMessage

import pytest

from promoter.mail_headers import clip
from promoter.mail_messages import (
    SUBJECT_NAME_LIMIT,
    AppSummary,
    IntendedTarget,
    SiteReport,
    render_approval,
    render_denial,
    render_intended_targets,
    render_promotion_results,
    render_publish_alert,
)
from tests.security.email_wire import APP_ID, HEADERS, HOSTILE_NAMES

SENDER = "Qlik promotions <qs-promoter@example.com>"
OWNER = "owner@example.com"

Render = Callable[[AppSummary, str], EmailMessage]

# kind -> (render with the original's subjects, the subject it must carry for app name N, approver A)
KINDS: dict[str, tuple[Render, str]] = {
    "publish alert": (
        lambda app, _by: render_publish_alert(app, sender=SENDER, to=[OWNER], subjects="original"),
        "'{N}' published to: '{S}'",
    ),
    "approval": (
        lambda app, by: render_approval(app, approver=by, sender=SENDER, to=[OWNER], subjects="original"),
        "'{N}' promotion approved by: '{A}'",
    ),
    "denial": (
        lambda app, by: render_denial(app, approver=by, sender=SENDER, to=[OWNER], subjects="original"),
        "'{N}' promotion denied by: '{A}'",
    ),
    "intended targets": (
        lambda app, _by: render_intended_targets(
            app,
            [IntendedTarget("test", ("Everyone",), "Overwrite")],
            sender=SENDER,
            to=[OWNER],
            subjects="original",
        ),
        "'{N}' promotion targets",
    ),
    "results": (
        lambda app, _by: render_promotion_results(
            app, [SiteReport("test", failures=("boom",))], sender=SENDER, to=[OWNER], subjects="original"
        ),
        "'{N}' promotion results",
    ),
}


def summary(name: str, stream: str = "Sales") -> AppSummary:
    return AppSummary(APP_ID, name, "Sam Rep", stream, f"https://qlik.example.com/sense/app/{APP_ID}")


def over_the_wire(message: EmailMessage) -> EmailMessage:
    """The message as smtplib writes it and a mail client parses it back."""
    out = io.BytesIO()
    BytesGenerator(out, policy=policy.SMTP).flatten(message)
    parsed = message_from_bytes(out.getvalue(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize("kind", KINDS)
def test_each_email_carries_the_originals_subject(kind: str) -> None:
    """With subjects="original", each email the original sent has its subject, word for word."""
    render, template = KINDS[kind]

    received = over_the_wire(render(summary("Sales Report"), "ACME\\morgan"))

    assert str(received["Subject"]) == template.format(N="Sales Report", S="Sales", A="ACME\\morgan")


def test_our_wording_stays_the_default() -> None:
    """Without the setting, the approval email keeps qs-promoter's own subject."""
    message = render_approval(summary("Sales Report"), approver="ACME\\morgan", sender=SENDER, to=[OWNER])

    assert str(over_the_wire(message)["Subject"]) == '[qs-promoter] Approved: "Sales Report"'


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_name_in_an_original_subject_forges_no_header(kind: str, name: str) -> None:
    """App, stream and approver names that decode to line breaks and headers stay text in the
    original's subjects: the message has exactly our headers, our one recipient, and the name cut
    to the subject limit on one line."""
    render, template = KINDS[kind]

    received = over_the_wire(render(summary(name, stream=name), name))

    assert list(received.keys()) == HEADERS
    assert [a.addr_spec for a in received["To"].addresses] == [OWNER]
    shown = clip(name, SUBJECT_NAME_LIMIT)
    assert str(received["Subject"]) == template.format(N=shown, S=shown, A=shown)
