"""The submitter: drains the outbox into Prefect flow runs, one per app and kind, exactly once.

It runs as a background task of the webhook (or on its own, see ``Submitter.run``). Bursts of
notifications for the same app and kind become one flow run. The idempotency key
``{kind}:{app_id}:{modifiedDate}``, with the app's modifiedDate as QRS reports it when the
relevance check reads the app, makes a repeated submission (a retry after a timeout, a restart, a
duplicate notification) return the run that already exists instead of a second one. A sender's
payload never sets the key: a forged modifiedDate could otherwise fold a real change into an old
run. Without that read the key is the newest outbox entry's id (a duplicate may then get its own
run; the flow acts on each request once anyway).
While the Prefect API is slow, answering 503 or down, entries stay in the outbox and the
submitter backs off exponentially with jitter; an entry is marked done only once its flow run
exists.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import httpx
from prefect.exceptions import ObjectNotFound

from promoter.errors import PromoterError
from promoter.notifications import ChangeKind
from promoter.outcome import change_run_name
from promoter.prefect_api import HANDLE_CHANGE, WEBHOOK_TAGS, change_parameters, find_deployment, start_run
from promoter.webhook.outbox import Outbox, OutboxUnavailable, PendingChange

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Relevance:
    """The pre-check's answer for one app and kind."""

    relevant: bool  # worth a flow run
    reason: str
    modified_date: str | None = None  # the app's modifiedDate as QRS reports it; None when not read
    # A publish as QRS showed it now (stream id, publishTime): the flow alerts about this publish
    # even when an approval has unpublished the app, or it was moved, by the time the run reads it.
    published_to: str | None = None
    published_at: str | None = None
    # The app's name as QRS showed it: only ever shown, in the run's name (user-typed, hostile).
    app_name: str | None = None


# (app_id, kind) -> Relevance. The production check (relevance.qrs_relevance) reads the app from QRS.
RelevanceCheck = Callable[[str, ChangeKind], Awaitable[Relevance]]
NOT_CHECKED = Relevance(True, "no relevance check")


class DeploymentMissing(PromoterError):
    """The deployment the flow runs are created from does not exist (yet) in Prefect.

    Transient: until the flows are deployed, every submission would fail the same way, so
    submitting pauses and tries again (nothing accepted is lost meanwhile).
    """

    @property
    def transient(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class SubmitPolicy:
    """How hard and how often the submitter tries; the defaults suit production."""

    max_in_flight: int = 2  # a SQLite-backed Prefect server answers 503 beyond a few writers
    poll_seconds: float = 5.0  # look for due entries this often when nothing wakes us
    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    attempt_timeout_seconds: float = 30.0  # one flow-run creation, including the client's own retries
    keep_submitted_seconds: float = 86_400.0  # done entries stay this long, to answer "which run?"

    def backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row: doubling, capped, half of it jitter."""
        ceiling = min(self.max_backoff_seconds, self.first_backoff_seconds * 2 ** max(failures - 1, 0))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def idempotency_key(change: PendingChange, qrs_modified: str | None) -> str:
    """One flow run per app, kind and modifiedDate as QRS says: Prefect returns the existing run for a
    known key. Without QRS's word, one per newest outbox entry: never a date a sender wrote."""
    if qrs_modified is not None:
        return f"{change.kind}:{change.app_id}:{qrs_modified}"
    return f"{change.kind}:{change.app_id}:outbox-{max(change.ids)}"


def flow_parameters(change: PendingChange, key: str, relevance: Relevance = NOT_CHECKED) -> dict[str, str]:
    """The parameters of handle-app-change for ``change`` (no secrets); for a publish, where and when
    QRS said it was published, when the relevance check read it."""
    return change_parameters(
        change.app_id,
        change.kind,
        key,
        published_to=relevance.published_to,
        published_at=relevance.published_at,
    )


def is_transient(exc: BaseException) -> bool:
    """True when the Prefect side is unreachable, slow or overloaded, so every submission would fail now.

    Our errors say so themselves (``PromoterError.transient``); httpx's and Prefect's are judged here.
    """
    if isinstance(exc, PromoterError):
        return exc.transient
    if isinstance(exc, TimeoutError | httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status in (408, 429)
    return False


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    if isinstance(exc, ObjectNotFound):
        return 404
    return None


class Submitter:
    """Creates a flow run of the change-handling deployment for each waiting app and kind."""

    def __init__(
        self,
        outbox: Outbox,
        prefect: PrefectClient,
        *,
        deployment_name: str = HANDLE_CHANGE,
        relevant: RelevanceCheck | None = None,
        policy: SubmitPolicy | None = None,
    ) -> None:
        self.outbox = outbox
        self.prefect = prefect
        self.deployment_name = deployment_name
        self.relevant = relevant
        self.policy = policy or SubmitPolicy()
        self.running = False
        self.submitted = 0  # flow runs created or found since start
        self.failures_in_a_row = 0
        self.last_error: str | None = None  # why the last submission failed; None after a success
        self.last_submitted_at: float | None = None
        self._deployment_id: UUID | None = None
        self._paused_until = 0.0  # no submissions before this (Unix time): Prefect is unwell
        self._wakeup = asyncio.Event()
        self._claimed: set[tuple[str, str]] = set()
        self._claim_lock = asyncio.Lock()
        self._purged_at = 0.0

    def wake(self) -> None:
        """Look at the outbox now (the route calls this after each append)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Submit due entries until cancelled: at once when woken, otherwise every poll_seconds.

        Entries left by a previous process are found by the first pass.
        """
        self.running = True
        log.info("submitting notifications to deployment %s", self.deployment_name)
        try:
            while True:
                self._wakeup.clear()
                try:
                    await self.drain()
                    await self._purge_submitted()
                    delay = await self._idle_seconds()
                except* OutboxUnavailable as group:  # drain's workers raise in an ExceptionGroup
                    log.error("%s; trying again in %.0f s", group.exceptions[0], self.policy.poll_seconds)
                    delay = self.policy.poll_seconds
                if delay > 0:
                    try:
                        async with asyncio.timeout(delay):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
        finally:
            self.running = False

    async def drain(self) -> int:
        """Submit every entry due now, ``max_in_flight`` at a time; returns flow runs created or found.

        Stops early while Prefect is unreachable; the entries stay for the next pass.
        """
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(self._work()) for _ in range(self.policy.max_in_flight)]
        return sum(worker.result() for worker in workers)

    async def _work(self) -> int:
        submitted = 0
        while time.time() >= self._paused_until:
            change = await self._claim()
            if change is None:
                break
            try:
                submitted += await self._handle(change)
            finally:
                self._claimed.discard((change.app_id, change.kind))
        return submitted

    async def _claim(self) -> PendingChange | None:
        # One claim at a time, so two workers never pick the same app and kind.
        async with self._claim_lock:
            for change in await self.outbox.due(time.time(), limit=len(self._claimed) + 1):
                if (change.app_id, change.kind) not in self._claimed:
                    self._claimed.add((change.app_id, change.kind))
                    return change
        return None

    async def _handle(self, change: PendingChange) -> int:
        relevance = await self._relevance(change)
        if not relevance.relevant:
            await self.outbox.remove(change.ids)
            log.info(
                "no flow run for %s %s (%d notification(s)): %s",
                change.kind,
                change.app_id,
                len(change.ids),
                relevance.reason,
            )
            return 0
        key = idempotency_key(change, relevance.modified_date)
        try:
            async with asyncio.timeout(self.policy.attempt_timeout_seconds):
                run = await self._create_flow_run(change, key, relevance)
        except Exception as exc:  # any failure keeps the entries: nothing accepted is ever lost
            await self._postpone(change, exc)
            return 0
        await self.outbox.mark_submitted(change.ids, str(run.id))
        self.failures_in_a_row = 0
        self.last_error = None
        self.submitted += 1
        self.last_submitted_at = time.time()
        log.info(
            "flow run %s (%s) for %s of app %s covers %d notification(s)",
            run.name,
            run.id,
            change.kind,
            change.app_id,
            len(change.ids),
        )
        return 1

    async def _relevance(self, change: PendingChange) -> Relevance:
        """The relevance check's answer; relevant, with no date from QRS, when there is none or it fails."""
        if self.relevant is None:
            return NOT_CHECKED
        try:
            async with asyncio.timeout(self.policy.attempt_timeout_seconds):
                return await self.relevant(change.app_id, change.kind)
        except Exception:
            # The flow applies the full rules anyway; a failed pre-check must not drop a change.
            log.warning(
                "relevance check for %s %s failed; submitting anyway",
                change.kind,
                change.app_id,
                exc_info=True,
            )
            return Relevance(True, "the relevance check failed")

    async def _create_flow_run(self, change: PendingChange, key: str, relevance: Relevance) -> FlowRun:
        deployment_id = await self._resolve_deployment()
        try:
            return await self._create(deployment_id, change, key, relevance)
        except (httpx.HTTPStatusError, ObjectNotFound) as exc:
            if _status(exc) != 404:
                raise
        # The deployment was deleted and applied again under a new id: look the name up once more.
        log.info("deployment %s (%s) is gone; looking its name up again", self.deployment_name, deployment_id)
        self._deployment_id = None
        return await self._create(await self._resolve_deployment(), change, key, relevance)

    async def _create(
        self, deployment_id: UUID, change: PendingChange, key: str, relevance: Relevance
    ) -> FlowRun:
        return await start_run(
            self.prefect,
            self.deployment_name,
            flow_parameters(change, key, relevance),
            name=change_run_name(change.kind, change.app_id, relevance.app_name),
            idempotency_key=key,
            tags=WEBHOOK_TAGS,
            known_id=deployment_id,
        )

    async def _resolve_deployment(self) -> UUID:
        if self._deployment_id is None:
            try:
                self._deployment_id = await find_deployment(self.prefect, self.deployment_name)
            except ObjectNotFound:
                raise DeploymentMissing(
                    f"deployment {self.deployment_name} not found in Prefect; deploy the flows first"
                ) from None
        return self._deployment_id

    async def _postpone(self, change: PendingChange, exc: Exception) -> None:
        error = _describe(exc)
        self.last_error = error
        if is_transient(exc):
            # Prefect is down or overloaded: pause every submission, not just this one.
            self.failures_in_a_row += 1
            delay = self.policy.backoff(self.failures_in_a_row)
            self._paused_until = time.time() + delay
            log.warning(
                "Prefect unavailable (%s); %d notification(s) for %s %s kept, retrying in %.1f s",
                error,
                len(change.ids),
                change.kind,
                change.app_id,
                delay,
            )
        else:
            # Only this change is refused (for example its parameters): retry it alone, ever more slowly.
            delay = self.policy.backoff(change.attempts + 1)
            log.error(
                "flow run for %s %s refused (%s); kept, retrying in %.1f s",
                change.kind,
                change.app_id,
                error,
                delay,
                # Prefect's answer says it all; anything else is a bug worth its traceback.
                exc_info=None if isinstance(exc, httpx.HTTPStatusError) else exc,
            )
        await self.outbox.postpone(change.ids, time.time() + delay, error)

    async def _idle_seconds(self) -> float:
        now = time.time()
        if self._paused_until > now:
            return self._paused_until - now
        next_at = await self.outbox.next_attempt_at()
        if next_at is None:
            return self.policy.poll_seconds
        return min(self.policy.poll_seconds, max(next_at - now, 0.0))

    async def _purge_submitted(self) -> None:
        now = time.time()
        if now - self._purged_at < 60:
            return
        self._purged_at = now
        purged = await self.outbox.purge_submitted(now - self.policy.keep_submitted_seconds)
        if purged:
            log.debug("purged %d submitted outbox entries", purged)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description for the log and the outbox row."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, httpx.HTTPStatusError):
        answer = " ".join(exc.response.text.split())[:200]
        return f"HTTP {exc.response.status_code} from {exc.request.method} {exc.request.url.path}: {answer}"
    return f"{type(exc).__name__}: {exc}"[:300]
