"""Plan one target site's part of a promotion from what exists there: which apps to replace, where to publish.

Pure: the flow reads the site (streams by name, apps by remembered id and by name) and the
ledger (which target apps this source app became), and this module decides.

Overwrite follows the original per stream, refined by identity: where the ledger remembers the
target app(s) this source app became in that stream, exactly those are replaced; on the first
promotion into a stream, every published app of the same name in it is replaced (the original's
rule; QRS matches names case-insensitively); a stream without such an app gets a fresh publish.
A remembered app that is gone is never replaced by a name match (it may be someone else's app):
the stream gets a fresh publish and the stale identity is reported for the ledger to forget.

Streams that do not exist on a site are reported and the others served (as the original). A site
where none of them exists fails: the approval asked for something that could not be done there,
and the source app must stay where it is until an admin creates a stream (a retry then promotes).

Each replacement carries the app as the site holds it now and, for a ledger match, what the
ledger recorded right after qs-promoter placed it: promoter.drift judges from the two whether
someone changed the app by hand since.

Fresh publishes, in both modes, cost one upload: the uploaded app is published to the first
stream and server-side copies of it to the others. With Overwrite the same upload is the source
of every replace; when no stream needs a fresh publish it is temporary and deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from promoter.approval import Mode, Target
from promoter.qrs.models import App, Stream, StreamCondensed


@dataclass(frozen=True, slots=True)
class StreamRef:
    id: UUID
    name: str


@dataclass(frozen=True, slots=True)
class KnownTarget:
    """A target app the ledger remembers this source app became, and the stream it was in.

    ``modified_date`` and ``file_size`` are the app's as read back right after qs-promoter placed it
    (None in a ledger from before they were recorded: such a target is never held for drift).
    """

    stream_id: UUID
    stream_name: str
    app_id: UUID
    modified_date: datetime | None = None
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class Replacement:
    app_id: UUID
    stream: StreamRef
    matched_by: Literal["ledger", "name"]
    # For the drift guard: what the ledger recorded (ledger matches) and the app as found now.
    known: KnownTarget | None = field(default=None, compare=False)
    found: App | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SitePlan:
    """What to do on one site; empty, with a ``failure``, when none of the streams exist there."""

    site: str
    mode: Mode
    streams_missing: tuple[str, ...]
    replace: tuple[Replacement, ...]
    publish_upload_to: StreamRef | None  # the uploaded app is published here
    copy_to: tuple[StreamRef, ...]  # server-side copies of the upload, each published here
    stale: tuple[KnownTarget, ...]  # remembered targets that are gone: forget them
    notes: tuple[str, ...]

    @property
    def needs_upload(self) -> bool:
        return bool(self.replace) or self.publish_upload_to is not None

    @property
    def upload_is_temporary(self) -> bool:
        """The upload only feeds replaces and is deleted once they are done."""
        return bool(self.replace) and self.publish_upload_to is None

    @property
    def fresh_streams(self) -> tuple[StreamRef, ...]:
        first = (self.publish_upload_to,) if self.publish_upload_to is not None else ()
        return first + self.copy_to

    @property
    def failure(self) -> str | None:
        """Why nothing can be promoted on this site (none of the requested streams exist), or None."""
        if self.needs_upload:
            return None
        missing = ", ".join(repr(name) for name in self.streams_missing)
        return f"none of the requested streams exist on {self.site} ({missing}): nothing was promoted there"


def _found(
    target: Target, streams: Mapping[str, Stream | StreamCondensed | None]
) -> tuple[list[StreamRef], list[str]]:
    found: dict[UUID, StreamRef] = {}
    missing: list[str] = []
    for name in target.streams:
        stream = streams.get(name)
        if stream is None:
            missing.append(name)
        else:
            found.setdefault(stream.id, StreamRef(stream.id, stream.name or name))
    return list(found.values()), missing


def _published_in(app: App | None, stream: StreamRef) -> bool:
    return app is not None and app.published and app.stream is not None and app.stream.id == stream.id


def plan_site(
    target: Target,
    app_name: str,
    streams: Mapping[str, Stream | StreamCondensed | None],
    site_apps: Iterable[App] = (),
    known: Iterable[KnownTarget] = (),
) -> SitePlan:
    """Plan ``target`` for the source app named ``app_name``.

    ``streams`` maps each requested stream name to the stream found on the site (or None);
    ``site_apps`` holds the site's apps found by the remembered ids and by the app's name;
    ``known`` is what the ledger remembers for this source app on this site.
    """
    found, missing = _found(target, streams)
    notes = [f"stream {name!r} does not exist on {target.site}" for name in missing]
    if not found:  # the plan's failure says so
        return SitePlan(target.site, target.mode, tuple(missing), (), None, (), (), tuple(notes))
    if target.mode is Mode.DUPLICATE:
        return SitePlan(
            target.site, target.mode, tuple(missing), (), found[0], tuple(found[1:]), (), tuple(notes)
        )

    apps = list(site_apps)
    by_id = {app.id: app for app in apps}
    remembered: dict[UUID, list[KnownTarget]] = {}
    for item in known:
        remembered.setdefault(item.stream_id, []).append(item)
    replace: dict[UUID, Replacement] = {}
    fresh: list[StreamRef] = []
    stale: list[KnownTarget] = []
    name = app_name.casefold()
    for stream in found:
        if stream.id in remembered:
            alive = [k for k in remembered[stream.id] if _published_in(by_id.get(k.app_id), stream)]
            stale.extend(k for k in remembered[stream.id] if k not in alive)
            for item in alive:
                found_now = by_id.get(item.app_id)
                replace.setdefault(item.app_id, Replacement(item.app_id, stream, "ledger", item, found_now))
            if not alive:
                notes.append(f"the app promoted to {stream.name!r} before is gone: a fresh copy is published")
                fresh.append(stream)
            continue
        same_name = [a for a in apps if _published_in(a, stream) and a.name.casefold() == name]
        for app in same_name:
            replace.setdefault(app.id, Replacement(app.id, stream, "name", None, app))
        if not same_name:
            fresh.append(stream)
    # Remembered targets in streams not asked for this time are left alone, not forgotten.
    return SitePlan(
        target.site,
        target.mode,
        tuple(missing),
        tuple(replace.values()),
        fresh[0] if fresh else None,
        tuple(fresh[1:]),
        tuple(stale),
        tuple(notes),
    )
