"""Generic QRS entity endpoints of the sandbox: list, full, count, get, create, update (409 rule), delete."""

from __future__ import annotations

from typing import Any

import pytest

from promoter.sandbox.server import SandboxSite

from .conftest import Qrs


def make_stream(qrs: Qrs, name: str = "Finance") -> dict[str, Any]:
    answer = qrs.post("/qrs/stream", json={"name": name})
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_stream_crud(qrs: Qrs) -> None:
    """A stream can be created (201), read, listed condensed and full, counted, updated, deleted (204)."""
    stream = make_stream(qrs)

    got = qrs.get(f"/qrs/stream/{stream['id']}").json()
    condensed = qrs.get("/qrs/stream").json()
    count = qrs.get("/qrs/stream/count").json()
    renamed = qrs.put(f"/qrs/stream/{stream['id']}", json={**got, "name": "Finance 2"})
    deleted = qrs.delete(f"/qrs/stream/{stream['id']}")
    gone = qrs.get(f"/qrs/stream/{stream['id']}")

    assert stream == got
    assert [{"id": stream["id"], "privileges": None, "name": "Finance"}] == condensed
    assert count == {"value": 1}
    assert (renamed.status_code, renamed.json()["name"]) == (200, "Finance 2")
    assert (deleted.status_code, gone.status_code) == (204, 404)


def test_new_stream_is_owned_by_the_caller(qrs: Qrs) -> None:
    """A stream created without an owner belongs to the X-Qlik-User of the call."""

    stream = make_stream(qrs)

    assert (stream["owner"]["userDirectory"], stream["owner"]["userId"]) == ("INTERNAL", "sa_api")
    assert stream["modifiedByUserName"] == "INTERNAL\\sa_api"


def test_there_is_no_post_app(qrs: Qrs) -> None:
    """Apps are created by upload or copy, never by POST /qrs/app."""

    answer = qrs.post("/qrs/app", json={"name": "x"})

    assert answer.status_code in (404, 405)


def test_put_with_older_modified_date_is_409(qrs: Qrs) -> None:
    """A PUT whose modifiedDate is older than the stored one conflicts; equal or newer passes."""
    stream = make_stream(qrs)
    first = qrs.put(f"/qrs/stream/{stream['id']}", json={**stream, "name": "A"})

    stale = qrs.put(f"/qrs/stream/{stream['id']}", json={**stream, "name": "B"})
    fresh = qrs.put(f"/qrs/stream/{stream['id']}", json={**first.json(), "name": "C"})
    future = qrs.put(
        f"/qrs/stream/{stream['id']}",
        json={**stream, "name": "D", "modifiedDate": "2999-01-01T00:00:00.000Z"},
    )

    assert (
        first.status_code,
        stale.status_code,
        fresh.status_code,
        future.status_code,
    ) == (200, 409, 200, 200)
    assert first.json()["modifiedDate"] > stream["modifiedDate"]


def test_put_without_modified_date_is_409(qrs: Qrs) -> None:
    """QRS requires the modifiedDate in an update body."""
    stream = make_stream(qrs)
    body = {k: v for k, v in stream.items() if k != "modifiedDate"}

    answer = qrs.put(f"/qrs/stream/{stream['id']}", json=body)

    assert answer.status_code == 409


def test_put_with_other_id_is_400(qrs: Qrs) -> None:
    """The id in the body must be the id in the URL."""
    one, other = make_stream(qrs, "one"), make_stream(qrs, "other")

    answer = qrs.put(f"/qrs/stream/{one['id']}", json={**one, "id": other["id"]})

    assert answer.status_code == 400


def test_put_keeps_unknown_fields_and_accepts_reduced_references(qrs: Qrs) -> None:
    """Fields the sandbox does not know survive a PUT; references may be sent as {"id": ...}."""
    stream = make_stream(qrs)
    tag = qrs.post("/qrs/tag", json={"name": "Gold"}).json()

    body = {
        **stream,
        "impactSecurityAccess": False,
        "tags": [{"id": tag["id"]}],
        "owner": {"id": stream["owner"]["id"]},
    }
    updated = qrs.put(f"/qrs/stream/{stream['id']}", json=body).json()

    assert updated["impactSecurityAccess"] is False
    assert [{"id": tag["id"], "privileges": None, "name": "Gold"}] == updated["tags"]
    assert updated["owner"]["userId"] == "sa_api"


def test_unknown_reference_is_400(qrs: Qrs) -> None:
    """A reference to an entity that does not exist is refused."""
    stream = make_stream(qrs)

    answer = qrs.put(
        f"/qrs/stream/{stream['id']}",
        json={**stream, "tags": [{"id": "00000000-0000-0000-0000-0000000000ab"}]},
    )

    assert answer.status_code == 400


def test_custom_property_value_identity(qrs: Qrs, dev: SandboxSite) -> None:
    """A value sent again keeps its id and modifiedDate; a new value gets its own id and modifiedDate."""
    definition = qrs.post(
        "/qrs/custompropertydefinition",
        json={
            "name": "PromotionApproval",
            "valueType": "Text",
            "choiceValues": ["Approve", "Deny"],
            "objectTypes": ["App", "Stream"],
        },
    ).json()
    stream = make_stream(qrs)
    ref = {"id": definition["id"]}

    first = qrs.put(
        f"/qrs/stream/{stream['id']}",
        json={**stream, "customProperties": [{"value": "Deny", "definition": ref}]},
    ).json()
    same = qrs.put(f"/qrs/stream/{stream['id']}", json={**first, "name": "renamed"}).json()
    changed = qrs.put(
        f"/qrs/stream/{stream['id']}",
        json={**same, "customProperties": [{"value": "Approve", "definition": ref}]},
    ).json()

    (deny,), (deny_again,), (approve,) = (
        first["customProperties"],
        same["customProperties"],
        changed["customProperties"],
    )
    assert deny == deny_again
    assert deny["definition"]["name"] == "PromotionApproval"
    assert deny["schemaPath"] == "CustomPropertyValue"
    assert approve["id"] != deny["id"]
    assert approve["modifiedDate"] > deny["modifiedDate"]


@pytest.mark.parametrize("kind", ["app", "stream", "user", "tag", "custompropertydefinition"])
def test_unknown_id_is_404(qrs: Qrs, kind: str) -> None:
    """GET of an id that does not exist is 404 with a plain-text body."""

    answer = qrs.get(f"/qrs/{kind}/6f1e5ac5-2a48-4a43-9c4b-3bbd4e4c5a77")

    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/plain")


def test_count_honours_the_filter(qrs: Qrs) -> None:
    """GET /count answers {"value": N} for the filtered set."""
    make_stream(qrs, "Finance")
    make_stream(qrs, "Sales")

    assert qrs.get("/qrs/stream/count", params={"filter": "name eq 'sales'"}).json() == {"value": 1}
