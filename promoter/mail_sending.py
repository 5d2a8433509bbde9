"""Send the rendered emails through the configured SMTP server (plain, STARTTLS or implicit TLS, AUTH).

Blocking smtplib on purpose: one short conversation per email; an async task runs it in a
thread. Every failure becomes a ``MailError`` that names the server and the step, and never
carries the password (it is removed from server answers too, in clear and base64 form).
"""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from email.message import EmailMessage

from promoter.errors import MailError
from promoter.mail_headers import recipients
from promoter.settings import EmailSettings
from promoter.tls_contexts import reused

log = logging.getLogger(__name__)


def send(message: EmailMessage, settings: EmailSettings) -> None:
    """Deliver one message to the addresses in its To and Cc headers; a no-op when email is disabled.

    The envelope names exactly ``mail_headers.recipients(message)``, the addresses the ledger records, and
    not what smtplib would read again from the header text.
    """
    if not settings.enabled:
        log.debug("email disabled; not sending %r", message["Subject"])
        return
    if not recipients(message):
        server = f"{settings.smtp_host}:{settings.smtp_port}"
        raise MailError(server, "send", "the message has no recipient address")
    _converse(settings, message)


def check_login(settings: EmailSettings) -> None:
    """Connect, secure and log in as ``send`` would, without sending (ignores ``enabled``; for `doctor`)."""
    _converse(settings, None)


def smtp_tls_context(settings: EmailSettings) -> ssl.SSLContext:
    """Verify the SMTP server's certificate: against ``ca_file`` when set, else the system's CAs."""
    ca_file = settings.ca_file
    if ca_file is not None:
        return reused([ca_file], "smtp", lambda: ssl.create_default_context(cafile=str(ca_file)))
    return reused([], "smtp", ssl.create_default_context)


def _converse(settings: EmailSettings, message: EmailMessage | None) -> None:
    server = f"{settings.smtp_host}:{settings.smtp_port}"
    step = "TLS setup"
    try:
        tls = smtp_tls_context(settings) if settings.security != "none" else None
        step = "connect"
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds, context=tls
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds)
        with smtp:
            step = "EHLO"
            smtp.ehlo()
            if settings.security == "starttls":
                step = "STARTTLS"
                smtp.starttls(context=tls)
                smtp.ehlo()
            if settings.username:
                step = "login"
                password = settings.password.get_secret_value() if settings.password else ""
                smtp.login(settings.username, password)
            if message is None:
                step = "NOOP"
                smtp.noop()
                return
            step = "send"
            refused = smtp.send_message(message, to_addrs=recipients(message))
        if refused:
            # The others got it: raising would make a retry send it to them twice.
            log.warning("%s refused some recipients of %r: %s", server, message["Subject"], sorted(refused))
    except MailError:
        raise
    except Exception as exc:
        raise _mail_error(server, step, exc, settings) from None


def _mail_error(server: str, step: str, exc: Exception, settings: EmailSettings) -> MailError:
    """Say what went wrong in an admin's words, and whether trying again later can help."""
    code: int | None = None
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        answers = {addr: _answer(c, m) for addr, (c, m) in exc.recipients.items()}
        reason = "all recipients refused: " + "; ".join(f"{a} ({r})" for a, r in sorted(answers.items()))
        transient = bool(exc.recipients) and all(400 <= c < 500 for c, _ in exc.recipients.values())
    elif isinstance(exc, smtplib.SMTPAuthenticationError):
        reason, transient = f"user or password not accepted ({_answer(exc.smtp_code, exc.smtp_error)})", False
    elif isinstance(exc, smtplib.SMTPNotSupportedError):
        reason, transient = f"the server does not support it ({exc})", False
    elif isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        reason, transient = f"server answered {_answer(code, exc.smtp_error)}", 400 <= code < 500
    elif isinstance(exc, smtplib.SMTPServerDisconnected):
        reason, transient = f"the server closed the connection ({exc})", True
    elif isinstance(exc, ssl.SSLCertVerificationError):
        reason, transient = f"server certificate not trusted ({exc.verify_message}); see ca_file", False
    elif isinstance(exc, ssl.SSLError):
        reason, transient = f"TLS failed ({exc.reason or exc})", False
    elif isinstance(exc, FileNotFoundError) and step == "TLS setup":
        reason, transient = f"ca_file not found: {settings.ca_file}", False
    elif isinstance(exc, TimeoutError):
        reason, transient = f"no answer within {settings.timeout_seconds:g} s", True
    elif isinstance(exc, OSError):
        reason, transient = f"{exc.strerror or exc}", True
    else:
        reason, transient = f"{type(exc).__name__}: {exc}", False
    return MailError(server, step, _redact(reason, settings), transient=transient)


def _answer(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return f"{code} {' '.join(text.split())}"[:300]


def _redact(text: str, settings: EmailSettings) -> str:
    """Remove the password from a server answer, also as AUTH PLAIN/LOGIN would have encoded it."""
    password = settings.password.get_secret_value() if settings.password else ""
    if not password:
        return text
    user = settings.username or ""
    forms = {
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "[redacted]")
    return text
