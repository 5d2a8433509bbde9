"""Tasks of the subscription keeper: renew the source site's subscriptions, and watch it for a restart."""

from __future__ import annotations

from prefect import get_run_logger, task

from promoter.settings import current_settings
from promoter.subscriptions import Renewal, Watch, open_keeper
from promoter.tasks.retries import KEEPER_STEP


@task(name="renew-subscriptions", timeout_seconds=120, **KEEPER_STEP)
async def renew_subscriptions() -> Renewal:
    """Create the three app subscriptions and the sentinel anew, then delete the handles they replace."""
    async with open_keeper(current_settings(), get_run_logger()) as keeper:
        return await keeper.renew()


@task(name="watch-source-site", timeout_seconds=900, **KEEPER_STEP)
async def watch_source_site(seconds: float, interval: float, renew_pending: bool = False) -> Watch:
    """Probe the source site every ``interval`` s for ``seconds`` s, or until it needs new subscriptions."""
    async with open_keeper(current_settings(), get_run_logger()) as keeper:
        return await keeper.watch(seconds, interval, renew_pending=renew_pending)
