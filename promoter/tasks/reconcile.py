"""Tasks of the reconcile flow: read the source site and the ledger, submit missed requests, sweep targets."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

from promoter.qrs.client import QrsClient
from promoter.qrs.models import App
from promoter.reconcile import (
    MissedRequest,
    ReconcileMark,
    ReconcileRecord,
    SourceSurvey,
    running_upload_tokens,
    survey_source,
    sweep_leftovers,
)
from promoter.settings import load_settings
from promoter.tasks.policy import TRANSIENT_RETRIES
from promoter.tasks.run import PREFECT_CALL

READ = {"cache_policy": NO_CACHE, "timeout_seconds": 600, **TRANSIENT_RETRIES}
PAGE = 200  # the most flow runs the Prefect API returns per call
RECORD = {"cache_policy": NO_CACHE, "timeout_seconds": 120, "retries": 2, "retry_delay_seconds": 1}


def _record() -> ReconcileRecord:
    return ReconcileRecord(load_settings().ledger_url)


@task(name="last-reconciled", **RECORD)
async def last_reconciled() -> ReconcileMark | None:
    """When reconcile first and last finished without failing (None: never)."""

    def read() -> ReconcileMark | None:
        with _record() as record:
            return record.mark()

    return await asyncio.to_thread(read)


@task(name="mark-reconciled", **RECORD)
async def mark_reconciled(at: datetime) -> None:
    def write() -> None:
        with _record() as record:
            record.mark_success(at)

    await asyncio.to_thread(write)


@task(name="survey-source", **READ)
async def read_source(since: datetime | None) -> SourceSurvey:
    """Apps with approval or reload properties, and the apps QRS journaled as changed since ``since``."""
    settings = load_settings()
    async with QrsClient.for_site(settings, settings.SOURCE) as qrs:
        return await survey_source(qrs, settings, since)


@task(name="unhandled-requests", **RECORD)
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
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters=request.parameters(), idempotency_key=request.idempotency_key
        )
    return run.id


@task(name="earlier-submissions", **PREFECT_CALL)
async def earlier_submissions(requests: list[MissedRequest]) -> dict[str, str]:
    """Runs an earlier reconcile created for these requests, by idempotency key: "name (state)"."""
    keys = sorted({r.idempotency_key for r in requests})
    found: dict[str, str] = {}
    async with get_client() as client:
        for start in range(0, len(keys), PAGE):
            chunk = FlowRunFilterIdempotencyKey(any_=keys[start : start + PAGE])
            for run in await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(idempotency_key=chunk), limit=PAGE
            ):
                if run.idempotency_key is not None:
                    found[run.idempotency_key] = f"{run.name} ({run.state_name or 'no state'})"
    return found


@task(name="running-uploads", **RECORD)
async def running_uploads() -> set[str]:
    """Upload tokens of requests still running: their temporary apps are in use."""
    settings = load_settings()

    def read() -> list[str]:
        with ReconcileRecord(settings.ledger_url) as record:
            return record.running()

    return running_upload_tokens(await asyncio.to_thread(read), settings.target_sites)


@task(name="sweep-site", task_run_name="sweep-{site}", **READ)
async def sweep_site(site: str, min_age: timedelta, protected: set[str]) -> list[App]:
    """Delete the temporary uploads left on one target site; returns the apps deleted."""
    async with QrsClient.for_site(load_settings(), site) as qrs:
        return await sweep_leftovers(qrs, min_age=min_age, protected=protected, log=get_run_logger())
