"""What every QRS request looks like on the wire: Xrfkey, X-Qlik-User, encoded query, error mapping.

These are the pure aspects of the client, checked with httpx.MockTransport; the behaviour
against a site is specified in test_client_sandbox.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs
from uuid import uuid4

import httpx
import pytest

from promoter.errors import QrsError, QrsNotFound
from promoter.qrs.client import QrsClient, new_xrfkey, qlik_user_header, transport_failure
from promoter.qrs.filters import eq
from promoter.qrs.retry import RetryPolicy
from promoter.settings import SiteSettings

XRFKEY = re.compile(r"^[0-9a-zA-Z]{16}$")
HOSTILE = "Q1'25 & #1 50% +/-? \\ x\r\nöß"


def client_answering(
    answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request], **site: object
) -> QrsClient:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    settings = SiteSettings(host="127.0.0.1", port=4242, **site)  # type: ignore[arg-type]
    # No certificate folder: a caller-supplied transport owns TLS.
    return QrsClient(
        settings,
        Path("unused"),
        name="dev",
        retry=RetryPolicy.immediate(),
        transport=httpx.MockTransport(record),
    )


def empty_list(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[])


def test_xrfkey_is_sixteen_allowed_characters() -> None:
    """The key uses only 0-9, a-z, A-Z (what QRS allows) and is 16 characters long."""
    keys = {new_xrfkey() for _ in range(200)}

    assert all(XRFKEY.match(key) for key in keys)
    assert len(keys) == 200


async def test_every_request_carries_a_fresh_matching_xrfkey() -> None:
    """The query parameter xrfkey and the header X-Qlik-Xrfkey agree, and differ per request."""
    seen: list[httpx.Request] = []
    async with client_answering(empty_list, seen) as qrs:
        await qrs.apps()
        await qrs.streams()

    keys = [parse_qs(r.url.query.decode())["xrfkey"][0] for r in seen]
    assert keys == [r.headers["X-Qlik-Xrfkey"] for r in seen]
    assert all(XRFKEY.match(k) for k in keys) and keys[0] != keys[1]


async def test_qlik_user_header_is_url_encoded() -> None:
    """X-Qlik-User names the configured directory and user, each URL-encoded as QRS requires."""
    seen: list[httpx.Request] = []
    async with client_answering(empty_list, seen, user_directory="ACME EU", user_id="jörg;x") as qrs:
        await qrs.apps()

    assert seen[0].headers["X-Qlik-User"] == "UserDirectory=ACME%20EU; UserId=j%C3%B6rg%3Bx"
    assert qlik_user_header("INTERNAL", "sa_api") == "UserDirectory=INTERNAL; UserId=sa_api"


async def test_filter_is_percent_encoded_with_spaces_as_20() -> None:
    """Every reserved character of a hostile name is percent-encoded; a space is %20, never '+'."""
    seen: list[httpx.Request] = []
    async with client_answering(empty_list, seen) as qrs:
        await qrs.apps(eq("name", HOSTILE))

    raw = seen[0].url.raw_path.decode("ascii")
    query = raw.split("?", 1)[1]
    assert raw.startswith("/qrs/app/full?filter=name%20eq%20%27Q1%5C%27")
    assert not set("+ #'\\\r\n") & set(query)
    assert eq("name", HOSTILE) == parse_qs(query)["filter"][0]


async def test_a_refused_call_is_not_repeated_and_hides_the_query() -> None:
    """A 404 fails fast as QrsNotFound; its message has the path but no query string or key."""
    seen: list[httpx.Request] = []
    answer = lambda request: httpx.Response(404, text=f"not found: {request.url}")  # noqa: E731
    async with client_answering(answer, seen) as qrs:
        with pytest.raises(QrsNotFound) as caught:
            await qrs.get_app(app_id := uuid4())

    message = str(caught.value)
    assert len(seen) == 1
    assert f"GET /qrs/app/{app_id} -> 404" in message
    assert "xrfkey" not in message and seen[0].headers["X-Qlik-Xrfkey"] not in message


async def test_a_transport_failure_is_a_qrs_error_without_status() -> None:
    """A connection failure becomes QrsError with status None (transient), after the retries."""
    seen: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    async with client_answering(refuse, seen) as qrs:
        with pytest.raises(QrsError) as caught:
            await qrs.about()

    assert (caught.value.status, caught.value.transient, len(seen)) == (None, True, 3)
    assert "xrfkey" not in str(caught.value) and "ConnectError" in str(caught.value)


async def test_a_notification_body_is_the_url_as_a_json_string() -> None:
    """POST /qrs/notification sends the callback URL as a JSON string literal and reads {"value"}."""
    seen: list[httpx.Request] = []
    handle = uuid4()
    answer = lambda request: httpx.Response(201, json={"value": str(handle)})  # noqa: E731
    async with client_answering(answer, seen) as qrs:
        got = await qrs.create_notification("http://127.0.0.1:8787/notify?s=a b", property_name="publishTime")

    query = parse_qs(seen[0].url.query.decode())
    assert handle == got
    assert seen[0].content == b'"http://127.0.0.1:8787/notify?s=a b"'
    assert (query["name"][0], query["changetype"][0], query["propertyname"][0]) == ("App", "2", "publishTime")


def test_a_connection_reset_without_an_answer_points_at_the_client_certificate(tmp_path: Path) -> None:
    """TLS 1.3 sites refuse a client certificate after the handshake; when that close races the
    request, the client sees a reset, and the message says where to look."""
    reset = httpx.ReadError("[Errno 104] Connection reset by peer")
    reset.__cause__ = ConnectionResetError(104, "Connection reset by peer")

    text = transport_failure(reset, tmp_path)

    assert text.startswith("TLS closed by the site") and "client.pem" in text
    assert "Connection reset by peer" in text
