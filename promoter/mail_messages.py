"""Render the emails qs-promoter sends (publish alerts, approvals, denials, results) as EmailMessage objects.

Pure code: every function takes plain values and returns an ``email.message.EmailMessage``
(plain text plus an HTML alternative); ``promoter.mail_sending.send`` delivers it. App, stream and
user names are user input: they reach the HTML only through ``html.escape``, and a header only
through ``promoter.mail_headers``, which writes them as encoded words the email package never parses.

Callers adapt their data to the small frozen dataclasses below:

- ``AppSummary(app_id, name, owner_name, stream_name, link)``; ``link`` is
  ``SiteSettings.hub_link(app_id)`` (https://FQDN/sense/app/ID).
- ``IntendedTarget(site, streams, mode)`` for the "intended targets" email, and for the results
  email when that one carries it too (a promotion that finished within
  ``email.intended_targets_wait_seconds``: see ``promoter.tasks.mail.IntendedTargetsEmail``).
- ``SiteReport(site, streams=(StreamOutcome(stream, target_app_id, action, link), ...),
  missing_streams, failures, s3_version_id, backup_version_id)`` for the results email; ``link``
  is the target site's ``hub_link(target_app_id)``: the results email links each promoted app where
  it now lives, not the source app (which the same run may have unpublished or deleted).

The publish alert, approval, denial, intended-targets and results emails take ``subjects``:
``"qs-promoter"`` (ours, the default) or ``"original"``, the wording of the product we re-implement,
which mail rules in real mailboxes match (``'Sales Report' promotion approved by: 'ACME\\morgan'``).
The original had no intended-targets email of its own (its approval email listed the targets):
in its style that one is ``'<app>' promotion targets``.

Every ``render_*`` function takes the keyword arguments ``sender`` (an address, optionally
``"Name <address>"``) and ``to`` (``MailAddress`` values, or strings of one address each) and
raises ``ValueError`` when one of them is not a single valid address. Email attributes and
approver lists, which may hold several addresses or none, go through
``promoter.addresses.parse_addresses`` first. An email with no recipient at all has no To header,
and is not sent.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal, NamedTuple

from promoter.addresses import MailAddress, parse_address
from promoter.mail_headers import AddressField, EncodedText, clip, one_line

# Long app names (QRS allows 255 characters) are cut in the Subject only; the body has them whole.
SUBJECT_NAME_LIMIT = 100
PRODUCT = "qs-promoter"

_APP_ID = re.compile(r"[A-Za-z0-9-]{1,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class AppSummary:
    """The app an email is about, as the admin sees it in the hub."""

    app_id: str
    name: str
    owner_name: str
    stream_name: str | None
    link: str


@dataclass(frozen=True, slots=True)
class IntendedTarget:
    """Where an approval asks the app to go on one site (PromoteToServer / PromoteToStream)."""

    site: str
    streams: tuple[str, ...]
    mode: str  # "Overwrite" or "Duplicate", as written in PromoteToServer


StreamAction = Literal["published", "replaced", "copied"]


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    """One stream on one target site that now holds the promoted app."""

    stream: str
    target_app_id: str
    action: StreamAction
    link: str | None = None  # the target app in its own site's hub (SiteSettings.hub_link)


@dataclass(frozen=True, slots=True)
class SiteReport:
    """What the results email says of one target site (the ledger keeps its own ledger.SiteResult)."""

    site: str
    streams: tuple[StreamOutcome, ...] = ()
    missing_streams: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    s3_version_id: str | None = None
    backup_version_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return not self.failures and bool(self.streams)


# What every render_* takes as ``to``: MailAddress values, or strings of exactly one address each.
Recipients = Sequence[str | MailAddress]

# Whose subject wording: ours, or the original's (EmailSettings.subjects).
SubjectStyle = Literal["qs-promoter", "original"]


def render_publish_alert(
    app: AppSummary,
    *,
    sender: str,
    to: Recipients,
    since: str = "",
    subjects: SubjectStyle = "qs-promoter",
) -> EmailMessage:
    """Tell a stream's approvers that an app was published there and waits for their review.

    ``since`` says how the app moved on after that publish (deleted, moved to another stream),
    when it did before the alert went out: the alert is still about the publish.
    """
    stream = app.stream_name or "(none)"
    body = _Body()
    body.paragraph(
        _fmt(
            "{owner} published the app {app} to the stream {stream}.",
            owner=app.owner_name,
            app=app.name,
            stream=stream,
        )
    )
    if since:
        body.paragraph(_fmt("Since then: {since}", since=since))
    body.paragraph(_fmt("Review it, then set PromotionApproval to Approve or Deny."))
    body.facts(_app_facts(app))
    if subjects == "original":
        subject = _original_subject("'{app}' published to: '{stream}'", app=app.name, stream=stream)
    else:
        subject = _subject("Published for review", app, f"in {stream}")
    return _message(subject, body, sender=sender, to=to, app=app)


def render_approval(
    app: AppSummary,
    *,
    approver: str,
    sender: str,
    to: Recipients,
    subjects: SubjectStyle = "qs-promoter",
) -> EmailMessage:
    """Tell the owner that their app was approved for promotion."""
    body = _Body()
    body.paragraph(
        _fmt("Your app {app} was approved for promotion by {approver}.", app=app.name, approver=approver)
    )
    body.paragraph(
        _fmt(
            "Where it is meant to go and where it went follow in one email, or in two when the"
            " promotion takes a while."
        )
    )
    body.facts(_app_facts(app))
    if subjects == "original":
        subject = _original_subject("'{app}' promotion approved by: '{by}'", app=app.name, by=approver)
    else:
        subject = _subject("Approved", app)
    return _message(subject, body, sender=sender, to=to, app=app)


def render_denial(
    app: AppSummary,
    *,
    approver: str,
    sender: str,
    to: Recipients,
    reason: str = "",
    subjects: SubjectStyle = "qs-promoter",
) -> EmailMessage:
    """Tell the owner that their app was denied promotion (and why, when the approver said)."""
    body = _Body()
    body.paragraph(
        _fmt("Your app {app} was denied promotion by {approver}.", app=app.name, approver=approver)
    )
    if reason:
        body.paragraph(_fmt("Reason: {reason}", reason=reason))
    body.facts(_app_facts(app))
    if subjects == "original":
        subject = _original_subject("'{app}' promotion denied by: '{by}'", app=app.name, by=approver)
    else:
        subject = _subject("Denied", app)
    return _message(subject, body, sender=sender, to=to, app=app)


def render_intended_targets(
    app: AppSummary,
    targets: Sequence[IntendedTarget],
    *,
    sender: str,
    to: Recipients,
    subjects: SubjectStyle = "qs-promoter",
) -> EmailMessage:
    """List the sites, streams and mode (Overwrite/Duplicate) an approval asked for."""
    body = _Body()
    body.paragraph(_fmt("The app {app} is about to be promoted to:", app=app.name))
    body.items(_intended_lines(targets))
    body.facts(_app_facts(app))
    if subjects == "original":
        subject = _original_subject("'{app}' promotion targets", app=app.name)
    else:
        subject = _subject("Promotion requested", app)
    return _message(subject, body, sender=sender, to=to, app=app)


def render_promotion_results(
    app: AppSummary,
    results: Sequence[SiteReport],
    *,
    sender: str,
    to: Recipients,
    s3_key: str | None = None,
    s3_version_id: str | None = None,
    intended: Sequence[IntendedTarget] | None = None,
    subjects: SubjectStyle = "qs-promoter",
) -> EmailMessage:
    """Report per site: streams published or replaced (with target app ids), missing streams, failures.

    ``intended``: the targets the approval asked for, when this email also stands for the
    intended-targets email (the promotion finished before that one was due).
    """
    body = _Body()
    done = sum(1 for r in results if r.succeeded)
    body.paragraph(
        _fmt(
            "Promotion of {app}: {done} of {total} site(s) succeeded.",
            app=app.name,
            done=str(done),
            total=str(len(results)),
        )
    )
    if intended is not None:
        body.heading(_fmt("Requested targets"))
        body.items(_intended_lines(intended))
    for result in results:
        body.heading(_fmt("Site {site}", site=result.site))
        lines = [
            _linked(
                _fmt(
                    "{action} in stream {stream} as app {target}",
                    action=o.action.capitalize(),
                    stream=o.stream,
                    target=o.target_app_id,
                ),
                o.link,
            )
            for o in result.streams
        ]
        lines += [
            _fmt("Stream {stream} does not exist on this site", stream=s) for s in result.missing_streams
        ]
        lines += [_fmt("Failed: {failure}", failure=f) for f in result.failures]
        if result.s3_version_id:
            lines.append(_fmt("S3 version: {version}", version=result.s3_version_id))
        if result.backup_version_id:
            backup = result.backup_version_id
            lines.append(_fmt("Backup before overwrite: S3 version {version}", version=backup))
        body.items(lines or [_fmt("Nothing was done on this site")])
    if s3_version_id:
        body.paragraph(
            _fmt(
                "Versioned in S3 as {key}, version {version}.",
                key=s3_key or "(key unknown)",
                version=s3_version_id,
            )
        )
    # Each promoted app is linked above, on its target site: the source app's link is left out
    # then (the same run may have unpublished or deleted it); with no target linked, it stays.
    body.facts(_app_facts(app, link=not any(o.link for r in results for o in r.streams)))
    if subjects == "original":
        # The original sent results only after promoting; its one wording serves both outcomes.
        subject = _original_subject("'{app}' promotion results", app=app.name)
    else:
        verdict = "Promoted" if results and done == len(results) else "Promotion incomplete"
        subject = _subject(verdict, app)
    return _message(subject, body, sender=sender, to=to, app=app)


def render_refused_approval(
    app: AppSummary, *, approver: str, reason: str, sender: str, to: Recipients
) -> EmailMessage:
    """Tell the approver (and owner) that an approval was not carried out: authorization failed."""
    body = _Body()
    body.paragraph(
        _fmt("The approval of {app} by {approver} was not carried out.", app=app.name, approver=approver)
    )
    body.paragraph(_fmt("Reason: {reason}", reason=reason))
    body.paragraph(
        _fmt(
            "Nothing was promoted. Ask an administrator about CanPromote, CanPromoteFrom and CanPromoteGroup."
        )
    )
    body.facts(_app_facts(app))
    return _message(_subject("Approval refused", app), body, sender=sender, to=to, app=app)


def render_not_carried_out(
    app: AppSummary,
    *,
    request: Literal["approval", "denial", "promotion on reload"],
    asked_by: str,
    reason: str,
    outdated: bool = False,
    sender: str,
    to: Recipients,
) -> EmailMessage:
    """Tell the owner (and whoever asked) that a request on their app was not carried out, and what now.

    Either whoever asked may not ask for it (a denial, or a promotion on reload: an approval has
    ``render_refused_approval``), or, ``outdated``, the targets changed after the approval or
    PromoteOnReload was set, so it must be given again.
    """
    body = _Body()
    body.paragraph(
        _fmt(f"The {request} of {{app}} by {{who}} was not carried out.", app=app.name, who=asked_by)
    )
    body.paragraph(_fmt("Reason: {reason}", reason=reason))
    if not outdated:
        body.paragraph(
            _fmt(
                "Nothing was changed. Ask an administrator about CanPromote, CanPromoteFrom"
                " and CanPromoteGroup."
            )
        )
    elif request == "promotion on reload":
        body.paragraph(
            _fmt(
                "Nothing was promoted. To promote the app on reload to the targets it has now, an approver"
                " clears PromoteOnReload, saves, and sets it to True again."
            )
        )
    else:
        body.paragraph(
            _fmt(
                "Nothing was promoted. To promote the app to the targets it has now, an approver clears"
                " PromotionApproval, saves, and sets it to Approve again."
            )
        )
    body.facts(_app_facts(app))
    verdict = f"{request.capitalize()} {'outdated' if outdated else 'refused'}"
    return _message(_subject(verdict, app), body, sender=sender, to=to, app=app)


def render_test_mail(*, sender: str, to: Recipients) -> EmailMessage:
    """A short message that proves the SMTP settings work (for `doctor` and first setup)."""
    body = _Body()
    body.paragraph(_fmt("This is a test message from qs-promoter: the email settings work."))
    return _message("[qs-promoter] Test message", body, sender=sender, to=to, app=None)


def _intended_lines(targets: Sequence[IntendedTarget]) -> list[_Line]:
    lines = [
        _fmt(
            "{site} ({mode}): {streams}",
            site=t.site,
            mode=t.mode,
            streams=", ".join(t.streams) or "(no stream)",
        )
        for t in targets
    ]
    return lines or [_fmt("(no target site)")]


class _Line(NamedTuple):
    """One sentence, rendered for the text part and (escaped) for the HTML part."""

    text: str
    html: str


def _fmt(template: str, **values: str) -> _Line:
    # The template is ours; every value is user input: cleaned to one line, escaped for HTML.
    clean = {key: one_line(value) for key, value in values.items()}
    escaped = {key: f"<strong>{html.escape(value)}</strong>" for key, value in clean.items()}
    return _Line(template.format(**clean), html.escape(template).format(**escaped))


class _Body:
    """The text and HTML parts, built side by side so both always say the same."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.html: list[str] = []

    def paragraph(self, line: _Line) -> None:
        self.text += [line.text, ""]
        self.html.append(f"<p>{line.html}</p>")

    def heading(self, line: _Line) -> None:
        self.text += [line.text, "-" * min(len(line.text), 60)]
        self.html.append(f"<h3>{line.html}</h3>")

    def items(self, lines: Sequence[_Line]) -> None:
        self.text += [f"  - {line.text}" for line in lines] + [""]
        self.html.append("<ul>" + "".join(f"<li>{line.html}</li>" for line in lines) + "</ul>")

    def facts(self, rows: Sequence[tuple[str, str]]) -> None:
        self.text += [f"{label}: {one_line(value)}" for label, value in rows] + [""]
        cells = []
        for label, value in rows:
            shown = html.escape(one_line(value))
            if label == "Open" and _is_web_link(value):
                shown = f'<a href="{html.escape(one_line(value), quote=True)}">{shown}</a>'
            cells.append(f'<tr><th align="left">{html.escape(label)}</th><td>{shown}</td></tr>')
        self.html.append("<table>" + "".join(cells) + "</table>")

    def render(self) -> tuple[str, str]:
        footer = f"{PRODUCT}: an automatic message; replies are not read."
        text = "\n".join([*self.text, "-- ", footer]) + "\n"
        page = "".join(self.html)
        document = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
            f'<body style="font-family: sans-serif">{page}'
            f'<p style="color: #777">{html.escape(footer)}</p></body></html>\n'
        )
        return text, document


def _app_facts(app: AppSummary, *, link: bool = True) -> list[tuple[str, str]]:
    facts = [
        ("App", app.name),
        ("App id", app.app_id),
        ("Owner", app.owner_name),
        ("Stream", app.stream_name or "(not published)"),
    ]
    return [*facts, ("Open", app.link)] if link else facts


def _linked(line: _Line, url: str | None) -> _Line:
    """``line`` followed by ``url``: an anchor in the HTML part only when it is a web link."""
    if not url:
        return line
    shown = one_line(url)
    anchor = html.escape(shown)
    if _is_web_link(shown):
        anchor = f'<a href="{html.escape(shown, quote=True)}">{anchor}</a>'
    return _Line(f"{line.text}: {shown}", f"{line.html}: {anchor}")


def _is_web_link(url: str) -> bool:
    # Only http(s) links become anchors; "javascript:" and friends stay inert text.
    return one_line(url).lower().startswith(("https://", "http://"))


def _subject(verdict: str, app: AppSummary, tail: str = "") -> str:
    parts = (
        f"[{PRODUCT}] {verdict}:",
        f'"{clip(app.name, SUBJECT_NAME_LIMIT)}"',
        clip(tail, SUBJECT_NAME_LIMIT),
    )
    return " ".join(part for part in parts if part)


def _original_subject(template: str, **names: str) -> str:
    # The original's wording; each name cut like ours. The text becomes a header only in _message,
    # through mail_headers.EncodedText, so a name can never start a header line of its own.
    return template.format(**{key: clip(name, SUBJECT_NAME_LIMIT) for key, name in names.items()})


def _recipient(entry: str | MailAddress) -> MailAddress:
    return entry if isinstance(entry, MailAddress) else parse_address(entry)


def _message(
    subject: str, body: _Body, *, sender: str, to: Recipients, app: AppSummary | None
) -> EmailMessage:
    if isinstance(to, str):  # a lone string would otherwise be read one character at a time
        to = [to]
    from_address = parse_address(sender)
    # The same person as owner and approver (or twice in a list) gets one copy.
    unique: dict[str, MailAddress] = {}
    for entry in to:
        address = _recipient(entry)
        unique.setdefault(address.addr_spec.lower(), address)
    to_addresses = tuple(unique.values())
    message = EmailMessage(policy=policy.SMTP)
    _set(message, EncodedText("Subject", one_line(subject)))
    _set(message, AddressField("From", (from_address,)))
    if to_addresses:  # none: send_email skips the email with a warning; rendering it is no error
        _set(message, AddressField("To", to_addresses))
    message["Date"] = formatdate(localtime=True)
    # Naming the domain avoids make_msgid's socket.getfqdn(), a DNS lookup that can hang.
    message["Message-ID"] = make_msgid(domain=from_address.addr_spec.partition("@")[2])
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office robots must not answer
    if app is not None and _APP_ID.fullmatch(app.app_id):  # QRS ids are GUIDs: nothing else is written
        message["X-Qlik-App-Id"] = app.app_id
    text, document = body.render()
    message.set_content(text, charset="utf-8")
    message.add_alternative(document, subtype="html", charset="utf-8")
    return message


def name_once(message: EmailMessage, request_key: str, kind: str) -> None:
    """Give ``message`` the Message-ID of this request's ``kind`` of email, the same on every attempt.

    An attempt stopped after the SMTP server accepted the email but before the ledger heard of it
    sends it again; mail servers such as Exchange and Gmail deliver a Message-ID to a mailbox once.
    The id is a hash: the request key never appears in it.
    """
    domain = str(message["Message-ID"]).rstrip(">").rpartition("@")[2]
    digest = hashlib.sha256(f"{request_key}\0{kind}".encode()).hexdigest()[:40]
    message.replace_header("Message-ID", f"<qs-promoter.{digest}@{domain}>")


def _set(message: EmailMessage, field: EncodedText | AddressField) -> None:
    # Stored under its own name, the email package keeps the object and calls its fold() to write
    # it; under any other name it would parse the text, which is exactly what must not happen.
    message[field.name] = field
