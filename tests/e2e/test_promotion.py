"""The original's workflow end to end: real sandbox sites, a real Prefect server, SMTP and S3."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from promoter.flows.handle import handle_app_change
from promoter.qrs.client import QrsClient
from promoter.sandbox.world import MANAGER, REP, publish_as, set_properties
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


def app_file(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "app.qvf"
    path.write_bytes(content)
    return path


async def test_approved_app_is_published_to_a_new_stream_and_unpublished(stage: Stage) -> None:
    """Approve -> Overwrite to test with no app there yet: published in Everyone, source unpublished."""
    content = b"QVF sales dashboard v1 " * 1000
    app = await publish_as(
        stage.settings, REP, app_file(stage.tmp, content), "Sales Dashboard", stage.world.sales_stream_id
    )
    await set_properties(
        stage.settings,
        MANAGER,
        app.id,
        stage.world,
        {
            "PromoteToServer": ["test - Overwrite"],
            "PromoteToStream": ["Everyone"],
            "PromotionApproval": ["Approve"],
        },
    )

    reason = await handle_app_change(app.id, "updated")

    async with QrsClient.for_site(stage.settings, "test") as test:
        promoted = await test.apps_named_in_stream(
            "Sales Dashboard", stage.world.target_streams["test"]["Everyone"]
        )
    assert len(promoted) == 1, reason
    assert "Promoted by qs-promoter" in (promoted[0].description or "")
    async with QrsClient.for_site(stage.settings, "source") as dev:
        left = await dev.apps()
    assert [(a.name, a.published, a.owner.user_id) for a in left] == [("Sales Dashboard", False, "rep")]
    assert not any(a.id == app.id for a in left)
    assert isinstance(promoted[0].id, UUID)


async def test_an_approval_to_two_sites_makes_at_most_fifteen_task_runs(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    """Overwrite to test and prod, both with an app to replace (so each site backs it up first), then
    unpublish: only the steps that change something are task runs (read once, exports, the S3
    version, each email, each site's delivery, the copy to the owner, the delete), at most 15;
    reads, ledger calls and the run's own bookkeeping are plain calls."""
    caplog.set_level("INFO", logger="prefect.task_runs")
    for target in ("test", "prod"):  # the apps an admin put there before: replaced by name
        await stage.seed_target(target, "Lean", "Everyone", stage.app_file(seed=f"old-{target}"))
    app = await stage.publish("Lean")
    await stage.approve(app.id, ["test - Overwrite", "prod - Overwrite"], ["Everyone"])
    caplog.clear()

    await handle_app_change(app.id, "updated")

    finished = [
        r.getMessage()
        for r in caplog.records
        if r.name == "prefect.task_runs" and "Finished in state" in r.getMessage()
    ]
    assert [(a.name, a.published) for a in await stage.apps("test")] == [("Lean", True)]
    assert [(a.name, a.published) for a in await stage.apps("prod")] == [("Lean", True)]
    assert 0 < len(finished) <= 15, finished
    print(f"\ntask runs of a two-site approval: {len(finished)}")
