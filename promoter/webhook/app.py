"""Build the webhook's FastAPI application: ``create_app(settings)``; there is no module-level app."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response

from promoter.errors import SettingsError
from promoter.prefect_api import HANDLE_CHANGE
from promoter.settings import Settings, WebhookSettings
from promoter.webhook import health, routes
from promoter.webhook.auth import SourceCheck, mask_access_log, require_secret
from promoter.webhook.health import HealthCache, LastCheck, PrefectProbe
from promoter.webhook.outbox import Outbox
from promoter.webhook.refusals import DEFAULT_INTERVAL_SECONDS, RefusalLog
from promoter.webhook.state import WebhookState
from promoter.webhook.submitter import RelevanceCheck, SubmitPolicy, Submitter

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger(__name__)

PrefectClientFactory = Callable[[], "PrefectClient"]


def require_prefect_api_url() -> None:
    """Refuse to start without PREFECT_API_URL: get_client() would start a throw-away ephemeral server."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise SettingsError(
            "PREFECT_API_URL is not set: point it at the Prefect server, e.g. http://127.0.0.1:4200/api"
        )


def default_prefect_client() -> PrefectClient:
    """A client for PREFECT_API_URL (get_client())."""
    from prefect import get_client

    require_prefect_api_url()
    return get_client()


def create_app(
    settings: Settings,
    *,
    prefect_client_factory: PrefectClientFactory | None = None,
    deployment_name: str = HANDLE_CHANGE,
    relevant: RelevanceCheck | None = None,
    last_subscription_check: LastCheck | None = None,
    submit_policy: SubmitPolicy | None = None,
    refusal_summary_seconds: float = DEFAULT_INTERVAL_SECONDS,
) -> FastAPI:
    """The webhook application for these settings.

    - ``prefect_client_factory``: makes the one PrefectClient the app shares (default: get_client()).
    - ``deployment_name``: ``flow/deployment`` the flow runs are created from.
    - ``relevant``: optional cheap pre-check; entries it rejects are removed without a flow run.
    - ``last_subscription_check``: when the keeper last confirmed the subscriptions, for /healthz.
    - ``submit_policy``: concurrency, polling and backoff of the submitter.
    - ``refusal_summary_seconds``: how often refused connections and requests are summed up in the log.

    Serve it with ``promoter.webhook.serving`` (it guards the connections as well).

    Raises SettingsError at once for a missing or weak webhook.secret, or (with the default client
    factory) a missing PREFECT_API_URL.
    """
    secret = require_secret(settings.webhook)
    if prefect_client_factory is None:
        require_prefect_api_url()
    make_client = prefect_client_factory or default_prefect_client
    read_last_check = last_subscription_check or (lambda: None)
    refusals = RefusalLog(refusal_summary_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[WebhookState]:
        async with AsyncExitStack() as stack:
            outbox = Outbox(settings.webhook.outbox_path)
            await outbox.open()
            stack.push_async_callback(outbox.close)
            stack.callback(refusals.flush)
            prefect = await stack.enter_async_context(make_client())
            submitter = Submitter(
                outbox, prefect, deployment_name=deployment_name, relevant=relevant, policy=submit_policy
            )
            task = asyncio.create_task(submitter.run(), name="outbox-submitter")
            task.add_done_callback(_report_stopped)
            stack.push_async_callback(_stop, task)
            stats = await outbox.stats()
            log.info("webhook ready; %d notification(s) waiting in %s", stats.depth, outbox.path)
            yield {
                "settings": settings.webhook,
                "secret": secret,
                "outbox": outbox,
                "submitter": submitter,
                "prefect_probe": PrefectProbe(prefect),
                "health": HealthCache(),
                "last_subscription_check": read_last_check,
            }

    app = FastAPI(
        title="qs-promoter webhook",
        summary="Receives Qlik Sense QRS change notifications and turns them into Prefect flow runs.",
        lifespan=lifespan,
        # A redirect would send the caller to whatever host its Host header names.
        redirect_slashes=False,
    )
    # What serving.prepare() and the routes read: the settings and the log of refusals.
    app.state.webhook = settings.webhook
    app.state.refusals = refusals
    app.add_middleware(SourceCheck, webhook=settings.webhook, refusals=refusals)
    app.add_exception_handler(routes.Refused, _refused)
    app.include_router(routes.router)
    app.include_router(health.router)
    # uvicorn's access log would otherwise print the secret that is part of every callback path.
    mask_access_log()
    app.openapi = _openapi_with_limits(app, settings.webhook)  # type: ignore[method-assign]
    return app


def _openapi_with_limits(app: FastAPI, webhook: WebhookSettings) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI document, with this webhook's cap on changes per notification in the body schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            operation = document["paths"][routes.NOTIFICATION_ROUTE]["post"]
            # A copy: FastAPI put the route's own (shared, module-level) dict into the document.
            body = operation["requestBody"] = copy.deepcopy(operation["requestBody"])
            body["content"]["application/json"]["schema"]["maxItems"] = webhook.max_changes_per_notification
        return app.openapi_schema

    return openapi


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, routes.Refused)
    return Response(status_code=exc.status)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def _report_stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "the outbox submitter stopped; notifications are stored but not submitted",
            exc_info=task.exception(),
        )
