"""See a promotion before it runs: what an approval of an app would do now, and how that reads.

Pure: the plan-promotion flow and `qs-promoter plan` read the app, the target sites and the
ledger with the planning step a promotion itself runs (flows/delivery.plan_for_site), and this
module puts the answers together the way the promotion would act on them (promotion.promote and
promotion.version: the S3 version only when some site can receive the app, the source app
unpublished or stripped only when every site succeeds) and renders them: text for the terminal,
markdown for a Prefect artifact. Names are user input: the text shows them on one line without
control characters (no terminal escapes), the markdown shows them literally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from uuid import UUID

from promoter import mail_messages
from promoter.addresses import MailAddress
from promoter.approval import Action, Decision, Mode, Target
from promoter.authorization import AuthorizationResult
from promoter.drift import GO_AHEAD, DriftVerdict
from promoter.mail_headers import one_line
from promoter.outcome import asked_by, markdown_text
from promoter.planning import SitePlan, StreamRef
from promoter.settings import Settings
from promoter.versioning import object_key

# What each way of choosing a replaced app means, in an admin's words.
MATCHED_BY = {
    "ledger": "by recorded identity (the app this one became there before)",
    "name": "by name (first promotion into this stream: every published app of that name)",
}
# A manual promotion is the admin's own: promote-app checks nobody's Qlik rights.
MANUAL_ALLOWED = "a manual promotion is the admin's own: nobody's Qlik rights are checked"

# How a renderer shows user-typed text: one_line for the terminal, markdown_text for the artifact.
Show = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class PlannedSite:
    """One target site's plan, or why the site could not be read (then ``plan`` is None)."""

    target: Target
    plan: SitePlan | None = None
    unreadable: str = ""
    guard: DriftVerdict = GO_AHEAD  # the drift guard on what the plan would replace

    @property
    def failure(self) -> str | None:
        """Why the promotion would fail on this site (a hold of the drift guard too), or None."""
        if self.plan is None:
            return f"{self.target.site} could not be read: {self.unreadable}"
        if self.plan.failure is None and self.guard.verdict == "held":
            return self.guard.reason
        return self.plan.failure

    @property
    def can_receive(self) -> bool:
        """As promotion.version counts it: a site that cannot be read counts as able (a held one too:
        the version is stored before the site is judged)."""
        return self.plan is None or self.plan.failure is None

    @property
    def streams_found(self) -> tuple[StreamRef, ...]:
        if self.plan is None:
            return ()
        found = [r.stream for r in self.plan.replace] + list(self.plan.fresh_streams)
        return tuple(dict.fromkeys(found))

    def as_result(self) -> mail_messages.SiteReport:
        """The site as the results email would report it if it went as planned."""
        if self.failure is not None or self.plan is None:
            return mail_messages.SiteReport(self.target.site, failures=(self.failure or "",))
        plan = self.plan
        streams = [
            mail_messages.StreamOutcome(r.stream.name, str(r.app_id), "replaced") for r in plan.replace
        ]
        if plan.publish_upload_to is not None:
            streams.append(mail_messages.StreamOutcome(plan.publish_upload_to.name, "(new)", "published"))
        streams += [mail_messages.StreamOutcome(s.name, "(new)", "copied") for s in plan.copy_to]
        return mail_messages.SiteReport(self.target.site, tuple(streams), plan.streams_missing)


@dataclass(frozen=True, slots=True)
class PlannedEmail:
    """One email the promotion would send: its kind, its subject (as rendered now) and recipients."""

    kind: str
    subject: str
    recipients: tuple[str, ...]
    # Sent only when the promotion is still going after this many seconds; a quicker one puts it
    # in the results email (email.intended_targets_wait_seconds). None: sent whatever happens.
    only_after_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class PromotionPlan:
    """What carrying out the app's request would do now; nothing was changed to find out."""

    app_id: UUID
    app_name: str
    owner: str
    request: str  # "approval", "manual promotion", "promotion on reload", "denial"
    action: Action
    reason: str
    asked_by: str | None
    problems: tuple[str, ...]
    sites: tuple[PlannedSite, ...]
    allowed: bool | None  # None: nothing would be carried out, so nobody's rights are asked
    allowed_reason: str
    s3_key: str | None
    s3_note: str
    emails: tuple[PlannedEmail, ...]
    email_warnings: tuple[str, ...]
    unpublish: bool
    strip_properties: bool
    backup_before_overwrite: bool
    manual_because: str = ""  # why a manual promotion was planned, when it was
    asked_by_words: str = "asked by"  # "approved by", "requested by", ...

    @property
    def promotes(self) -> bool:
        return self.action in (Action.PROMOTE, Action.PROMOTE_ON_RELOAD) and self.allowed is not False

    @property
    def failing_sites(self) -> tuple[str, ...]:
        return tuple(s.target.site for s in self.sites if s.failure is not None)

    @property
    def unpublishes(self) -> bool:
        """Whether the source app would be unpublished (the owner gets an unpublished copy)."""
        return self._source_changes and self.unpublish

    @property
    def strips(self) -> bool:
        return self._source_changes and not self.unpublish and self.strip_properties

    @property
    def _source_changes(self) -> bool:
        if self.allowed is False:
            return False
        if self.action is Action.DENY:
            return True
        return self.promotes and not self.failing_sites

    @property
    def source_after(self) -> str:
        """What becomes of the source app, in words."""
        if self.unpublishes:
            return "unpublished: the owner gets an unpublished copy, the published app is deleted"
        if self.strips:
            return "stays published; its promotion properties are removed"
        if (self.unpublish or self.strip_properties) and self.promotes and self.failing_sites:
            failing = ", ".join(self.failing_sites)
            return f"left as it is: the promotion would fail on {failing} (it moves only when all succeed)"
        return "left as it is"


def copies_approver(decision: Decision, allowed: bool | None, settings: Settings) -> bool:
    """Whether the emails of this outcome go to the approver too (promotion.addresses' ``copy_approver``).

    Approval, denial, intended-targets and results emails follow ``email.copy_approver``; a refusal
    or an outdated request is for whoever asked as much as for the owner.
    """
    carried_out = decision.action in (Action.PROMOTE, Action.PROMOTE_ON_RELOAD, Action.DENY)
    return settings.email.copy_approver if carried_out and allowed is not False else True


def compose_plan(
    decision: Decision,
    sites: Sequence[PlannedSite],
    *,
    summary: mail_messages.AppSummary,
    owner: str,
    settings: Settings,
    request: str,
    authorization: AuthorizationResult | None,
    lineage_root: tuple[UUID, str],
    recipients: Sequence[MailAddress],
    email_warnings: Sequence[str] = (),
    manual_because: str = "",
) -> PromotionPlan:
    """The plan of ``decision`` for the app ``summary`` names, given what was read.

    ``sites`` are the target sites planned by the promotion's own planning step; ``authorization``
    is whether who asked may (None when nothing would be carried out); ``lineage_root`` is the
    root app id and name whose S3 key every approval cycle of the app shares; ``recipients`` are
    the addresses the emails of this outcome go to (see ``copies_approver``).
    """
    allowed = None if authorization is None else authorization.allowed
    promotes = decision.promotes and allowed is not False
    s3_key, s3_note = None, "no promotion, so nothing is versioned"
    if promotes and not decision.version:
        s3_note = "not versioned in S3 (versioning is off, or PromotionS3Versioning is not True)"
    elif promotes and not any(s.can_receive for s in sites):
        s3_note = "not versioned in S3: none of the requested streams exist on any target site"
    elif promotes:
        s3_key = object_key(settings.versioning.prefix, lineage_root[0], lineage_root[1])
        root = lineage_root[0]
        continued = str(root) != summary.app_id
        continues = f" (continues app {root}: one more version of its history)" if continued else ""
        s3_note = f"a new version of s3://{settings.versioning.bucket}/{s3_key}{continues}"
    emails = _emails(decision, sites, summary, settings, allowed, authorization, recipients)
    return PromotionPlan(
        app_id=UUID(summary.app_id),
        app_name=summary.name,
        owner=owner,
        request=request,
        action=decision.action,
        reason=decision.reason,
        asked_by=decision.approver,
        problems=decision.problems,
        sites=tuple(sites),
        allowed=allowed,
        allowed_reason=authorization.reason if authorization else "nothing would be carried out",
        s3_key=s3_key,
        s3_note=s3_note,
        emails=emails,
        email_warnings=tuple(email_warnings),
        unpublish=decision.unpublish,
        strip_properties=decision.strip_properties,
        backup_before_overwrite=settings.versioning.enabled and settings.versioning.backup_before_overwrite,
        manual_because=manual_because,
        asked_by_words=asked_by(decision.request),
    )


def _emails(
    decision: Decision,
    sites: Sequence[PlannedSite],
    summary: mail_messages.AppSummary,
    settings: Settings,
    allowed: bool | None,
    authorization: AuthorizationResult | None,
    recipients: Sequence[MailAddress],
) -> tuple[PlannedEmail, ...]:
    """The emails promotion.promote, deny, refuse or outdated would send, as each renders them now."""
    email = settings.email
    sender, to, subjects = email.sender, list(recipients), email.subjects
    who = decision.approver or "an unknown user"
    messages: list[tuple[str, EmailMessage]] = []
    if allowed is False:
        if not email.enabled:
            return ()
        reason = authorization.reason if authorization else ""
        request = decision.request or "approval"
        if request == "denial" or request == "promotion on reload":
            refusal = mail_messages.render_not_carried_out(
                summary, request=request, asked_by=who, reason=reason, sender=sender, to=to
            )
        else:
            refusal = mail_messages.render_refused_approval(
                summary, approver=who, reason=reason, sender=sender, to=to
            )
        messages.append(("refusal", refusal))
    elif decision.action is Action.OUTDATED and decision.notify:
        request = "promotion on reload" if decision.request == "promotion on reload" else "approval"
        notice = mail_messages.render_not_carried_out(
            summary,
            request=request,
            asked_by=who,
            reason=decision.reason,
            outdated=True,
            sender=sender,
            to=to,
        )
        messages.append(("outdated", notice))
    elif decision.action is Action.DENY and decision.notify:
        approver = decision.approver or ""
        denial = mail_messages.render_denial(
            summary, approver=approver, sender=sender, to=to, subjects=subjects
        )
        messages.append(("denial", denial))
    elif decision.promotes and decision.notify:
        if decision.action is Action.PROMOTE and decision.request == "approval":
            approver = decision.approver or ""
            approval = mail_messages.render_approval(
                summary, approver=approver, sender=sender, to=to, subjects=subjects
            )
            messages.append(("approval", approval))
        intended = [mail_messages.IntendedTarget(t.site, t.streams, _mode(t.mode)) for t in decision.targets]
        targets = mail_messages.render_intended_targets(
            summary, intended, sender=sender, to=to, subjects=subjects
        )
        messages.append(("intended targets", targets))
        # The results subject says whether every site succeeded: as planned now.
        results = [s.as_result() for s in sites]
        outcome = mail_messages.render_promotion_results(
            summary, results, sender=sender, to=to, subjects=subjects
        )
        messages.append(("results", outcome))
    wait = email.intended_targets_wait_seconds or None
    return tuple(
        PlannedEmail(
            kind,
            str(message["Subject"]),
            tuple(a.addr_spec for a in to),
            only_after_seconds=wait if kind == "intended targets" else None,
        )
        for kind, message in messages
    )


def _held(email: PlannedEmail) -> str:
    if email.only_after_seconds is None:
        return ""
    return f" (only if the promotion takes over {email.only_after_seconds:g} s; else in the results email)"


def _yes(value: bool | None) -> str:
    return "not asked" if value is None else ("yes" if value else "no")


def _site_lines(site: PlannedSite, backup: bool, text: Show) -> list[str]:
    """One site's plan as lines (without the heading)."""
    plan = site.plan
    if plan is None:
        return [f"cannot be read now: {text(site.unreadable)}", "the promotion would fail here"]
    lines = [
        "streams found: " + (", ".join(text(s.name) for s in site.streams_found) or "none"),
        "streams missing: " + (", ".join(text(name) for name in plan.streams_missing) or "none"),
    ]
    for replacement in plan.replace:
        lines.append(
            f"replace app {replacement.app_id} in {text(replacement.stream.name)},"
            f" matched {MATCHED_BY[replacement.matched_by]}" + ("; backed up to S3 first" if backup else "")
        )
    if plan.publish_upload_to is not None:
        lines.append(f"publish the app (a fresh upload) to {text(plan.publish_upload_to.name)}")
    for stream in plan.copy_to:
        lines.append(f"publish a server-side copy of the upload to {text(stream.name)}")
    if plan.upload_is_temporary:
        lines.append("the upload only feeds the replaces and is deleted afterwards")
    for stale in plan.stale:
        lines.append(f"forget app {stale.app_id} (recorded for {text(stale.stream_name)}, no longer there)")
    lines += [text(note) for note in plan.notes]
    if site.guard.verdict == "warn":
        lines.append(text(site.guard.reason))  # names the app, the change, and "replaced anyway"
    if site.failure is not None:
        lines.append(f"the promotion would fail here: {text(site.failure)}")
    return lines


def _header(plan: PromotionPlan, text: Show) -> list[tuple[str, str]]:
    what = f"{plan.request} ({plan.action.value.replace('_', ' ')})"
    facts = [
        ("app", f"{text(plan.app_name)} ({plan.app_id}), owned by {text(plan.owner)}"),
        ("request", what),
    ]
    if plan.manual_because:
        facts.append(("why manual", text(plan.manual_because)))
    facts += [
        (plan.asked_by_words, text(plan.asked_by or "unknown")),
        ("decision", text(plan.reason)),
        ("allowed", f"{_yes(plan.allowed)}: {text(plan.allowed_reason)}"),
    ]
    facts += [("problem", text(p)) for p in plan.problems]
    if plan.allowed is False and plan.sites:
        facts.append(("note", "nothing would change; the sites below show what it would do if allowed"))
    return facts


def _footer(plan: PromotionPlan, text: Show) -> tuple[list[tuple[str, str]], list[str]]:
    facts = [
        ("S3 key", text(plan.s3_key or "none")),
        ("S3", text(plan.s3_note)),
        ("unpublish the source app", "yes" if plan.unpublishes else "no"),
        ("source app afterwards", text(plan.source_after)),
    ]
    emails = [
        f"{e.kind}: {text(e.subject)} to {', '.join(e.recipients) or 'nobody (not sent)'}" + _held(e)
        for e in plan.emails
    ]
    emails += [f"warning: {text(w)}" for w in plan.email_warnings]
    return facts, emails


def _mode(mode: Mode) -> str:
    return mode.value.capitalize()


def render_text(plan: PromotionPlan) -> str:
    """The plan for the terminal; user-typed names on one line, without control characters."""
    lines = [f"Plan for app {one_line(plan.app_name)} ({plan.app_id}): nothing has been changed.", ""]
    lines += [f"{name}: {value}" for name, value in _header(plan, one_line)]
    for site in plan.sites:
        lines += ["", f"site {site.target.site} ({_mode(site.target.mode)}):"]
        lines += [f"  {line}" for line in _site_lines(site, plan.backup_before_overwrite, one_line)]
    facts, emails = _footer(plan, one_line)
    lines.append("")
    lines += [f"{name}: {value}" for name, value in facts]
    lines.append("emails:" if emails else "emails: none")
    lines += [f"  {line}" for line in emails]
    return "\n".join(lines)


def render_markdown(plan: PromotionPlan) -> str:
    """The plan for a Prefect markdown artifact; user-typed names shown literally."""
    lines = [f"### Plan for {markdown_text(plan.app_name)}", "", "Nothing has been changed.", ""]
    lines += [f"* **{name}**: {value}" for name, value in _header(plan, markdown_text)]
    for site in plan.sites:
        lines += ["", f"#### Site {markdown_text(site.target.site)} ({_mode(site.target.mode)})", ""]
        lines += [f"* {line}" for line in _site_lines(site, plan.backup_before_overwrite, markdown_text)]
    facts, emails = _footer(plan, markdown_text)
    lines += ["", "#### Afterwards", ""]
    lines += [f"* **{name}**: {value}" for name, value in facts]
    lines += ["", "#### Emails", ""]
    lines += [f"* {line}" for line in emails] or ["* none"]
    return "\n".join(lines)
