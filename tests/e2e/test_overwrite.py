"""Overwrite end to end: the app already on a target site is replaced in place, and can be rolled back."""

from __future__ import annotations

from promoter.flows.handle import handle_app_change
from promoter.flows.rollback import rollback_app
from promoter.sandbox.world import MANAGER, REP
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage, counting_uploads

pytestmark = IN_PROCESS_FLOWS


async def test_approval_overwrites_the_same_named_app_in_place_and_unpublishes_the_source(
    stage: Stage,
) -> None:
    """Approve -> Overwrite where "Sales" is published on test: same target id, new bytes, provenance,
    the source unpublished into the owner's copy, and the owner told twice: quick, the promotion's
    results email carries the requested targets (no "Promotion requested" email of its own)."""
    old = await stage.seed_target("test", "Sales", "Everyone", stage.app_file(seed="old"))
    new_file = stage.app_file(seed="new")
    app = await stage.publish("Sales", new_file)
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"])
    uploads = counting_uploads(stage, "test")

    await handle_app_change(app.id, "updated")

    on_test = await stage.apps("test")
    assert [(a.id, a.name, a.published) for a in on_test] == [(old.id, "Sales", True)]
    assert stage.site("test").repository.app_file(str(old.id)).read_bytes() == new_file.read_bytes()
    description = on_test[0].description or ""
    assert f"app {app.id}" in description and f"approved by {MANAGER.account}" in description
    assert uploads["test"].uploads == 1
    on_dev = await stage.apps("source")
    assert [(a.name, a.published, a.owner.user_id) for a in on_dev] == [("Sales", False, REP.user_id)]
    assert on_dev[0].id != app.id
    mails = stage.mails()
    assert stage.subjects() == ['[qs-promoter] Approved: "Sales"', '[qs-promoter] Promoted: "Sales"']
    (results,) = [m for m in mails if str(m["Subject"]).startswith("[qs-promoter] Promoted")]
    text = results.get_body(("plain",)).get_content()
    assert "Requested targets" in text and "test (Overwrite): Everyone" in text
    assert all(REP.email in str(m["To"]) for m in mails), [str(m["To"]) for m in mails]


async def test_rollback_puts_the_previous_app_back_into_the_same_target_id(stage: Stage) -> None:
    """With versioning and backup before overwrite, rollback_app restores the old bytes into the target id."""
    old_file = stage.app_file(seed="old")
    old = await stage.seed_target("test", "Sales", "Everyone", old_file)
    new_file = stage.app_file(seed="new")
    app = await stage.publish("Sales", new_file)
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"])
    await handle_app_change(app.id, "updated")
    assert stage.site("test").repository.app_file(str(old.id)).read_bytes() == new_file.read_bytes()

    said = await rollback_app("test", old.id)

    on_test = await stage.apps("test")
    assert [(a.id, a.name, a.published) for a in on_test] == [(old.id, "Sales", True)], said
    assert stage.site("test").repository.app_file(str(old.id)).read_bytes() == old_file.read_bytes()
