"""Exactly once end to end: a replayed approval promotes once, and a failed site is finished by a re-run."""

from __future__ import annotations

import asyncio

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS

# Quick promotions: the results email carries the requested targets (no "Promotion requested" email).
SUBJECTS = [
    '[qs-promoter] Approved: "Budget"',
    '[qs-promoter] Promoted: "Budget"',
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
