"""Calls about the Prefect run itself: its name, its concurrency limits, its report, its work folder.

Plain calls, not tasks: they change nothing on a Qlik site, Prefect's client repeats a call
the server answers 503 or 429, and a task run each would only add server writes.
"""

from __future__ import annotations

import asyncio
import shutil
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.runtime import flow_run

# Runs for the same app are serialised through a fixed set of locks: a bounded number of
# limits however many apps pass through, at the price of rare waits between unrelated apps.
APP_LOCKS = 64


# A Prefect server on SQLite answers 503 ("database is locked") under load, also while a slot
# is being taken (prefect-notes §2); that is transient, so taking the slot is tried again.
SLOT_ATTEMPTS = 6
# A slot is leased, and renewed while held. A holder that dies without giving the slot back (a
# flow process orphaned by a killed worker, measured hanging at exit) blocks its app for at most
# this long; Prefect's default of 300 s held a chaos run's app for five minutes.
LEASE_SECONDS = 60.0


@asynccontextmanager
async def holding(limit: str) -> AsyncIterator[None]:
    """Hold one slot of the global concurrency limit ``limit`` (strict: it must exist) for the block."""
    async with AsyncExitStack() as stack:
        for attempt in range(1, SLOT_ATTEMPTS + 1):
            try:
                # A failed renewal (Prefect restarting) must not kill an upload half done: the
                # ledger's claim, not this slot, is what keeps a request from running twice.
                held = concurrency(
                    limit,
                    occupy=1,
                    strict=True,
                    lease_duration=LEASE_SECONDS,
                    raise_on_lease_renewal_failure=False,
                )
                await stack.enter_async_context(held)
                break
            except ConcurrencySlotAcquisitionError:
                if attempt == SLOT_ATTEMPTS:
                    raise
                get_run_logger().warning(
                    "could not take a slot of %s (attempt %d); trying again", limit, attempt
                )
                await asyncio.sleep(min(2**attempt, 30))
        yield


def app_lock(app_id: UUID) -> str:
    return f"qsp-app-{zlib.crc32(str(app_id).encode()) % APP_LOCKS}"


def site_limit(site: str) -> str:
    return f"qsp-site-{site}"


async def ensure_limits(limits: dict[str, int]) -> None:
    """Create (or resize) the concurrency limits a run takes: they must exist when strict=True."""
    async with get_client() as client:
        for name, limit in limits.items():
            try:
                await client.upsert_global_concurrency_limit_by_name(name, limit)
            except ObjectAlreadyExists:
                # Another run created it between Prefect's read and create (two approvals of apps
                # that share a lock, or of one site, at once): now it exists, so this updates it.
                await client.upsert_global_concurrency_limit_by_name(name, limit)


async def label_run(name: str) -> None:
    """Give the flow run a name an admin recognises in the UI (app name and approver)."""
    async with get_client() as client:
        await client.update_flow_run(UUID(flow_run.get_id()), name=name[:200])


async def report(key: str, rows: list[dict[str, Any]], markdown: str, description: str) -> None:
    """The artifacts the Prefect UI shows for the run: a table of results and a summary."""
    await create_table_artifact(table=rows, key=key, description=description)
    await create_markdown_artifact(markdown=markdown, key=f"{key}-summary", description=description)


async def discard_work(folder: Path) -> None:
    """Remove a finished promotion's exported files (kept after a failure, for the retry)."""
    await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
