"""Reconcile finishes what stopped: the run of a request that crashed or failed is retried, within a bound.

The rules are pure (plain data); the end-to-end tests use a real Prefect server with the change
deployment and no worker, so a retried run is seen waiting in Scheduled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.states import Crashed, Failed, Pending, Running

from promoter.flows.handle import handle_app_change
from promoter.flows.reconcile import reconcile
from promoter.prefect_api import HANDLE_CHANGE, KEEP_SUBSCRIPTIONS
from promoter.reconcile import (
    PENDING_LIMIT,
    RunStatus,
    decide_retry,
    in_hand,
    stalled,
)
from promoter.store.ledger import FAILED, Ledger
from promoter.store.reconcile_marks import LONGEST_RUN, OpenRequest, ReconcileRecord
from tests.e2e.conftest import IN_PROCESS_FLOWS, Stage
from tests.fixtures.deployments import Registration

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REQUEST = OpenRequest("approval:app:value@time", "6a1c7e4e-2f55-4d0e-9d0c-1f2a3b4c5d6e", None, NOW)


def status(state: str, since: datetime = NOW, message: str = "") -> RunStatus:
    return RunStatus(REQUEST.run_id, "promote 'Sales'", state, since, message)


@pytest.mark.parametrize("state", ["CRASHED", "FAILED", "CANCELLED"])
def test_a_run_that_stopped_is_retried(state: str) -> None:
    """Crashed, Failed or Cancelled with the request not done: schedule that same run again."""
    decision = decide_retry(REQUEST, status(state, message="killed"), 0, now=NOW)

    assert (decision.action, decision.retries) == ("retry", 0)
    assert state in decision.reason and "killed" in decision.reason


def test_retries_stop_at_the_limit() -> None:
    """After ``limit`` automatic retries the request waits for an admin, and the reason says so."""
    decision = decide_retry(REQUEST, status("CRASHED"), 5, now=NOW, limit=5)

    assert decision.action == "give-up"
    assert "5 automatic retries" in decision.reason


@pytest.mark.parametrize("state", ["RUNNING", "SCHEDULED", "PENDING", "PAUSED"])
def test_a_run_still_going_is_left_alone(state: str) -> None:
    """A run that is running (heartbeats reach Prefect), scheduled again or pending is not touched."""
    assert decide_retry(REQUEST, status(state), 0, now=NOW).action == "leave"


def test_a_run_going_longer_than_the_flow_timeout_is_crashed_and_retried() -> None:
    """Running although its claim is older than the flow's timeout: nobody runs it, so it is retried."""
    old = OpenRequest(REQUEST.key, REQUEST.run_id, None, NOW - LONGEST_RUN - timedelta(minutes=1))

    assert decide_retry(old, status("RUNNING"), 0, now=NOW).action == "crash-and-retry"


def test_a_run_pending_too_long_was_lost_with_its_worker() -> None:
    """Pending for longer than PENDING_LIMIT: the worker that took it died before starting it."""
    since = NOW - PENDING_LIMIT - timedelta(seconds=1)

    assert decide_retry(REQUEST, status("PENDING", since), 0, now=NOW).action == "crash-and-retry"
    assert not in_hand(status("PENDING", since), NOW)
    assert in_hand(status("PENDING"), NOW) and in_hand(status("SCHEDULED"), NOW)


def test_completed_or_missing_runs_are_reported_not_retried() -> None:
    """A completed run with no outcome in the ledger, or a run Prefect no longer has: an admin looks."""
    assert decide_retry(REQUEST, status("COMPLETED"), 0, now=NOW).action == "report"
    assert decide_retry(REQUEST, None, 0, now=NOW).action == "missing"


def test_the_record_lists_open_requests_and_counts_retries(tmp_path: Path) -> None:
    """Open: claimed and unfinished, or failed, within the window; finished ones and old ones are not."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with ReconcileRecord(url) as record, Ledger(url) as ledger:
        for key in ("running", "failed", "done"):
            ledger.claim(key, owner=f"run-{key}")
        ledger.mark_outcome("failed", FAILED)
        ledger.mark_outcome("done", "promoted")

        open_now = record.open_requests(datetime.now(UTC) + timedelta(minutes=1))
        open_later = record.open_requests(datetime.now(UTC) + timedelta(days=2))
        counts = [record.count_retry("failed", "run-failed", NOW) for _ in range(3)]

        assert sorted((r.key, r.run_id, r.outcome) for r in open_now) == [
            ("failed", "run-failed", FAILED),
            ("running", "run-running", None),
        ]
        assert open_later == []
        assert (counts, record.retries(["failed", "running"])) == ([1, 2, 3], {"failed": 3})


# -- end to end: a real Prefect server, the change deployment, no worker ---------------------

DEPLOYMENT = "retry-tests"


@pytest.fixture
def change_deployment(prefect_api: str) -> Iterator[UUID]:
    """handle-app-change deployed as handle-app-change/retry-tests (no worker: runs stay scheduled)."""
    yield handle_app_change.to_deployment(name=DEPLOYMENT).apply()  # type: ignore[misc]


async def claimed_run(stage: Stage, prefect_api: str, deployment_id: UUID, state: str) -> tuple[str, UUID]:
    """A change run that claimed a request in the ledger, then reached ``state``."""
    key = f"approval:{uuid4()}:value@time"
    async with PrefectClient(api=prefect_api) as client:
        run = await client.create_flow_run_from_deployment(deployment_id, parameters={"app_id": str(uuid4())})
        await client.set_flow_run_state(run.id, Running(), force=True)
        with stage.ledger() as ledger:
            ledger.claim(key, owner=str(run.id))
            if state == "FAILED":
                ledger.mark_outcome(key, FAILED, "PromotionFailed: prod: 503")
        final = {"CRASHED": Crashed(message="worker killed"), "FAILED": Failed(message="a site failed")}
        if state in final:
            await client.set_flow_run_state(run.id, final[state], force=True)
    return key, run.id


async def state_of(prefect_api: str, run_id: UUID) -> tuple[str, str]:
    async with PrefectClient(api=prefect_api) as client:
        run = await client.read_flow_run(run_id)
    assert run.state is not None
    return run.state.type.value, run.state.message or ""


@IN_PROCESS_FLOWS
async def test_reconcile_retries_the_crashed_and_the_failed_run_and_leaves_the_running_one(
    stage: Stage, prefect_api: str, change_deployment: UUID
) -> None:
    """The same flow runs are scheduled again (no new run), each retry counted and explained;
    a run still running keeps running."""
    crashed_key, crashed = await claimed_run(stage, prefect_api, change_deployment, "CRASHED")
    failed_key, failed = await claimed_run(stage, prefect_api, change_deployment, "FAILED")
    running_key, running = await claimed_run(stage, prefect_api, change_deployment, "RUNNING")

    summary = await reconcile(deployment_name=f"handle-app-change/{DEPLOYMENT}", settle_seconds=0)

    states = {
        key: await state_of(prefect_api, run) for key, run in [(crashed_key, crashed), (failed_key, failed)]
    }
    assert "2 stopped run(s) retried" in summary
    assert {key: state for key, (state, _) in states.items()} == {
        crashed_key: "SCHEDULED",
        failed_key: "SCHEDULED",
    }
    assert all(message.startswith("Retried by reconcile (1 of 5)") for _, message in states.values())
    assert (await state_of(prefect_api, running))[0] == "RUNNING"
    with ReconcileRecord(stage.settings.ledger_url.get_secret_value()) as record:
        assert record.retries([crashed_key, failed_key, running_key]) == {crashed_key: 1, failed_key: 1}


@IN_PROCESS_FLOWS
async def test_a_run_that_keeps_crashing_is_retried_only_up_to_the_limit(
    stage: Stage, prefect_api: str, change_deployment: UUID
) -> None:
    """With a limit of 2, the third crash stays Crashed: the request waits for an admin."""
    key, run_id = await claimed_run(stage, prefect_api, change_deployment, "CRASHED")
    deployment = f"handle-app-change/{DEPLOYMENT}"

    seen = []
    for _ in range(3):
        summary = await reconcile(deployment_name=deployment, settle_seconds=0, retry_limit=2)
        seen.append((await state_of(prefect_api, run_id))[0])
        async with PrefectClient(api=prefect_api) as client:
            await client.set_flow_run_state(run_id, Crashed(message="crashed again"), force=True)

    assert seen == ["SCHEDULED", "SCHEDULED", "CRASHED"]
    assert "0 stopped run(s) retried" in summary
    with ReconcileRecord(stage.settings.ledger_url.get_secret_value()) as record:
        assert record.retries([key]) == {key: 2}


def test_only_a_run_pending_too_long_is_stalled() -> None:
    """Stalled: Pending for longer than the limit. Scheduled, running or freshly pending runs are not."""
    old = NOW - PENDING_LIMIT - timedelta(seconds=1)

    assert stalled(status("PENDING", old), NOW)
    assert not stalled(status("PENDING", NOW - PENDING_LIMIT + timedelta(seconds=1)), NOW)
    assert not any(stalled(status(state, old), NOW) for state in ("SCHEDULED", "RUNNING", "CRASHED"))


@IN_PROCESS_FLOWS
async def test_runs_a_lost_worker_left_pending_give_their_slots_back(
    stage: Stage, prefect_api: str, registered_deployments: Registration
) -> None:
    """Pending longer than pending_minutes (the worker that took them died before starting them):
    the change run is scheduled again, the same run with its parameters, so its notification is
    not lost; the keep-subscriptions run is marked Crashed (its next tick does its work); a run
    that only just went Pending is left to its worker."""
    parameters = {"app_id": str(uuid4()), "trigger": "updated", "change_id": f"updated:{uuid4()}:t"}
    async with PrefectClient(api=prefect_api) as client:
        change = await client.read_deployment_by_name(HANDLE_CHANGE)
        keeper = await client.read_deployment_by_name(KEEP_SUBSCRIPTIONS)
        lost = await client.create_flow_run_from_deployment(change.id, parameters=parameters)
        lost_keeper = await client.create_flow_run_from_deployment(keeper.id)
        fresh_app = str(uuid4())
        fresh_parameters = {"app_id": fresh_app, "trigger": "updated", "change_id": f"updated:{fresh_app}:t"}
        fresh = await client.create_flow_run_from_deployment(change.id, parameters=fresh_parameters)
        for run in (lost, lost_keeper):
            await client.set_flow_run_state(run.id, Pending(), force=True)
        await asyncio.sleep(6.0)
        await client.set_flow_run_state(fresh.id, Pending(), force=True)

    await reconcile(settle_seconds=0, pending_minutes=5 / 60)

    async with PrefectClient(api=prefect_api) as client:
        again = await client.read_flow_run(lost.id)
    lost_state, lost_message = await state_of(prefect_api, lost.id)
    assert (lost_state, again.parameters) == ("SCHEDULED", parameters)
    assert lost_message.startswith("Pending for over")
    assert (await state_of(prefect_api, lost_keeper.id))[0] == "CRASHED"
    assert (await state_of(prefect_api, fresh.id))[0] == "PENDING"
