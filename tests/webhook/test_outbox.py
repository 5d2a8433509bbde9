"""The durable outbox: what it stores, how it groups waiting changes, and that it survives a restart."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from promoter.webhook.outbox import Notice, Outbox


def notice(app: str, modified: str = "2026-05-01T12:00:00.000Z", kind: str = "updated") -> Notice:
    return Notice(app_id=app, kind=kind, modified_date=modified, payload="{}")  # type: ignore[arg-type]


async def open_outbox(path: Path) -> Outbox:
    outbox = Outbox(path)
    await outbox.open()
    return outbox


async def test_outbox_file_is_durable_wal(tmp_path: Path) -> None:
    """The parent folder is created; the file is in WAL mode with synchronous=FULL on our connection."""
    path = tmp_path / "deep" / "var" / "outbox.db"
    outbox = await open_outbox(path)
    try:
        synchronous = await outbox._run(lambda: outbox._connection().execute("PRAGMA synchronous").fetchone())
    finally:
        await outbox.close()

    with sqlite3.connect(path) as db:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert (mode, synchronous) == ("wal", (2,))  # 2 = FULL


async def test_concurrent_appends_are_all_stored_with_distinct_ids(tmp_path: Path) -> None:
    """Two hundred appends at once (committed in batches) all get a row and their own id."""
    outbox = await open_outbox(tmp_path / "outbox.db")
    try:
        results = await asyncio.gather(*(outbox.append([notice(f"app-{i}")]) for i in range(200)))
        entries = await outbox.entries()
    finally:
        await outbox.close()

    ids = [i for result in results for i in result]
    assert (len(set(ids)), len(entries)) == (200, 200)
    assert sorted(ids) == [e.id for e in entries]


async def test_entries_survive_a_restart(tmp_path: Path) -> None:
    """What one process stored, the next process finds waiting, due at once."""
    first = await open_outbox(tmp_path / "outbox.db")
    await first.append([notice("app-1"), notice("app-2")])
    await first.close()

    second = await open_outbox(tmp_path / "outbox.db")
    try:
        due = await second.due(time.time(), limit=10)
        stats = await second.stats()
    finally:
        await second.close()

    assert ([c.app_id for c in due], stats.depth) == (["app-1", "app-2"], 2)


async def test_waiting_changes_of_one_app_and_kind_form_one_group(tmp_path: Path) -> None:
    """A burst for one app and kind is one pending change with the newest modifiedDate; kinds stay apart."""
    outbox = await open_outbox(tmp_path / "outbox.db")
    try:
        await outbox.append(
            [notice("a", "2026-05-01T12:00:01.000Z"), notice("a", "2026-05-01T12:00:03.000Z")]
        )
        await outbox.append([notice("a", "2026-05-01T12:00:02.000Z"), notice("a", kind="published")])
        due = await outbox.due(time.time(), limit=10)
    finally:
        await outbox.close()

    assert [(c.app_id, c.kind, c.modified_date, c.ids) for c in due] == [
        ("a", "updated", "2026-05-01T12:00:03.000Z", (1, 2, 3)),
        ("a", "published", "2026-05-01T12:00:00.000Z", (4,)),
    ]


async def test_postponed_changes_wait_and_count_attempts(tmp_path: Path) -> None:
    """A postponed change is not due before its time, keeps its row, and records the attempt and error."""
    outbox = await open_outbox(tmp_path / "outbox.db")
    try:
        (entry_id,) = await outbox.append([notice("a")])
        await outbox.postpone([entry_id], time.time() + 60, "ConnectError: refused")
        due_now = await outbox.due(time.time(), limit=10)
        due_later = await outbox.due(time.time() + 61, limit=10)
        (entry,) = await outbox.entries()
    finally:
        await outbox.close()

    assert (due_now, [c.app_id for c in due_later]) == ([], ["a"])
    assert (entry.attempts, entry.last_error, entry.flow_run_id) == (1, "ConnectError: refused", None)


async def test_submitted_entries_leave_the_queue_and_are_purged_later(tmp_path: Path) -> None:
    """Marked with its flow run id, an entry no longer counts as waiting; a purge deletes it afterwards."""
    outbox = await open_outbox(tmp_path / "outbox.db")
    try:
        (done_id, waiting_id) = await outbox.append([notice("a"), notice("b")])
        await outbox.mark_submitted([done_id], "run-1")
        stats = await outbox.stats()
        purged = await outbox.purge_submitted(before=time.time() + 1)
        left = [(e.id, e.flow_run_id) for e in await outbox.entries()]
    finally:
        await outbox.close()

    assert (1, 1, [(waiting_id, None)]) == (stats.depth, purged, left)


async def test_only_the_newest_waiting_notices_of_an_app_are_kept(tmp_path: Path) -> None:
    """A flood for one app and kind keeps its newest max_waiting_per_app entries (one run covers them all
    anyway); other apps and kinds keep theirs."""
    outbox = Outbox(tmp_path / "outbox.db", max_waiting_per_app=5)
    await outbox.open()
    try:
        flood = await outbox.append([notice("a", f"2026-05-01T12:00:{i:02d}.000Z") for i in range(50)])
        await outbox.append([notice("a", kind="published"), notice("b")])
        waiting = [(e.id, e.app_id, e.kind) for e in await outbox.entries(pending_only=True)]
    finally:
        await outbox.close()

    assert [i for i, app, kind in waiting if (app, kind) == ("a", "updated")] == flood[-5:]
    assert [(app, kind) for _, app, kind in waiting if (app, kind) != ("a", "updated")] == [
        ("a", "published"),
        ("b", "updated"),
    ]


async def test_a_notice_that_arrives_during_a_submission_is_kept_for_the_next_one(tmp_path: Path) -> None:
    """With the app at its cap, a notice arriving after the submitter took the waiting ones survives
    their submission: dropping makes room by the oldest, so nothing new is marked done unseen."""
    outbox = Outbox(tmp_path / "outbox.db", max_waiting_per_app=3)
    await outbox.open()
    try:
        await outbox.append([notice("a") for _ in range(3)])
        (taken,) = await outbox.due(time.time(), limit=10)
        (late,) = await outbox.append([notice("a", "2026-05-01T12:00:09.000Z")])
        await outbox.mark_submitted(taken.ids, "run-1")
        waiting = [e.id for e in await outbox.entries(pending_only=True)]
    finally:
        await outbox.close()

    assert waiting == [late]
