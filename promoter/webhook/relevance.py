"""The cheap check that keeps irrelevant app changes out of Prefect: QRS reads and the pure rules.

It is also where the submitter learns the app's modifiedDate from QRS itself, which keys the
flow run: a notification's body says what a sender claims, the app in QRS what happened.
"""

from __future__ import annotations

from uuid import UUID

from promoter.approval import Action, decide_publish_alert, is_relevant
from promoter.errors import QrsError, QrsNotFound
from promoter.notifications import ChangeKind
from promoter.qrs.client import QrsClient
from promoter.qrs.models import App, Stream, format_qrs_time
from promoter.qrs.retry import RetryPolicy
from promoter.settings import Settings
from promoter.webhook.submitter import Relevance, RelevanceCheck

# A pre-filter must be cheap: when QRS does not answer at once, the change goes on to the flow,
# which has the patient retries.
ONE_TRY = RetryPolicy(attempts=1)


def qrs_relevance(settings: Settings) -> RelevanceCheck:
    """A check for the submitter: is this change worth a flow run, and what is the app's modifiedDate?

    Most app updates on a busy site (edits, reloads of untagged apps) carry none of the
    promotion properties and no reload tag; they are dropped here with the reason logged.
    A publish passes only when it may alert: the app is published to a stream that has
    EmailAlertOnPublishTo, with email on and approvers configured (the flow's own rule).
    When QRS cannot be read, the change passes, and the flow applies the full rules.
    """

    async def relevant(app_id: str, kind: ChangeKind) -> Relevance:
        try:
            async with QrsClient.for_site(settings, "source", retry=ONE_TRY) as qrs:
                app = await qrs.get_app(UUID(app_id))
                stream = await _publish_stream(qrs, app) if kind == "published" else None
        except QrsNotFound:
            return Relevance(False, "the app no longer exists")
        except QrsError as exc:
            return Relevance(True, f"QRS could not be read ({exc.status or 'no answer'}); the flow decides")
        modified = format_qrs_time(app.modified_date) if app.modified_date is not None else None
        if kind == "published":
            decision = decide_publish_alert(app, stream, settings)
            alerting = decision.action is Action.ALERT_PUBLISH
            # What this publish was, passed to the run: the app may be gone by the time it runs.
            to = str(app.stream.id) if alerting and app.stream is not None else None
            at = format_qrs_time(app.publish_time) if to and app.publish_time is not None else None
            return Relevance(
                alerting, decision.reason, modified, published_to=to, published_at=at, app_name=app.name
            )
        if is_relevant(app, settings):
            reason = "the app carries promotion properties or the reload tag"
            return Relevance(True, reason, modified, app_name=app.name)
        return Relevance(
            False, "the app carries none of the promotion properties and not the reload tag", modified
        )

    return relevant


async def _publish_stream(qrs: QrsClient, app: App) -> Stream | None:
    """The stream the app is published to, read in full (its custom properties), or None."""
    if not app.published or app.stream is None:
        return None
    try:
        return await qrs.get_stream(app.stream.id)
    except QrsNotFound:
        return None  # deleted meanwhile: decide_publish_alert says the stream could not be read
