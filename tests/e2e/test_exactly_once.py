"""Exactly once end to end: a replayed approval promotes once, and a failed site is finished by a re-run."""

from __future__ import annotations

import asyncio

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage, counting_uploads

pytestmark = IN_PROCESS_FLOWS

SUBJECTS = [
    '[qs-promoter] Approved: "Budget"',
    '[qs-promoter] Promoted: "Budget"',
    '[qs-promoter] Promotion requested: "Budget"',
]


async def test_the_same_approval_notified_twice_at_once_promotes_once(stage: Stage) -> None:
    """Two runs for one approval, started together: they take turns (one lock per app); the first
    promotes, the second finds the approval gone with the published app and does nothing."""
    app = await stage.publish("Budget")
    approved = await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])

    reasons = await asyncio.gather(handle_app_change(app.id, "updated"), handle_app_change(app.id, "updated"))

    assert sorted(reasons) == [
        "approved for test (duplicate); afterwards the app is unpublished",
        "the app no longer exists",
    ]
    assert [a.name for a in await stage.apps("test")] == ["Budget"]
    assert stage.subjects() == SUBJECTS
    with stage.ledger() as ledger:
        assert [p.key for p in ledger.promotions()] == [approval_key(approved, stage.settings)]


async def test_a_replayed_approval_of_an_app_left_published_promotes_once(stage: Stage) -> None:
    """unpublish.auto off: the app stays published, stripped of its properties, so a replay of the
    notification finds nothing to do; one promotion, one app on the target, no second email."""
    stage.reconfigure(unpublish={"auto": False})
    app = await stage.publish("Budget")
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone"])

    await handle_app_change(app.id, "updated")
    replay = await handle_app_change(app.id, "updated")

    assert replay == "the app carries none of the promotion properties"
    assert [a.name for a in await stage.apps("test")] == ["Budget"]
    assert stage.subjects() == SUBJECTS
    with stage.ledger() as ledger:
        assert len(ledger.promotions()) == 1


async def test_a_failed_site_leaves_nothing_behind_and_a_rerun_finishes_it_without_duplicates(
    stage: Stage,
) -> None:
    """prod refuses to publish: prod keeps no temporary upload, test is done, the run fails naming prod,
    the source stays published. Once prod works, the same approval handled again completes prod only."""
    app = await stage.publish("Budget")
    approved = await stage.approve(app.id, ["test - Duplicate", "prod - Duplicate"], ["Everyone"])
    stage.site("prod").add_fault("status", method="PUT", path=r"^/qrs/app/[^/]+/publish$", status=500)
    uploads = counting_uploads(stage, "test", "prod")

    state = await handle_app_change(app.id, "updated", return_state=True)

    assert state.is_failed() and "prod" in (state.message or ""), state.message
    assert await stage.apps("prod") == []
    assert [a.name for a in await stage.apps("test")] == ["Budget"]
    (source,) = await stage.apps("source")
    assert (source.id, source.published) == (app.id, True)
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(approved, stage.settings)) == "failed"

    stage.site("prod").clear_faults()
    uploads = counting_uploads(stage, "test", "prod")
    await handle_app_change(app.id, "updated")

    assert [a.name for a in await stage.apps("test")] == ["Budget"]
    assert [a.name for a in await stage.apps("prod")] == ["Budget"]
    assert (uploads["test"].uploads, uploads["prod"].uploads) == (0, 1)
    (left,) = await stage.apps("source")
    assert (left.id != app.id, left.published) == (True, False)
    assert stage.subjects() == sorted([*SUBJECTS, '[qs-promoter] Promotion incomplete: "Budget"'])
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(approved, stage.settings)) == "promoted"
