"""The Prefect API calls that set up and tidy an installation: work pool, deployments, automation, runs.

Used by `up` (``promoter.services.stack``) and the executor. Each call takes a ``PrefectClient``
(``promoter.prefect_api.with_prefect`` makes one for a given API URL); starting and reading runs is
``promoter.prefect_api``'s. Prefect is imported inside the functions, so the CLI starts fast.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from promoter.prefect_api import DEPLOYMENTS, flow_of
from promoter.reconcile import MAINTENANCE_FLOWS

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

ZOMBIE_AUTOMATION = "qs-promoter-crash-zombie-flow-runs"
# Our worker's flow runs send a heartbeat this often; a run silent for ZOMBIE_AFTER is crashed.
HEARTBEAT_SECONDS = 60
ZOMBIE_AFTER = timedelta(seconds=5 * HEARTBEAT_SECONDS)
ACTIVE_STATES = ("RUNNING", "PENDING", "CANCELLING")


async def ensure_work_pool(client: PrefectClient, name: str) -> bool:
    """Create the process work pool ``name`` with Prefect's default job template; True if created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        await client.read_work_pool(name)
        return False
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        await client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        return True


async def deployment_names(client: PrefectClient, pool: str) -> list[str]:
    """The ``flow/deployment`` names of every deployment in the work pool."""
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    deployments = await client.read_deployments(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
    )
    flows = {f.id: f.name for f in await client.read_flows()}
    return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments)


async def retire_deployments(client: PrefectClient, pool: str) -> tuple[list[str], list[str]]:
    """Delete the deployments of our flows in ``pool`` that prefect.yaml no longer names (the
    ``<flow>/qs-promoter`` of earlier versions): a retired schedule would otherwise go on ticking
    next to the new one. Returns (deleted, kept).

    A retired deployment with a run still waiting or going (a backlog of changes, a promotion
    under way) is kept until a later `up`, so that run can still load its flow; it has no
    schedule of its own unless it is a maintenance flow's, and those are always deleted (the
    new deployment's next tick does the same work). Deleting a deployment deletes its
    scheduled runs.
    """
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    ours = {flow_of(d) for d in DEPLOYMENTS}
    flows = {f.id: f.name for f in await client.read_flows()}
    in_pool = await client.read_deployments(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
    )
    unfinished = FlowRunFilterStateType(
        any_=[
            StateType.SCHEDULED,
            StateType.PENDING,
            StateType.RUNNING,
            StateType.PAUSED,
            StateType.CANCELLING,
        ]
    )
    deleted: list[str] = []
    kept: list[str] = []
    for deployment in in_pool:
        flow = flows.get(deployment.flow_id, "")
        name = f"{flow}/{deployment.name}"
        if flow not in ours or name in DEPLOYMENTS:
            continue
        waiting = (
            []
            if flow in MAINTENANCE_FLOWS
            else await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=unfinished)),
                limit=1,
            )
        )
        if waiting:
            kept.append(name)
        else:
            await client.delete_deployment(deployment.id)
            deleted.append(name)
    return sorted(deleted), sorted(kept)


async def ensure_zombie_automation(client: PrefectClient) -> bool:
    """Crash flow runs whose heartbeats stopped (worker and run both died); True if created.

    Without it such a run stays Running for ever in the OSS server (prefect-notes §5.8).
    """
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    if await client.read_automations_by_name(ZOMBIE_AUTOMATION):
        return False
    automation = AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Mark flow runs Crashed when their heartbeats stop (worker and run both died).",
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=ZOMBIE_AFTER,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {ZOMBIE_AFTER.total_seconds():.0f} s: the worker died.",
            )
        ],
    )
    await client.create_automation(automation)
    return True


async def active_runs(client: PrefectClient, pool: str) -> list[FlowRun]:
    """The runs of ``pool`` that are pending, running or being cancelled."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    states = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(s) for s in ACTIVE_STATES]))
    return await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=states),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
    )


async def cancel_maintenance_runs(client: PrefectClient, pool: str, message: str) -> list[str]:
    """Ask the worker to cancel running keep-subscriptions and reconcile runs; returns their names."""
    from prefect.states import Cancelling

    flows = {f.id: f.name for f in await client.read_flows()}
    runs = [r for r in await active_runs(client, pool) if flows.get(r.flow_id) in MAINTENANCE_FLOWS]
    for run in runs:
        await client.set_flow_run_state(run.id, Cancelling(message=message))
    return [run.name for run in runs]


async def crash_active_runs(client: PrefectClient, pool: str, message: str) -> list[str]:
    """Mark every active run of ``pool`` Crashed, forced; returns their names.

    Only for a Prefect server nobody else's worker uses: the runs are known to be abandoned.
    A forced state still releases the run's concurrency slots (Prefect's minimal policy does).
    """
    from prefect.states import Crashed

    runs = await active_runs(client, pool)
    for run in runs:
        await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return [run.name for run in runs]


async def worker_seen(client: PrefectClient, pool: str, name: str, since: datetime) -> bool:
    """True once the worker ``name`` has sent a heartbeat to ``pool`` after ``since``."""
    from prefect.exceptions import ObjectNotFound

    try:
        workers = await client.read_workers_for_work_pool(pool)
    except ObjectNotFound:
        return False
    return any(
        w.name == name and w.last_heartbeat_time is not None and w.last_heartbeat_time >= since
        for w in workers
    )
