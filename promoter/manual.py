"""A promotion an admin starts by hand (Prefect UI or CLI): targets from parameters, no approval needed."""

from __future__ import annotations

from collections.abc import Sequence

from promoter.approval import Action, Decision, Mode, Target, decide
from promoter.qrs.models import App
from promoter.settings import Settings


def manual_decision(
    app: App,
    settings: Settings,
    *,
    sites: Sequence[str] | None = None,
    streams: Sequence[str] | None = None,
    mode: Mode | None = None,
    requested_by: str | None = None,
) -> Decision:
    """Promote ``app`` where the parameters say; what they leave out comes from the app's properties.

    A manual run re-promotes only: it neither unpublishes the app nor strips its properties,
    and it does not send the approval email (nobody approved anything).
    """
    from_properties = decide(app, "updated", settings)
    known = {t.site: t for t in from_properties.targets}
    wanted_sites = list(sites) if sites else list(known)
    unknown = [s for s in wanted_sites if s not in settings.target_sites]
    who = requested_by or "an administrator (manual run)"
    if unknown:
        reason = (
            f"unknown target site(s) {', '.join(unknown)}; configured: {', '.join(settings.target_sites)}"
        )
        return Decision(Action.IGNORE, reason, "updated", approver=who)
    targets = []
    for site in wanted_sites:
        site_streams = tuple(streams) if streams else (known[site].streams if site in known else ())
        site_mode = mode or (known[site].mode if site in known else Mode.OVERWRITE)
        if site_streams:
            targets.append(Target(site, site_mode, site_streams))
    if not targets:
        reason = "no target site and stream given, and the app's PromoteToServer/PromoteToStream name none"
        return Decision(Action.IGNORE, reason, "updated", approver=who, problems=from_properties.problems)
    versioned = settings.versioning.enabled and (
        settings.versioning.auto_version_all or from_properties.version
    )
    sites_text = ", ".join(f"{t.site} ({t.mode.value})" for t in targets)
    return Decision(
        Action.PROMOTE,
        f"manual promotion to {sites_text} requested by {who}",
        "updated",
        targets=tuple(targets),
        version=versioned,
        notify=settings.email.enabled,
        approver=who,
    )
