"""QRS filter expressions as the sandbox reads them: a table of expressions and the apps they select."""

from __future__ import annotations

from typing import Any

import pytest

from promoter.qrs.filters import all_of, any_of, eq, literal, query_string
from promoter.sandbox.filtering import FilterError, matches, parse_filter

STREAM = {"id": "8f1b2a52-07c2-4a1d-9f8e-0d2b5d0e6a11", "name": "Finance", "privileges": None}
APP: dict[str, Any] = {
    "id": "5e2a8f0c-1d3b-4c5a-9e7f-a1b2c3d4e5f6",
    "name": "Sales Q1",
    "published": True,
    "fileSize": 2048,
    "publishTime": "2024-03-01T10:00:00.000Z",
    "stream": STREAM,
    "owner": {"id": "0c6f1c36-27c4-4b57-9a66-3c8f2b77f111", "userId": "alice", "userDirectory": "ACME"},
    "tags": [{"id": "a1", "name": "Gold"}, {"id": "a2", "name": "Silver"}],
    "customProperties": [
        {"value": "Approve", "definition": {"name": "PromotionApproval"}},
        {"value": "prod", "definition": {"name": "PromoteToServer"}},
    ],
    "description": None,
}

CASES = [
    ("name eq 'Sales Q1'", True),
    ("name eq 'sales q1'", True),
    ("Name EQ 'SALES Q1'", True),
    ("name ne 'Sales Q1'", False),
    ("name sw 'sal'", True),
    ("name ew 'q1'", True),
    ("name so 'es Q'", True),
    ("name so 'xyz'", False),
    (f"id eq {APP['id']}", True),
    (f"id eq {APP['id'].upper()}", True),
    (f"stream.id eq {STREAM['id']}", True),
    ("stream.name eq 'finance'", True),
    ("owner.userId eq 'alice' and owner.userDirectory eq 'acme'", True),
    ("tags.name eq 'Silver'", True),
    ("tags.name eq 'Bronze'", False),
    ("customProperties.definition.name eq 'PromotionApproval' and customProperties.value eq 'Approve'", True),
    ("customProperties.value eq 'Deny'", False),
    ("published eq true", True),
    ("published eq false", False),
    ("fileSize gt 1000", True),
    ("fileSize le 1000", False),
    ("fileSize eq 2048", True),
    ("publishTime gt '2024-01-01 00:00:00'", True),
    ("publishTime lt '2024-01-01T00:00:00.000Z'", False),
    ("publishTime ge '2024-03-01T10:00:00.000Z'", True),
    ("description eq null", True),
    ("name eq 'x' or name eq 'Sales Q1'", True),
    ("name eq 'x' or name eq 'y' and published eq true", False),
    ("(name eq 'x' or name eq 'Sales Q1') and published eq true", True),
    ("((name eq 'Sales Q1'))", True),
    ("  name   eq   'Sales Q1'  ", True),
]


@pytest.mark.parametrize(("expression", "expected"), CASES, ids=[c[0] for c in CASES])
def test_filter_table(expression: str, expected: bool) -> None:
    """Each expression selects the sample app or not, as QRS would."""

    assert matches(parse_filter(expression), APP) is expected


HOSTILE = [
    "Q1'25",
    "a & b",
    "#5",
    "100 %",
    "a+b",
    "a/b",
    "why?",
    "back\\slash",
    "two  spaces ",
    "line\r\nbreak",
    "Ünïcødé – 販売",
    "quote\\'mix",
    "'",
    "\\",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_round_trip_through_literal(name: str) -> None:
    """Any name quoted by the client's literal() is matched exactly by the sandbox, and nothing else."""
    node = parse_filter(eq("name", name))

    assert matches(node, {**APP, "name": name})
    assert not matches(node, {**APP, "name": name + "x"})


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_in_combined_filters(name: str) -> None:
    """all_of/any_of with hostile names parse, and parentheses keep 'or' inside."""
    node = parse_filter(all_of(any_of(eq("name", name), eq("name", "other")), eq("published", True)))

    assert matches(node, {**APP, "name": name})
    assert not matches(node, {**APP, "name": name, "published": False})


@pytest.mark.parametrize(
    "expression",
    [
        "name eq",
        "name 'x'",
        "name xx 'x'",
        "name eq 'unterminated",
        "name eq 'x' and",
        "(name eq 'x'",
        "name eq 'x')",
        "name eq ''x''",
        'name eq "x"',
        "eq 'x'",
        "name eq 'x' name eq 'y'",
        "na-me eq 'x'",
    ],
)
def test_bad_expressions_cannot_be_parsed(expression: str) -> None:
    """Malformed filters (and OData-style doubled quotes or double quotes) are refused with QRS's message."""
    with pytest.raises(FilterError) as refused:
        parse_filter(expression)

    assert str(refused.value).startswith("Cannot parse the expression")


def test_empty_group_is_invalid_expression() -> None:
    """ "()" is refused as "Invalid expression", as a live QRS does."""
    with pytest.raises(FilterError) as refused:
        parse_filter("()")

    assert str(refused.value) == "Invalid expression"


def test_blank_filter_selects_everything() -> None:
    """An absent or blank filter is no filter."""

    assert parse_filter(None) is None
    assert parse_filter("  ") is None
    assert matches(None, APP)


def test_unknown_property_is_refused() -> None:
    """A property the entity does not have is an error, not a silent non-match."""
    with pytest.raises(FilterError):
        matches(parse_filter("nmae eq 'x'"), APP)


def test_literal_bare_values() -> None:
    """GUIDs, numbers and booleans are bare literals that the parser reads back as such."""
    node = parse_filter(
        f"id eq {literal(APP['id'])} and fileSize eq {literal(2048)} and published eq {literal(True)}"
    )

    assert matches(node, APP)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_filter_over_http(qrs: Any, name: str) -> None:
    """Through the real HTTP path (query_string encoding), a hostile name finds exactly its app."""
    app = qrs.upload(name, b"x")
    qrs.upload(name + " other", b"x")

    url = "/qrs/app/full?" + query_string({"filter": eq("name", name)})
    found = qrs.get(url).json()

    assert [app["id"]] == [a["id"] for a in found]


def test_bad_filter_over_http_is_400_text(qrs: Any) -> None:
    """A bad filter is 400 with QRS's plain-text message."""

    answer = qrs.get("/qrs/app", params={"filter": "name eq"})

    assert (answer.status_code, answer.text.startswith("Cannot parse the expression")) == (400, True)
    assert qrs.get("/qrs/app", params={"filter": "()"}).text == "Invalid expression"
