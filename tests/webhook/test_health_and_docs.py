"""/healthz and the API docs: who may read them, what they cost, and a schema that describes real bodies.

The webhook runs in a real uvicorn on loopback with an unreachable Prefect API; sources are told
apart by binding the client to 127.0.0.x.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import ip_network
from math import ceil
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from promoter.webhook.app import create_app
from tests.webhook.support import FAST, SECRET, client_for, make_settings, notification, serve, unused_url

URL = f"/qrs/{SECRET}/app-updated"
STATUS_PATHS = ["/healthz", "/docs", "/redoc", "/openapi.json"]


def client_from(source: str, base_url: str) -> httpx.AsyncClient:
    """A client whose connections come from ``source`` (a loopback address)."""
    return httpx.AsyncClient(base_url=base_url, transport=httpx.AsyncHTTPTransport(local_address=source))


async def test_health_and_docs_answer_only_allowed_and_monitoring_networks(tmp_path: Path) -> None:
    """A monitoring host reads /healthz and the docs but may not post; QRS's network may do both."""
    settings = make_settings(
        tmp_path,
        allowed_networks=[ip_network("127.0.0.2/32")],
        monitoring_networks=[ip_network("127.0.0.3/32")],
    )
    app = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with serve(app) as base_url:
        async with client_from("127.0.0.2", base_url) as qrs, client_from("127.0.0.3", base_url) as monitor:
            by_qrs = [(await qrs.get(path)).status_code for path in STATUS_PATHS]
            by_monitor = [(await monitor.get(path)).status_code for path in STATUS_PATHS]
            posted_by_qrs = await qrs.post(URL, json=[notification("7b7a4bd2-0000-4000-8000-000000000001")])
            posted_by_monitor = await monitor.post(
                URL, json=[notification("7b7a4bd2-0000-4000-8000-000000000002")]
            )

    assert (by_qrs, by_monitor) == ([200] * 4, [200] * 4)
    assert (posted_by_qrs.status_code, posted_by_monitor.status_code, posted_by_monitor.content) == (
        200,
        403,
        b"",
    )


async def test_health_is_worked_out_at_most_once_a_second(tmp_path: Path) -> None:
    """However often /healthz is asked, at once or one after another, the outbox and the ledger (the
    last subscription check) are read at most once per second."""
    asked: list[float] = []

    def last_check() -> datetime:
        asked.append(time.monotonic())
        return datetime(2026, 5, 1, tzinfo=UTC)

    app = create_app(
        make_settings(tmp_path),
        prefect_client_factory=client_for(unused_url()),
        submit_policy=FAST,
        last_subscription_check=last_check,
    )
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            started = time.monotonic()
            at_once = await asyncio.gather(*(client.get("/healthz") for _ in range(20)))
            one_by_one = [await client.get("/healthz") for _ in range(20)]
            took = time.monotonic() - started

    answers = {r.json()["last_subscription_check"] for r in at_once + one_by_one}
    assert answers == {"2026-05-01T00:00:00Z"}
    assert 1 <= len(asked) <= ceil(took) + 1, (len(asked), took)


@pytest.mark.parametrize(("method", "path"), [("POST", "/qrs"), ("GET", "/healthz/"), ("GET", "/docs/")])
async def test_nothing_redirects_to_the_host_a_caller_names(tmp_path: Path, method: str, path: str) -> None:
    """A path with or without a trailing slash is answered where it is asked, never with a redirect to
    the host in the request's Host header."""
    app = create_app(
        make_settings(tmp_path), prefect_client_factory=client_for(unused_url()), submit_policy=FAST
    )
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await client.request(method, path, headers={"Host": "evil.example"}, json=[])

    assert not response.is_redirect
    assert "location" not in response.headers


# -- the OpenAPI document ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The webhook with its production limits and an unreachable Prefect API, and a client for it."""
    app = create_app(
        make_settings(tmp_path_factory.mktemp("openapi")),
        prefect_client_factory=client_for(unused_url()),
        submit_policy=FAST,
    )
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        yield client


def references(node: Any) -> Iterator[str]:
    """Every $ref in a JSON document."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def resolver_for(document: dict[str, Any]) -> Any:
    resource = DRAFT202012.create_resource(document)
    return Registry().with_resource("urn:webhook-openapi", resource).resolver("urn:webhook-openapi")


def resolved(node: Any, resolver: Any) -> Any:
    """``node`` with every $ref replaced by what it points at (the webhook's schemas are not recursive)."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            return resolved(resolver.lookup(node["$ref"]).contents, resolver)
        return {key: resolved(value, resolver) for key, value in node.items()}
    if isinstance(node, list):
        return [resolved(value, resolver) for value in node]
    return node


def body_schema(document: dict[str, Any]) -> dict[str, Any]:
    operation = document["paths"]["/qrs/{secret}/app-{kind}"]["post"]
    return resolved(operation["requestBody"]["content"]["application/json"]["schema"], resolver_for(document))


def test_every_reference_in_the_openapi_document_resolves(webhook: httpx.Client) -> None:
    """Each $ref in /openapi.json points at something in the document, and the notification body schema
    is a valid JSON Schema that caps the changes per notification."""
    document = webhook.get("/openapi.json").json()
    resolver = resolver_for(document)

    unresolvable = []
    for ref in sorted(set(references(document))):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            unresolvable.append(ref)
    schema = body_schema(document)

    assert unresolvable == []
    jsonschema.Draft202012Validator.check_schema(schema)
    assert (schema["type"], schema["maxItems"]) == ("array", 500)


# A strategy from a JSON Schema, for the keywords the body schema uses; any other keyword fails the
# test, so a schema change the generator cannot follow is noticed instead of generating wrong bodies.
KNOWN_KEYWORDS = {
    "type", "properties", "required", "items", "anyOf", "format", "minimum", "maximum", "maxItems",
    "additionalProperties", "title", "description", "default",
}  # fmt: skip
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
date_times = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
    offsets,
)
STRING_FORMATS = {"uuid": st.uuids().map(str), "date-time": date_times}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    unknown = set(schema) - KNOWN_KEYWORDS
    assert not unknown, f"the generator does not know {unknown}"
    if "anyOf" in schema:
        return st.one_of([from_schema(option) for option in schema["anyOf"]])
    kind = schema["type"]
    if kind == "object":
        properties = {name: from_schema(sub) for name, sub in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: s for name, s in properties.items() if name in required},
            optional={name: s for name, s in properties.items() if name not in required},
        )
    if kind == "array":  # at most 5 items: the size cap is checked above, not by posting 500
        return st.lists(from_schema(schema["items"]), max_size=min(schema.get("maxItems", 5), 5))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "string":
        return STRING_FORMATS[schema["format"]] if "format" in schema else st.text(max_size=30)
    return {"null": st.none(), "boolean": st.booleans()}[kind]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bodies_generated_from_the_published_schema_are_accepted(
    webhook: httpx.Client, data: st.DataObject
) -> None:
    """Property: a body generated from the schema in /openapi.json (valid against it, as jsonschema
    confirms) is accepted with 200, and every change in it is queued or ignored."""
    schema = body_schema(webhook.get("/openapi.json").json())
    body = data.draw(from_schema(schema))
    jsonschema.validate(body, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    response = webhook.post(
        URL, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200, response.text
    assert sum(response.json().values()) == len(body)
