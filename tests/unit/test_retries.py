"""The retry map: the test mode, and ``transient`` as the one answer of the exception family."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import Failed

from promoter.errors import (
    IntakeError,
    MailError,
    PromoterError,
    QrsError,
    SettingsError,
    SiteFailed,
    VersioningError,
    error_for_status,
)
from promoter.flows.delivery import deliver_to_site
from promoter.qrs.retry import RetryPolicy
from promoter.services.stack import Stack, StackOptions
from promoter.settings import Settings, SiteSettings, WebhookSettings
from promoter.tasks import retries, site
from promoter.tasks.mail import send_email
from promoter.tasks.reconcile import sweep_site
from promoter.webhook.outbox import OutboxUnavailable
from promoter.webhook.submitter import DeploymentMissing, is_transient
from tests.e2e.conftest import IN_PROCESS_FLOWS

STEPS_WITH_PASSING_RETRIES = [site.export_app, site.replace_app, send_email, sweep_site, deliver_to_site]


@pytest.fixture
def production() -> Iterator[None]:
    """The test mode off for one test, and on again afterwards (tests/conftest.py turns it on)."""
    retries.set_testing(False)
    try:
        yield
    finally:
        retries.set_testing(True)


def test_the_test_mode_takes_the_waits_out_of_every_step_and_keeps_the_attempts() -> None:
    """In the test mode, every step built on TRANSIENT_RETRIES is retried 3 times at once; the
    task's QRS clients repeat at once too."""
    held = [(t.retries, t.retry_delay_seconds) for t in STEPS_WITH_PASSING_RETRIES]

    assert held == [(3, [0.0, 0.0, 0.0])] * len(STEPS_WITH_PASSING_RETRIES)
    assert retries.is_testing()
    assert retries.client_retry() == RetryPolicy.immediate()


def test_outside_the_test_mode_steps_wait_2_10_and_30_seconds(production: None) -> None:
    """The same tasks, decorated at import, wait as in production once the test mode is off:
    the mode changes the one list every decorator holds, not a copy."""
    held = [(t.retries, t.retry_delay_seconds) for t in STEPS_WITH_PASSING_RETRIES]

    assert held == [(3, [2.0, 10.0, 30.0])] * len(STEPS_WITH_PASSING_RETRIES)
    assert (retries.is_testing(), retries.client_retry()) == (False, RetryPolicy())
    assert site.upload_app.with_options(name="again").retry_delay_seconds is retries.TASK_RETRY_DELAYS


def test_steps_that_must_not_repeat_blindly_have_no_retries() -> None:
    """An upload and a copy for the owner are never repeated as a step (the client checks an
    upload did not land; a new run passes the copy it recorded)."""
    assert (site.upload_app.retries, site.return_copy_to_owner.retries) == (0, 0)


def test_an_executor_of_a_test_stack_is_told_to_retry_without_waiting(tmp_path: Path) -> None:
    """The stack hands the test mode to its executor on the command line; by default it does not."""
    settings = Settings(
        source_site=SiteSettings(host="qlik-dev.invalid"),
        webhook=WebhookSettings(secret="registration-secret-0123456789ab"),
    )
    options = StackOptions(config=tmp_path / "qs-promoter.toml", state_dir=tmp_path, project_dir=tmp_path)

    def command(instant: bool) -> list[str]:
        stack = Stack(settings, dataclasses.replace(options, instant_retries=instant))
        return stack._worker_command("qs-promoter-test")

    assert ("--instant-retries" in command(True), "--instant-retries" in command(False)) == (True, False)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PromoterError("ours"), False),
        (SettingsError("qs-promoter.toml: source_site.port"), False),
        (IntakeError("not a JSON array"), False),
        (QrsError("dev", "GET", "/qrs/app", None), True),
        (error_for_status("dev", "GET", "/qrs/app", 503, ""), True),
        (error_for_status("dev", "GET", "/qrs/app", 404, ""), False),
        (error_for_status("dev", "PUT", "/qrs/app/1", 409, ""), False),
        (MailError("smtp:587", "connect", "refused", transient=True), True),
        (MailError("smtp:587", "login", "not accepted"), False),
        (VersioningError("upload", "s3://b/k", "SlowDown", code="SlowDown", transient=True), True),
        (SiteFailed(object(), transient=True), True),
        (SiteFailed(object()), False),
    ],
)
def test_transient_is_a_property_of_every_error_of_ours(error: PromoterError, expected: bool) -> None:
    """Every error of the family answers ``transient``: False unless its cause may pass; the
    answer survives the pickling Prefect does to a failed task's exception."""
    back = pickle.loads(pickle.dumps(error))

    assert (error.transient, back.transient) == (expected, expected)


async def retried(error: BaseException) -> bool:
    return await retries.retry_if_transient(site.replace_app, TaskRun.model_construct(), Failed(data=error))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (error_for_status("dev", "GET", "/qrs/app", 503, ""), True),
        (MailError("smtp:587", "send", "451 try later", transient=True), True),
        (error_for_status("dev", "PUT", "/qrs/app/1", 409, ""), True),  # the retried step re-reads
        (error_for_status("dev", "GET", "/qrs/app", 400, ""), False),
        (SettingsError("bad"), False),
        (RuntimeError("a bug of ours"), False),
    ],
)
async def test_a_step_is_retried_when_its_error_may_pass_or_was_a_conflict(
    error: BaseException, expected: bool
) -> None:
    """retry_if_transient asks the error's ``transient``; a 409 is retried too, never a bug."""
    assert await retried(error) is expected


def test_the_submitter_pauses_for_our_transient_errors_and_judges_httpx_itself() -> None:
    """A missing deployment pauses submitting (transient), an unusable outbox does not; httpx's
    errors are judged by their status."""
    request = httpx.Request("POST", "http://prefect/api/deployments/x/create_flow_run")

    def answered(status: int) -> httpx.HTTPStatusError:
        return httpx.HTTPStatusError("", request=request, response=httpx.Response(status, request=request))

    judged = [
        is_transient(DeploymentMissing("deploy the flows first")),
        is_transient(OutboxUnavailable("disk full")),
        is_transient(httpx.ConnectError("refused")),
        is_transient(answered(503)),
        is_transient(answered(422)),
    ]

    assert judged == [True, False, True, True, False]


@IN_PROCESS_FLOWS
async def test_a_step_meeting_a_passing_failure_is_retried_at_once(
    prefect_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real Prefect step on QRS_STEP that meets two 503s runs three times, the retries starting
    at once; one that meets a 404 runs once."""
    attempts: list[int] = []

    @task(**{**retries.QRS_STEP, "persist_result": False})
    async def call(failures: list[int]) -> str:
        attempts.append(1)
        if len(attempts) <= len(failures):
            raise error_for_status("dev", "GET", "/qrs/app", failures[len(attempts) - 1], "")
        return "done"

    @flow
    async def calling(failures: list[int]) -> Any:
        return await call(failures, return_state=True)

    passed = await calling([503, 503], return_state=True)
    passing_attempts = len(attempts)
    attempts.clear()
    refused = await calling([404], return_state=True)

    assert (passed.is_completed(), passing_attempts) == (True, 3)
    assert sum("will start immediately" in r.getMessage() for r in caplog.records) == 2
    assert (refused.is_failed(), len(attempts)) == (True, 1)
