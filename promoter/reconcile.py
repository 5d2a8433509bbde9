"""Find what no notification announced, and temporary uploads that a failed promotion left behind.

Notifications are lost while the webhook is down, and QRS drops subscriptions when it
restarts. Reconcile looks at the source site itself:

- a scan of published apps that carry the approval or promote-on-reload properties (or the
  reload tag): an approval waits on the app until it is handled, so the scan needs no window;
- the changes QRS journaled since the last successful reconcile (``/qrs/notification/changes``),
  for what leaves no lasting mark on the app: a reload of a promote-on-reload app, a publish
  that alerts approvers, an unpublished app that still carries the reload tag.

The pure rules (``decide``) pick the requests; those whose key the ledger has not seen, and
whose app no change run is queued for or running (a busy worker's backlog), are submitted, each
under an idempotency key derived from its request key, so a request is never
run twice by reconcile however often it is found. The first reconcile (no mark yet) submits
approvals only: reloads and publishes from before the service ran are history, not requests.

Requests whose flow run stopped before finishing are finished by retrying that same run (as the
UI's Retry does: persisted steps come back cached, only the rest runs again). The ledger names
the run holding each unfinished or failed claim; a run that ended Crashed, Failed or Cancelled is
set to Scheduled again, at most ``RETRY_LIMIT`` times per request (counted here), and a run still
going is left alone unless its claim is older than the flow's timeout or it sits in Pending
(handed to a worker that died) for ``PENDING_LIMIT``: then it is marked Crashed and retried.

The sweep removes unpublished apps named ``<name> [qs-promoter <token>-<secret>]`` (see
``provenance.upload_name``) older than an hour from the target sites, except uploads of
requests the ledger shows as still running. Only apps owned by the account we upload as are
ours: an app that anyone else named like that is left alone and reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from promoter.approval import Action, approval_key, decide, is_relevant
from promoter.errors import QrsBadRequest, QrsNotFound
from promoter.notifications import ChangeKind
from promoter.provenance import UPLOAD_MARK, UPLOAD_SUFFIX, upload_token
from promoter.qrs.client import QrsClient
from promoter.qrs.filters import all_of, any_of, eq, literal
from promoter.qrs.models import NEVER, App, ChangeType, Stream, format_qrs_time, qrs_now
from promoter.qrs.steps import Log
from promoter.settings import Settings
from promoter.store.database import in_batches
from promoter.store.reconcile_marks import LONGEST_RUN, OpenRequest, ReconcileMark

# Our clock and the QRS server's may differ; the journal window overlaps by this much.
CLOCK_SKEW = timedelta(minutes=5)
# Ids per filter when reading changed apps: keeps the query well below URL length limits.
IDS_PER_QUERY = 25
# Automatic retries of one request's stopped flow run; after that it waits for an admin.
RETRY_LIMIT = 5
# A run Pending this long was handed to a worker that died before starting its process (a
# healthy start takes seconds; 10-35 s measured on a loaded 2-core machine).
PENDING_LIMIT = timedelta(minutes=5)
# The scheduled flows: a run of theirs may be cancelled or ended, the next tick redoes its work.
MAINTENANCE_FLOWS = ("keep-subscriptions", "reconcile")
STOPPED = frozenset({"CRASHED", "FAILED", "CANCELLED"})  # terminal, and not Completed


@dataclass(frozen=True, slots=True)
class MissedRequest:
    """A request found on the source site: an approval, reload or publish to hand to handle-app-change."""

    app_id: UUID
    app_name: str
    trigger: ChangeKind
    key: str  # the ledger's request key (approval_key)
    reason: str

    @property
    def idempotency_key(self) -> str:
        return f"reconcile:{self.key}"


@dataclass(frozen=True, slots=True)
class SourceSurvey:
    """What reconcile read from the source site."""

    apps: list[App]
    streams: dict[UUID, Stream] = field(default_factory=dict)
    scanned: int = 0  # apps found by the property scan
    changed: int = 0  # apps named by the change journal


# -- pure rules ------------------------------------------------------------------------------


def window_start(mark: ReconcileMark | None, settle: timedelta) -> datetime | None:
    """Where the journal window starts: the last success, less the settle time and clock skew,
    but never before the first success; None before the first success."""
    return None if mark is None else max(mark.last - settle - CLOCK_SKEW, mark.first)


def _after(moment: datetime | None, since: datetime) -> bool:
    return moment is not None and moment > NEVER and moment > since


def find_missed(
    apps: Iterable[App],
    settings: Settings,
    *,
    since: datetime | None,
    now: datetime,
    settle: timedelta,
    streams: Mapping[UUID, Stream] | None = None,
) -> list[MissedRequest]:
    """The requests these apps carry, as the rules decide them.

    An app changed within ``settle`` of ``now`` is left to its notification for now (the next
    reconcile looks again). Reloads and publishes count only after ``since``; with ``since``
    None (never reconciled) only approvals and tag changes are looked for.
    """
    found: list[MissedRequest] = []
    for app in apps:
        if app.modified_date is not None and app.modified_date > now - settle:
            continue
        decision = decide(app, "updated", settings)
        if decision.action is not Action.IGNORE:
            key = approval_key(app, settings, "updated")
            found.append(MissedRequest(app.id, app.name, "updated", key, decision.reason))
        if since is None:
            continue
        if settings.promote_on_reload.enabled and _after(app.last_reload_time, since):
            decision = decide(app, "reloaded", settings)
            if decision.action is Action.PROMOTE_ON_RELOAD:
                key = approval_key(app, settings, "reloaded")
                found.append(MissedRequest(app.id, app.name, "reloaded", key, decision.reason))
        if app.stream is not None and _after(app.publish_time, since):
            decision = decide(app, "published", settings, (streams or {}).get(app.stream.id))
            if decision.action is Action.ALERT_PUBLISH:
                key = approval_key(app, settings, "published")
                found.append(MissedRequest(app.id, app.name, "published", key, decision.reason))
    return found


def temporary_token(name: str) -> str | None:
    """The upload token in a temporary upload's name, or None for any other app."""
    match = UPLOAD_SUFFIX.search(name)
    return match.group(1) if match else None


def running_upload_tokens(request_keys: Iterable[str], sites: Iterable[str]) -> set[str]:
    """The upload tokens that running requests use (or may still use) on these sites."""
    sites = list(sites)
    return {upload_token(key, site) for key in request_keys for site in sites}


def leftover_uploads(
    apps: Iterable[App], *, now: datetime, min_age: timedelta, protected: set[str]
) -> list[App]:
    """Temporary uploads nobody will finish: unpublished, older than ``min_age``, not of a running request."""
    leftovers = []
    for app in apps:
        token = temporary_token(app.name)
        if token is None or token in protected or app.published:
            continue
        if app.created_date is not None and app.created_date < now - min_age:
            leftovers.append(app)
    return leftovers


@dataclass(frozen=True, slots=True)
class RunStatus:
    """What Prefect says of one flow run."""

    id: str
    name: str
    state: str  # the state type: "RUNNING", "CRASHED", ...
    since: datetime | None  # when it entered that state
    message: str = ""


# leave: still going; report: nothing to do but an admin should know; missing: the run is gone.
RetryAction = Literal["retry", "crash-and-retry", "give-up", "leave", "report", "missing"]


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What reconcile does about one open request's run, and why (for the log)."""

    request: OpenRequest
    action: RetryAction
    reason: str
    retries: int  # automatic retries made before this decision


def decide_retry(
    request: OpenRequest,
    run: RunStatus | None,
    retries: int,
    *,
    now: datetime,
    limit: int = RETRY_LIMIT,
    pending_limit: timedelta = PENDING_LIMIT,
) -> RetryDecision:
    """Retry a stopped run (or a dead one, crashed first) until ``limit``; leave a live one alone."""

    def decision(action: RetryAction, reason: str) -> RetryDecision:
        if action in ("retry", "crash-and-retry") and retries >= limit:
            action, reason = "give-up", f"{reason}; {retries} automatic retries made: retry it in the UI"
        return RetryDecision(request, action, reason, retries)

    if run is None:
        return decision("missing", f"flow run {request.run_id} is not in Prefect: left for an admin")
    where = f"flow run {run.name} ({run.id})"
    if run.state in STOPPED:
        return decision("retry", f"{where} ended {run.state}: {run.message or 'no message'}"[:300])
    if run.state == "COMPLETED":
        return decision("report", f"{where} completed, but the ledger has no outcome for it")
    if request.claimed_at < now - LONGEST_RUN:
        return decision("crash-and-retry", f"{where} still {run.state} after the flow's timeout")
    if run.state == "PENDING" and run.since is not None and run.since < now - pending_limit:
        return decision("crash-and-retry", f"{where} Pending since {format_qrs_time(run.since)}")
    return decision("leave", f"{where} is {run.state}")


def in_hand(run: RunStatus, now: datetime, pending_limit: timedelta = PENDING_LIMIT) -> bool:
    """A change run that will look at its app soon: scheduled, running, or pending (not for too long)."""
    if run.state == "PENDING":
        return not stalled(run, now, pending_limit)
    return run.state in ("SCHEDULED", "RUNNING")


def stalled(run: RunStatus, now: datetime, pending_limit: timedelta = PENDING_LIMIT) -> bool:
    """Pending for longer than ``pending_limit``: the worker that took the run was lost before it
    started it. Nothing else ends such a run, and until then it holds its work queue's and its
    deployment's slots (measured: eight of them jammed a queue limited to eight for good)."""
    return run.state == "PENDING" and run.since is not None and run.since < now - pending_limit


# -- reading the sites -----------------------------------------------------------------------


def scan_filter(settings: Settings) -> str:
    """Published apps with an approval or promote-on-reload value, or the reload tag."""
    names = settings.properties
    carries = any_of(
        eq("customProperties.definition.name", names.promotion_approval),
        eq("customProperties.definition.name", names.promote_on_reload),
        eq("tags.name", names.reload_tag),
    )
    return all_of(eq("published", True), carries)


async def _by_ids(qrs: QrsClient, ids: Iterable[UUID]) -> list[App]:
    found: list[App] = []
    for chunk in in_batches(sorted(ids, key=str), IDS_PER_QUERY):
        found += await qrs.apps(any_of(*(eq("id", i) for i in chunk)))
    return found


async def _streams(qrs: QrsClient, ids: Iterable[UUID]) -> dict[UUID, Stream]:
    streams: dict[UUID, Stream] = {}
    for chunk in in_batches(sorted(ids, key=str), IDS_PER_QUERY):
        streams.update((s.id, s) for s in await qrs.streams(any_of(*(eq("id", i) for i in chunk))))
    return streams


async def survey_source(qrs: QrsClient, settings: Settings, since: datetime | None) -> SourceSurvey:
    """The source apps worth a look: the property scan plus the apps journaled as changed since ``since``."""
    try:
        scanned = await qrs.apps(scan_filter(settings))
    except QrsBadRequest:
        # A QRS that cannot filter on custom property names: read every published app instead.
        scanned = await qrs.apps(eq("published", True))
    apps = {app.id: app for app in scanned if is_relevant(app, settings)}
    scanned_count = len(apps)
    changed_ids: set[UUID] = set()
    if since is not None:
        changes = await qrs.changes_since(since, ["App"])
        changed_ids = {c.id for c in changes if c.change_type != ChangeType.DELETE}
        for app in await _by_ids(qrs, changed_ids - apps.keys()):
            apps[app.id] = app
    streams: dict[UUID, Stream] = {}
    if since is not None:
        published_since = {a.stream.id for a in apps.values() if a.stream and _after(a.publish_time, since)}
        streams = await _streams(qrs, published_since)
    return SourceSurvey(list(apps.values()), streams, scanned_count, len(changed_ids))


async def temporary_uploads(qrs: QrsClient) -> list[App]:
    """Unpublished apps whose name carries the temporary upload mark (the pure check decides)."""
    return await qrs.apps(all_of(f"name so {literal(UPLOAD_MARK)}", eq("published", False)))


async def sweep_leftovers(qrs: QrsClient, *, min_age: timedelta, protected: set[str], log: Log) -> list[App]:
    """Delete one site's leftover temporary uploads; returns the apps deleted.

    Only apps we uploaded (owned by the site's configured X-Qlik-User) are candidates: anyone can
    name an app like a temporary upload, and such an app is not ours to delete.
    """
    uploads = []
    for app in await temporary_uploads(qrs):
        if app.owner.account.casefold() == qrs.account.casefold():
            uploads.append(app)
        elif temporary_token(app.name) is not None:
            log.warning(
                "%s: app %s owned by %r is named like our temporary upload %r; not ours, left alone:"
                " an administrator should look at it",
                qrs.name, app.id, app.owner.account, app.name,
            )  # fmt: skip
    leftovers = leftover_uploads(uploads, now=qrs_now(), min_age=min_age, protected=protected)
    deleted = []
    for app in leftovers:
        try:
            await qrs.delete_app(app.id)
        except QrsNotFound:
            continue  # gone meanwhile: what we wanted
        created = format_qrs_time(app.created_date) if app.created_date else "?"
        log.info(
            "%s: deleted leftover temporary upload %s (%r, created %s)", qrs.name, app.id, app.name, created
        )
        deleted.append(app)
    return deleted
