"""Alert a stream's approvers that an app was published there (the original's EmailAlertOnPublishTo)."""

from __future__ import annotations

from uuid import UUID

from prefect import flow

from promoter.flows.handle import handle_app_change
from promoter.prefect_api import name_at_start


@flow(name="alert-on-publish", flow_run_name=name_at_start("alert-on-publish"))
async def alert_on_publish(
    app_id: UUID, published_to: UUID | None = None, published_at: str | None = None
) -> str:
    """Email the approvers of the stream when it has EmailAlertOnPublishTo; once per publish.

    ``published_to`` and ``published_at`` are the stream and publishTime QRS showed when the publish
    was reported: with them, the alert goes out even if the app was unpublished or moved since.
    """
    return await handle_app_change(app_id, "published", published_to=published_to, published_at=published_at)
