"""Lineage in the ledger: the copy each unpublish gives the owner continues its app (SQLite, PostgreSQL)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa

from promoter.audit import export_csv
from promoter.planning import KnownTarget
from promoter.store.ledger import Ledger, Lineage, PromotionStart
from tests.fixtures.postgres import postgres_url, throwaway_database


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh ledger database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'var' / 'ledger.db'}"
        return
    pytest.importorskip("psycopg", reason="psycopg is needed for the PostgreSQL ledger")
    with throwaway_database("qsp_lineage") as name:
        if name is None:
            pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
        yield postgres_url(name)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger(ledger_url) as fresh:
        yield fresh


def test_an_app_that_is_no_copy_is_its_own_root(ledger: Ledger) -> None:
    """Without a recorded copy, an app's history is its own, under its own name."""
    app = uuid4()

    assert (ledger.lineage(app, "Sales"), ledger.lineage_root(app)) == (Lineage(app, app, "Sales"), app)


def test_every_copy_of_a_chain_continues_the_first_app_under_its_first_name(ledger: Ledger) -> None:
    """A's unpublish gives copy B; B (renamed) is approved and unpublished into copy C: B and C both
    continue A, under the name A had, and each names the app it was copied from."""
    a, b, c = uuid4(), uuid4(), uuid4()

    first = ledger.continue_lineage(b, a, "Sales")
    second = ledger.continue_lineage(c, b, "Sales 2025")

    assert first == Lineage(b, a, "Sales", continues_app_id=a)
    assert second == Lineage(c, a, "Sales", continues_app_id=b)
    assert ledger.lineage(c, "whatever it is called now") == second
    assert ledger.lineage_apps(a) == [a, b, c]
    assert ledger.lineage_roots() == {b: a, c: a}


def test_recording_a_copy_again_changes_nothing(ledger: Ledger) -> None:
    """A retried unpublish records the same copy again: one row, the first answer."""
    a, b = uuid4(), uuid4()
    first = ledger.continue_lineage(b, a, "Sales")

    again = ledger.continue_lineage(b, a, "Sales")

    assert again == first
    assert ledger.lineage_apps(a) == [a, b]


def test_a_copy_finds_and_keeps_the_targets_its_root_became(ledger: Ledger) -> None:
    """Targets remembered for A are the copy's known targets; what the copy remembers or forgets
    changes A's rows, so a third cycle sees the second cycle's placements."""
    a, b = uuid4(), uuid4()
    stream, other_stream, target, second_target = uuid4(), uuid4(), uuid4(), uuid4()
    ledger.remember_target(a, "test", stream, "Everyone", target)
    ledger.continue_lineage(b, a, "Sales")

    found = ledger.targets_for(b, "test")
    ledger.remember_target(b, "test", other_stream, "Review", target)
    ledger.remember_target(b, "test", stream, "Everyone", second_target)
    ledger.forget_target(b, "test", second_target)

    assert found == [KnownTarget(stream, "Everyone", target)]
    assert (
        ledger.targets_for(a, "test")
        == ledger.targets_for(b, "test")
        == [KnownTarget(other_stream, "Review", target)]
    )
    assert ledger.target_lineage("test", target) == [a, b]
    assert ledger.target_lineage("prod", target) == []


def test_a_ledger_from_before_lineage_gets_the_table_and_keeps_its_targets(ledger_url: str) -> None:
    """A ledger written before lineage existed (no app_lineage table) is opened, gains the table, and
    the targets it remembered for an app are found through that app's copies."""
    a, b, stream, target = uuid4(), uuid4(), uuid4(), uuid4()
    with Ledger(ledger_url) as old:
        old.remember_target(a, "test", stream, "Everyone", target)
        with old.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE app_lineage"))
        assert "app_lineage" not in sa.inspect(old.engine).get_table_names()

    with Ledger(ledger_url) as migrated:
        migrated.continue_lineage(b, a, "Sales")
        known = migrated.targets_for(b, "test")

    assert known == [KnownTarget(stream, "Everyone", target)]


def test_the_audit_export_follows_an_app_across_its_copies(ledger: Ledger, tmp_path: Path) -> None:
    """Two approval cycles of one app (A, then its copy B) and another app: B's PreviousS3VersionId is
    A's version, and LineageAppId is A on both cycles' rows."""
    a, b, other = uuid4(), uuid4(), uuid4()
    promote(ledger, "a:1", a, "v1")
    ledger.continue_lineage(b, a, "Sales")
    promote(ledger, "o:1", other, "x1")
    promote(ledger, "b:1", b, "v2")

    export_csv(ledger, tmp_path / "audit.csv")
    with (tmp_path / "audit.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert [
        (r["SourceAppId"], r["S3VersionId"], r["PreviousS3VersionId"], r["LineageAppId"]) for r in rows
    ] == [
        (str(a), "v1", "", str(a)),
        (str(other), "x1", "", str(other)),
        (str(b), "v2", "v1", str(a)),
    ]


def promote(ledger: Ledger, key: str, app_id: UUID, version: str) -> None:
    promotion_id = ledger.start_promotion(
        PromotionStart(
            key,
            app_id=app_id,
            app_name="Sales",
            approver=None,
            owner=None,
            action="promote",
            trigger="updated",
        )
    )
    ledger.set_version(promotion_id, f"qs-promoter/apps/{app_id}/Sales.qvf", version)
    ledger.finish_promotion(promotion_id, "done")
