"""The ledger: what was handled, promoted, emailed and rolled back, what each source app became,
and which app each owner copy continues.

One SQLAlchemy Core schema on any URL (SQLite file by default, PostgreSQL when scaled out).
Every method is one short transaction, so one Ledger is shared by threads and tasks. Claims are
decided by the database (a unique key, or a conditional UPDATE), never by a read-then-write in
Python, so two workers racing for the same approval or email cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from promoter.planning import KnownTarget
from promoter.provenance import UploadSlot, new_upload_secret, upload_token
from promoter.store.database import ADDED_LATER, Store, UtcDateTime, metadata, now

FAILED = "failed"  # a handled change with this outcome may be claimed again
_NEVER_STALE = datetime(1753, 1, 1, tzinfo=UTC)


handled = sa.Table(
    "handled_changes",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("app_id", sa.Uuid, nullable=True, index=True),
    sa.Column("owner", sa.String(255), nullable=False),  # the run holding the claim
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("claimed_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("outcome", sa.String(32)),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)
promotions = sa.Table(
    "promotions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(255), nullable=False, unique=True),
    sa.Column("app_id", sa.Uuid, nullable=False, index=True),
    sa.Column("app_name", sa.String(255), nullable=False),
    sa.Column("approver", sa.String(520)),
    sa.Column("owner", sa.String(520)),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("s3_key", sa.String(1024)),
    sa.Column("s3_version_id", sa.String(1024)),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("status", sa.String(32), nullable=False, default="running"),
)
site_results = sa.Table(
    "site_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("promotion_id", sa.ForeignKey("promotions.id", ondelete="CASCADE"), nullable=False),
    sa.Column("site", sa.String(255), nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("streams", sa.JSON, nullable=False),
    sa.Column("target_app_ids", sa.JSON, nullable=False),
    sa.Column("backups", sa.JSON, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("recorded_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("promotion_id", "site"),
)
identities = sa.Table(
    "target_identities",
    metadata,
    sa.Column("source_app_id", sa.Uuid, primary_key=True),  # the lineage root of the source app
    sa.Column("site", sa.String(255), primary_key=True),
    sa.Column("target_app_id", sa.Uuid, primary_key=True),
    sa.Column("stream_id", sa.Uuid, nullable=False),
    sa.Column("stream_name", sa.String(255), nullable=False),
    sa.Column("remembered_at", UtcDateTime, nullable=False),
    # The target app as read back right after it was placed, for the drift guard (promoter.drift).
    # Added after the table: an existing ledger gets these columns, empty (see ADDED_LATER).
    sa.Column("placed_modified_date", UtcDateTime, nullable=True, info=ADDED_LATER),
    sa.Column("placed_file_size", sa.BigInteger, nullable=True, info=ADDED_LATER),
)
# Unpublishing gives the owner a copy with a new app id; the copy continues the app it was made
# from. Everything kept per app across approval cycles (its S3 history, its targets) is kept under
# the root: the first app of the chain. A new table, so create_all adds it to an existing ledger.
lineages = sa.Table(
    "app_lineage",
    metadata,
    sa.Column("app_id", sa.Uuid, primary_key=True),  # the owner's copy
    sa.Column("continues_app_id", sa.Uuid, nullable=False),  # the app it was copied from
    sa.Column("root_app_id", sa.Uuid, nullable=False, index=True),
    sa.Column("root_app_name", sa.Text, nullable=False),  # the root's name, as in its S3 key
    sa.Column("recorded_at", UtcDateTime, nullable=False),
)
emails = sa.Table(
    "emails_sent",
    metadata,
    sa.Column("promotion_key", sa.String(255), primary_key=True),
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("recipients", sa.JSON, nullable=False),
    sa.Column("claimed_at", UtcDateTime, nullable=False),
    # The attempt (flow run and run count) that claimed the email, until the SMTP server accepted
    # it; then NULL. A claim left by an earlier attempt is one that stopped while sending (its
    # executor killed): the request's next attempt sends it, with the same Message-ID. Rows from
    # before the column are NULL: sent.
    sa.Column("sending_attempt", sa.String(80), nullable=True, info=ADDED_LATER),
)
# The secret part of each request's temporary upload name per site, kept before the first upload.
uploads = sa.Table(
    "upload_slots",
    metadata,
    sa.Column("request_key", sa.String(255), primary_key=True),
    sa.Column("site", sa.String(255), primary_key=True),
    sa.Column("secret", sa.String(64), nullable=False),
    sa.Column("began_at", UtcDateTime, nullable=False),
)
rollbacks = sa.Table(
    "rollbacks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("site", sa.String(255), nullable=False),
    sa.Column("target_app_id", sa.Uuid, nullable=False),
    sa.Column("backup_key", sa.String(1024), nullable=False),
    sa.Column("backup_version_id", sa.String(1024)),
    sa.Column("requested_by", sa.String(520), nullable=False, default=""),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("status", sa.String(32), nullable=False, default="running"),
    sa.Column("error", sa.Text, nullable=False, default=""),
)


@dataclass(frozen=True, slots=True)
class Backup:
    """A target app stored in S3 before it was overwritten."""

    app_id: UUID
    key: str
    version_id: str | None


@dataclass(frozen=True, slots=True)
class PromotionStart:
    """What the ledger keeps about a promotion from its start: which request, app, people and rule."""

    key: str  # the request key: a retried run of the same request continues the same promotion
    app_id: UUID
    app_name: str
    approver: str | None
    owner: str | None
    action: str
    trigger: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Promotion:
    id: int
    key: str
    app_id: UUID
    app_name: str
    approver: str | None
    owner: str | None
    action: str
    trigger: str
    reason: str
    s3_key: str | None
    s3_version_id: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str


@dataclass(frozen=True, slots=True)
class SiteResult:
    promotion_id: int
    site: str
    mode: str
    streams: tuple[str, ...]
    target_app_ids: tuple[UUID, ...]
    backups: tuple[Backup, ...]
    status: str
    error: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Lineage:
    """Whose history an app continues: the root of its chain of owner copies, itself if it is none."""

    app_id: UUID
    root_app_id: UUID
    root_app_name: str
    continues_app_id: UUID | None = None  # the app this one was copied from; None for a root

    @property
    def is_copy(self) -> bool:
        return self.continues_app_id is not None


@dataclass(frozen=True, slots=True)
class EmailSent:
    promotion_key: str
    kind: str
    recipients: tuple[str, ...]
    claimed_at: datetime


class Ledger(Store):
    """The promotion ledger at one SQLAlchemy URL; tables are created on first use."""

    def __init__(self, url: str = "sqlite:///var/ledger.db") -> None:
        super().__init__(url)

    def __enter__(self) -> Ledger:
        return self

    def _insert_once(self, statement: Any) -> bool:
        try:
            self._write(statement)
        except IntegrityError:
            return False
        return True

    # -- handled changes: one approval, reload or publish is acted on once --------------------

    def claim(
        self,
        key: str,
        *,
        owner: str,
        kind: str = "approval",
        app_id: UUID | None = None,
        stale_after: timedelta | None = None,
    ) -> bool:
        """Take ``key`` for the run ``owner``: True if new, held by the same run, or failed before.

        ``stale_after``: a claim left unfinished that long (its run crashed) may be taken over.
        """
        row = {"key": key, "kind": kind, "app_id": app_id, "owner": owner, "claimed_at": now()}
        if self._insert_once(sa.insert(handled).values(**row)):
            return True
        c = handled.c
        abandoned_before = now() - stale_after if stale_after is not None else _NEVER_STALE
        retake = sa.or_(
            sa.and_(c.owner == owner, c.finished_at.is_(None)),
            c.outcome == FAILED,
            sa.and_(c.finished_at.is_(None), c.claimed_at < abandoned_before),
        )
        values = {"owner": owner, "attempts": c.attempts + 1, "claimed_at": now(), "finished_at": None}
        return self._write(sa.update(handled).where(c.key == key, retake).values(**values, outcome=None)) == 1

    def mark_outcome(self, key: str, outcome: str, detail: str = "") -> None:
        """Close a claim: "done", "ignored", "denied", ... or FAILED (which may be claimed again)."""
        values = {"outcome": outcome, "detail": detail[:2000], "finished_at": now()}
        self._write(sa.update(handled).where(handled.c.key == key).values(**values))

    def outcome(self, key: str) -> str | None:
        rows = self._read(sa.select(handled.c.outcome).where(handled.c.key == key))
        return rows[0].outcome if rows else None

    # -- promotions and their per-site results --------------------------------------------------

    def start_promotion(self, start: PromotionStart) -> int:
        """The promotion row for ``start.key``, created on first call; a retried run gets the same id."""
        row = sa.insert(promotions).values(**asdict(start), started_at=now(), status="running")
        self._insert_once(row)
        return self._read(sa.select(promotions.c.id).where(promotions.c.key == start.key))[0].id

    def set_version(self, promotion_id: int, s3_key: str, s3_version_id: str | None) -> None:
        """The S3 key and version id of the source app stored for this promotion."""
        self._update_promotion(promotion_id, s3_key=s3_key, s3_version_id=s3_version_id)

    def finish_promotion(self, promotion_id: int, status: str) -> None:
        self._update_promotion(promotion_id, status=status, finished_at=now())

    def _update_promotion(self, promotion_id: int, **values: Any) -> None:
        self._write(sa.update(promotions).where(promotions.c.id == promotion_id).values(**values))

    def promotion(self, key: str) -> Promotion | None:
        found = self.promotions(key=key)
        return found[0] if found else None

    def promotions(self, *, key: str | None = None) -> list[Promotion]:
        query = sa.select(promotions).order_by(promotions.c.started_at, promotions.c.id)
        if key is not None:
            query = query.where(promotions.c.key == key)
        return [Promotion(**row._mapping) for row in self._read(query)]

    def record_site_result(
        self,
        promotion_id: int,
        site: str,
        *,
        mode: str,
        streams: Sequence[str],
        target_app_ids: Sequence[UUID],
        status: str,
        error: str = "",
        backups: Iterable[Backup] = (),
    ) -> None:
        """Store (or, on a retry, overwrite) what happened on one site."""
        values = {
            "mode": mode,
            "streams": list(streams),
            "target_app_ids": [str(i) for i in target_app_ids],
            "backups": [{"app_id": str(b.app_id), "key": b.key, "version_id": b.version_id} for b in backups],
            "status": status,
            "error": error[:2000],
            "recorded_at": now(),
        }
        if not self._insert_once(
            sa.insert(site_results).values(promotion_id=promotion_id, site=site, **values)
        ):
            where = (site_results.c.promotion_id == promotion_id, site_results.c.site == site)
            self._write(sa.update(site_results).where(*where).values(**values))

    def site_results(self, promotion_id: int | None = None) -> list[SiteResult]:
        query = sa.select(site_results).order_by(site_results.c.recorded_at, site_results.c.id)
        if promotion_id is not None:
            query = query.where(site_results.c.promotion_id == promotion_id)
        return [_site_result(row._mapping) for row in self._read(query)]

    def find_backup(self, site: str, target_app_id: UUID, version_id: str | None = None) -> Backup | None:
        """A backup of one target app for a rollback: the one with ``version_id``, else the newest."""
        for result in reversed(self.site_results()):
            for backup in result.backups if result.site == site else ():
                if backup.app_id == target_app_id and version_id in (None, backup.version_id):
                    return backup
        return None

    def last_backup(self, site: str, target_app_id: UUID) -> Backup | None:
        return self.find_backup(site, target_app_id)

    # -- lineage: which owner copy continues which app, across approval cycles -----------------

    def continue_lineage(self, copy_app_id: UUID, app_id: UUID, app_name: str) -> Lineage:
        """Record that ``copy_app_id`` continues ``app_id`` (named ``app_name``) and return its lineage.

        The copy joins the root of ``app_id``'s chain, so a chain of any length is one lookup.
        Recording it again (a retried run) changes nothing.
        """
        root = self.lineage(app_id, app_name)
        row = {
            "app_id": copy_app_id,
            "continues_app_id": app_id,
            "root_app_id": root.root_app_id,
            "root_app_name": root.root_app_name,
            "recorded_at": now(),
        }
        self._insert_once(sa.insert(lineages).values(**row))
        return self.lineage(copy_app_id, app_name)

    def lineage(self, app_id: UUID, app_name: str) -> Lineage:
        """The lineage of ``app_id``; an app that is no one's copy is its own root, named ``app_name``."""
        rows = self._read(sa.select(lineages).where(lineages.c.app_id == app_id))
        if not rows:
            return Lineage(app_id, app_id, app_name)
        row = rows[0]
        return Lineage(app_id, row.root_app_id, row.root_app_name, row.continues_app_id)

    def lineage_root(self, app_id: UUID) -> UUID:
        """The root of ``app_id``'s chain of owner copies (``app_id`` itself if it is no copy)."""
        rows = self._read(sa.select(lineages.c.root_app_id).where(lineages.c.app_id == app_id))
        return rows[0].root_app_id if rows else app_id

    def lineage_apps(self, root_app_id: UUID) -> list[UUID]:
        """The apps of one chain: the root, then its copies in the order they were made."""
        c = lineages.c
        query = sa.select(c.app_id).where(c.root_app_id == root_app_id).order_by(c.recorded_at, c.app_id)
        return [root_app_id, *(row.app_id for row in self._read(query))]

    def copies_of(self, app_id: UUID) -> list[UUID]:
        """The owner copies recorded as continuing ``app_id`` itself, oldest first."""
        c = lineages.c
        query = sa.select(c.app_id).where(c.continues_app_id == app_id).order_by(c.recorded_at, c.app_id)
        return [row.app_id for row in self._read(query)]

    def lineage_roots(self) -> dict[UUID, UUID]:
        """Every recorded copy and the root it continues (apps not listed are their own root)."""
        return {
            row.app_id: row.root_app_id
            for row in self._read(sa.select(lineages.c.app_id, lineages.c.root_app_id))
        }

    # -- identity: which target app(s) each source app became, per site and stream -------------
    # Kept per lineage root: the copy an approval cycle left the owner replaces the same targets.

    def remember_target(
        self,
        source_app_id: UUID,
        site: str,
        stream_id: UUID,
        stream_name: str,
        target_app_id: UUID,
        *,
        modified_date: datetime | None = None,
        file_size: int | None = None,
    ) -> None:
        """Remember the target app and, for the drift guard, its state as read back after placing it.

        None (not verified, or a site that failed) clears the state: the next overwrite of that
        target cannot tell a hand edit from our own, so it is not held.
        """
        root = self.lineage_root(source_app_id)
        ids = {"source_app_id": root, "site": site, "target_app_id": target_app_id}
        values = {
            "stream_id": stream_id,
            "stream_name": stream_name,
            "remembered_at": now(),
            "placed_modified_date": modified_date,
            "placed_file_size": file_size,
        }
        if not self._insert_once(sa.insert(identities).values(**ids, **values)):
            self._write(sa.update(identities).filter_by(**ids).values(**values))

    def forget_target(self, source_app_id: UUID, site: str, target_app_id: UUID) -> None:
        root = self.lineage_root(source_app_id)
        ids = {"source_app_id": root, "site": site, "target_app_id": target_app_id}
        self._write(sa.delete(identities).filter_by(**ids))

    def targets_for(self, source_app_id: UUID, site: str) -> list[KnownTarget]:
        """The target apps on ``site`` that ``source_app_id``, or any app of its lineage, became."""
        c = identities.c
        query = sa.select(
            c.stream_id, c.stream_name, c.target_app_id, c.placed_modified_date, c.placed_file_size
        ).filter_by(source_app_id=self.lineage_root(source_app_id), site=site)
        rows = self._read(query.order_by(c.remembered_at))
        return [
            KnownTarget(
                r.stream_id, r.stream_name, r.target_app_id, r.placed_modified_date, r.placed_file_size
            )
            for r in rows
        ]

    def target_placed(
        self, site: str, target_app_id: UUID, modified_date: datetime | None, file_size: int | None
    ) -> None:
        """Record a target app's state after qs-promoter changed it outside a promotion (a rollback).

        Only targets the ledger remembers are updated: for every source app that became it.
        """
        values = {"placed_modified_date": modified_date, "placed_file_size": file_size}
        self._write(sa.update(identities).filter_by(site=site, target_app_id=target_app_id).values(**values))

    def target_lineage(self, site: str, target_app_id: UUID) -> list[UUID]:
        """The source apps whose promotions placed ``target_app_id`` on ``site``: the root, then its copies.

        Empty when the ledger does not remember the target.
        """
        c = identities.c
        query = sa.select(c.source_app_id).filter_by(site=site, target_app_id=target_app_id)
        roots = sorted({row.source_app_id for row in self._read(query)}, key=str)
        return [app_id for root in roots for app_id in self.lineage_apps(root)]

    # -- emails: each kind is sent once per promotion ------------------------------------------

    def claim_email(
        self, promotion_key: str, kind: str, recipients: Sequence[str] = (), attempt: str | None = None
    ) -> bool:
        """True for the one caller that may send this email: the first, or ``attempt`` when an earlier
        attempt claimed it and stopped before the SMTP server accepted it. Then email_sent() once
        the server has it, or release_email() if sending fails.

        One request is acted on by one flow run at a time (the ledger's claim on the request), and
        its attempts follow each other: a claim still sending for another attempt is a stopped one.
        """
        row = {
            "promotion_key": promotion_key,
            "kind": kind,
            "recipients": list(recipients),
            "claimed_at": now(),
            "sending_attempt": attempt or "",
        }
        if self._insert_once(sa.insert(emails).values(**row)):
            return True
        if attempt is None:
            return False
        c = emails.c
        stopped = (
            sa.update(emails)
            .filter_by(promotion_key=promotion_key, kind=kind)
            .where(c.sending_attempt.is_not(None), c.sending_attempt != attempt)
        )
        return self._write(stopped.values(**row)) == 1

    def email_sent(self, promotion_key: str, kind: str) -> None:
        """The SMTP server accepted the email: no later attempt sends it again."""
        sent = sa.update(emails).filter_by(promotion_key=promotion_key, kind=kind)
        self._write(sent.values(sending_attempt=None))

    def release_email(self, promotion_key: str, kind: str) -> None:
        self._write(sa.delete(emails).filter_by(promotion_key=promotion_key, kind=kind))

    def emails(self, promotion_key: str | None = None) -> list[EmailSent]:
        query = sa.select(emails).order_by(emails.c.claimed_at)
        if promotion_key is not None:
            query = query.where(emails.c.promotion_key == promotion_key)
        rows = self._read(query)
        return [EmailSent(row.promotion_key, row.kind, tuple(row.recipients), row.claimed_at) for row in rows]

    # -- uploads: one temporary name per request and site, secret until the upload exists ------

    def upload_slot(self, request_key: str, site: str) -> UploadSlot:
        """The request's upload slot on ``site``: made with a fresh secret on first call, the same after.

        The slot is stored before anything is uploaded, so every attempt of the request, however it
        ends, looks for and adopts the same upload.
        """
        row = {"request_key": request_key, "site": site, "secret": new_upload_secret(), "began_at": now()}
        self._insert_once(sa.insert(uploads).values(**row))
        stored = self._read(sa.select(uploads).filter_by(request_key=request_key, site=site))[0]
        return UploadSlot(upload_token(request_key, site), stored.secret, stored.began_at)

    # -- rollbacks -----------------------------------------------------------------------------

    def start_rollback(self, site: str, target_app_id: UUID, backup: Backup, requested_by: str = "") -> int:
        values = {
            "site": site,
            "target_app_id": target_app_id,
            "backup_key": backup.key,
            "started_at": now(),
        }
        statement = sa.insert(rollbacks).values(
            **values, backup_version_id=backup.version_id, requested_by=requested_by
        )
        with self.engine.begin() as conn:
            return int(conn.execute(statement).inserted_primary_key[0])

    def finish_rollback(self, rollback_id: int, status: str, error: str = "") -> None:
        values = {"status": status, "error": error[:2000], "finished_at": now()}
        self._write(sa.update(rollbacks).where(rollbacks.c.id == rollback_id).values(**values))


def _site_result(row: Any) -> SiteResult:
    return SiteResult(
        promotion_id=row["promotion_id"],
        site=row["site"],
        mode=row["mode"],
        streams=tuple(row["streams"]),
        target_app_ids=tuple(UUID(i) for i in row["target_app_ids"]),
        backups=tuple(Backup(UUID(b["app_id"]), b["key"], b["version_id"]) for b in row["backups"]),
        status=row["status"],
        error=row["error"],
        recorded_at=row["recorded_at"],
    )
