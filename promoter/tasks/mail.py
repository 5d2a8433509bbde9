"""The task that sends one email once per promotion and kind, whatever retries and crashes happen;
and the intended-targets email that waits, so that a quick promotion sends one results email.

The ledger holds each email from its claim until the SMTP server accepted it: an attempt that
stopped in between (its executor killed mid-send) leaves the email to the next attempt, which
sends it with the same Message-ID (``mail_messages.name_once``), so a mail server that got the
first one delivers it once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from email.message import EmailMessage

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from promoter import mail_sending
from promoter.mail_headers import recipients
from promoter.mail_messages import name_once
from promoter.settings import current_settings
from promoter.store.ledger import Ledger
from promoter.tasks.ledger import in_ledger
from promoter.tasks.retries import EMAIL_SEND

INTENDED = "intended"


@task(name="send-email", task_run_name="email-{kind}", **EMAIL_SEND)
async def send_email(request_key: str, kind: str, message: EmailMessage, carries: Sequence[str] = ()) -> bool:
    """Send ``message`` unless this request's ``kind`` of email went out already; True if sent now.

    The ledger claim comes first and is released when sending fails, so a retried run neither
    doubles an email nor loses one. ``carries``: the kinds this email also stands for (a results
    email with the intended targets), claimed with it so that no retry sends them on their own.
    """
    settings = current_settings()
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

    attempt = f"{flow_run.get_id()}:{flow_run.get_run_count()}"

    def claim(ledger: Ledger) -> list[str]:
        """The kinds this call now holds: none when ``kind`` went out before."""
        if not ledger.claim_email(request_key, kind, to, attempt):
            return []
        return [kind] + [other for other in carries if ledger.claim_email(request_key, other, to, attempt)]

    def release(ledger: Ledger) -> None:
        for each in claimed:
            ledger.release_email(request_key, each)

    def sent(ledger: Ledger) -> None:
        for each in claimed:
            ledger.email_sent(request_key, each)

    claimed = await in_ledger(claim)
    if not claimed:
        log.info("the %s email was sent before: not sent again", kind)
        return False
    name_once(message, request_key, kind)
    try:
        await asyncio.to_thread(mail_sending.send, message, settings.email)
    except Exception:
        await in_ledger(release)
        raise
    await in_ledger(sent)
    log.info("sent the %s email to %d recipient(s)", kind, len(to))
    return True


class IntendedTargetsEmail:
    """The intended-targets email of one promotion, held back for ``wait`` seconds.

    A promotion that finishes within the wait sends one results email that lists the requested
    targets too (``carried_by_results``); a slower one sends this email when the wait is over,
    while it still runs, as the original sent it before promoting. ``settle`` (in a ``finally``)
    sends it at once when the run fails before its results email, so the owner is never told less
    than before. An earlier attempt of the request that sent it, or carried it, holds nothing.
    """

    def __init__(self, request_key: str, wait: float) -> None:
        self.request_key, self.wait = request_key, wait
        self._message: EmailMessage | None = None
        self._timer: asyncio.Task[bool] | None = None
        self._sending = False

    async def hold(self, message: EmailMessage) -> None:
        """Send ``message`` after the wait, unless the results email carries it first."""
        if await _claimed(self.request_key, INTENDED):
            return
        if self.wait <= 0:
            await send_email(self.request_key, INTENDED, message)
            return
        self._message = message
        # A child task copies the flow run's context: the email is a task run of this flow run.
        self._timer = asyncio.create_task(self._send_when_due(message))

    async def carried_by_results(self) -> bool:
        """True when the results email is to carry the intended targets (the email has not gone).

        Otherwise waits for the email if it is going out now: it must arrive before the results.
        """
        timer, self._timer = self._timer, None
        if timer is None:
            return False
        if not self._sending:
            timer.cancel()  # still waiting: nothing was sent, nothing was claimed
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            return True
        await timer
        return False

    async def settle(self) -> None:
        """After the run: if it ended before its results email, send the held email now."""
        timer, self._timer = self._timer, None
        if timer is None:
            return
        if self._sending:
            with contextlib.suppress(Exception):
                await timer  # the run's own error is the one to report
            return
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
        if self._message is not None:
            try:
                await send_email(self.request_key, INTENDED, self._message)
            except Exception as exc:  # the run's own error is the one to report
                get_run_logger().warning("the intended-targets email was not sent: %s", exc)

    async def _send_when_due(self, message: EmailMessage) -> bool:
        await asyncio.sleep(self.wait)
        self._sending = True
        return await send_email(self.request_key, INTENDED, message)


async def _claimed(request_key: str, kind: str) -> bool:
    """Whether an email of ``kind`` was sent (or carried by another) for this request already."""
    return any(e.kind == kind for e in await in_ledger(lambda ledger: ledger.emails(request_key)))
