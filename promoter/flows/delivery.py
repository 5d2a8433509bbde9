"""Deliver one promotion to one target site: plan from what is there, upload once, replace, copy, publish.

A site is done as a whole or not at all, and it is one step of the run (one task run, named
``deliver-to-<site>``): when a call fails, the upload and every copy this attempt published there
are taken back, so a retry (the step's own, a new run, or the run retried in the Prefect UI)
redoes the site without leaving a second copy beside the first. Apps replaced in place stay
replaced; a retry replaces the same apps again. Inside the step the calls are plain calls on one
QRS client for the site: the client repeats what is safe to repeat, uploads and copies are found
again by their secret temporary names, and Prefect persists the site's result, not each call's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.runtime import task_run

from promoter.approval import Mode, Target
from promoter.drift import Meant, NotAsPlaced, judge_site, verify_placed
from promoter.errors import PromoterError, QrsError, QrsNotFound, SiteFailed
from promoter.outcome import Placement, SiteOutcome
from promoter.planning import SitePlan, plan_site
from promoter.provenance import UploadSlot, copy_name, upload_name
from promoter.qrs import steps, transfer
from promoter.qrs.client import QrsClient
from promoter.qrs.filters import any_of, eq
from promoter.qrs.models import App
from promoter.settings import Settings
from promoter.store.ledger import Backup
from promoter.tasks import ledger, site
from promoter.tasks.retries import APP_FILE_STEP
from promoter.tasks.versioning import store_backup


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a promotion delivers, the same to every site: the source app, its export and the
    description each placed app carries; the request it belongs to, the settings, the work folder."""

    app: App
    exported: Path
    description: str
    request_key: str
    settings: Settings
    work: Path


@dataclass(frozen=True, slots=True)
class Placed:
    """What one attempt placed on a site: each app in its stream, and the backups of the apps it replaced.

    ``failure`` is the error that stopped the attempt, which took back what it published by then:
    the apps it replaced stay replaced (their backups stay stored), so they are still reported.
    """

    placements: tuple[Placement, ...] = ()
    backups: tuple[Backup, ...] = ()
    failure: Exception | None = None

    @property
    def kept(self) -> Placed:
        """What stays on the site after a failure: the replaced apps (the others were taken back)."""
        return Placed(tuple(p for p in self.placements if p.action == "replaced"), self.backups)


async def deliver(target: Target, delivery: Delivery) -> SiteOutcome:
    """Put the exported app into the target's streams on one site; a failure is reported, not raised."""
    try:
        return await deliver_to_site(target, delivery)
    except SiteFailed as failed:
        assert isinstance(failed.outcome, SiteOutcome)
        return failed.outcome


async def plan_for_site(qrs: QrsClient, target: Target, app: App) -> SitePlan:
    """What a promotion of ``app`` would do on the target's site now: reads only, nothing changes.

    The one planning step of a delivery and of a plan shown before it (flows/plan.py), so that
    the plan an admin sees cannot drift from what runs: the ledger's remembered targets, the
    site's streams and apps, and planning.plan_site's decision on them.
    """
    known = await ledger.known_targets(app.id, target.site)
    found = await steps.survey(qrs, app.name, target.streams, tuple(k.app_id for k in known))
    return plan_site(target, app.name, found.streams, found.apps, known)


# The whole site is the unit a retry skips (done) or redoes (failed): persisted, repeated when the
# failure may pass. Not cached when it fails: SiteFailed makes the task run Failed.
@task(name="deliver-to-site", task_run_name="deliver-to-{target.site}", **APP_FILE_STEP)
async def deliver_to_site(target: Target, delivery: Delivery) -> SiteOutcome:
    """One site's delivery; raises SiteFailed (carrying what stays placed) when the site fails."""
    log = get_run_logger()
    plan: SitePlan | None = None
    try:
        # The site's concurrency slot is the run's to take (run.holding, one request for all sites).
        async with site.connect(target.site) as qrs:
            plan = await plan_for_site(qrs, target, delivery.app)
            for note in plan.notes:
                log.info("%s: %s", target.site, note)
            if plan.failure is not None:
                log.error("%s: promotion failed: %s", target.site, plan.failure)
                raise SiteFailed(outcome_of(target, plan, Placed(), (plan.failure,)))
            slot = await ledger.upload_slot(delivery.request_key, target.site)
            # A target changed by hand since we placed it is not replaced unless the settings or
            # an admin's force say so; a held site places nothing at all (done whole or not at all).
            guard = judge_site(plan, delivery.settings.overwrite.drift, force=target.force)
            if guard.verdict == "held":
                log.error("%s: promotion %s", target.site, guard.reason)
                raise SiteFailed(outcome_of(target, plan, Placed(), (guard.reason,), held=True))
            if guard.verdict == "warn":
                log.warning("%s: %s", target.site, guard.reason)
                plan = dataclasses.replace(plan, notes=(*plan.notes, guard.reason))
            # A passing failure on an attempt with repeats to come keeps the upload for the repeat.
            repeats = task_run.get_run_count() <= (deliver_to_site.retries or 0)
            placed = await place(qrs, plan, delivery, slot, repeats=repeats)
    except SiteFailed:
        raise
    except Exception as exc:  # one site's failure must not stop the others; the run still fails
        raise site_failed(target, plan, Placed(), exc) from exc
    if placed.failure is not None:
        raise site_failed(target, plan, placed.kept, placed.failure) from placed.failure
    if placed.placements:
        done = ", ".join(f"{p.action} in {p.stream!r}" for p in placed.placements)
        log.info("%s: %s", target.site, done)
    return outcome_of(target, plan, placed, ())


def site_failed(target: Target, plan: SitePlan | None, kept: Placed, exc: Exception) -> SiteFailed:
    """The SiteFailed for a site that ``exc`` stopped, with what stays placed there (``kept``).

    Logged here: a failure outside our error family is a bug of ours, so its traceback goes to
    the run log, not only its one line in the outcome.
    """
    log = get_run_logger()
    log.error("%s: promotion failed: %s", target.site, exc, exc_info=not isinstance(exc, PromoterError))
    failure = (f"{type(exc).__name__}: {exc}"[:500],)
    passing = isinstance(exc, PromoterError) and exc.transient
    return SiteFailed(outcome_of(target, plan, kept, failure), transient=passing)


async def can_receive(target: Target, app_name: str) -> bool:
    """Whether one of the target's streams exists on its site, so that a promotion can place the app there.

    A site that cannot be read counts as able: what this answer gates (the S3 version) is better
    stored for a promotion that then fails there than missing from one that succeeds.
    """
    try:
        found = await site.survey_site(target.site, app_name, target.streams, ())
    except Exception as exc:  # the delivery to this site reports the failure, if it lasts
        # A failure outside our error family is a bug of ours: its traceback goes to the run log.
        ours = not isinstance(exc, PromoterError)
        get_run_logger().warning("%s: could not read the streams: %s", target.site, exc, exc_info=ours)
        return True
    return plan_site(target, app_name, found.streams).failure is None


def outcome_of(
    target: Target,
    plan: SitePlan | None,
    placed: Placed,
    failures: tuple[str, ...],
    *,
    held: bool = False,
) -> SiteOutcome:
    missing, stale, notes = (plan.streams_missing, plan.stale, plan.notes) if plan else ((), (), ())
    forgotten = tuple(k.app_id for k in stale)
    return SiteOutcome(
        target.site,
        target.mode.value,
        placed.placements,
        missing,
        failures,
        placed.backups,
        forgotten,
        notes,
        held,
    )


async def place(
    qrs: QrsClient, plan: SitePlan, delivery: Delivery, slot: UploadSlot, *, repeats: bool = False
) -> Placed:
    """Carry out one site's plan with one upload; what it placed, and the failure that stopped it.

    ``repeats``: the caller repeats the site after a passing failure, so the upload is kept then
    (the repeat finds it by its name) instead of being sent again; published copies always go.
    """
    where, app, description = plan.site, delivery.app, delivery.description
    settings, exported = delivery.settings, delivery.exported
    placements: list[Placement] = []
    if plan.mode is Mode.DUPLICATE:
        plan, found = await resume_duplicates(qrs, plan, app.name, description, slot)
        placements.extend(found)
        if not plan.needs_upload:
            return Placed(tuple(placements))
    # Adopts the upload an earlier attempt made (found by its secret name), or uploads the file
    # (following it while the export still lands: see site.exporting).
    upload = await site.upload(qrs, exported, upload_name(app.name, slot), slot.began)
    backups: list[Backup] = []
    published: list[UUID] = []  # apps this attempt published: taken back if the site fails
    try:
        for replacement in plan.replace:
            stream = replacement.stream
            if replacement.app_id == upload.id:
                # An earlier attempt of this run published the upload here and stopped before it
                # was recorded: the survey now finds it by name. It is this stream's app already.
                await steps.describe(qrs, upload.id, description)
                placements.append(Placement(stream.id, stream.name, upload.id, "published"))
                continue
            if settings.versioning.enabled and settings.versioning.backup_before_overwrite:
                backup_file = delivery.work / f"backup-{slot.token}-{replacement.app_id}.qvf"
                await qrs.export_app(replacement.app_id, backup_file)
                # The plain call under the task: this site's step is what a retry redoes.
                backups.append(await store_backup.fn(backup_file, where, replacement.app_id, app.name))
            await qrs.replace_app(upload.id, replacement.app_id)
            await steps.describe(qrs, replacement.app_id, description)
            placements.append(Placement(stream.id, stream.name, replacement.app_id, "replaced"))
        for stream in plan.copy_to:
            temporary = copy_name(app.name, slot, stream.id)
            copy = await steps.publish_copy(qrs, upload.id, stream.id, app.name, temporary, slot.began)
            published.append(copy.id)
            await steps.describe(qrs, copy.id, description)
            placements.append(Placement(stream.id, stream.name, copy.id, "copied"))
        if plan.publish_upload_to is not None:
            stream = plan.publish_upload_to
            await qrs.publish_app(upload.id, stream.id, app.name)
            published.append(upload.id)
            await steps.describe(qrs, upload.id, description)
            placements.append(Placement(stream.id, stream.name, upload.id, "published"))
        # Inside the try: a site that is not as meant fails like any other, its copies taken back.
        placements = await verify(qrs, plan, app.name, exported, description, placements)
    except Exception as exc:
        keep = repeats and isinstance(exc, PromoterError) and exc.transient
        await take_back(qrs, None if keep else upload.id, published)
        return Placed(tuple(placements), tuple(backups), exc)
    except BaseException:  # cancelled: nothing is kept for a repeat
        await take_back(qrs, upload.id, published)
        raise
    kept = published + [p.app_id for p in placements if p.action == "published"]
    if upload.id not in kept:  # it only fed the replaces: no temporary app stays behind
        await steps.delete(qrs, upload.id)
    return Placed(tuple(placements), tuple(backups))


async def verify(
    qrs: QrsClient,
    plan: SitePlan,
    app_name: str,
    exported: Path,
    description: str,
    placements: list[Placement],
) -> list[Placement]:
    """Read back every app placed on the site (one read) and compare with what was meant.

    Raises NotAsPlaced saying what differs. When all is as meant, the placements are returned with
    each app's modifiedDate and fileSize as read, which the ledger keeps for the drift guard.
    """
    if not placements:
        return placements
    size = await transfer.file_size(exported, plan.site)
    # A replaced app keeps the name it had on the site (a replace never renames); the others
    # were published under the source app's name.
    kept_names = {r.app_id: r.found.name for r in plan.replace if r.found is not None}
    meant = [
        Meant(
            p.app_id,
            p.stream_id,
            p.stream,
            kept_names.get(p.app_id, app_name) if p.action == "replaced" else app_name,
            description,
            size,
        )
        for p in placements
    ]
    found = await qrs.apps(any_of(*(eq("id", m.app_id) for m in meant)))
    problems = verify_placed(meant, found)
    if problems:
        raise NotAsPlaced(f"{plan.site}: read back after placing the app: {'; '.join(problems)}")
    now = {a.id: a for a in found}
    return [
        dataclasses.replace(p, modified_date=now[p.app_id].modified_date, file_size=now[p.app_id].file_size)
        for p in placements
    ]


async def resume_duplicates(
    qrs: QrsClient,
    plan: SitePlan,
    app_name: str,
    description: str,
    slot: UploadSlot,
) -> tuple[SitePlan, list[Placement]]:
    """The plan without the streams where an earlier attempt of this request already published,
    and the apps found there.

    Duplicate publishes new apps, and a run stopped after publishing here (its executor killed
    before the site's step ended or was recorded) left them in their streams, under the app's
    name. They are those streams' apps: kept and counted, not published a second time. Ours means
    owned by the account we call as and made since this request's first upload began.
    """
    earlier = await steps.published_since(qrs, app_name, slot.began)
    remaining, placements = [], []
    for stream in plan.fresh_streams:
        found = earlier.get(stream.id)
        if found is None:
            remaining.append(stream)
            continue
        log = get_run_logger()
        log.info("%s: app %s is in %r already (an earlier attempt)", plan.site, found.id, stream.name)
        await steps.describe(qrs, found.id, description)
        placements.append(Placement(stream.id, stream.name, found.id, "published"))
    first, rest = (remaining[0], tuple(remaining[1:])) if remaining else (None, ())
    return dataclasses.replace(plan, publish_upload_to=first, copy_to=rest), placements


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


async def take_back(qrs: QrsClient, upload_id: UUID | None, published: list[UUID]) -> None:
    """Delete the upload (unless None: kept for a repeat) and the copies this attempt published.

    Each is tried even when another cannot be deleted: a published copy left behind would sit
    beside the one the repeat publishes.
    """
    log = get_run_logger()
    apps = [upload_id] if upload_id is not None else []
    for app_id in dict.fromkeys([*apps, *published]):
        try:
            await steps.delete(qrs, app_id)
        except QrsError as exc:  # the original failure is the one to report
            log.error("%s: could not take back app %s after the failure: %s", qrs.name, app_id, exc)
        else:
            log.info("%s: took back app %s (this attempt failed)", qrs.name, app_id)
