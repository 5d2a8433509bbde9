"""The source site's change subscriptions: what we subscribe, the handles we keep, and how a restart is seen.

QRS forgets every subscription when its repository service restarts and has no endpoint that
lists them (qrs-facts §2.3), so the keeper must notice a restart by itself. It does so in
three ways, cheapest first:

- **Sentinel rotation, every probe (~2 s).** Besides the three app subscriptions we keep one
  subscription that can never fire (App updates filtered on the empty id). A probe creates a
  new sentinel *before* deleting the previous one: a 404 on that delete means QRS lost the old
  one, i.e. it restarted, and everything is subscribed again at once. Creating first means a
  restart at any moment is caught by this probe or the next, and the probe doubles as the
  availability check (a POST that finds QRS down is a failed probe).
- **Down, then up.** A failed probe followed by a successful one also renews everything: QRS's
  answer to DELETE of an unknown handle is not documented (qrs-facts, open question 3), so the
  404 cannot be the only signal. An outage without a restart costs one harmless renewal.
- **Rotation at every run (every 60 s).** Each keeper run starts by creating each subscription
  anew and only then deleting the handle it replaces (no gap); a 404 there is logged as a
  restart. This bounds the loss to one schedule interval even if both signals above failed.

A canary (subscribe to one harmless entity, touch it, wait for the callback) would prove
delivery end to end, but it writes to the site every probe, needs the callback to reach the
keeper's process (the webhook may run elsewhere), and adds a timeout per probe; the sentinel
costs two in-memory QRS calls and no writes to Qlik entities.

Handles live in the ledger database (their own table), so any keeper process, the CLI and the
webhook's /healthz see the same state. The callback URLs hold the webhook secret: only their
SHA-256 is stored or logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from promoter.errors import QrsError, QrsNotFound
from promoter.notifications import KINDS, ChangeKind, callback_url
from promoter.qrs.client import QrsClient
from promoter.qrs.filters import eq
from promoter.qrs.models import NULL_ID, ChangeType
from promoter.qrs.responses import redact
from promoter.qrs.retry import RetryPolicy
from promoter.settings import Settings
from promoter.store.subscriptions import SubscriptionRecord, SubscriptionStore

Kind = ChangeKind | Literal["sentinel"]
Log = logging.Logger | logging.LoggerAdapter[Any]

SENTINEL: Kind = "sentinel"
SENTINEL_PATH = "/qs-promoter-sentinel"  # never called: the sentinel's filter matches no app
# A probe must not hang for the site's usual 30 s while QRS restarts.
PROBE_TIMEOUT_SECONDS = 10.0
# The deployment starts a run every 60 s; each watches until well before the next is due. The
# margin covers the run's own end (last state, process exit): with 55 s, a loaded 2-core machine
# let every other run end after the next tick, which CANCEL_NEW then skipped (a 60 s blind spot).
WATCH_SECONDS = 45.0

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What one subscription asks QRS for."""

    kind: Kind
    entity: str = "App"
    change_type: int = ChangeType.UPDATE
    property_name: str | None = None
    filter: str | None = None


# Every app update (so approvals arrive), reloads and publishes; a reload or a publish is also
# an app update, so those two arrive twice and the rules decide per kind.
SPECS: dict[ChangeKind, SubscriptionSpec] = {
    "updated": SubscriptionSpec("updated"),
    "reloaded": SubscriptionSpec("reloaded", property_name="lastReloadTime"),
    "published": SubscriptionSpec("published", property_name="publishTime"),
}
SENTINEL_SPEC = SubscriptionSpec(SENTINEL, filter=eq("id", NULL_ID))


def url_hash(url: str) -> str:
    """What we keep of a callback URL: it contains the webhook secret."""
    return hashlib.sha256(url.encode()).hexdigest()


def sentinel_url(settings: Settings) -> str:
    return settings.webhook.public_base_url.rstrip("/") + SENTINEL_PATH


def subscription_urls(settings: Settings) -> dict[Kind, str]:
    """The URL each subscription registers (secret inside: never log these)."""
    urls: dict[Kind, str] = {kind: callback_url(settings, kind) for kind in KINDS}
    urls[SENTINEL] = sentinel_url(settings)
    return urls


@dataclass(frozen=True, slots=True)
class Rotation:
    """One subscription created anew, and what became of the handles it replaced."""

    kind: str
    handle: UUID | None  # None: QRS refused or did not answer (see error)
    replaced: tuple[UUID, ...] = ()  # deleted now
    already_gone: tuple[UUID, ...] = ()  # QRS did not know them any more: it restarted
    still_owed: tuple[UUID, ...] = ()  # could not be deleted now; tried again next time
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """One keeper pass over every subscription."""

    rotations: tuple[Rotation, ...]

    @property
    def complete(self) -> bool:
        return all(r.handle is not None for r in self.rotations)

    @property
    def restart_seen(self) -> bool:
        return any(r.already_gone for r in self.rotations)

    def summary(self) -> str:
        made = sum(r.handle is not None for r in self.rotations)
        text = f"{made} of {len(self.rotations)} subscriptions in place"
        if self.restart_seen:
            text += "; QRS had lost earlier ones (repository restart)"
        failed = [f"{r.kind}: {r.error}" for r in self.rotations if r.error]
        return text + (f"; failed: {'; '.join(failed)}" if failed else "")


ProbeOutcome = Literal["ok", "restarted", "unreachable"]
WatchOutcome = Literal["time-up", "restarted", "back"]


@dataclass(frozen=True, slots=True)
class Watch:
    """Why a watch ended: time up, a restart seen (sentinel lost), or QRS back after failed probes."""

    outcome: WatchOutcome
    probes: int
    failures: int
    detail: str = ""


class Keeper:
    """Keeps the subscriptions of one source site in place through one QRS client and the store."""

    def __init__(
        self,
        qrs: QrsClient,
        store: SubscriptionStore,
        urls: dict[Kind, str],
        log: Log = log,
        *,
        hidden: tuple[str, ...] = (),
    ) -> None:
        self.qrs = qrs
        self.store = store
        self.urls = urls
        self.log = log
        # A QRS error answer may echo the callback URL; the secret in it must not reach a log.
        self.hidden = (*hidden, *urls.values())

    async def renew(self) -> Renewal:
        """Create every subscription anew, then delete the handle each one replaces."""
        specs = (*SPECS.values(), SENTINEL_SPEC)
        renewal = Renewal(tuple([await self._rotate(spec) for spec in specs]))
        level = logging.INFO if renewal.complete else logging.WARNING
        self.log.log(level, "source site: %s", renewal.summary())
        return renewal

    async def probe(self) -> tuple[ProbeOutcome, str]:
        """Rotate the sentinel: did QRS keep the previous one (ok), lose it (restarted), or not answer?"""
        rotation = await self._rotate(SENTINEL_SPEC, quiet=True)
        if rotation.handle is None:
            await asyncio.to_thread(self.store.checked, False, rotation.error)
            return "unreachable", rotation.error or ""
        if rotation.already_gone:
            return "restarted", "the sentinel subscription was gone"
        await asyncio.to_thread(self.store.checked, True)
        return "ok", ""

    async def watch(self, seconds: float, interval: float, *, renew_pending: bool = False) -> Watch:
        """Probe every ``interval`` s for ``seconds`` s; return as soon as the subscriptions need renewing.

        ``renew_pending``: the last renewal failed, so the first successful probe ends the watch.
        """
        deadline = time.monotonic() + seconds
        probes = failures = 0
        down = renew_pending
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(interval, left))
            outcome, detail = await self.probe()
            probes += 1
            if outcome == "unreachable":
                failures += 1
                if not down:
                    self.log.warning("source site not answering (%s); renewing when it is back", detail)
                down = True
            elif outcome == "restarted":
                self.log.warning("source site restarted: %s; subscribing again", detail)
                return Watch("restarted", probes, failures, detail)
            elif down:
                self.log.warning("source site answers again; subscribing again in case it restarted")
                return Watch("back", probes, failures)
        return Watch("time-up", probes, failures)

    async def drop(self) -> list[SubscriptionRecord]:
        """Delete every handle we hold from QRS (unknown ones count as gone) and forget it."""
        dropped = []
        for record in await asyncio.to_thread(self.store.records):
            try:
                await self.qrs.delete_notification(record.handle)
            except QrsNotFound:
                self.log.info("%s subscription %s was already gone", record.kind, record.handle)
            await asyncio.to_thread(self.store.forget, record.handle)
            dropped.append(record)
        return dropped

    async def _rotate(self, spec: SubscriptionSpec, *, quiet: bool = False) -> Rotation:
        url = self.urls[spec.kind]
        try:
            handle = await self.qrs.create_notification(
                url,
                entity=spec.entity,
                change_type=spec.change_type,
                property_name=spec.property_name,
                filter=spec.filter,
            )
        except QrsError as exc:
            error = redact(str(exc), *self.hidden)[:300]
            if not quiet:
                self.log.warning("could not subscribe %s: %s", spec.kind, error)
            return Rotation(spec.kind, None, error=error)
        retiring = await asyncio.to_thread(self.store.adopt, spec.kind, handle, url_hash(url))
        replaced, gone, owed = await self._retire(retiring)
        if gone and spec.kind != SENTINEL:
            self.log.warning(
                "%s subscription %s was already gone: QRS restarted since it was made",
                spec.kind, ", ".join(map(str, gone)),
            )  # fmt: skip
        if not quiet:
            self.log.info("subscribed %s: handle %s", spec.kind, handle)
        return Rotation(spec.kind, handle, tuple(replaced), tuple(gone), tuple(owed))

    async def _retire(
        self, records: Iterable[SubscriptionRecord]
    ) -> tuple[list[UUID], list[UUID], list[UUID]]:
        replaced: list[UUID] = []
        gone: list[UUID] = []
        owed: list[UUID] = []
        for record in records:
            try:
                await self.qrs.delete_notification(record.handle)
            except QrsNotFound:
                gone.append(record.handle)
            except QrsError as exc:
                # Kept as retiring: the next rotation of this kind deletes it.
                self.log.warning(
                    "could not delete old %s subscription %s: %s", record.kind, record.handle, exc
                )
                owed.append(record.handle)
                continue
            else:
                replaced.append(record.handle)
            await asyncio.to_thread(self.store.forget, record.handle)
        return replaced, gone, owed


def watch_seconds(duration: float | None, scheduled_start: datetime | None, now: datetime) -> float:
    """How long a keeper run watches: ``duration`` if given, else until WATCH_SECONDS after its
    scheduled start, so that a run the worker started late still ends before the next one is due
    (the deployment's CANCEL_NEW would otherwise skip that one)."""
    if duration is not None:
        return max(duration, 0.0)
    late = 0.0 if scheduled_start is None else max((now - scheduled_start).total_seconds(), 0.0)
    return max(WATCH_SECONDS - late, 0.0)


def keeper_client(settings: Settings) -> QrsClient:
    """The source site's client for the keeper: no repeats (the probe loop is the retry), short timeout."""
    site = settings.source_site
    site = site.model_copy(update={"timeout_seconds": min(site.timeout_seconds, PROBE_TIMEOUT_SECONDS)})
    return QrsClient(
        site, settings.cert_dir(Settings.SOURCE), name=Settings.SOURCE, retry=RetryPolicy(attempts=1)
    )


@asynccontextmanager
async def open_keeper(settings: Settings, log: Log = log) -> AsyncIterator[Keeper]:
    """A keeper for the source site, with its client and store closed afterwards."""
    store = await asyncio.to_thread(SubscriptionStore, settings.ledger_url.get_secret_value())
    try:
        async with keeper_client(settings) as qrs:
            secret = settings.webhook.secret.get_secret_value()
            yield Keeper(qrs, store, subscription_urls(settings), log, hidden=(secret,))
    finally:
        await asyncio.to_thread(store.close)


# -- operations (the CLI's `subscriptions list|ensure|drop`) -----------------------------------


async def list_subscriptions(settings: Settings) -> list[SubscriptionRecord]:
    """The handles we hold, as stored (QRS itself cannot list them)."""

    def read() -> list[SubscriptionRecord]:
        with SubscriptionStore(settings.ledger_url.get_secret_value()) as store:
            return store.records()

    return await asyncio.to_thread(read)


async def ensure_subscriptions(settings: Settings, log: Log = log) -> Renewal:
    """One keeper pass: every subscription created anew, the ones replaced deleted."""
    async with open_keeper(settings, log) as keeper:
        return await keeper.renew()


async def drop_subscriptions(settings: Settings, log: Log = log) -> list[SubscriptionRecord]:
    """Delete our subscriptions from the source site (for an uninstall or a move to another webhook)."""
    async with open_keeper(settings, log) as keeper:
        return await keeper.drop()


def last_subscription_check(settings: Settings) -> datetime | None:
    """When the keeper last found all three app subscriptions in place (for the webhook's /healthz)."""
    with SubscriptionStore(settings.ledger_url.get_secret_value()) as store:
        return store.last_ok(KINDS)
