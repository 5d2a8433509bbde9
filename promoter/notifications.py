"""The changes of an app QRS notifies us of, and the callback URL each kind is posted to.

Three kinds: an app was updated (approvals arrive as updates), reloaded, or published. The
webhook serves one route per kind, the subscriptions register one URL per kind, and the rules
decide per kind (``approval.decide``).
"""

from __future__ import annotations

from typing import Literal, get_args

from promoter.settings import Settings

# What changed on an app: the kind of notification, and the trigger of a flow run.
ChangeKind = Literal["updated", "reloaded", "published"]
KINDS: tuple[ChangeKind, ...] = get_args(ChangeKind)


def callback_path(secret: str, kind: ChangeKind) -> str:
    """The route path for one kind; the secret is a path segment because QRS cannot send headers."""
    return f"/qrs/{secret}/app-{kind}"


def callback_url(settings: Settings, kind: ChangeKind) -> str:
    """The URL a subscription for ``kind`` registers with QRS (it contains the secret: never log it)."""
    if kind not in KINDS:
        raise ValueError(f"unknown change kind {kind!r}; expected one of {', '.join(KINDS)}")
    base = settings.webhook.public_base_url.rstrip("/")
    return base + callback_path(settings.webhook.secret.get_secret_value(), kind)
