"""The route QRS posts change notifications to: authenticate, validate, append to the outbox, answer.

Nothing else happens in the request: no Prefect call, no QRS call, so QRS gets its answer in
milliseconds even when Prefect is slow or down.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, TypeAdapter
from starlette.requests import ClientDisconnect

from promoter.errors import IntakeError
from promoter.intake import TooManyChanges, parse_changes
from promoter.notifications import ChangeKind
from promoter.qrs.models import Change, ChangeType, format_qrs_time, qrs_now
from promoter.webhook.auth import mask_secret, secret_matches
from promoter.webhook.outbox import Notice, OutboxUnavailable
from promoter.webhook.refusals import RefusalLog
from promoter.webhook.state import webhook_state

log = logging.getLogger(__name__)

router = APIRouter()

NOTIFICATION_ROUTE = "/qrs/{secret}/app-{kind}"


class Ack(BaseModel):
    """The answer to QRS: how many changes were queued and how many were not app changes."""

    queued: int
    ignored: int


class Refused(Exception):
    """The caller may not post here; answered with the status alone, no detail."""

    def __init__(self, status: int) -> None:
        self.status = status


async def authorize(request: Request, secret: str) -> None:
    """401 for a wrong secret (the source network was checked before: auth.SourceCheck)."""
    # async although it never awaits: FastAPI runs a sync dependency in its thread pool.
    if not secret_matches(secret, webhook_state(request)["secret"]):
        _refusals(request).refused("notification with a wrong secret", _source(request))
        raise Refused(401)


def inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each ``#/$defs/...`` reference replaced by its definition (non-recursive models).

    Embedded in the OpenAPI document, such a reference would point at the document's root,
    where there are no $defs.
    """
    definitions = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return cast(dict[str, Any], inline(schema))


BODY_SCHEMA = inline_definitions(TypeAdapter(list[Change]).json_schema(by_alias=True))


@router.post(
    NOTIFICATION_ROUTE,
    summary="Receive a QRS change notification",
    response_model=Ack,
    dependencies=[Depends(authorize)],
    responses={
        400: {"description": "The body is not a JSON array of change objects"},
        401: {"description": "Wrong secret (empty body)"},
        403: {"description": "Source address not in webhook.allowed_networks (empty body)"},
        413: {
            "description": "Body larger than webhook.max_body_bytes, or more changes than "
            "webhook.max_changes_per_notification"
        },
        415: {"description": "Content-Type is not application/json"},
        503: {"description": "The outbox could not store the notification"},
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": BODY_SCHEMA}}}
    },
)
async def receive_changes(
    request: Request,
    kind: Annotated[
        ChangeKind, Path(description="Which subscription: app-updated, app-reloaded, app-published")
    ],
) -> Response:
    """Store the App changes of one notification in the outbox, then answer 200.

    Other object types and app deletions are acknowledged and dropped.
    """
    state = webhook_state(request)
    if not _is_json(request.headers.get("content-type", "")):
        return _problem(415, "Content-Type must be application/json")
    body = await _read_body(request, state["settings"].max_body_bytes)
    if body is None:
        return _problem(413, f"body larger than {state['settings'].max_body_bytes} bytes")
    try:
        changes = parse_changes(body, max_changes=state["settings"].max_changes_per_notification)
    except TooManyChanges as exc:
        _refusals(request).refused("notification with too many changes", _source(request))
        return _problem(413, str(exc))
    except IntakeError as exc:
        log.info("rejected notification on %s: %s", mask_secret(request.url.path), exc)
        return _problem(400, str(exc))
    notices = [_notice(change, kind) for change in changes if _wanted(change)]
    if len(notices) < len(changes):
        log.debug("ignored %d change(s) that are not app updates", len(changes) - len(notices))
    try:
        await state["outbox"].append(notices)
    except OutboxUnavailable as exc:
        log.error("could not store a notification: %s", exc)
        return _problem(503, "notification not stored")
    if notices:
        state["submitter"].wake()
    return JSONResponse(Ack(queued=len(notices), ignored=len(changes) - len(notices)).model_dump())


@router.post("/qrs/{rest:path}", include_in_schema=False)
async def refuse_unknown(request: Request) -> Response:
    """Anything else under /qrs/ (for example a missing secret) is refused like a wrong secret."""
    _refusals(request).refused("notification to an unknown path", _source(request))
    return Response(status_code=401)


def _refusals(request: Request) -> RefusalLog:
    return cast(RefusalLog, request.app.state.refusals)


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


def _wanted(change: Change) -> bool:
    # A deleted app cannot be promoted, and QRS sends every app deletion to every App subscription.
    return change.object_type.lower() == "app" and change.change_type != ChangeType.DELETE


def _notice(change: Change, kind: ChangeKind) -> Notice:
    # QRS always sends modifiedDate; if one ever lacks it, the arrival time keeps the key unique.
    modified = change.modified_date or qrs_now()
    return Notice(
        app_id=str(change.object_id),
        kind=kind,
        modified_date=format_qrs_time(modified),
        payload=change.model_dump_json(by_alias=True),
    )


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is larger than ``limit`` (read no further than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
    except ClientDisconnect:
        return b""  # the caller is gone; the 400 for an empty body reaches no one, and nothing is stored
    return bytes(body)


def _problem(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)
