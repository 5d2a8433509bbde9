"""The flow the webhook starts for every app change: read the app, decide, check who asked, act once."""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from promoter.approval import Action, Decision, approval_key, decide, notice_key
from promoter.authorization import AuthorizationResult, authorize
from promoter.errors import QrsNotFound
from promoter.flows.promotion import SOURCE, alert, deny, outdated, promote, refuse
from promoter.mail_headers import one_line
from promoter.notifications import ChangeKind
from promoter.prefect_api import name_at_start
from promoter.qrs.models import App, Stream, StreamCondensed, UserCondensed
from promoter.settings import Settings, current_settings
from promoter.tasks import ledger, run, site

# The run's name at its start: the one the webhook or reconcile created it with (the change and the
# app's name), else the change in words; the decision renames it later (run.label_run).
change_run = name_at_start("handle-app-change")


@flow(name="handle-app-change", flow_run_name=change_run, timeout_seconds=6 * 3600)
async def handle_app_change(
    app_id: UUID,
    trigger: ChangeKind = "updated",
    change_id: str | None = None,
    published_to: UUID | None = None,
    published_at: str | None = None,
) -> str:
    """Act on one change of an app on the source site, as the rules decide; returns the reason.

    Runs for the same app wait for each other, and each approval, reload or publish is acted
    on once (the ledger holds its key), however often QRS reports it. For a publish, the webhook
    passes the stream and publishTime it read when the notification came (``published_to``,
    ``published_at``): the alert is about that publish, whatever happened to the app since.
    """
    settings = current_settings()
    log = get_run_logger()
    lock = {run.app_lock(app_id): 1}
    await run.ensure_limits(lock)
    async with run.holding(lock):
        try:
            # Persisted: a retried run acts on the app as its first attempt read it.
            app: App | None = await site.read_app_once(SOURCE, app_id)
        except QrsNotFound:
            app = None
        since = ""
        if trigger == "published" and published_to is not None:
            app, since = await as_published(app_id, app, published_to, published_at)
        if app is None:
            log.info("app %s no longer exists on the source site: nothing to do", app_id)
            return "the app no longer exists"
        stream = (
            await site.read_stream(SOURCE, app.stream.id) if trigger == "published" and app.stream else None
        )
        decision = decide(app, trigger, settings, stream)
        for problem in decision.problems:
            log.warning("%s", problem)
        log.info("%s: %s", decision.action, decision.reason)
        if decision.action is Action.IGNORE:
            return decision.reason
        if decision.action is Action.UNTAG:
            await site.set_reload_tag(SOURCE, app.id, settings.properties.reload_tag, False)
            return decision.reason
        if decision.action is Action.TAG_FOR_RELOAD:
            return await tag_for_reload(app, decision, settings)

        key = approval_key(app, settings, trigger)
        if not await ledger.claim_request(key, str(flow_run.get_id()), app.id, decision.action.value):
            outcome = await ledger.request_outcome(key)
            log.info("already handled (%s): %s", outcome or "in progress", key)
            return f"already handled: {key}"
        try:
            outcome = await act(decision, app, stream, settings, key, since)
        except BaseException as exc:
            await ledger.close_request(key, "failed", f"{type(exc).__name__}: {exc}")
            raise
        await ledger.close_request(key, outcome)
        return decision.reason


async def as_published(
    app_id: UUID, app: App | None, stream_id: UUID, publish_time: str | None
) -> tuple[App | None, str]:
    """The app as the publish reported by the webhook left it, and how it moved on since ("" if not).

    An approval promoted within seconds of the publish may have unpublished the app (deleted it,
    its owner holds a copy with a new id) before this run reads it; an admin may have moved it to
    another stream. The alert is about the publish all the same: what can still be read (name,
    owner) is used, the stream and publishTime are the webhook's reading, and what is missing is
    logged. The stream itself is read again by the caller, for its properties and approvers.
    """
    if app is not None and app.published and app.stream is not None and app.stream.id == stream_id:
        return app, ""
    log = get_run_logger()
    stream = await site.read_stream(SOURCE, stream_id)
    published = {
        "published": True,
        "stream": StreamCondensed(id=stream_id, name=stream.name),
        "publish_time": publish_time,
    }
    if app is None:
        since = "the app no longer exists on the source site (unpublished or deleted)"
        log.warning(
            "app %s was published to stream %s and no longer exists: its name and owner cannot be"
            " read; the alert names it by its id",
            app_id,
            one_line(stream.name),
        )
        gone = {"id": app_id, "name": f"app {app_id}", "owner": UserCondensed(name="(unknown)")}
        return App.model_validate({**gone, **published}), since
    now = f"in stream {one_line(app.stream.name)}" if app.published and app.stream else "unpublished"
    since = f"the app is now {now}"
    log.warning(
        "app %s was published to stream %s and is now %s: alerting about that publish",
        app_id,
        one_line(stream.name),
        now,
    )
    return App.model_validate({**app.model_dump(), **published}), since


async def tag_for_reload(app: App, decision: Decision, settings: Settings) -> str:
    """Tag the app for promotion on reload, if whoever set PromoteOnReload may promote it."""
    allowed = await who_asked_may(app, decision, settings)
    if not allowed.allowed:
        mail_key = notice_key(app, decision, approval_key(app, settings), settings)
        await refuse(app, decision, settings, mail_key, allowed.reason)
        return f"not tagged: {allowed.reason}"
    await site.set_reload_tag(SOURCE, app.id, settings.properties.reload_tag, True)
    return decision.reason


async def act(
    decision: Decision, app: App, stream: Stream | None, settings: Settings, key: str, since: str = ""
) -> str:
    """Carry out one claimed decision; returns the outcome word the ledger keeps."""
    if decision.action is Action.ALERT_PUBLISH:
        assert stream is not None  # decide() alerts only with the app's stream read
        await alert(app, settings, key, settings.email.approvers_for(stream.id), since=since)
        return "alerted"
    if decision.remove_tag:
        await site.set_reload_tag(SOURCE, app.id, settings.properties.reload_tag, False)
    if decision.action is Action.OUTDATED:
        await outdated(app, decision, settings, notice_key(app, decision, key, settings))
        return "outdated"
    assert decision.needs_authorization, decision.action  # every other action was handled above
    allowed = await who_asked_may(app, decision, settings)
    if not allowed.allowed:
        await refuse(app, decision, settings, notice_key(app, decision, key, settings), allowed.reason)
        return "refused"
    if decision.action is Action.DENY:
        await deny(app, decision, settings, key)
        return "denied"
    if decision.action is Action.PROMOTE_ON_RELOAD:
        if decision.add_tag:
            await site.set_reload_tag(SOURCE, app.id, settings.properties.reload_tag, True)
        await promote(app, decision, settings, key, approved=False)
        return "promoted"
    await promote(app, decision, settings, key)
    return "promoted"


async def who_asked_may(app: App, decision: Decision, settings: Settings) -> AuthorizationResult:
    """Whether the user who set the deciding value may ask for this (the security rules, read from dev)."""
    user = await site.read_user(SOURCE, decision.approver) if decision.approver else None
    app_stream = await site.read_stream(SOURCE, app.stream.id) if app.stream else None
    return authorize(app, user, app_stream, settings, decision.request or "approval")
