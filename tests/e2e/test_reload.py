"""Promote on reload end to end: PromoteOnReload tags the app; each reload promotes it without approval."""

from __future__ import annotations

from uuid import UUID

from promoter.approval import approval_key
from promoter.flows.handle import handle_app_change
from promoter.qrs.client import QrsClient
from promoter.sandbox.world import MANAGER, REP, set_properties
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage, counting_uploads

pytestmark = IN_PROCESS_FLOWS

TAG = "AutoPromoteOnReload"
# What the manager sets for a promotion on every reload, Overwrite on test.
ON_RELOAD_TO_TEST = {
    "PromoteToServer": ["test - Overwrite"],
    "PromoteToStream": ["Everyone"],
    "PromoteOnReload": ["True"],
}


async def test_an_app_set_to_promote_on_reload_is_tagged_promoted_on_each_reload_and_untagged(
    stage: Stage,
) -> None:
    """PromoteOnReload True with server and stream: the update tags the app; a reload promotes it to test
    with no approval, no email, the app left published; the same reload handled again does nothing;
    removing PromoteOnReload removes the tag."""
    stage.reconfigure(promote_on_reload={"enabled": True})
    app = await stage.publish("Daily Sales")
    await set_properties(stage.settings, MANAGER, app.id, stage.world, ON_RELOAD_TO_TEST)

    await handle_app_change(app.id, "updated")
    (tagged,) = await stage.apps("source")
    assert [t.name for t in tagged.tags] == [TAG]

    async with QrsClient.for_site(stage.settings, "source") as dev:
        await dev.reload_app(app.id)
    await handle_app_change(app.id, "reloaded")
    replay = await handle_app_change(app.id, "reloaded")

    (promoted,) = await stage.apps("test")
    assert (promoted.name, promoted.stream.name if promoted.stream else None) == ("Daily Sales", "Everyone")
    (still,) = await stage.apps("source")
    assert (still.id, still.published) == (app.id, True)
    assert replay.startswith("already handled")
    assert stage.mails() == []

    await set_properties(stage.settings, MANAGER, app.id, stage.world, {"PromoteOnReload": []})
    await handle_app_change(app.id, "updated")
    (untagged,) = await stage.apps("source")
    assert untagged.tags == []


async def reload(stage: Stage, app_id: UUID) -> str:
    """A reload on dev, and the run its notification starts."""
    async with QrsClient.for_site(stage.settings, "source") as dev:
        await dev.reload_app(app_id)
    return await handle_app_change(app_id, "reloaded")


async def test_promote_on_reload_set_by_a_user_without_can_promote_never_overwrites_production(
    stage: Stage,
) -> None:
    """The rep (no CanPromote) sets PromoteOnReload with "prod - Overwrite" on their app: it is not tagged,
    two reloads replace nothing on prod (no upload at all), each reload is refused in the ledger, and the
    refusal is emailed once, not once per reload."""
    stage.reconfigure(promote_on_reload={"enabled": True})
    production = await stage.seed_target("prod", "Daily Sales", "Everyone", stage.app_file(seed="live"))
    live_bytes = stage.site("prod").repository.app_file(str(production.id)).read_bytes()
    app = await stage.publish("Daily Sales", stage.app_file(seed="rogue"))
    values = {
        "PromoteToServer": ["prod - Overwrite"],
        "PromoteToStream": ["Everyone"],
        "PromoteOnReload": ["True"],
    }
    await set_properties(stage.settings, REP, app.id, stage.world, values)
    prod = counting_uploads(stage, "prod")["prod"]

    tagging = await handle_app_change(app.id, "updated")
    first, second = await reload(stage, app.id), await reload(stage, app.id)

    assert prod.uploads == 0
    assert [(a.id, a.name) for a in await stage.apps("prod")] == [(production.id, "Daily Sales")]
    assert stage.site("prod").repository.app_file(str(production.id)).read_bytes() == live_bytes
    assert tagging.startswith("not tagged") and "does not have CanPromote" in tagging
    (untagged,) = await stage.apps("source")
    assert untagged.tags == []
    reloaded = (await stage.apps("source"))[0]
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(reloaded, stage.settings, "reloaded")) == "refused", second
        assert ledger.promotions() == []
    (refusal,) = stage.mails()
    assert str(refusal["Subject"]) == '[qs-promoter] Promotion on reload refused: "Daily Sales"', first
    assert REP.email in str(refusal["To"])
    assert "does not have CanPromote" in refusal.get_body(("plain",)).get_content()


async def test_targets_changed_after_promote_on_reload_was_set_are_not_promoted_on_reload(
    stage: Stage,
) -> None:
    """The manager sets PromoteOnReload for test; the rep later adds "prod - Overwrite": a reload promotes
    to neither site, the ledger says "outdated", and the owner is told to have it set again, once."""
    stage.reconfigure(promote_on_reload={"enabled": True})
    app = await stage.publish("Daily Sales")
    await set_properties(stage.settings, MANAGER, app.id, stage.world, ON_RELOAD_TO_TEST)
    await handle_app_change(app.id, "updated")
    rep_values = {"PromoteToServer": ["test - Overwrite", "prod - Overwrite"]}
    await set_properties(stage.settings, REP, app.id, stage.world, rep_values)

    await handle_app_change(app.id, "updated")
    said = await reload(stage, app.id)
    await reload(stage, app.id)

    assert (await stage.apps("test"), await stage.apps("prod")) == ([], [])
    reloaded = (await stage.apps("source"))[0]
    with stage.ledger() as ledger:
        assert ledger.outcome(approval_key(reloaded, stage.settings, "reloaded")) == "outdated", said
    (notice,) = stage.mails()
    assert str(notice["Subject"]) == '[qs-promoter] Promotion on reload outdated: "Daily Sales"'
    text = notice.get_body(("plain",)).get_content()
    assert "'prod - Overwrite' by ACME\\rep" in text and "sets it to True again" in text
    assert REP.email in str(notice["To"]) and MANAGER.email in str(notice["To"])
