"""What the webhook's lifespan opens once and every request reads: the typed lifespan state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict, cast

from fastapi import Request

from promoter.settings import WebhookSettings
from promoter.webhook.outbox import Outbox
from promoter.webhook.submitter import Submitter

if TYPE_CHECKING:
    from promoter.webhook.health import HealthCache, PrefectProbe


class WebhookState(TypedDict):
    """Yielded by the lifespan; Starlette hands a copy to each request as ``scope["state"]``."""

    settings: WebhookSettings
    secret: str
    outbox: Outbox
    submitter: Submitter
    prefect_probe: PrefectProbe
    health: HealthCache
    last_subscription_check: Callable[[], datetime | None]


def webhook_state(request: Request) -> WebhookState:
    """The lifespan state of the app serving this request (ASGI lifespan-state extension)."""
    return cast(WebhookState, request.scope["state"])
