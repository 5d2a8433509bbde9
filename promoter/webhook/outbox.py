"""The durable outbox: every accepted notification, kept in SQLite until its flow run exists.

One file (``webhook.outbox_path``) in WAL mode, read and written by one dedicated thread with
one connection, so the event loop never blocks on disk and writers in this process never wait
on each other's locks. Appends that arrive while a commit is running are committed together
(group commit), which keeps a burst of notifications to one disk flush per batch.

``synchronous=FULL``: the webhook answers 200 only after the row is on disk, and QRS does not
send a notification twice, so a commit must survive a power cut, not just a process crash
(NORMAL in WAL mode may lose the last commits on power loss). FULL costs one WAL flush per
commit, measured at about 0.4 ms here, shared by every append of a batch.

At most ``max_waiting_per_app`` entries wait per app and kind: one flow run covers all of them
(the submitter keys it by what QRS says, not by the entries), so older ones beyond that carry
nothing and are dropped when a newer one arrives. Dropping the oldest, never the newest, keeps a
notice that came in after a submission began waiting for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from promoter.errors import PromoterError
from promoter.notifications import ChangeKind

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
MAX_WAITING_PER_APP = 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,    -- never reused, so an id in a log stays unique
    app_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('updated', 'reloaded', 'published')),
    modified_date TEXT NOT NULL,             -- the change's modifiedDate in QRS format: sorts as text
    received_at REAL NOT NULL,               -- Unix time
    payload TEXT NOT NULL,                   -- the change entry as QRS sent it (JSON)
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    flow_run_id TEXT,                        -- set once the flow run exists: the entry is done
    submitted_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (app_id, kind) WHERE flow_run_id IS NULL;
CREATE INDEX IF NOT EXISTS outbox_submitted ON outbox (submitted_at) WHERE flow_run_id IS NOT NULL;
"""


class OutboxUnavailable(PromoterError):
    """The outbox file could not be written or read (disk full, permissions, locked by another process)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One accepted change, as the route hands it to the outbox."""

    app_id: str
    kind: ChangeKind
    modified_date: str
    payload: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One row of the outbox."""

    id: int
    app_id: str
    kind: ChangeKind
    modified_date: str
    received_at: float
    payload: str
    attempts: int
    next_attempt_at: float
    flow_run_id: str | None
    submitted_at: float | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PendingChange:
    """Every waiting notification of one app and kind: one flow run covers them all."""

    app_id: str
    kind: ChangeKind
    modified_date: str  # the newest the senders claim: shown, never trusted (see submitter.idempotency_key)
    ids: tuple[int, ...]
    attempts: int  # the most attempts any of them has had


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What /healthz reports about the outbox."""

    depth: int
    oldest_received_at: float | None


@dataclass(slots=True)
class _Append:
    notices: list[Notice]
    received_at: float
    done: Future[list[int]]


class Outbox:
    """The durable queue between the webhook route and the submitter; ``await open()`` before use."""

    def __init__(self, path: Path, *, max_waiting_per_app: int = MAX_WAITING_PER_APP) -> None:
        self.path = path
        self.max_waiting_per_app = max_waiting_per_app
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None  # created and used only in the outbox thread
        self._waiting: list[_Append] = []
        self._waiting_lock = threading.Lock()

    async def open(self) -> None:
        """Create the parent folder, the file and the table if needed."""
        await self._run(self._connect)

    async def close(self) -> None:
        await self._run(self._disconnect)
        self._thread.shutdown(wait=True)

    async def append(self, notices: Sequence[Notice]) -> list[int]:
        """Store the notices durably (committed and flushed) and return their ids."""
        if not notices:
            return []
        item = _Append(list(notices), time.time(), Future())
        with self._waiting_lock:
            self._waiting.append(item)
        # Jobs run one at a time in order, so when this one has run, an earlier or this
        # flush has committed the item.
        await self._run(self._flush)
        return item.done.result()

    async def due(self, now: float, limit: int) -> list[PendingChange]:
        """Apps and kinds with a notification due for submission, oldest first."""
        return await self._run(self._due, now, limit)

    async def mark_submitted(self, ids: Sequence[int], flow_run_id: str) -> None:
        """The flow run exists: these entries are done (kept a while for the record, then purged)."""
        now = time.time()
        await self._write(
            "UPDATE outbox SET flow_run_id = ?, submitted_at = ?, last_error = NULL WHERE id = ?",
            [(flow_run_id, now, i) for i in ids],
        )

    async def postpone(self, ids: Sequence[int], until: float, error: str) -> None:
        """A submission failed: count the attempt and try again at ``until``."""
        await self._write(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
            [(until, error[:500], i) for i in ids],
        )

    async def remove(self, ids: Sequence[int]) -> None:
        """Drop entries that need no flow run (the relevance check said so)."""
        await self._write("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    async def purge_submitted(self, before: float) -> int:
        """Delete done entries submitted before ``before``; returns how many."""
        return await self._run(self._purge_submitted, before)

    async def stats(self) -> OutboxStats:
        return await self._run(self._stats)

    async def next_attempt_at(self) -> float | None:
        """When the earliest waiting entry is due, or None when nothing waits."""
        return await self._run(self._next_attempt_at)

    async def entries(self, *, pending_only: bool = False) -> list[OutboxEntry]:
        """Every row, oldest first (for inspection and tests)."""
        return await self._run(self._entries, pending_only)

    # Everything below runs in the outbox thread.

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.Error as exc:
            raise OutboxUnavailable(f"outbox {self.path}: {exc}") from exc

    async def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._run(self._write_rows, sql, rows)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxUnavailable(f"outbox {self.path} is not open")
        return self._db

    def _connect(self) -> None:
        if self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # timeout: how long to wait when another process (a standalone submitter) holds the write lock.
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a network share without shared memory
            log.warning("outbox %s: journal mode is %s, not WAL; appends will be slower", self.path, mode)
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db = db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _flush(self) -> None:
        with self._waiting_lock:
            batch, self._waiting = self._waiting, []
        if not batch:
            return
        try:
            with self._transaction() as db:
                ids = [
                    [self._insert(db, notice, item.received_at) for notice in item.notices] for item in batch
                ]
                for app_id, kind in {(n.app_id, n.kind) for item in batch for n in item.notices}:
                    self._keep_newest(db, app_id, kind)
        except (sqlite3.Error, OutboxUnavailable) as exc:
            for item in batch:  # each waiting request gets its own exception object
                item.done.set_exception(OutboxUnavailable(f"outbox {self.path}: {exc}"))
            return
        for item, item_ids in zip(batch, ids, strict=True):
            item.done.set_result(item_ids)

    @staticmethod
    def _insert(db: sqlite3.Connection, notice: Notice, received_at: float) -> int:
        cursor = db.execute(
            "INSERT INTO outbox (app_id, kind, modified_date, received_at, payload, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (notice.app_id, notice.kind, notice.modified_date, received_at, notice.payload, received_at),
        )
        return cast(int, cursor.lastrowid)

    def _keep_newest(self, db: sqlite3.Connection, app_id: str, kind: str) -> None:
        dropped = db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
            " WHERE app_id = ? AND kind = ? AND flow_run_id IS NULL ORDER BY id DESC LIMIT -1 OFFSET ?)",
            (app_id, kind, self.max_waiting_per_app),
        ).rowcount
        if dropped:
            log.debug("dropped %d older waiting notice(s) for %s %s", dropped, kind, app_id)

    def _write_rows(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._transaction() as db:
            db.executemany(sql, rows)

    def _due(self, now: float, limit: int) -> list[PendingChange]:
        rows = (
            self._connection()
            .execute(
                "SELECT app_id, kind, MAX(modified_date), GROUP_CONCAT(id), MAX(attempts), MIN(id) AS first"
                " FROM outbox WHERE flow_run_id IS NULL GROUP BY app_id, kind"
                " HAVING MIN(next_attempt_at) <= ? ORDER BY first LIMIT ?",
                (now, limit),
            )
            .fetchall()
        )
        return [
            PendingChange(
                app_id=app_id,
                kind=kind,
                modified_date=modified,
                ids=tuple(sorted(int(i) for i in ids.split(","))),
                attempts=attempts,
            )
            for app_id, kind, modified, ids, attempts, _ in rows
        ]

    def _purge_submitted(self, before: float) -> int:
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM outbox WHERE flow_run_id IS NOT NULL AND submitted_at < ?", (before,)
            ).rowcount

    def _stats(self) -> OutboxStats:
        depth, oldest = (
            self._connection()
            .execute("SELECT COUNT(*), MIN(received_at) FROM outbox WHERE flow_run_id IS NULL")
            .fetchone()
        )
        return OutboxStats(depth=depth, oldest_received_at=oldest)

    def _next_attempt_at(self) -> float | None:
        row = (
            self._connection()
            .execute("SELECT MIN(next_attempt_at) FROM outbox WHERE flow_run_id IS NULL")
            .fetchone()
        )
        return cast(float | None, row[0])

    def _entries(self, pending_only: bool) -> list[OutboxEntry]:
        rows = (
            self._connection()
            .execute(
                "SELECT id, app_id, kind, modified_date, received_at, payload, attempts, next_attempt_at,"
                " flow_run_id, submitted_at, last_error FROM outbox"
                " WHERE NOT ? OR flow_run_id IS NULL ORDER BY id",
                (pending_only,),
            )
            .fetchall()
        )
        return [OutboxEntry(*row) for row in rows]
