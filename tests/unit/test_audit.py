"""The audit CSV the Qlik dashboard loads: one row per site result, UTF-8 with BOM, formula-safe."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from promoter.audit import COLUMNS, export_csv, safe_cell
from promoter.store.ledger import Backup, Ledger, PromotionStart


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh SQLite ledger."""
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as fresh:
        yield fresh


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def promote(ledger: Ledger, key: str, app_id: UUID, name: str, version: str | None = None) -> int:
    promotion_id = ledger.start_promotion(
        PromotionStart(
            key,
            app_id=app_id,
            app_name=name,
            approver="DEV\\boss",
            owner="DEV\\rep",
            action="promote",
            trigger="updated",
        )
    )
    if version:
        ledger.set_version(promotion_id, f"qs-promoter/{app_id}.qvf", version)
    ledger.finish_promotion(promotion_id, "succeeded")
    return promotion_id


def test_one_row_per_site_result_with_the_promotion_fields(ledger: Ledger, tmp_path: Path) -> None:
    """Each site a promotion reached is a row carrying the promotion's who, what and when."""
    app_id, target = uuid4(), uuid4()
    promotion_id = promote(ledger, "approval:1", app_id, "Sales", version="v1")
    backup = Backup(target, "backups/test/t.qvf", "b7")
    ledger.record_site_result(
        promotion_id,
        "test",
        mode="overwrite",
        streams=["Everyone", "Review"],
        target_app_ids=[target],
        status="succeeded",
        backups=[backup],
    )
    ledger.record_site_result(
        promotion_id, "prod", mode="duplicate", streams=["X"], target_app_ids=[], status="failed"
    )
    ledger.claim_email("approval:1", "approved")
    ledger.claim_email("approval:1", "results")

    count = export_csv(ledger, tmp_path / "out" / "audit.csv")
    rows = read(tmp_path / "out" / "audit.csv")

    assert count == 2 and [r["Site"] for r in rows] == ["test", "prod"]
    first = rows[0]
    assert (first["SourceAppId"], first["SourceAppName"], first["Approver"], first["Owner"]) == (
        str(app_id),
        "Sales",
        "DEV\\boss",
        "DEV\\rep",
    )
    assert (first["Mode"], first["Streams"], first["TargetAppIds"], first["SiteStatus"]) == (
        "overwrite",
        "Everyone; Review",
        str(target),
        "succeeded",
    )
    assert (first["S3VersionId"], first["BackupKeys"], first["EmailsSent"]) == (
        "v1",
        "backups/test/t.qvf@b7",
        "approved; results",
    )
    assert first["Timestamp"].endswith("Z") and first["Timestamp"][10] == "T"
    assert list(rows[0]) == list(COLUMNS)


def test_the_file_starts_with_a_bom_and_keeps_unicode(ledger: Ledger, tmp_path: Path) -> None:
    """UTF-8 with BOM, so Qlik and Excel read names like 'Umsätze – Q1' correctly; lines end in CRLF."""
    promote(ledger, "approval:u", uuid4(), "Umsätze – Q1 ✓")
    path = tmp_path / "audit.csv"

    export_csv(ledger, path)
    raw = path.read_bytes()

    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    assert read(path)[0]["SourceAppName"] == "Umsätze – Q1 ✓"


def test_a_denial_without_site_results_still_has_a_row(ledger: Ledger, tmp_path: Path) -> None:
    """A promotion that reached no site (a denial) appears once with the site columns empty."""
    ledger.start_promotion(
        PromotionStart(
            "approval:d",
            app_id=uuid4(),
            app_name="Sales",
            approver="DEV\\boss",
            owner="DEV\\rep",
            action="deny",
            trigger="updated",
        )
    )

    export_csv(ledger, tmp_path / "audit.csv")
    (row,) = read(tmp_path / "audit.csv")

    assert (row["Action"], row["Site"], row["FinishedAt"]) == ("deny", "", "")


def test_version_lineage_names_the_previous_version_of_the_same_app(ledger: Ledger, tmp_path: Path) -> None:
    """PreviousS3VersionId is the version made by the same source app's previous promotion."""
    app_id, other = uuid4(), uuid4()
    for key, source, version in (("a:1", app_id, "v1"), ("b:1", other, "x1"), ("a:2", app_id, "v2")):
        promotion_id = promote(ledger, key, source, "Sales", version=version)
        ledger.record_site_result(
            promotion_id, "test", mode="overwrite", streams=[], target_app_ids=[], status="ok"
        )

    export_csv(ledger, tmp_path / "audit.csv")
    rows = read(tmp_path / "audit.csv")

    assert [(r["S3VersionId"], r["PreviousS3VersionId"]) for r in rows] == [
        ("v1", ""),
        ("x1", ""),
        ("v2", "v1"),
    ]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_starts_are_neutralised(start: str) -> None:
    """A cell starting like a formula is prefixed with a quote; other text is unchanged."""
    assert (safe_cell(f'{start}HYPERLINK("http://x")'), safe_cell("Sales = 1")) == (
        f'\'{start}HYPERLINK("http://x")',
        "Sales = 1",
    )


HIDDEN_FORMULAS = {
    "space =": " =1+1",
    "spaces @": "   @SUM(A1)",
    "LF =": "\n=cmd|' /C calc'!A0",
    "LF space -": "\n -2+3",
    "ideographic space +": "\u3000+1",
    "zero-width space =": "\u200b=1",
    "no-break space -": "\xa0-1",
    "full-width =": '＝HYPERLINK("http://x")',
    "full-width +": "＋1",
    "full-width -": "－1",
    "full-width @": "＠SUM(A1)",
    "space tab full-width =": " \t＝1",
    "small =": "﹦1",
}


@pytest.mark.parametrize("cell", HIDDEN_FORMULAS.values(), ids=HIDDEN_FORMULAS.keys())
def test_formula_signs_behind_blanks_or_in_full_width_are_neutralised(cell: str) -> None:
    """Spreadsheets skip leading spaces and line breaks and may read ＝ ＋ － ＠ as = + - @: such cells
    get the quote too. Text whose first visible character is no formula sign stays as it is."""
    plain = ["", " ", "Sales - Q1", " Sales", "\n", "ＳＡＬＥＳ", "Umsätze – Q1"]

    assert safe_cell(cell) == "'" + cell
    assert [safe_cell(text) for text in plain] == plain


def test_hostile_names_in_the_export_are_inert(ledger: Ledger, tmp_path: Path) -> None:
    """An app name like =cmd|' /C calc'!A0 is written as text, and quotes/newlines survive CSV quoting."""
    hostile = "=cmd|' /C calc'!A0\n\"Sales\", 2"
    promote(ledger, "approval:h", uuid4(), hostile)

    export_csv(ledger, tmp_path / "audit.csv")

    assert read(tmp_path / "audit.csv")[0]["SourceAppName"] == "'" + hostile


def test_the_export_replaces_the_file_whole(ledger: Ledger, tmp_path: Path) -> None:
    """A second export overwrites the first and leaves no partial file behind."""
    path = tmp_path / "audit.csv"
    path.write_text("old", encoding="utf-8")

    count = export_csv(ledger, path)

    assert (count, read(path)) == (0, [])
    assert not list(tmp_path.glob("*.partial"))
