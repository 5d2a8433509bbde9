"""Sequences of QRS calls on one site that belong together, each safe to run again after a failure."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from promoter.errors import QrsError, QrsNotFound
from promoter.qrs.client import QrsClient, not_our_upload
from promoter.qrs.filters import any_of, eq
from promoter.qrs.models import App, Stream, TagCondensed, UserCondensed
from promoter.qrs.transfer import Progress, file_size

Log = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True, slots=True)
class SiteSurvey:
    """What a target site holds for one promotion: the requested streams and candidate apps."""

    streams: dict[str, Stream | None]  # requested name -> the stream, or None when missing
    apps: tuple[App, ...]  # apps with the source app's name, and apps remembered by id


async def survey(
    qrs: QrsClient, app_name: str, stream_names: tuple[str, ...], known: tuple[UUID, ...]
) -> SiteSurvey:
    """Read the requested streams by name and every app that a promotion could replace."""
    streams = {name: await qrs.stream_by_name(name) for name in stream_names}
    by_id = {app.id: app for app in await qrs.apps(eq("name", app_name))}
    if known:
        for app in await qrs.apps(any_of(*(eq("id", app_id) for app_id in known))):
            by_id.setdefault(app.id, app)
    return SiteSurvey(streams, tuple(by_id.values()))


async def upload_once(
    qrs: QrsClient, path: Path, name: str, since: datetime, *, log: Log, progress: Progress | None = None
) -> App:
    """Upload under the request's secret temporary name, adopting the upload an earlier attempt made.

    ``since`` is when the request's first attempt was about to upload. Only an app that
    ``not_our_upload`` accepts is adopted; any other app with the name is left alone, never
    published, and reported, because someone who learnt the name made it.
    """
    size = await file_size(path, qrs.name)  # the export's Content-Length while the file still lands
    ours: list[App] = []
    for app in await qrs.apps(eq("name", name)):
        if app.name != name:
            continue
        reason = not_our_upload(app, uploader=qrs.account, since=since, size=size)
        if reason is None:
            ours.append(app)
        else:
            log.warning(
                "%s: app %s owned by %r has the name of our upload but is not ours (%s): not used;"
                " an administrator should look at it",
                qrs.name, app.id, app.owner.account, reason,
            )  # fmt: skip
    if ours:
        return max(ours, key=lambda app: app.created_date or since)
    return await qrs.upload_app(path, name, since=since, progress=progress)


async def published_since(qrs: QrsClient, name: str, since: datetime) -> dict[UUID, App]:
    """Published apps called ``name`` that the account we call as made since ``since``, by stream."""
    found: dict[UUID, App] = {}
    for app in await qrs.apps(eq("name", name)):
        ours = not_our_upload(app, uploader=qrs.account, since=since, size=None) is None
        if app.name == name and app.published and app.stream is not None and ours:
            found.setdefault(app.stream.id, app)
    return found


async def publish_copy(
    qrs: QrsClient, app_id: UUID, stream_id: UUID, name: str, copy_name: str, since: datetime
) -> App:
    """Copy the app on the server under ``copy_name`` and publish the copy as ``name``; a copy that
    cannot be published is deleted.

    ``copy_name`` is unique to the request and stream, so a copy that an earlier attempt made
    (its answer lost, or the run stopped before publishing it) is found and published instead of
    a second one being left behind unpublished.
    """
    earlier = [
        app
        for app in await qrs.apps(eq("name", copy_name))
        if app.name == copy_name and not_our_upload(app, uploader=qrs.account, since=since, size=None) is None
    ]
    if earlier:
        copy = max(earlier, key=lambda app: app.created_date or since)
    else:
        copy = await qrs.copy_app(app_id, copy_name, since=since)
    try:
        return await qrs.publish_app(copy.id, stream_id, name)
    except BaseException:
        with contextlib.suppress(QrsError):
            await qrs.delete_app(copy.id)
        raise


async def describe(qrs: QrsClient, app_id: UUID, description: str) -> App:
    """Set the app's description (read, change, write back; repeated once on a conflict)."""
    return await qrs.update_app(app_id, lambda app: setattr(app, "description", description))


async def delete(qrs: QrsClient, app_id: UUID) -> None:
    """Delete the app; one that is already gone counts as deleted."""
    with contextlib.suppress(QrsNotFound):
        await qrs.delete_app(app_id)


async def set_tag(qrs: QrsClient, app_id: UUID, tag_name: str, *, present: bool) -> App:
    """Put the tag on the app, or take it off; the tag is created on the site when missing."""
    tag = await qrs.ensure_tag(tag_name) if present else await qrs.tag_by_name(tag_name)

    def change(app: App) -> None:
        others = [t for t in app.tags if t.name != tag_name]
        app.tags = [*others, TagCondensed(id=tag.id, name=tag.name)] if present and tag else others

    if tag is None:  # nothing to remove: the site has no such tag
        return await qrs.get_app(app_id)
    return await qrs.update_app(app_id, change)


async def copy_to_owner(qrs: QrsClient, app_id: UUID, owner_id: UUID, earlier: tuple[UUID, ...] = ()) -> App:
    """Copy the app (the copy is ours and unpublished), give it to ``owner_id``, verify, return it.

    QRS makes the caller the owner of a copy, so the owner is changed afterwards; the copy is
    read back so the caller deletes the published app only once the owner really has it.
    ``earlier``: copies an earlier attempt gave the owner (the ledger recorded them); the first
    that still exists, unpublished and the owner's, is returned instead of a second copy.
    """
    for copy_id in earlier:
        with contextlib.suppress(QrsNotFound):
            made = await qrs.get_app(copy_id)
            if made.owner.id == owner_id and not made.published:
                return made
    source = await qrs.get_app(app_id)
    copy = await qrs.copy_app(app_id, source.name, include_custom_properties=False)
    owner = await qrs.get_user(owner_id)
    await qrs.update_app(
        copy.id,
        lambda app: setattr(
            app,
            "owner",
            UserCondensed(
                id=owner.id, user_id=owner.user_id, user_directory=owner.user_directory, name=owner.name
            ),
        ),
    )
    try:
        verified = await qrs.get_app(copy.id)
    except QrsNotFound:
        raise QrsError(qrs.name, "GET", f"/app/{copy.id}", 404, "the copy for the owner vanished") from None
    if verified.owner.id != owner_id or verified.published:
        raise QrsError(qrs.name, "GET", f"/app/{copy.id}", 200, "the copy is not the owner's unpublished app")
    return verified
