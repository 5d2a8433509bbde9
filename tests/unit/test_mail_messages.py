"""Email rendering: every message has a text and an HTML part, and no app name can inject headers or HTML."""

from __future__ import annotations

import html
import pickle
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from promoter.addresses import MailAddress, gather_addresses, is_valid_address, parse_addresses
from promoter.mail_headers import one_line, recipients
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
    render_test_mail,
)
from promoter.settings import EmailSettings
from tests.security.email_wire import HEADERS

SENDER = "Qlik promotions <qs-promoter@example.com>"
TO = ("owner@example.com", "approver@example.com")
APP_ID = "6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f"
HOSTILE_NAMES = {
    "crlf header injection": "Sales\r\nBcc: thief@evil.example\r\n\r\nbody",
    "bare lf": "Sales\nX-Injected: 1",
    "bare cr": "Sales\rX-Injected: 1",
    "unicode line separator": "Sales\u2028X-Injected: 1\u2029",
    "next line (NEL)": "Sales\x85X-Injected: 1",
    "html and script": '<script>alert("x")</script><img src=x onerror=alert(1)>',
    "quotes": "It's \"quoted\" & 'single' \\ back",
    "unicode": "Ventes 2024 — Überblick 数据 😀",
    "bidi override": "report\u202eexe.pdf",
    "255 characters": "A" * 200 + "ü" * 55,
    "encoded-word lookalike": "=?utf-8?q?Bcc=3A_x?=",
    "encoded words that decode to CR/LF": (
        "Q3=?utf-8?q?=0D=0ABcc=3A_rep=40evil.example=0D=0AReply-To=3A_rep=40evil.example?="
    ),
    "base64 encoded word with a header": "=?utf-8?b?DQpCY2M6IHJlcEBldmlsLmV4YW1wbGU=?= x",
}


def app(name: str = "Sales KPIs", stream: str | None = "Sales", owner: str = "Bob Owner") -> AppSummary:
    return AppSummary(APP_ID, name, owner, stream, f"https://qlik.example.com/sense/app/{APP_ID}")


def results() -> list[SiteReport]:
    return [
        SiteReport(
            "test",
            streams=(
                StreamOutcome("Everyone", "11111111-1111-1111-1111-111111111111", "published"),
                StreamOutcome("Review", "22222222-2222-2222-2222-222222222222", "replaced"),
            ),
            missing_streams=("Finance",),
            s3_version_id="v-test-1",
            backup_version_id="v-backup-9",
        ),
        SiteReport("prod", failures=("QRS answered 503 on upload",)),
    ]


RENDERERS: dict[str, Callable[[AppSummary], EmailMessage]] = {
    "publish alert": lambda a: render_publish_alert(a, sender=SENDER, to=TO),
    "approval": lambda a: render_approval(a, approver="Mary Manager", sender=SENDER, to=TO),
    "denial": lambda a: render_denial(a, approver="Mary Manager", reason="not ready", sender=SENDER, to=TO),
    "intended targets": lambda a: render_intended_targets(
        a, [IntendedTarget("test", ("Everyone", "Review"), "Overwrite")], sender=SENDER, to=TO
    ),
    "promotion results": lambda a: render_promotion_results(
        a, results(), sender=SENDER, to=TO, s3_key="qs-promoter/apps/x/y.qvf", s3_version_id="v-src-1"
    ),
    "promotion results carrying the intended targets": lambda a: render_promotion_results(
        a,
        results(),
        sender=SENDER,
        to=TO,
        intended=[IntendedTarget("test", (a.stream_name or "",), "Duplicate")],
    ),
    "refused approval": lambda a: render_refused_approval(
        a, approver="Eve", reason="Eve has no CanPromote", sender=SENDER, to=TO
    ),
}


def parse(message: EmailMessage) -> EmailMessage:
    """What a mail client sees: the bytes on the wire, parsed back."""
    parsed = BytesParser(policy=policy.default).parsebytes(bytes(message))
    assert isinstance(parsed, EmailMessage)
    return parsed


def subject_of(message: EmailMessage) -> str:
    # When the whole Subject fits on a continuation line, Python folds right after "Subject:", and
    # its parser then keeps the fold's leading space (mail clients unfold it away): ignore it.
    return str(message["Subject"]).lstrip()


def parts(message: EmailMessage) -> tuple[str, str]:
    text, page = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and page is not None
    return text.get_content(), page.get_content()


@pytest.mark.parametrize("render", RENDERERS.values(), ids=RENDERERS.keys())
def test_every_email_has_text_and_html_with_the_app_and_its_link(
    render: Callable[[AppSummary], EmailMessage],
) -> None:
    """Each email is multipart/alternative; both parts name the app, its id and the hub link."""
    message = parse(render(app()))

    text, page = parts(message)

    assert message.get_content_type() == "multipart/alternative"
    for part in (text, page):
        assert "Sales KPIs" in part
        assert APP_ID in part
        assert f"https://qlik.example.com/sense/app/{APP_ID}" in part
    assert f'<a href="https://qlik.example.com/sense/app/{APP_ID}">' in page
    assert [a.addr_spec for a in message["To"].addresses] == ["owner@example.com", "approver@example.com"]
    assert message["From"].addresses[0].addr_spec == "qs-promoter@example.com"


@pytest.mark.parametrize("render", RENDERERS.values(), ids=RENDERERS.keys())
@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_hostile_names_never_inject_headers_or_html(
    render: Callable[[AppSummary], EmailMessage], name: str
) -> None:
    """App, stream and owner names reach the Subject and body cleaned and escaped: the header set stays
    exactly ours, each header once, and the HTML holds the escaped name, never its tags."""
    message = parse(render(app(name=name, stream=name, owner=name)))

    text, page = parts(message)

    assert list(message.keys()) == HEADERS
    assert [a.addr_spec for a in message["To"].addresses] == ["owner@example.com", "approver@example.com"]
    subject = subject_of(message)
    assert not any(ch in subject for ch in "\r\n\x85\u2028\u2029\u202e")
    assert subject.startswith("[qs-promoter] ")
    shown = one_line(name)
    assert html.escape(shown) in page
    assert "<script" not in page and "<img" not in page
    assert shown in text
    assert not any(line.startswith("X-Injected") for line in text.splitlines())


@pytest.mark.parametrize("render", RENDERERS.values(), ids=RENDERERS.keys())
def test_wire_format_keeps_lines_short(render: Callable[[AppSummary], EmailMessage]) -> None:
    """On the wire: CRLF line ends, no line longer than RFC 5322 allows, even for 255-character names."""
    raw = bytes(render(app(name="N" * 255, stream="S" * 255)))

    lines = raw.split(b"\r\n")

    assert b"\n" not in b"".join(lines)
    assert max(len(line) for line in lines) <= 998


def test_long_name_is_clipped_in_the_subject_but_whole_in_the_body() -> None:
    """A 255-character name is cut (with an ellipsis) in the Subject only."""
    name = "Quarterly " + "x" * 245

    message = parse(render_approval(app(name=name), approver="Mary", sender=SENDER, to=TO))

    assert f'"{name[: SUBJECT_NAME_LIMIT - 1]}…"' in subject_of(message)
    assert name in parts(message)[0]


def test_only_web_links_become_anchors() -> None:
    """A link that is not http(s) (javascript:, data:) is shown as inert text, never as an anchor."""
    hostile = AppSummary(APP_ID, "Sales", "Bob", "Sales", "javascript:alert(1)")

    page = parts(parse(render_publish_alert(hostile, sender=SENDER, to=TO)))[1]

    assert "<a " not in page
    assert "javascript:alert(1)" in page


def test_publish_alert_tells_approvers_who_published_what_where() -> None:
    """The alert names owner, app and stream, and asks for Approve or Deny."""
    message = parse(render_publish_alert(app(), sender=SENDER, to=["mgr@example.com"]))

    text = parts(message)[0]

    assert subject_of(message) == '[qs-promoter] Published for review: "Sales KPIs" in Sales'
    assert "Bob Owner published the app Sales KPIs to the stream Sales." in text
    assert "Approve or Deny" in text


def test_denial_carries_the_reason() -> None:
    """The owner's denial email says who denied it and why."""
    text = parts(
        parse(render_denial(app(), approver="Mary", reason="needs a data model review", sender=SENDER, to=TO))
    )[0]

    assert "denied promotion by Mary" in text
    assert "Reason: needs a data model review" in text


def test_intended_targets_lists_site_mode_and_streams() -> None:
    """The intended-targets email lists each site with its mode and streams."""
    targets = [
        IntendedTarget("test", ("Everyone", "Review"), "Overwrite"),
        IntendedTarget("prod", ("Sales",), "Duplicate"),
    ]

    text = parts(parse(render_intended_targets(app(), targets, sender=SENDER, to=TO)))[0]

    assert "test (Overwrite): Everyone, Review" in text
    assert "prod (Duplicate): Sales" in text


def test_results_show_target_ids_missing_streams_failures_and_versions() -> None:
    """The results email reports per site what was published or replaced (with target app ids),
    which streams were missing, what failed, and the S3 version ids."""
    message = parse(
        render_promotion_results(
            app(), results(), sender=SENDER, to=TO, s3_key="k.qvf", s3_version_id="v-src-1"
        )
    )

    text, page = parts(message)

    assert subject_of(message).startswith("[qs-promoter] Promotion incomplete:")
    assert "1 of 2 site(s) succeeded" in text
    assert "Published in stream Everyone as app 11111111-1111-1111-1111-111111111111" in text
    assert "Replaced in stream Review as app 22222222-2222-2222-2222-222222222222" in text
    assert "Stream Finance does not exist on this site" in text
    assert "Failed: QRS answered 503 on upload" in text
    assert "S3 version: v-test-1" in text and "S3 version v-backup-9" in text
    assert "Versioned in S3 as k.qvf, version v-src-1." in text
    assert "<h3>Site <strong>prod</strong></h3>" in page


def test_results_that_carry_the_intended_targets_list_them_before_the_sites() -> None:
    """A results email sent instead of two (the promotion was quick) says what was requested, per
    site with mode and streams, then what happened; its subject stays the results subject."""
    intended = [IntendedTarget("test", ("Everyone",), "Overwrite"), IntendedTarget("prod", (), "Duplicate")]

    message = parse(render_promotion_results(app(), results(), sender=SENDER, to=TO, intended=intended))
    alone = parse(render_promotion_results(app(), results(), sender=SENDER, to=TO))

    text, page = parts(message)
    assert "Requested targets" in text and "<h3>Requested targets</h3>" in page
    assert text.index("test (Overwrite): Everyone") < text.index("Site test")
    assert "prod (Duplicate): (no stream)" in text
    assert subject_of(message) == subject_of(alone)
    assert "Requested targets" not in parts(alone)[0]


def test_results_link_each_promoted_app_on_its_target_site_not_the_source_app() -> None:
    """Each stream's line links the app where it now lives (its target site's hub), in both parts;
    the source app, which the same run may have unpublished, is not linked then."""
    test_hub = "https://qlik-test.example.com/sense/app"
    linked = [
        SiteReport(
            "test",
            streams=(
                StreamOutcome(
                    "Everyone", "11111111-1111-1111-1111-111111111111", "published", f"{test_hub}/1111"
                ),
                StreamOutcome("Review", "22222222-2222-2222-2222-222222222222", "copied", f"{test_hub}/2222"),
            ),
        )
    ]

    text, page = parts(parse(render_promotion_results(app(), linked, sender=SENDER, to=TO)))

    assert (
        f"Published in stream Everyone as app 11111111-1111-1111-1111-111111111111: {test_hub}/1111" in text
    )
    assert f"Copied in stream Review as app 22222222-2222-2222-2222-222222222222: {test_hub}/2222" in text
    assert f'<a href="{test_hub}/1111">' in page and f'<a href="{test_hub}/2222">' in page
    assert f"https://qlik.example.com/sense/app/{APP_ID}" not in text + page
    assert "Stream: Sales" in text


def test_a_target_link_that_is_not_a_web_link_stays_inert_text() -> None:
    """A target link that is not http(s) is shown as text, never as an anchor."""
    hostile = [
        SiteReport("test", streams=(StreamOutcome("Everyone", "1", "published", "javascript:alert(1)"),))
    ]

    page = parts(parse(render_promotion_results(app(), hostile, sender=SENDER, to=TO)))[1]

    assert '<a href="javascript' not in page and "javascript:alert(1)" in page


def test_results_subject_says_promoted_when_every_site_succeeded() -> None:
    """All sites done: the Subject says Promoted."""
    done = [SiteReport("test", streams=(StreamOutcome("Everyone", "1", "published"),))]

    message = parse(render_promotion_results(app(), done, sender=SENDER, to=TO))

    assert subject_of(message).startswith("[qs-promoter] Promoted:")


def test_refused_approval_gives_the_authorization_reason() -> None:
    """A refused approval says that nothing was promoted and why authorization failed."""
    text = parts(
        parse(
            render_refused_approval(
                app(), approver="Eve", reason="Eve has no CanPromote", sender=SENDER, to=TO
            )
        )
    )[0]

    assert "The approval of Sales KPIs by Eve was not carried out." in text
    assert "Reason: Eve has no CanPromote" in text
    assert "Nothing was promoted" in text


def test_test_mail_has_no_app_header() -> None:
    """The SMTP test message has no app id header."""
    message = parse(render_test_mail(sender=SENDER, to=["admin@example.com"]))

    assert "X-Qlik-App-Id" not in message
    assert subject_of(message) == "[qs-promoter] Test message"


@pytest.mark.parametrize(
    "address",
    [
        "owner@example.com\r\nBcc: thief@evil.example",
        "owner@example.com\nBcc: thief@evil.example",
        "a@example.com, b@example.com",
        "a@example.com; b@example.com",
        "not an address",
        "",
        "<>",
        "Name <a@example.com> <b@example.com>",
    ],
)
def test_recipient_that_is_not_one_clean_address_is_refused(address: str) -> None:
    """A recipient (e.g. an owner's email attribute) that is not exactly one address raises ValueError."""
    assert not is_valid_address(address)
    with pytest.raises(ValueError):
        render_approval(app(), approver="Mary", sender=SENDER, to=[address])


def test_named_addresses_and_plain_addresses_are_accepted() -> None:
    """Both "a@b.example" and "Name <a@b.example>" are valid addresses."""
    assert (is_valid_address("a@b.example"), is_valid_address("Mary Manager <m@b.example>")) == (True, True)


def test_an_email_without_recipients_has_no_to_header() -> None:
    """An owner without an address is no error: the email renders without a To header, and
    ``recipients`` (what send_email checks before sending) finds nobody."""
    message = render_approval(app(), approver="Mary", sender=SENDER, to=[])

    assert ("To" in message, recipients(message)) == (False, [])


def test_the_same_address_twice_gets_one_copy() -> None:
    """Owner and approver with the same address (in any letter case) are one recipient."""
    message = render_approval(
        app(), approver="Mary", sender=SENDER, to=["pat@acme.example", MailAddress("Pat@ACME.example", "Pat")]
    )

    assert recipients(message) == ["pat@acme.example"]


ATTRIBUTES = {
    "one address": ("pat@acme.example", ["pat@acme.example"], []),
    "semicolon list": (
        "pat@acme.example; pat.dev@acme.example",
        ["pat@acme.example", "pat.dev@acme.example"],
        [],
    ),
    "comma list, no spaces": ("a@acme.example,b@acme.example", ["a@acme.example", "b@acme.example"], []),
    "one per line": (
        "a@acme.example\r\nb@acme.example\u2028c@acme.example",
        ["a@acme.example", "b@acme.example", "c@acme.example"],
        [],
    ),
    "trailing separator": ("pat@acme.example;", ["pat@acme.example"], []),
    "empty": ("", [], []),
    "only separators and spaces": (" ; , ", [], []),
    "display names": (
        'Pat Owner <pat@acme.example>; "Doe, Pat" <pd@acme.example>',
        ["pat@acme.example", "pd@acme.example"],
        [],
    ),
    "one bad among good": ("pat@acme.example; not an address", ["pat@acme.example"], ["not an address"]),
    "non-ASCII address": ("jürgen@acme.example", [], ["jürgen@acme.example"]),
    "encoded word as address": ("=?utf-8?q?a?=@acme.example", [], ["=?utf-8?q?a?=@acme.example"]),
    "relay routing": ("victim%evil.example@acme.example", [], ["victim%evil.example@acme.example"]),
    "two in brackets": (
        "Pat <a@acme.example> <b@acme.example>",
        [],
        ["Pat <a@acme.example> <b@acme.example>"],
    ),
    "unclosed quote": (
        '"Pat <a@acme.example>; b@acme.example',
        [],
        ['"Pat <a@acme.example>; b@acme.example'],
    ),
}


@pytest.mark.parametrize(("text", "found", "rejected"), ATTRIBUTES.values(), ids=ATTRIBUTES.keys())
def test_an_email_attribute_may_hold_several_addresses_or_none(
    text: str, found: list[str], rejected: list[str]
) -> None:
    """parse_addresses reads every address in an attribute (";", "," or line breaks between them,
    display names allowed, a quoted name may hold a comma) and returns what is not one address apart."""
    parsed = parse_addresses(text)

    assert ([a.addr_spec for a in parsed.found], list(parsed.rejected)) == (found, rejected)


def test_display_names_are_kept_on_one_line() -> None:
    """A display name is read as text: unquoted, unescaped, and cleaned to one line."""
    (address,) = parse_addresses('"Doe, \\"Pat\\"\tthe\x85Owner" <pd@acme.example>').found

    assert (address.display_name, address.addr_spec) == ('Doe, "Pat" the Owner', "pd@acme.example")


def test_warnings_name_the_source_and_quote_what_was_skipped() -> None:
    """gather_addresses merges sources (each address once) and words one warning per skipped part, and one
    for a source that holds no address at all; the quoted part is one line."""
    found, warnings = gather_addresses(
        [
            ("owner ACME\\pat (user attribute 'email')", "pat@acme.example; oops\r\nBcc: x"),
            ("approver ACME\\mgr (user attribute 'email')", None),
            ("stream_approvers of stream Sales", "PAT@acme.example, mgr@acme.example"),
        ]
    )

    assert [a.addr_spec for a in found] == ["pat@acme.example", "mgr@acme.example"]
    assert warnings == [
        "owner ACME\\pat (user attribute 'email'): 'oops' is not an email address; skipped",
        "owner ACME\\pat (user attribute 'email'): 'Bcc: x' is not an email address; skipped",
        "approver ACME\\mgr (user attribute 'email'): no email address; nobody is emailed there",
    ]


def test_a_mail_address_cannot_be_made_from_a_bad_address() -> None:
    """MailAddress checks its address when made, so none can carry a line break into a header."""
    with pytest.raises(ValueError):
        MailAddress("owner@example.com\r\nBcc: thief@evil.example")


def test_the_app_id_header_is_written_only_for_an_id() -> None:
    """X-Qlik-App-Id carries a QRS id; anything else in its place (QRS never sends that) is left out."""
    odd = AppSummary("=?utf-8?q?=0D=0ABcc:_x@evil.example?=", "Sales", "Bob", "Sales", "https://x/")

    normal = parse(render_approval(app(), approver="M", sender=SENDER, to=TO))
    hostile = parse(render_approval(odd, approver="M", sender=SENDER, to=TO))

    assert (normal["X-Qlik-App-Id"], "X-Qlik-App-Id" in hostile) == (APP_ID, False)


def test_a_rendered_email_survives_pickling() -> None:
    """A message may cross a process boundary: pickled and back, it is written byte for byte the same."""
    to = [MailAddress("a@b.example", "Pat")]
    message = render_approval(app(name="Q3 =?utf-8?q?=0D=0A?="), approver="M", sender=SENDER, to=to)
    written = bytes(message)  # the first write fixes the MIME boundary

    back = pickle.loads(pickle.dumps(message))

    assert (bytes(back), recipients(back)) == (written, ["a@b.example"])


@settings(max_examples=100, deadline=None)
@given(name=st.text(max_size=255), stream=st.text(max_size=255), owner=st.text(max_size=80))
def test_any_text_as_names_keeps_headers_and_html_intact(name: str, stream: str, owner: str) -> None:
    """For any app, stream and owner names, the parsed email has exactly our headers and the escaped names."""
    message = parse(render_publish_alert(app(name=name, stream=stream, owner=owner), sender=SENDER, to=TO))

    page = parts(message)[1]

    assert list(message.keys()) == HEADERS
    assert "\n" not in subject_of(message) and "\r" not in subject_of(message)
    assert html.escape(one_line(name)) in page


@pytest.mark.parametrize("sender", ["Qlik promotions", "a@b.example, c@d.example", "=?utf-8?q?x?=@b.example"])
def test_a_sender_that_is_not_one_address_is_refused_when_settings_load(sender: str) -> None:
    """email.sender is checked by the same parser when the settings load, not at the first email
    (where it would fail every promotion that sends one)."""
    with pytest.raises(ValidationError, match="sender"):
        EmailSettings(sender=sender)
