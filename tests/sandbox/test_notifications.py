"""Change notifications: subscriptions, what QRS POSTs to the callback, and the change journal."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from promoter.qrs.models import Change
from promoter.sandbox.server import SandboxSite

from .conftest import Qrs, Receiver

EXTERNAL_CHANGE_INFO_KEYS = {
    "changeType",
    "objectType",
    "objectID",
    "changedProperties",
    "engineID",
    "engineType",
    "originatorNodeID",
    "originatorHostName",
    "originatorContextID",
    "createdDate",
    "modifiedDate",
    "schemaPath",
}


def subscribe(qrs: Qrs, url: str, **params: Any) -> str:
    answer = qrs.post("/qrs/notification", params={"name": "app", **params}, json=url)
    assert answer.status_code == 201, answer.text
    return answer.json()["value"]


def test_reload_notification_has_the_exact_qrs_shape(
    qrs: Qrs, dev: SandboxSite, receiver: tuple[Receiver, str]
) -> None:
    """A reload POSTs a JSON array of ExternalChangeInfo with QRS's 12 keys, changeType 2 as a number."""
    inbox, base = receiver
    app = qrs.upload("Reloaded", b"x")
    subscribe(qrs, f"{base}/app/update/reloaded", changeType="update", propertyName="lastReloadTime")

    qrs.post(f"/qrs/app/{app['id']}/reload")

    (post,) = inbox.wait_for(1)
    (change,) = json.loads(post["body"])
    stored = qrs.get(f"/qrs/app/{app['id']}").json()
    assert (post["method"], post["path"]) == ("POST", "/app/update/reloaded")
    assert post["headers"]["content-type"] == "application/json"
    assert set(change) == EXTERNAL_CHANGE_INFO_KEYS
    assert (change["changeType"], change["objectType"], change["objectID"]) == (2, "App", app["id"])
    assert {"lastReloadTime", "modifiedDate"} <= set(change["changedProperties"])
    assert (change["engineID"], change["engineType"], change["originatorContextID"]) == ("", "", None)
    assert change["originatorNodeID"] == dev.repository.node_id
    assert (change["createdDate"], change["modifiedDate"]) == (stored["createdDate"], stored["modifiedDate"])
    assert change["schemaPath"] == "ExternalChangeInfo"
    assert Change.model_validate(change).object_id.hex == app["id"].replace("-", "")


def test_handle_is_returned_as_value_and_delete_removes_it(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """POST answers {"value": handle}; DELETE ?handle= is 204, a second DELETE 404; no more POSTs after it."""
    inbox, base = receiver
    app = qrs.upload("A", b"x")
    handle = subscribe(qrs, f"{base}/gone", changetype="2")
    keep = subscribe(qrs, f"{base}/kept", changetype="2")

    deleted = qrs.delete("/qrs/notification", params={"handle": handle})
    again = qrs.delete("/qrs/notification", params={"handle": handle})
    qrs.post(f"/qrs/app/{app['id']}/reload")

    inbox.wait_for(1)
    assert (deleted.status_code, again.status_code) == (204, 404)
    assert [p["path"] for p in inbox.posts] == ["/kept"]
    assert keep != handle


def test_property_name_limits_updates_to_that_property(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """propertyName=publishTime delivers a publish, not a rename; '!publishTime' delivers the rename only."""
    inbox, base = receiver
    app = qrs.upload("A", b"x")
    stream = qrs.post("/qrs/stream", json={"name": "S"}).json()
    subscribe(qrs, f"{base}/published", changetype="Update", propertyname="publishTime")
    subscribe(qrs, f"{base}/other", changetype="Update", propertyname="!publishTime")

    renamed = qrs.put(f"/qrs/app/{app['id']}", json={**app, "name": "B"}).json()
    qrs.put(f"/qrs/app/{renamed['id']}/publish", params={"stream": stream["id"]})

    inbox.wait_for(2)
    by_path: dict[str, list[list[str]]] = {}
    for post in inbox.posts:
        by_path.setdefault(post["path"], []).extend(c["changedProperties"] for c in json.loads(post["body"]))
    assert by_path["/other"][:1] == [["name", "modifiedDate"]]
    assert "publishTime" in by_path["/published"][0]
    assert len(by_path["/published"]) == 1


def test_filter_applies_to_updates_but_not_deletes(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """A filtered subscription hears updates of matching apps only, but every deletion of the type."""
    inbox, base = receiver
    wanted = qrs.upload("Wanted", b"x")
    other = qrs.upload("Other", b"x")
    subscribe(qrs, f"{base}/cb", filter="name eq 'wanted'")

    qrs.post(f"/qrs/app/{other['id']}/reload")
    qrs.post(f"/qrs/app/{wanted['id']}/reload")
    qrs.delete(f"/qrs/app/{other['id']}")

    changes = _all_changes(inbox, 2)
    assert [(2, wanted["id"]), (3, other["id"])] == [(c["changeType"], c["objectID"]) for c in changes]


def _all_changes(inbox: Receiver, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` changes arrived, however the sandbox batched them into POSTs."""
    for posts in range(1, count + 1):
        inbox.wait_for(posts)
        if len(inbox.changes()) >= count:
            break
    return inbox.changes()


def test_add_and_delete_change_types(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """changetype=Add hears uploads and copies; changetype=3 hears deletions."""
    inbox, base = receiver
    subscribe(qrs, f"{base}/add", changetype="add")
    subscribe(qrs, f"{base}/delete", changetype="3")

    app = qrs.upload("New", b"x")
    qrs.delete(f"/qrs/app/{app['id']}")

    changes = _all_changes(inbox, 2)
    assert [(1, app["id"]), (3, app["id"])] == [(c["changeType"], c["objectID"]) for c in changes]


def test_subscription_to_one_id(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """id= limits a subscription to one entity."""
    inbox, base = receiver
    one, two = qrs.upload("One", b"x"), qrs.upload("Two", b"x")
    subscribe(qrs, f"{base}/one", id=one["id"])

    qrs.post(f"/qrs/app/{two['id']}/reload")
    qrs.post(f"/qrs/app/{one['id']}/reload")

    assert [one["id"]] == [c["objectID"] for c in _all_changes(inbox, 1)]


def test_a_burst_is_delivered_completely(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """Ten quick changes all arrive, possibly batched into fewer POSTs, in order."""
    inbox, base = receiver
    app = qrs.upload("Busy", b"x")
    subscribe(qrs, f"{base}/cb", changetype="2", propertyname="lastReloadTime")

    for _ in range(10):
        qrs.post(f"/qrs/app/{app['id']}/reload")

    changes = _all_changes(inbox, 10)
    assert len(changes) == 10
    assert len(inbox.posts) <= 10
    assert [c["modifiedDate"] for c in changes] == sorted(c["modifiedDate"] for c in changes)


def test_restart_drops_subscriptions(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """After a repository restart (POST /sandbox/restart) old subscriptions no longer deliver."""
    inbox, base = receiver
    app = qrs.upload("A", b"x")
    subscribe(qrs, f"{base}/before")

    restarted = qrs.http.post("/sandbox/restart")
    qrs.post(f"/qrs/app/{app['id']}/reload")
    subscribe(qrs, f"{base}/after")
    qrs.post(f"/qrs/app/{app['id']}/reload")

    inbox.wait_for(1)
    assert restarted.status_code == 204
    assert [p["path"] for p in inbox.posts] == ["/after"]


def test_failed_delivery_is_logged(qrs: Qrs, dev: SandboxSite) -> None:
    """A callback nobody listens on is recorded with its error (GET /sandbox/notifications), not retried."""
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    subscribe(qrs, f"http://127.0.0.1:{port}/nobody")

    qrs.upload("A", b"x")

    (entry,) = dev.wait_for_notifications(1)
    assert (entry["status"], entry["url"]) == (None, f"http://127.0.0.1:{port}/nobody")
    assert "ConnectError" in entry["error"]
    assert qrs.http.get("/sandbox/notifications").json()[0]["url"] == entry["url"]


def test_delivery_log_records_status(qrs: Qrs, dev: SandboxSite, receiver: tuple[Receiver, str]) -> None:
    """The log keeps the URL, the posted changes and the receiver's status code."""
    inbox, base = receiver
    inbox.status = 500
    subscribe(qrs, f"{base}/cb")

    app = qrs.upload("A", b"x")

    (entry,) = dev.wait_for_notifications(1)
    assert (entry["url"], entry["status"]) == (f"{base}/cb", 500)
    assert entry["body"][0]["objectID"] == app["id"]


def test_subscription_validation(qrs: Qrs) -> None:
    """name is required, changetype is 0-3 or a name, the filter parses, the body is a URL string."""
    url = "http://127.0.0.1:1/cb"

    missing_name = qrs.post("/qrs/notification", json=url)
    bad_type = qrs.post("/qrs/notification", params={"name": "app", "changetype": "9"}, json=url)
    bad_filter = qrs.post("/qrs/notification", params={"name": "app", "filter": "name eq"}, json=url)
    bad_body = qrs.post("/qrs/notification", params={"name": "app"}, json={"url": url})

    assert [r.status_code for r in (missing_name, bad_type, bad_filter, bad_body)] == [400, 400, 400, 400]


def test_changes_since(qrs: Qrs) -> None:
    """GET /qrs/notification/changes lists ChangesSinceOutputCondensed entries of the asked types."""
    since = datetime.now(UTC) - timedelta(seconds=5)
    app = qrs.upload("A", b"x")
    qrs.post("/qrs/stream", json={"name": "S"})
    qrs.post(f"/qrs/app/{app['id']}/reload")

    changes = qrs.get("/qrs/notification/changes", params={"since": since.isoformat(), "types": "App"}).json()

    assert [(1, app["id"]), (2, app["id"])] == [(c["changeType"], c["id"]) for c in changes]
    assert {"App"} == {c["type"] for c in changes}
    assert {"id", "createdDate", "modifiedDate", "modifiedByUserName", "schemaPath"} == set(
        changes[0]["object"]
    )
    assert qrs.get("/qrs/notification/changes", params={"types": "App"}).status_code == 400


def test_delivery_does_not_block_the_change(qrs: Qrs, receiver: tuple[Receiver, str]) -> None:
    """A slow callback receiver does not slow down the QRS call that caused the change."""
    inbox, base = receiver
    inbox.delay = 1.0
    app = qrs.upload("A", b"x")
    subscribe(qrs, f"{base}/slow")

    began = time.monotonic()
    qrs.post(f"/qrs/app/{app['id']}/reload")
    took = time.monotonic() - began

    inbox.wait_for(1)
    assert took < 0.5
