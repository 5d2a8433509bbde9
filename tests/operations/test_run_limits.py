"""The concurrency limits a run takes exist before it takes them, however many runs create them at
once; the runs of one process queue for them without the server refusing them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_LOGGING_INTERNAL_LEVEL, temporary_settings

from promoter.tasks.run import ensure_limits, holding

PREFECT_CONCURRENCY_LOGGER = "prefect._internal.concurrency"


async def test_runs_that_create_the_same_limits_at_once_all_go_ahead(prefect_api: str) -> None:
    """Twenty runs starting together each make sure of the same new app lock and site limit (as a
    burst of approvals does): none fails on the race between Prefect's read and create, and each
    limit exists once, with the size asked for."""
    lock, site = f"qsp-app-race-{uuid4().hex[:8]}", f"qsp-site-race-{uuid4().hex[:8]}"

    await asyncio.gather(*(ensure_limits({lock: 1, site: 2}) for _ in range(20)))

    async with get_client() as client:
        made = {name: await client.read_global_concurrency_limit_by_name(name) for name in (lock, site)}
    assert {name: limit.limit for name, limit in made.items()} == {lock: 1, site: 2}


class Refusals(logging.Handler):
    """The server's refusals of a slot, as Prefect's client notes them before it waits and asks again."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Unable to acquire concurrency slot" in record.getMessage():
            self.seen.append(record.getMessage())

    @contextmanager
    def watching(self) -> Iterator[Refusals]:
        logger = logging.getLogger(PREFECT_CONCURRENCY_LOGGER)
        level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        try:
            # Prefect's internal loggers emit below WARNING only when this setting says so.
            with temporary_settings({PREFECT_LOGGING_INTERNAL_LEVEL: "DEBUG"}):
                yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


async def test_runs_of_one_executor_queue_for_a_slot_without_being_refused(prefect_api: str) -> None:
    """Six runs of one process want a site limit of 2: they hold it two at a time, all finish, and
    the server refuses none of them (each refusal is a write to its database and a wait of seconds
    before asking again, while the slot may already be free)."""
    site = f"qsp-site-queue-{uuid4().hex[:8]}"
    await ensure_limits({site: 2})
    inside, most, done = 0, 0, 0

    async def one_run() -> None:
        nonlocal inside, most, done
        async with holding({site: 2}):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1
        done += 1

    with Refusals().watching() as refusals:
        await asyncio.gather(*(one_run() for _ in range(6)))

    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(site)
    assert (most, done, limit.active_slots) == (2, 6, 0)
    assert refusals.seen == []
