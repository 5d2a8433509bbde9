"""What a promotion did on each site, and how that reads in the ledger, the email and the Prefect UI."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from promoter import mail
from promoter.approval import Target
from promoter.authorization import RequestKind
from promoter.ledger import Backup, SiteResult
from promoter.mail_headers import one_line
from promoter.planning import KnownTarget
from promoter.qrs.models import NULL_ID


@dataclass(frozen=True, slots=True)
class Placement:
    """The promoted app now lives in ``stream`` on the site as ``app_id``."""

    stream_id: UUID
    stream: str
    app_id: UUID
    action: mail.StreamAction  # "published", "replaced" or "copied"


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

    def for_mail(self, s3_version_id: str | None) -> mail.SiteResult:
        return mail.SiteResult(
            site=self.site,
            streams=tuple(mail.StreamOutcome(p.stream, str(p.app_id), p.action) for p in self.placements),
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


def artifact_rows(outcomes: list[SiteOutcome], s3_version_id: str | None) -> list[dict[str, Any]]:
    """One row per stream per site (and one per missing stream or failure) for the Prefect table.

    The Prefect UI renders each text cell of a table artifact as markdown, so stream names and
    failure texts (user input, QRS answers) go through markdown_text like the summary does.
    """
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        base = {"site": outcome.site, "mode": outcome.mode, "s3 version": s3_version_id or ""}
        for p in outcome.placements:
            rows.append(
                {
                    **base,
                    "stream": markdown_text(p.stream),
                    "result": p.action,
                    "target app id": str(p.app_id),
                }
            )
        for name in outcome.missing_streams:
            rows.append(
                {**base, "stream": markdown_text(name), "result": "stream missing", "target app id": ""}
            )
        for failure in outcome.failures:
            rows.append(
                {**base, "stream": "", "result": f"failed: {markdown_text(failure)}", "target app id": ""}
            )
        if not (outcome.placements or outcome.missing_streams or outcome.failures):
            rows.append({**base, "stream": "", "result": "nothing to do", "target app id": ""})
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


def asked_by(request: RequestKind | None) -> str:
    """How the person behind a request is introduced in the run list and the artifact."""
    return {
        "denial": "denied by",
        "promotion on reload": "set to promote on reload by",
        "manual run": "requested by",
    }.get(request or "approval", "approved by")


def summary_markdown(
    app_name: str, approver: str | None, reason: str, outcomes: list[SiteOutcome], *, by: str = "approved by"
) -> str:
    lines = [
        f"### {markdown_text(app_name)}",
        "",
        f"* {by}: {markdown_text(approver or 'unknown')}",
    ]
    lines.append(f"* decision: {markdown_text(reason)}")
    for outcome in outcomes:
        placed = ", ".join(f"{markdown_text(p.stream)} ({p.action})" for p in outcome.placements) or "nothing"
        lines.append(f"* {markdown_text(outcome.site)}: {outcome.status}: {placed}")
        lines.extend(f"  * {markdown_text(note)}" for note in (*outcome.notes, *outcome.failures))
    return "\n".join(lines)


def run_name(verb: str, app_name: str, approver: str | None, *, by: str = "approved by") -> str:
    """ "promote 'Sales' (approved by ACME\\jane)": what the flow-run list in the UI shows."""
    name = one_line(app_name)[:80]
    return f"{verb} '{name}'" + (f" ({by} {one_line(approver)[:120]})" if approver else "")
