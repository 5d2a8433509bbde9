"""Export the ledger as CSV for the Qlik auditing dashboard: one row per site a promotion reached.

The file is UTF-8 with a byte order mark. Qlik's load script detects the encoding from the BOM
(without one it may fall back to the Windows code page unless the script says ``utf8``), and
Excel, where admins also open the file, needs the BOM to show non-ASCII app names correctly.

App names, streams and errors are user input and the file is opened in spreadsheets, so a cell
that starts with = + - @ (or a tab or carriage return) is prefixed with a single quote: it is
shown as text and never evaluated as a formula (OWASP "CSV injection"). Spreadsheets also trim
leading spaces and line breaks and may read the full-width ＝ ＋ － ＠ as the ASCII signs, so those
count as formula starts too.

LineageAppId is the app whose history a row belongs to: the app itself, or, for the copy an
approval's unpublish gave the owner, the first app of that chain. PreviousS3VersionId follows it,
so a dashboard sees every approval cycle of one app as one history.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

from promoter.qrs.models import format_qrs_time
from promoter.store.ledger import Ledger, Promotion, SiteResult

COLUMNS = (
    "PromotionId",
    "Timestamp",
    "FinishedAt",
    "Trigger",
    "Action",
    "PromotionStatus",
    "SourceAppId",
    "SourceAppName",
    "Approver",
    "Owner",
    "Site",
    "Mode",
    "Streams",
    "TargetAppIds",
    "SiteStatus",
    "SiteError",
    "S3Key",
    "S3VersionId",
    "PreviousS3VersionId",
    "BackupKeys",
    "EmailsSent",
    "LineageAppId",
)
_FORMULA_SIGNS = ("=", "+", "-", "@")
_CONTROL_STARTS = ("\t", "\r")
# Several values in one cell: the dashboard splits them with SubField(field, '; ').
_JOIN = "; "


def safe_cell(value: object) -> str:
    """One value as a CSV cell that a spreadsheet will not evaluate."""
    text = "" if value is None else str(value)
    return "'" + text if looks_like_formula(text) else text


def looks_like_formula(text: str) -> bool:
    """True when a spreadsheet may evaluate the cell: a tab or CR first, or = + - @ as the first visible
    character, also behind spaces, line breaks or invisible characters, and in full-width or small form."""
    if text.startswith(_CONTROL_STARTS):
        return True
    first = next((ch for ch in text if not _invisible(ch)), "")
    # NFKC folds the compatibility forms (＝ U+FF1D, ﹦ U+FE66, ...) onto the ASCII signs.
    return unicodedata.normalize("NFKC", first).startswith(_FORMULA_SIGNS)


def _invisible(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")  # Cf: zero-width space, BOM ...


def _iso(value: datetime | None) -> str:
    return "" if value is None else format_qrs_time(value)


def audit_rows(ledger: Ledger) -> Iterator[list[str]]:
    """The rows of the export, header first; promotions without a site result (a denial) get one row."""
    yield list(COLUMNS)
    by_promotion: dict[int, list[SiteResult]] = {}
    for result in ledger.site_results():
        by_promotion.setdefault(result.promotion_id, []).append(result)
    emails: dict[str, list[str]] = {}
    for email in ledger.emails():
        emails.setdefault(email.promotion_key, []).append(email.kind)
    # The owner's copy an unpublish made continues its app: versions follow the lineage root.
    roots = ledger.lineage_roots()
    previous_version: dict[UUID, str] = {}
    for promotion in ledger.promotions():
        root = roots.get(promotion.app_id, promotion.app_id)
        previous = previous_version.get(root, "")
        if promotion.s3_version_id:
            previous_version[root] = promotion.s3_version_id
        sites: list[SiteResult | None] = list(by_promotion.get(promotion.id, [])) or [None]
        for result in sites:
            row = _row(promotion, result, previous, emails.get(promotion.key, []), root)
            yield [safe_cell(v) for v in row]


def _row(
    promotion: Promotion, result: SiteResult | None, previous: str, emails: list[str], root: UUID
) -> list[object]:
    site: list[object] = ["", "", "", "", "", "", ""]
    if result is not None:
        site = [
            result.site,
            result.mode,
            _JOIN.join(result.streams),
            _JOIN.join(str(i) for i in result.target_app_ids),
            result.status,
            result.error,
            _JOIN.join(f"{b.key}@{b.version_id or ''}" for b in result.backups),
        ]
    return [
        promotion.id,
        _iso(promotion.started_at),
        _iso(promotion.finished_at),
        promotion.trigger,
        promotion.action,
        promotion.status,
        promotion.app_id,
        promotion.app_name,
        promotion.approver,
        promotion.owner,
        *site[:6],
        promotion.s3_key,
        promotion.s3_version_id,
        previous,
        site[6],
        _JOIN.join(emails),
        root,
    ]


def export_csv(ledger: Ledger, path: Path) -> int:
    """Write the audit CSV to ``path`` (replacing it whole); returns the number of data rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    count = -1
    # Written aside and renamed, so a dashboard reload never reads half a file.
    with partial.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        for row in audit_rows(ledger):
            writer.writerow(row)
            count += 1
    partial.replace(path)
    return count
