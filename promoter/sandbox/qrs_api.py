"""The sandbox's QRS: an ASGI app answering /qrs/... and /tempcontent/... the way a Qlik site does.

Every /qrs call passes the Xrfkey check and runs as the X-Qlik-User of the request. Errors are
plain text with QRS's status codes; JSON bodies follow the QRS OpenAPI definitions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote
from uuid import UUID

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from promoter.qrs.models import ChangeType, format_qrs_time
from promoter.sandbox import apps
from promoter.sandbox.changes import SubscriptionError
from promoter.sandbox.controls import SiteControls
from promoter.sandbox.filtering import FilterError, matches, parse_filter
from promoter.sandbox.repository import KINDS, SYSTEM, Actor, QrsFault, Repository

XSRF_FAILED = "XSRF prevention check failed. Possible XSRF discovered."
_XRFKEY = re.compile(r"^[0-9a-zA-Z]{16}$")
UPLOAD_FIELDS = ("qvffile", "file")

Handler = Callable[[Request, "Call"], Awaitable[Response]]


class _FileNameConvertor(Convertor[str]):
    """A download file name: anything, even '/' or a line break from an app name (Starlette's
    ``path`` convertor stops at a newline)."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("qvf_name", _FileNameConvertor())


class Call:
    """What every /qrs handler needs: case-insensitive query parameters and the calling user."""

    def __init__(self, request: Request, actor: Actor) -> None:
        self.actor = actor
        self.params: dict[str, str] = {}
        for key, value in parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True):
            self.params.setdefault(key.lower(), value)

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name.lower(), default)

    def required(self, name: str) -> str:
        value = self.params.get(name.lower())
        if value is None or value == "":
            raise QrsFault(400, f"Missing parameter value(s): {name}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.params.get(name.lower())
        if value is None or value == "":
            return default
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise QrsFault(400, f"Invalid value for parameter {name}: {value}")


def parse_qlik_user(header: str | None) -> Actor:
    """X-Qlik-User, leniently: ';'-separated, trimmed, case-insensitive keys, URL-decoded values."""
    if header is None or not header.strip():
        return SYSTEM
    fields: dict[str, str] = {}
    for part in header.split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            fields[key.strip().lower()] = unquote(value.strip())
    directory, user_id = fields.get("userdirectory", ""), fields.get("userid", "")
    if not directory or not user_id:
        raise QrsFault(400, "Invalid X-Qlik-User header: UserDirectory and UserId are required")
    return Actor(directory, user_id)


def check_xrfkey(request: Request) -> None:
    """The Xrfkey rule: query parameter (any case) and header present, equal, 16 of [0-9a-zA-Z]."""
    in_query = next(
        (
            v
            for k, v in parse_qsl(request.scope["query_string"].decode("latin-1"), keep_blank_values=True)
            if k.lower() == "xrfkey"
        ),
        None,
    )
    in_header = request.headers.get("x-qlik-xrfkey")
    if in_query is None or in_header is None or in_query != in_header or not _XRFKEY.match(in_query):
        raise QrsFault(403, XSRF_FAILED)


def answer(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, media_type="application/json; charset=utf-8")


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise QrsFault(400, "The request body is not valid JSON") from None


def _kind(request: Request) -> str:
    kind = request.path_params["kind"].lower()
    if kind not in KINDS:
        raise QrsFault(404, "Not found")
    return kind


def _order(items: list[dict[str, Any]], orderby: str | None) -> list[dict[str, Any]]:
    if not orderby:
        return items
    parts = orderby.split()
    key = parts[0].lower()
    descending = len(parts) > 1 and parts[1].lower() == "desc"

    def value(item: dict[str, Any]) -> str:
        found = next((v for k, v in item.items() if k.lower() == key), "")
        return str(found).casefold()

    return sorted(items, key=value, reverse=descending)


class QrsApi:
    """The /qrs and /tempcontent routes of one site."""

    def __init__(self, repository: Repository) -> None:
        self.repo = repository

    def qrs(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler with the Xrfkey check, the caller's identity, and QRS-style error answers."""

        async def endpoint(request: Request) -> Response:
            try:
                check_xrfkey(request)
                call = Call(request, parse_qlik_user(request.headers.get("x-qlik-user")))
                self.repo.user_for(call.actor)  # QRS knows every user that has called it
                return await handler(request, call)
            except QrsFault as fault:
                return PlainTextResponse(fault.text, status_code=fault.status)
            except SubscriptionError as refused:
                return PlainTextResponse(str(refused), status_code=refused.status)

        return endpoint

    # ---- generic entity endpoints -----------------------------------------------------------

    async def list_condensed(self, request: Request, call: Call) -> Response:
        kind = _kind(request)
        found = _order(self.repo.find(kind, call.param("filter")), call.param("orderby"))
        return answer([self.repo.condense(kind, e) for e in found])

    async def list_full(self, request: Request, call: Call) -> Response:
        kind = _kind(request)
        return answer(_order(self.repo.find(kind, call.param("filter")), call.param("orderby")))

    async def count(self, request: Request, call: Call) -> Response:
        return answer({"value": len(self.repo.find(_kind(request), call.param("filter")))})

    async def get_one(self, request: Request, call: Call) -> Response:
        return answer(self.repo.get(_kind(request), request.path_params["id"]))

    async def create(self, request: Request, call: Call) -> Response:
        kind = _kind(request)
        if kind == "app":
            raise QrsFault(405, "Method Not Allowed")
        return answer(self.repo.create(kind, await json_body(request), call.actor), 201)

    async def update(self, request: Request, call: Call) -> Response:
        kind = _kind(request)
        return answer(self.repo.update(kind, request.path_params["id"], await json_body(request), call.actor))

    async def delete(self, request: Request, call: Call) -> Response:
        self.repo.delete(_kind(request), request.path_params["id"], call.actor)
        return Response(status_code=204)

    # ---- apps --------------------------------------------------------------------------------

    async def upload(self, request: Request, call: Call) -> Response:
        name = call.required("name")
        keep_data = call.flag("keepdata", True)
        call.flag("excludeconnections", False)
        received = apps.incoming_file(self.repo)
        try:
            content_type = request.headers.get("content-type", "")
            if content_type.lower().startswith("multipart/form-data"):
                found = await _receive_multipart(request, content_type, received)
                if not found:
                    raise QrsFault(400, "The multipart body has no qvfFile or file part")
            else:
                with received.open("wb") as out:
                    async for chunk in request.stream():
                        out.write(chunk)
            if received.stat().st_size == 0:
                raise QrsFault(400, "The uploaded app file is empty")
            app = apps.add_app(self.repo, received, name, call.actor, keep_data=keep_data)
        except ClientDisconnect:
            return Response(status_code=400)
        finally:
            received.unlink(missing_ok=True)
        return answer(app, 201)

    async def export(self, request: Request, call: Call) -> Response:
        body = apps.start_export(
            self.repo,
            request.path_params["id"],
            request.path_params["token"],
            call.actor,
            skip_data=call.flag("skipdata", False),
        )
        return answer(body, 201)

    async def cancel_export(self, request: Request, call: Call) -> Response:
        return answer(apps.cancel_export(self.repo, request.path_params["id"], request.path_params["token"]))

    async def publish(self, request: Request, call: Call) -> Response:
        stream = call.required("stream")
        app = apps.publish_app(self.repo, request.path_params["id"], stream, call.actor, call.param("name"))
        return answer(app)

    async def replace(self, request: Request, call: Call) -> Response:
        target = call.required("app")
        return answer(apps.replace_app(self.repo, request.path_params["id"], target, call.actor))

    async def copy(self, request: Request, call: Call) -> Response:
        app = apps.copy_app(
            self.repo,
            request.path_params["id"],
            call.actor,
            call.param("name"),
            include_custom_properties=call.flag("includecustomproperties", False),
        )
        return answer(app, 201)

    async def reload(self, request: Request, call: Call) -> Response:
        apps.reload_app(self.repo, request.path_params["id"], call.actor)
        return Response(status_code=204)

    async def download(self, request: Request) -> Response:
        """GET /tempcontent/{id}/{file}: the exported file, once (served at the host root, not /qrs)."""
        try:
            export = apps.take_export(self.repo, request.path_params["temp_id"])
        except QrsFault as fault:
            return PlainTextResponse(fault.text, status_code=fault.status)
        return FileResponse(
            export.file,
            media_type="application/octet-stream",
            filename=export.file_name,
            background=BackgroundTask(apps.finish_export, self.repo, export),
        )

    # ---- notifications ------------------------------------------------------------------------

    async def subscribe(self, request: Request, call: Call) -> Response:
        type_name = call.required("name")
        url = await json_body(request)
        if not isinstance(url, str) or not url.strip():
            raise QrsFault(400, "The body must be a JSON string holding the callback URL")
        raw_type = (call.param("changetype") or "0").strip()
        change_type = ChangeType.BY_NAME.get(raw_type.lower())
        if change_type is None:
            if not raw_type.isdigit() or int(raw_type) > 3:
                raise QrsFault(400, f"Invalid value for parameter changetype: {raw_type}")
            change_type = int(raw_type)
        object_id = call.param("id") or None
        if object_id is not None:
            try:
                object_id = str(UUID(object_id))
            except ValueError:
                raise QrsFault(400, f"Invalid value for parameter id: {object_id}") from None
        handle = self.repo.changes.subscribe(
            type_name=type_name,
            url=url.strip(),
            change_type=change_type,
            property_name=call.param("propertyname") or "",
            filter_text=call.param("filter") or "",
            object_id=object_id,
        )
        return answer({"value": handle}, 201)

    async def unsubscribe(self, request: Request, call: Call) -> Response:
        handle = call.required("handle")
        try:
            handle = str(UUID(handle))
        except ValueError:
            raise QrsFault(400, f"Invalid value for parameter handle: {handle}") from None
        self.repo.changes.unsubscribe(handle)
        return Response(status_code=204)

    async def changes(self, request: Request, call: Call) -> Response:
        since_text = call.required("since")
        types = call.required("types")
        try:
            since = datetime.fromisoformat(since_text.replace(" ", "+") if "T" in since_text else since_text)
        except ValueError:
            raise QrsFault(400, f"Invalid value for parameter since: {since_text}") from None
        if since.tzinfo is None:  # QRS keeps UTC
            since = since.replace(tzinfo=UTC)
        return answer(self.repo.changes.since(since, types.split(",")))

    # ---- about and the node -----------------------------------------------------------------

    async def about(self, request: Request, call: Call) -> Response:
        return answer(
            {
                "schemaPath": "About",
                "buildVersion": "38.22.0.0",
                "buildDate": "11/14/2022 10:09:00 AM",
                "databaseProvider": "Devart.Data.PostgreSql",
                "nodeType": 1,
                "sharedPersistence": True,
                "requiresBootstrap": False,
                "singleNodeOnly": False,
            }
        )

    def node(self) -> dict[str, Any]:
        stamp = format_qrs_time(datetime(2022, 11, 14).astimezone())
        return {
            "id": self.repo.node_id,
            "createdDate": stamp,
            "modifiedDate": stamp,
            "modifiedByUserName": "INTERNAL\\sa_repository",
            "customProperties": [],
            "name": "Central",
            "hostName": self.repo.host_name,
            "isCentral": True,
            "nodePurpose": 0,
            "engineEnabled": True,
            "proxyEnabled": True,
            "printingEnabled": True,
            "schedulerEnabled": True,
            "tags": [],
            "temporaryfilepath": "C:\\Windows\\TEMP\\",
            "roles": [],
            "serviceCluster": {"id": self.repo.node_id, "name": "ServiceCluster", "privileges": None},
            "failoverCandidate": True,
            "privileges": None,
            "schemaPath": "ServerNodeConfiguration",
        }

    def nodes(self, call: Call) -> list[dict[str, Any]]:
        try:
            node_filter = parse_filter(call.param("filter"))
            return [n for n in [self.node()] if matches(node_filter, n)]
        except FilterError as exc:
            raise QrsFault(400, str(exc)) from None

    async def nodes_condensed(self, request: Request, call: Call) -> Response:
        keys = ("id", "privileges", "name", "hostName", "temporaryfilepath", "roles", "serviceCluster")
        return answer([{k: n[k] for k in keys} for n in self.nodes(call)])

    async def nodes_full(self, request: Request, call: Call) -> Response:
        return answer(self.nodes(call))

    async def nodes_count(self, request: Request, call: Call) -> Response:
        return answer({"value": len(self.nodes(call))})

    async def node_local(self, request: Request, call: Call) -> Response:
        return answer(self.node())

    async def node_one(self, request: Request, call: Call) -> Response:
        if request.path_params["id"].lower() != self.repo.node_id:
            raise QrsFault(404, "Not found")
        return answer(self.node())

    # ---- routing ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/qrs/about", self.qrs(self.about), methods=["GET"]),
            Route("/qrs/notification", self.qrs(self.subscribe), methods=["POST"]),
            Route("/qrs/notification", self.qrs(self.unsubscribe), methods=["DELETE"]),
            Route("/qrs/notification/changes", self.qrs(self.changes), methods=["GET"]),
            Route("/qrs/servernodeconfiguration", self.qrs(self.nodes_condensed), methods=["GET"]),
            Route("/qrs/servernodeconfiguration/full", self.qrs(self.nodes_full), methods=["GET"]),
            Route("/qrs/servernodeconfiguration/count", self.qrs(self.nodes_count), methods=["GET"]),
            Route("/qrs/servernodeconfiguration/local", self.qrs(self.node_local), methods=["GET"]),
            Route("/qrs/servernodeconfiguration/{id}", self.qrs(self.node_one), methods=["GET"]),
            Route("/qrs/app/upload", self.qrs(self.upload), methods=["POST"]),
            Route("/qrs/app/{id}/export/{token}", self.qrs(self.export), methods=["POST"]),
            Route("/qrs/app/{id}/export/{token}", self.qrs(self.cancel_export), methods=["DELETE"]),
            Route("/qrs/app/{id}/publish", self.qrs(self.publish), methods=["PUT"]),
            Route("/qrs/app/{id}/replace", self.qrs(self.replace), methods=["PUT"]),
            Route("/qrs/app/{id}/copy", self.qrs(self.copy), methods=["POST"]),
            Route("/qrs/app/{id}/reload", self.qrs(self.reload), methods=["POST"]),
            Route("/qrs/{kind}/full", self.qrs(self.list_full), methods=["GET"]),
            Route("/qrs/{kind}/count", self.qrs(self.count), methods=["GET"]),
            Route("/qrs/{kind}/{id}", self.qrs(self.get_one), methods=["GET"]),
            Route("/qrs/{kind}/{id}", self.qrs(self.update), methods=["PUT"]),
            Route("/qrs/{kind}/{id}", self.qrs(self.delete), methods=["DELETE"]),
            Route("/qrs/{kind}", self.qrs(self.list_condensed), methods=["GET"]),
            Route("/qrs/{kind}", self.qrs(self.create), methods=["POST"]),
            Route("/tempcontent/{temp_id}/{file_name:qvf_name}", self.download, methods=["GET"]),
        ]


async def _receive_multipart(request: Request, content_type: str, target: Any) -> bool:
    """Stream the file part (qvfFile or file) of a multipart body straight to disk."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise QrsFault(400, "The multipart body has no boundary")
    state: dict[str, Any] = {"field": b"", "value": b"", "headers": {}, "writing": False, "found": False}
    out = target.open("wb")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace").lower()
        state["writing"] = not state["found"] and (name in UPLOAD_FIELDS or b"filename" in disposition)
        state["found"] = state["found"] or state["writing"]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["writing"]:
            out.write(data[start:end])

    def on_part_end() -> None:
        state["writing"], state["headers"] = False, {}

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ValueError as exc:
        raise QrsFault(400, f"Invalid multipart body: {exc}") from None
    finally:
        out.close()
    return bool(state["found"])


def create_app(repository: Repository, controls: SiteControls) -> Any:
    """The whole ASGI app of one site: controls around QRS, plus the /sandbox routes."""
    api = QrsApi(repository)

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("Not found", status_code=404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("Method Not Allowed", status_code=405)

    app = Starlette(
        routes=[*api.routes(), *controls.routes(lambda: list(repository.deliveries))],
        exception_handlers={404: not_found, 405: not_allowed},
    )
    return controls.wrap(app)
