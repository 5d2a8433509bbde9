"""Proof after the fact, end to end: a site's placed apps are read back and compared with what was meant."""

from __future__ import annotations

import json

from promoter.approval import Mode
from promoter.flows.manual import promote_app
from promoter.qrs.client import QrsClient
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


async def test_a_normal_promotion_is_verified_and_its_state_kept_for_the_drift_guard(stage: Stage) -> None:
    """A promotion to two streams on test is verified (the site is done) and the ledger keeps each
    target's modifiedDate and fileSize as read back: the export's size."""
    file = stage.app_file(seed="Inventory")
    app = await stage.publish("Inventory", file)

    (outcome,) = await promote_app(app.id, sites=["test"], streams=["Everyone", "Review"])

    assert outcome.status == "done" and len(outcome.placements) == 2
    on_test = {a.id: a for a in await stage.apps("test")}
    with stage.ledger() as ledger:
        known = ledger.targets_for(app.id, "test")
    assert sorted((k.app_id, k.modified_date, k.file_size) for k in known) == sorted(
        (a.id, a.modified_date, file.stat().st_size) for a in on_test.values()
    )


async def test_a_replace_that_did_not_take_fails_the_site_with_the_reason(stage: Stage) -> None:
    """test answers the replace with 200 but keeps the old app (a sandbox fault): the read-back finds the
    old file size, and the site fails saying so instead of reporting a promotion that did not happen."""
    old = await stage.seed_target("test", "Sales", "Everyone", stage.app_file(seed="old"))
    new_file = stage.app_file(128 * 1024, seed="new")
    app = await stage.publish("Sales", new_file)
    async with QrsClient.for_site(stage.settings, "test") as qrs:
        unchanged = (await qrs.get_app(old.id)).to_qrs()
    stage.site("test").add_fault(
        "status", method="PUT", path=r"^/qrs/app/[^/]+/replace$", status=200, body=json.dumps(unchanged)
    )

    state = await promote_app(
        app.id, sites=["test"], streams=["Everyone"], mode=Mode.OVERWRITE, return_state=True
    )

    message = state.message or ""
    assert state.is_failed(), message
    assert f"app {old.id} in stream 'Everyone' has file size {old.file_size}" in message, message
    assert f"not the export's {new_file.stat().st_size} bytes" in message, message
    assert [a.id for a in await stage.apps("test")] == [old.id]  # the temporary upload is gone
