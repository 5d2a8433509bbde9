"""Deliver one promotion to one target site: plan from what is there, upload once, replace, copy, publish.

A site is done as a whole or not at all: when a step fails, the upload and every copy this
attempt published there are taken back, so a retry (a new run, or the same run retried in the
Prefect UI) redoes the site without leaving a second copy beside the first. Apps replaced in
place stay replaced; a retry replaces the same apps again.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import get_run_logger

from promoter.approval import Target
from promoter.errors import QrsError, QrsNotFound
from promoter.ledger import Backup
from promoter.outcome import Placement, SiteOutcome
from promoter.planning import SitePlan, plan_site
from promoter.provenance import UploadSlot, upload_name
from promoter.qrs.models import App
from promoter.settings import Settings
from promoter.tasks import ledger, run, site
from promoter.tasks.versioning import store_backup


async def deliver(
    target: Target,
    app: App,
    exported: Path,
    description: str,
    request_key: str,
    settings: Settings,
    work: Path,
) -> SiteOutcome:
    """Put the exported app into the target's streams on one site; a failure is reported, not raised."""
    log = get_run_logger()
    placements: list[Placement] = []
    backups: list[Backup] = []
    plan: SitePlan | None = None
    try:
        async with run.holding(run.site_limit(target.site)):
            known = await ledger.known_targets(app.id, target.site)
            found = await site.survey_site(
                target.site, app.name, target.streams, tuple(k.app_id for k in known)
            )
            plan = plan_site(target, app.name, found.streams, found.apps, known)
            for note in plan.notes:
                log.info("%s: %s", target.site, note)
            if plan.failure is not None:
                log.error("%s: promotion failed: %s", target.site, plan.failure)
                return outcome_of(target, plan, (), backups, (plan.failure,))
            slot = await ledger.upload_slot(request_key, target.site)
            await place(plan, app, exported, description, slot, settings, work, placements, backups)
    except Exception as exc:  # one site's failure must not stop the others; the run still fails
        log.error("%s: promotion failed: %s", target.site, exc)
        kept = tuple(p for p in placements if p.action == "replaced")  # the others were taken back
        return outcome_of(target, plan, kept, backups, (f"{type(exc).__name__}: {exc}"[:500],))
    if placements:
        log.info("%s: %s", target.site, ", ".join(f"{p.action} in {p.stream!r}" for p in placements))
    return outcome_of(target, plan, tuple(placements), backups, ())


async def can_receive(target: Target, app_name: str) -> bool:
    """Whether one of the target's streams exists on its site, so that a promotion can place the app there.

    A site that cannot be read counts as able: what this answer gates (the S3 version) is better
    stored for a promotion that then fails there than missing from one that succeeds.
    """
    try:
        found = await site.survey_site(target.site, app_name, target.streams, ())
    except Exception as exc:  # the delivery to this site reports the failure, if it lasts
        get_run_logger().warning("%s: could not read the streams: %s", target.site, exc)
        return True
    return plan_site(target, app_name, found.streams).failure is None


def outcome_of(
    target: Target,
    plan: SitePlan | None,
    placements: tuple[Placement, ...],
    backups: list[Backup],
    failures: tuple[str, ...],
) -> SiteOutcome:
    missing, stale, notes = (plan.streams_missing, plan.stale, plan.notes) if plan else ((), (), ())
    forgotten = tuple(k.app_id for k in stale)
    return SiteOutcome(
        target.site, target.mode.value, placements, missing, failures, tuple(backups), forgotten, notes
    )


async def place(
    plan: SitePlan,
    app: App,
    exported: Path,
    description: str,
    slot: UploadSlot,
    settings: Settings,
    work: Path,
    placements: list[Placement],
    backups: list[Backup],
) -> None:
    """Carry out one site's plan with one upload; ``placements`` and ``backups`` grow as steps finish."""
    where = plan.site
    upload = await upload_for(where, exported, app.name, slot)
    published: list[UUID] = []  # apps this attempt published: taken back if the site fails
    try:
        for replacement in plan.replace:
            stream = replacement.stream
            if replacement.app_id == upload.id:
                # An earlier attempt of this run published the upload here and stopped before it
                # was recorded: the survey now finds it by name. It is this stream's app already.
                await site.describe_app(where, upload.id, description)
                placements.append(Placement(stream.id, stream.name, upload.id, "published"))
                continue
            if settings.versioning.enabled and settings.versioning.backup_before_overwrite:
                backup_file = work / f"backup-{slot.token}-{replacement.app_id}.qvf"
                await site.export_app(where, replacement.app_id, backup_file)
                backups.append(await store_backup(backup_file, where, replacement.app_id, app.name))
            await site.replace_app(where, upload.id, replacement.app_id)
            await site.describe_app(where, replacement.app_id, description)
            placements.append(Placement(stream.id, stream.name, replacement.app_id, "replaced"))
        for stream in plan.copy_to:
            copy = await site.publish_copy(where, upload.id, stream.id, app.name)
            published.append(copy.id)
            await site.describe_app(where, copy.id, description)
            placements.append(Placement(stream.id, stream.name, copy.id, "copied"))
        if plan.publish_upload_to is not None:
            stream = plan.publish_upload_to
            await site.publish_app(where, upload.id, stream.id, app.name)
            published.append(upload.id)
            await site.describe_app(where, upload.id, description)
            placements.append(Placement(stream.id, stream.name, upload.id, "published"))
    except BaseException:
        await take_back(where, upload.id, published)
        raise
    kept = published + [p.app_id for p in placements if p.action == "published"]
    if upload.id not in kept:  # it only fed the replaces: no temporary app stays behind
        await site.delete_app(where, upload.id)


async def upload_for(where: str, exported: Path, app_name: str, slot: UploadSlot) -> App:
    """This request's upload on the site, made again when a failed attempt of this run took it back.

    The upload step's result is persisted, so a retried run gets the earlier attempt's app back
    from it, even when that attempt's failure deleted the app; one read tells the two apart.
    """
    name = upload_name(app_name, slot)
    upload = await site.upload_app(where, exported, name, slot.began)
    try:
        await site.read_app(where, upload.id)
    except QrsNotFound:
        upload = await site.upload_app.with_options(refresh_cache=True)(where, exported, name, slot.began)
    return upload


async def take_back(where: str, upload_id: UUID, published: list[UUID]) -> None:
    """Delete the upload, then the copies this attempt published.

    The upload goes first: while it exists, a retry of this run reuses the cached copies made
    from it, so they are kept if it cannot be deleted.
    """
    log = get_run_logger()
    for app_id in dict.fromkeys([upload_id, *published]):
        try:
            await site.delete_app(where, app_id)
        except QrsError as exc:  # the original failure is the one to report
            log.error("%s: could not take back app %s after the failure: %s", where, app_id, exc)
            if app_id == upload_id:
                return  # keep the copies: a retry of this run finds them with the upload
        else:
            log.info("%s: took back app %s (this attempt failed)", where, app_id)
