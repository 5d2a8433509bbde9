"""Hostile app, stream and account names: what each one reaches must read them as text and nothing more.

Covered elsewhere: filters for quotes, & # % + / ? backslash, CR/LF and non-ASCII through the sandbox
(tests/sandbox/test_filtering.py, tests/qrs/test_client_sandbox.py); email headers and HTML
(tests/unit/test_mail_messages.py, tests/mail/test_mail_sending.py); S3 keys and metadata (tests/versioning/).
"""

from __future__ import annotations

import html
import logging
import re
import string
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from promoter.outcome import (
    Placement,
    SiteOutcome,
    artifact_description,
    artifact_rows,
    markdown_text,
    run_name,
    summary_markdown,
)
from promoter.provenance import (
    DESCRIPTION_LIMIT,
    NAME_LIMIT,
    Provenance,
    UploadSlot,
    describe,
    new_upload_secret,
    upload_name,
    upload_token,
)
from promoter.qrs.filters import all_of, any_of, eq, query_string
from promoter.reconcile import sweep_leftovers
from promoter.sandbox.filtering import matches, parse_filter
from promoter.sandbox.server import SandboxSite
from promoter.sandbox.synthetic import make_app_file
from tests.security.conftest import site_client

pytestmark = pytest.mark.security

LONG_NON_ASCII = ("Überblick über die Umsätze – 販売データ 😀 " * 10)[:255]
HOSTILE_NAMES = [
    "..",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "<script>alert('x')</script>",
    '<img src=x onerror="alert(1)">',
    "Sales' or name ne 'x",
    "Sales') or (name ne 'x",
    "x\\' or name ne \\'y",
    "%27 or 1 eq 1 %23",
    "Sales\r\nX-Injected: 1",
    "[click](https://evil.example) & #tag % / \\",
    LONG_NON_ASCII,
]
LINE_BREAKS = re.compile("[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
APP = {"id": "5e2a8f0c-1d3b-4c5a-9e7f-a1b2c3d4e5f6", "name": "", "published": True}
# Text that tries to close the quote, open a group, or look like an escape.
# Names are Unicode text as QRS stores it: lone surrogates (category Cs) cannot exist in one.
filter_text = st.text(
    st.sampled_from("'\\() %&#/.x-") | st.characters(exclude_categories=("Cs",)), max_size=255
)


def test_the_long_name_is_a_255_character_non_ascii_name() -> None:
    """The longest name QRS stores, with umlauts, CJK and an emoji."""
    assert (len(LONG_NON_ASCII), LONG_NON_ASCII.isascii()) == (255, False)


# -- QRS filters -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(name=filter_text, other=filter_text)
def test_a_filter_on_any_name_matches_that_name_and_no_other(name: str, other: str) -> None:
    """Property: eq("name", name), alone or inside all_of/any_of, selects the app called name and not an
    app called anything else; no quote, backslash or parenthesis in it can end the literal early."""
    combined = all_of(any_of(eq("name", name), eq("id", UUID(int=1))), eq("published", True))

    for expression in (eq("name", name), combined):
        node = parse_filter(expression)
        assert matches(node, {**APP, "name": name})
        assert matches(node, {**APP, "name": other}) is (other.casefold() == name.casefold())


@settings(max_examples=200, deadline=None)
@given(name=filter_text)
def test_the_query_string_carries_the_filter_unchanged(name: str) -> None:
    """Property: percent-encoding leaves no & # ? + or space that could cut or change the query."""
    query = query_string({"filter": eq("name", name), "xrfkey": "0123456789abcdef"})

    assert re.fullmatch(r"filter=[A-Za-z0-9%._~-]*&xrfkey=0123456789abcdef", query)


async def test_hostile_names_find_exactly_their_own_app_on_a_site(
    dev_site: SandboxSite, tmp_path: Path
) -> None:
    """Through QrsClient and the sandbox's HTTPS QRS: each hostile name (traversal, HTML, filter
    injection, 255 non-ASCII characters) finds its own app only, never the decoy called "Sales"."""
    file = make_app_file(tmp_path / "app.qvf", 4096)
    async with site_client(dev_site) as dev:
        await dev.upload_app(file, "Sales")
        ids = {name: (await dev.upload_app(file, name)).id for name in HOSTILE_NAMES}
        found = {name: [app.id for app in await dev.apps(eq("name", name))] for name in HOSTILE_NAMES}

    assert found == {name: [app_id] for name, app_id in ids.items()}


# -- the target app's description and temporary upload name ----------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_description_keeps_account_names_on_one_line(name: str) -> None:
    """Approver, owner and node names cannot add a line of their own to the provenance description,
    and the description never exceeds the 512 characters QRS stores."""
    provenance = Provenance(name, str(uuid4()), f"ACME\\{name}", f"ACME\\{name}", datetime.now(UTC), "v1")

    description = describe(provenance)

    assert not LINE_BREAKS.search(description)
    assert len(description) <= DESCRIPTION_LIMIT
    assert description.startswith("Promoted by qs-promoter from ")


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=NAME_LIMIT), request_key=st.text(min_size=1, max_size=80))
def test_temporary_upload_names_fit_qrs_and_keep_the_start_of_the_name(name: str, request_key: str) -> None:
    """Property: the upload name is at most 255 characters, ends with its token and secret, starts with
    the name."""
    slot = UploadSlot(upload_token(request_key, "test"), new_upload_secret(), datetime.now(UTC))

    temporary = upload_name(name, slot)

    assert len(temporary) <= NAME_LIMIT
    assert temporary.endswith(f" [qs-promoter {slot.token}-{slot.secret}]")
    assert name.startswith(temporary.removesuffix(f" [qs-promoter {slot.token}-{slot.secret}]"))


def test_temporary_upload_names_are_unique_per_request_and_site() -> None:
    """Two apps called the same (even 255 characters long, equal where the name is cut), promoted at
    once to the same sites, get four different temporary names."""
    names = [LONG_NON_ASCII, LONG_NON_ASCII[:-1] + "!"]
    keys = [f"approval:{uuid4()}:v1@2026-05-01T12:00:00.000Z" for _ in names]

    temporary = {
        upload_name(n, UploadSlot(upload_token(k, s), new_upload_secret(), datetime.now(UTC)))
        for n, k in zip(names, keys, strict=True)
        for s in ("a", "b")
    }

    assert len(temporary) == 4


async def test_an_app_named_like_a_temporary_upload_by_someone_else_is_not_swept(
    dev_site: SandboxSite, tmp_path: Path
) -> None:
    """A user on a target site names an app "Budget [qs-promoter 0123456789ab-<secret>]": the leftover sweep
    (which looks for our abandoned uploads) leaves it alone, because we did not upload it; our own
    abandoned upload next to it is deleted."""
    file = make_app_file(tmp_path / "app.qvf", 4096)
    mimicked, ours = (
        UploadSlot(t, new_upload_secret(), datetime.now(UTC)) for t in ("0123456789ab", "123456789abc")
    )
    async with site_client(dev_site, "test", user_directory="ACME", user_id="alice") as alice:
        mimic = await alice.upload_app(file, upload_name("Budget", mimicked))

    async with site_client(dev_site, "test") as qrs:
        abandoned = await qrs.upload_app(file, upload_name("Budget", ours))
        swept = await sweep_leftovers(qrs, min_age=timedelta(0), protected=set(), log=logging.getLogger())
        left = {app.id for app in await qrs.apps(any_of(eq("id", mimic.id), eq("id", abandoned.id)))}

    assert ([app.id for app in swept], left) == ([abandoned.id], {mimic.id})


# -- what the Prefect UI shows -----------------------------------------------------------------

# The Prefect UI renders markdown artifacts, and every text cell of a table artifact, as markdown.
PUNCTUATION = frozenset(string.punctuation)
MARKDOWN = MarkdownIt("commonmark")  # raw HTML enabled, as the most permissive renderer would be


def rendered_text(markdown: str) -> str:
    """What a reader sees: the inline rendering with the <p> and entities undone; fails on any other tag."""
    rendered = MARKDOWN.renderInline(markdown)
    assert "<" not in rendered, rendered
    return html.unescape(rendered)


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.sampled_from("[]()<>!*_`#&;:/@.\\|~-=+ ") | st.characters(exclude_characters="\x00")))
def test_markdown_text_reads_back_literally(text: str) -> None:
    """Property: any text through markdown_text renders as exactly that text on one line: no link, image,
    emphasis, code, HTML tag or entity; every ASCII punctuation mark is escaped, so neither can an
    autolink (https://, www., a@b) form in a renderer that links bare URLs."""
    escaped = markdown_text(text)

    assert rendered_text(escaped) == " ".join(text.split())
    assert unescaped_punctuation(escaped) is None


def unescaped_punctuation(markdown: str) -> str | None:
    """The first ASCII punctuation mark not escaped with a backslash, or None."""
    position = 0
    while position < len(markdown):
        if markdown[position] == "\\" and markdown[position + 1 : position + 2] in PUNCTUATION:
            position += 2
            continue
        if markdown[position] in PUNCTUATION:
            return markdown[position]
        position += 1
    return None


def hostile_outcomes(name: str) -> list[SiteOutcome]:
    placed = Placement(uuid4(), name, uuid4(), "published")
    return [
        SiteOutcome("test", "overwrite", placements=(placed,), missing_streams=(name,), notes=(name,)),
        SiteOutcome("prod", "duplicate", failures=(f"QRS answered 400: {name}",)),
    ]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_summary_artifact_shows_hostile_names_as_text(name: str) -> None:
    """The markdown summary renders to headings and lists only: no link, image or HTML from any name."""
    page = MARKDOWN.render(
        summary_markdown(name, f"ACME\\{name}", f"approved by {name}", hostile_outcomes(name))
    )

    tags = set(re.findall(r"</?([a-z0-9]+)", page))

    assert tags <= {"h3", "ul", "li", "p"}
    assert " ".join(name.split()) in html.unescape(page)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_table_artifact_cells_show_hostile_names_as_text(name: str) -> None:
    """Each text cell, rendered as the Prefect UI renders it, reads as the name (or failure) itself."""
    rows = artifact_rows(hostile_outcomes(name), "v-1")

    shown = [rendered_text(row["stream"]) for row in rows if row["stream"]]
    failures = [rendered_text(row["result"]) for row in rows if row["result"].startswith("failed")]

    assert shown == [" ".join(name.split())] * 2
    assert failures == [f"failed: QRS answered 400: {' '.join(name.split())}"]


def hub(site: str, app_id: UUID) -> str:
    return f"https://qlik-{site}.example.com/sense/app/{app_id}"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_artifacts_link_only_the_target_apps_in_their_hubs(name: str) -> None:
    """With hub links, the summary and the table link each placed app to its site's hub and nothing
    else: a name can add no link, image or HTML; owner, approver and S3 version read as typed."""
    outcomes = hostile_outcomes(name)
    placed = outcomes[0].placements[0]
    summary = summary_markdown(
        name, name, "approved", outcomes, owner=name, s3_version_id="v-1", hub_link=hub
    )
    page = MARKDOWN.render(summary)
    cells = [row["open"] for row in artifact_rows(outcomes, "v-1", hub) if row["open"]]

    assert set(re.findall(r"</?([a-z0-9]+)", page)) <= {"h3", "ul", "li", "p", "a"}
    assert re.findall(r'href="([^"]*)"', page) == [hub("test", placed.app_id)]
    assert [re.findall(r'href="([^"]*)"', MARKDOWN.renderInline(c)) for c in cells] == [
        [hub("test", placed.app_id)]
    ]
    text = html.unescape(page)
    shown = " ".join(name.split())
    assert f"owner: {shown}" in text and f"approved by: {shown}" in text and "S3 version: v-1" in text


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(1)", "https://evil.example/x)[y](https://a", "https://a b/c", "https://x/<img>"],
)
def test_a_hub_link_that_is_not_a_plain_web_address_is_never_linked(link: str) -> None:
    """A hub address the settings made strange (a hostile public_fqdn) gives no link at all: the
    stream is shown as text, and the table's link cell stays empty."""
    outcomes = hostile_outcomes("Sales")
    summary = summary_markdown(
        "Sales", "ACME\\jane", "approved", outcomes, hub_link=lambda site, app_id: link
    )

    assert "<a " not in MARKDOWN.render(summary)
    assert [row["open"] for row in artifact_rows(outcomes, "v-1", lambda site, app_id: link)] == [""] * 3


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_artifact_description_is_one_sentence_of_text(name: str) -> None:
    """The description under each artifact names the app, the sites and the approver as text."""
    described = artifact_description(name, hostile_outcomes(name), f"ACME\\{name}")

    shown = rendered_text(described)
    assert shown.startswith("Promotion of '") and shown.endswith(".")
    assert "to test and prod, approved by ACME\\" in shown
    assert "\n" not in shown and len(shown) < 400


@pytest.mark.parametrize("approver", ["ACME\\mgr\r\nforged line", "ACME\\mgr\u2028x", None])
def test_flow_run_names_are_one_line(approver: str | None) -> None:
    """The run name an admin sees in the UI stays on one line, whatever the app and approver are called."""
    names: Sequence[str] = [run_name("promote", name, approver) for name in HOSTILE_NAMES]

    assert not any(LINE_BREAKS.search(n) for n in names)
