"""The flow that keeps the source site's change subscriptions in place: run every 60 s, one at a time."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from promoter.errors import PromoterError
from promoter.prefect_api import name_at_start
from promoter.subscriptions import watch_seconds
from promoter.tasks.subscriptions import renew_subscriptions, watch_source_site


@flow(name="keep-subscriptions", flow_run_name=name_at_start("keep-subscriptions"), timeout_seconds=600)
async def keep_subscriptions(
    duration_seconds: float | None = None, probe_interval_seconds: float = 2.0
) -> str:
    """Subscribe anew (no gap), then watch the source site; after a restart, subscribe again at once.

    The deployment runs this every 60 s with a concurrency limit of 1 (ENQUEUE). Without
    ``duration_seconds`` the watch lasts until 45 s after the scheduled start, so it ends before
    the next run is due even when the worker started this one late.
    """
    log = get_run_logger()
    seconds = watch_seconds(duration_seconds, flow_run.scheduled_start_time, datetime.now(UTC))
    deadline = time.monotonic() + seconds
    renewal = await renew_subscriptions()
    renewals = 1
    probes = failures = 0
    while (left := deadline - time.monotonic()) > 0:
        watch = await watch_source_site(left, probe_interval_seconds, renew_pending=not renewal.complete)
        probes += watch.probes
        failures += watch.failures
        if watch.outcome == "time-up":
            break
        renewal = await renew_subscriptions()
        renewals += 1
    summary = f"{renewal.summary()}; {renewals} renewal(s), {probes} probe(s), {failures} failed"
    if not renewal.complete:  # a failed run in the UI: notifications are not arriving
        raise PromoterError(f"source site subscriptions incomplete: {summary}")
    log.info("%s", summary)
    return summary
