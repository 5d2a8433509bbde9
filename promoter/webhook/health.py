"""GET /healthz: is the webhook able to accept notifications, and is anything piling up?"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from promoter.webhook.outbox import OutboxUnavailable
from promoter.webhook.state import WebhookState, webhook_state

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger(__name__)

router = APIRouter()

LastCheck = Callable[[], datetime | None]
Answer = tuple[dict[str, Any], int]  # the JSON body and the status code


class Health(BaseModel):
    """What an admin or a load balancer needs to see at a glance."""

    status: str  # "ok", or "degraded" when the outbox or the submitter cannot work
    outbox_depth: int | None
    oldest_entry_age_seconds: float | None
    prefect_api_reachable: bool
    submitter_running: bool
    flow_runs_submitted: int
    last_submit_error: str | None
    last_subscription_check: datetime | None


class PrefectProbe:
    """Asks the Prefect API /health at most once per ``ttl_seconds``, waiting at most ``timeout_seconds``."""

    def __init__(
        self, prefect: PrefectClient, *, ttl_seconds: float = 5.0, timeout_seconds: float = 2.0
    ) -> None:
        self.prefect = prefect
        self.ttl_seconds = ttl_seconds
        self.timeout_seconds = timeout_seconds
        self._checked_at = float("-inf")
        self._reachable = False
        self._lock = asyncio.Lock()

    async def reachable(self) -> bool:
        async with self._lock:  # concurrent health checks share one probe
            if time.monotonic() - self._checked_at >= self.ttl_seconds:
                self._reachable = await self._probe()
                self._checked_at = time.monotonic()
            return self._reachable

    async def _probe(self) -> bool:
        try:
            # The client retries a lost connection for up to a minute; a health check must not wait that long.
            async with asyncio.timeout(self.timeout_seconds):
                return await self.prefect.api_healthcheck() is None
        except TimeoutError:
            return False


class HealthCache:
    """The last health answer, reused for ``ttl_seconds``: however often /healthz is asked, the
    outbox and the ledger (the last subscription check) are read at most once per period."""

    def __init__(self, ttl_seconds: float = 1.0) -> None:
        self.ttl_seconds = ttl_seconds
        self._answer: Answer | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def answer(self, compute: Callable[[], Awaitable[Answer]]) -> Answer:
        async with self._lock:  # concurrent checks wait for one computation and share it
            if self._answer is None or time.monotonic() - self._at >= self.ttl_seconds:
                self._answer = await compute()
                self._at = time.monotonic()
            return self._answer


@router.get("/healthz", response_model=Health, summary="Outbox depth, Prefect reachability, submitter state")
async def healthz(request: Request) -> JSONResponse:
    """200 while notifications can be accepted and submitted; 503 if the outbox or submitter is broken.

    Answered to allowed_networks and monitoring_networks only, and at most once a second afresh.
    """
    state = webhook_state(request)
    body, status = await state["health"].answer(lambda: _check(state))
    return JSONResponse(body, status_code=status)


async def _check(state: WebhookState) -> Answer:
    submitter = state["submitter"]
    depth: int | None = None
    age: float | None = None
    outbox_ok = True
    try:
        stats = await state["outbox"].stats()
        depth = stats.depth
        if stats.oldest_received_at is not None:
            age = round(max(time.time() - stats.oldest_received_at, 0.0), 3)
    except OutboxUnavailable as exc:
        log.error("health check: %s", exc)
        outbox_ok = False
    last_check = await asyncio.to_thread(state["last_subscription_check"])
    healthy = outbox_ok and submitter.running
    health = Health(
        status="ok" if healthy else "degraded",
        outbox_depth=depth,
        oldest_entry_age_seconds=age,
        prefect_api_reachable=await state["prefect_probe"].reachable(),
        submitter_running=submitter.running,
        flow_runs_submitted=submitter.submitted,
        last_submit_error=submitter.last_error,
        last_subscription_check=last_check,
    )
    return health.model_dump(mode="json"), 200 if healthy else 503
