"""Whether a target app is as qs-promoter left it: before an overwrite (drift guard) and after placing it.

Pure: the delivery reads the site and the ledger, and this module decides.

Drift guard. Right after placing an app, the delivery reads it back and the ledger keeps its
``modifiedDate`` and ``fileSize``. When a later Overwrite would replace that app and either
differs, someone changed it since (a hand edit, a new file; a reload on the target site alone is
not counted: ``only_reloaded``): with
``drift = "hold"`` the whole site is held (nothing placed there, the run fails saying which app
changed and when) until a run with ``force`` replaces it; ``"warn"`` replaces it and says so;
``"ignore"`` does not look. A target matched by name, or remembered by a ledger from before these
values were kept, has no record to compare with and is never held.

Verification. After a site's placements, every placed app is read back and compared with what was
meant: published in its stream, the name and description as set, the export's file size, and
(Overwrite) the same app id. What differs is the site's failure reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from promoter.errors import PromoterError
from promoter.planning import KnownTarget, SitePlan
from promoter.qrs.models import App, format_qrs_time

DriftPolicy = Literal["hold", "warn", "ignore"]


class NotAsPlaced(PromoterError):
    """A site answered every call of a promotion, but what it holds now is not what was meant."""


@dataclass(frozen=True, slots=True)
class DriftVerdict:
    """What the drift guard says about a replacement, or a whole site: go ahead, warn, or hold."""

    verdict: Literal["none", "warn", "held"]
    reason: str = ""  # empty for "none": nothing to say


GO_AHEAD = DriftVerdict("none")


def _when(moment: datetime | None) -> str:
    return format_qrs_time(moment) if moment is not None else "an unknown time"


# A reload ends by saving the app: its modifiedDate lands this soon after its lastReloadTime.
RELOAD_SAVE = timedelta(minutes=2)


def only_reloaded(known: KnownTarget, now: App) -> bool:
    """Whether the app's last change since it was placed is a reload on the target site.

    Target apps are reloaded on schedules (their data, not their design, changes): that is not a
    hand edit, and holding every nightly-reloaded app would make the guard useless. A change made
    after the reload (a later modifiedDate) is still drift.
    """
    placed, reloaded, modified = known.modified_date, now.last_reload_time, now.modified_date
    if placed is None or reloaded is None or modified is None or reloaded <= placed:
        return False
    return modified - reloaded <= RELOAD_SAVE


def changes_since_placed(known: KnownTarget, now: App) -> tuple[str, ...]:
    """What differs between the app now and the ledger's record of it right after it was placed.

    Empty when nothing differs, when the only change is a reload on the target site, or when the
    ledger recorded nothing to compare with.
    """
    if only_reloaded(known, now):
        return ()
    changes: list[str] = []
    if known.modified_date is not None and now.modified_date != known.modified_date:
        by = f" by {now.modified_by_user_name}" if now.modified_by_user_name else ""
        changes.append(
            f"modified {_when(now.modified_date)}{by} (qs-promoter left it at {_when(known.modified_date)})"
        )
    if known.file_size is not None and now.file_size != known.file_size:
        changes.append(f"file size {now.file_size} bytes (qs-promoter left {known.file_size})")
    return tuple(changes)


def judge_drift(known: KnownTarget, now: App, policy: DriftPolicy, *, force: bool = False) -> DriftVerdict:
    """Whether the Overwrite of ``now`` (the app ``known`` remembers) may go ahead, and what to say."""
    if policy == "ignore":
        return GO_AHEAD
    changes = changes_since_placed(known, now)
    if not changes:
        return GO_AHEAD
    app = f"app {now.id} ({now.name!r}) in stream {known.stream_name!r}"
    what = f"{app} changed since qs-promoter placed it: {'; '.join(changes)}"
    if force:
        return DriftVerdict("warn", f"{what}; replaced anyway (force)")
    if policy == "warn":
        return DriftVerdict("warn", f"{what}; replaced anyway (drift = warn)")
    return DriftVerdict("held", what)


def judge_site(plan: SitePlan, policy: DriftPolicy, *, force: bool = False) -> DriftVerdict:
    """The drift guard for one site's plan: held if any app it would replace is held, with every reason."""
    verdicts = [
        judge_drift(r.known, r.found, policy, force=force)
        for r in plan.replace
        if r.known is not None and r.found is not None
    ]
    held = [v.reason for v in verdicts if v.verdict == "held"]
    if held:
        return DriftVerdict(
            "held",
            f"held on {plan.site}, nothing was replaced there: {'; '.join(held)}. To replace it anyway, "
            "promote again with force (qs-promoter promote --force, or force on a promote-app run)",
        )
    warned = [v.reason for v in verdicts if v.verdict == "warn"]
    return DriftVerdict("warn", "; ".join(warned)) if warned else GO_AHEAD


@dataclass(frozen=True, slots=True)
class Meant:
    """What one placed app should look like on the site once its placement is done."""

    app_id: UUID
    stream_id: UUID
    stream: str
    name: str
    description: str
    file_size: int


def not_as_meant(meant: Meant, found: App | None) -> tuple[str, ...]:
    """How the app read back differs from what was meant; empty when it is as meant."""
    where = f"app {meant.app_id} in stream {meant.stream!r}"
    if found is None:
        return (f"{where} is gone",)
    problems: list[str] = []
    if not found.published or found.stream is None or found.stream.id != meant.stream_id:
        now = (found.stream.name or str(found.stream.id)) if found.stream is not None else None
        problems.append(f"{where} is not published there (published: {found.published}, stream: {now!r})")
    if found.name != meant.name:
        problems.append(f"{where} is named {found.name!r}, not {meant.name!r}")
    if (found.description or "") != meant.description:
        problems.append(f"{where} does not have the description qs-promoter set")
    if found.file_size != meant.file_size:
        problems.append(f"{where} has file size {found.file_size}, not the export's {meant.file_size} bytes")
    return tuple(problems)


def verify_placed(meant: Iterable[Meant], found: Iterable[App]) -> tuple[str, ...]:
    """Every difference between the apps meant and the apps read back (by id); empty when all are as meant."""
    by_id = {app.id: app for app in found}
    return tuple(problem for m in meant for problem in not_as_meant(m, by_id.get(m.app_id)))
