"""Tasks of the subscription keeper: renew the source site's subscriptions, and watch it for a restart."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from promoter.settings import load_settings
from promoter.subscriptions import Renewal, Watch, open_keeper

# No task-level retries: the keeper's own loop probes again within seconds, and a renewal that
# failed is repeated as soon as a probe succeeds.
KEEPER = {"cache_policy": NO_CACHE, "retries": 0}


@task(name="renew-subscriptions", timeout_seconds=120, **KEEPER)
async def renew_subscriptions() -> Renewal:
    """Create the three app subscriptions and the sentinel anew, then delete the handles they replace."""
    async with open_keeper(load_settings(), get_run_logger()) as keeper:
        return await keeper.renew()


@task(name="watch-source-site", timeout_seconds=900, **KEEPER)
async def watch_source_site(seconds: float, interval: float, renew_pending: bool = False) -> Watch:
    """Probe the source site every ``interval`` s for ``seconds`` s, or until it needs new subscriptions."""
    async with open_keeper(load_settings(), get_run_logger()) as keeper:
        return await keeper.watch(seconds, interval, renew_pending=renew_pending)
