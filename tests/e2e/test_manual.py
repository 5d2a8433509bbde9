"""Manual promotion end to end: an admin re-promotes an app without a fresh approval."""

from __future__ import annotations

from promoter.flows.promote import promote_app
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
