"""An upload that follows an export while it lands: it starts before the download ends, sends the
export's bytes, and starts over when the download does."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from promoter.errors import QrsError
from promoter.qrs import transfer
from promoter.qrs.client import QrsClient
from promoter.qrs.retry import RetryPolicy
from promoter.sandbox.server import Sandbox
from promoter.sandbox.synthetic import make_app_file
from promoter.settings import Settings

pytestmark = pytest.mark.e2e

SIZE = 4_000_000


def connect(settings: Settings, site: str) -> QrsClient:
    return QrsClient.for_site(settings, site, retry=RetryPolicy.immediate())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_an_upload_follows_the_export_and_starts_over_with_it(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """dev's download (4 MB at 4 MB/s) is cut after 1 MB and exported again; test's upload, begun
    as the first bytes landed, is cut too and sent again from the new download: one app on test
    with the export's bytes, and the upload was under way before the export ended."""
    source = make_app_file(tmp_path / "app.qvf", SIZE, seed="follow")
    dest = tmp_path / "work" / "app.qvf"
    sandbox.sites["dev"].add_fault(
        "abort", method="GET", path="^/tempcontent/", after_bytes=1_000_000, count=1
    )
    async with connect(sandbox_settings, "source") as dev, connect(sandbox_settings, "test") as test:
        app = await dev.upload_app(source, "Follow me")
        sandbox.sites["dev"].set_bandwidth(SIZE)
        sent_before_export_ended: list[int] = []
        uploaded: list[int] = []
        try:
            with transfer.landing(dest):
                export = asyncio.create_task(dev.export_app(app.id, dest))
                export.add_done_callback(lambda _: sent_before_export_ended.append(max(uploaded, default=0)))
                placed = await test.upload_app(dest, "Followed", progress=uploaded.append)
                written = await export
        finally:
            sandbox.sites["dev"].set_bandwidth(None)
        copy = await test.export_app(placed.id, tmp_path / "copy.qvf")
        named = [a for a in await test.apps() if a.name == "Followed"]

    assert (written, copy, placed.file_size, len(named)) == (SIZE, SIZE, SIZE, 1)
    assert sha256(tmp_path / "copy.qvf") == sha256(source)
    assert 0 < sent_before_export_ended[0] < SIZE


async def test_an_upload_stops_short_when_the_export_fails(
    sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """The export fails for good after 1000 bytes, which the upload already sent: the upload fails for
    good (no repeat) and the site holds no app."""
    dest = tmp_path / "app.qvf"
    dest.write_bytes(b"x" * 1000)
    async with connect(sandbox_settings, "test") as test:
        with transfer.landing(dest) as landing:
            landing.begin(SIZE)
            landing.grew(1000)
            sending = asyncio.Event()
            upload = asyncio.create_task(
                test.upload_app(dest, "Never whole", progress=lambda _: sending.set())
            )
            await sending.wait()  # the first 1000 bytes are on their way
            landing.fail(QrsError("source", "GET", "/tempcontent/x", 500, "broken"))
            with pytest.raises(transfer.ExportInterrupted) as failed:
                await upload
        left = [a for a in await test.apps() if a.name == "Never whole"]

    assert (failed.value.transient, left) == (False, [])
