"""Who may post notifications and read the webhook's health: the secret in the path, the source networks."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from promoter.errors import SettingsError
from promoter.settings import HOW_TO_GENERATE, WEBHOOK_SECRET_MIN_LENGTH, WebhookSettings, weak_secret_problem
from promoter.webhook.refusals import RefusalLog

# The secret travels as a URL path segment, so it must need no percent-encoding.
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
# Whatever follows /qrs/ in a path is (or is meant to be) the secret, right or wrong.
_SECRET_SEGMENT = re.compile(r"^(/qrs/)[^/?]*")
MASK = "***"


def require_secret(webhook: WebhookSettings) -> str:
    """The configured secret, or a SettingsError saying how to make one (the value is never shown)."""
    secret = webhook.secret.get_secret_value()
    # The settings' own rule, again: a value set past validation (model_copy) must not slip through.
    unset = f"must be at least {WEBHOOK_SECRET_MIN_LENGTH} characters (it has 0)"
    problem = weak_secret_problem(secret) if secret else unset
    if problem:
        raise SettingsError(f"webhook.secret {problem}; {HOW_TO_GENERATE}")
    if not _URL_SAFE.fullmatch(secret):
        raise SettingsError(f"webhook.secret may only contain letters, digits and . _ ~ -; {HOW_TO_GENERATE}")
    return secret


def secret_matches(given: str, expected: str) -> bool:
    """Compare in constant time, so the answer's timing does not reveal how much of a guess was right."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def source_allowed(host: str | None, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    """True when no networks are configured, or the peer address lies in one of them."""
    return not networks or in_networks(host, networks)


def in_networks(host: str | None, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    """True when the peer address lies in one of ``networks`` (never for an empty list)."""
    if host is None:
        return False
    try:
        address = ip_address(host)
    except ValueError:
        return False
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return any(address.ipv4_mapped in network for network in networks)
    return any(address in network for network in networks)


def monitoring_allowed(host: str | None, webhook: WebhookSettings) -> bool:
    """May this source read /healthz and the API docs? allowed_networks may, and so may monitoring_networks.

    It is also who may connect at all: everyone else is refused before a byte is read.
    """
    return source_allowed(host, webhook.allowed_networks) or in_networks(host, webhook.monitoring_networks)


def is_notification_path(path: str) -> bool:
    """True for the paths QRS posts to (and any guess at them): everything under /qrs."""
    return path == "/qrs" or path.startswith("/qrs/")


class SourceCheck:
    """ASGI middleware: 403 for a caller outside the networks its path is for, before any route runs.

    Notifications come only from allowed_networks; /healthz and the docs also answer
    monitoring_networks (a load balancer, this machine). Refusals are summed up, not logged one by one.
    """

    def __init__(self, app: ASGIApp, webhook: WebhookSettings, refusals: RefusalLog) -> None:
        self.app = app
        self.webhook = webhook
        self.refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            host = client[0] if client else None
            if is_notification_path(scope["path"]):
                allowed = source_allowed(host, self.webhook.allowed_networks)
                reason = "notification from outside allowed_networks"
            else:
                allowed = monitoring_allowed(host, self.webhook)
                reason = "health or docs request from outside allowed_networks and monitoring_networks"
            if not allowed:
                self.refusals.refused(reason, host)
                await Response(status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def mask_secret(path: str) -> str:
    """The path as it may appear in a log: the segment after /qrs/ replaced by ***."""
    return _SECRET_SEGMENT.sub(rf"\g<1>{MASK}", path, count=1)


class MaskSecretInAccessLog(logging.Filter):
    """Rewrites uvicorn's access-log line so the callback secret never reaches a log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access formats (client, method, path, http version, status).
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], mask_secret(args[2]), *args[3:])
        return True


def mask_access_log(logger_name: str = "uvicorn.access") -> None:
    """Install the masking filter once on the access logger of the server that hosts the app."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, MaskSecretInAccessLog) for f in logger.filters):
        logger.addFilter(MaskSecretInAccessLog())
