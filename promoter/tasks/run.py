"""Calls about the Prefect run itself: its name, its concurrency limits, its report, its work folder.

Plain calls, not tasks: they change nothing on a Qlik site, Prefect's client repeats a call
the server answers 503 or 429, and a task run each would only add server writes.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    acreate_progress_artifact,
    aupdate_progress_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.client.orchestration import get_client
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.runtime import flow_run

# Runs for the same app are serialised through a fixed set of locks: a bounded number of
# limits however many apps pass through, at the price of rare waits between unrelated apps.
APP_LOCKS = 64


# A Prefect server on SQLite answers 503 ("database is locked") under load, also while a slot
# is being taken (prefect-notes §2); that is transient, so taking the slot is tried again, after
# a pause of a fraction of a second: the lock is our own, seconds of back-off are time lost.
SLOT_ATTEMPTS = 6
SLOT_PAUSE_SECONDS = 0.1
# A slot is leased, and renewed while held. A holder that dies without giving the slot back (a
# flow process orphaned by a killed worker, measured hanging at exit) blocks its app for at most
# this long; Prefect's default of 300 s held a chaos run's app for five minutes.
LEASE_SECONDS = 60.0


@asynccontextmanager
async def holding(limits: Mapping[str, int]) -> AsyncIterator[None]:
    """Hold one slot of each global concurrency limit (name: its size; strict: they must exist)
    for the block.

    All of them in one request: a promotion to three sites that asked for each site's slot on its
    own made three server writes at once, which SQLite answered with 503s and seconds of back-off.
    The runs of this process queue for a slot here first (``_waiting_here``) and ask the server
    once one is free, so the server's limit still holds for several executors, without polling.
    """
    if not limits:
        yield
        return
    names = sorted(limits)  # one order for every run: two runs never hold each other's next gate
    async with AsyncExitStack() as stack:
        for name in names:
            await stack.enter_async_context(_waiting_here(name, limits[name]))
        for attempt in range(1, SLOT_ATTEMPTS + 1):
            try:
                # A failed renewal (Prefect restarting) must not kill an upload half done: the
                # ledger's claim, not this slot, is what keeps a request from running twice.
                held = concurrency(
                    names,
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
                    "could not take a slot of %s (attempt %d); trying again", ", ".join(names), attempt
                )
                await asyncio.sleep(SLOT_PAUSE_SECONDS * attempt)
        yield


# Per event loop (one in the executor; tests start many), per limit and size: the runs of this
# process waiting for that limit. A run the server refuses waits for its Retry-After (up to a
# second with the stack's server, 30 s with Prefect's default), while the slot may already be
# free, and each refusal is a write to the server's database; queued here, a run asks the server
# only when a run of this process gave a slot back, and at once.
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _waiting_here(name: str, size: int) -> asyncio.Semaphore:
    gates = _gates.setdefault(asyncio.get_running_loop(), {})
    return gates.setdefault((name, size), asyncio.Semaphore(size))


def app_lock(app_id: UUID) -> str:
    return f"qsp-app-{zlib.crc32(str(app_id).encode()) % APP_LOCKS}"


def site_limit(site: str) -> str:
    return f"qsp-site-{site}"


async def ensure_limits(limits: dict[str, int]) -> None:
    """Create (or resize) the concurrency limits a run takes: they must exist when strict=True."""
    async with get_client() as client:

        async def ensure(name: str, limit: int) -> None:
            # Prefect's upsert reads first and writes only a limit that is missing or resized.
            try:
                await client.upsert_global_concurrency_limit_by_name(name, limit)
            except ObjectAlreadyExists:
                # Another run created it between Prefect's read and create (two approvals of apps
                # that share a lock, or of one site, at once): now it exists, so this updates it.
                await client.upsert_global_concurrency_limit_by_name(name, limit)

        await asyncio.gather(*(ensure(name, limit) for name, limit in limits.items()))


async def label_run(name: str) -> None:
    """Give the flow run a name an admin recognises in the UI (app name and approver)."""
    async with get_client() as client:
        await client.update_flow_run(UUID(flow_run.get_id()), name=name[:200])


async def report(key: str, rows: list[dict[str, Any]], markdown: str, description: str) -> None:
    """The artifacts the Prefect UI shows for the run: a table of results and a summary."""
    await create_table_artifact(table=rows, key=key, description=description)
    await create_markdown_artifact(markdown=markdown, key=f"{key}-summary", description=description)


class TransferProgress:
    """A progress artifact in the Prefect UI for one long transfer (the export, or an upload to a site).

    Called with the bytes moved so far. The artifact appears once the transfer has run for
    SHOW_AFTER_SECONDS (a short one costs the Prefect server nothing) and is updated at most every
    UPDATE_SECONDS, in the background, so the transfer never waits for the server; it ends at 100 % when the
    transfer succeeds. An artifact that cannot be written costs a warning, never the transfer.
    ``total`` gives the bytes expected (None while unknown). The description names the site, never
    the app (user input).
    """

    SHOW_AFTER_SECONDS = 2.0
    UPDATE_SECONDS = 0.5

    def __init__(self, description: str, total: Callable[[], int | None]) -> None:
        self.description = description
        self.total = total
        self._artifact: UUID | None = None
        self._pending: asyncio.Task[None] | None = None
        self._last = 0.0

    async def __aenter__(self) -> TransferProgress:
        self._last = time.monotonic()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._pending is not None:
            await self._pending
        if exc_type is None and self._artifact is not None:
            await self._show(100.0)

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        wait = self.UPDATE_SECONDS if self._artifact is not None else self.SHOW_AFTER_SECONDS
        if now - self._last < wait or (self._pending is not None and not self._pending.done()):
            return
        total = self.total()
        if total:
            self._last = now
            self._pending = asyncio.create_task(self._show(min(100.0, 100.0 * done / total)))

    async def _show(self, percent: float) -> None:
        try:
            if self._artifact is None:
                self._artifact = await acreate_progress_artifact(
                    round(percent, 1), description=self.description
                )
            else:
                await aupdate_progress_artifact(self._artifact, round(percent, 1))
        except Exception as exc:  # the UI's progress bar is not worth a failed promotion
            get_run_logger().warning("progress of %s not shown: %s", self.description, exc)


async def discard_work(folder: Path) -> None:
    """Remove a finished promotion's exported files (kept after a failure, for the retry)."""
    await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
