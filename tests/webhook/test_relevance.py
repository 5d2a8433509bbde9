"""The submitter's pre-check against a real sandbox QRS: irrelevant app updates never become flow runs."""

from __future__ import annotations

from uuid import uuid4

from promoter.sandbox.repository import Actor
from promoter.sandbox.seed import seed_app
from promoter.sandbox.server import Sandbox
from promoter.settings import EmailSettings, Settings
from promoter.webhook.relevance import qrs_relevance
from promoter.webhook.submitter import Relevance
from tests.webhook.support import alerting_stream

REP = Actor("ACME", "rep")


async def test_an_app_without_promotion_properties_is_not_relevant(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """A plain edit of an app with none of our properties is dropped, with the reason."""
    app = seed_app(sandbox.sites["dev"].repository, "Plain app", owner=REP, stream="Everyone")

    answer = await qrs_relevance(sandbox_settings)(app["id"], "updated")

    assert (answer.relevant, answer.reason) == (
        False,
        "the app carries none of the promotion properties and not the reload tag",
    )


async def test_an_app_with_an_approval_is_relevant(sandbox: Sandbox, sandbox_settings: Settings) -> None:
    """An app carrying PromotionApproval goes on to a flow run, with its modifiedDate as QRS has it."""
    repo = sandbox.sites["dev"].repository
    app = seed_app(repo, "Approved app", owner=REP, custom_properties={"PromotionApproval": ["Approve"]})

    answer = await qrs_relevance(sandbox_settings)(app["id"], "updated")

    assert (answer.relevant, answer.modified_date) == (True, repo.get("app", app["id"])["modifiedDate"])


async def test_a_deleted_app_is_not_relevant_whatever_the_kind(sandbox_settings: Settings) -> None:
    """An app that does not exist (or no longer) is dropped, for an update as for a publish."""
    check = qrs_relevance(sandbox_settings)

    assert (await check(str(uuid4()), "updated")).relevant is False
    assert (await check(str(uuid4()), "published")) == Relevance(False, "the app no longer exists")


async def test_a_publish_is_relevant_only_when_it_may_alert(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """A publish passes when the app's stream has EmailAlertOnPublishTo and approvers are set, with
    email on; a stream without it, or email off, drops it with the flow's own reason."""
    repo = sandbox.sites["dev"].repository
    alerts = alerting_stream(repo, "Alerts")
    email = EmailSettings(enabled=True, stream_approvers={alerts["id"]: ["manager@acme.example"]})
    settings = sandbox_settings.model_copy(update={"email": email})
    alerting = seed_app(repo, "Alerting", owner=REP, stream=alerts["id"])["id"]
    quiet = seed_app(repo, "Quiet", owner=REP, stream="Everyone")["id"]

    with_email = [await qrs_relevance(settings)(a, "published") for a in (alerting, quiet)]
    without_email = await qrs_relevance(sandbox_settings)(alerting, "published")

    assert [(a.relevant, a.reason) for a in with_email] == [
        (True, "published to a stream with EmailAlertOnPublishTo: its approvers are alerted"),
        (False, "the stream does not have EmailAlertOnPublishTo"),
    ]
    assert (without_email.relevant, without_email.reason) == (False, "email alerts are disabled")


async def test_when_qrs_cannot_be_read_the_change_passes(
    sandbox: Sandbox, sandbox_settings: Settings
) -> None:
    """A QRS outage never drops a change: the flow, with its retries, decides later."""
    sandbox.sites["dev"].add_fault("status", method="GET", path="^/qrs/app/", status=503)
    settings = sandbox_settings

    answer = await qrs_relevance(settings)(str(uuid4()), "reloaded")

    assert (answer.relevant, answer.modified_date) == (True, None)
    assert "could not be read (503)" in answer.reason
