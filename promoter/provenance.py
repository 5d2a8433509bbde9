"""What a promoted app says about where it came from: its description and its temporary upload name."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from promoter.mail_headers import one_line
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


# The temporary name's mark; tools that look for our uploads (the sweep, the chaos suite) match it.
UPLOAD_MARK = "[qs-promoter "
# "<name> [qs-promoter <token>-<secret>]", the token captured; names from before the secret
# ("<token>" alone) still match, so their leftovers are still swept.
UPLOAD_SUFFIX = re.compile(r" \[qs-promoter ([0-9a-f]{12})(?:-[0-9a-f]{32})?\]\Z")


@dataclass(frozen=True, slots=True)
class UploadSlot:
    """One request's upload to one site, as the ledger recorded it before the first attempt uploaded.

    Every attempt of the request gets the same slot, so a retried or re-run attempt looks for the
    same name and adopts its own upload instead of making a second one.
    """

    token: str  # from the request key and site: the sweep spares the uploads of running requests by it
    secret: str  # random: nobody can give an app our upload's name before the upload exists
    began: datetime  # our clock, before the first upload: an app created earlier is not ours


def new_upload_secret() -> str:
    """128 random bits in hex: a temporary name nobody can guess."""
    return secrets.token_hex(16)


def upload_name(app_name: str, slot: UploadSlot) -> str:
    """The temporary name of the upload, at most 255 characters; the upload is renamed to the real
    name when it is published, or deleted after a replace."""
    suffix = f" {UPLOAD_MARK}{slot.token}-{slot.secret}]"
    return app_name[: NAME_LIMIT - len(suffix)] + suffix


def copy_name(app_name: str, slot: UploadSlot, stream_id: object) -> str:
    """The temporary name of the copy made from the upload for one stream: as unguessable as the
    upload's, one per stream, and in the same form, so the sweep knows it. A copy whose answer was
    lost is found by it instead of being made twice; it is renamed when it is published."""
    secret = hashlib.sha256(f"{slot.secret}|{stream_id}".encode()).hexdigest()[:32]
    return upload_name(app_name, UploadSlot(slot.token, secret, slot.began))


def upload_token(request_key: str, site: str) -> str:
    """Short, stable per request and site (not secret): names the request's work folder, and lets the
    sweep tell the uploads of running requests apart."""
    return hashlib.sha256(f"{request_key}|{site}".encode()).hexdigest()[:12]
