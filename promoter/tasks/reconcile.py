"""Tasks of the reconcile flow: read the source site and the ledger, submit missed requests, retry
stopped runs, sweep targets."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from uuid import UUID

from prefect import get_run_logger, task
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.states import Crashed, Scheduled

from promoter.outcome import change_run_name
from promoter.prefect_api import RECONCILE_TAGS, change_parameters, find_deployment, start_run
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App
from promoter.reconcile import (
    MAINTENANCE_FLOWS,
    STOPPED,
    MissedRequest,
    RunStatus,
    SourceSurvey,
    running_upload_tokens,
    stalled,
    survey_source,
    sweep_leftovers,
)
from promoter.settings import current_settings
from promoter.store.reconcile_marks import OpenRequest, ReconcileMark, ReconcileRecord
from promoter.tasks.retries import LEDGER_RECORD, PREFECT_CALL, SITE_SURVEY

PAGE = 200  # the most flow runs the Prefect API returns per call


def _record() -> ReconcileRecord:
    return ReconcileRecord(current_settings().ledger_url.get_secret_value())


@task(name="last-reconciled", **LEDGER_RECORD)
async def last_reconciled() -> ReconcileMark | None:
    """When reconcile first and last finished without failing (None: never)."""

    def read() -> ReconcileMark | None:
        with _record() as record:
            return record.mark()

    return await asyncio.to_thread(read)


@task(name="mark-reconciled", **LEDGER_RECORD)
async def mark_reconciled(at: datetime) -> None:
    def write() -> None:
        with _record() as record:
            record.mark_success(at)

    await asyncio.to_thread(write)


@task(name="survey-source", **SITE_SURVEY)
async def read_source(since: datetime | None) -> SourceSurvey:
    """Apps with approval or reload properties, and the apps QRS journaled as changed since ``since``."""
    settings = current_settings()
    async with QrsClient.for_site(settings, settings.SOURCE) as qrs:
        return await survey_source(qrs, settings, since)


@task(name="unhandled-requests", **LEDGER_RECORD)
async def unhandled_requests(requests: list[MissedRequest]) -> list[MissedRequest]:
    """The requests the ledger has never seen (a claimed, running or finished one is handled)."""

    def read() -> set[str]:
        with _record() as record:
            return record.unhandled(r.key for r in requests)

    waiting = await asyncio.to_thread(read)
    return [r for r in requests if r.key in waiting]


@task(name="submit-missed-request", task_run_name="submit-{request.trigger}-{request.app_id}", **PREFECT_CALL)
async def submit_request(deployment_name: str, request: MissedRequest) -> UUID:
    """A flow run of handle-app-change; the idempotency key makes a repeat return the same run."""
    parameters = change_parameters(request.app_id, request.trigger, request.idempotency_key)
    async with get_client() as client:
        run = await start_run(
            client,
            deployment_name,
            parameters,
            name=change_run_name(request.trigger, str(request.app_id), request.app_name),
            idempotency_key=request.idempotency_key,
            tags=RECONCILE_TAGS,
        )
    return run.id


def run_status(run: FlowRun) -> RunStatus:
    state = run.state
    return RunStatus(
        str(run.id),
        run.name,
        state.type.value if state else "UNKNOWN",
        state.timestamp if state else None,
        (state.message or "") if state else "",
    )


@task(name="earlier-submissions", **PREFECT_CALL)
async def earlier_submissions(requests: list[MissedRequest]) -> dict[str, RunStatus]:
    """Runs an earlier reconcile created for these requests, by idempotency key."""
    keys = sorted({r.idempotency_key for r in requests})
    found: dict[str, RunStatus] = {}
    async with get_client() as client:
        for start in range(0, len(keys), PAGE):
            chunk = FlowRunFilterIdempotencyKey(any_=keys[start : start + PAGE])
            for run in await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(idempotency_key=chunk), limit=PAGE
            ):
                if run.idempotency_key is not None:
                    found[run.idempotency_key] = run_status(run)
    return found


@task(name="runs-in-progress", **PREFECT_CALL)
async def runs_in_progress(deployment_name: str) -> dict[str, RunStatus]:
    """The scheduled, pending and running runs of the change deployment, by the app id they are for."""
    active = FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING])
    found: dict[str, RunStatus] = {}
    async with get_client() as client:
        only = DeploymentFilter(id=DeploymentFilterId(any_=[await find_deployment(client, deployment_name)]))
        offset = 0
        while True:
            runs = await client.read_flow_runs(
                deployment_filter=only,
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=active)),
                limit=PAGE,
                offset=offset,
            )
            found.update((str(run.parameters.get("app_id")), run_status(run)) for run in runs)
            if len(runs) < PAGE:
                return found
            offset += PAGE


@task(name="open-requests", **LEDGER_RECORD)
async def open_requests(now: datetime, window: timedelta) -> list[OpenRequest]:
    """Requests the ledger shows claimed and not done (unfinished or failed), claimed within ``window``."""

    def read() -> list[OpenRequest]:
        with _record() as record:
            return record.open_requests(now, window)

    return await asyncio.to_thread(read)


@task(name="retry-counts", **LEDGER_RECORD)
async def retry_counts(keys: list[str]) -> dict[str, int]:
    def read() -> dict[str, int]:
        with _record() as record:
            return record.retries(keys)

    return await asyncio.to_thread(read)


@task(name="read-runs", **PREFECT_CALL)
async def read_runs(run_ids: list[str]) -> dict[str, RunStatus]:
    """The flow runs with these ids (ids that are not UUIDs, or unknown to Prefect, are absent)."""
    ids = sorted({UUID(i) for i in run_ids if _is_uuid(i)}, key=str)
    found: dict[str, RunStatus] = {}
    async with get_client() as client:
        for start in range(0, len(ids), PAGE):
            chunk = FlowRunFilterId(any_=ids[start : start + PAGE])
            for run in await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=chunk), limit=PAGE):
                found[str(run.id)] = run_status(run)
    return found


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


@task(name="count-retry", task_run_name="count-retry-{run_id}", **LEDGER_RECORD)
async def count_retry(key: str, run_id: str, at: datetime) -> int:
    """Count the retry before making it: a reconcile that dies halfway can never retry without bound."""

    def write() -> int:
        with _record() as record:
            return record.count_retry(key, run_id, at)

    return await asyncio.to_thread(write)


@task(name="retry-run", task_run_name="retry-{run_id}", **PREFECT_CALL)
async def retry_run(run_id: str, crash_first: bool, message: str) -> str:
    """Schedule the same flow run again, as the UI's Retry does; returns what happened, in words.

    The run is read again first and only a run that is still stopped (or, with ``crash_first``,
    still hanging, which is marked Crashed first) is scheduled: the state may have moved since
    reconcile looked (an admin pressed Retry, the run finished).
    """
    async with get_client() as client:
        run = await client.read_flow_run(UUID(run_id))
        return await _schedule_again(client, run, crash_first, message)


async def _schedule_again(client: PrefectClient, run: FlowRun, crash_first: bool, message: str) -> str:
    state = run.state.type.value if run.state else "UNKNOWN"
    if crash_first and state not in STOPPED and state != "COMPLETED":
        await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        state = "CRASHED"
    if state not in STOPPED:
        return f"not retried: it is {state} now"
    result = await client.set_flow_run_state(run.id, Scheduled(message=message), force=True)
    if result.status is not SetStateStatus.ACCEPT:
        reason = getattr(result.details, "reason", None) or ""
        return f"not retried: Prefect answered {result.status.value} {reason}".rstrip()
    return "scheduled again"


@task(name="release-stalled-runs", **PREFECT_CALL)
async def release_stalled_runs(pool: str, now: datetime, pending_limit: timedelta) -> list[str]:
    """End the runs of ``pool`` that a lost worker left Pending (``stalled``); returns what was done.

    A change or manual run is scheduled again, the same run, so that a notification whose worker
    died is not lost; a keep-subscriptions or reconcile run is only marked Crashed: its next tick
    does the same work. Either way the slots it held are given back.
    """
    minutes = pending_limit.total_seconds() / 60
    message = f"Pending for over {minutes:g} min: the worker that took it was lost before starting it"
    pending = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING]))
    done: list[str] = []
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=pending),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            limit=PAGE,
        )
        stuck = [run for run in runs if stalled(run_status(run), now, pending_limit)]
        flows = {f.id: f.name for f in await client.read_flows()} if stuck else {}
        for run in stuck:
            if flows.get(run.flow_id) in MAINTENANCE_FLOWS:
                await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
                done.append(f"{run.name}: marked Crashed")
            else:
                outcome = await _schedule_again(client, run, True, f"{message}; scheduled again by reconcile")
                done.append(f"{run.name}: {outcome}")
    return done


@task(name="running-uploads", **LEDGER_RECORD)
async def running_uploads() -> set[str]:
    """Upload tokens of requests still running: their temporary apps are in use."""
    settings = current_settings()

    def read() -> list[str]:
        with ReconcileRecord(settings.ledger_url.get_secret_value()) as record:
            return record.running()

    return running_upload_tokens(await asyncio.to_thread(read), settings.target_sites)


@task(name="sweep-site", task_run_name="sweep-{site}", **SITE_SURVEY)
async def sweep_site(site: str, min_age: timedelta, protected: set[str]) -> list[App]:
    """Delete the temporary uploads left on one target site; returns the apps deleted."""
    async with QrsClient.for_site(current_settings(), site) as qrs:
        return await sweep_leftovers(qrs, min_age=min_age, protected=protected, log=get_run_logger())
