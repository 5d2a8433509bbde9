"""The notification route: who is refused, what is rejected, and that an accepted change is stored first.

The webhook runs in a real uvicorn on loopback; its Prefect API is unreachable here, which also shows
that answering QRS never waits for Prefect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from promoter.webhook.app import create_app
from promoter.webhook.outbox import Outbox
from tests.webhook.support import FAST, SECRET, client_for, make_settings, notification, serve, unused_url

URL = f"/qrs/{SECRET}/app-updated"


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "outbox.db"


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[str]:
    """The webhook with a 4 KiB body limit and an unreachable Prefect API."""
    app = create_app(
        make_settings(tmp_path, max_body_bytes=4096),
        prefect_client_factory=client_for(unused_url()),
        submit_policy=FAST,
    )
    with serve(app) as base_url:
        yield base_url


async def stored(outbox_path: Path) -> list[tuple[str, str]]:
    outbox = Outbox(outbox_path)
    await outbox.open()
    try:
        return [(e.app_id, e.kind) for e in await outbox.entries()]
    finally:
        await outbox.close()


async def test_an_app_change_is_stored_before_the_answer(webhook: str, outbox_path: Path) -> None:
    """200 with the count; the change is already in the outbox when QRS gets the answer."""
    app_id = uuid4()
    async with httpx.AsyncClient(base_url=webhook) as client:
        response = await client.post(f"/qrs/{SECRET}/app-reloaded", json=[notification(app_id)])

    assert (response.status_code, response.json()) == (200, {"queued": 1, "ignored": 0})
    assert await stored(outbox_path) == [(str(app_id), "reloaded")]


async def test_other_objects_and_deletions_are_acknowledged_and_dropped(
    webhook: str, outbox_path: Path
) -> None:
    """Only App changes that are not deletions are queued; the rest are answered 200 and forgotten."""
    app_id = uuid4()
    body = [
        notification(uuid4(), objectType="ExecutionResult"),
        notification(uuid4(), changeType=3),
        notification(app_id),
    ]
    async with httpx.AsyncClient(base_url=webhook) as client:
        response = await client.post(URL, json=body)

    assert (response.status_code, response.json()) == (200, {"queued": 1, "ignored": 2})
    assert await stored(outbox_path) == [(str(app_id), "updated")]


@pytest.mark.parametrize(
    "path",
    [
        "/qrs/not-the-secret-at-all-0000/app-updated",
        f"/qrs/{SECRET[:-1]}/app-updated",
        "/qrs/app-updated",
        "/qrs//app-updated",
        "/qrs/not-the-secret-at-all-0000/app-deleted",
    ],
)
async def test_wrong_or_missing_secret_is_401_with_no_detail(
    webhook: str, outbox_path: Path, path: str
) -> None:
    """A wrong, truncated or missing secret gets 401 and an empty body, whatever the rest of the path."""
    async with httpx.AsyncClient(base_url=webhook) as client:
        response = await client.post(path, json=[notification(uuid4())])

    assert (response.status_code, response.content) == (401, b"")
    assert await stored(outbox_path) == []


async def test_source_outside_the_allowed_networks_is_403(tmp_path: Path) -> None:
    """With allowed_networks set, a caller from elsewhere gets 403, even with the secret (here loopback,
    a monitoring network by default: it may connect and read /healthz, never post)."""
    settings = make_settings(tmp_path, allowed_networks=[ip_network("10.0.0.0/8")])
    app = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await client.post(URL, json=[notification(uuid4())])

    assert (response.status_code, response.content) == (403, b"")
    assert await stored(settings.webhook.outbox_path) == []


async def test_loopback_is_accepted_when_allowed(tmp_path: Path) -> None:
    """A caller inside an allowed network is served."""
    settings = make_settings(tmp_path, allowed_networks=[ip_network("127.0.0.0/8")])
    app = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            response = await client.post(URL, json=[notification(uuid4())])

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty body"),
        (b"not json", "not JSON"),
        (b'{"changeType": 2}', "an object, not an array"),
        (
            json.dumps([{"changeType": "2", "objectType": "App", "objectID": str(uuid4())}]).encode(),
            "string type",
        ),
        (json.dumps([{"changeType": 2, "objectType": "App", "objectID": "not-a-uuid"}]).encode(), "bad id"),
        (json.dumps([{"changeType": 2, "objectType": "App"}]).encode(), "no objectID"),
        (json.dumps([notification(uuid4()), 7]).encode(), "one entry is not an object"),
        (b"[" * 5000 + b"]" * 5000, "deeply nested, inside the size limit? no: 10000 bytes"),
        (b"[" * 2000 + b"]" * 2000, "deeply nested"),
    ],
)
async def test_malformed_bodies_are_4xx_and_nothing_is_queued(
    webhook: str, outbox_path: Path, body: bytes, reason: str
) -> None:
    """Anything but a JSON array of change objects is rejected with a 4xx, never a 5xx, and not stored."""
    async with httpx.AsyncClient(base_url=webhook) as client:
        response = await client.post(URL, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code in (400, 413), reason
    assert await stored(outbox_path) == []


async def test_oversized_body_is_413(webhook: str, outbox_path: Path) -> None:
    """A body over webhook.max_body_bytes is refused with 413, declared or streamed without a length."""
    big = json.dumps([notification(uuid4()) for _ in range(20)]).encode()
    assert len(big) > 4096

    async def chunks() -> object:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with httpx.AsyncClient(base_url=webhook) as client:
        declared = await client.post(URL, content=big, headers={"Content-Type": "application/json"})
        streamed = await client.post(URL, content=chunks(), headers={"Content-Type": "application/json"})  # type: ignore[arg-type]

    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert await stored(outbox_path) == []


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonp"]
)
async def test_wrong_content_type_is_415(webhook: str, outbox_path: Path, content_type: str | None) -> None:
    """QRS sends application/json; any other or no Content-Type is refused with 415."""
    headers = {"Content-Type": content_type} if content_type else {}
    async with httpx.AsyncClient(base_url=webhook) as client:
        response = await client.post(
            URL, content=json.dumps([notification(uuid4())]).encode(), headers=headers
        )

    assert response.status_code == 415
    assert await stored(outbox_path) == []


async def test_json_with_charset_is_accepted(webhook: str) -> None:
    """A charset parameter on application/json is fine."""
    async with httpx.AsyncClient(base_url=webhook) as client:
        response = await client.post(
            URL,
            content=json.dumps([notification(uuid4())]).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )

    assert response.status_code == 200


async def test_secret_never_reaches_the_logs(webhook: str, caplog: pytest.LogCaptureFixture) -> None:
    """Accepted, refused and rejected requests, uvicorn's access log included, show the secret masked."""
    caplog.set_level("DEBUG")
    access = logging.getLogger("uvicorn.access")  # does not propagate to the root logger
    access.setLevel("INFO")
    access.addHandler(caplog.handler)
    try:
        async with httpx.AsyncClient(base_url=webhook) as client:
            await client.post(URL, json=[notification(uuid4())])
            await client.post(URL, content=b"nope", headers={"Content-Type": "application/json"})
            await client.post("/qrs/wrong-secret-guess-000000/app-updated", json=[])
    finally:
        access.removeHandler(caplog.handler)

    ours = [r.getMessage() for r in caplog.records if r.name.startswith(("promoter", "uvicorn"))]
    assert all(SECRET not in message for message in ours)
    assert sum('"POST /qrs/***/app-updated HTTP/1.1"' in message for message in ours) == 3


async def test_openapi_documents_the_route(webhook: str) -> None:
    """The OpenAPI document describes the notification route and /healthz."""
    async with httpx.AsyncClient(base_url=webhook) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]

    assert {"/qrs/{secret}/app-{kind}", "/healthz"} <= set(paths)
