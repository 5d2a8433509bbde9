"""Keep promoted apps, and backups of the target apps they replace, as versions in an S3 bucket.

Keys are built from the app id, never from the name alone, so two apps called "Sales" never
share a key and no name can reach outside the prefix:

- a promoted app:  ``{prefix}apps/{app_id}/{slug}.qvf``
- a backup:        ``{prefix}backups/{site}/{target_app_id}/{slug}.qvf``

(``slug`` is a short ASCII form of the app name, for people browsing the bucket.) An app that
continues another (the owner's copy an unpublish made) is kept under the key of the first app
of its chain, the lineage root, so every approved version of it is a version of one object. The bucket
keeps every upload as a new version of the key; ``upload_version`` returns the version id,
``download_version`` brings one back byte for byte. Files move through boto3's transfer
manager, so memory stays flat whatever the app size. Every failure is a ``VersioningError``
without credentials in it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from promoter.errors import VersioningError
from promoter.settings import VersioningSettings, normalise_s3_prefix

Kind = Literal["app", "backup"]

SLUG_LIMIT = 60
METADATA_VALUE_LIMIT = 256
# S3 refuses user metadata above 2 KB in total (names and values).
METADATA_TOTAL_LIMIT = 2000
# 16 MiB parts, 4 at a time: at most ~64 MiB in flight, whatever the size of the app.
TRANSFER = TransferConfig(
    multipart_threshold=64 * 1024 * 1024,
    multipart_chunksize=16 * 1024 * 1024,
    max_concurrency=4,
    use_threads=True,
)
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)
_SESSION: boto3.session.Session | None = None
_SESSION_LOCK = threading.Lock()
_METADATA_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


@dataclass(frozen=True, slots=True)
class S3Version:
    """One stored version of one object: where it is and which version it is."""

    bucket: str
    key: str
    version_id: str
    bytes: int
    last_modified: datetime | None = None
    is_latest: bool | None = None


def s3_client(settings: VersioningSettings) -> BaseClient:
    """An S3 client for the configured endpoint; without keys in the settings, boto3's default chain.

    Clients are thread-safe and come from one shared boto3 Session (loading the S3 model costs
    ~0.2 s per new Session); the Session itself is not thread-safe, hence the lock.
    """
    key_id = settings.access_key_id.get_secret_value() if settings.access_key_id else None
    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
    custom_endpoint = bool(settings.endpoint_url)
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        # S3-compatible stores (MinIO, Ceph, NetApp) want path-style URLs and often reject the
        # CRC checksum headers boto3 sends by default since 1.36.
        s3={"addressing_style": "path"} if custom_endpoint else None,
        request_checksum_calculation="when_required" if custom_endpoint else "when_supported",
        response_checksum_validation="when_required" if custom_endpoint else "when_supported",
    )
    try:
        with _SESSION_LOCK:
            global _SESSION
            if _SESSION is None:
                _SESSION = boto3.session.Session()
            return _SESSION.client(
                "s3",
                endpoint_url=settings.endpoint_url or None,
                region_name=settings.region or None,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                config=config,
            )
    except (BotoCoreError, ValueError) as exc:
        raise _versioning_error("client", settings.endpoint_url or "AWS", exc, settings) from None


def app_slug(name: str, limit: int = SLUG_LIMIT) -> str:
    """A short, ASCII, path-free form of an app name for humans browsing the bucket ("app" if none)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name)
    slug = re.sub(r"[-._]{2,}", "-", slug).strip("-._")[:limit].strip("-._")
    return slug or "app"


def object_key(
    prefix: str, app_id: object, app_name: str, kind: Kind = "app", *, site: str | None = None
) -> str:
    """The S3 key for an app (``kind="app"``) or for a backup of a target app on ``site``.

    ``app_id`` must be a QRS id (a GUID); for a backup it is the target app's id.
    """
    app_uuid = uuid.UUID(str(app_id))  # anything else is refused: the id is the key's identity
    folder = normalise_s3_prefix(prefix)
    if kind == "app":
        folder += f"apps/{app_uuid}/"
    elif kind == "backup":
        if not site:
            raise ValueError("a backup key needs the site alias")
        folder += f"backups/{app_slug(site)}/{app_uuid}/"
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return f"{folder}{app_slug(app_name)}.qvf"


def s3_metadata(values: Mapping[str, str]) -> dict[str, str]:
    """User metadata S3 accepts: names as lower-case ASCII, values percent-encoded ASCII, cut to size.

    ``metadata_text`` turns a value back into the original text.
    """
    metadata: dict[str, str] = {}
    for name, value in values.items():
        clean_name = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "value"
        encoded = quote(value, safe=_METADATA_SAFE)
        if len(encoded) > METADATA_VALUE_LIMIT:
            encoded = encoded[:METADATA_VALUE_LIMIT]
            encoded = encoded[: encoded.rfind("%")] if "%" in encoded[-2:] else encoded  # no half escape
        metadata[clean_name] = encoded
    total = sum(len(k) + len(v) for k, v in metadata.items())
    if total > METADATA_TOTAL_LIMIT:
        raise ValueError(f"S3 metadata is {total} characters; S3 accepts about {METADATA_TOTAL_LIMIT}")
    return metadata


def metadata_text(value: str) -> str:
    """The original text of a metadata value written by ``s3_metadata``."""
    return unquote(value)


def upload_version(
    s3: BaseClient,
    settings: VersioningSettings,
    file: Path,
    app_id: object,
    app_name: str,
    metadata: Mapping[str, str] | None = None,
    *,
    kind: Kind = "app",
    site: str | None = None,
    root_id: object | None = None,
    root_name: str | None = None,
    transfer: TransferConfig = TRANSFER,
) -> S3Version:
    """Store ``file`` as a new version of the app's key and return that version.

    The bucket's versioning is checked first: on a bucket without it, an upload would
    overwrite the previous version for good. ``metadata`` (e.g. source site, approver) is
    stored with ``app-id`` and ``app-name`` via ``s3_metadata``. ``root_id`` and ``root_name``
    name the lineage root when the app continues another: the key is the root's, and the
    version's metadata names the root beside the app itself.
    """
    key_id, key_name = (root_id, root_name or app_name) if root_id is not None else (app_id, app_name)
    key = object_key(settings.prefix, key_id, key_name, kind, site=site)
    where = f"s3://{settings.bucket}/{key}"
    ensure_bucket_versioning(s3, settings.bucket)
    # boto3's transfer manager does not return the version id; this token finds our version
    # even if another upload to the same key lands in between.
    token = uuid.uuid4().hex
    fields = {"app-id": str(app_id), "app-name": app_name}
    if uuid.UUID(str(key_id)) != uuid.UUID(str(app_id)):
        fields["lineage-app-id"] = str(key_id)
    fields |= {**(metadata or {}), "upload-id": token}
    try:
        size = file.stat().st_size
        s3.upload_file(
            str(file),
            settings.bucket,
            key,
            ExtraArgs={"Metadata": s3_metadata(fields), "ContentType": "application/octet-stream"},
            Config=transfer,
        )
        head = s3.head_object(Bucket=settings.bucket, Key=key)
        if head.get("Metadata", {}).get("upload-id") != token:
            head = _find_upload(s3, settings.bucket, key, token)
    except VersioningError:
        raise
    except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
        raise _versioning_error("upload", where, exc, settings) from None
    version_id = head.get("VersionId")
    if not version_id or version_id == "null":
        raise VersioningError("upload", where, "the bucket returned no version id: enable versioning")
    if head.get("ContentLength") != size:
        raise VersioningError("upload", where, f"stored {head.get('ContentLength')} bytes, sent {size}")
    return S3Version(settings.bucket, key, version_id, size, head.get("LastModified"), None)


def download_version(
    s3: BaseClient, bucket: str, key: str, version_id: str, dest: Path, *, transfer: TransferConfig = TRANSFER
) -> Path:
    """Write one stored version to ``dest`` (replaced only once complete) and return ``dest``."""
    where = f"s3://{bucket}/{key}?versionId={version_id}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(dest), ExtraArgs={"VersionId": version_id}, Config=transfer)
    except (BotoCoreError, ClientError, OSError) as exc:
        raise _versioning_error("download", where, exc, None) from None
    return dest


def list_versions(s3: BaseClient, bucket: str, key_or_folder: str) -> list[S3Version]:
    """Stored versions, newest first, of one key, or of every key under a folder ending in "/"."""
    folder = key_or_folder.endswith("/")
    versions: list[S3Version] = []
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key_or_folder)
        for page in pages:
            for entry in page.get("Versions", []):
                if folder or entry["Key"] == key_or_folder:
                    versions.append(
                        S3Version(
                            bucket,
                            entry["Key"],
                            entry["VersionId"],
                            entry.get("Size", 0),
                            entry.get("LastModified"),
                            entry.get("IsLatest"),
                        )
                    )
    except (BotoCoreError, ClientError) as exc:
        raise _versioning_error("list versions", f"s3://{bucket}/{key_or_folder}", exc, None) from None
    versions.sort(key=lambda v: (v.last_modified is not None, v.last_modified), reverse=True)
    return versions


def ensure_bucket_versioning(s3: BaseClient, bucket: str) -> None:
    """Raise VersioningError unless the bucket exists, is reachable, and has versioning Enabled."""
    where = f"s3://{bucket}"
    try:
        s3.head_bucket(Bucket=bucket)
        status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:  # HEAD has no error body
            raise VersioningError("check bucket", where, "the bucket does not exist", code="404") from None
        raise _versioning_error("check bucket", where, exc, None) from None
    except BotoCoreError as exc:
        raise _versioning_error("check bucket", where, exc, None) from None
    if status != "Enabled":
        raise VersioningError(
            "check bucket", where, f"versioning is {status or 'not enabled'}; enable it on the bucket"
        )


def _find_upload(s3: BaseClient, bucket: str, key: str, token: str) -> dict[str, Any]:
    """The version of ``key`` that carries our upload token (another upload became the latest)."""
    for version in list_versions(s3, bucket, key)[:20]:
        head = s3.head_object(Bucket=bucket, Key=key, VersionId=version.version_id)
        if head.get("Metadata", {}).get("upload-id") == token:
            return head
    raise VersioningError("upload", f"s3://{bucket}/{key}", "the uploaded version could not be found")


def _versioning_error(
    operation: str, where: str, exc: Exception, settings: VersioningSettings | None
) -> VersioningError:
    """Say what S3 answered in an admin's words, whether a retry can help, and never a key."""
    cause = exc.__context__ if isinstance(exc, S3UploadFailedError) else exc
    code, transient = "", False
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(error.get("Code", status))
        reason = _CLIENT_REASONS.get(code) or f"{code}: {error.get('Message') or 'no message'}"
        transient = code in _TRANSIENT_CODES or status >= 500
    elif isinstance(exc, NoCredentialsError):
        reason = "no AWS credentials: set access_key_id/secret_access_key or give the host an IAM role"
    elif isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        reason, transient = f"S3 endpoint not reachable ({exc})", True
    elif isinstance(exc, FileNotFoundError):
        reason = f"file not found: {exc.filename}"
    elif isinstance(exc, OSError):
        reason = f"{exc.strerror or exc}"
    else:
        reason = str(exc)
    return VersioningError(operation, where, _redact(reason, settings), code=code, transient=transient)


_CLIENT_REASONS = {
    "NoSuchBucket": "the bucket does not exist",
    "404": "not found (no such bucket, key or version)",
    "NoSuchKey": "no such key",
    "NoSuchVersion": "no such version",
    "403": "access denied (check the bucket policy and the credentials)",
    "AccessDenied": "access denied (check the bucket policy and the credentials)",
    "InvalidAccessKeyId": "the access key id is not known to S3",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
}


def _redact(text: str, settings: VersioningSettings | None) -> str:
    if settings is None:
        return text
    for secret in (
        settings.secret_access_key.get_secret_value() if settings.secret_access_key else "",
        settings.access_key_id.get_secret_value() if settings.access_key_id else "",
    ):
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
