"""Hostile notification bodies: deep nesting, foreign encodings, huge numbers, NaN, impossible times.

Each is answered with a 4xx, never a 5xx, and nothing reaches the outbox. Wrong and missing
secrets, other source networks, wrong Content-Types and body sizes are covered by
tests/webhook/test_receiver.py, and random bytes and JSON by tests/webhook/test_fuzz.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promoter.errors import IntakeError
from promoter.intake import parse_changes
from promoter.qrs.models import format_qrs_time
from promoter.webhook.app import create_app
from promoter.webhook.outbox import MAX_WAITING_PER_APP, Outbox
from tests.webhook.support import FAST, SECRET, client_for, make_settings, notification, serve, unused_url

pytestmark = pytest.mark.security

URL = f"/qrs/{SECRET}/app-updated"
JSON = {"Content-Type": "application/json"}


def entry(**fields: Any) -> str:
    """One change entry as JSON text, with fields replaced by raw JSON text (NaN, 1e400 ...)."""
    base = notification(uuid4())
    raw = {key: fields.pop(key) for key in list(fields) if isinstance(fields[key], RawJson)}
    text = json.dumps({**base, **fields})
    for key, value in raw.items():
        if key in base:
            text = text.replace(f'"{key}": {json.dumps(base[key])}', f'"{key}": {value}', 1)
        else:  # a key QRS does not send (yet)
            text = text[:-1] + f', "{key}": {value}}}'
        assert value in text, f"{key} not replaced"
    return text


class RawJson(str):
    """JSON text put into a body as it is (json.dumps would refuse or quote it)."""


VALID = f"[{entry()}]"
UTF8 = "application/json"


def one(**fields: Any) -> bytes:
    """A body with one change entry whose fields are replaced."""
    return f"[{entry(**fields)}]".encode()


def undecodable(replacement: str) -> bytes:
    """The valid body with "App" replaced by bytes that are not UTF-8 (given as surrogate escapes)."""
    return VALID.replace('"App"', f'"{replacement}"').encode("utf-8", "surrogateescape")


HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {
    "10,000 nested arrays": (b"[" * 10_000 + b"]" * 10_000, UTF8),
    "10,000 nested objects": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, UTF8),
    "10,000 nested arrays in a change": (one(changedProperties=RawJson("[" * 10_000 + "]" * 10_000)), UTF8),
    "UTF-16 with BOM": (VALID.encode("utf-16"), "application/json; charset=utf-16"),
    "UTF-16-LE without BOM": (VALID.encode("utf-16-le"), UTF8),
    "UTF-32": (VALID.encode("utf-32"), UTF8),
    "UTF-8 BOM": (b"\xef\xbb\xbf" + VALID.encode(), UTF8),
    "invalid UTF-8 in a string": (undecodable("A\udcffpp"), UTF8),
    "overlong UTF-8 quote": (undecodable("A\udcc0\udca2pp"), UTF8),
    "lone surrogate escape": (VALID.replace('"App"', '"\\ud800"').encode(), UTF8),
    "5,000-digit changeType": (one(changeType=RawJson("9" * 5000)), UTF8),
    "changeType 1e400": (one(changeType=RawJson("1e400")), UTF8),
    "changeType NaN": (one(changeType=RawJson("NaN")), UTF8),
    "changeType Infinity": (one(changeType=RawJson("Infinity")), UTF8),
    "changeType -Infinity": (one(changeType=RawJson("-Infinity")), UTF8),
    "changeType 2.0": (one(changeType=RawJson("2.0")), UTF8),
    "objectID a huge number": (one(objectID=RawJson("1" * 4000)), UTF8),
    "objectID NaN": (one(objectID=RawJson("NaN")), UTF8),
    "modifiedDate 9999-12-31 at -23:59": (one(modifiedDate="9999-12-31T23:59:59.000-23:59"), UTF8),
    "createdDate 0001-01-01 at +23:59": (one(createdDate="0001-01-01T00:00:00.000+23:59"), UTF8),
    "modifiedDate a huge number": (one(modifiedDate=RawJson("9" * 400)), UTF8),
    "a NUL byte between tokens": (VALID.replace(", ", ",\x00 ", 1).encode(), UTF8),
}


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    """The webhook with the production body limit (1 MiB, so deep nesting is parsed, not refused
    for size) and an unreachable Prefect API; a client for it and its outbox file."""
    settings = make_settings(tmp_path_factory.mktemp("intake"))
    app = create_app(settings, prefect_client_factory=client_for(unused_url()), submit_policy=FAST)
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        yield client, settings.webhook.outbox_path


async def outbox_size(path: Path) -> int:
    outbox = Outbox(path)
    await outbox.open()
    try:
        return len(await outbox.entries())
    finally:
        await outbox.close()


@pytest.mark.parametrize(("body", "content_type"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
async def test_hostile_bodies_are_refused_with_a_4xx_and_nothing_is_queued(
    webhook: tuple[httpx.Client, Path], body: bytes, content_type: str
) -> None:
    """Deep nesting, UTF-16/32, a BOM, invalid UTF-8, huge numbers, NaN, Infinity and times with no UTC
    form: 400, never a 5xx, and the outbox stays as it was."""
    client, outbox = webhook
    before = await outbox_size(outbox)

    response = client.post(URL, content=body, headers={"Content-Type": content_type})

    assert response.status_code == 400, response.text[:200]
    assert await outbox_size(outbox) == before


async def test_extra_keys_with_nan_or_huge_numbers_are_tolerated_and_stored_as_strict_json(
    webhook: tuple[httpx.Client, Path],
) -> None:
    """QRS may add keys, so unknown ones are kept; NaN or a 4,000-digit number in one is accepted,
    and the payload stored for the change is still strict JSON (no NaN literal)."""
    client, outbox = webhook
    body = f"[{entry(futureKey=RawJson('NaN'))}, {entry(futureCount=RawJson('7' * 4000))}]"

    response = client.post(URL, content=body.encode(), headers=JSON)
    stored = Outbox(outbox)
    await stored.open()
    try:
        payloads = [e.payload for e in await stored.entries()][-2:]
    finally:
        await stored.close()

    assert (response.status_code, response.json()) == (200, {"queued": 2, "ignored": 0})
    for payload in payloads:
        json.loads(payload, parse_constant=lambda name: pytest.fail(f"{name} stored in a payload"))


# Times QRS could never write, and the edges of the calendar in every UTC offset.
offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
qrs_times = st.builds(
    lambda moment, offset: moment.replace(tzinfo=timezone(offset)).isoformat(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    offsets.map(lambda d: timedelta(minutes=d // timedelta(minutes=1))),
)
edge_times = st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "1753-01-01T00:00:00.000Z"])


@settings(max_examples=300, deadline=None)
@given(
    modified=qrs_times | edge_times | st.integers() | st.floats() | st.none(),
    created=qrs_times | edge_times | st.none(),
    change_type=st.integers(min_value=-2, max_value=5) | st.floats() | st.booleans(),
)
def test_whatever_intake_accepts_can_be_queued(modified: Any, created: Any, change_type: Any) -> None:
    """Property: a change that parse_changes() accepts can always be written to the outbox (its
    payload as JSON and its modifiedDate in QRS form), so the route can never fail after parsing."""
    body = json.dumps(
        [notification(uuid4(), modifiedDate=modified, createdDate=created, changeType=change_type)]
    )

    try:
        changes = parse_changes(body.encode())
    except IntakeError:
        return

    for change in changes:
        change.model_dump_json(by_alias=True)
        if change.modified_date is not None:
            assert format_qrs_time(change.modified_date).endswith("Z")
            assert change.modified_date.astimezone(UTC).year >= 1


def minimal_changes(count: int) -> list[dict[str, Any]]:
    """``count`` app updates with only the fields intake requires, each for another app."""
    return [{"changeType": 2, "objectType": "App", "objectID": str(uuid4())} for _ in range(count)]


async def test_one_body_cannot_ask_for_thousands_of_flow_runs(webhook: tuple[httpx.Client, Path]) -> None:
    """A body just under the 1 MiB limit made of minimal app changes (12,000 apps) is refused with
    413 and queues nothing; the most one notification may carry, 500 by default, is accepted."""
    client, outbox = webhook
    flood = minimal_changes(12_000)
    body = json.dumps(flood, separators=(",", ":")).encode()
    assert len(body) <= 1_048_576
    before = await outbox_size(outbox)

    refused = client.post(URL, content=body, headers=JSON)
    queued_after_refusal = await outbox_size(outbox) - before
    accepted = client.post(URL, json=minimal_changes(500))

    assert (refused.status_code, queued_after_refusal) == (413, 0)
    assert "at most 500" in refused.json()["detail"]
    assert (accepted.status_code, accepted.json()) == (200, {"queued": 500, "ignored": 0})


async def test_a_flood_for_one_app_keeps_only_its_newest_notices(webhook: tuple[httpx.Client, Path]) -> None:
    """Five hundred changes of one app in one notification are all acknowledged, but only the newest
    20 wait in the outbox: one flow run covers them all, so the rest would only fill the disk."""
    client, outbox = webhook
    app_id = str(uuid4())
    flood = [{"changeType": 2, "objectType": "App", "objectID": app_id} for _ in range(500)]

    response = client.post(URL, json=flood)
    stored = Outbox(outbox)
    await stored.open()
    try:
        waiting = [e for e in await stored.entries(pending_only=True) if e.app_id == app_id]
    finally:
        await stored.close()

    assert (response.status_code, response.json()) == (200, {"queued": 500, "ignored": 0})
    assert len(waiting) == MAX_WAITING_PER_APP == 20
