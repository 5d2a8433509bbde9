"""Decide what a changed app asks for: promote, deny, tag for reload, alert on publish, or nothing.

Pure rules, the original product's (seed-README), read from the app's custom properties:

- only published apps are considered;
- PromotionApproval containing "approve" approves, containing "den" denies, case-insensitive;
  anything else is reported and ignored;
- PromoteToServer "alias - Overwrite" / "alias - Duplicate", one value per site;
  PromoteToStream names the target streams; both are needed to promote;
- PromotionS3Versioning "True" (or versioning.auto_version_all) versions the app, only when
  versioning is enabled;
- after an approve or a deny the app is unpublished (unpublish.auto or PromotionUnpublish
  containing "true"), otherwise its promotion properties are stripped;
- PromoteOnReload "True" (promote_on_reload.enabled) with server and stream values tags the app;
  such an app leaves the approval, email and unpublish path and is promoted on every reload;
  the tag goes when the property goes.

Refinements, each one can only turn a promotion into "reported, nothing done": a value holding
both "approve" and "den", or a negated approval ("Disapprove", "not approved"), is unclear; a site
listed with both modes is left out; PromoteOnReload wins over PromotionApproval whatever their
order (the original's outcome depended on the order QRS listed them).

Who asked: the user who set the deciding value (the PromotionApproval value that reads as Approve
or Deny, or PromoteOnReload True; the last one set if several), from that value's own
modifiedByUserName, never the app's last modifier. The targets are theirs only as they stood when
they set it: a PromoteToServer or PromoteToStream value someone else changed later makes the
request outdated (nothing is promoted until the deciding value is set again). Whether that user
may ask at all is promoter.authorization's question, asked by the flow.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from promoter.authorization import RequestKind, changed_after, set_last, setter
from promoter.notifications import ChangeKind
from promoter.qrs.models import App, CustomPropertyValue, Stream, format_qrs_time
from promoter.settings import Settings

Verdict = Literal["approve", "deny", "none", "unclear"]

# An approval value is shown in a reason at most this long, quoted: it is user input.
_SHOWN = 60
_NEGATED_APPROVAL = re.compile(r"(dis|un|non|not)[\s_-]*approv")
_KEY_LIMIT = 200
# Late target values named in a reason, at most; the rest are counted.
_LATE_SHOWN = 3


class Action(StrEnum):
    IGNORE = "ignore"
    PROMOTE = "promote"
    DENY = "deny"
    TAG_FOR_RELOAD = "tag_for_reload"
    UNTAG = "untag"
    PROMOTE_ON_RELOAD = "promote_on_reload"
    ALERT_PUBLISH = "alert_publish"
    OUTDATED = "outdated"  # targets changed after the deciding value: the owner is told, nothing moves


class Mode(StrEnum):
    OVERWRITE = "overwrite"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Target:
    """One target site, how apps there are updated, and the stream names asked for.

    ``force``: an Overwrite replaces target apps changed by hand since they were placed (the drift
    guard would hold the site); only an admin's manual run sets it.
    """

    site: str
    mode: Mode
    streams: tuple[str, ...]
    force: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one changed app, and why, in words an admin can read."""

    action: Action
    reason: str
    trigger: ChangeKind
    targets: tuple[Target, ...] = ()
    version: bool = False  # store the source app (without data) in S3 after promoting
    unpublish: bool = False  # copy back to the owner and delete the published app
    strip_properties: bool = False  # remove the promotion properties from the source app
    add_tag: bool = False
    remove_tag: bool = False
    notify: bool = False  # the approval/denial/results emails apply (email is enabled)
    approver: str | None = None  # who set the deciding property, as DIRECTORY\userid
    problems: tuple[str, ...] = ()  # reported, not fatal
    request: RequestKind | None = None  # what the deciding value asks for

    @property
    def promotes(self) -> bool:
        return self.action in (Action.PROMOTE, Action.PROMOTE_ON_RELOAD)

    @property
    def needs_authorization(self) -> bool:
        """True when acting changes a site on the approver's say-so: who asked must be allowed."""
        return self.action in (Action.PROMOTE, Action.DENY, Action.TAG_FOR_RELOAD, Action.PROMOTE_ON_RELOAD)

    @property
    def streams(self) -> tuple[str, ...]:
        """Every stream name asked for, once, in the order given."""
        seen: dict[str, None] = {}
        for target in self.targets:
            seen.update(dict.fromkeys(target.streams))
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class Request:
    """The promotion properties of one app, parsed, with what was wrong with them."""

    verdict: Verdict
    targets: tuple[Target, ...]
    streams: tuple[str, ...]
    version_asked: bool
    unpublish_asked: bool
    reload_asked: bool
    approval: CustomPropertyValue | None  # the value that reads as the verdict (set last)
    reload: CustomPropertyValue | None  # the PromoteOnReload True value (set last)
    target_values: tuple[CustomPropertyValue, ...]  # PromoteToServer and PromoteToStream values
    problems: tuple[str, ...]


def show(value: str) -> str:
    """A user-typed value as it may appear in a reason: quoted, escaped, cut short."""
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


def _values(app: App, name: str) -> list[CustomPropertyValue]:
    return app.custom_property_values(name)


def _verdict(
    values: list[CustomPropertyValue], name: str, problems: list[str]
) -> tuple[Verdict, CustomPropertyValue | None]:
    """The verdict the values give, and the value that gives it (set last, if several do)."""
    readings: dict[Literal["approve", "deny"], list[CustomPropertyValue]] = {}
    for value in values:
        text = value.value.casefold()
        if "approve" in text and "den" in text:
            problems.append(f"{name} value {show(value.value)} says both approve and deny; ignored")
        elif "approve" in text and _NEGATED_APPROVAL.search(text):
            problems.append(f"{name} value {show(value.value)} reads as a refusal of approval; ignored")
        elif "approve" in text:
            readings.setdefault("approve", []).append(value)
        elif "den" in text:
            readings.setdefault("deny", []).append(value)
        else:
            problems.append(f"{name} value {show(value.value)} is neither Approve nor Deny; ignored")
    if len(readings) > 1:
        problems.append(f"{name} holds both Approve and Deny; nothing is done until one is removed")
        return "unclear", None
    if readings:
        verdict, deciding = readings.popitem()
        return verdict, set_last(deciding)
    return ("unclear" if values else "none"), None


def _outdated_reason(late: list[CustomPropertyValue], deciding: CustomPropertyValue, name: str) -> str:
    shown = [
        f"{v.definition.name} {show(v.value)} by {v.modified_by_user_name or 'an unknown user'}"
        for v in late[:_LATE_SHOWN]
    ]
    if len(late) > _LATE_SHOWN:
        shown.append(f"{len(late) - _LATE_SHOWN} more")
    who = deciding.modified_by_user_name or "an unknown user"
    return (
        f"the targets changed after {who} set {name} ({', '.join(shown)}); nothing is promoted"
        f" until {name} is set again"
    )


def _targets(
    values: list[str], streams: tuple[str, ...], settings: Settings, problems: list[str]
) -> tuple[Target, ...]:
    name = settings.properties.promote_to_server
    aliases = {alias.casefold(): alias for alias in settings.target_sites}
    modes: dict[str, set[Mode]] = {}
    for value in values:
        # The original split on "-"; the last one, so that an alias may contain a hyphen.
        alias_part, dash, mode_part = value.rpartition("-")
        if not dash or not alias_part.strip():
            problems.append(
                f"{name} value {show(value)} must look like 'alias - Overwrite' or 'alias - Duplicate'"
            )
            continue
        alias = aliases.get(alias_part.strip().casefold())
        if alias is None:
            known = ", ".join(sorted(settings.target_sites)) or "none configured"
            problems.append(f"{name} value {show(value)} names an unknown site (configured: {known})")
            continue
        found = {mode for mode in Mode if mode.value in mode_part.casefold()}
        if len(found) != 1:
            problems.append(f"{name} value {show(value)} must end in Overwrite or Duplicate")
            continue
        if alias in modes:
            problems.append(f"site {alias!r} is listed more than once in {name}")
        modes.setdefault(alias, set()).update(found)
    targets = []
    for alias, found in modes.items():
        if len(found) > 1:
            problems.append(f"site {alias!r} is asked for with both Overwrite and Duplicate; it is left out")
            continue
        targets.append(Target(alias, found.pop(), streams))
    return tuple(targets)


def _streams(values: list[str], name: str, problems: list[str]) -> tuple[str, ...]:
    # Stream names are matched by QRS case-insensitively, so "Sales" and "sales" are one stream.
    seen: dict[str, str] = {}
    for value in values:
        if not value.strip():
            problems.append(f"{name} has an empty value; ignored")
        else:
            seen.setdefault(value.casefold(), value)
    return tuple(seen.values())


def read_request(app: App, settings: Settings) -> Request:
    names = settings.properties
    problems: list[str] = []
    verdict, approval = _verdict(_values(app, names.promotion_approval), names.promotion_approval, problems)
    streams = _streams(app.custom_values(names.promote_to_stream), names.promote_to_stream, problems)
    server_values = app.custom_values(names.promote_to_server)
    targets = _targets(server_values, streams, settings, problems)
    versioning = app.custom_values(names.promotion_s3_versioning)
    version_asked = any(v.strip().casefold() == "true" for v in versioning)
    if versioning and not version_asked:
        problems.append(f"{names.promotion_s3_versioning} must be True to version the app")
    if version_asked and not settings.versioning.enabled:
        problems.append(f"{names.promotion_s3_versioning} is set but S3 versioning is disabled")
    reload_values = [v for v in _values(app, names.promote_on_reload) if v.value.strip().casefold() == "true"]
    reload_asked = bool(reload_values)
    if reload_asked and not settings.promote_on_reload.enabled:
        problems.append(f"{names.promote_on_reload} is set but promote-on-reload is disabled")
    return Request(
        verdict=verdict,
        targets=targets,
        streams=streams,
        version_asked=version_asked,
        unpublish_asked=any("true" in v.casefold() for v in app.custom_values(names.promotion_unpublish)),
        reload_asked=reload_asked,
        approval=approval,
        reload=set_last(reload_values) if reload_values else None,
        target_values=(*_values(app, names.promote_to_server), *_values(app, names.promote_to_stream)),
        problems=tuple(problems),
    )


def _missing(request: Request, settings: Settings) -> str | None:
    """Why the request cannot reach any stream, or None when it can."""
    names = settings.properties
    if not request.targets and not request.streams:
        return f"neither {names.promote_to_server} nor {names.promote_to_stream} has a usable value"
    if not request.targets:
        return f"{names.promote_to_server} has no usable value"
    if not request.streams:
        return f"{names.promote_to_stream} has no value, so there is nowhere to promote to"
    return None


def _version(request: Request, settings: Settings) -> bool:
    return settings.versioning.enabled and (settings.versioning.auto_version_all or request.version_asked)


def _reload_path(request: Request, trigger: ChangeKind, tagged: bool, settings: Settings) -> Decision:
    names = settings.properties
    problems = request.problems
    if request.verdict != "none":
        problems += (f"{names.promotion_approval} is ignored while {names.promote_on_reload} is True",)
    base = Decision(
        Action.IGNORE,
        "",
        trigger,
        approver=setter(request.reload),
        problems=problems,
        request="promotion on reload",
    )
    missing = _missing(request, settings)
    if missing is not None:
        return _with(base, reason=f"{names.promote_on_reload} is True but {missing}; not promoted on reload")
    assert request.reload is not None  # reload_asked
    late = changed_after(request.reload, request.target_values)
    if late:
        reason = _outdated_reason(late, request.reload, names.promote_on_reload)
        return _with(base, action=Action.OUTDATED, reason=reason, notify=settings.email.enabled)
    if trigger == "reloaded":
        return _with(
            base,
            action=Action.PROMOTE_ON_RELOAD,
            reason=f"reloaded with {names.promote_on_reload} True: promoted without approval",
            targets=request.targets,
            version=_version(request, settings),
            add_tag=not tagged,
        )
    if tagged:
        return _with(base, reason=f"tagged {names.reload_tag!r}: promoted on each reload, not on updates")
    return _with(
        base,
        action=Action.TAG_FOR_RELOAD,
        reason=f"{names.promote_on_reload} is True: tagged {names.reload_tag!r}, promoted on each reload",
        targets=request.targets,
        add_tag=True,
    )


def _approval_path(request: Request, trigger: ChangeKind, settings: Settings) -> Decision:
    names = settings.properties
    kind: RequestKind = "denial" if request.verdict == "deny" else "approval"
    base = Decision(
        Action.IGNORE, "", trigger, approver=setter(request.approval), problems=request.problems, request=kind
    )
    if request.verdict == "none":
        return _with(base, reason=f"{names.promotion_approval} has no value")
    if request.verdict == "unclear":
        return _with(base, reason=f"{names.promotion_approval} is neither a clear Approve nor Deny")
    if trigger != "updated":
        return _with(base, reason=f"a reload promotes only apps with {names.promote_on_reload} True")
    unpublish = settings.unpublish.auto or request.unpublish_asked
    after = "unpublished" if unpublish else "its promotion properties removed"
    if request.verdict == "deny":
        return _with(
            base,
            action=Action.DENY,
            reason=f"promotion denied; the app is {after}",
            unpublish=unpublish,
            strip_properties=not unpublish,
            notify=settings.email.enabled,
        )
    missing = _missing(request, settings)
    if missing is not None:
        return _with(base, reason=f"approved, but {missing}; nothing done")
    assert request.approval is not None  # the verdict is approve
    late = changed_after(request.approval, request.target_values)
    if late:
        reason = _outdated_reason(late, request.approval, names.promotion_approval)
        return _with(base, action=Action.OUTDATED, reason=reason, notify=settings.email.enabled)
    sites = ", ".join(f"{t.site} ({t.mode.value})" for t in request.targets)
    return _with(
        base,
        action=Action.PROMOTE,
        reason=f"approved for {sites}; afterwards the app is {after}",
        targets=request.targets,
        version=_version(request, settings),
        unpublish=unpublish,
        strip_properties=not unpublish,
        notify=settings.email.enabled,
    )


def _with(decision: Decision, **changes: object) -> Decision:
    values = {name: getattr(decision, name) for name in Decision.__dataclass_fields__}
    values.update(changes)
    return Decision(**values)  # type: ignore[arg-type]


def decide(app: App, trigger: ChangeKind, settings: Settings, stream: Stream | None = None) -> Decision:
    """What the rules ask for after ``trigger`` happened to ``app``; never raises on property values.

    ``stream`` is the app's stream read in full; only the "published" trigger uses it.
    """
    if trigger == "published":
        return decide_publish_alert(app, stream, settings)
    names = settings.properties
    tagged = settings.promote_on_reload.enabled and app.has_tag(names.reload_tag)
    if not app.published:
        if tagged:
            reason = f"the app is not published; tag {names.reload_tag!r} removed"
            return Decision(Action.UNTAG, reason, trigger, remove_tag=True)
        return Decision(Action.IGNORE, "the app is not published; only published apps are promoted", trigger)
    if not is_relevant(app, settings):
        return Decision(Action.IGNORE, "the app carries none of the promotion properties", trigger)
    request = read_request(app, settings)
    if settings.promote_on_reload.enabled and request.reload_asked:
        return _reload_path(request, trigger, tagged, settings)
    decision = _approval_path(request, trigger, settings)
    if not tagged:
        return decision
    # The tag stays only while PromoteOnReload is True; it goes along with whatever else is due.
    untag_reason = f"{names.promote_on_reload} is no longer True; tag {names.reload_tag!r} removed"
    if decision.action is Action.IGNORE:
        return _with(decision, action=Action.UNTAG, reason=untag_reason, remove_tag=True)
    return _with(decision, remove_tag=True, reason=f"{decision.reason}; {untag_reason}")


def decide_publish_alert(app: App, stream: Stream | None, settings: Settings) -> Decision:
    """Whether publishing ``app`` to ``stream`` alerts the stream's approvers (never a promotion).

    As in the original, the stream carrying EmailAlertOnPublishTo at all is what counts.
    """
    name = settings.properties.email_alert_on_publish_to
    trigger: ChangeKind = "published"
    if not settings.email.enabled:
        return Decision(Action.IGNORE, "email alerts are disabled", trigger)
    if not app.published or app.stream is None:
        return Decision(Action.IGNORE, "the app is not published", trigger)
    if stream is None or stream.id != app.stream.id:
        return Decision(Action.IGNORE, "the app's stream could not be read", trigger)
    if not stream.custom_property_values(name):
        return Decision(Action.IGNORE, f"the stream does not have {name}", trigger)
    if not settings.email.approvers_for(stream.id):
        reason = f"the stream has {name} but no approver addresses are configured for it"
        problem = f"no approver addresses for stream {stream.id}"
        return Decision(Action.IGNORE, reason, trigger, problems=(problem,))
    reason = f"published to a stream with {name}: its approvers are alerted"
    return Decision(Action.ALERT_PUBLISH, reason, trigger, approver=app.modified_by_user_name)


def is_relevant(app: App, settings: Settings) -> bool:
    """True when the app carries any of our properties or the reload tag (cheap pre-filter)."""
    names = settings.properties
    ours = {*names.promotion_properties(), names.promote_on_reload}
    return app.has_tag(names.reload_tag) or any(cp.definition.name in ours for cp in app.custom_properties)


def approval_key(app: App, settings: Settings, trigger: ChangeKind = "updated") -> str:
    """The identity of one request, so that the same approval is handled once.

    Our own writes (stripping, tagging, describing) change the app's modifiedDate, so it is never
    part of the key: an approval is the app id plus the PromotionApproval values' own ids and
    modifiedDates; a reload is the app id plus lastReloadTime; a publish, the publishTime and stream.
    """
    names = settings.properties
    if trigger == "reloaded":
        key = f"reload:{app.id}:{_time(app.last_reload_time)}"
    elif trigger == "published":
        stream = app.stream.id if app.stream is not None else "none"
        key = f"publish:{app.id}:{_time(app.publish_time)}:{stream}"
    else:
        approval = sorted(_values(app, names.promotion_approval), key=lambda v: str(v.id))
        if approval:
            key = f"approval:{app.id}:" + ",".join(f"{v.id}@{_time(v.modified_date)}" for v in approval)
        else:
            key = f"state:{app.id}:{_state_digest(app, settings)}"
    if len(key) > _KEY_LIMIT:
        kind, app_id, rest = key.split(":", 2)
        key = f"{kind}:{app_id}:{hashlib.sha256(rest.encode()).hexdigest()[:32]}"
    return key


def notice_key(app: App, decision: Decision, request_key: str, settings: Settings) -> str:
    """The key a refusal or an outdated request is emailed under (each key is emailed once).

    A request's own key, except for promotion on reload: that request stands until its properties
    change, so it is told about once per setting of them, not on every reload.
    """
    if decision.request != "promotion on reload":
        return request_key
    return f"on-reload:{app.id}:{_state_digest(app, settings, with_tag=False)}"


def _time(value: datetime | None) -> str:
    return format_qrs_time(value) if value is not None else "none"


def _state_digest(app: App, settings: Settings, *, with_tag: bool = True) -> str:
    """A digest of the promotion properties' values and the tag, for requests without an approval."""
    names = settings.properties
    ours = {*names.promotion_properties(), names.promote_on_reload}
    parts: Iterable[str] = sorted(
        f"{cp.definition.name}={cp.value}@{cp.id}@{_time(cp.modified_date)}"
        for cp in app.custom_properties
        if cp.definition.name in ours
    )
    text = "\n".join([*parts, f"tagged={app.has_tag(names.reload_tag)}" if with_tag else ""])
    return hashlib.sha256(text.encode()).hexdigest()[:32]
