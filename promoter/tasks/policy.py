"""Retry policies shared by every task: transient failures are retried, the rest fail fast."""

from __future__ import annotations

import os
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from promoter.errors import MailError, QrsConflict, QrsError, SiteFailed, VersioningError
from promoter.qrs.retry import RetryPolicy

# Seconds between attempts; they grow so a QRS node that is restarting (about a minute) is
# waited out. QSP_TASK_RETRY_DELAYS="0,0,0" makes retries instant (tests, benchmarks).
RETRY_DELAYS = [float(s) for s in os.environ.get("QSP_TASK_RETRY_DELAYS", "2,10,30").split(",")]
# The QRS client repeats idempotent calls itself before a task retry; with instant task
# retries its own backoff (about a second per task attempt) is instant too.
CLIENT_RETRY = RetryPolicy() if any(RETRY_DELAYS) else RetryPolicy.immediate()


async def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry connection errors, 5xx and 409 (the next attempt re-reads); never other 4xx.

    Async on purpose: for an async task, ``state.result()`` hands back an un-awaited coroutine
    and the documented sync form never retries (STYLE, "Checked while writing").
    """
    exc = await state.aresult(raise_on_failure=False)
    if isinstance(exc, QrsConflict):
        return True
    return isinstance(exc, QrsError | MailError | VersioningError | SiteFailed) and exc.transient


TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": 0.5 if any(RETRY_DELAYS) else None,
    "retry_condition_fn": retry_if_transient,
}


# Tasks that call the Prefect API (reconcile's reads and re-runs): a few quick repeats, never cached.
PREFECT_CALL: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "timeout_seconds": 60,
    "retries": 3,
    "retry_delay_seconds": 2,
}
