"""What a promoted app says about where it came from: its description and its temporary upload name."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from promoter.mail import one_line
from promoter.qrs.models import format_qrs_time

# QRS limits: App.name 255 characters, App.description 512 characters (OpenAPI 38.22.0).
NAME_LIMIT = 255
DESCRIPTION_LIMIT = 512


@dataclass(frozen=True, slots=True)
class Provenance:
    source_node: str
    source_app_id: str
    approver: str
    owner: str
    promoted_at: datetime
    s3_version_id: str | None = None


def describe(provenance: Provenance) -> str:
    """The description every target app carries, cut to what QRS stores."""
    # Account names come from the user directory: one line each, so none can forge a line of its own.
    text = (
        f"Promoted by qs-promoter from {one_line(provenance.source_node)} (app {provenance.source_app_id})"
        f" on {format_qrs_time(provenance.promoted_at)}; approved by {one_line(provenance.approver)};"
        f" owner {one_line(provenance.owner)}"
    )
    if provenance.s3_version_id:
        text += f"; S3 version {provenance.s3_version_id}"
    return text[:DESCRIPTION_LIMIT]


def upload_name(app_name: str, token: str) -> str:
    """A name no other app has, so a repeated upload can be recognised and adopted, not doubled.

    The upload is renamed to the real name when it is published, or deleted after a replace.
    """
    suffix = f" [qs-promoter {token}]"
    return app_name[: NAME_LIMIT - len(suffix)] + suffix


def upload_token(request_key: str, site: str) -> str:
    """Short, stable per request and site: a retried or re-run promotion finds its own upload."""
    return hashlib.sha256(f"{request_key}|{site}".encode()).hexdigest()[:12]
