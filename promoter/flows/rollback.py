"""Rollback: put a target app back as it was before an overwrite, into the same app id."""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from promoter.errors import PromoterError
from promoter.flows.delivery import upload_for
from promoter.manual import requester
from promoter.prefect_api import name_at_start
from promoter.settings import current_settings
from promoter.tasks import ledger, lineage, run, site
from promoter.tasks.versioning import fetch_backup


@flow(name="rollback-app", flow_run_name=name_at_start("rollback-app"), timeout_seconds=6 * 3600)
async def rollback_app(
    site_name: str, target_app_id: UUID, version_id: str | None = None, requested_by: str | None = None
) -> str:
    """Restore the backup taken before the last overwrite (or S3 version ``version_id``) into the target app.

    The backup is uploaded, replaces the target (which keeps its id, so links and bookmarks
    survive), and the upload is deleted.
    """
    settings = current_settings()
    log = get_run_logger()
    who = requester(requested_by, flow_run.get_name())
    log.info("rollback of %s on %s requested by %s", target_app_id, site_name, who)
    backup = await ledger.find_backup(site_name, target_app_id, version_id)
    if backup is None:
        which = f"version {version_id}" if version_id else "any backup"
        raise PromoterError(f"{site_name}: no {which} of app {target_app_id} in the ledger")
    target = await site.read_app(site_name, target_app_id)
    # Each approval cycle's unpublish gives the owner a copy with a new id; the target stays the
    # same app, so the admin is shown every source app it was promoted from.
    sources = await lineage.target_lineage(site_name, target_app_id)
    origin = f"; the target of {promoted_from(sources)}" if sources else ""
    if sources:
        log.info("%s: app %s is the target of %s", site_name, target_app_id, promoted_from(sources))
    rollback_id = await ledger.open_rollback(site_name, target_app_id, backup, who)
    request = f"rollback:{flow_run.get_id()}"
    slot = await ledger.upload_slot(request, site_name)
    work = settings.work_dir / slot.token
    site_slot = {run.site_limit(site_name): settings.prefect.site_concurrency}
    await run.ensure_limits(site_slot)
    try:
        restored = await fetch_backup(backup, work / "backup.qvf")
        async with run.holding(site_slot):
            # A retried run gets its upload back even if the failed attempt deleted it.
            upload = await upload_for(site_name, restored, target.name, slot)
            try:
                await site.replace_app(site_name, upload.id, target_app_id)
            finally:
                await site.delete_app(site_name, upload.id)
    except BaseException as exc:
        await ledger.close_rollback(rollback_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    await ledger.close_rollback(rollback_id, "done")
    # Our own change: the next overwrite must not hold the target as changed by hand (drift guard).
    await ledger.target_placed(site_name, await site.read_app(site_name, target_app_id))
    await run.discard_work(work)
    log.info("%s: app %s restored from S3 version %s", site_name, target_app_id, backup.version_id)
    return f"restored {target_app_id} on {site_name} from {backup.key} version {backup.version_id}{origin}"


def promoted_from(sources: list[UUID]) -> str:
    """The source apps of a target in words: the first app, then the owner copies that continue it."""
    root, *copies = sources
    continued = f" (continued by its owner copies {', '.join(map(str, copies))})" if copies else ""
    return f"app {root}{continued}"
