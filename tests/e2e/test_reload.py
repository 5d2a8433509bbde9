"""Promote on reload end to end: PromoteOnReload tags the app; each reload promotes it without approval."""

from __future__ import annotations

from promoter.flows.handle import handle_app_change
from promoter.qrs.client import QrsClient
from promoter.sandbox.world import MANAGER, set_properties
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS

TAG = "AutoPromoteOnReload"


async def test_an_app_set_to_promote_on_reload_is_tagged_promoted_on_each_reload_and_untagged(
    stage: Stage,
) -> None:
    """PromoteOnReload True with server and stream: the update tags the app; a reload promotes it to test
    with no approval, no email, the app left published; the same reload handled again does nothing;
    removing PromoteOnReload removes the tag."""
    stage.reconfigure(promote_on_reload={"enabled": True})
    app = await stage.publish("Daily Sales")
    values = {
        "PromoteToServer": ["test - Overwrite"],
        "PromoteToStream": ["Everyone"],
        "PromoteOnReload": ["True"],
    }
    await set_properties(stage.settings, MANAGER, app.id, stage.world, values)

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
