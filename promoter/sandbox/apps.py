"""App operations of a sandbox site: upload, two-step export, publish, replace, copy, reload.

App files are written whole to a new path and moved into place, never changed in place, so an
export can hard-link the current file and stay valid whatever happens to the app afterwards.
"""

from __future__ import annotations

import copy
import os
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from promoter.qrs.models import format_qrs_time, qrs_now
from promoter.sandbox.repository import Actor, Export, QrsFault, Repository
from promoter.sandbox.synthetic import copy_without_data, drop_data_in_place


def incoming_file(repo: Repository) -> Path:
    """A fresh path for a request body being received."""
    return repo.incoming_dir / f"{uuid.uuid4()}.part"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def add_app(
    repo: Repository,
    received: Path,
    name: str,
    actor: Actor,
    *,
    keep_data: bool = True,
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Turn a received QVF into a new app owned by the caller (upload and import); returns the full App."""
    if not name:
        raise QrsFault(400, "Missing parameter value(s): name")
    if not keep_data:
        drop_data_in_place(received)
    app_id = str(uuid.uuid4())
    os.replace(received, repo.app_file(app_id))
    with repo.lock:
        owner = repo.user_for(actor)
        body = {
            "id": app_id,
            "name": name,
            "owner": {"id": owner["id"]},
            **(fields or {}),
        }
        entity = repo._insert("app", body, actor)
        entity["fileSize"] = repo.app_file(app_id).stat().st_size
        return repo.render("app", entity)


def start_export(
    repo: Repository, app_id: str, token: str, actor: Actor, *, skip_data: bool
) -> dict[str, Any]:
    """POST /qrs/app/{id}/export/{token}: snapshot the app file and answer an AppExportResponse."""
    try:
        token = str(uuid.UUID(token))
    except ValueError:
        raise QrsFault(400, f"Invalid export token: {token}") from None
    with repo.lock:
        app = repo.get("app", app_id)
        temp_id = str(uuid.uuid4())
        target = repo.export_dir / f"{temp_id}.qvf"
        source = repo.app_file(app["id"])
        if skip_data:
            # Inside the lock: the source path must not be replaced while we read it.
            copy_without_data(source, target)
        else:
            _link_or_copy(source, target)
        file_name = f"{app['name']}.qvf"
        repo.exports[temp_id] = Export(temp_id, token, app["id"], target, file_name, skip_data)
    del actor  # any caller may export with the certificate's administrator rights
    return {
        "schemaPath": "AppExportResponse",
        "exportToken": token,
        "appId": app["id"],
        "downloadPath": f"/tempcontent/{temp_id}/{quote(file_name, safe='')}?serverNodeId={repo.node_id}",
        "cancelled": False,
    }


def take_export(repo: Repository, temp_id: str) -> Export:
    """The export behind a download path, once: a second download is 404 as in QRS."""
    with repo.lock:
        export = repo.exports.get(temp_id)
        if export is None or export.taken:
            raise QrsFault(404, "Not found")
        export.taken = True
        return export


def finish_export(repo: Repository, export: Export) -> None:
    with repo.lock:
        repo.exports.pop(export.temp_id, None)
    export.file.unlink(missing_ok=True)


def cancel_export(repo: Repository, app_id: str, token: str) -> dict[str, Any]:
    """DELETE /qrs/app/{id}/export/{token}."""
    with repo.lock:
        for export in list(repo.exports.values()):
            if export.token == token.lower() and export.app_id == app_id.lower():
                repo.exports.pop(export.temp_id)
                export.file.unlink(missing_ok=True)
                return {
                    "schemaPath": "AppExportResponse",
                    "exportToken": export.token,
                    "appId": export.app_id,
                    "downloadPath": "",
                    "cancelled": True,
                }
    raise QrsFault(404, "Not found")


def publish_app(
    repo: Repository, app_id: str, stream_id: str, actor: Actor, name: str | None
) -> dict[str, Any]:
    """PUT /qrs/app/{id}/publish?stream=&name=."""
    with repo.lock:
        app = repo.stored("app", app_id)
        if app["published"]:
            raise QrsFault(400, "The app is already published")
        try:
            stream = repo.stored("stream", stream_id)
        except QrsFault:
            raise QrsFault(400, f"Stream {stream_id} does not exist") from None
        fields: dict[str, Any] = {
            "published": True,
            "publishTime": format_qrs_time(qrs_now()),
            "stream": {"id": stream["id"]},
        }
        if name:
            fields["name"] = name
        return repo.render("app", repo.modify("app", app["id"], actor, **fields))


def replace_app(repo: Repository, source_id: str, target_id: str, actor: Actor) -> dict[str, Any]:
    """PUT /qrs/app/{id}/replace?app={target}: the target keeps its id and gets the source's content."""
    with repo.lock:
        source = repo.stored("app", source_id)
        try:
            target = repo.stored("app", target_id)
        except QrsFault:
            raise QrsFault(400, f"Target app {target_id} does not exist") from None
        if source["id"] == target["id"]:
            raise QrsFault(400, "An app cannot replace itself")
        staged = incoming_file(repo)
        _link_or_copy(repo.app_file(source["id"]), staged)
        os.replace(staged, repo.app_file(target["id"]))
        fields = {
            "fileSize": repo.app_file(target["id"]).stat().st_size,
            "lastReloadTime": source["lastReloadTime"],
            "savedInProductVersion": source["savedInProductVersion"],
            "migrationHash": source["migrationHash"],
        }
        return repo.render("app", repo.modify("app", target["id"], actor, **fields))


def copy_app(
    repo: Repository, app_id: str, actor: Actor, name: str | None, *, include_custom_properties: bool
) -> dict[str, Any]:
    """POST /qrs/app/{id}/copy: a new unpublished app owned by the caller."""
    with repo.lock:
        source = repo.stored("app", app_id)
        staged = incoming_file(repo)
        _link_or_copy(repo.app_file(source["id"]), staged)
        fields: dict[str, Any] = {
            "description": source["description"],
            "sourceAppId": source["id"],
            "lastReloadTime": source["lastReloadTime"],
            "savedInProductVersion": source["savedInProductVersion"],
            "migrationHash": source["migrationHash"],
            "thumbnail": source["thumbnail"],
        }
        if include_custom_properties:
            fields["customProperties"] = [
                {"value": v["value"], "definition": copy.deepcopy(v["definition"])}
                for v in source["customProperties"]
            ]
        return add_app(repo, staged, name or source["name"], actor, fields=fields)


def reload_app(repo: Repository, app_id: str, actor: Actor) -> None:
    """POST /qrs/app/{id}/reload: the sandbox has no engine, so a reload only moves lastReloadTime."""
    with repo.lock:
        app = repo.stored("app", app_id)
        repo.modify("app", app["id"], actor, lastReloadTime=format_qrs_time(qrs_now()))
