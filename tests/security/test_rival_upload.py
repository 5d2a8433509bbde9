"""A user on a target site cannot get their own app promoted in place of ours by naming it like our upload.

End to end: sandbox sites over HTTPS, a real Prefect server, the ledger, SMTP and S3. The rival acts
through QRS with their own X-Qlik-User, as a user of the target site would.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.provenance import UploadSlot, upload_name
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App, format_qrs_time
from promoter.sandbox.repository import SYSTEM
from promoter.sandbox.server import SandboxSite
from promoter.sandbox.synthetic import make_app_file
from promoter.sandbox.world import Person, acting_as
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage, counting_uploads
from tests.security.conftest import site_client
from tests.security.test_secrets import capture_every_logger, logged_text

pytestmark = [pytest.mark.security, IN_PROCESS_FLOWS]

MALLORY = Person("ACME", "mallory", "Mallory Target", "mallory@acme.example")
SERVICE_ACCOUNT = "INTERNAL\\sa_api"  # the X-Qlik-User of the sandbox settings


async def upload_as(stage: Stage, person: Person, file: Path, name: str) -> App:
    async with acting_as(stage.settings, "test", person) as qrs:
        return await qrs.upload_app(file, name)


def stored_bytes(stage: Stage, site: str, app: App) -> bytes:
    """The app file the sandbox site holds for ``app``."""
    return stage.site(site).repository.app_file(str(app.id)).read_bytes()


async def ours_published_rival_kept(stage: Stage, rival: App, source: bytes) -> App:
    """Assert that test publishes "Budget" as the service account's upload of ``source``, not the
    rival; return the rival's app as test now holds it."""
    on_test = {a.id: a for a in await stage.apps("test")}
    (published,) = [a for a in on_test.values() if a.published]
    assert (published.name, published.owner.account, published.id == rival.id) == (
        "Budget",
        SERVICE_ACCOUNT,
        False,
    )
    assert stored_bytes(stage, "test", published) == source
    return on_test[rival.id]


async def test_a_rival_upload_under_the_name_anyone_can_compute_is_never_published(stage: Stage) -> None:
    """Mallory, a user on the test site, reads the approved app on the source site, computes the
    temporary name from the request key as the old code did, and uploads her own app (same size) under
    it before the promotion runs. The promotion publishes the source app's bytes, uploaded by the
    service account; Mallory's app stays hers, unpublished, under the name she gave it."""
    app = await stage.publish("Budget")
    approved = await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])
    source = stored_bytes(stage, "dev", app)
    token = hashlib.sha256(f"{approval_key(approved, stage.settings)}|test".encode()).hexdigest()[:12]
    guessed = f"Budget [qs-promoter {token}]"
    rival = await upload_as(stage, MALLORY, stage.app_file(len(source), seed="rival"), guessed)

    await handle_app_change(app.id, "updated")

    kept = await ours_published_rival_kept(stage, rival, source)
    assert (kept.name, kept.owner.account, kept.published) == (guessed, MALLORY.account, False)


# -- a rival that knows the secret name (it leaked): only owner, creation time and size tell -----

Rival = Callable[[Stage, str, int, UploadSlot], Awaitable[App]]


async def anothers_app(stage: Stage, name: str, size: int, slot: UploadSlot) -> App:
    """Mallory's app: the same size, created after the upload began; only the owner differs."""
    return await upload_as(stage, MALLORY, stage.app_file(size, seed="rival"), name)


async def our_app_from_before(stage: Stage, name: str, size: int, slot: UploadSlot) -> App:
    """An app of the service account, the same size, created an hour before the upload began."""
    async with QrsClient.for_site(stage.settings, "test") as qrs:
        app = await qrs.upload_app(stage.app_file(size, seed="rival"), name)
    earlier = format_qrs_time(slot.began - timedelta(hours=1))
    await asyncio.to_thread(
        stage.site("test").repository.modify, "app", str(app.id), SYSTEM, createdDate=earlier
    )
    return app


async def our_app_of_another_size(stage: Stage, name: str, size: int, slot: UploadSlot) -> App:
    """An app of the service account, created after the upload began, with other bytes."""
    async with QrsClient.for_site(stage.settings, "test") as qrs:
        return await qrs.upload_app(stage.app_file(size + 1024, seed="rival"), name)


@pytest.mark.parametrize("make_rival", [anothers_app, our_app_from_before, our_app_of_another_size])
async def test_an_app_under_the_leaked_name_that_we_did_not_upload_is_never_published(
    stage: Stage, caplog: pytest.LogCaptureFixture, make_rival: Rival
) -> None:
    """The request's temporary name leaked after the ledger recorded it (an earlier attempt stopped
    before uploading) and an app was uploaded under it: by another user, or owned by the service
    account but created before the upload began, or holding other bytes. The promotion uploads and
    publishes the source app itself; the rival stays unpublished under its name, and the run log
    names it and its owner for an administrator."""
    app = await stage.publish("Budget")
    approved = await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])
    source = stored_bytes(stage, "dev", app)
    with stage.ledger() as ledger:
        slot = ledger.upload_slot(approval_key(approved, stage.settings), "test")
    rival = await make_rival(stage, upload_name("Budget", slot), len(source), slot)
    isolated = capture_every_logger(caplog)

    try:
        await handle_app_change(app.id, "updated")
    finally:
        for logger in isolated:
            logger.removeHandler(caplog.handler)

    kept = await ours_published_rival_kept(stage, rival, source)
    assert (kept.name, kept.published) == (upload_name("Budget", slot), False)
    warnings = [line for line in logged_text(caplog).splitlines() if str(rival.id) in line]
    assert warnings and f"owned by {kept.owner.account!r}" in warnings[0], warnings


async def test_a_rerun_adopts_its_own_upload_and_not_the_rival_listed_before_it(stage: Stage) -> None:
    """Mallory uploads under the leaked name first. The first attempt leaves her app alone, uploads its
    own, and fails on test with the upload left there (publishing and deleting are refused). The
    re-run adopts that upload of ours, not Mallory's older one: no second upload, ours is published."""
    app = await stage.publish("Budget")
    approved = await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])
    source = stored_bytes(stage, "dev", app)
    with stage.ledger() as ledger:
        slot = ledger.upload_slot(approval_key(approved, stage.settings), "test")
    name = upload_name("Budget", slot)
    rival = await anothers_app(stage, name, len(source), slot)
    test = stage.site("test")
    test.add_fault("status", method="PUT", path=r"^/qrs/app/[^/]+/publish$", status=400)
    test.add_fault("status", method="DELETE", path=r"^/qrs/app/[^/]+$", status=400)

    first = await handle_app_change(app.id, "updated", return_state=True)
    (left_behind,) = [a for a in await stage.apps("test") if a.name == name and a.id != rival.id]
    test.clear_faults()
    uploads = counting_uploads(stage, "test")
    await handle_app_change(app.id, "updated")

    assert first.is_failed()
    assert uploads["test"].uploads == 0
    on_test = {a.id: a for a in await stage.apps("test")}
    assert set(on_test) == {left_behind.id, rival.id}
    published = on_test[left_behind.id]
    assert (published.name, published.published, published.owner.account) == ("Budget", True, SERVICE_ACCOUNT)
    assert stored_bytes(stage, "test", published) == source
    assert (on_test[rival.id].name, on_test[rival.id].published) == (name, False)


async def test_an_upload_cut_short_adopts_no_app_it_did_not_make(
    dev_site: SandboxSite, tmp_path: Path
) -> None:
    """The connection drops in the middle of an upload, so nothing landed; Alice's app of the same size
    already has the name. The client does not take hers for the upload that got lost: it uploads
    again, and returns an app of its own."""
    file = make_app_file(tmp_path / "app.qvf", 3_000_000)
    name = "Budget [qs-promoter 0123456789ab-00112233445566778899aabbccddeeff]"
    async with site_client(dev_site, "test", user_directory="ACME", user_id="alice") as alice:
        rival = await alice.upload_app(make_app_file(tmp_path / "rival.qvf", 3_000_000, seed="rival"), name)
    dev_site.add_fault("abort", method="POST", path="^/qrs/app/upload$", after_bytes=1_000_000, count=1)

    async with site_client(dev_site, "test") as qrs:
        uploaded = await qrs.upload_app(file, name)

    assert (uploaded.id != rival.id, uploaded.owner.account, uploaded.file_size) == (
        True,
        "INTERNAL\\sa_api",
        3_000_000,
    )
