"""Secrets stay secret: one full promotion, then everything it wrote is searched for them.

The settings carry distinctive secrets (the SMTP password, the S3 secret key, the webhook secret)
and each site's client_key.pem. After one approved Overwrite promotion with S3 versioning, a
backup and three emails, none of them (nor the base64 forms SMTP AUTH sends) may appear in the
logs at DEBUG, the Prefect API's runs, states, logs, artifacts and events, the persisted task
results, the ledger, the sandbox's stored apps and notification log, the S3 objects' keys and
metadata, the emails, or the files left in the working folders.

Also covered elsewhere: MailError without the password (tests/mail/test_mail_sending.py), VersioningError
without the keys (tests/versioning/test_s3.py), QrsError without xrfkey or query for a mocked
site (tests/qrs/test_request_format.py), the webhook secret masked in access logs
(tests/webhook/test_receiver.py, tests/webhook/test_auth.py), settings errors without the secret
(tests/unit/test_settings.py).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventOccurredFilter
from pydantic import SecretStr

from promoter.errors import QrsBadRequest, QrsError, QrsNotFound
from promoter.flows.handle import handle_app_change
from promoter.qrs.filters import eq
from promoter.sandbox.certs import CLIENT_KEY, ROOT_KEY
from promoter.sandbox.server import SandboxSite
from promoter.sandbox.smtp import SmtpSandbox
from promoter.settings import load_settings
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage
from tests.security.conftest import leaks, pem_body_lines, secret_forms, site_client
from tests.webhook.support import wait_until

pytestmark = [pytest.mark.security, pytest.mark.e2e, IN_PROCESS_FLOWS]

SMTP_USER = "qsp-mailer"
SMTP_PASSWORD = "smtp-Pw-9fK2xQ7vLr3T"
S3_ACCESS_KEY = "AKIAQSPSECURITY0001"
S3_SECRET_KEY = "s3-Secret/8hJ2+Wm4Qz7Xc1Vb"
WEBHOOK_SECRET = "webhook-Secret-3Nd8Kq5Zr2Lm6Tp9Hx"


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpSandbox]:
    """The e2e SMTP server, with this suite's distinctive account (replaces tests/fixtures/smtp.py's)."""
    with SmtpSandbox(
        security="starttls", username=SMTP_USER, password=SMTP_PASSWORD, folder=tmp_path / "smtp"
    ) as server:
        yield server


def all_secrets(stage: Stage) -> list[str]:
    """Every secret in force, in every form it could leak in."""
    smtp = {
        *secret_forms(SMTP_PASSWORD),
        base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode(),  # AUTH PLAIN, smtplib's form
        base64.b64encode(f"{SMTP_USER}\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode(),  # with authzid
    }
    keys = [
        line
        for site in stage.sandbox.sites.values()
        for pem in (site.cert_dir / CLIENT_KEY, site.cert_dir / ROOT_KEY)
        for line in pem_body_lines(pem)
    ]
    return sorted({*smtp, *secret_forms(S3_SECRET_KEY), *secret_forms(WEBHOOK_SECRET), *keys})


def capture_every_logger(caplog: pytest.LogCaptureFixture) -> list[logging.Logger]:
    """caplog at DEBUG for every logger, also those that do not propagate to the root (prefect, uvicorn)."""
    caplog.set_level(logging.DEBUG)
    isolated = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    for logger in isolated:
        caplog.set_level(logging.DEBUG, logger=logger.name)
        logger.addHandler(caplog.handler)
    return isolated


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter()
    return "\n".join(
        record.getMessage() + (formatter.formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )


async def prefect_records(client: PrefectClient, run_id: UUID, since: datetime) -> dict[str, str]:
    """What the Prefect API holds about the promotion's run: the run, states, task runs, logs and
    artifacts, and every event since ``since``, as JSON text per kind.

    The run is named by its id: the session's Prefect server is shared, and a run of another test
    or of a scheduled deployment that started meanwhile would be waited for here in vain.
    """
    runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    run_ids = [run.id for run in runs]
    assert run_ids == [run_id], "the promotion's flow run is not in the API"
    await wait_until(lambda: finished_logged(client, run_ids), within=15)
    tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)))
    states = [s for run in runs for s in await client.read_flow_run_states(run.id)]
    states += [s for task in tasks for s in await client.read_task_run_states(task.id)]
    logs: list[Any] = []
    while page := await client.read_logs(
        LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=200, offset=len(logs)
    ):
        logs += page
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
    )
    page = await client.read_events(EventFilter(occurred=EventOccurredFilter(since=since)), limit=50)
    events = list(page.events)
    while page.next_page is not None:
        page = await client.read_events_page(str(page.next_page))
        events += page.events
    assert artifacts, "the promotion left no artifact"
    return {
        "flow runs (parameters, names, state messages)": dumps(runs),
        "task runs": dumps(tasks),
        "states and their messages": dumps(states),
        "logs in the API": dumps(logs),
        "artifacts": dumps(artifacts),
        "events": dumps(events),
    }


async def finished_logged(client: PrefectClient, run_ids: list[Any]) -> bool:
    """The engine's last log line of every run has reached the API (logs are sent in batches)."""
    logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=200)
    done = {log.flow_run_id for log in logs if "Finished in state" in log.message}
    return done >= set(run_ids)


def dumps(models: list[Any]) -> str:
    return json.dumps([m.model_dump(mode="json") for m in models], ensure_ascii=False)


def files_under(folder: Path, *, changed_since: float = 0.0, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path not in skip and path.stat().st_mtime >= changed_since
    }


def s3_records(stage: Stage) -> str:
    """Every object version's key and metadata in the bucket."""
    s3, bucket = stage.s3.client(), stage.settings.versioning.bucket
    found = []
    for version in s3.list_object_versions(Bucket=bucket).get("Versions", []):
        head = s3.head_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        found.append({"key": version["Key"], "metadata": head.get("Metadata", {})})
    assert found, "the promotion stored nothing in S3"
    return json.dumps(found, ensure_ascii=False)


@pytest.mark.slow
async def test_one_promotion_leaves_no_secret_anywhere(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    """Approve -> Overwrite with S3 versioning over an existing target app (so a backup is made too):
    the promotion works, and no secret or key line appears in anything it wrote."""
    stage.reconfigure(
        versioning={"access_key_id": SecretStr(S3_ACCESS_KEY), "secret_access_key": SecretStr(S3_SECRET_KEY)},
        webhook={"secret": SecretStr(WEBHOOK_SECRET)},
    )
    secrets = all_secrets(stage)
    results_folder = Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"])
    await stage.seed_target("test", "Sales Dashboard", "Everyone", stage.app_file(seed="old"))
    app = await stage.publish("Sales Dashboard")
    await stage.approve(app.id, ["test - Overwrite"], ["Everyone"], PromotionS3Versioning=["True"])
    isolated = capture_every_logger(caplog)
    started, started_clock = datetime.now(UTC), datetime.now().timestamp()

    try:
        state = await handle_app_change(app.id, "updated", return_state=True)
    finally:
        for logger in isolated:
            logger.removeHandler(caplog.handler)
    reason = await state.aresult()
    assert state.state_details.flow_run_id is not None

    async with get_client() as client:
        written = await prefect_records(client, state.state_details.flow_run_id, started)
    stage.smtp.wait_for(2)  # the approval, the results (carrying the intended targets)
    written["log records at DEBUG"] = logged_text(caplog)
    written["emails (raw bytes)"] = "\n".join(m.raw.decode("utf-8", "replace") for m in stage.smtp.messages)
    written["S3 keys and metadata"] = s3_records(stage)
    written["sandbox notification logs"] = json.dumps(
        [site.notifications() for site in stage.sandbox.sites.values()], default=str
    )
    written["apps on every site"] = dumps([a for name in ("source", "test") for a in await stage.apps(name)])
    written |= files_under(stage.sandbox.data_dir)  # what each QRS stored, app files included
    written |= files_under(stage.tmp, skip=(stage.config,))  # ledger, work folder, SMTP spool
    written |= files_under(results_folder, changed_since=started_clock)  # persisted task results

    # Controls: the secrets were in force and used, and the search does find them where they belong.
    in_force = load_settings(stage.config)
    assert in_force.versioning.secret_access_key == SecretStr(S3_SECRET_KEY)
    assert in_force.webhook.secret == SecretStr(WEBHOOK_SECRET)
    assert {(m.user, m.tls) for m in stage.smtp.messages} == {(SMTP_USER, True)}
    assert len(leaks(stage.config.read_text(encoding="utf-8"), secrets)) >= 3
    assert "backup" in written["S3 keys and metadata"] and len(stage.smtp.messages) >= 2, reason
    assert any(name.endswith("ledger.db") for name in written), "the ledger file was searched"
    loggers = {(r.name.split(".")[0], r.levelno == logging.DEBUG) for r in caplog.records}
    assert {("prefect", False), ("promoter", True), ("httpx", False), ("botocore", True)} <= loggers
    assert "promotion" in written["artifacts"] and "Finished in state" in written["logs in the API"]
    found = {source: leaks(text, secrets) for source, text in written.items()}
    assert {source: hits for source, hits in found.items() if hits} == {}


# -- error messages of failed QRS calls, against a real site ---------------------------------


async def test_failed_qrs_calls_never_show_the_xrfkey_or_the_query(
    dev_site: SandboxSite, caplog: pytest.LogCaptureFixture
) -> None:
    """A filter QRS refuses (400), an app that does not exist (404) and a site that does not answer: each
    QrsError names the call, but neither its message nor a DEBUG log line has the xrfkey or the filter."""
    marker = "Confidential-Project-7Q"
    errors: list[QrsError] = []
    caplog.set_level(logging.DEBUG)

    async with site_client(dev_site) as dev:
        with pytest.raises(QrsBadRequest) as refused:
            await dev.apps(f"name eq '{marker}' and")
        errors.append(refused.value)
        with pytest.raises(QrsNotFound) as missing:
            await dev.count("NoSuchEntity", eq("name", marker))
        errors.append(missing.value)
    async with site_client(dev_site, port=9) as dead:  # the discard port on loopback: nobody listens
        with pytest.raises(QrsError) as unanswered:
            await dead.count("app", eq("name", marker))
        errors.append(unanswered.value)

    shown = [str(error) + repr(error) for error in errors] + [caplog.text]
    assert [text for text in shown if "xrfkey" in text.lower() or marker in text or "?" in text] == []
    assert [(e.method, e.status) for e in errors] == [("GET", 400), ("GET", 404), ("GET", None)]
