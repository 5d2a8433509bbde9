"""Alert a stream's approvers that an app was published there (the original's EmailAlertOnPublishTo)."""

from __future__ import annotations

from uuid import UUID

from prefect import flow

from promoter.flows.handle import handle_app_change


@flow(name="alert-on-publish", flow_run_name="alert-on-publish-{app_id}")
async def alert_on_publish(app_id: UUID) -> str:
    """Email the approvers of the app's stream when the stream has EmailAlertOnPublishTo; once per publish."""
    return await handle_app_change(app_id, "published")
