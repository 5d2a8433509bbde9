"""The concurrency limits a run takes exist before it takes them, however many runs create them at once."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from prefect.client.orchestration import get_client

from promoter.tasks.run import ensure_limits


async def test_runs_that_create_the_same_limits_at_once_all_go_ahead(prefect_api: str) -> None:
    """Twenty runs starting together each make sure of the same new app lock and site limit (as a
    burst of approvals does): none fails on the race between Prefect's read and create, and each
    limit exists once, with the size asked for."""
    lock, site = f"qsp-app-race-{uuid4().hex[:8]}", f"qsp-site-race-{uuid4().hex[:8]}"

    await asyncio.gather(*(ensure_limits({lock: 1, site: 2}) for _ in range(20)))

    async with get_client() as client:
        made = {name: await client.read_global_concurrency_limit_by_name(name) for name in (lock, site)}
    assert {name: limit.limit for name, limit in made.items()} == {lock: 1, site: 2}
