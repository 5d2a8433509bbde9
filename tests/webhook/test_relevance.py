"""The submitter's pre-check against a real sandbox QRS: irrelevant app updates never become flow runs."""

from __future__ import annotations

from uuid import uuid4

from promoter.sandbox.repository import Actor
from promoter.sandbox.seed import seed_app
from promoter.sandbox.server import Sandbox
from promoter.settings import Settings
from promoter.webhook.relevance import qrs_relevance

REP = Actor("ACME", "rep")


async def test_an_app_without_promotion_properties_is_not_relevant(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """A plain edit of an app with none of our properties is dropped, with the reason."""
    app = seed_app(sandbox.sites["dev"].repository, "Plain app", owner=REP, stream="Everyone")

    relevant, reason = await qrs_relevance(sandbox_settings)(app["id"], "updated")

    assert (relevant, reason) == (
        False,
        "the app carries none of the promotion properties and not the reload tag",
    )


async def test_an_app_with_an_approval_is_relevant(sandbox: Sandbox, sandbox_settings: Settings) -> None:
    """An app carrying PromotionApproval goes on to a flow run."""
    repo = sandbox.sites["dev"].repository
    app = seed_app(repo, "Approved app", owner=REP, custom_properties={"PromotionApproval": ["Approve"]})

    relevant, _ = await qrs_relevance(sandbox_settings)(app["id"], "updated")

    assert relevant


async def test_a_deleted_app_and_a_publish_are_decided_without_rules(sandbox_settings: Settings) -> None:
    """A deleted app is dropped; a publish always passes (the flow decides about the alert)."""
    check = qrs_relevance(sandbox_settings)

    assert (await check(str(uuid4()), "updated"))[0] is False
    assert (await check(str(uuid4()), "published"))[0] is True


async def test_when_qrs_cannot_be_read_the_change_passes(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """A QRS outage never drops a change: the flow, with its retries, decides later."""
    sandbox.sites["dev"].add_fault("status", method="GET", path="^/qrs/app/", status=503)
    settings = sandbox_settings

    relevant, reason = await qrs_relevance(settings)(str(uuid4()), "reloaded")

    assert relevant
    assert "could not be read (503)" in reason
