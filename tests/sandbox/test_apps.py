"""App life cycle on the sandbox: upload, two-step export, publish, replace, copy, reload, delete."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from promoter.sandbox.server import Sandbox, SandboxSite
from promoter.sandbox.synthetic import DATA_MARKER, make_app_file, metadata_length

from .conftest import Qrs

HOSTILE_NAME = "Q1'25 & #5 % + / ? \\ sales\r\nreport – Ünïcødé"


def export(qrs: Qrs, app_id: str, skip_data: bool = False) -> tuple[dict[str, Any], bytes]:
    started = qrs.post(
        f"/qrs/app/{app_id}/export/{uuid.uuid4()}", params={"skipData": str(skip_data).lower()}
    )
    assert started.status_code == 201, started.text
    answer = started.json()
    download = qrs.http.get(answer["downloadPath"])  # at the host root, no /qrs
    assert download.status_code == 200, download.text
    return answer, download.content


def test_upload_then_get_and_full(qrs: Qrs) -> None:
    """An uploaded app is 201, owned by the caller, unpublished, and visible by id and by filter."""

    app = qrs.upload("Sales", b"any bytes at all")

    assert (app["name"], app["published"], app["stream"]) == ("Sales", False, None)
    assert app["publishTime"] == "1753-01-01T00:00:00.000Z"
    assert app["owner"]["userId"] == "sa_api"
    assert app["fileSize"] == 16
    assert app == qrs.get(f"/qrs/app/{app['id']}").json()
    assert [app] == qrs.get("/qrs/app/full", params={"filter": f"id eq {app['id']}"}).json()


@pytest.mark.parametrize("size", [1, 70_000, 3 * 1024 * 1024 + 17])
def test_raw_upload_export_round_trip_is_byte_identical(qrs: Qrs, tmp_path: Path, size: int) -> None:
    """What is uploaded comes back byte for byte from the two-step export."""
    content = make_app_file(tmp_path / "app.qvf", size, seed=str(size)).read_bytes()
    app = qrs.upload("Round trip", content)

    answer, downloaded = export(qrs, app["id"])

    assert content == downloaded
    assert ("AppExportResponse", app["id"], False) == (
        answer["schemaPath"],
        answer["appId"],
        answer["cancelled"],
    )


def test_chunked_upload(qrs: Qrs) -> None:
    """A chunked request body (no Content-Length), as qsAPI and Qlik-Cli send, is accepted."""
    parts = [b"part-one|", b"part-two|", b"part-three"]

    answer = qrs.post(
        "/qrs/app/upload",
        params={"name": "Chunked"},
        content=iter(parts),
        headers={"Content-Type": "application/vnd.qlik.sense.app"},
    )

    assert answer.status_code == 201
    assert b"".join(parts) == export(qrs, answer.json()["id"])[1]


@pytest.mark.parametrize("field", ["qvfFile", "file"])
def test_multipart_upload_round_trip(qrs: Qrs, tmp_path: Path, field: str) -> None:
    """A multipart upload (ctrl-q's qvfFile, go-qlik's file) stores exactly the file part."""
    content = make_app_file(tmp_path / "app.qvf", 200_000).read_bytes()

    answer = qrs.post(
        "/qrs/app/upload",
        params={"name": "Multipart"},
        files={field: ("app.qvf", content, "application/vnd.qlik.sense.app")},
    )

    assert answer.status_code == 201, answer.text
    assert content == export(qrs, answer.json()["id"])[1]


def test_export_skip_data_drops_the_data_part(qrs: Qrs, tmp_path: Path) -> None:
    """skipData=true exports only the metadata part of the app."""
    path = make_app_file(tmp_path / "app.qvf", 100_000, metadata_bytes=5000)
    app = qrs.upload("With data", path.read_bytes())

    _, without = export(qrs, app["id"], skip_data=True)
    _, with_data = export(qrs, app["id"], skip_data=False)

    assert path.read_bytes()[: metadata_length(path)] == without
    assert len(without) == 5000
    assert DATA_MARKER not in without
    assert path.read_bytes() == with_data


def test_upload_keepdata_false_drops_the_data_part(qrs: Qrs, tmp_path: Path) -> None:
    """keepdata=false silently discards the data of the uploaded app."""
    path = make_app_file(tmp_path / "app.qvf", 50_000, metadata_bytes=1000)

    app = qrs.upload("No data", path.read_bytes(), keepdata="false")

    assert app["fileSize"] == 1000


def test_export_download_is_one_time(qrs: Qrs) -> None:
    """An export can be downloaded once; the second GET of the same path is 404."""
    app = qrs.upload("Once", b"abc")
    answer, _ = export(qrs, app["id"])

    again = qrs.http.get(answer["downloadPath"])

    assert again.status_code == 404


def test_download_path_shape(qrs: Qrs, dev: SandboxSite) -> None:
    """downloadPath is /tempcontent/<guid>/<url-encoded name>.qvf?serverNodeId=<node id>."""
    app = qrs.upload("Operations Monitor", b"abc")

    answer = qrs.post(f"/qrs/app/{app['id']}/export/{uuid.uuid4()}").json()

    prefix, rest = answer["downloadPath"].split("/", 3)[1:3], answer["downloadPath"].split("/", 3)[3]
    assert prefix[:1] == ["tempcontent"]
    uuid.UUID(prefix[1])
    assert f"Operations%20Monitor.qvf?serverNodeId={dev.repository.node_id}" == rest


def test_hostile_name_survives_upload_and_export(qrs: Qrs) -> None:
    """Any characters in a name reach QRS and come back unchanged; the download path stays valid."""
    app = qrs.upload(HOSTILE_NAME, b"abc")

    answer, content = export(qrs, app["id"])

    assert app["name"] == HOSTILE_NAME
    assert content == b"abc"
    assert "#" not in answer["downloadPath"] and "\n" not in answer["downloadPath"]


def test_publish_sets_stream_published_and_publish_time(qrs: Qrs) -> None:
    """Publish puts the app in the stream, marks it published, sets publishTime, and may rename it."""
    app = qrs.upload("Draft", b"abc")
    stream = qrs.post("/qrs/stream", json={"name": "Everyone"}).json()

    published = qrs.put(f"/qrs/app/{app['id']}/publish", params={"stream": stream["id"], "name": "Final"})
    again = qrs.put(f"/qrs/app/{app['id']}/publish", params={"stream": stream["id"]})

    body = published.json()
    assert published.status_code == 200
    assert (True, stream["id"], "Final", app["id"]) == (
        body["published"],
        body["stream"]["id"],
        body["name"],
        body["id"],
    )
    assert body["publishTime"] > app["publishTime"]
    assert again.status_code == 400


def test_replace_keeps_target_id_and_source(qrs: Qrs) -> None:
    """Replace gives the target the source's content; the target keeps its id and the source stays."""
    target = qrs.upload("Target", b"old content")
    source = qrs.upload("Source", b"new content")

    answer = qrs.put(f"/qrs/app/{source['id']}/replace", params={"app": target["id"]})

    assert answer.status_code == 200
    assert target["id"] == answer.json()["id"]
    assert export(qrs, target["id"])[1] == b"new content"
    assert qrs.get(f"/qrs/app/{source['id']}").status_code == 200
    assert qrs.get(f"/qrs/app/{target['id']}").json()["name"] == "Target"


def test_copy_is_owned_by_the_caller_and_unpublished(sandbox: Sandbox, qrs: Qrs) -> None:
    """A copy gets a new id, the caller as owner, no stream; custom properties only when asked."""
    dev = sandbox.sites["dev"]
    owner = Qrs(dev, user="UserDirectory=ACME; UserId=alice")
    source = owner.upload("Original", b"content")
    stream = owner.post("/qrs/stream", json={"name": "S"}).json()
    owner.put(f"/qrs/app/{source['id']}/publish", params={"stream": stream["id"]})
    owner.close()

    answer = qrs.post(f"/qrs/app/{source['id']}/copy", params={"name": "Copy"})

    copy = answer.json()
    assert answer.status_code == 201
    assert copy["id"] != source["id"]
    assert (
        copy["name"],
        copy["owner"]["userId"],
        copy["published"],
        copy["stream"],
    ) == ("Copy", "sa_api", False, None)
    assert export(qrs, copy["id"])[1] == b"content"


def test_copy_with_custom_properties(qrs: Qrs) -> None:
    """includecustomproperties=true carries the values (as new values) to the copy."""
    definition = qrs.post(
        "/qrs/custompropertydefinition", json={"name": "Team", "objectTypes": ["App"]}
    ).json()
    app = qrs.upload("With props", b"x")
    app = qrs.put(
        f"/qrs/app/{app['id']}",
        json={**app, "customProperties": [{"value": "BI", "definition": {"id": definition["id"]}}]},
    ).json()

    plain = qrs.post(f"/qrs/app/{app['id']}/copy").json()
    with_props = qrs.post(f"/qrs/app/{app['id']}/copy", params={"includecustomproperties": "true"}).json()

    assert plain["customProperties"] == []
    assert [v["value"] for v in with_props["customProperties"]] == ["BI"]
    assert plain["name"] == "With props"


def test_reload_moves_last_reload_time(qrs: Qrs) -> None:
    """POST /reload is 204 and sets lastReloadTime to now."""
    app = qrs.upload("Reloadable", b"x")

    answer = qrs.post(f"/qrs/app/{app['id']}/reload")

    assert answer.status_code == 204
    assert qrs.get(f"/qrs/app/{app['id']}").json()["lastReloadTime"] > app["lastReloadTime"]


def test_delete_app_removes_entity_and_file(qrs: Qrs, dev: SandboxSite) -> None:
    """DELETE is 204; the app and its file are gone."""
    app = qrs.upload("Doomed", b"x")

    answer = qrs.delete(f"/qrs/app/{app['id']}")

    assert (answer.status_code, qrs.get(f"/qrs/app/{app['id']}").status_code) == (204, 404)
    assert not dev.repository.app_file(app["id"]).exists()


def test_export_survives_a_replace_before_download(qrs: Qrs) -> None:
    """An export is a snapshot: replacing the app before the download does not change what is downloaded."""
    app = qrs.upload("Snap", b"first")
    other = qrs.upload("Other", b"second")
    started = qrs.post(f"/qrs/app/{app['id']}/export/{uuid.uuid4()}").json()

    qrs.put(f"/qrs/app/{other['id']}/replace", params={"app": app["id"]})

    assert qrs.http.get(started["downloadPath"]).content == b"first"


@pytest.mark.slow
def test_large_app_streams_without_growing_memory(qrs: Qrs, tmp_path: Path) -> None:
    """A 300 MB app goes up and comes back byte-identical while the process grows by far less than that."""
    resource = pytest.importorskip("resource")  # POSIX only
    size = 300 * 1024 * 1024
    path = make_app_file(tmp_path / "big.qvf", size, seed="big")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with path.open("rb") as body:
        answer = qrs.post(
            "/qrs/app/upload",
            params={"name": "Big"},
            content=iter(lambda: body.read(1024 * 1024), b""),
            headers={"Content-Type": "application/vnd.qlik.sense.app"},
        )
    started = qrs.post(f"/qrs/app/{answer.json()['id']}/export/{uuid.uuid4()}").json()
    digest = hashlib.sha256()
    with qrs.http.stream("GET", started["downloadPath"]) as download:
        for chunk in download.iter_bytes():
            digest.update(chunk)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024

    with path.open("rb") as original:
        assert digest.hexdigest() == hashlib.file_digest(original, "sha256").hexdigest()
    assert grown_mb < 100
