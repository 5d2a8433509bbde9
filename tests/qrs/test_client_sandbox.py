"""QrsClient against a sandbox Qlik site over real mutual TLS: what a flow can rely on."""

from __future__ import annotations

import hashlib
import logging
import shutil
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from promoter.errors import QrsConflict, QrsError, QrsNotFound
from promoter.qrs.client import QrsClient
from promoter.qrs.filters import eq
from promoter.qrs.models import App, qrs_now
from promoter.qrs.retry import RetryPolicy
from promoter.sandbox.repository import Actor
from promoter.sandbox.server import Sandbox
from promoter.sandbox.synthetic import make_app_file
from promoter.settings import Settings

pytestmark = pytest.mark.e2e

HOSTILE_NAMES = (
    "Q1'25 Sales",
    "Q1\\'25 Sales",
    "R&D #1",
    "50% + 50%",
    "a/b?c=d",
    "back\\slash",
    "  spaced  out  ",
    "line\r\nbreak",
    "Ünïcødé 名前 ✓",
)


def connect(settings: Settings, site: str = "source", **kw: Any) -> QrsClient:
    """A client as a flow makes one, with instant retries."""
    return QrsClient.for_site(settings, site, retry=kw.pop("retry", RetryPolicy.immediate()), **kw)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def files_in(folder: Path, pattern: str = "*") -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


async def upload(qrs: QrsClient, tmp_path: Path, name: str, size: int = 200_000, seed: str = "app") -> App:
    file = make_app_file(tmp_path / f"{seed}-{size}.qvf", size, seed=seed)
    return await qrs.upload_app(file, name)


async def make_stream(qrs: QrsClient, name: str) -> UUID:
    return UUID((await qrs.create_entity("stream", {"name": name}))["id"])


# -- mutual TLS --------------------------------------------------------------------------------


async def test_about_answers_over_mutual_tls(sandbox_settings: Settings) -> None:
    """With the site's own certificates the client reaches QRS and reads /qrs/about."""
    async with connect(sandbox_settings) as dev:
        about = await dev.about()

    assert about.build_version.startswith("38.")


async def test_a_server_not_signed_by_root_pem_is_refused(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """A client trusting another site's root.pem refuses dev's server certificate: TLS failure, no status."""
    mixed = tmp_path / "mixed"
    shutil.copytree(sandbox.sites["dev"].cert_dir, mixed)
    shutil.copy(sandbox.sites["test"].cert_dir / "root.pem", mixed / "root.pem")

    async with QrsClient(
        sandbox_settings.source_site, mixed, name="source", retry=RetryPolicy.immediate()
    ) as dev:
        with pytest.raises(QrsError) as caught:
            await dev.about()

    assert caught.value.status is None
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


async def test_a_client_without_certificate_is_refused(sandbox: Sandbox, sandbox_settings: Settings) -> None:
    """A TLS client that trusts the site but presents no client certificate gets no answer."""
    trusting = ssl.create_default_context(cafile=str(sandbox.sites["dev"].cert_dir / "root.pem"))
    transport = httpx.AsyncHTTPTransport(verify=trusting)

    async with connect(sandbox_settings, transport=transport) as dev:
        with pytest.raises(QrsError) as caught:
            await dev.about()

    assert (caught.value.status, caught.value.transient) == (None, True)


async def test_another_sites_client_certificate_is_refused(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """The test site's client certificate is not accepted by the dev site."""
    mixed = tmp_path / "mixed"
    shutil.copytree(sandbox.sites["test"].cert_dir, mixed)
    shutil.copy(sandbox.sites["dev"].cert_dir / "root.pem", mixed / "root.pem")

    async with QrsClient(
        sandbox_settings.source_site, mixed, name="source", retry=RetryPolicy.immediate()
    ) as dev:
        with pytest.raises(QrsError) as caught:
            await dev.about()

    assert caught.value.status is None


# -- filters and lookups -----------------------------------------------------------------------


async def test_hostile_names_find_exactly_their_own_app(sandbox_settings: Settings, tmp_path: Path) -> None:
    """Quotes, & # % + / ? backslash, spaces, CR/LF and non-ASCII in names: each filter finds one app."""
    async with connect(sandbox_settings) as dev:
        ids = {name: (await upload(dev, tmp_path, name, 10_000)).id for name in HOSTILE_NAMES}
        found = {name: [app.id for app in await dev.apps(eq("name", name))] for name in HOSTILE_NAMES}
        counted = {name: await dev.count("app", eq("name", name)) for name in HOSTILE_NAMES}

    assert found == {name: [app_id] for name, app_id in ids.items()}
    assert counted == dict.fromkeys(HOSTILE_NAMES, 1)


async def test_apps_named_in_stream_looks_only_in_that_stream(
    sandbox_settings: Settings, tmp_path: Path
) -> None:
    """An app of the same name in another stream, or unpublished, is not a match."""
    name = "R&D #1 'Q1'"
    async with connect(sandbox_settings) as dev:
        sales, other = await make_stream(dev, "Sales & Ops #1"), await make_stream(dev, "Other")
        wanted = await dev.publish_app((await upload(dev, tmp_path, name)).id, sales)
        await dev.publish_app((await upload(dev, tmp_path, name)).id, other)
        await upload(dev, tmp_path, name)

        found = await dev.apps_named_in_stream(name, sales)

    assert [app.id for app in found] == [wanted.id]


async def test_stream_user_and_tag_lookups(sandbox_settings: Settings) -> None:
    """Streams by name, users by DIRECTORY\\userid, tags made once, email from a user attribute."""
    async with connect(sandbox_settings) as dev:
        stream_id = await make_stream(dev, "Sales / EMEA?")
        user = await dev.create_entity(
            "user",
            {
                "userDirectory": "ACME",
                "userId": "jörg o'neil",
                "name": "Jörg",
                "attributes": [{"attributeType": "Email", "attributeValue": "jorg@acme.example"}],
            },
        )
        stream = await dev.stream_by_name("Sales / EMEA?")
        missing = await dev.stream_by_name("Sales / EMEA")
        by_account = await dev.user_by_account("acme\\JÖRG O'NEIL")
        email = await dev.user_email(UUID(user["id"]))
        first, again = await dev.ensure_tag("Auto & Promote"), await dev.ensure_tag("Auto & Promote")
        tags = await dev.count("tag", eq("name", "Auto & Promote"))

    assert (stream and stream.id, missing) == (stream_id, None)
    assert by_account is not None and str(by_account.id) == user["id"]
    assert email == "jorg@acme.example"
    assert (first.id, tags) == (again.id, 1)


# -- moving apps -------------------------------------------------------------------------------


async def test_export_then_upload_is_byte_identical(sandbox_settings: Settings, tmp_path: Path) -> None:
    """An app exported from dev and uploaded to test exports again byte for byte the same."""
    original = make_app_file(tmp_path / "original.qvf", 3_000_000, seed="round-trip")
    async with connect(sandbox_settings) as dev, connect(sandbox_settings, "test") as test:
        app = await dev.upload_app(original, "Round trip")
        written = await dev.export_app(app.id, tmp_path / "exported.qvf")
        copied = await test.upload_app(tmp_path / "exported.qvf", "Round trip")
        await test.export_app(copied.id, tmp_path / "again.qvf")

    assert written == original.stat().st_size
    assert sha256(tmp_path / "again.qvf") == sha256(original)
    assert files_in(tmp_path, "*.part") == []


async def test_export_without_data_is_smaller(sandbox_settings: Settings, tmp_path: Path) -> None:
    """skip_data drops the app's data: the file is smaller than the full export."""
    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "With data", 1_000_000)
        full = await dev.export_app(app.id, tmp_path / "full.qvf")
        lean = await dev.export_app(app.id, tmp_path / "lean.qvf", skip_data=True)

    assert 0 < lean < full == 1_000_000


async def test_replace_keeps_the_target_id(sandbox_settings: Settings, tmp_path: Path) -> None:
    """Replacing a published app gives it the new content under its old id; the source stays."""
    async with connect(sandbox_settings) as dev:
        stream = await make_stream(dev, "Everyone")
        target = await dev.publish_app((await upload(dev, tmp_path, "Sales", seed="old")).id, stream)
        source = await upload(dev, tmp_path, "Sales (new)", seed="new")

        replaced = await dev.replace_app(source.id, target.id)
        await dev.export_app(target.id, tmp_path / "target.qvf")
        still_there = await dev.get_app(source.id)

    assert (replaced.id, replaced.published, replaced.stream and replaced.stream.id) == (
        target.id,
        True,
        stream,
    )
    assert sha256(tmp_path / "target.qvf") == sha256(tmp_path / "new-200000.qvf")
    assert still_there.id == source.id


async def test_publish_is_safe_to_repeat(sandbox_settings: Settings, tmp_path: Path) -> None:
    """Publishing an app already published to that stream returns it (a lost answer's repeat)."""
    async with connect(sandbox_settings) as dev:
        stream = await make_stream(dev, "Everyone")
        app = await upload(dev, tmp_path, "Twice")
        first = await dev.publish_app(app.id, stream, "Twice (published)")
        second = await dev.publish_app(app.id, stream)

    assert (first.id, second.id, second.name, second.published) == (app.id, app.id, "Twice (published)", True)


async def test_copy_delete_and_reload(sandbox_settings: Settings, tmp_path: Path) -> None:
    """A copy is a new app; a deleted app is gone (404); a reload moves lastReloadTime."""
    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "Original")
        copy = await dev.copy_app(app.id, "Copy of Original")
        await dev.delete_app(copy.id)
        with pytest.raises(QrsNotFound):
            await dev.get_app(copy.id)
        await dev.reload_app(app.id)
        reloaded = await dev.get_app(app.id)

    assert (copy.name, copy.id != app.id) == ("Copy of Original", True)
    assert reloaded.last_reload_time is not None and reloaded.last_reload_time > qrs_now() - timedelta(
        minutes=1
    )


async def test_update_app_rereads_after_a_conflict(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """Someone changes the app between our read and our PUT: 409, then our change is re-applied on top."""
    repository = sandbox.sites["dev"].repository
    edits: list[str] = []

    def describe(app: App) -> None:
        if not edits:  # the first time, an admin saves the app in the QMC meanwhile
            repository.modify("app", str(app.id), Actor("ACME", "admin"), thumbnail="/their/change.png")
        edits.append(str(app.modified_date))
        app.description = "promoted"

    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "Edited")
        updated = await dev.update_app(app.id, describe)

    assert len(edits) == 2 and edits[0] != edits[1]
    assert (updated.description, updated.thumbnail) == ("promoted", "/their/change.png")


async def test_update_app_gives_up_after_a_second_conflict(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """If the app changes under us twice in a row, the 409 reaches the caller as QrsConflict."""
    repository = sandbox.sites["dev"].repository

    def always_raced(app: App) -> None:
        repository.modify("app", str(app.id), Actor("ACME", "admin"), thumbnail=str(qrs_now()))
        app.description = "never saved"

    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "Contested")
        with pytest.raises(QrsConflict):
            await dev.update_app(app.id, always_raced)
        stored = await dev.get_app(app.id)

    assert stored.description != "never saved"


# -- faults ------------------------------------------------------------------------------------


async def test_a_get_is_repeated_through_two_503s(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """GET /qrs/app/{id} answered 503 twice, then 200: the caller sees only the app."""
    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "Flaky")
        fault = sandbox.sites["dev"].add_fault("status", method="GET", path=f"^/qrs/app/{app.id}$", count=2)
        got = await dev.get_app(app.id)

    assert (got.id, fault.count) == (app.id, 0)


async def test_a_failed_copy_is_not_repeated(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """POST copy answered 503 once: the error surfaces (a repeat might copy twice), and no copy exists."""
    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "Copied once")
        sandbox.sites["dev"].add_fault("status", method="POST", path="/copy$", count=1)
        with pytest.raises(QrsError) as caught:
            await dev.copy_app(app.id, "The copy")
        copies = await dev.count("app", eq("name", "The copy"))

    assert (caught.value.status, copies) == (503, 0)


async def test_a_copy_with_a_unique_name_whose_answer_is_lost_is_found_not_doubled(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """QRS makes the copy but its answer is lost; then a copy answered 503: given the time the copies
    began, the client finds the one that landed, or copies again, and one copy exists each time."""
    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "Copied under a unique name")
        since = qrs_now()
        lost = sandbox.sites["dev"].add_fault("lose_answer", method="POST", path="/copy$", count=1)
        found = await dev.copy_app(app.id, "copy-lost-answer-1", since=since)
        refused = sandbox.sites["dev"].add_fault("status", method="POST", path="/copy$", count=1)
        repeated = await dev.copy_app(app.id, "copy-503-2", since=since)
        counts = [await dev.count("app", eq("name", name)) for name in ("copy-lost-answer-1", "copy-503-2")]

    assert (lost.count, refused.count, counts) == (0, 0, [1, 1])
    assert (found.name, repeated.name) == ("copy-lost-answer-1", "copy-503-2")


async def test_an_upload_cut_mid_transfer_is_repeated_once(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """The connection is reset after 1 MB of a 3 MB upload: the client uploads again, and one app exists."""
    file = make_app_file(tmp_path / "big.qvf", 3_000_000)
    fault = sandbox.sites["dev"].add_fault(
        "abort", method="POST", path="^/qrs/app/upload$", after_bytes=1_000_000, count=1
    )

    async with connect(sandbox_settings) as dev:
        app = await dev.upload_app(file, "tmp-upload-7f3a")
        await dev.export_app(app.id, tmp_path / "back.qvf")
        same_name = await dev.count("app", eq("name", "tmp-upload-7f3a"))

    assert (fault.count, same_name) == (0, 1)
    assert sha256(tmp_path / "back.qvf") == sha256(file)


async def test_an_upload_whose_answer_is_lost_is_adopted(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """QRS stores the upload but its answer is lost with the connection: the app is adopted, not doubled."""
    file = make_app_file(tmp_path / "small.qvf", 20_000)
    fault = sandbox.sites["dev"].add_fault("lose_answer", method="POST", path="^/qrs/app/upload$", count=1)

    with caplog.at_level(logging.DEBUG, logger="promoter.qrs"):
        async with connect(sandbox_settings) as dev:
            app = await dev.upload_app(file, "tmp-upload-lost-answer")
            same_name = await dev.count("app", eq("name", "tmp-upload-lost-answer"))

    assert (fault.count, app.name, same_name) == (0, "tmp-upload-lost-answer", 1)
    assert "landed although its answer was lost" in caplog.text


async def test_a_download_cut_short_starts_a_new_export(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """The download is reset half-way: a fresh export is downloaded, and no partial file stays behind."""
    async with connect(sandbox_settings) as dev:
        app = await upload(dev, tmp_path, "Cut short", 2_000_000)
        fault = sandbox.sites["dev"].add_fault(
            "abort", method="GET", path="^/tempcontent/", after_bytes=500_000, count=1
        )
        out = tmp_path / "out"
        out.mkdir()
        written = await dev.export_app(app.id, out / "app.qvf")

    assert (fault.count, written) == (0, 2_000_000)
    assert files_in(out) == ["app.qvf"]
    assert sha256(out / "app.qvf") == sha256(tmp_path / "app-2000000.qvf")


# -- notifications -----------------------------------------------------------------------------


async def test_notifications_are_created_and_deleted(sandbox: Sandbox, sandbox_settings: Settings) -> None:
    """A subscription exists from create until delete; deleting it again is QrsNotFound."""
    repository = sandbox.sites["dev"].repository
    async with connect(sandbox_settings) as dev:
        handle = await dev.create_notification(
            "http://127.0.0.1:9/qrs?secret=a b", property_name="publishTime"
        )
        subscribed = repository.subscriptions[str(handle)]
        await dev.delete_notification(handle)
        with pytest.raises(QrsNotFound):
            await dev.delete_notification(handle)

    assert (subscribed.url, subscribed.object_type, subscribed.change_type) == (
        "http://127.0.0.1:9/qrs?secret=a b",
        "app",
        2,
    )
    assert subscribed.property_name == "publishTime"
    assert str(handle) not in repository.subscriptions


async def test_changes_since_lists_new_apps(sandbox_settings: Settings, tmp_path: Path) -> None:
    """/qrs/notification/changes reports an app uploaded after the given time."""
    async with connect(sandbox_settings) as dev:
        since = qrs_now() - timedelta(seconds=1)
        app = await upload(dev, tmp_path, "Changed")
        changes = await dev.changes_since(since, ["App"])

    assert app.id in {change.id for change in changes}


async def test_debug_log_names_the_call_but_never_the_query(
    sandbox_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Each call is logged with method, path, status and time; no xrfkey and no filter text."""
    with caplog.at_level(logging.DEBUG):
        async with connect(sandbox_settings) as dev:
            await dev.apps(eq("name", "Secret project"))

    ours = [r.getMessage() for r in caplog.records if r.name == "promoter.qrs"]
    assert any("GET /qrs/app/full -> 200 in" in line for line in ours)
    assert "xrfkey" not in caplog.text.lower() and "Secret" not in caplog.text
