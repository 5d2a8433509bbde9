"""`qs-promoter doctor`: check settings, certificates, each QRS, the Qlik setup, SMTP, S3, Prefect, webhook.

One line per check, OK or FAIL, and for a failure what to do about it. The exit code is 1 when
any check failed. Nothing is changed anywhere (except the test email, when asked for one).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

from promoter.cli.options import ConfigFile, StateDir
from promoter.errors import MailError, PromoterError, QrsError, QrsRefused, SettingsError, VersioningError
from promoter.prefect_api import HANDLE_CHANGE
from promoter.qrs.tls import (
    CLIENT_CERT,
    CLIENT_KEY,
    ROOT_CERT,
    try_client_certificate,
    unreported_key_exposure,
)
from promoter.settings import Settings, config_path, load_settings

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from promoter.qlik_setup import Survey
    from promoter.services.stack import UpRecord

DEFAULT_PREFECT_API = "http://127.0.0.1:4200/api"
CHECK_TIMEOUT = 10.0
SETUP_FIX = "run `qs-promoter qlik setup` (with --dry-run first to see what it changes)"
EXAMPLE_SETTINGS = "qs-promoter.example.toml"

SendTestEmail = Annotated[
    str | None,
    typer.Option(
        "--send-test-email",
        metavar="ADDRESS",
        help="Also send a test message to this address through the configured SMTP server.",
        show_default=False,
    ),
]


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one check: what was checked, whether it passed, what was seen, how to fix it.

    A warning passes (the exit code stays 0) but is something to fix before production.
    """

    name: str
    ok: bool
    detail: str
    hint: str = ""
    warning: bool = False

    def line(self) -> str:
        status = "FAIL" if not self.ok else "WARN" if self.warning else "OK  "
        text = f"{status}  {self.name}: {self.detail}"
        shown = self.hint and (not self.ok or self.warning)
        return f"{text}\n      fix: {self.hint}" if shown else text


def doctor(
    config: ConfigFile = None, send_test_email: SendTestEmail = None, state_dir: StateDir = None
) -> None:
    """Check everything qs-promoter needs before the first run; exit code 1 if anything failed."""
    failed = warned = 0
    for check in run_checks(config, send_test_email, state_dir):
        typer.echo(check.line())
        failed += not check.ok
        warned += check.ok and check.warning
    warnings = f" ({warned} warning(s))" if warned else ""
    typer.echo(f"\n{failed} check(s) failed{warnings}" if failed else f"\nall checks passed{warnings}")
    if failed:
        raise typer.Exit(1)


def run_checks(
    config: Path | None, test_address: str | None = None, state_dir: Path | None = None
) -> Iterator[Check]:
    """Every check in order; later checks are skipped when the settings cannot be read."""
    from promoter.cli.up import state_folder
    from promoter.services.stack import UpRecord

    path = config_path(config)
    if not path.is_file():
        yield Check(
            "settings", False, f"no settings file at {os.path.abspath(path)}", copy_example_hint(path)
        )
        return
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        yield Check("settings", False, str(exc), "correct the file (see qs-promoter.example.toml)")
        return
    yield Check("settings", True, f"{os.path.abspath(path)} is valid")
    state = state_folder(config, state_dir)
    up_record = UpRecord.read(state)
    yield check_state(settings, up_record)
    yield check_webhook_secret(settings)
    source_answers = False
    for site in [Settings.SOURCE, *settings.target_sites]:
        certificates = check_certificates(settings, site)
        yield certificates
        if certificates.ok:
            qrs = check_qrs(settings, site)
            source_answers = source_answers or (site == Settings.SOURCE and qrs.ok)
            yield qrs
    if source_answers:
        yield check_qlik_setup(settings)
    if settings.email.enabled or test_address:
        yield check_smtp(settings, test_address)
    if settings.versioning.enabled:
        yield check_s3(settings)
    api_url, source = prefect_target(up_record, state)
    prefect = check_prefect(api_url, source, up_record, state)
    yield prefect
    if prefect.ok:
        yield check_deployments(api_url)
    yield check_webhook(settings)


def copy_example_hint(path: Path) -> str:
    """How to make the settings file ``path`` from the commented example, in this system's words."""
    target = os.path.abspath(path)
    example = example_settings_file()
    if example is None:
        copy = f"copy {EXAMPLE_SETTINGS} (in the qs-promoter sources) to {target}"
    else:
        copy = f'{"copy" if os.name == "nt" else "cp"} "{example}" "{target}"'
    return f"copy the commented example, then fill in your sites: {copy} (or pass --config FILE)"


def example_settings_file() -> Path | None:
    """The commented example settings file beside the package (a source checkout), if there is one."""
    import promoter

    for folder in (Path.cwd(), Path(promoter.__file__).resolve().parent.parent):
        if (folder / EXAMPLE_SETTINGS).is_file():
            return folder / EXAMPLE_SETTINGS
    return None


def check_state(settings: Settings, up_record: UpRecord | None) -> Check:
    """Where the ledger, outbox, work folder, certificates and results are, as absolute paths
    (relative ones start at the settings file's folder, in every process)."""
    ledger = settings.ledger_file()
    fresh = {"ledger": f"{ledger} (not created yet)"} if ledger and not ledger.is_file() else {}
    results = up_record.results if up_record else prefect_results_folder()
    return Check("state", True, settings.state_line(results=results, **fresh).removeprefix("state: "))


def prefect_results_folder() -> str:
    """Where Prefect keeps persisted task results for a process started with this environment."""
    from prefect.settings import get_current_settings

    return os.path.abspath(get_current_settings().results.local_storage_path)


def check_webhook_secret(settings: Settings) -> Check:
    from promoter.webhook.auth import require_secret

    try:
        require_secret(settings.webhook)
    except SettingsError as exc:
        return Check("webhook secret", False, str(exc).split(";")[0], "set QSP_WEBHOOK__SECRET")
    return Check("webhook secret", True, "set and long enough")


def check_certificates(settings: Settings, site: str) -> Check:
    """client.pem, client_key.pem and root.pem exist in the site's folder, the key loads without a
    password, and (a warning) no other user of this machine can read it."""
    folder = settings.cert_dir(site)
    name = f"{site} certificates"
    hint = (
        f"export the certificates from the {site} site's QMC (Certificates > Export, PEM format, "
        f"no password) and put client.pem, client_key.pem and root.pem into {folder}"
    )
    problems = []
    for file in (CLIENT_CERT, CLIENT_KEY, ROOT_CERT):
        try:
            if b"-----BEGIN" not in (folder / file).read_bytes():
                problems.append(f"{file} is not PEM")
        except FileNotFoundError:
            problems.append(f"{file} missing")
        except OSError as exc:
            problems.append(f"{file} unreadable ({exc.strerror or exc})")
    if problems:
        return Check(name, False, f"{folder}: {', '.join(problems)}", hint)
    try:
        try_client_certificate(folder, site)
    except SettingsError as exc:
        return Check(name, False, str(exc), hint)
    exposed = unreported_key_exposure(folder)
    if exposed:
        return Check(name, True, exposed, f"chmod 600 {folder / CLIENT_KEY}", warning=True)
    return Check(name, True, f"{folder}: client.pem, client_key.pem, root.pem")


def check_qrs(settings: Settings, site: str) -> Check:
    """TLS handshake with the site's certificates and an authenticated GET /qrs/about."""
    from promoter.qrs.client import QrsClient
    from promoter.qrs.retry import RetryPolicy

    config = settings.site(site)
    quick = config.model_copy(update={"timeout_seconds": min(config.timeout_seconds, CHECK_TIMEOUT)})
    name = f"{site} QRS"

    async def about() -> str:
        async with QrsClient(quick, settings.cert_dir(site), name=site, retry=RetryPolicy(attempts=1)) as qrs:
            return (await qrs.about()).build_version

    try:
        version = asyncio.run(about())
    except QrsRefused as exc:
        return Check(
            name,
            False,
            f"{config.base_url} refused the certificate user ({exc.status})",
            f"the user {config.user_directory}\\{config.user_id} must exist and may use QRS; the "
            "certificates must come from this site's QMC",
        )
    except QrsError as exc:
        return Check(
            name, False, f"{config.base_url}: {exc.body_excerpt or exc}", qrs_hint(exc, site, config.port)
        )
    except PromoterError as exc:
        return Check(name, False, str(exc), "check the certificate files")
    return Check(name, True, f"{config.base_url} answered /qrs/about (Qlik Sense {version})")


def check_qlik_setup(settings: Settings) -> Check:
    """The custom properties and the tag qs-promoter reads exist on the source site as the settings
    and the target sites' streams want them (what `qs-promoter qlik setup` would change)."""
    from promoter.qlik_setup import survey
    from promoter.qrs.client import QrsClient
    from promoter.qrs.retry import RetryPolicy

    name = "Qlik setup"

    async def read() -> Survey:
        source = QrsClient.for_site(settings, Settings.SOURCE, retry=RetryPolicy(attempts=1))
        async with source:
            return await survey(settings, source)

    try:
        found = asyncio.run(read())
    except PromoterError as exc:
        return Check(name, False, f"could not read the source site's custom properties: {exc}", SETUP_FIX)
    plan = found.plan
    if plan.problems:
        return Check(name, False, "; ".join(plan.problems), SETUP_FIX)
    if plan.notes:
        return Check(name, True, "; ".join(n.text for n in plan.notes), plan.notes[0].hint, warning=True)
    return Check(name, True, f"the source site has {', '.join(plan.in_order)}")


def qrs_hint(exc: QrsError, site: str, port: int) -> str:
    """What an admin can do about a QRS call that got no usable answer."""
    text = (exc.body_excerpt or "").lower()
    key = "source_site" if site == Settings.SOURCE else f"target_sites.{site}"
    if "certificate verify failed" in text or "hostname mismatch" in text:
        return (
            f"root.pem does not match the server certificate, or {key}.host is not the name in it "
            "(use the central node's name as the QMC shows it)"
        )
    if any(word in text for word in ("alert", "handshake", "unknown ca", "bad certificate")):
        return "the site did not accept client.pem: export the certificates again from this site's QMC"
    if exc.status is not None:
        return f"QRS answered {exc.status}; see the Qlik Repository Service log on the central node"
    return f"is port {port} ({key}.port) of the central node open to this machine (firewall)?"


def check_smtp(settings: Settings, test_address: str | None) -> Check:
    """Log in as sending would (STARTTLS/TLS, AUTH); with an address, also send the test message."""
    from promoter import mail_messages, mail_sending
    from promoter.addresses import is_valid_address

    email = settings.email
    server = f"{email.smtp_host}:{email.smtp_port}"
    quick = email.model_copy(update={"timeout_seconds": min(email.timeout_seconds, CHECK_TIMEOUT)})
    try:
        if test_address:
            if not is_valid_address(test_address):
                return Check("SMTP", False, f"{test_address!r} is not an email address", "give one address")
            message = mail_messages.render_test_mail(sender=email.sender, to=[test_address])
            mail_sending.send(message, quick.model_copy(update={"enabled": True}))
        else:
            mail_sending.check_login(quick)
    except MailError as exc:
        return Check("SMTP", False, str(exc), smtp_hint(exc))
    sent = f"; test message sent to {test_address}" if test_address else ""
    login = f" as {email.username}" if email.username else ""
    disabled = " (email.enabled is false: nothing is sent in production)" if not email.enabled else ""
    return Check("SMTP", True, f"{server} accepted the login{login} over {email.security}{sent}{disabled}")


def smtp_hint(exc: MailError) -> str:
    text = str(exc).lower()
    if "user or password" in text:
        return "check email.username and QSP_EMAIL__PASSWORD"
    if "certificate" in text or "ca_file" in text:
        return "set email.ca_file to the CA (PEM) that signed the SMTP server's certificate"
    if "starttls" in text or "tls" in text:
        return "check email.security (starttls on 587/25, tls on 465) and email.smtp_port"
    return "check email.smtp_host and email.smtp_port, and that this machine may reach the server"


def check_s3(settings: Settings) -> Check:
    """The bucket exists, answers and has versioning Enabled."""
    from promoter.versioning import ensure_bucket_versioning, s3_client

    versioning = settings.versioning
    where = f"s3://{versioning.bucket}" + (
        f" at {versioning.endpoint_url}" if versioning.endpoint_url else ""
    )
    try:
        s3 = s3_client(versioning)
        try:
            ensure_bucket_versioning(s3, versioning.bucket)
        finally:
            s3.close()
    except VersioningError as exc:
        return Check(
            "S3",
            False,
            str(exc),
            "create the bucket with versioning Enabled, or check versioning.bucket, endpoint_url, keys",
        )
    return Check("S3", True, f"{where} reachable, versioning Enabled")


def prefect_api_url() -> tuple[str, bool]:
    """PREFECT_API_URL as Prefect sees it, or the address `qs-promoter up` uses; and whether it was set."""
    from prefect.settings import PREFECT_API_URL

    value = PREFECT_API_URL.value()
    return (str(value).rstrip("/"), True) if value else (DEFAULT_PREFECT_API, False)


def prefect_target(up_record: UpRecord | None, state: Path) -> tuple[str, str]:
    """The Prefect API to check and where that address came from: PREFECT_API_URL, else the server
    a running `qs-promoter up` recorded in the state folder, else the default of `up`."""
    url, configured = prefect_api_url()
    if configured:
        return url, "PREFECT_API_URL"
    if up_record is not None:
        return up_record.api_url.rstrip("/"), f"recorded by `qs-promoter up` in {state}"
    return url, "default of `qs-promoter up`"


def up_relation(url: str, up_record: UpRecord | None, state: Path) -> str:
    """Whether ``url`` is the Prefect server of the `qs-promoter up` that uses this state folder."""
    if up_record is None:
        return f"no `qs-promoter up` runs with the state folder {state}"
    up = f"`qs-promoter up` (pid {up_record.pid})"
    if up_record.api_url.rstrip("/") != url:
        return f"not the server {up} uses: {up_record.api_url}"
    return f"the server {up} {'started' if up_record.started_server else 'uses (it did not start it)'}"


def check_prefect(url: str, source: str, up_record: UpRecord | None, state: Path) -> Check:
    """The Prefect API answers /health; the line names it and whether `up` started it."""
    relation = f"; {up_relation(url, up_record, state)}"
    other_up = up_record is not None and up_record.api_url.rstrip("/") != url
    try:
        answer = httpx.get(f"{url}/health", timeout=CHECK_TIMEOUT, trust_env=False)
        healthy = answer.status_code == 200 and answer.json() is True
    except (httpx.HTTPError, ValueError) as exc:
        healthy, answer = False, exc
    if not healthy:
        seen = f"HTTP {answer.status_code}" if isinstance(answer, httpx.Response) else type(answer).__name__
        return Check(
            "Prefect API",
            False,
            f"{url} ({source}) did not answer /health ({seen}){relation}",
            f"set PREFECT_API_URL={up_record.api_url}"
            if other_up and up_record is not None
            else "start it with `qs-promoter up`, or set PREFECT_API_URL to the running server",
        )
    if other_up and up_record is not None:
        return Check(
            "Prefect API",
            True,
            f"{url} ({source}) is healthy{relation}",
            f"set PREFECT_API_URL={up_record.api_url} to check the server of `qs-promoter up`",
            warning=True,
        )
    return Check("Prefect API", True, f"{url} ({source}) is healthy{relation}")


def check_deployments(url: str) -> Check:
    """handle-app-change/on-qrs-change is registered (the webhook's flow runs are made from it)."""
    from promoter.prefect_api import with_prefect

    async def read(client: PrefectClient) -> None:
        await client.read_deployment_by_name(HANDLE_CHANGE)

    try:
        asyncio.run(with_prefect(url, read))
    except Exception as exc:  # ObjectNotFound, or the API failing: both mean "not usable"
        return Check(
            "deployments",
            False,
            f"{HANDLE_CHANGE} not found ({type(exc).__name__})",
            "register them with `qs-promoter up --register-only`",
        )
    return Check("deployments", True, f"{HANDLE_CHANGE} is registered")


def check_webhook(settings: Settings) -> Check:
    """GET /healthz at the public URL, verified as QRS verifies it: the address QRS calls must reach
    a running webhook, and an HTTPS one must show a certificate from webhook.tls_ca (else a system CA)."""
    from promoter.webhook.address import public_address, unreachable_reason, untrusted_certificate

    try:
        address = public_address(settings.webhook)
    except SettingsError as exc:
        return Check("webhook", False, str(exc), "point webhook.tls_ca at the PEM CA certificate of tls_cert")
    url = address.health_url
    try:
        answer = address.health(timeout=CHECK_TIMEOUT)
    except httpx.HTTPError as exc:
        if untrusted_certificate(exc):
            return Check(
                "webhook",
                False,
                f"{url}: {unreachable_reason(exc)}",
                "issue webhook.tls_cert for the host in webhook.public_base_url from the CA in "
                "webhook.tls_ca, and make the Qlik server trust that CA (its Windows certificate store)",
            )
        return Check(
            "webhook",
            False,
            f"{url}: no answer ({unreachable_reason(exc)})",
            "start it (`qs-promoter up` or `qs-promoter webhook serve`), and make webhook.public_base_url "
            "an address the Qlik server can reach (firewall, host name)",
        )
    if answer.status_code != 200:
        return Check(
            "webhook",
            False,
            f"{url} answered {answer.status_code}",
            "read its log: the outbox or the submitter is not working",
        )
    return Check("webhook", True, f"{url} is ok")
