"""What reconcile remembers: how far it has looked, and the automatic retries it made per request.

It also reads the ledger's handled changes, to tell which requests are new, open or running.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from promoter.store.database import Store, UtcDateTime, in_batches, metadata, now
from promoter.store.ledger import FAILED, handled

# A claim older than the change flow's timeout belongs to a run that is surely over.
LONGEST_RUN = timedelta(hours=6)
# Requests claimed longer ago are left to an admin: reconcile does not revive last week's failure.
RETRY_WINDOW = timedelta(days=1)
# Keys per IN list: well within every backend's limit on bound parameters.
KEYS_PER_QUERY = 500
SOURCE_MARK = "source"

marks = sa.Table(
    "reconcile_marks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("first_at", UtcDateTime, nullable=False),
    sa.Column("last_at", UtcDateTime, nullable=False),
)
retry_counts = sa.Table(
    "reconcile_retries",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("last_at", UtcDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class ReconcileMark:
    """When reconcile first and last succeeded (each time, when that run started)."""

    first: datetime  # the journal is never read further back: earlier reloads and publishes are history
    last: datetime


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """A request claimed and not done: its run failed, stopped, or is still at it."""

    key: str
    run_id: str  # the flow run holding the claim (the ledger's owner)
    outcome: str | None  # None: not finished; "failed": the run gave up
    claimed_at: datetime


class ReconcileRecord(Store):
    """The last successful reconcile and the ledger's handled requests, in the ledger database."""

    def __enter__(self) -> ReconcileRecord:
        return self

    def mark(self) -> ReconcileMark | None:
        rows = self._read(sa.select(marks).where(marks.c.name == SOURCE_MARK))
        return ReconcileMark(rows[0].first_at, rows[0].last_at) if rows else None

    def mark_success(self, started: datetime) -> None:
        """Reconcile succeeded in a run that started at ``started``."""
        with self.engine.begin() as conn:
            update = sa.update(marks).where(marks.c.name == SOURCE_MARK).values(last_at=started)
            if conn.execute(update).rowcount == 0:
                conn.execute(sa.insert(marks).values(name=SOURCE_MARK, first_at=started, last_at=started))

    def unhandled(self, keys: Iterable[str]) -> set[str]:
        """The keys the ledger has no record of (claimed, running or finished ones are handled)."""
        wanted = set(keys)
        seen: set[str] = set()
        with self.engine.connect() as conn:
            for batch in in_batches(sorted(wanted), KEYS_PER_QUERY):
                seen.update(
                    row.key for row in conn.execute(sa.select(handled.c.key).where(handled.c.key.in_(batch)))
                )
        return wanted - seen

    def open_requests(self, now: datetime, window: timedelta = RETRY_WINDOW) -> list[OpenRequest]:
        """Requests claimed within ``window`` and not done: unfinished, or failed."""
        c = handled.c
        query = sa.select(c.key, c.owner, c.outcome, c.claimed_at).where(
            sa.or_(c.finished_at.is_(None), c.outcome == FAILED), c.claimed_at > now - window
        )
        rows = self._read(query.order_by(c.claimed_at))
        return [OpenRequest(row.key, row.owner, row.outcome, row.claimed_at) for row in rows]

    def retries(self, keys: Iterable[str]) -> dict[str, int]:
        """Automatic retries made so far, by request key (absent: none)."""
        found: dict[str, int] = {}
        with self.engine.connect() as conn:
            for batch in in_batches(sorted(set(keys)), KEYS_PER_QUERY):
                query = sa.select(retry_counts.c.key, retry_counts.c.retries).where(
                    retry_counts.c.key.in_(batch)
                )
                found.update((row.key, row.retries) for row in conn.execute(query))
        return found

    def count_retry(self, key: str, run_id: str, at: datetime) -> int:
        """One more automatic retry of ``key``'s run, counted before it is made; returns the count."""
        c = retry_counts.c
        with self.engine.begin() as conn:
            update = sa.update(retry_counts).where(c.key == key)
            if conn.execute(update.values(retries=c.retries + 1, run_id=run_id, last_at=at)).rowcount == 0:
                conn.execute(sa.insert(retry_counts).values(key=key, retries=1, run_id=run_id, last_at=at))
            return int(conn.execute(sa.select(c.retries).where(c.key == key)).scalar_one())

    def running(self, at: datetime | None = None) -> list[str]:
        """Request keys claimed and not finished, claimed recently enough that their run may be alive."""
        claimed_after = (at or now()) - LONGEST_RUN
        query = sa.select(handled.c.key).where(
            handled.c.finished_at.is_(None), handled.c.claimed_at > claimed_after
        )
        return [row.key for row in self._read(query)]
