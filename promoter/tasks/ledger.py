"""The ledger's calls from a run: what was handled, promoted, remembered and backed up.

Plain calls, not Prefect tasks: the ledger is itself the record a retry reads, every write is
idempotent (keyed by request, promotion, site), and a task run per call would only add server
writes (issue 9: ~40 task runs per approval, most of them these). The database waits on a
lock in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from promoter.outcome import SiteOutcome
from promoter.planning import KnownTarget
from promoter.provenance import UploadSlot
from promoter.qrs.models import App
from promoter.settings import current_settings
from promoter.store.ledger import Backup, Ledger, PromotionStart, SiteResult

T = TypeVar("T")


async def in_ledger(work: Callable[[Ledger], T]) -> T:
    """Run ``work`` against the ledger in a thread: the database may wait on a lock, the flow must not."""

    def call() -> T:
        with Ledger(current_settings().ledger_url.get_secret_value()) as ledger:
            return work(ledger)

    return await asyncio.to_thread(call)


async def claim_request(key: str, owner: str, app_id: UUID, kind: str) -> bool:
    """True when this run may handle the request ``key`` (new, or an earlier attempt failed)."""
    return await in_ledger(lambda ledger: ledger.claim(key, owner=owner, kind=kind, app_id=app_id))


async def close_request(key: str, outcome: str, detail: str = "") -> None:
    await in_ledger(lambda ledger: ledger.mark_outcome(key, outcome, detail))


async def request_outcome(key: str) -> str | None:
    return await in_ledger(lambda ledger: ledger.outcome(key))


async def open_promotion(start: PromotionStart) -> int:
    """The ledger row of this promotion; a retried run gets the same one."""
    return await in_ledger(lambda ledger: ledger.start_promotion(start))


async def record_version(promotion_id: int, s3_key: str, version_id: str | None) -> None:
    await in_ledger(lambda ledger: ledger.set_version(promotion_id, s3_key, version_id))


async def recorded_version(key: str) -> tuple[str, str | None] | None:
    """The S3 key and version id an earlier attempt of the promotion ``key`` stored, if any."""

    def read(ledger: Ledger) -> tuple[str, str | None] | None:
        promotion = ledger.promotion(key)
        return (promotion.s3_key, promotion.s3_version_id) if promotion and promotion.s3_key else None

    return await in_ledger(read)


async def close_promotion(promotion_id: int, status: str) -> None:
    await in_ledger(lambda ledger: ledger.finish_promotion(promotion_id, status))


async def site_results(promotion_id: int) -> list[SiteResult]:
    """What earlier attempts of this promotion recorded per site."""
    return await in_ledger(lambda ledger: ledger.site_results(promotion_id))


async def known_targets(source_app_id: UUID, site: str) -> list[KnownTarget]:
    """The target apps this source app became on ``site`` in earlier promotions."""
    return await in_ledger(lambda ledger: ledger.targets_for(source_app_id, site))


async def record_site(promotion_id: int, source_app_id: UUID, outcome: SiteOutcome) -> None:
    """Store one site's result and what the source app became there, for the next overwrite.

    Each target's state as verified after placing it is kept for the drift guard; a placement
    that was not verified (the site failed) keeps none.
    """

    def record(ledger: Ledger) -> None:
        for placement in outcome.placements:
            ledger.remember_target(
                source_app_id,
                outcome.site,
                placement.stream_id,
                placement.stream,
                placement.app_id,
                modified_date=placement.modified_date,
                file_size=placement.file_size,
            )
        for app_id in outcome.forgotten:
            ledger.forget_target(source_app_id, outcome.site, app_id)
        ledger.record_site_result(
            promotion_id,
            outcome.site,
            mode=outcome.mode,
            streams=[p.stream for p in outcome.placements],
            target_app_ids=[p.app_id for p in outcome.placements],
            status=outcome.status,
            error="; ".join(outcome.problems),
            backups=outcome.backups,
        )

    await in_ledger(record)


async def upload_slot(request_key: str, site: str) -> UploadSlot:
    """The request's temporary upload name and start time on ``site``, recorded before the first upload."""
    return await in_ledger(lambda ledger: ledger.upload_slot(request_key, site))


async def find_backup(site: str, target_app_id: UUID, version_id: str | None = None) -> Backup | None:
    """The backup to restore: the given S3 version, or the newest one of that target app."""
    return await in_ledger(lambda ledger: ledger.find_backup(site, target_app_id, version_id))


async def open_rollback(site: str, target_app_id: UUID, backup: Backup, requested_by: str) -> int:
    return await in_ledger(lambda ledger: ledger.start_rollback(site, target_app_id, backup, requested_by))


async def close_rollback(rollback_id: int, status: str, error: str = "") -> None:
    await in_ledger(lambda ledger: ledger.finish_rollback(rollback_id, status, error))


async def target_placed(site: str, target_app: App) -> None:
    """Keep a remembered target's state after qs-promoter changed it outside a promotion (a rollback)."""
    app = target_app
    await in_ledger(lambda ledger: ledger.target_placed(site, app.id, app.modified_date, app.file_size))
