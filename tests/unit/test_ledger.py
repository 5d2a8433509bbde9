"""The ledger on SQLite and PostgreSQL: idempotent claims, identities, emails once, results and rollbacks."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import pytest
from sqlalchemy import text

from promoter.planning import KnownTarget
from promoter.provenance import upload_name, upload_token
from promoter.store.ledger import FAILED, Backup, Ledger, PromotionStart
from tests.fixtures.postgres import postgres_url, throwaway_database

T = TypeVar("T")


def _postgres_url() -> Iterator[str]:
    """A throwaway database on the machine's PostgreSQL, dropped afterwards."""
    pytest.importorskip("psycopg", reason="psycopg is needed for the PostgreSQL ledger")
    with throwaway_database("qsp_ledger") as name:
        if name is None:
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        yield postgres_url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh ledger on each backend."""
    if request.param == "sqlite":
        with Ledger(f"sqlite:///{tmp_path / 'var' / 'ledger.db'}") as fresh:
            yield fresh
        return
    urls = _postgres_url()
    url = next(urls)
    try:
        with Ledger(url) as fresh:
            yield fresh
    finally:
        urls.close()


def race(workers: int, attempt: Callable[[int], T]) -> list[T]:
    """Run ``attempt`` in ``workers`` threads released at the same moment."""
    start = threading.Barrier(workers)

    def one(index: int) -> T:
        start.wait(timeout=10)
        return attempt(index)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(workers)))


# --- handled changes ------------------------------------------------------------------------


def test_a_change_is_claimed_once(ledger: Ledger) -> None:
    """The first run claims a key; another run is refused; the same run may re-enter until it finishes."""
    key = f"approval:{uuid4()}:v@t"

    first, other, again = (ledger.claim(key, owner=o) for o in ("run-1", "run-2", "run-1"))
    ledger.mark_outcome(key, "done")

    assert (first, other, again) == (True, False, True)
    assert (ledger.claim(key, owner="run-1"), ledger.outcome(key)) == (False, "done")


def test_a_failed_change_may_be_claimed_again(ledger: Ledger) -> None:
    """After an outcome of "failed", a later run (a reconcile, a replay) may take the key again."""
    key = "approval:failed"
    ledger.claim(key, owner="run-1")
    ledger.mark_outcome(key, FAILED, "target site down")

    assert (ledger.claim(key, owner="run-2"), ledger.claim(key, owner="run-3")) == (True, False)
    assert ledger.outcome(key) is None


def test_a_claim_abandoned_by_a_crashed_run_can_be_taken_over(ledger: Ledger) -> None:
    """An unfinished claim older than stale_after is taken by a new run; a fresh one is not."""
    ledger.claim("approval:crashed", owner="run-1")

    fresh = ledger.claim("approval:crashed", owner="run-2", stale_after=timedelta(hours=1))
    stale = ledger.claim("approval:crashed", owner="run-3", stale_after=timedelta(0))

    assert (fresh, stale) == (False, True)
    assert ledger.claim("approval:crashed", owner="run-1") is False


def test_concurrent_claims_have_exactly_one_winner(ledger: Ledger) -> None:
    """Sixteen threads claiming one key at once: exactly one wins."""
    results = race(16, lambda i: ledger.claim("approval:race", owner=f"run-{i}"))

    assert results.count(True) == 1


def test_concurrent_retakes_of_a_failed_claim_have_one_winner(ledger: Ledger) -> None:
    """Re-claiming a failed key is decided by the database too."""
    ledger.claim("approval:retake", owner="run-0")
    ledger.mark_outcome("approval:retake", FAILED)

    results = race(8, lambda i: ledger.claim("approval:retake", owner=f"run-{i + 1}"))

    assert results.count(True) == 1


# --- promotions and site results ------------------------------------------------------------


def _start(ledger: Ledger, key: str = "approval:p", app_id: object = None) -> int:
    return ledger.start_promotion(
        PromotionStart(
            key,
            app_id=app_id or uuid4(),
            app_name="Sales ✓",
            approver="DEV\\boss",
            owner="DEV\\rep",
            action="promote",
            trigger="updated",
            reason="approved for test",
        )
    )


def test_a_retried_run_gets_the_same_promotion(ledger: Ledger) -> None:
    """start_promotion is idempotent per key; the row keeps the first run's facts and aware UTC times."""
    first = _start(ledger)
    again = _start(ledger)
    ledger.set_version(first, "qs-promoter/app/v.qvf", "v1")
    ledger.finish_promotion(first, "succeeded")

    promotion = ledger.promotion("approval:p")

    assert first == again and promotion is not None
    assert (promotion.app_name, promotion.status, promotion.s3_version_id) == ("Sales ✓", "succeeded", "v1")
    assert promotion.started_at.utcoffset() is not None and promotion.finished_at is not None


def test_site_results_are_upserted_per_site(ledger: Ledger) -> None:
    """A retry overwrites the result of a site instead of adding a second row."""
    promotion_id = _start(ledger)
    target = uuid4()
    ledger.record_site_result(
        promotion_id,
        "test",
        mode="overwrite",
        streams=["Everyone"],
        target_app_ids=[],
        status="failed",
        error="x",
    )
    ledger.record_site_result(
        promotion_id,
        "test",
        mode="overwrite",
        streams=["Everyone"],
        target_app_ids=[target],
        status="succeeded",
        backups=[Backup(target, "backups/test/a.qvf", "b1")],
    )
    ledger.record_site_result(
        promotion_id, "prod", mode="duplicate", streams=[], target_app_ids=[], status="ok"
    )

    results = ledger.site_results(promotion_id)

    assert [(r.site, r.status, r.target_app_ids) for r in results] == [
        ("test", "succeeded", (target,)),
        ("prod", "ok", ()),
    ]
    assert ledger.last_backup("test", target) == Backup(target, "backups/test/a.qvf", "b1")
    assert ledger.last_backup("prod", target) is None


def test_the_newest_backup_wins(ledger: Ledger) -> None:
    """Two backups of one target app: the newest is the default; a given version can be asked for."""
    target = uuid4()
    for number in (1, 2):
        promotion_id = _start(ledger, key=f"approval:{number}")
        backup = Backup(target, f"backups/{number}.qvf", f"v{number}")
        ledger.record_site_result(
            promotion_id,
            "test",
            mode="overwrite",
            streams=["E"],
            target_app_ids=[target],
            status="succeeded",
            backups=[backup],
        )

    assert ledger.last_backup("test", target) == Backup(target, "backups/2.qvf", "v2")
    assert ledger.find_backup("test", target, "v1") == Backup(target, "backups/1.qvf", "v1")
    assert ledger.find_backup("test", target, "v9") is None


def test_rollbacks_are_recorded(ledger: Ledger) -> None:
    """A rollback is a row that starts running and ends with a status."""
    target = uuid4()
    rollback_id = ledger.start_rollback("test", target, Backup(target, "k", "v"), requested_by="DEV\\admin")
    ledger.finish_rollback(rollback_id, "succeeded")

    with ledger.engine.connect() as conn:
        row = conn.execute(text("SELECT status, backup_key, requested_by FROM rollbacks")).one()

    assert tuple(row) == ("succeeded", "k", "DEV\\admin")


# --- identity -------------------------------------------------------------------------------


def test_identity_is_remembered_per_source_app_and_site(ledger: Ledger) -> None:
    """targets_for() returns what remember_target() stored for that source app and site only."""
    source, other = uuid4(), uuid4()
    stream_a, stream_b = uuid4(), uuid4()
    first, second = uuid4(), uuid4()
    ledger.remember_target(source, "test", stream_a, "Everyone", first)
    ledger.remember_target(source, "test", stream_b, "Review", second)
    ledger.remember_target(source, "prod", stream_a, "Everyone", uuid4())
    ledger.remember_target(other, "test", stream_a, "Everyone", uuid4())

    assert ledger.targets_for(source, "test") == [
        KnownTarget(stream_a, "Everyone", first),
        KnownTarget(stream_b, "Review", second),
    ]


def test_remembering_again_moves_the_target_and_forgetting_removes_it(ledger: Ledger) -> None:
    """A target app remembered again (now in another stream) is one row; forget_target() drops it."""
    source, app, stream_a, stream_b = uuid4(), uuid4(), uuid4(), uuid4()
    ledger.remember_target(source, "test", stream_a, "A", app)
    ledger.remember_target(source, "test", stream_b, "B", app)
    moved = ledger.targets_for(source, "test")
    ledger.forget_target(source, "test", app)

    assert (moved, ledger.targets_for(source, "test")) == ([KnownTarget(stream_b, "B", app)], [])


# --- emails ---------------------------------------------------------------------------------


def test_each_email_kind_is_claimed_once_per_promotion(ledger: Ledger) -> None:
    """A retried run cannot send the same email twice; a failed send can be released and retried."""
    first = ledger.claim_email("approval:p", "approved", ["rep@x.test"])
    twice = ledger.claim_email("approval:p", "approved", ["rep@x.test"])
    other_kind = ledger.claim_email("approval:p", "results")
    ledger.release_email("approval:p", "results")
    after_release = ledger.claim_email("approval:p", "results")

    assert (first, twice, other_kind, after_release) == (True, False, True, True)
    assert [(e.kind, e.recipients) for e in ledger.emails("approval:p")] == [
        ("approved", ("rep@x.test",)),
        ("results", ()),
    ]


def test_an_email_claimed_by_an_attempt_that_stopped_is_sent_by_the_next(ledger: Ledger) -> None:
    """Attempt 1 claims the approval email and is killed before the SMTP server accepts it: the same
    attempt cannot claim it twice, attempt 2 takes it over (once), and once sent nobody sends it."""
    first = ledger.claim_email("approval:k", "approved", ["rep@x.test"], attempt="run:1")
    again_by_first = ledger.claim_email("approval:k", "approved", ["rep@x.test"], attempt="run:1")
    by_second = ledger.claim_email("approval:k", "approved", ["rep@x.test"], attempt="run:2")
    second_again = ledger.claim_email("approval:k", "approved", ["rep@x.test"], attempt="run:2")
    ledger.email_sent("approval:k", "approved")
    after_sent = ledger.claim_email("approval:k", "approved", ["rep@x.test"], attempt="run:3")

    assert (first, again_by_first, by_second, second_again, after_sent) == (True, False, True, False, False)
    assert [e.kind for e in ledger.emails("approval:k")] == ["approved"]


def test_concurrent_takeovers_of_a_stopped_claim_have_one_winner(ledger: Ledger) -> None:
    """Eight callers of one new attempt race to take over the email a stopped attempt claimed: one sends."""
    ledger.claim_email("approval:race", "results", attempt="run:1")
    results = race(8, lambda _i: ledger.claim_email("approval:race", "results", attempt="run:2"))

    assert results.count(True) == 1


def test_concurrent_email_claims_have_exactly_one_winner(ledger: Ledger) -> None:
    """Eight threads racing to send one email: one sends."""
    results = race(8, lambda _i: ledger.claim_email("approval:mail", "denied"))

    assert results.count(True) == 1


# --- upload slots: the temporary upload name's secret ---------------------------------------


def test_every_attempt_of_a_request_gets_the_same_upload_slot(ledger: Ledger) -> None:
    """The first call records a secret and the time before the upload; later calls (a retried or
    re-run attempt) get exactly that slot back, so they look for the same upload."""
    before = datetime.now(UTC)

    first = ledger.upload_slot("approval:a:v@t", "test")
    again = ledger.upload_slot("approval:a:v@t", "test")

    assert first == again
    assert first.token == upload_token("approval:a:v@t", "test")
    assert re.fullmatch("[0-9a-f]{32}", first.secret)
    assert before - timedelta(seconds=1) <= first.began <= datetime.now(UTC)


def test_an_upload_name_cannot_be_worked_out_from_the_request(ledger: Ledger, tmp_path: Path) -> None:
    """Each site of a request, and the same request in another ledger, gets its own secret: knowing the
    request key (anyone who can read the source app does) does not tell the temporary name."""
    with Ledger(f"sqlite:///{tmp_path / 'other.db'}") as other:
        elsewhere = other.upload_slot("approval:a:v@t", "test")

    test, prod = (ledger.upload_slot("approval:a:v@t", site) for site in ("test", "prod"))

    assert len({test.secret, prod.secret, elsewhere.secret}) == 3
    assert upload_name("Sales", test) != upload_name("Sales", elsewhere)


def test_concurrent_attempts_agree_on_one_upload_slot(ledger: Ledger) -> None:
    """Eight threads asking for the same request's slot at once all get the one the database kept."""
    slots = race(8, lambda _i: ledger.upload_slot("approval:race", "test"))

    assert len(set(slots)) == 1


# --- SQLite specifics -----------------------------------------------------------------------


def test_sqlite_creates_its_folder_and_uses_wal(tmp_path: Path) -> None:
    """The default kind of URL creates the parent folder and runs in WAL mode with a busy timeout."""
    path = tmp_path / "deep" / "var" / "ledger.db"

    with Ledger(f"sqlite:///{path}") as fresh, fresh.engine.connect() as conn:
        modes = (
            conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            conn.exec_driver_sql("PRAGMA busy_timeout").scalar(),
        )

    assert path.is_file() and modes == ("wal", 30000)


def test_two_ledgers_on_one_file_share_claims(tmp_path: Path) -> None:
    """Two processes' ledgers (here two engines) on one SQLite file see each other's claims."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"

    with Ledger(url) as one, Ledger(url) as two:
        results = (one.claim("k", owner="a"), two.claim("k", owner="b"))

    assert results == (True, False)
