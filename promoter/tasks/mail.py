"""The task that sends one email, at most once per promotion and kind, whatever retries happen."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from promoter import mailer
from promoter.mail_headers import recipients
from promoter.settings import load_settings
from promoter.store.ledger import Ledger
from promoter.tasks.policy import TRANSIENT_RETRIES


@task(
    name="send-email",
    task_run_name="email-{kind}",
    cache_policy=NO_CACHE,
    timeout_seconds=300,
    **TRANSIENT_RETRIES,
)
async def send_email(request_key: str, kind: str, message: EmailMessage) -> bool:
    """Send ``message`` unless this request's ``kind`` of email went out already; True if sent now.

    The ledger claim comes first and is released when sending fails, so a retried run neither
    doubles an email nor loses one.
    """
    settings = load_settings()
    log = get_run_logger()
    if not settings.email.enabled:
        log.info("email is disabled: %s not sent", kind)
        return False
    # One To header holds every address: count (and remember) addresses, not headers.
    to = recipients(message)
    if not to:
        # Nobody to tell is no reason to fail a promotion: the flow warned which address was missing.
        log.warning("no valid recipient address for the %s email: not sent", kind)
        return False
    with Ledger(settings.ledger_url.get_secret_value()) as ledger:
        if not ledger.claim_email(request_key, kind, to):
            log.info("the %s email was sent before: not sent again", kind)
            return False
        try:
            await asyncio.to_thread(mailer.send, message, settings.email)
        except Exception:
            ledger.release_email(request_key, kind)
            raise
    log.info("sent the %s email to %d recipient(s)", kind, len(to))
    return True
