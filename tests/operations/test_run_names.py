"""The Prefect UI speaks promotions: runs named by action and app from their first second, the Runs
page filtered by tag, old deployments retired, and `promote` following its run in the terminal.

Checked through the Prefect API of the session's server, against prefect.yaml's deployments as
`up --register-only` registers them. No worker runs: the tests move run states as a worker would.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags
from prefect.flow_engine import run_flow_async
from prefect.states import Cancelled, Completed, Running
from typer.testing import CliRunner

from promoter.cli import app
from promoter.flows.alert import alert_on_publish
from promoter.flows.handle import handle_app_change
from promoter.flows.manual import promote_app
from promoter.flows.plan import plan_promotion
from promoter.flows.reconcile import reconcile
from promoter.flows.rollback import rollback_app
from promoter.flows.subscriptions import keep_subscriptions
from promoter.prefect_api import (
    ALERT_ON_PUBLISH,
    HANDLE_CHANGE,
    KEEP_SUBSCRIPTIONS,
    PLAN,
    PROMOTE,
    RECONCILE,
    ROLLBACK,
    UP_TAGS,
    start_run,
    with_prefect,
)
from promoter.settings import Settings, write_settings
from tests.e2e.conftest import IN_PROCESS_FLOWS
from tests.fixtures.deployments import Registration, child_environment, cli_command, offline_config

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

APP = str(uuid4())
TARGET = str(uuid4())
# One run of each deployment as the CLI, the webhook, reconcile or `up` starts it, and its name.
STARTS: dict[str, tuple[dict[str, Any], str]] = {
    HANDLE_CHANGE: ({"app_id": APP, "trigger": "published"}, f"publish of app {APP}"),
    PROMOTE: ({"app_id": APP}, f"manual promotion of app {APP}"),
    ROLLBACK: ({"site_name": "prod", "target_app_id": TARGET}, f"rollback of app {TARGET} on prod"),
    ALERT_ON_PUBLISH: ({"app_id": APP}, f"publish alert for app {APP}"),
    PLAN: ({"app_id": APP}, f"plan for app {APP}"),
    KEEP_SUBSCRIPTIONS: ({}, "keep subscriptions"),  # as `up` starts the keeper's first run
    RECONCILE: ({}, "reconcile missed changes"),
}


async def _cancel_and_delete(client: PrefectClient, runs: list[FlowRun]) -> None:
    """The runs go, so no later test (or worker) meets them."""
    for run in runs:
        await client.set_flow_run_state(run.id, Cancelled(), force=True)
        await client.delete_flow_run(run.id)


async def test_every_run_is_named_by_action_and_app_when_it_is_created(
    registered_deployments: Registration,
) -> None:
    """A run of each deployment, started as qs-promoter starts them (the keeper's first run as `up`
    does), is named for what it does from the moment it exists: never a made-up or GUID-only name."""

    async def start_all(client: PrefectClient) -> dict[str, str]:
        runs = {
            deployment: await start_run(client, deployment, parameters, tags=UP_TAGS)
            for deployment, (parameters, _) in STARTS.items()
        }
        names = {deployment: (await client.read_flow_run(run.id)).name for deployment, run in runs.items()}
        await _cancel_and_delete(client, list(runs.values()))
        return names

    names = await with_prefect(registered_deployments.api_url, start_all)

    assert names == {deployment: name for deployment, (_, name) in STARTS.items()}


async def test_the_runs_page_tag_filter_shows_promotions_without_maintenance(
    registered_deployments: Registration,
) -> None:
    """The README's recipe: Runs page, Tags filter, `promotion`. It lists a manual promotion, a
    rollback and a change run, and not the keeper or reconcile (filter `maintenance` for those)."""

    async def filtered(client: PrefectClient) -> dict[str, set[str]]:
        runs = {d: await start_run(client, d, parameters) for d, (parameters, _) in STARTS.items()}
        by_id = {run.id: deployment for deployment, run in runs.items()}
        shown: dict[str, set[str]] = {}
        for tag in ("promotion", "maintenance"):
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=list(by_id)), tags=FlowRunFilterTags(all_=[tag])
                )
            )
            shown[tag] = {by_id[run.id] for run in found}
        await _cancel_and_delete(client, list(runs.values()))
        return shown

    shown = await with_prefect(registered_deployments.api_url, filtered)

    assert shown == {
        "promotion": {HANDLE_CHANGE, PROMOTE, ROLLBACK},
        "maintenance": {KEEP_SUBSCRIPTIONS, RECONCILE},
    }


FLOWS = {
    "handle-app-change": (handle_app_change, {"app_id": APP, "trigger": "reloaded"}, f"reload of app {APP}"),
    "promote-app": (promote_app, {"app_id": APP}, f"manual promotion of app {APP}"),
    "rollback-app": (
        rollback_app,
        {"site_name": "prod", "target_app_id": TARGET},
        f"rollback of app {TARGET} on prod",
    ),
    "alert-on-publish": (alert_on_publish, {"app_id": APP}, f"publish alert for app {APP}"),
    "plan-promotion": (plan_promotion, {"app_id": APP}, f"plan for app {APP}"),
    "keep-subscriptions": (keep_subscriptions, {}, "keep subscriptions"),
    "reconcile": (reconcile, {}, "reconcile missed changes"),
}


@IN_PROCESS_FLOWS
@pytest.mark.parametrize("flow_name", list(FLOWS))
async def test_a_run_prefect_named_gets_our_name_when_it_starts(prefect_api: str, flow_name: str) -> None:
    """A run Prefect named itself (a scheduled tick, a Custom run in the UI: `malachite-mongrel`) is
    renamed by action and app as it starts, by the flow's own flow_run_name; a name we gave stays."""
    real, parameters, expected = FLOWS[flow_name]

    async def nothing(*args: Any, **kwargs: Any) -> None:
        """The real flow's run naming and parameters, and nothing else (its work needs sites)."""

    nothing.__signature__ = inspect.signature(real.fn)  # type: ignore[attr-defined]
    named_like = flow(
        nothing, name=f"named-like-{flow_name}", flow_run_name=real.flow_run_name, validate_parameters=False
    )

    async with PrefectClient(api=prefect_api) as client:
        made_up = await client.create_flow_run(named_like, parameters=parameters, name="malachite-mongrel")
        given = await client.create_flow_run(named_like, parameters=parameters, name="promote 'Sales' (x)")
    for created in (made_up, given):
        await run_flow_async(named_like, flow_run=created, parameters=parameters)
    async with PrefectClient(api=prefect_api) as client:
        names = [(await client.read_flow_run(r.id)).name for r in (made_up, given)]

    assert names == [expected, "promote 'Sales' (x)"]


async def test_registration_retires_the_deployments_of_an_earlier_version(
    registered_deployments: Registration, tmp_path: Path
) -> None:
    """An installation upgraded from `<flow>/qs-promoter` names: `up --register-only` deletes the old
    keep-subscriptions deployment (so its schedule no longer ticks beside every-minute's) and an idle
    old one, and keeps an old handle-app-change deployment while a run of it still waits."""
    api = registered_deployments.api_url

    async def old_deployments(client: PrefectClient) -> UUID:
        from prefect.client.schemas.actions import DeploymentScheduleCreate
        from prefect.client.schemas.schedules import IntervalSchedule

        ids = {}
        for deployment in (KEEP_SUBSCRIPTIONS, PROMOTE, HANDLE_CHANGE):
            current = await client.read_deployment_by_name(deployment)
            every_minute = [DeploymentScheduleCreate(schedule=IntervalSchedule(interval=60), active=True)]
            ids[deployment] = await client.create_deployment(
                flow_id=current.flow_id,
                name="qs-promoter",
                work_pool_name="qs-promoter",
                entrypoint=current.entrypoint,
                schedules=every_minute if deployment == KEEP_SUBSCRIPTIONS else None,
            )
        waiting = await client.create_flow_run_from_deployment(ids[HANDLE_CHANGE], parameters={"app_id": APP})
        return waiting.id

    waiting = await with_prefect(api, old_deployments)
    result = await asyncio.to_thread(
        subprocess.run,
        cli_command("up", "--register-only", "--config", str(offline_config(tmp_path)), "--state-dir", "var"),
        cwd=tmp_path,
        env=child_environment(PREFECT_API_URL=api),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=240,
        check=False,
    )

    async def remaining(client: PrefectClient) -> set[str]:
        from prefect.exceptions import ObjectNotFound

        left = set()
        for flow_name in ("keep-subscriptions", "promote-app", "handle-app-change"):
            try:
                await client.read_deployment_by_name(f"{flow_name}/qs-promoter")
                left.add(flow_name)
            except ObjectNotFound:
                pass
        # Tidy up for later tests: the waiting run goes, then its deployment.
        await client.set_flow_run_state(waiting, Cancelled(), force=True)
        await client.delete_flow_run(waiting)
        old = await client.read_deployment_by_name("handle-app-change/qs-promoter")
        await client.delete_deployment(old.id)
        return left

    left = await with_prefect(api, remaining)

    assert result.returncode == 0, result.stdout + result.stderr
    assert left == {"handle-app-change"}
    assert "deleted: keep-subscriptions/qs-promoter, promote-app/qs-promoter" in result.stdout
    assert "kept while their runs finish: handle-app-change/qs-promoter" in result.stdout


def test_promote_follows_its_run_to_the_end_and_prints_what_it_did(
    registered_deployments: Registration, sandbox_settings: Settings, tmp_path: Path
) -> None:
    """`promote` without --no-wait shows the run until it ends, then prints its name, its final state
    and the summary it left, with exit code 0 for Completed. The test is the worker: it finds the
    run, moves it to Running, leaves a progress artifact and a summary, and completes it."""
    config = write_settings(sandbox_settings, tmp_path / "qs-promoter.toml")
    app_id = uuid4()
    api = registered_deployments.api_url

    async def work_the_run(client: PrefectClient) -> None:
        from prefect.client.schemas.actions import ArtifactCreate

        while True:
            runs = await client.read_flow_runs()
            found = [r for r in runs if r.parameters.get("app_id") == str(app_id)]
            if found:
                break
            await asyncio.sleep(0.2)
        run_id = found[0].id
        await client.set_flow_run_state(run_id, Running(), force=True)
        await client.create_artifact(ArtifactCreate(type="progress", data=50.0, flow_run_id=run_id))
        summary = "### 'Sales' to test\n\n* owner: ACME\\\\rep"
        await client.create_artifact(
            ArtifactCreate(type="markdown", key="promotion-summary", data=summary, flow_run_id=run_id)
        )
        await client.set_flow_run_state(run_id, Completed(message="promoted"), force=True)

    worker = threading.Thread(target=lambda: asyncio.run(with_prefect(api, work_the_run)), daemon=True)
    worker.start()
    result = CliRunner().invoke(app, ["promote", str(app_id), "--site", "test", "--config", str(config)])
    worker.join(timeout=60)

    assert result.exit_code == 0, result.output
    assert f"manual promotion of app {app_id}: Completed: promoted" in result.output
    assert "'Sales' to test" in result.output and "owner: ACME\\rep" in result.output
