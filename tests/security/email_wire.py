"""What a mail client receives from us: every email kind rendered, written as smtplib writes it, parsed back.

Standard library and promoter's mail modules only, so that test_email_headers.py can run this file under every
Python 3.11+ on the machine: ``PYTHONPATH=<repo> python tests/security/email_wire.py`` checks a fixed
set of hostile names and prints one JSON object, {"python": "3.x.y", "problems": [...]}.
"""

from __future__ import annotations

import io
import json
import platform
import unicodedata
from collections.abc import Callable, Sequence
from email import message_from_bytes, policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.utils import getaddresses

from promoter.mail_headers import one_line
from promoter.mail_messages import (
    SUBJECT_NAME_LIMIT,
    AppSummary,
    IntendedTarget,
    SiteReport,
    StreamOutcome,
    render_approval,
    render_denial,
    render_intended_targets,
    render_promotion_results,
    render_publish_alert,
    render_refused_approval,
)

SENDER = "Qlik promotions <qs-promoter@example.com>"
APP_ID = "6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f"
OWNER, APPROVER = "owner@example.com", "approver@example.com"
HEADERS = [
    "Subject",
    "From",
    "To",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "X-Qlik-App-Id",
    "MIME-Version",
    "Content-Type",
]
# The names of test_email_headers.py's fixed cases; the property tests there go much further.
HOSTILE_NAMES = [
    "Q3=?utf-8?q?=0D=0ABcc=3A_rep=40evil.example=0D=0AReply-To=3A_rep=40evil.example?=",
    "=?utf-8?b?DQpCY2M6IHJlcEBldmlsLmV4YW1wbGU=?= =?utf-8?Q?=0AReply-To:_x@evil.example?=",
    "Sales\r\nBcc: thief@evil.example\r\n\r\nbody",
    "Sales\nX-Injected: 1\rX-Other: 2\u2028X-Third: 3\x85X-Fourth: 4",
    '"Pat, \\"the\\" Owner" <spoof@evil.example>, other@evil.example',
    "Ventes 2024 — Überblick 数据 😀 " * 20,
    "=?" * 300,
]

Render = Callable[[AppSummary, str, Sequence[str]], EmailMessage]
KINDS: dict[str, Render] = {
    "publish alert": lambda app, who, to: render_publish_alert(app, sender=SENDER, to=to),
    "approval": lambda app, who, to: render_approval(app, approver=who, sender=SENDER, to=to),
    "denial": lambda app, who, to: render_denial(app, approver=who, reason=who, sender=SENDER, to=to),
    "intended targets": lambda app, who, to: render_intended_targets(
        app, [IntendedTarget(who, (who, "Review"), "Overwrite")], sender=SENDER, to=to
    ),
    "promotion results": lambda app, who, to: render_promotion_results(
        app,
        [
            SiteReport(who, streams=(StreamOutcome(who, APP_ID, "published"),), missing_streams=(who,)),
            SiteReport("prod", failures=(who,)),
        ],
        sender=SENDER,
        to=to,
        s3_key=who,
        s3_version_id="v-1",
    ),
    "refused approval": lambda app, who, to: render_refused_approval(
        app, approver=who, reason=who, sender=SENDER, to=to
    ),
}


def as_smtplib_writes_it(message: EmailMessage) -> bytes:
    """The bytes smtplib.send_message puts after DATA: a BytesGenerator with CRLF line ends."""
    with io.BytesIO() as out:
        BytesGenerator(out).flatten(message, linesep="\r\n")
        return out.getvalue()


def shown_in_subject(name: str) -> str:
    """The name as the Subject shows it: on one line, clipped with an ellipsis."""
    text = one_line(name)
    return text if len(text) <= SUBJECT_NAME_LIMIT else text[: SUBJECT_NAME_LIMIT - 1] + "…"


def with_display_name(name: str, address: str) -> str:
    """``name`` as the display name of ``address``, quoted as an email attribute would quote it."""
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


def problems(kind: str, name: str) -> list[str]:
    """Render ``kind`` with ``name`` as app, stream, owner, approver and owner's display name; write it,
    parse it back as a mail client would, and say what differs from the email we meant to send."""
    app = AppSummary(APP_ID, name, name, name, f"https://qlik.example.com/sense/app/{APP_ID}")
    message = KINDS[kind](app, name, [with_display_name(name, OWNER), APPROVER])
    raw = as_smtplib_writes_it(message)
    received = message_from_bytes(raw, policy=policy.default)
    found: list[str] = []
    if list(received.keys()) != HEADERS:
        found.append(f"headers {list(received.keys())}")
    # smtplib.send_message reads the envelope from the header objects' text, this way.
    envelope = [[a for _, a in getaddresses([str(message[field])])] for field in ("To", "From")]
    if envelope != [[OWNER, APPROVER], ["qs-promoter@example.com"]]:
        found.append(f"envelope {envelope}")
    if [a.addr_spec for a in received["To"].addresses] != [OWNER, APPROVER]:
        found.append(f"To {received['To']!r}")
    if [a.addr_spec for a in received["From"].addresses] != ["qs-promoter@example.com"]:
        found.append(f"From {received['From']!r}")
    owner_name = received["To"].addresses[0].display_name
    if _controls(owner_name) or not one_line(name).startswith(owner_name.removesuffix("…")):
        found.append(f"display name {owner_name!r}")
    subject = str(received["Subject"])
    if _controls(subject) or f'"{shown_in_subject(name)}"' not in subject:
        found.append(f"Subject {subject!r}")
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    if any(len(line) > 998 for line in header_block.split(b"\r\n")) or not header_block.isascii():
        found.append("a header line is too long or not ASCII")
    return [f"{kind}: {problem}" for problem in found]


def _controls(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text)


def main() -> None:
    found = [problem for kind in KINDS for name in HOSTILE_NAMES for problem in _checked(kind, name)]
    print(json.dumps({"python": platform.python_version(), "problems": found}))


def _checked(kind: str, name: str) -> list[str]:
    # An interpreter that refuses to write the message (HeaderWriteError) fails the promotion: a problem.
    try:
        return problems(kind, name)
    except Exception as exc:
        return [f"{kind}: {type(exc).__name__}: {exc}"]


if __name__ == "__main__":
    main()
