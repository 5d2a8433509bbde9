"""Hostile app names end to end: promoted under their exact name, with safe emails and S3 keys."""

from __future__ import annotations

import html
import re
from email import policy
from email.parser import BytesParser

import pytest

from promoter.flows.handle import handle_app_change
from promoter.mail_headers import one_line
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage

pytestmark = IN_PROCESS_FLOWS

NAMES = {
    "markup": """Q1'25 "Sales" & #5 / 50% <script>alert('x')</script>""",
    "header injection": "Sales\r\nBcc: thief@evil.example\r\n\r\n<b>body</b>",
    "255 characters": ("Überblick über die Umsätze – 販売データ 😀 " * 10)[:255],
}
SAFE_KEY = re.compile(r"[A-Za-z0-9._/-]+")


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
async def test_a_hostile_name_is_promoted_as_it_is_and_stays_inert_in_emails_and_s3(
    stage: Stage, name: str
) -> None:
    """Duplicate to Everyone and Review with S3 versioning: both copies carry the exact name, no temporary
    app stays, every email has one Subject on one line and escaped HTML, the S3 key is the app id's."""
    app = await stage.publish(name)
    await stage.approve(app.id, ["test - Duplicate"], ["Everyone", "Review"], PromotionS3Versioning=["True"])

    await handle_app_change(app.id, "updated")

    assert sorted((a.name, a.stream.name if a.stream else "-") for a in await stage.apps("test")) == [
        (name, "Everyone"),
        (name, "Review"),
    ]
    assert not [a for site in ("source", "test") for a in await stage.apps(site) if "[qs-promoter" in a.name]
    received = stage.smtp.messages
    assert len(received) == 2  # the approval, the results (carrying the intended targets)
    for mail in received:
        message = BytesParser(policy=policy.default).parsebytes(mail.raw)
        assert len(message.get_all("Subject")) == 1 and "\n" not in str(message["Subject"])
        assert message.get_all("Bcc") is None and set(mail.rcpt_tos) <= {
            "sam.rep@acme.example",
            "morgan.manager@acme.example",
        }
        page = message.get_body(("html",)).get_content()
        assert "<script>" not in page and "<b>body</b>" not in page
        assert html.escape(one_line(name)) in page
    (version,) = stage.s3.client().list_object_versions(Bucket=stage.settings.versioning.bucket)["Versions"]
    assert version["Key"].startswith(f"{stage.settings.versioning.prefix}apps/{app.id}/")
    assert SAFE_KEY.fullmatch(version["Key"]) and ".." not in version["Key"]
