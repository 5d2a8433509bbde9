"""The reconcile flow: submit missed approvals, reloads and publishes once, and sweep leftover uploads."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prefect import flow, get_run_logger

from promoter.errors import PromoterError
from promoter.qrs.models import qrs_now
from promoter.reconcile import DEFAULT_DEPLOYMENT, find_missed, window_start
from promoter.settings import load_settings
from promoter.tasks.reconcile import (
    earlier_submissions,
    last_reconciled,
    mark_reconciled,
    read_source,
    running_uploads,
    submit_request,
    sweep_site,
    unhandled_requests,
)


@flow(name="reconcile", timeout_seconds=1800)
async def reconcile(
    deployment_name: str = DEFAULT_DEPLOYMENT,
    settle_seconds: float = 120.0,
    leftover_age_minutes: float = 60.0,
) -> str:
    """Find requests no notification announced and submit each once; delete leftover temporary uploads.

    ``settle_seconds``: apps changed this recently are left to their notification for now.
    """
    settings = load_settings()
    log = get_run_logger()
    started = qrs_now()
    settle = timedelta(seconds=settle_seconds)
    since = window_start(await last_reconciled(), settle)
    if since is None:
        log.info("first reconcile: looking for approvals; reloads and publishes are followed from now on")
    survey = await read_source(since)
    found = find_missed(
        survey.apps, settings, since=since, now=started, settle=settle, streams=survey.streams
    )
    waiting = await unhandled_requests(found)
    log.info(
        "source site: %d app(s) with promotion properties, %d changed since the last reconcile; "
        "%d request(s) found, %d not handled yet",
        survey.scanned, survey.changed, len(found), len(waiting),
    )  # fmt: skip
    earlier = await earlier_submissions(waiting) if waiting else {}
    submitted = 0
    for request in waiting:
        what = f"{request.trigger} of app {request.app_id} ({request.app_name!r})"
        if request.idempotency_key in earlier:
            log.info("%s: submitted earlier, flow run %s", what, earlier[request.idempotency_key])
            continue
        run_id = await submit_request(deployment_name, request)
        submitted += 1
        log.info("%s: %s -> flow run %s", what, request.reason, run_id)

    protected = await running_uploads()
    min_age = timedelta(minutes=leftover_age_minutes)
    sites = list(settings.target_sites)
    swept = await asyncio.gather(
        *(sweep_site(site, min_age, protected) for site in sites), return_exceptions=True
    )
    failed = [
        f"{site}: {result}"
        for site, result in zip(sites, swept, strict=True)
        if isinstance(result, BaseException)
    ]
    removed = sum(len(result) for result in swept if not isinstance(result, BaseException))

    await mark_reconciled(started)
    summary = (
        f"{submitted} missed request(s) submitted, {len(waiting) - submitted} waiting from an earlier"
        f" reconcile, {removed} leftover upload(s) deleted"
    )
    if failed:  # the source side is done and marked; the sweep is tried again next time
        raise PromoterError(f"{summary}; sweep failed on {'; '.join(failed)}")
    log.info("%s", summary)
    return summary
