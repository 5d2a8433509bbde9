"""The cheap check that keeps irrelevant app changes out of Prefect: one QRS read and the pure rules."""

from __future__ import annotations

from uuid import UUID

from promoter.approval import is_relevant
from promoter.errors import QrsError, QrsNotFound
from promoter.qrs.client import QrsClient
from promoter.qrs.retry import RetryPolicy
from promoter.settings import Settings
from promoter.webhook.callbacks import ChangeKind
from promoter.webhook.submitter import RelevanceCheck

# A pre-filter must be cheap: when QRS does not answer at once, the change goes on to the flow,
# which has the patient retries.
ONE_TRY = RetryPolicy(attempts=1)


def qrs_relevance(settings: Settings) -> RelevanceCheck:
    """A check for the submitter: is this change worth a flow run?

    Most app updates on a busy site (edits, reloads of untagged apps) carry none of the
    promotion properties and no reload tag; they are dropped here with the reason logged.
    Publishes always pass: whether the stream alerts its approvers is the flow's decision.
    When QRS cannot be read, the change passes too, and the flow applies the full rules.
    """

    async def relevant(app_id: str, kind: ChangeKind) -> tuple[bool, str]:
        if kind == "published":
            return True, "a publish may alert the stream's approvers"
        try:
            async with QrsClient.for_site(settings, "source", retry=ONE_TRY) as qrs:
                app = await qrs.get_app(UUID(app_id))
        except QrsNotFound:
            return False, "the app no longer exists"
        except QrsError as exc:
            return True, f"the app could not be read ({exc.status or 'no answer'}); the flow decides"
        if is_relevant(app, settings):
            return True, "the app carries promotion properties or the reload tag"
        return False, "the app carries none of the promotion properties and not the reload tag"

    return relevant
