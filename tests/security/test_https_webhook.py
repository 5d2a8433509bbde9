"""An HTTPS webhook, end to end: QRS posts to it only when it trusts its certificate, and `up` and
`doctor` check it as QRS does (against webhook.tls_ca, for the host name in public_base_url).

The webhook's certificate comes from a private CA (trustme), as an enterprise CA or a self-signed
certificate would: none of it is in the system's CAs, so a check that silently fell back to those,
or to no verification at all, fails here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from promoter.approval import approval_key
from promoter.cli.doctor import check_webhook
from promoter.errors import SettingsError
from promoter.notifications import callback_url
from promoter.qrs.client import QrsClient
from promoter.sandbox.server import Sandbox
from promoter.sandbox.serving import tcp_listener
from promoter.sandbox.synthetic import make_app_file
from promoter.sandbox.world import MANAGER, REP, publish_as, set_properties
from promoter.services.stack import Stack, StackOptions, free_port, project_dir
from promoter.settings import Settings, SiteSettings, WebhookSettings
from promoter.store.ledger import Ledger
from promoter.webhook.address import public_address
from tests.e2e.conftest import IN_PROCESS_FLOWS
from tests.fixtures.stack import LiveStack, StartStack, run
from tests.fixtures.webhook_tls import (
    PUBLIC_HOST,
    WebhookCertificates,
    https_webhook_settings,
    issue_webhook_certificates,
    serving_https_webhook,
)

pytestmark = [pytest.mark.security, pytest.mark.e2e]


@dataclass(frozen=True, slots=True)
class RunningWebhook:
    settings: Settings
    certificates: WebhookCertificates

    def trusting(self, ca_file: Path) -> Settings:
        """The same settings, with webhook.tls_ca pointing at another CA certificate."""
        webhook = self.settings.webhook.model_copy(update={"tls_ca": ca_file})
        return self.settings.model_copy(update={"webhook": webhook})


@pytest.fixture
def certificates(tmp_path: Path) -> WebhookCertificates:
    """The webhook's certificate for PUBLIC_HOST only, signed by a private CA."""
    return issue_webhook_certificates(
        tmp_path / "webhook-tls", trustme.CA(organization_name="Acme webhook CA")
    )


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """The certificate of a CA that signed nothing the webhook shows."""
    path = tmp_path / "other-ca.pem"
    trustme.CA(organization_name="Someone else").cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def https_webhook(certificates: WebhookCertificates, tmp_path: Path) -> Iterator[RunningWebhook]:
    """The real webhook app over HTTPS on 127.0.0.1, called back at https://PUBLIC_HOST:port (Prefect
    unreachable: /healthz answers 200 while the outbox and the submitter work)."""
    sock = tcp_listener()
    port = sock.getsockname()[1]
    webhook = https_webhook_settings(certificates, port, tmp_path / "outbox.db")
    settings = Settings(source_site=SiteSettings(host="dev.example"), webhook=webhook)
    with serving_https_webhook(settings, sock, f"http://127.0.0.1:{free_port()}/api"):
        yield RunningWebhook(settings, certificates)


def up_stack(settings: Settings, tmp_path: Path) -> Stack:
    """The Stack that `qs-promoter up` builds for these settings (nothing started)."""
    options = StackOptions(
        config=tmp_path / "qs-promoter.toml", state_dir=tmp_path / "var", project_dir=project_dir()
    )
    return Stack(settings, options, echo=lambda _: None)


# -- settings ------------------------------------------------------------------------------------


def test_a_webhook_certificate_needs_its_key_and_an_https_public_url(
    certificates: WebhookCertificates,
) -> None:
    """tls_cert without tls_key, or with a public_base_url QRS would call over plain HTTP, is refused
    when the settings are read, naming what is missing."""
    with pytest.raises(ValueError, match="set both tls_cert and tls_key"):
        WebhookSettings(public_base_url="https://promoter.example:8787", tls_cert=certificates.cert)
    with pytest.raises(ValueError, match="public_base_url must start with https://"):
        WebhookSettings(
            public_base_url="http://promoter.example:8787",
            tls_cert=certificates.cert,
            tls_key=certificates.key,
        )


def test_a_tls_ca_that_is_not_a_certificate_is_named(
    certificates: WebhookCertificates, tmp_path: Path
) -> None:
    """webhook.tls_ca pointing at the private key instead of the CA certificate: a SettingsError names
    the setting and the file, without any of the key."""
    webhook = https_webhook_settings(certificates, 8787, tmp_path / "outbox.db", tls_ca=certificates.key)

    with pytest.raises(
        SettingsError, match=r"webhook\.tls_ca .*webhook_key\.pem: not a readable PEM"
    ) as caught:
        public_address(webhook)

    assert "PRIVATE KEY" not in str(caught.value)


# -- `up` --------------------------------------------------------------------------------------


def test_up_checks_the_https_webhook_on_loopback_for_its_public_name(
    https_webhook: RunningWebhook, tmp_path: Path
) -> None:
    """`up` reaches the webhook it runs at https://127.0.0.1:port and accepts it: its certificate names
    only the public host, and is verified for that name against webhook.tls_ca."""
    stack = up_stack(https_webhook.settings, tmp_path)

    healthy = stack.webhook_healthy()

    assert stack.webhook_local_url == f"https://127.0.0.1:{https_webhook.settings.webhook.port}"
    assert healthy, stack.webhook_problem


def test_up_refuses_an_https_webhook_that_tls_ca_did_not_sign(
    https_webhook: RunningWebhook, other_ca: Path, tmp_path: Path
) -> None:
    """With webhook.tls_ca naming another CA, the webhook does not count as healthy, and `up` says
    why: the certificate is not trusted (QRS would not deliver to it either)."""
    stack = up_stack(https_webhook.trusting(other_ca), tmp_path)

    healthy = stack.webhook_healthy()

    assert not healthy
    assert stack.webhook_problem.startswith("certificate not trusted"), stack.webhook_problem


# -- `doctor` ----------------------------------------------------------------------------------


def test_doctor_accepts_an_https_webhook_signed_by_tls_ca(https_webhook: RunningWebhook) -> None:
    """doctor's webhook check GETs /healthz at the https public URL, verified against webhook.tls_ca
    (a private CA, in no system store): OK."""
    check = check_webhook(https_webhook.settings)

    assert check.ok, check.line()
    assert check.detail == f"https://{PUBLIC_HOST}:{https_webhook.settings.webhook.port}/healthz is ok"


def test_doctor_fails_an_https_webhook_that_tls_ca_did_not_sign(
    https_webhook: RunningWebhook, other_ca: Path
) -> None:
    """The same webhook checked against another CA: FAIL, "certificate not trusted", and a fix that
    names webhook.tls_ca and the Qlik server's certificate store."""
    check = check_webhook(https_webhook.trusting(other_ca))

    assert not check.ok
    assert "certificate not trusted" in check.detail
    assert "webhook.tls_ca" in check.hint and "Qlik server trust" in check.hint


# -- what QRS does -------------------------------------------------------------------------------


def test_a_qlik_site_delivers_to_the_https_webhook_only_once_it_trusts_the_ca(
    https_webhook: RunningWebhook, sandbox: Sandbox, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """The sandbox QRS verifies the callback's certificate as a Qlik server does: before the webhook's
    CA is in its store, the notification is not delivered (certificate verify failed); after, the
    webhook answers it with 200."""
    dev = sandbox.sites["dev"]
    settings = sandbox_settings.model_copy(update={"webhook": https_webhook.settings.webhook})

    async def subscribe_and_reload() -> None:
        async with QrsClient.for_site(settings, Settings.SOURCE) as qrs:
            await qrs.create_notification(callback_url(settings, "reloaded"), property_name="lastReloadTime")
            app = await qrs.upload_app(make_app_file(tmp_path / "a.qvf", 8192, seed="a"), "A")
            await qrs.reload_app(app.id)
            dev.wait_for_notifications(1, timeout=30)
            dev.trust_ca(https_webhook.certificates.ca)
            await qrs.reload_app(app.id)
            dev.wait_for_notifications(2, timeout=30)

    asyncio.run(subscribe_and_reload())

    untrusted, trusted = dev.notifications()
    assert untrusted["status"] is None and "CERTIFICATE_VERIFY_FAILED" in untrusted["error"]
    assert (trusted["status"], trusted["error"]) == (200, None)


# -- the whole loop ------------------------------------------------------------------------------


def webhook_runs(outbox: Path, app_id: object) -> set[str]:
    """The flow runs the webhook created for an app's notifications (its outbox, read-only)."""
    with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT flow_run_id FROM outbox WHERE app_id = ?", (str(app_id),)).fetchall()
    return {row[0] for row in rows if row[0]}


def claim_owner(ledger: Ledger, key: str) -> str:
    import sqlalchemy as sa

    from promoter.store.ledger import handled

    with ledger.engine.connect() as conn:
        return str(conn.execute(sa.select(handled.c.owner).where(handled.c.key == key)).scalar_one())


@pytest.mark.slow
@IN_PROCESS_FLOWS
def test_an_approval_is_promoted_from_a_notification_posted_over_https(
    start_stack: StartStack, sandbox: Sandbox, certificates: WebhookCertificates, tmp_path: Path
) -> None:
    """webhook.tls_cert/tls_key set and the CA imported on the Qlik server: `up` starts the webhook on
    HTTPS and checks it there, keep-subscriptions registers the https callback URLs, and a manager's
    approval in the QMC reaches the webhook over HTTPS and is promoted by the run it started."""
    port = free_port()
    webhook = https_webhook_settings(certificates, port, tmp_path / "outbox.db")
    dev = sandbox.sites["dev"]
    dev.trust_ca(certificates.ca)

    with start_stack(LiveStack, webhook=webhook) as live:
        assert any(line.startswith(f"webhook: listening at https://127.0.0.1:{port} ") for line in live.log)
        live.wait_subscribed()
        settings, world = live.settings, live.world
        file = make_app_file(tmp_path / "apps" / "tls.qvf", 32 * 1024, seed="tls")
        app = run(publish_as(settings, REP, file, "Sales over TLS", world.sales_stream_id))
        values = {
            "PromoteToServer": ["test - Duplicate"],
            "PromoteToStream": ["Everyone"],
            "PromotionApproval": ["Approve"],
        }
        app = run(set_properties(settings, MANAGER, app.id, world, values))
        key = approval_key(app, settings)

        deadline = time.monotonic() + 240
        with Ledger(settings.ledger_url.get_secret_value()) as ledger:
            while ledger.outcome(key) != "promoted":
                assert time.monotonic() < deadline, ledger.outcome(key)
                time.sleep(1.0)
            owner = claim_owner(ledger, key)
        everyone = world.target_streams["test"]["Everyone"]
        promoted = [
            a for a in live.apps("test") if a.name == app.name and a.stream and a.stream.id == everyone
        ]

    callback_base = f"https://{PUBLIC_HOST}:{port}/qrs/"
    deliveries = [d for d in dev.notifications() if d["url"].startswith(callback_base)]
    about_app = [d for d in deliveries if any(c["objectID"] == str(app.id) for c in d["body"])]
    assert about_app and {d["status"] for d in about_app} == {200}, [d["error"] for d in about_app]
    assert owner in webhook_runs(tmp_path / "outbox.db", app.id)
    assert len(promoted) == 1
