"""The QRS steps of a run on one Qlik site: reads as plain calls, changes as tasks.

Only what changes a site, or whose result a retry must not redo, is a Prefect task: its result
is persisted, so retrying a failed run from the Prefect UI redoes only the steps that failed
(prefect-notes §5.4). Reads are plain calls: the client repeats them on passing failures, and a
read that a retry must see as the first attempt saw it is persisted as a task on purpose
(``read_app_once``). A target site's whole delivery is one task (flows/delivery.py), so the
steps inside it are plain calls on one client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import DEFAULT

from promoter.qrs import steps, transfer
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App, Stream, User
from promoter.settings import current_settings
from promoter.tasks import run
from promoter.tasks.retries import APP_FILE_STEP, COPY_ONCE, QRS_STEP, UPLOAD_ONCE, client_retry

# The clients of the block that runs ``sharing_clients``, by site: one TLS context and one pool of
# connections per site for the export, the checks and every step of the site's delivery.
_shared: ContextVar[dict[str, QrsClient] | None] = ContextVar("qsp_shared_clients", default=None)


@asynccontextmanager
async def sharing_clients() -> AsyncIterator[None]:
    """While the block runs, ``connect`` hands every step the same client per site (closed at the end)."""
    if _shared.get() is not None:  # an enclosing block shares already
        yield
        return
    clients: dict[str, QrsClient] = {}
    token = _shared.set(clients)
    try:
        yield
    finally:
        _shared.reset(token)
        for client in clients.values():
            await client.aclose()


@asynccontextmanager
async def connect(site: str) -> AsyncIterator[QrsClient]:
    """The QRS client of a site, from the settings file of this run: the block's shared one inside
    ``sharing_clients``, else one of its own, closed after the block."""
    clients = _shared.get()
    if clients is None:
        async with QrsClient.for_site(current_settings(), site, retry=client_retry()) as qrs:
            yield qrs
        return
    if site not in clients:
        clients[site] = QrsClient.for_site(current_settings(), site, retry=client_retry())
    yield clients[site]


async def read_app(site: str, app_id: UUID) -> App:
    async with connect(site) as qrs:
        return await qrs.get_app(app_id)


# Persisted for the run: a retried run acts on the app as its first attempt read it, even when
# that attempt got as far as deleting the published app (unpublish).
@task(name="read-app", task_run_name="read-app-{site}-{app_id}", cache_policy=DEFAULT, **QRS_STEP)
async def read_app_once(site: str, app_id: UUID) -> App:
    """The app, as the first attempt of this run read it."""
    return await read_app(site, app_id)


async def read_stream(site: str, stream_id: UUID) -> Stream:
    async with connect(site) as qrs:
        return await qrs.get_stream(stream_id)


async def read_user(site: str, account: str) -> User | None:
    """The user behind DIRECTORY\\userid (as in modifiedByUserName), or None."""
    async with connect(site) as qrs:
        return await qrs.user_by_account(account)


async def read_email(site: str, user_id: UUID) -> str | None:
    """The text of the user's email attribute named in the settings (None if absent).

    User input: it may hold several addresses, or none; ``addresses.parse_addresses`` reads it.
    """
    attribute = current_settings().email.owner_email_attribute
    async with connect(site) as qrs:
        return await qrs.user_email(user_id, attribute)


async def survey_site(
    site: str, app_name: str, stream_names: tuple[str, ...], known: tuple[UUID, ...]
) -> steps.SiteSurvey:
    """The requested streams and the apps that may be replaced on one target site."""
    async with connect(site) as qrs:
        return await steps.survey(qrs, app_name, stream_names, known)


@task(name="export-app", task_run_name="export-{site}-{app_id}", **APP_FILE_STEP)
async def export_app(site: str, app_id: UUID, dest: Path, skip_data: bool = False) -> int:
    """Export the app into ``dest`` (two-step export, streamed); returns the bytes written."""
    landing = transfer.landing_at(dest)
    size = (lambda: landing.size) if landing is not None else (lambda: None)
    what = f"Export from {site}{' (without data)' if skip_data else ''}"
    async with connect(site) as qrs, run.TransferProgress(what, size) as progress:
        return await qrs.export_app(app_id, dest, skip_data=skip_data, progress=progress)


@asynccontextmanager
async def exporting(site: str, app_id: UUID, dest: Path) -> AsyncIterator[None]:
    """Export the app into ``dest`` while the block runs; uploads of ``dest`` inside it follow the
    file as it lands, so the target sites receive the bytes while the export still downloads.

    The block starts once the export's answer began (its size is known) or the export ended; an
    export that fails before that raises here, before any site is touched. At the end of the block
    the export's own failure is raised; the uploads that followed it stopped short of their last
    byte, so no site made an app of a partial file. A failed export leaves no file behind.
    """
    with transfer.landing(dest) as landing:
        job = asyncio.create_task(export_app(site, app_id, dest))

        def ended(job: asyncio.Task[int]) -> None:
            failure = None if job.cancelled() else job.exception()
            if job.cancelled() or failure is not None:
                landing.fail(failure or asyncio.CancelledError())
                # A partial export must never pass for the app (on Windows an upload that still
                # holds it open keeps it until the retried export writes it again).
                with contextlib.suppress(OSError):
                    dest.unlink(missing_ok=True)
            elif not landing.finished:  # a retried run's export: its result persisted, its file on disk
                landing.finish(job.result())

        job.add_done_callback(ended)
        started = asyncio.create_task(landing.expected_size())
        try:
            await asyncio.wait({job, started}, return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                await job  # an export that failed before its first byte fails the run here
            yield
        except BaseException:
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
            raise
        finally:
            started.cancel()
            await asyncio.gather(started, return_exceptions=True)
        await job


# Never retried as a step: the client repeats a failed upload once it knows it did not land.
@task(name="upload-app", task_run_name="upload-{site}", **UPLOAD_ONCE)
async def upload_app(site: str, path: Path, name: str, since: datetime) -> App:
    """Upload the exported file once under the request's temporary name; an upload of ours that an
    earlier attempt made since ``since`` is adopted, an app someone else gave that name never is."""
    async with connect(site) as qrs:
        return await upload(qrs, path, name, since)


async def upload(qrs: QrsClient, path: Path, name: str, since: datetime) -> App:
    """``steps.upload_once`` with its progress shown in the Prefect UI."""
    size = await transfer.file_size(path, qrs.name)
    async with run.TransferProgress(f"Upload to {qrs.name}", lambda: size) as progress:
        return await steps.upload_once(qrs, path, name, since, log=get_run_logger(), progress=progress)


@task(name="replace-app", task_run_name="replace-{site}-{target_id}", **QRS_STEP)
async def replace_app(site: str, source_id: UUID, target_id: UUID) -> App:
    """Overwrite ``target_id`` with the uploaded app; the target keeps its id."""
    async with connect(site) as qrs:
        return await qrs.replace_app(source_id, target_id)


@task(name="delete-app", task_run_name="delete-{site}-{app_id}", **QRS_STEP)
async def delete_app(site: str, app_id: UUID) -> None:
    """Delete the app; one that is already gone counts as deleted."""
    async with connect(site) as qrs:
        await steps.delete(qrs, app_id)


@task(name="strip-properties", task_run_name="strip-properties-{app_id}", **QRS_STEP)
async def strip_properties(site: str, app_id: UUID, names: tuple[str, ...]) -> App:
    """Remove the promotion custom properties, so the finished approval cannot fire again."""

    def strip(app: App) -> None:
        app.custom_properties = [cp for cp in app.custom_properties if cp.definition.name not in names]

    async with connect(site) as qrs:
        return await qrs.update_app(app_id, strip)


@task(name="set-reload-tag", task_run_name="reload-tag-{app_id}-{present}", **QRS_STEP)
async def set_reload_tag(site: str, app_id: UUID, tag: str, present: bool) -> App:
    """Add or remove the promote-on-reload tag (the tag is created if the site lacks it)."""
    async with connect(site) as qrs:
        return await steps.set_tag(qrs, app_id, tag, present=present)


@task(name="return-copy-to-owner", task_run_name="copy-to-owner-{app_id}", **COPY_ONCE)
async def return_copy_to_owner(
    site: str, app_id: UUID, owner_id: UUID, earlier: tuple[UUID, ...] = ()
) -> App:
    """Copy the published app, give the copy to the owner, and verify it exists with that owner.

    This is the first half of unpublishing; the published app is deleted only after it. A copy
    an earlier attempt gave the owner (``earlier``, from the ledger) is used instead of a second.
    """
    async with connect(site) as qrs:
        return await steps.copy_to_owner(qrs, app_id, owner_id, earlier)
