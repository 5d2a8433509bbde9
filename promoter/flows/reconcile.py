"""The reconcile flow: submit missed requests once, retry runs that stopped halfway, sweep old uploads."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from prefect import flow, get_run_logger

from promoter.errors import PromoterError
from promoter.prefect_api import HANDLE_CHANGE, name_at_start
from promoter.qrs.models import qrs_now
from promoter.reconcile import (
    PENDING_LIMIT,
    RETRY_LIMIT,
    STOPPED,
    decide_retry,
    find_missed,
    in_hand,
    running_upload_tokens,
    window_start,
)
from promoter.settings import current_settings
from promoter.store.reconcile_marks import RETRY_WINDOW, OpenRequest
from promoter.tasks.reconcile import (
    count_retry,
    earlier_submissions,
    last_reconciled,
    mark_reconciled,
    open_requests,
    read_runs,
    read_source,
    release_stalled_runs,
    retry_counts,
    retry_run,
    running_uploads,
    runs_in_progress,
    submit_request,
    sweep_site,
    unhandled_requests,
)


@flow(name="reconcile", flow_run_name=name_at_start("reconcile"), timeout_seconds=1800)
async def reconcile(
    deployment_name: str = HANDLE_CHANGE,
    settle_seconds: float = 120.0,
    leftover_age_minutes: float = 60.0,
    retry_limit: int = RETRY_LIMIT,
    pending_minutes: float = PENDING_LIMIT.total_seconds() / 60,
) -> str:
    """Find requests no notification announced and submit each once; retry runs that stopped before
    their request was done; delete leftover temporary uploads.

    ``settle_seconds``: apps changed this recently are left to their notification for now.
    ``retry_limit``: automatic retries of one request's run, after which an admin decides.
    ``pending_minutes``: a run Pending this long lost its worker before it started: it is retried.
    """
    settings = current_settings()
    log = get_run_logger()
    started = qrs_now()
    settle = timedelta(seconds=settle_seconds)
    pending_limit = timedelta(minutes=pending_minutes)
    # First: a run a lost worker left Pending blocks its queue's slots and never starts.
    for released in await release_stalled_runs(settings.prefect.work_pool, started, pending_limit):
        log.warning("%s", released)
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
    # A notification's run still queued (a busy worker) will see the request: no second run.
    queued = await runs_in_progress(deployment_name) if waiting else {}
    submitted = left = 0
    unclaimed: list[OpenRequest] = []  # runs reconcile submitted that stopped before claiming
    for request in waiting:
        what = f"{request.trigger} of app {request.app_id} ({request.app_name!r})"
        if request.idempotency_key in earlier:
            run = earlier[request.idempotency_key]
            log.info("%s: submitted earlier, flow run %s (%s)", what, run.name, run.state)
            if run.state in STOPPED or run.state == "PENDING":
                unclaimed.append(OpenRequest(request.key, run.id, None, run.since or started))
            continue
        run = queued.get(str(request.app_id))
        if run is not None and in_hand(run, started, pending_limit):
            log.info("%s: left to flow run %s (%s), which will read the app", what, run.name, run.state)
            left += 1
            continue
        run_id = await submit_request(deployment_name, request)
        submitted += 1
        log.info("%s: %s -> flow run %s", what, request.reason, run_id)

    retried, still_open = await finish_stopped(unclaimed, started, retry_limit, pending_limit)

    sites = list(settings.target_sites)
    protected = await running_uploads() | running_upload_tokens(still_open, sites)
    min_age = timedelta(minutes=leftover_age_minutes)
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
        f"{submitted} missed request(s) submitted, {len(waiting) - submitted - left} waiting from an"
        f" earlier reconcile, {left} left to a queued run, {retried} stopped run(s) retried,"
        f" {removed} leftover upload(s) deleted"
    )
    if failed:  # the source side is done and marked; the sweep is tried again next time
        raise PromoterError(f"{summary}; sweep failed on {'; '.join(failed)}")
    log.info("%s", summary)
    return summary


async def finish_stopped(
    unclaimed: list[OpenRequest], now: datetime, limit: int, pending_limit: timedelta
) -> tuple[int, list[str]]:
    """Retry the flow runs of requests that stopped before they were done (the ledger's open claims,
    and ``unclaimed``); returns how many were retried and the keys whose uploads are still in use."""
    log = get_run_logger()
    requests = {r.key: r for r in unclaimed}
    requests.update((r.key, r) for r in await open_requests(now, RETRY_WINDOW))  # a claim names its run
    if not requests:
        return 0, []
    runs = await read_runs([r.run_id for r in requests.values()])
    counts = await retry_counts(list(requests))
    retried, in_hand, going = 0, [], 0
    for request in requests.values():
        run = runs.get(request.run_id)
        retries = counts.get(request.key, 0)
        decision = decide_retry(request, run, retries, now=now, limit=limit, pending_limit=pending_limit)
        if decision.action == "leave":
            going += 1
            in_hand.append(request.key)
            continue
        if decision.action in ("give-up", "missing", "report"):
            log.warning("request %s: %s", request.key, decision.reason)
            continue
        number = await count_retry(request.key, request.run_id, now)
        message = f"Retried by reconcile ({number} of {limit}): {decision.reason}"
        result = await retry_run(request.run_id, decision.action == "crash-and-retry", message[:500])
        log.warning("request %s: %s; retry %d of %d: %s", request.key, decision.reason, number, limit, result)
        in_hand.append(request.key)
        retried += result == "scheduled again"
    log.info("%d open request(s): %d retried, %d still going", len(requests), retried, going)
    return retried, in_hand
