"""Read and record in the ledger which app each owner copy continues, across approval cycles.

Plain async functions, not Prefect tasks: each is one short, idempotent ledger statement,
run in a thread because the database may wait on a lock and the flow's event loop must not.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from promoter.settings import current_settings
from promoter.store.ledger import Ledger, Lineage


def _ledger() -> Ledger:
    return Ledger(current_settings().ledger_url.get_secret_value())


async def lineage_of(app_id: UUID, app_name: str) -> Lineage:
    """The lineage of a source app: the root its S3 history and targets are kept under."""

    def read() -> Lineage:
        with _ledger() as ledger:
            return ledger.lineage(app_id, app_name)

    return await asyncio.to_thread(read)


async def continue_lineage(copy_app_id: UUID, app_id: UUID, app_name: str) -> Lineage:
    """Record that the owner's copy ``copy_app_id`` continues ``app_id``; recording it again is harmless."""

    def record() -> Lineage:
        with _ledger() as ledger:
            return ledger.continue_lineage(copy_app_id, app_id, app_name)

    return await asyncio.to_thread(record)


async def target_lineage(site: str, target_app_id: UUID) -> list[UUID]:
    """The source apps (root first, then its copies) whose promotions placed a target app."""

    def read() -> list[UUID]:
        with _ledger() as ledger:
            return ledger.target_lineage(site, target_app_id)

    return await asyncio.to_thread(read)


async def copies_of(app_id: UUID) -> list[UUID]:
    """The owner copies an earlier attempt recorded as continuing ``app_id`` (a retried unpublish)."""

    def read() -> list[UUID]:
        with _ledger() as ledger:
            return ledger.copies_of(app_id)

    return await asyncio.to_thread(read)
