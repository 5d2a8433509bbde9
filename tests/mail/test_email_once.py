"""Each kind of email goes out once per promotion, also when the attempt sending it was killed."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from promoter.mail_messages import AppSummary, render_approval
from promoter.sandbox.smtp import SmtpSandbox
from promoter.settings import Settings, SiteSettings, write_settings
from promoter.store.ledger import Ledger
from promoter.tasks.mail import send_email
from tests.e2e.conftest import IN_PROCESS_FLOWS

# Flows run in this process: Prefect leaves its per-loop API clients to the garbage collector.
pytestmark = [pytest.mark.e2e, IN_PROCESS_FLOWS]

KEY = "approval:6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f:1"
APP = AppSummary("6f0f4d5e-2b1a-4c3d-9e8f-0a1b2c3d4e5f", "Sales KPIs", "Bob Owner", "Sales", "https://q/app")


@flow(name="email-once-test")
async def approval_email(sender: str) -> bool:
    message = render_approval(APP, approver="Mary", sender=sender, to=["o@x.test"])
    return await send_email(KEY, "approved", message)


@pytest.fixture
def ledger_url(smtp_server: SmtpSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{(tmp_path / 'ledger.db').as_posix()}"
    settings = Settings(
        source_site=SiteSettings(host="qlik-dev.invalid"), email=smtp_server.settings(), ledger_url=url
    )
    monkeypatch.setenv("QSP_CONFIG", str(write_settings(settings, tmp_path / "qs-promoter.toml")))
    return url


async def test_an_email_whose_attempt_was_killed_mid_send_goes_out_once_by_the_next(
    prefect_api: str, smtp_server: SmtpSandbox, ledger_url: str
) -> None:
    """An earlier attempt claimed the approval email and was killed before the SMTP server accepted
    it (its claim is left in the ledger): the next run sends it, under the Message-ID every attempt
    of this request gives it; a run after that sends nothing."""
    with Ledger(ledger_url) as ledger:
        assert ledger.claim_email(KEY, "approved", ["o@x.test"], attempt="killed-run:1")
    sender = smtp_server.settings().sender

    sent_now = await approval_email(sender)
    sent_again = await approval_email(sender)

    [received] = smtp_server.wait_for(1)
    assert (sent_now, sent_again) == (True, False)
    message_id = str(received.message["Message-ID"]).strip()
    assert message_id.startswith("<qs-promoter.") and message_id.endswith("@sandbox.test>")
    assert "6f0f4d5e" not in message_id  # a hash of the request: the key is not shown
    with Ledger(ledger_url) as ledger:
        assert [e.kind for e in ledger.emails(KEY)] == ["approved"]
        # sent: a third attempt takes nothing over
        assert not ledger.claim_email(KEY, "approved", ["o@x.test"], attempt="later-run:1")
