"""The QRS notification subscriptions we hold on the source site, and when they were last checked.

A callback URL carries the webhook secret, so only its hash is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from promoter.store.database import Store, UtcDateTime, metadata, now

# active: the subscription in force for its kind; retiring: replaced, delete still owed.
ACTIVE, RETIRING = "active", "retiring"

table = sa.Table(
    "source_subscriptions",
    metadata,
    sa.Column("handle", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False, index=True),
    sa.Column("url_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_check_at", UtcDateTime),
    sa.Column("last_ok", UtcDateTime),  # the last check that found the subscriptions in place
    sa.Column("last_error", sa.Text),
)


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One handle we hold on the source site."""

    handle: UUID
    kind: str
    url_hash: str
    state: str
    created_at: datetime
    last_check_at: datetime | None
    last_ok: datetime | None
    last_error: str | None


class SubscriptionStore(Store):
    """The handles we hold, in the ledger database; every method is one short transaction."""

    def __enter__(self) -> SubscriptionStore:
        return self

    def records(self) -> list[SubscriptionRecord]:
        rows = self._read(sa.select(table).order_by(table.c.kind, table.c.created_at))
        return [_record(row._mapping) for row in rows]

    def active(self, kind: str) -> SubscriptionRecord | None:
        found = [r for r in self.records() if r.kind == kind and r.state == ACTIVE]
        return found[-1] if found else None

    def adopt(self, kind: str, handle: UUID, hashed_url: str) -> list[SubscriptionRecord]:
        """Make ``handle`` the kind's subscription; returns every earlier handle of the kind, now retiring.

        One transaction, so two passes that overlap (the scheduled keeper and the CLI) leave
        exactly one active handle per kind, and every other one is owed a delete.
        """
        at = now()
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(table)
                .where(table.c.kind == kind, table.c.state == ACTIVE)
                .values(state=RETIRING, last_check_at=at)
            )
            conn.execute(
                sa.insert(table).values(
                    handle=str(handle),
                    kind=kind,
                    url_hash=hashed_url,
                    state=ACTIVE,
                    created_at=at,
                    last_check_at=at,
                    last_ok=at,  # QRS just accepted it
                )
            )
            rows = conn.execute(
                sa.select(table).where(table.c.kind == kind, table.c.state == RETIRING)
            ).fetchall()
        return [_record(row._mapping) for row in rows]

    def forget(self, handle: UUID) -> None:
        self._write(sa.delete(table).where(table.c.handle == str(handle)))

    def checked(self, ok: bool, error: str | None = None) -> None:
        """Record a check of the active subscriptions: found in place (ok), or why it could not tell."""
        at = now()
        values: dict[str, Any] = {"last_check_at": at, "last_error": None if ok else (error or "")[:500]}
        if ok:
            values["last_ok"] = at
        self._write(sa.update(table).where(table.c.state == ACTIVE).values(**values))

    def last_ok(self, kinds: Iterable[str]) -> datetime | None:
        """When the subscriptions of ``kinds`` were last all found in place; None if one is missing."""
        active = {r.kind: r for r in self.records() if r.state == ACTIVE}
        times = [active[kind].last_ok if kind in active else None for kind in kinds]
        return None if any(t is None for t in times) else min(t for t in times if t is not None)


def _record(row: Any) -> SubscriptionRecord:
    return SubscriptionRecord(
        handle=UUID(row["handle"]),
        kind=row["kind"],
        url_hash=row["url_hash"],
        state=row["state"],
        created_at=row["created_at"],
        last_check_at=row["last_check_at"],
        last_ok=row["last_ok"],
        last_error=row["last_error"],
    )
