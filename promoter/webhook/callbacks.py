"""The callback URLs QRS posts change notifications to: one per kind of change."""

from __future__ import annotations

from typing import Literal, get_args

from promoter.settings import Settings

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
