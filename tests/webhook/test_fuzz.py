"""Whatever arrives at the notification route, the answer is never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promoter.webhook.app import create_app
from tests.webhook.support import FAST, SECRET, client_for, make_settings, serve, unused_url

URL = f"/qrs/{SECRET}/app-updated"
CHANGE_KEYS = [
    "changeType", "objectType", "objectID", "changedProperties", "engineID", "engineType", "originatorNodeID",
    "originatorHostName", "originatorContextID", "createdDate", "modifiedDate", "schemaPath",
]  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
# Entries that look like QRS's, with each field replaced by anything: reaches deep into validation.
plausible_values = st.one_of(
    json_values,
    st.uuids().map(str),
    st.sampled_from(["App", "Stream", "", "app", "ExecutionResult"]),
    st.integers(min_value=-1, max_value=4),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
)
plausible_changes = st.lists(
    st.dictionaries(st.sampled_from(CHANGE_KEYS) | st.text(max_size=8), plausible_values, max_size=14),
    max_size=4,
)


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One webhook for all examples (8 KiB body limit, Prefect unreachable), and a client for it."""
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        make_settings(tmp, max_body_bytes=8192),
        prefect_client_factory=client_for(unused_url()),
        submit_policy=FAST,
    )
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        yield client


common = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@common
@given(body=st.binary(max_size=10_000))
def test_random_bytes_are_never_a_server_error(webhook: httpx.Client, body: bytes) -> None:
    """Arbitrary bytes labelled as JSON get 400 or 413, never 5xx."""
    response = webhook.post(URL, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code in (200, 400, 413), response.text


@common
@given(value=json_values)
def test_random_json_is_never_a_server_error(webhook: httpx.Client, value: Any) -> None:
    """Any JSON document that is not a list of changes is refused with a 4xx."""
    response = webhook.post(
        URL, content=json.dumps(value).encode(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code in (200, 400, 413), response.text


@common
@given(changes=plausible_changes)
def test_plausible_changes_are_accepted_or_refused_cleanly(webhook: httpx.Client, changes: Any) -> None:
    """Change-shaped entries with wrong fields are refused with 400; valid ones are accepted with 200."""
    response = webhook.post(
        URL, content=json.dumps(changes).encode(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code in (200, 400, 413), response.text


@common
@given(
    content_type=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
    path=st.text(st.sampled_from("abcXYZ019-_.~/%?&=;"), max_size=40),
)
def test_odd_headers_and_paths_are_never_a_server_error(
    webhook: httpx.Client, content_type: str, path: str
) -> None:
    """Strange Content-Types and paths under /qrs/ are answered with a 4xx (or 200 for valid JSON)."""
    response = webhook.post(f"/qrs/{path}", content=b"[]", headers={"Content-Type": content_type})

    assert response.status_code < 500, response.text
