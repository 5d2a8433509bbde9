"""The flow the webhook starts for every app change: read the app, decide, check who asked, act once."""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.cache_policies import DEFAULT
from prefect.runtime import flow_run

from promoter.approval import Action, Decision, Trigger, approval_key, decide, notice_key
from promoter.authorization import AuthorizationResult, authorize
from promoter.errors import QrsNotFound
from promoter.flows.promotion import SOURCE, alert, deny, outdated, promote, refuse
from promoter.qrs.models import App, Stream
from promoter.settings import Settings, load_settings
from promoter.tasks import ledger, run, site


@flow(name="handle-app-change", flow_run_name="{trigger}-{app_id}", timeout_seconds=6 * 3600)
async def handle_app_change(app_id: UUID, trigger: Trigger = "updated", change_id: str | None = None) -> str:
    """Act on one change of an app on the source site, as the rules decide; returns the reason.

    Runs for the same app wait for each other, and each approval, reload or publish is acted
    on once (the ledger holds its key), however often QRS reports it.
    """
    settings = load_settings()
    log = get_run_logger()
    await run.ensure_limits({run.app_lock(app_id): 1})
    async with run.holding(run.app_lock(app_id)):
        try:
            # Persisted for this run: a retried run acts on the app as its first attempt read it,
            # even when that attempt got as far as deleting the published app (unpublish).
            app = await site.read_app.with_options(cache_policy=DEFAULT, persist_result=True)(SOURCE, app_id)
        except QrsNotFound:
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
            outcome = await act(decision, app, stream, settings, key)
        except BaseException as exc:
            await ledger.close_request(key, "failed", f"{type(exc).__name__}: {exc}")
            raise
        await ledger.close_request(key, outcome)
        return decision.reason


async def tag_for_reload(app: App, decision: Decision, settings: Settings) -> str:
    """Tag the app for promotion on reload, if whoever set PromoteOnReload may promote it."""
    allowed = await who_asked_may(app, decision, settings)
    if not allowed.allowed:
        mail_key = notice_key(app, decision, approval_key(app, settings), settings)
        await refuse(app, decision, settings, mail_key, allowed.reason)
        return f"not tagged: {allowed.reason}"
    await site.set_reload_tag(SOURCE, app.id, settings.properties.reload_tag, True)
    return decision.reason


async def act(decision: Decision, app: App, stream: Stream | None, settings: Settings, key: str) -> str:
    """Carry out one claimed decision; returns the outcome word the ledger keeps."""
    if decision.action is Action.ALERT_PUBLISH:
        assert stream is not None  # decide() alerts only with the app's stream read
        await alert(app, settings, key, settings.email.approvers_for(stream.id))
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
