"""One pass over the bytes: the sites upload the export while it lands, and a site cut mid-stream
starts again from the file while the others finish."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

from promoter.flows.handle import handle_app_change
from promoter.qrs.client import QrsClient
from promoter.sandbox.server import Sandbox
from promoter.sandbox.synthetic import make_app_file
from promoter.sandbox.world import MANAGER, REP, build_world, publish_as, set_properties
from promoter.settings import EmailSettings, Settings, SiteSettings, UnpublishSettings, write_settings
from tests.e2e.conftest import IN_PROCESS_FLOWS

pytestmark = IN_PROCESS_FLOWS

TARGETS = ("t1", "t2", "t3")
SIZE = 8_000_000


@pytest.fixture
def three_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """dev and three target sites, each with its own CA; stopped after the test."""
    root = tmp_path_factory.mktemp("sandbox")
    sites = {name: ("127.0.0.1", 0) for name in ("dev", *TARGETS)}
    with Sandbox(sites, root / "certs", root / "data") as running:
        yield running


@pytest.fixture
def settings(
    three_sites: Sandbox, prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    def site(name: str) -> SiteSettings:
        running = three_sites.sites[name]
        return SiteSettings(host=running.host, port=running.port, cert_dir=running.cert_dir)

    made = Settings(
        source_site=site("dev"),
        target_sites={name: site(name) for name in TARGETS},
        cert_root=three_sites.cert_root,
        ledger_url=f"sqlite:///{(tmp_path / 'ledger.db').as_posix()}",
        work_dir=tmp_path / "work",
        unpublish=UnpublishSettings(auto=False),
        email=EmailSettings(enabled=False),
    )
    monkeypatch.setenv("QSP_CONFIG", str(write_settings(made, tmp_path / "qs-promoter.toml")))
    return made


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_site_cut_mid_stream_is_retried_from_the_file_while_the_others_finish(
    three_sites: Sandbox, settings: Settings, tmp_path: Path
) -> None:
    """Duplicate to three sites while the export still downloads: t2's upload is cut after 2 MB of 8.
    t1 and t3 receive the app with one upload each; t2 uploads again from the exported file (the
    source is exported once) and ends with one app holding exactly the source's bytes, no partial one.
    The Prefect UI showed the progress of the export and of each site's upload, finished at 100 %."""
    world = await build_world(settings)
    source_file = make_app_file(tmp_path / "budget.qvf", SIZE, seed="Budget")
    app = await publish_as(settings, REP, source_file, "Budget", world.sales_stream_id)
    await set_properties(
        settings,
        MANAGER,
        app.id,
        world,
        {
            "PromoteToServer": [f"{name} - Duplicate" for name in TARGETS],
            "PromoteToStream": ["Everyone"],
            "PromotionApproval": ["Approve"],
        },
    )
    dev = three_sites.sites["dev"]
    dev.set_bandwidth(2_500_000)  # a three-second export: the uploads start while it lands
    three_sites.sites["t2"].add_fault(
        "abort", method="POST", path=r"^/qrs/app/upload$", after_bytes=2_000_000, count=1
    )
    before = {name: three_sites.sites[name].traffic() for name in ("dev", *TARGETS)}

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_completed(), state.message
    traffic = {name: three_sites.sites[name].traffic() for name in ("dev", *TARGETS)}
    uploads = {
        name: traffic[name].get("POST /qrs/app/upload", 0) - before[name].get("POST /qrs/app/upload", 0)
        for name in TARGETS
    }
    exports = sum(
        count - before["dev"].get(call, 0)
        for call, count in traffic["dev"].items()
        if call.startswith("POST /qrs/app/") and "/export/" in call
    )
    assert (uploads, exports) == ({"t1": 1, "t2": 2, "t3": 1}, 1)
    for name in TARGETS:
        async with QrsClient.for_site(settings, name) as qrs:
            (placed,) = await qrs.apps()
            assert (placed.name, placed.published, placed.file_size) == ("Budget", True, SIZE)
            received = await qrs.export_app(placed.id, tmp_path / f"{name}.qvf")
        assert (received, sha256(tmp_path / f"{name}.qvf")) == (SIZE, sha256(source_file)), name
    async with get_client() as prefect:
        progress = await prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
    shown = sorted((artifact.description, artifact.data) for artifact in progress)
    assert shown == [("Export from source", 100.0), *((f"Upload to {name}", 100.0) for name in TARGETS)]
