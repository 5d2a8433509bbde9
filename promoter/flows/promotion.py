"""The steps of promoting, denying and alerting, composed from tasks; called inside a flow run.

They are plain async functions, not subflows, so that every task belongs to the flow run that
the webhook started: retrying that run in the Prefect UI returns the finished steps from their
persisted results and redoes only what failed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path

from prefect import get_run_logger

from promoter import mail_messages
from promoter.addresses import MailAddress, gather_addresses
from promoter.approval import Decision, Mode, Target
from promoter.authorization import parse_account
from promoter.errors import PromoterError
from promoter.flows.delivery import Delivery, can_receive, deliver
from promoter.mail_headers import one_line
from promoter.outcome import (
    SiteOutcome,
    artifact_description,
    artifact_rows,
    asked_by,
    failure_summary,
    hub_links,
    resumed,
    run_name,
    summary_markdown,
)
from promoter.provenance import Provenance, describe, upload_token
from promoter.qrs.models import App, qrs_now
from promoter.settings import Settings
from promoter.store.ledger import SiteResult
from promoter.tasks import ledger, lineage, run, site
from promoter.tasks.mail import IntendedTargetsEmail, send_email
from promoter.tasks.versioning import store_version

SOURCE = "source"


class PromotionFailed(PromoterError):
    """At least one target site failed; the others were promoted. Retry the run to finish it."""


async def app_summary(app: App, settings: Settings) -> mail_messages.AppSummary:
    return mail_messages.AppSummary(
        app_id=str(app.id),
        name=app.name,
        owner_name=app.owner.name or app.owner.account,
        stream_name=app.stream.name if app.stream else None,
        link=settings.source_site.hub_link(app.id),
    )


async def recipients(
    settings: Settings, app: App, approver: str | None, copy_approver: bool
) -> tuple[list[MailAddress], list[str]]:
    """The owner's email addresses, and with ``copy_approver`` the approver's, from their user
    attributes; and the warnings about what was skipped (given back: a plan has no run log).

    An attribute may hold several addresses, or none: what is not an address is skipped with a
    warning. A manual run names its requester in words, not a user: nobody more to read then.
    """
    attribute = f"user attribute {settings.email.owner_email_attribute!r}"
    owner = one_line(app.owner.account)
    sources = [(f"owner {owner} ({attribute})", await site.read_email(SOURCE, app.owner.id))]
    if copy_approver and approver and parse_account(approver):
        user = await site.read_user(SOURCE, approver)
        if user is not None and user.id != app.owner.id:
            who = f"approver {one_line(approver)} ({attribute})"
            sources.append((who, await site.read_email(SOURCE, user.id)))
    return gather_addresses(sources)


async def addresses(
    settings: Settings, app: App, approver: str | None, *, copy_approver: bool = True
) -> list[MailAddress]:
    """The addresses an email of this run goes to (``recipients``), its warnings in the run log.

    The emails the original sent (approval, denial, intended targets, results) went to the owner
    only: their callers pass ``settings.email.copy_approver``. A refusal or an outdated request is
    for whoever asked as much as for the owner, so those keep the approver. An empty list means
    the emails are not sent; it never fails the run.
    """
    found, warnings = await recipients(settings, app, approver, copy_approver)
    log = get_run_logger()
    for warning in warnings:
        log.warning("%s", warning)
    return found


async def promote(
    app: App, decision: Decision, settings: Settings, request_key: str, *, approved: bool = True
) -> list[SiteOutcome]:
    """Export once, version, deliver to every site in parallel, then unpublish or strip, and report.

    A site where none of the requested streams exist fails, so the source app is unpublished or
    stripped only when every requested site received it.

    ``approved`` is False for promote-on-reload and manual runs: no approval email then. The
    intended-targets email waits (email.intended_targets_wait_seconds): a promotion done by then
    sends one results email that carries it.
    """
    intended_email = IntendedTargetsEmail(request_key, settings.email.intended_targets_wait_seconds)
    try:
        promotion = await begin(app, decision, settings, request_key)
        told = await announce(promotion, intended_email, approved=approved)
        async with site.sharing_clients():  # one QRS client (TLS context, connections) per site
            versioned = await version(promotion)
            outcomes = await deliver_everywhere(promotion, versioned)
        failed = failure_summary(outcomes)
        await finish_source(promotion, complete=not failed)
        await report(promotion, told, versioned, outcomes, intended_email)
        await ledger.close_promotion(promotion.promotion_id, "failed" if failed else "done")
        if failed:
            raise PromotionFailed(f"promotion of {app.id} incomplete: {failed}")
        await run.discard_work(promotion.work)
        return outcomes
    finally:
        await intended_email.settle()  # a run that failed before its results email sends it now


@dataclass(frozen=True, slots=True)
class PromotionRun:
    """One promotion as its steps share it: the app, the decision, the settings, the request and
    the promotion's row in the ledger."""

    app: App
    decision: Decision
    settings: Settings
    request_key: str
    promotion_id: int

    @property
    def work(self) -> Path:
        """This request's work folder: the export, the version without data, the backups."""
        return self.settings.work_dir / upload_token(self.request_key, SOURCE)


@dataclass(frozen=True, slots=True)
class Announced:
    """What the approval and intended-targets emails said, for the results email to say again."""

    summary: mail_messages.AppSummary
    to: tuple[MailAddress, ...]
    intended: tuple[mail_messages.IntendedTarget, ...]


@dataclass(frozen=True, slots=True)
class Versioned:
    """Where this promotion's app (without data) is kept in S3; both None when it is not versioned."""

    s3_key: str | None = None
    version_id: str | None = None


async def begin(app: App, decision: Decision, settings: Settings, request_key: str) -> PromotionRun:
    """Name the run, log why it promotes, open the promotion in the ledger, and give each target
    site its concurrency limit."""
    log = get_run_logger()
    await run.label_run(run_name("promote", app.name, decision.approver, by=asked_by(decision.request)))
    log.info("%s", decision.reason)
    for problem in decision.problems:
        log.warning("%s", problem)
    promotion_id = await ledger.open_promotion(
        ledger.PromotionStart(
            request_key,
            app.id,
            app.name,
            approver=decision.approver,
            owner=app.owner.account,
            action=decision.action,
            trigger=decision.trigger,
            reason=decision.reason,
        )
    )
    await run.ensure_limits(
        {run.site_limit(t.site): settings.prefect.site_concurrency for t in decision.targets}
    )
    return PromotionRun(app, decision, settings, request_key, promotion_id)


async def announce(
    promotion: PromotionRun, intended_email: IntendedTargetsEmail, *, approved: bool
) -> Announced:
    """The approval email (not for promote-on-reload or a manual run), and the intended-targets
    email, held back until it is due."""
    app, decision, settings = promotion.app, promotion.decision, promotion.settings
    email = settings.email
    summary = await app_summary(app, settings)
    copy = email.copy_approver
    to = await addresses(settings, app, decision.approver, copy_approver=copy) if decision.notify else []
    if decision.notify and approved:
        await send_email(
            promotion.request_key,
            "approval",
            mail_messages.render_approval(
                summary, approver=decision.approver or "", sender=email.sender, to=to, subjects=email.subjects
            ),
        )
    intended = tuple(
        mail_messages.IntendedTarget(t.site, t.streams, t.mode.value.capitalize()) for t in decision.targets
    )
    if decision.notify:
        await intended_email.hold(
            mail_messages.render_intended_targets(
                summary, intended, sender=email.sender, to=to, subjects=email.subjects
            )
        )
    return Announced(summary, tuple(to), intended)


async def finish_source(promotion: PromotionRun, *, complete: bool) -> None:
    """Unpublish the source app or strip its promotion properties, once every site received it."""
    log = get_run_logger()
    app, decision, properties = promotion.app, promotion.decision, promotion.settings.properties
    if complete and decision.unpublish:
        await unpublish(app)
    elif complete and decision.strip_properties:
        await site.strip_properties(SOURCE, app.id, properties.promotion_properties())
        log.info("promotion properties removed from the source app")
    elif not complete and (decision.unpublish or decision.strip_properties):
        log.warning("the source app is left as it is until every site is done; retry this run")


async def report(
    promotion: PromotionRun,
    told: Announced,
    versioned: Versioned,
    outcomes: list[SiteOutcome],
    intended_email: IntendedTargetsEmail,
) -> None:
    """Tell the owner what went where (the results email), and leave the run's artifact."""
    app, decision, settings = promotion.app, promotion.decision, promotion.settings
    if decision.notify:
        await email_results(promotion, told, versioned, outcomes, intended_email)
    by = asked_by(decision.request)
    await run.report(
        f"promotion-{app.id}",
        artifact_rows(outcomes, versioned.version_id, hub_links(settings)),
        summary_markdown(
            app.name,
            decision.approver,
            decision.reason,
            outcomes,
            by=by,
            owner=told.summary.owner_name,
            s3_version_id=versioned.version_id,
            hub_link=hub_links(settings),
        ),
        artifact_description(app.name, outcomes, decision.approver, by=by),
    )


async def email_results(
    promotion: PromotionRun,
    told: Announced,
    versioned: Versioned,
    outcomes: list[SiteOutcome],
    intended_email: IntendedTargetsEmail,
) -> None:
    """The results email, which also lists the intended targets when their email has not gone yet."""
    email, to = promotion.settings.email, told.to
    if not email.copy_approver and any(o.held for o in outcomes):
        # A held site (drift guard) waits on the approver's say: told even when not copied in.
        to = tuple(await addresses(promotion.settings, promotion.app, promotion.decision.approver))
    results = [o.for_mail(versioned.version_id, hub_links(promotion.settings)) for o in outcomes]
    # Done before the intended-targets email was due: this one email says both.
    carried = await intended_email.carried_by_results()
    message = mail_messages.render_promotion_results(
        told.summary,
        results,
        sender=email.sender,
        to=to,
        s3_key=versioned.s3_key,
        s3_version_id=versioned.version_id,
        intended=told.intended if carried else None,
        subjects=email.subjects,
    )
    # An incomplete run tells the owner once; the run that completes it sends the results.
    kind = "results-incomplete" if failure_summary(outcomes) else "results"
    await send_email(promotion.request_key, kind, message, carries=("intended",) if carried else ())


async def deliver_everywhere(promotion: PromotionRun, versioned: Versioned) -> list[SiteOutcome]:
    """Export the app once and deliver it to every target site in parallel, in one pass over the bytes.

    The sites upload the export while it lands (site.exporting): each follows the file as it
    grows, so no site waits for the whole download, and a site whose upload fails starts again
    from the file without slowing the others. The sites' concurrency slots are taken in one request.
    """
    app, decision, settings = promotion.app, promotion.decision, promotion.settings
    provenance = Provenance(
        source_node=settings.source_site.host,
        source_app_id=str(app.id),
        approver=decision.approver or "",
        owner=app.owner.account,
        promoted_at=qrs_now(),
        s3_version_id=versioned.version_id,
    )
    exported = promotion.work / "app.qvf"
    delivery = Delivery(app, exported, describe(provenance), promotion.request_key, settings, promotion.work)
    # A new run of a request that failed before (a replayed notification) skips the sites
    # that attempt finished: Duplicate would otherwise add a second copy there.
    earlier = {r.site: r for r in await ledger.site_results(promotion.promotion_id)}
    waiting = [t for t in decision.targets if getattr(earlier.get(t.site), "status", None) != "done"]
    async with (
        run.holding({run.site_limit(t.site): settings.prefect.site_concurrency for t in waiting}),
        site.exporting(SOURCE, app.id, exported),
    ):
        sites = (deliver_or_resume(promotion, t, delivery, earlier.get(t.site)) for t in decision.targets)
        return list(await asyncio.gather(*sites))


async def deliver_or_resume(
    promotion: PromotionRun, target: Target, delivery: Delivery, before: SiteResult | None
) -> SiteOutcome:
    """One site: reported again when an earlier attempt of this request finished it, else
    delivered and recorded in the ledger."""
    if before is not None and before.status == "done":
        known = await ledger.known_targets(promotion.app.id, target.site)
        get_run_logger().info(
            "%s: promoted by an earlier attempt of this request; not promoted again", target.site
        )
        return resumed(target, before, known)
    outcome = await deliver(target, delivery)
    if before is not None and before.backups:
        # The first backup of an app is the one from before this promotion: a rollback wants it.
        outcome = replace(outcome, backups=before.backups + outcome.backups)
    await ledger.record_site(promotion.promotion_id, promotion.app.id, outcome)
    return outcome


async def version(promotion: PromotionRun) -> Versioned:
    """The S3 key and version id of this promotion's app without data, stored once per request.

    Only when some target site has one of the requested streams (the original versions nothing
    when nothing is promoted), and before any site receives the app, because each target app's
    description names the version. A new run of a request that failed before keeps the version
    that attempt stored (the sites it finished already name it), so a retry never stores a second
    one; if that attempt stored none because no stream existed, it is stored once one does.
    """
    log = get_run_logger()
    app, decision, settings = promotion.app, promotion.decision, promotion.settings
    request_key = promotion.request_key
    recorded = await ledger.recorded_version(request_key)
    if recorded is not None or not decision.version:
        return Versioned(*recorded) if recorded else Versioned()
    receiving = await asyncio.gather(*(can_receive(target, app.name) for target in decision.targets))
    if not any(receiving):
        log.warning("not versioned in S3: none of the requested streams exist on any target site")
        return Versioned()
    without_data = promotion.work / "app-without-data.qvf"
    await site.export_app(SOURCE, app.id, without_data, skip_data=True)
    metadata = {
        "source-site": settings.source_site.host,
        "approver": decision.approver or "",
        "request": request_key,
    }
    # The owner's copy from an earlier cycle's unpublish joins the S3 history of the app it continues.
    history = await lineage.lineage_of(app.id, app.name)
    stored = await store_version(
        without_data, app.id, app.name, metadata, history.root_app_id, history.root_app_name
    )
    await ledger.record_version(promotion.promotion_id, stored.key, stored.version_id)
    log.info("versioned in S3 as %s, version %s", stored.key, stored.version_id)
    if history.is_copy:
        log.info("the app continues app %s: one more version of that app's S3 history", history.root_app_id)
    return Versioned(stored.key, stored.version_id)


async def unpublish(app: App) -> None:
    """Give the owner a verified unpublished copy, then delete the published app (as the original)."""
    log = get_run_logger()
    # A new run after a failed delete finds the copy the earlier one gave the owner, not a second.
    earlier = tuple(await lineage.copies_of(app.id))
    copy = await site.return_copy_to_owner(SOURCE, app.id, app.owner.id, earlier)
    log.info("copy %s now belongs to %s", copy.id, app.owner.account)
    # Recorded before the delete, so a crash in between cannot leave a copy whose next approval
    # starts a new S3 history and forgets the targets; a retried run records the same again.
    continued = await lineage.continue_lineage(copy.id, app.id, app.name)
    log.info("copy %s continues app %s (lineage root %s)", copy.id, app.id, continued.root_app_id)
    await site.delete_app(SOURCE, app.id)
    log.info("published app %s deleted from stream %s", app.id, app.stream.name if app.stream else "?")


async def deny(app: App, decision: Decision, settings: Settings, request_key: str) -> None:
    """Tell the owner, then unpublish the app or strip its promotion properties."""
    log = get_run_logger()
    await run.label_run(run_name("deny", app.name, decision.approver, by=asked_by(decision.request)))
    log.info("%s", decision.reason)
    if decision.notify:
        summary = await app_summary(app, settings)
        email = settings.email
        to = await addresses(settings, app, decision.approver, copy_approver=email.copy_approver)
        message = mail_messages.render_denial(
            summary, approver=decision.approver or "", sender=email.sender, to=to, subjects=email.subjects
        )
        await send_email(request_key, "denial", message)
    if decision.unpublish:
        await unpublish(app)
    elif decision.strip_properties:
        await site.strip_properties(SOURCE, app.id, settings.properties.promotion_properties())


async def refuse(app: App, decision: Decision, settings: Settings, mail_key: str, reason: str) -> None:
    """A request by someone not allowed to ask for it: nothing changes; whoever asked and the owner are told.

    ``mail_key`` is the request the email belongs to (sent once per key): see approval.notice_key.
    """
    log = get_run_logger()
    request = decision.request or "approval"
    await run.label_run(run_name("refuse", app.name, decision.approver, by=asked_by(request)))
    log.warning("%s not carried out: %s", request, reason)
    if not settings.email.enabled:
        return
    summary = await app_summary(app, settings)
    to = await addresses(settings, app, decision.approver)
    who, sender = decision.approver or "an unknown user", settings.email.sender
    if request == "denial" or request == "promotion on reload":
        message = mail_messages.render_not_carried_out(
            summary, request=request, asked_by=who, reason=reason, sender=sender, to=to
        )
    else:
        message = mail_messages.render_refused_approval(
            summary, approver=who, reason=reason, sender=sender, to=to
        )
    await send_email(mail_key, "refused", message)


async def outdated(app: App, decision: Decision, settings: Settings, mail_key: str) -> None:
    """Targets changed after the approval (or PromoteOnReload) was set: nothing moves; the owner is told."""
    log = get_run_logger()
    request = "promotion on reload" if decision.request == "promotion on reload" else "approval"
    await run.label_run(run_name("outdated", app.name, decision.approver, by=asked_by(request)))
    log.warning("%s not carried out: %s", request, decision.reason)
    if not decision.notify:
        return
    summary = await app_summary(app, settings)
    to = await addresses(settings, app, decision.approver)
    message = mail_messages.render_not_carried_out(
        summary,
        request=request,
        asked_by=decision.approver or "an unknown user",
        reason=decision.reason,
        outdated=True,
        sender=settings.email.sender,
        to=to,
    )
    await send_email(mail_key, "outdated", message)


async def alert(
    app: App, settings: Settings, request_key: str, approvers: list[str], *, since: str = ""
) -> None:
    """Email the stream's approvers that an app was published there for their review.

    ``app`` is the app as the publish left it (see handle.as_published); ``since`` says how it
    moved on before this alert, if it did. ``approvers`` are the entries of stream_approvers (or
    its CSV): each may hold several addresses; what is not an address is skipped with a warning.
    """
    log = get_run_logger()
    stream = one_line(app.stream.name) if app.stream else "?"
    source = f"stream_approvers of stream {stream}"
    found, warnings = gather_addresses([(source, entry) for entry in approvers])
    for warning in warnings:
        log.warning("%s", warning)
    summary = await app_summary(app, settings)
    email = settings.email
    message = mail_messages.render_publish_alert(
        summary, sender=email.sender, to=found, since=since, subjects=email.subjects
    )
    await send_email(request_key, "publish-alert", message)


__all__ = [
    "SOURCE",
    "Mode",
    "PromotionFailed",
    "alert",
    "deliver",
    "deny",
    "outdated",
    "promote",
    "refuse",
    "unpublish",
]
