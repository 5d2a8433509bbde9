"""Manual promotion: re-promote an app from the Prefect UI or CLI without a fresh approval."""

from __future__ import annotations

from uuid import UUID

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from promoter.approval import Action, Mode
from promoter.errors import PromoterError
from promoter.flows.promotion import SOURCE, promote
from promoter.manual import manual_decision, requester
from promoter.outcome import SiteOutcome
from promoter.prefect_api import name_at_start
from promoter.settings import current_settings
from promoter.tasks import run, site


@flow(name="promote-app", flow_run_name=name_at_start("promote-app"), timeout_seconds=6 * 3600)
async def promote_app(
    app_id: UUID,
    sites: list[str] | None = None,
    streams: list[str] | None = None,
    mode: Mode | None = None,
    requested_by: str | None = None,
    force: bool = False,
) -> list[SiteOutcome]:
    """Promote the source app ``app_id`` now, to ``sites``/``streams`` (default: the app's own properties).

    Each run is a new request: running it twice promotes twice (Overwrite replaces the same
    target apps again; Duplicate adds copies). The source app is neither unpublished nor stripped.
    ``requested_by`` names who asks (the CLI fills in its OS account and host); a run started
    without it is recorded as started from the Prefect UI or API. ``force``: Overwrite replaces
    target apps changed by hand since qs-promoter placed them, which the drift guard would hold.
    """
    settings = current_settings()
    who = requester(requested_by, flow_run.get_name())
    get_run_logger().info("manual promotion of %s requested by %s", app_id, who)
    lock = {run.app_lock(app_id): 1}
    await run.ensure_limits(lock)
    async with run.holding(lock):
        app = await site.read_app(SOURCE, app_id)
        decision = manual_decision(
            app, settings, sites=sites, streams=streams, mode=mode, requested_by=who, force=force
        )
        if decision.action is not Action.PROMOTE:
            get_run_logger().error("%s", decision.reason)
            raise PromoterError(f"nothing to promote: {decision.reason}")
        return await promote(app, decision, settings, f"manual:{app_id}:{flow_run.get_id()}", approved=False)
