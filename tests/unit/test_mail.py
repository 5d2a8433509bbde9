"""Email rendering: every message has a text and an HTML part, and no app name can inject headers or HTML."""

from __future__ import annotations

import html
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promoter.mail import (
    SUBJECT_NAME_LIMIT,
    AppSummary,
    IntendedTarget,
    SiteResult,
    StreamOutcome,
    is_valid_address,
    one_line,
    render_approval,
    render_denial,
    render_intended_targets,
    render_promotion_results,
    render_publish_alert,
    render_refused_approval,
    render_test_mail,
)

SENDER = "Qlik promotions <qs-promoter@example.com>"
TO = ("owner@example.com", "approver@example.com")
APP_ID = "6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f"
EXPECTED_HEADERS = [
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
}


def app(name: str = "Sales KPIs", stream: str | None = "Sales", owner: str = "Bob Owner") -> AppSummary:
    return AppSummary(APP_ID, name, owner, stream, f"https://qlik.example.com/sense/app/{APP_ID}")


def results() -> list[SiteResult]:
    return [
        SiteResult(
            "test",
            streams=(
                StreamOutcome("Everyone", "11111111-1111-1111-1111-111111111111", "published"),
                StreamOutcome("Review", "22222222-2222-2222-2222-222222222222", "replaced"),
            ),
            missing_streams=("Finance",),
            s3_version_id="v-test-1",
            backup_version_id="v-backup-9",
        ),
        SiteResult("prod", failures=("QRS answered 503 on upload",)),
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

    assert list(message.keys()) == EXPECTED_HEADERS
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


def test_results_subject_says_promoted_when_every_site_succeeded() -> None:
    """All sites done: the Subject says Promoted."""
    done = [SiteResult("test", streams=(StreamOutcome("Everyone", "1", "published"),))]

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


def test_an_email_needs_a_recipient() -> None:
    """Rendering with no recipient is a programming error, reported at once."""
    with pytest.raises(ValueError, match="recipient"):
        render_approval(app(), approver="Mary", sender=SENDER, to=[])


@settings(max_examples=100, deadline=None)
@given(name=st.text(max_size=255), stream=st.text(max_size=255), owner=st.text(max_size=80))
def test_any_text_as_names_keeps_headers_and_html_intact(name: str, stream: str, owner: str) -> None:
    """For any app, stream and owner names, the parsed email has exactly our headers and the escaped names."""
    message = parse(render_publish_alert(app(name=name, stream=stream, owner=owner), sender=SENDER, to=TO))

    page = parts(message)[1]

    assert list(message.keys()) == EXPECTED_HEADERS
    assert "\n" not in subject_of(message) and "\r" not in subject_of(message)
    assert html.escape(one_line(name)) in page
