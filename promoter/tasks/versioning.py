"""Tasks that store app files in S3 (versions and pre-overwrite backups) and bring them back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

from prefect import task

from promoter import versioning
from promoter.settings import current_settings
from promoter.store.ledger import Backup
from promoter.tasks.retries import APP_FILE_STEP


@task(name="store-version", task_run_name="store-version-{app_id}", **APP_FILE_STEP)
async def store_version(
    file: Path,
    app_id: UUID,
    app_name: str,
    metadata: dict[str, str],
    root_id: UUID | None = None,
    root_name: str | None = None,
) -> versioning.S3Version:
    """Store the exported app (without data) as a new S3 version under a key built from its id.

    An app that continues another (``root_id``/``root_name``: its lineage root) is stored under
    the root's key, as one more version of the same object.
    """
    settings = current_settings().versioning
    s3 = versioning.s3_client(settings)
    return await asyncio.to_thread(
        versioning.upload_version,
        s3,
        settings,
        file,
        app_id,
        app_name,
        metadata,
        root_id=root_id,
        root_name=root_name,
    )


@task(name="store-backup", task_run_name="store-backup-{site}-{target_app_id}", **APP_FILE_STEP)
async def store_backup(file: Path, site: str, target_app_id: UUID, app_name: str) -> Backup:
    """Store a target app as it was before an overwrite, so a rollback can restore it."""
    settings = current_settings().versioning
    s3 = versioning.s3_client(settings)
    stored = await asyncio.to_thread(
        versioning.upload_version,
        s3,
        settings,
        file,
        target_app_id,
        app_name,
        {"site": site, "purpose": "backup before overwrite"},
        kind="backup",
        site=site,
    )
    return Backup(target_app_id, stored.key, stored.version_id)


@task(name="fetch-backup", task_run_name="fetch-backup-{backup.app_id}", **APP_FILE_STEP)
async def fetch_backup(backup: Backup, dest: Path) -> Path:
    settings = current_settings().versioning
    s3 = versioning.s3_client(settings)
    version = backup.version_id or "null"
    return await asyncio.to_thread(
        versioning.download_version, s3, settings.bucket, backup.key, version, dest
    )
