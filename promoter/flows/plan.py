"""See before you promote: what an approval of an app would do now, found with reads only.

``build_plan`` reads the app, decides as handle-app-change (or, for an app without an approval,
as promote-app) would, asks whether who asked may, and plans each target site with the planning
step a delivery runs itself (delivery.plan_for_site). Nothing is written to a site or the
ledger. It is a plain async function, so `qs-promoter plan` runs it in-process without a Prefect
server; the plan-promotion flow runs it and leaves the plan as a markdown artifact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run

from promoter.approval import Action, Decision, Mode, Target, decide
from promoter.authorization import AuthorizationResult
from promoter.drift import DriftPolicy, judge_site
from promoter.errors import PromoterError
from promoter.flows.delivery import plan_for_site
from promoter.flows.handle import who_asked_may
from promoter.flows.promotion import SOURCE, app_summary, recipients
from promoter.mail_headers import one_line
from promoter.manual import manual_decision, requester
from promoter.prefect_api import name_at_start
from promoter.promotion_plan import (
    MANUAL_ALLOWED,
    PlannedSite,
    PromotionPlan,
    compose_plan,
    copies_approver,
    render_markdown,
    render_text,
)
from promoter.qrs.models import App
from promoter.settings import Settings, current_settings
from promoter.tasks import lineage, site


@flow(name="plan-promotion", flow_run_name=name_at_start("plan-promotion"), timeout_seconds=900)
async def plan_promotion(
    app_id: UUID,
    sites: list[str] | None = None,
    streams: list[str] | None = None,
    mode: Mode | None = None,
    requested_by: str | None = None,
) -> str:
    """Show what an approval of the source app ``app_id`` would do now, without changing anything.

    With ``sites``, ``streams`` or ``mode`` (as promote-app takes them), or for an app without an
    approval, the plan is of a manual promotion. The plan is the run's markdown artifact
    ``plan-<app id>`` and its result, as text.
    """
    settings = current_settings()
    who = requester(requested_by, flow_run.get_name())
    plan = await build_plan(app_id, settings, sites=sites, streams=streams, mode=mode, requested_by=who)
    log = get_run_logger()
    for warning in plan.email_warnings:
        log.warning("%s", warning)
    log.info("%s: %s (nothing changed)", plan.request, plan.reason)
    await acreate_markdown_artifact(
        markdown=render_markdown(plan),
        key=f"plan-{app_id}",
        description=f"What a promotion of {app_id} would do (nothing was changed)",
    )
    return render_text(plan)


async def build_plan(
    app_id: UUID,
    settings: Settings,
    *,
    sites: Sequence[str] | None = None,
    streams: Sequence[str] | None = None,
    mode: Mode | None = None,
    requested_by: str,
) -> PromotionPlan:
    """The plan of the app's request now (reads only); ``requested_by`` names who asks for a manual one."""
    app = await site.read_app(SOURCE, app_id)
    decision, request, manual_because = choose(
        app, settings, sites=sites, streams=streams, mode=mode, requested_by=requested_by
    )
    if decision.request == "manual run":
        authorization: AuthorizationResult | None = AuthorizationResult(True, MANUAL_ALLOWED)
    elif decision.needs_authorization:
        authorization = await who_asked_may(app, decision, settings)
    else:
        authorization = None
    planned: Sequence[PlannedSite] = ()
    if decision.promotes:
        drift = settings.overwrite.drift
        planned = await asyncio.gather(*(plan_target(target, app, drift) for target in decision.targets))
    history = await lineage.lineage_of(app.id, app.name)
    emailing = settings.email.enabled and decision.action is not Action.IGNORE
    allowed = authorization.allowed if authorization else None
    copy = copies_approver(decision, allowed, settings)
    found, warnings = await recipients(settings, app, decision.approver, copy) if emailing else ([], [])
    return compose_plan(
        decision,
        planned,
        summary=await app_summary(app, settings),
        owner=app.owner.account,
        settings=settings,
        request=request,
        authorization=authorization,
        lineage_root=(history.root_app_id, history.root_app_name),
        recipients=found,
        email_warnings=warnings,
        manual_because=manual_because,
    )


def choose(
    app: App,
    settings: Settings,
    *,
    sites: Sequence[str] | None,
    streams: Sequence[str] | None,
    mode: Mode | None,
    requested_by: str,
) -> tuple[Decision, str, str]:
    """The decision to plan, what kind of request it is, and why a manual promotion (or "").

    As handle-app-change decides on an update; for an app set to promote on reload, as its next
    reload would; with parameters, or for an app without an approval, as promote-app would.
    """
    names = settings.properties
    manual_because = ""
    if sites or streams or mode:
        manual_because = "sites, streams or a mode were given, as to `qs-promoter promote`"
    else:
        decision = decide(app, "updated", settings)
        if decision.request == "promotion on reload":
            return decide(app, "reloaded", settings), "promotion on reload (at the next reload)", ""
        if app.custom_values(names.promotion_approval):
            return decision, decision.request or "approval", ""
        manual_because = (
            f"the app has no {names.promotion_approval}: this is what a manual promotion (promote-app)"
            f" to its {names.promote_to_server}/{names.promote_to_stream} would do"
        )
    decision = manual_decision(
        app, settings, sites=sites, streams=streams, mode=mode, requested_by=requested_by
    )
    return decision, "manual promotion", manual_because


async def plan_target(target: Target, app: App, drift: DriftPolicy) -> PlannedSite:
    """One site's plan and the drift guard's verdict on it, as the delivery judges them; a site that
    cannot be read is reported, as a delivery there would fail."""
    try:
        async with site.connect(target.site) as qrs:
            plan = await plan_for_site(qrs, target, app)
            return PlannedSite(target, plan, guard=judge_site(plan, drift, force=target.force))
    except PromoterError as exc:
        return PlannedSite(target, unreadable=one_line(f"{type(exc).__name__}: {exc}")[:500])
