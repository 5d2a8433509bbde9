"""A promotion an admin starts by hand (Prefect UI or CLI): targets from parameters, no approval needed.

Manual runs are the admin's own (whoever can start a deployment run is trusted with it), so
nobody's rights are checked; but every run records who started it, in the ledger, the artifact
and the run log: what the CLI says (its OS account and host), or that it came from the Prefect
UI or API without saying.
"""

from __future__ import annotations

from collections.abc import Sequence

from promoter.approval import Action, Decision, Mode, Target, read_request
from promoter.qrs.models import App
from promoter.settings import Settings

# The ledger keeps who asked in 520 characters; what we record stays well within.
_REQUESTER_LIMIT = 400


def cli_requester(named: str | None, account: str, host: str) -> str:
    """Who started a run from the command line: the OS account and host it ran as, and the name given.

    ``named`` (--requested-by) is whatever the admin typed, so the OS account and host are always
    recorded beside it.
    """
    started = f"{account} on {host} (qs-promoter CLI)"
    named = " ".join((named or "").split())
    return _clip(f"{named}, started by {started}" if named else started)


def requester(requested_by: str | None, flow_run_name: str | None) -> str:
    """Who started a manual run: its requested_by parameter, or the Prefect UI or API when it has none."""
    given = " ".join((requested_by or "").split())
    if given:
        return _clip(given)
    return f"the Prefect UI or API (flow run {flow_run_name or 'unknown'}; no requested_by given)"


def _clip(text: str) -> str:
    return text if len(text) <= _REQUESTER_LIMIT else text[: _REQUESTER_LIMIT - 1] + "…"


def manual_decision(
    app: App,
    settings: Settings,
    *,
    sites: Sequence[str] | None = None,
    streams: Sequence[str] | None = None,
    mode: Mode | None = None,
    requested_by: str,
    force: bool = False,
) -> Decision:
    """Promote ``app`` where the parameters say; what they leave out comes from the app's properties.

    A manual run re-promotes only: it neither unpublishes the app nor strips its properties,
    and it does not send the approval email (nobody approved anything). ``requested_by`` is
    who started the run (see ``requester``). ``force``: Overwrite replaces target apps changed by
    hand since qs-promoter placed them (see promoter.drift).
    """
    # The app's own PromoteToServer/PromoteToStream, whether or not an approval is set.
    from_properties = read_request(app, settings)
    known = {t.site: t for t in from_properties.targets}
    wanted_sites = list(sites) if sites else list(known)
    unknown = [s for s in wanted_sites if s not in settings.target_sites]
    who = requested_by
    if unknown:
        reason = (
            f"unknown target site(s) {', '.join(unknown)}; configured: {', '.join(settings.target_sites)}"
        )
        return Decision(Action.IGNORE, reason, "updated", approver=who, request="manual run")
    targets = []
    for site in wanted_sites:
        site_streams = tuple(streams) if streams else (known[site].streams if site in known else ())
        site_mode = mode or (known[site].mode if site in known else Mode.OVERWRITE)
        if site_streams:
            targets.append(Target(site, site_mode, site_streams, force))
    if not targets:
        reason = "no target site and stream given, and the app's PromoteToServer/PromoteToStream name none"
        return Decision(
            Action.IGNORE,
            reason,
            "updated",
            approver=who,
            problems=from_properties.problems,
            request="manual run",
        )
    versioned = settings.versioning.enabled and (
        settings.versioning.auto_version_all or from_properties.version_asked
    )
    sites_text = ", ".join(f"{t.site} ({t.mode.value})" for t in targets)
    forced = ", replacing target apps changed by hand (force)" if force else ""
    return Decision(
        Action.PROMOTE,
        f"manual promotion to {sites_text}{forced} requested by {who}",
        "updated",
        targets=tuple(targets),
        version=versioned,
        notify=settings.email.enabled,
        approver=who,
        request="manual run",
    )
