"""What a promotion did on each site, and how that reads in the ledger, the email and the Prefect UI."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from promoter import mail_messages
from promoter.approval import Target
from promoter.authorization import RequestKind
from promoter.errors import SettingsError
from promoter.mail_headers import clip, one_line
from promoter.planning import KnownTarget
from promoter.qrs.models import NULL_ID
from promoter.settings import Settings
from promoter.store.ledger import Backup, SiteResult

# (target site alias, app id) -> the app's link in that site's hub; None when it cannot be made.
HubLink = Callable[[str, UUID], str | None]


def hub_links(settings: Settings) -> HubLink:
    """Each target app's link in its own site's hub (SiteSettings.hub_link), for the email and the
    artifact: the promoted app where it now lives, never the source app the run unpublished."""

    def link(site: str, app_id: UUID) -> str | None:
        try:
            return settings.site(site).hub_link(app_id)
        except SettingsError:  # a site removed from the settings since (a resumed result)
            return None

    return link


@dataclass(frozen=True, slots=True)
class Placement:
    """The promoted app now lives in ``stream`` on the site as ``app_id``.

    ``modified_date`` and ``file_size`` are the app's as read back once the site was verified
    (None when it was not: the ledger then guards nothing against drift for it).
    """

    stream_id: UUID
    stream: str
    app_id: UUID
    action: mail_messages.StreamAction  # "published", "replaced" or "copied"
    modified_date: datetime | None = None
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class SiteOutcome:
    site: str
    mode: str
    placements: tuple[Placement, ...] = ()
    missing_streams: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    backups: tuple[Backup, ...] = ()
    forgotten: tuple[UUID, ...] = ()  # remembered targets found gone
    notes: tuple[str, ...] = field(default=())
    held: bool = False  # the drift guard stopped this site: a target was changed by hand

    @property
    def succeeded(self) -> bool:
        return not self.failures

    @property
    def problems(self) -> tuple[str, ...]:
        """What an admin must look at on this site (the ledger's error column): failures, missing streams."""
        missing = tuple(f"stream {name!r} does not exist on {self.site}" for name in self.missing_streams)
        return self.failures + missing

    @property
    def status(self) -> str:
        if self.failures:
            return "failed"
        return "done" if self.placements else "nothing to do"

    def for_mail(
        self, s3_version_id: str | None, hub_link: HubLink | None = None
    ) -> mail_messages.SiteReport:
        def placed(p: Placement) -> mail_messages.StreamOutcome:
            link = hub_link(self.site, p.app_id) if hub_link else None
            return mail_messages.StreamOutcome(p.stream, str(p.app_id), p.action, link)

        return mail_messages.SiteReport(
            site=self.site,
            streams=tuple(placed(p) for p in self.placements),
            missing_streams=self.missing_streams,
            failures=self.failures,
            s3_version_id=s3_version_id,
            backup_version_id=self.backups[-1].version_id if self.backups else None,
        )


def resumed(target: Target, done: SiteResult, known: list[KnownTarget]) -> SiteOutcome:
    """A site an earlier attempt of the same request finished, as the ledger recorded it.

    It is reported again, not promoted again. The ledger keeps the stream names and target app
    ids, not how each app got there; each is published in its stream, whatever the action was.
    """
    stream_ids = {k.app_id: k.stream_id for k in known}
    placements = tuple(
        Placement(stream_ids.get(app_id, NULL_ID), stream, app_id, "published")
        for stream, app_id in zip(done.streams, done.target_app_ids, strict=False)
    )
    placed = {stream.casefold() for stream in done.streams}
    missing = tuple(name for name in target.streams if name.casefold() not in placed)
    note = "promoted by an earlier attempt of this request; not promoted again"
    return SiteOutcome(target.site, done.mode, placements, missing, (), done.backups, (), (note,))


def artifact_rows(
    outcomes: list[SiteOutcome], s3_version_id: str | None, hub_link: HubLink | None = None
) -> list[dict[str, Any]]:
    """One row per stream per site (and one per missing stream or failure) for the Prefect table;
    a placed app's row links to it in its site's hub.

    The Prefect UI renders each text cell of a table artifact as markdown, so stream names and
    failure texts (user input, QRS answers) go through markdown_text like the summary does.
    """
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        base = {"site": markdown_text(outcome.site), "mode": outcome.mode, "s3 version": s3_version_id or ""}
        empty = {"target app id": "", "open": ""}
        for p in outcome.placements:
            link = hub_link(outcome.site, p.app_id) if hub_link else None
            rows.append(
                {
                    **base,
                    "stream": markdown_text(p.stream),
                    "result": p.action,
                    "target app id": str(p.app_id),
                    "open": markdown_link("open in hub", link),
                }
            )
        for name in outcome.missing_streams:
            rows.append({**base, "stream": markdown_text(name), "result": "stream missing", **empty})
        for failure in outcome.failures:
            rows.append({**base, "stream": "", "result": f"failed: {markdown_text(failure)}", **empty})
        if not (outcome.placements or outcome.missing_streams or outcome.failures):
            rows.append({**base, "stream": "", "result": "nothing to do", **empty})
    return rows


def failure_summary(outcomes: list[SiteOutcome]) -> str:
    failed = [o for o in outcomes if o.failures]
    return "; ".join(f"{o.site}: {', '.join(o.failures)}" for o in failed)


# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping them all also
# stops autolinks (https\://, www\., a\@b) and entities (\&lt;), not only links, HTML and emphasis.
_MARKDOWN_SPECIAL = str.maketrans({c: f"\\{c}" for c in string.punctuation})


def markdown_text(text: str) -> str:
    """User text (an app name) shown literally in a markdown artifact: no links, no HTML, one line."""
    return " ".join(text.split()).translate(_MARKDOWN_SPECIAL)


# A link is made only to a plain web address (a configured hub's host, a path of safe characters):
# nothing in it can close the markdown link or start another.
_WEB_LINK = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?", re.ASCII)


def markdown_link(text: str, url: str | None) -> str:
    """A markdown link with ``text`` (shown literally) to ``url``; empty when there is no plain web
    address to link to."""
    if url is None or not _WEB_LINK.fullmatch(url):
        return ""
    return f"[{markdown_text(text)}]({url})"


def asked_by(request: RequestKind | None) -> str:
    """How the person behind a request is introduced in the run list and the artifact."""
    return {
        "denial": "denied by",
        "promotion on reload": "set to promote on reload by",
        "manual run": "requested by",
    }.get(request or "approval", "approved by")


def artifact_heading(app_name: str, outcomes: list[SiteOutcome]) -> str:
    """'Sales KPIs' to test and prod: which app went where, as markdown (the names shown literally)."""
    sites = _listed([markdown_text(o.site) for o in outcomes]) or "no site"
    return f"'{markdown_text(clip(app_name, 100))}' to {sites}"


def artifact_description(
    app_name: str, outcomes: list[SiteOutcome], approver: str | None, *, by: str = "approved by"
) -> str:
    """The sentence the Prefect UI shows under each artifact's key (rendered as markdown)."""
    who = f", {by} {markdown_text(clip(approver, 120))}" if approver else ""
    return f"Promotion of {artifact_heading(app_name, outcomes)}{who}."


def summary_markdown(
    app_name: str,
    approver: str | None,
    reason: str,
    outcomes: list[SiteOutcome],
    *,
    by: str = "approved by",
    owner: str | None = None,
    s3_version_id: str | None = None,
    hub_link: HubLink | None = None,
) -> str:
    """The run's summary: app and sites, owner, approver, S3 version, decision, and per site each
    stream's app (linked in its hub when ``hub_link`` makes a plain web link)."""
    lines = [
        f"### {artifact_heading(app_name, outcomes)}",
        "",
        f"* owner: {markdown_text(owner or 'unknown')}",
        f"* {by}: {markdown_text(approver or 'unknown')}",
        f"* S3 version: {markdown_text(s3_version_id or 'none')}",
        f"* decision: {markdown_text(reason)}",
    ]
    for outcome in outcomes:

        def shown(p: Placement, site: str = outcome.site) -> str:
            text = f"{p.stream} ({p.action})"
            link = hub_link(site, p.app_id) if hub_link else None
            return markdown_link(text, link) or markdown_text(text)

        placed = ", ".join(shown(p) for p in outcome.placements) or "nothing"
        lines.append(f"* {markdown_text(outcome.site)}: {outcome.status}: {placed}")
        lines.extend(f"  * {markdown_text(note)}" for note in (*outcome.notes, *outcome.failures))
    return "\n".join(lines)


def _listed(words: list[str]) -> str:
    """'test', 'test and prod', 'test, prod and qa'."""
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)


# How a change reads in the run list: "publish of app 'Sales'", until the flow names the run itself.
CHANGE_WORDS: dict[str, str] = {
    "updated": "change to",
    "reloaded": "reload of",
    "published": "publish of",
}
# Room for the words and quotes within Prefect's run list, however long the app's name.
RUN_NAME_LIMIT = 100


def change_run_name(kind: str, app_id: str, app_name: str | None = None) -> str:
    """The flow run's name from its first second: the change in words and the app, by name when
    the relevance check read it (one line, cut), else by id. Display only: never parsed back."""
    words = CHANGE_WORDS.get(kind, "change to")
    if app_name and one_line(app_name):
        room = RUN_NAME_LIMIT - len(f"{words} app ''")
        return f"{words} app '{clip(app_name, room)}'"
    return f"{words} app {app_id}"


def named_by_us(name: str) -> bool:
    """Whether a run already has a name a person reads: every name we give has a space; the names
    Prefect makes up (``malachite-mongrel``) and its templates' (``published-<id>``) have none."""
    return " " in name.strip()


def run_name(verb: str, app_name: str, approver: str | None, *, by: str = "approved by") -> str:
    """ "promote 'Sales' (approved by ACME\\jane)": what the flow-run list in the UI shows."""
    name = one_line(app_name)[:80]
    return f"{verb} '{name}'" + (f" ({by} {one_line(approver)[:120]})" if approver else "")
