"""Manual promotion end to end: an admin re-promotes an app without a fresh approval."""

from __future__ import annotations

from sqlalchemy import text

from promoter.flows.handle import handle_app_change
from promoter.flows.manual import promote_app
from promoter.flows.rollback import rollback_app
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS


async def test_promote_app_puts_the_app_where_the_parameters_say_without_approval(stage: Stage) -> None:
    """promote_app(sites=["test"], streams=["Review"]) on an app with no promotion properties: it lands
    in Review on test, the source stays published, and no approval email is sent."""
    app = await stage.publish("Inventory")

    outcomes = await promote_app(app.id, sites=["test"], streams=["Review"])

    (promoted,) = await stage.apps("test")
    assert (promoted.name, promoted.stream.name if promoted.stream else None) == ("Inventory", "Review")
    assert [(o.site, o.status) for o in outcomes] == [("test", "done")]
    (same,) = await stage.apps("source")
    assert (same.id, same.published) == (app.id, True)
    assert not any("Approved" in str(m["Subject"]) for m in stage.mails())


async def test_a_manual_run_records_who_started_it(stage: Stage) -> None:
    """A promote-app run started without requested_by (as from the Prefect UI) is recorded in the ledger as
    started from the Prefect UI or API; one started by the CLI records what the CLI passed."""
    app = await stage.publish("Inventory")

    await promote_app(app.id, sites=["test"], streams=["Review"])
    await promote_app(
        app.id, sites=["test"], streams=["Review"], requested_by="jdoe on ops01 (qs-promoter CLI)"
    )

    with stage.ledger() as ledger:
        from_ui, from_cli = [p.approver or "" for p in ledger.promotions()]
    assert from_ui.startswith("the Prefect UI or API (flow run ") and "no requested_by given" in from_ui
    assert from_cli == "jdoe on ops01 (qs-promoter CLI)"


async def test_a_rollback_records_who_started_it(stage: Stage) -> None:
    """A rollback-app run started without requested_by leaves a ledger row that says it came from the
    Prefect UI or API, not an empty requester."""
    await stage.seed_target("test", "Sales", "Everyone", stage.app_file(seed="old"))
    app = await stage.publish("Sales", stage.app_file(seed="new"))
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"])
    await handle_app_change(app.id, "updated")
    (target,) = await stage.apps("test")

    await rollback_app("test", target.id)

    with stage.ledger() as ledger, ledger.engine.connect() as conn:
        (requested_by,) = conn.execute(text("SELECT requested_by FROM rollbacks")).scalars()
    assert requested_by.startswith("the Prefect UI or API (flow run ")
