"""Sending email through a real SMTP server (the aiosmtpd sandbox): TLS, AUTH, and errors without secrets."""

from __future__ import annotations

import pickle
import smtplib
import socket
import ssl
import traceback
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import SecretStr

from promoter.errors import MailError
from promoter.mail_messages import AppSummary, render_approval, render_publish_alert, render_test_mail
from promoter.mail_sending import check_login, send
from promoter.sandbox.smtp import SmtpSandbox
from promoter.settings import EmailSettings
from tests.fixtures.smtp import SMTP_PASSWORD, SMTP_USER
from tests.security.email_wire import HEADERS

pytestmark = pytest.mark.e2e

APP = AppSummary(
    "6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f",
    "Sales KPIs",
    "Bob Owner",
    "Sales",
    "https://qlik.example.com/sense/app/6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f",
)


def approval(sender: str, to: str = "owner@example.com") -> EmailMessage:
    return render_approval(APP, approver="Mary Manager", sender=sender, to=[to])


def test_message_arrives_over_starttls_with_auth_and_headers_intact(smtp_server: SmtpSandbox) -> None:
    """Over STARTTLS with AUTH the message arrives once, encrypted, from our user, with our headers."""
    settings = smtp_server.settings()
    message = approval(settings.sender)

    send(message, settings)

    [received] = smtp_server.wait_for(1)
    assert (received.user, received.tls, received.rcpt_tos) == (SMTP_USER, True, ("owner@example.com",))
    for header in ("Subject", "From", "To", "Message-ID", "Date", "X-Qlik-App-Id", "Auto-Submitted"):
        assert str(received.message[header]).strip() == str(message[header]).strip()
    assert received.message.get_body(("html",)) is not None


def test_hostile_app_name_does_not_add_recipients_or_headers(smtp_server: SmtpSandbox) -> None:
    """An app name carrying "\\r\\nBcc: ..." reaches only the intended recipient, with no extra header."""
    settings = smtp_server.settings()
    hostile = AppSummary(APP.app_id, "Sales\r\nBcc: thief@evil.example\r\n\r\n<b>x</b>", "Bob", "S", APP.link)

    send(render_publish_alert(hostile, sender=settings.sender, to=["mgr@example.com"]), settings)

    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ("mgr@example.com",)
    assert "Bcc" not in received.message
    header_block = received.raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc") for line in header_block.split(b"\r\n"))


def test_encoded_words_in_names_arrive_as_text_not_as_headers(smtp_server: SmtpSandbox) -> None:
    """Through a real SMTP conversation: an app name and an owner's display name made of encoded words
    that decode to "\\r\\nBcc: ..." arrive as text, with exactly our headers and recipients."""
    settings = smtp_server.settings(sender="Qlik promotions <qs-promoter@sandbox.test>")
    name = "Q3=?utf-8?q?=0D=0ABcc=3A_rep=40evil.example=0D=0AReply-To=3A_rep=40evil.example?="
    owner = "=?utf-8?q?Pat=0D=0ABcc:_x@evil.example?= <owner@example.com>"
    hostile = AppSummary(APP.app_id, name, "Bob", "Sales", APP.link)

    send(
        render_approval(hostile, approver="Mary", sender=settings.sender, to=[owner, "mgr@example.com"]),
        settings,
    )

    [received] = smtp_server.wait_for(1)
    message = received.message
    assert (received.mail_from, received.rcpt_tos) == (
        "qs-promoter@sandbox.test",
        ("owner@example.com", "mgr@example.com"),
    )
    assert list(message.keys()) == HEADERS
    assert str(message["Subject"]) == f'[qs-promoter] Approved: "{name}"'
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ("=?utf-8?q?Pat=0D=0ABcc:_x@evil.example?=", "owner@example.com"),
        ("", "mgr@example.com"),
    ]
    assert [(a.display_name, a.addr_spec) for a in message["From"].addresses] == [
        ("Qlik promotions", "qs-promoter@sandbox.test")
    ]


def test_a_message_without_recipients_is_not_sent(smtp_server: SmtpSandbox) -> None:
    """A message with no recipient (its owner has no address) is a MailError before any connection."""
    settings = smtp_server.settings()

    with pytest.raises(MailError, match="no recipient") as caught:
        send(render_approval(APP, approver="Mary", sender=settings.sender, to=[]), settings)

    assert (caught.value.step, caught.value.transient, smtp_server.messages) == ("send", False, [])


def test_wrong_password_is_a_mail_error_without_the_password(smtp_server: SmtpSandbox) -> None:
    """A rejected login is a MailError at the login step, with neither the wrong nor the right password."""
    wrong = "Wr0ng-Secret-Value-123"
    settings = smtp_server.settings(password=SecretStr(wrong))

    with pytest.raises(MailError) as caught:
        send(approval(settings.sender), settings)

    error = caught.value
    assert (error.step, error.transient) == ("login", False)
    assert "535" in str(error)
    printed = "".join(traceback.format_exception(error))  # what a log would show
    for secret in (wrong, SMTP_PASSWORD):
        assert secret not in printed and secret not in repr(error)
    assert smtp_server.messages == []


def test_untrusted_server_certificate_is_refused(smtp_server: SmtpSandbox) -> None:
    """Without the sandbox CA, the server certificate is not trusted and nothing is sent."""
    settings = smtp_server.settings(ca_file=None)

    with pytest.raises(MailError, match="not trusted") as caught:
        send(approval(settings.sender), settings)

    assert caught.value.step == "STARTTLS"
    assert smtp_server.messages == []


def test_relay_refuses_mail_without_login(smtp_server: SmtpSandbox) -> None:
    """Like a company relay, the sandbox refuses MAIL before AUTH; the error quotes its 530 answer."""
    settings = smtp_server.settings(username=None, password=None)

    with pytest.raises(MailError, match="530") as caught:
        send(approval(settings.sender), settings)

    assert (caught.value.step, caught.value.transient) == ("send", False)


def test_disabled_email_sends_nothing(smtp_server: SmtpSandbox) -> None:
    """With email disabled, send() returns without connecting."""
    settings = smtp_server.settings(enabled=False)

    send(approval(settings.sender), settings)

    assert smtp_server.messages == []


def test_check_login_succeeds_with_the_right_password_and_fails_with_a_wrong_one(
    smtp_server: SmtpSandbox,
) -> None:
    """check_login() (for doctor) logs in without sending; a wrong password is a MailError."""
    check_login(smtp_server.settings())

    with pytest.raises(MailError, match="login failed"):
        check_login(smtp_server.settings(password=SecretStr("nope-nope")))
    assert smtp_server.messages == []


def test_implicit_tls_with_auth(tmp_path: Path) -> None:
    """security = "tls" (SMTPS, usually port 465) sends over TLS from the first byte, with AUTH."""
    with SmtpSandbox(security="tls", username="u", password="p-455", folder=tmp_path) as server:
        settings = server.settings()

        send(render_test_mail(sender=settings.sender, to=["admin@example.com"]), settings)

        [received] = server.wait_for(1)
    assert (received.user, received.tls) == ("u", True)


def test_plain_relay_without_tls_or_auth(tmp_path: Path) -> None:
    """security = "none" talks plain SMTP to a relay that needs no login."""
    with SmtpSandbox(security="none", username=None, password=None, folder=tmp_path) as server:
        settings = server.settings()

        send(render_test_mail(sender=settings.sender, to=["admin@example.com"]), settings)

        [received] = server.wait_for(1)
    assert (received.user, received.tls) == (None, False)


def test_sandbox_offers_auth_only_after_starttls(smtp_server: SmtpSandbox) -> None:
    """As real servers do, AUTH is advertised only once the connection is encrypted."""
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.ehlo()
        before = client.has_extn("auth")
        client.starttls(context=ssl.create_default_context(cafile=str(smtp_server.ca_file)))
        client.ehlo()
        after = client.has_extn("auth")

    assert (before, after) == (False, True)


def test_no_server_listening_is_a_transient_error() -> None:
    """Nothing listening on the port: MailError at the connect step, marked transient (retry later)."""
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = EmailSettings(
        enabled=True, smtp_host="127.0.0.1", smtp_port=port, security="none", timeout_seconds=5
    )

    with pytest.raises(MailError) as caught:
        send(render_test_mail(sender=dead.sender, to=["admin@example.com"]), dead)

    assert (caught.value.step, caught.value.transient) == ("connect", True)


def test_mail_error_survives_pickling() -> None:
    """Prefect pickles a failed task's exception: a MailError comes back with its step and transient flag."""
    error = MailError("smtp.example.com:587", "login", "user or password not accepted", transient=True)

    back = pickle.loads(pickle.dumps(error))

    assert (type(back), str(back), back.step, back.transient) == (MailError, str(error), "login", True)
