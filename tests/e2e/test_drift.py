"""The drift guard end to end: a target app changed by hand since qs-promoter placed it is not replaced
unless the settings or an admin's force say so."""

from __future__ import annotations

import sqlite3
from uuid import UUID

from promoter.approval import Mode
from promoter.flows.handle import handle_app_change
from promoter.flows.manual import promote_app
from promoter.flows.plan import build_plan
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App, format_qrs_time
from promoter.sandbox.world import MANAGER, REP
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS

HAND_EDIT = "edited by hand on test"


async def edit_by_hand(stage: Stage, app_id: UUID) -> App:
    """An admin changes the target app's description in the QMC of the test site."""
    async with QrsClient.for_site(stage.settings, "test") as qrs:
        return await qrs.update_app(app_id, lambda app: setattr(app, "description", HAND_EDIT))


async def replace_file_by_hand(stage: Stage, app_id: UUID) -> App:
    """An admin imports another file and replaces the target app with it on the test site."""
    async with QrsClient.for_site(stage.settings, "test") as qrs:
        upload = await qrs.upload_app(stage.app_file(96 * 1024, seed="by hand"), "by hand")
        replaced = await qrs.replace_app(upload.id, app_id)
        await qrs.delete_app(upload.id)
        return replaced


async def only_app_on_test(stage: Stage) -> App:
    (app,) = await stage.apps("test")
    return app


async def test_a_target_changed_by_hand_holds_the_site_until_a_forced_promotion(stage: Stage) -> None:
    """Approve "Sales" (Overwrite to test), an admin edits the target on test, "Sales" is approved again:
    the plan shows test held; nothing is replaced on test, the run fails naming the app and when it
    changed, and the owner and the
    approver are both told (though the approver is not copied on results). A manual promotion with force
    then replaces it."""
    stage.reconfigure(unpublish={"auto": False})
    app = await stage.publish("Sales")
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"])
    await handle_app_change(app.id, "updated")
    placed = await only_app_on_test(stage)
    edited = await edit_by_hand(stage, placed.id)
    bytes_before = stage.site("test").repository.app_file(str(placed.id)).read_bytes()
    again = await stage.approve(app.id, ["test - Overwrite"], ["Everyone"])
    plan = await build_plan(again.id, stage.settings, requested_by="ACME\\admin")

    state = await handle_app_change(app.id, "updated", return_state=True)

    (planned,) = plan.sites
    assert plan.failing_sites == ("test",) and "held on test" in (planned.failure or "")
    message = state.message or ""
    assert state.is_failed() and f"app {placed.id}" in message, message
    assert edited.modified_date is not None and format_qrs_time(edited.modified_date) in message
    held = await only_app_on_test(stage)
    assert (held.id, held.description) == (placed.id, HAND_EDIT)
    assert stage.site("test").repository.app_file(str(placed.id)).read_bytes() == bytes_before
    (incomplete,) = [m for m in stage.mails() if "incomplete" in str(m["Subject"])]
    assert REP.email in str(incomplete["To"]) and MANAGER.email in str(incomplete["To"])
    text = incomplete.get_body(("plain",)).get_content()
    assert "held on test" in text and str(placed.id) in text

    outcomes = await promote_app(app.id, sites=["test"], streams=["Everyone"], force=True)

    assert [(o.site, o.status) for o in outcomes] == [("test", "done")]
    forced = await only_app_on_test(stage)
    assert forced.id == placed.id and f"app {app.id}" in (forced.description or "")
    assert any("replaced anyway (force)" in note for note in outcomes[0].notes)


async def test_with_drift_warn_a_changed_target_is_replaced_with_a_warning(stage: Stage) -> None:
    """drift = "warn": a target whose file an admin replaced on test is replaced by the next promotion,
    and the site's outcome says it was changed by hand."""
    stage.reconfigure(overwrite={"drift": "warn"})
    new_file = stage.app_file(seed="Inventory")
    app = await stage.publish("Inventory", new_file)
    await promote_app(app.id, sites=["test"], streams=["Everyone"], mode=Mode.OVERWRITE)
    placed = await only_app_on_test(stage)
    await replace_file_by_hand(stage, placed.id)

    (outcome,) = await promote_app(app.id, sites=["test"], streams=["Everyone"], mode=Mode.OVERWRITE)

    assert outcome.status == "done"
    assert any(f"app {placed.id}" in n and "replaced anyway (drift = warn)" in n for n in outcome.notes)
    assert stage.site("test").repository.app_file(str(placed.id)).read_bytes() == new_file.read_bytes()


async def test_a_ledger_from_before_the_drift_guard_never_holds(stage: Stage) -> None:
    """A ledger made before target states were kept (no such columns) gets them when opened, empty: the
    next overwrite of a target changed by hand goes ahead, and its state is kept from then on."""
    app = await stage.publish("Inventory")
    await promote_app(app.id, sites=["test"], streams=["Everyone"], mode=Mode.OVERWRITE)
    placed = await only_app_on_test(stage)
    database = stage.settings.ledger_url.get_secret_value().removeprefix("sqlite:///")
    with sqlite3.connect(database) as old:  # the ledger as an earlier release left it
        old.execute("ALTER TABLE target_identities DROP COLUMN placed_modified_date")
        old.execute("ALTER TABLE target_identities DROP COLUMN placed_file_size")
    await edit_by_hand(stage, placed.id)

    (outcome,) = await promote_app(app.id, sites=["test"], streams=["Everyone"], mode=Mode.OVERWRITE)

    assert (outcome.status, [p.action for p in outcome.placements]) == ("done", ["replaced"])
    now = await only_app_on_test(stage)
    with stage.ledger() as ledger:
        (known,) = ledger.targets_for(app.id, "test")
    kept = (known.app_id, known.modified_date, known.file_size)
    assert kept == (placed.id, now.modified_date, now.file_size)
