"""Conformance of the sandbox to the real QRS OpenAPI dump (38.22.0): every path exists, every JSON body fits.

The Swagger 2.0 definitions are turned into JSON Schema: a property may also be null (QRS sends
null for privileges, stream and other absent references), and a body may not carry a property the
definition lacks, so the sandbox cannot invent fields.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from promoter.sandbox.qrs_api import QrsApi
from promoter.sandbox.repository import KINDS
from promoter.sandbox.server import SandboxSite

from .conftest import Qrs, Receiver

DUMP = Path(
    os.environ.get(
        "QSP_QRS_OPENAPI",
        Path(__file__).resolve().parents[3] / "shared" / "reference" / "qrs-openapi-38.22.0.json",
    )
)


@cache
def spec() -> dict[str, Any]:
    if not DUMP.is_file():
        if os.environ.get("CI"):
            raise FileNotFoundError(DUMP)
        pytest.skip(f"QRS OpenAPI dump not found at {DUMP} (set QSP_QRS_OPENAPI)")
    return json.loads(DUMP.read_text(encoding="utf-8"))


def _nullable(schema: Any) -> Any:
    """Swagger 2.0 has no 'nullable'; QRS sends null for absent values, so every property may be null."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            name: {"anyOf": [_nullable(sub), {"type": "null"}]} for name, sub in out["properties"].items()
        }
        out["additionalProperties"] = False
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _nullable(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _nullable(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [_nullable(sub) for sub in out[key]]
    return out


@cache
def definitions() -> dict[str, Any]:
    converted = {name: _nullable(schema) for name, schema in spec()["definitions"].items()}
    # Fields seen in Qlik's own documented answers but absent from the 38.22.0 definitions.
    for name in ("Tag", "CustomPropertyDefinition"):
        converted[name]["properties"]["impactSecurityAccess"] = {"type": ["boolean", "null"]}
    return converted


@cache
def _templates() -> list[tuple[re.Pattern[str], str, frozenset[str]]]:
    compiled = []
    for template, operations in spec()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
        compiled.append((pattern, template, frozenset(operations)))
    return compiled


def template_for(method: str, path: str) -> str | None:
    """The spec path template (under basePath /qrs) that a request path matches, literal segments first."""
    relative = path.removeprefix("/qrs")
    found = [t for pattern, t, ops in _templates() if method.lower() in ops and pattern.match(relative)]
    return min(found, key=lambda t: t.count("{"), default=None)


@cache
def validator(template: str, method: str, status: int) -> jsonschema.Draft4Validator | None:
    response = spec()["paths"][template][method.lower()]["responses"].get(str(status))
    assert response is not None, f"{method} {template} has no {status} response in the spec"
    schema = response.get("schema")
    if schema is None:
        return None
    return jsonschema.Draft4Validator({**_nullable(schema), "definitions": definitions()})


def validate(method: str, path: str, status: int, body: Any) -> None:
    template = template_for(method, path)
    assert template is not None, f"{method} {path} is not a QRS path"
    checker = validator(template, method, status)
    if checker is None:
        assert body is None, f"{method} {template} {status} should have no body"
        return
    if checker.schema.get("type") in ("string", "integer") and isinstance(body, dict):
        assert set(body) == {"value"}, body  # QRS wraps scalars as {"value": ...} (qrs-facts 1.4)
        body = body["value"]
    error = jsonschema.exceptions.best_match(checker.iter_errors(body))
    assert error is None, f"{method} {path} {status}: {list(error.absolute_path)}: {error.message}"


class Recorder:
    """Every /qrs answer seen by a client: method, path, status and JSON body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int, Any]] = []

    def __call__(self, response: httpx.Response) -> None:
        if not response.request.url.path.startswith("/qrs/") or response.status_code >= 400:
            return
        response.read()
        body = response.json() if response.content else None
        self.seen.append((response.request.method, response.request.url.path, response.status_code, body))


def test_every_sandbox_route_exists_in_the_dump(dev: SandboxSite) -> None:
    """Each /qrs path and method the sandbox serves is a real QRS path and method."""
    served = []
    for route in QrsApi(dev.repository).routes():
        if not route.path.startswith("/qrs/"):
            continue
        for method in route.methods or ():
            if method == "HEAD":
                continue
            kinds = KINDS if "{kind}" in route.path else [""]
            served += [(method, route.path.replace("{kind}", kind)) for kind in kinds]

    missing = [
        (m, p)
        for m, p in served
        if p.removeprefix("/qrs") not in spec()["paths"]
        or m.lower() not in spec()["paths"][p.removeprefix("/qrs")]
    ]

    assert missing == [("POST", "/qrs/app")]  # served only to answer 405, as QRS has no POST /qrs/app


def test_every_json_body_matches_the_definitions(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """A scenario through every implemented endpoint; each answer validates against the dump's schema."""
    recorder = Recorder()
    qrs.http.event_hooks["response"].append(recorder)
    _, base = receiver

    qrs.get("/qrs/about")
    for suffix in ("", "/full", "/count", "/local"):
        qrs.get(f"/qrs/servernodeconfiguration{suffix}")
    node = qrs.get("/qrs/servernodeconfiguration/local").json()
    qrs.get(f"/qrs/servernodeconfiguration/{node['id']}")
    definition = qrs.post(
        "/qrs/custompropertydefinition",
        json={"name": "Approval", "choiceValues": ["Approve"], "objectTypes": ["App"]},
    ).json()
    tag = qrs.post("/qrs/tag", json={"name": "Gold"}).json()
    stream = qrs.post("/qrs/stream", json={"name": "Everyone"}).json()
    user = qrs.post(
        "/qrs/user",
        json={
            "userId": "bob",
            "userDirectory": "ACME",
            "attributes": [{"attributeType": "email", "attributeValue": "b@x"}],
        },
    ).json()
    handle = qrs.post(
        "/qrs/notification", params={"name": "app", "changetype": "2"}, json=f"{base}/cb"
    ).json()
    app = qrs.upload("Sales", b"content")
    app = qrs.put(
        f"/qrs/app/{app['id']}",
        json={
            **app,
            "tags": [{"id": tag["id"]}],
            "customProperties": [{"value": "Approve", "definition": {"id": definition["id"]}}],
        },
    ).json()
    for kind, entity in (
        ("custompropertydefinition", definition),
        ("tag", tag),
        ("stream", stream),
        ("user", user),
    ):
        qrs.put(f"/qrs/{kind}/{entity['id']}", json=qrs.get(f"/qrs/{kind}/{entity['id']}").json())
    for kind in KINDS:
        for suffix in ("", "/full", "/count"):
            qrs.get(f"/qrs/{kind}{suffix}")
    qrs.put(f"/qrs/app/{app['id']}/publish", params={"stream": stream["id"]})
    copy = qrs.post(
        f"/qrs/app/{app['id']}/copy", params={"name": "Copy", "includecustomproperties": "true"}
    ).json()
    qrs.put(f"/qrs/app/{copy['id']}/replace", params={"app": app["id"]})
    qrs.post(f"/qrs/app/{app['id']}/reload")
    token = str(uuid.uuid4())
    qrs.post(f"/qrs/app/{app['id']}/export/{token}")
    qrs.delete(f"/qrs/app/{app['id']}/export/{token}")
    qrs.get("/qrs/notification/changes", params={"since": "2000-01-01T00:00:00.000Z", "types": "App,Stream"})
    qrs.delete("/qrs/notification", params={"handle": handle["value"]})
    for kind, entity in (("app", copy), ("stream", stream), ("tag", tag), ("user", user)):
        qrs.delete(f"/qrs/{kind}/{entity['id']}")

    for method, path, status, body in recorder.seen:
        validate(method, path, status, body)
    assert len({(m, template_for(m, p)) for m, p, _, _ in recorder.seen}) >= 30
