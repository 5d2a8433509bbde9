"""The Prefect API as qs-promoter uses it: the deployments' names, a change run's parameters, run names,
and starting and following a flow run.

It sits below the tasks and flows and above the core: the webhook, reconcile's tasks, the CLI, `up`
and the demo all start runs here, and the flows take their run names from here. Prefect is imported
inside the functions only, so the CLI starts fast and nothing in the core loads Prefect through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from promoter.mail_headers import clip
from promoter.outcome import RUN_NAME_LIMIT, change_run_name, named_by_us

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

T = TypeVar("T")

# Each deployment is named for how its runs start (the Deployments page reads as a list of jobs).
# prefect.yaml registers exactly these; tests/unit/test_prefect_api.py holds the two together.
HANDLE_CHANGE = "handle-app-change/on-qrs-change"  # the webhook and reconcile start it
PROMOTE = "promote-app/manual"  # `qs-promoter promote`, or Run > Custom run
ROLLBACK = "rollback-app/manual"  # `qs-promoter rollback`, or Run > Custom run
ALERT_ON_PUBLISH = "alert-on-publish/manual"  # Run > Custom run (the webhook alerts through HANDLE_CHANGE)
PLAN = "plan-promotion/manual"  # Run > Custom run (`qs-promoter plan` plans without Prefect)
KEEP_SUBSCRIPTIONS = "keep-subscriptions/every-minute"
RECONCILE = "reconcile/every-10-minutes"
DEPLOYMENTS = (HANDLE_CHANGE, PROMOTE, ROLLBACK, ALERT_ON_PUBLISH, PLAN, KEEP_SUBSCRIPTIONS, RECONCILE)

# Before the deployments were named for their purpose, every one was `<flow>/qs-promoter`. A name
# of that form given anywhere (a reconcile run's deployment_name, a script) means today's
# deployment of the same flow; `up` deletes the old deployments (orchestration.retire_deployments).
RETIRED_NAME = "qs-promoter"

# Every run the webhook creates carries these (with the deployment's own tags): the Runs page
# filters on them.
WEBHOOK_TAGS = ("webhook",)
RECONCILE_TAGS = ("reconcile",)
UP_TAGS = ("qs-promoter-up",)


def flow_of(deployment: str) -> str:
    """The flow part of ``flow/deployment``."""
    return deployment.split("/", 1)[0]


def deployment_part(deployment: str) -> str:
    """The deployment part of ``flow/deployment`` (the ``name`` in prefect.yaml)."""
    return deployment.split("/", 1)[1]


def current_name(deployment: str) -> str:
    """Today's name for ``deployment``: a retired ``<flow>/qs-promoter`` of one of our flows becomes
    that flow's deployment; any other name is returned as given."""
    flow, _, name = deployment.partition("/")
    if name == RETIRED_NAME:
        return next((d for d in DEPLOYMENTS if flow_of(d) == flow), deployment)
    return deployment


def change_parameters(
    app_id: UUID | str,
    trigger: str,
    change_id: str,
    *,
    published_to: str | None = None,
    published_at: str | None = None,
) -> dict[str, str]:
    """The parameters of a handle-app-change run: what changed, how, and which request (no secrets);
    for a publish, where and when QRS said it was published. The webhook and reconcile both use it."""
    parameters = {"app_id": str(app_id), "trigger": trigger, "change_id": change_id}
    if trigger == "published" and published_to is not None:
        parameters["published_to"] = published_to
        if published_at is not None:
            parameters["published_at"] = published_at
    return parameters


def _shown(value: object) -> str:
    """A parameter as a run name shows it: one line, no control characters, cut (a UI user typed it)."""
    return clip(str(value), 60)


def first_run_name(flow: str, parameters: Mapping[str, Any]) -> str:
    """What a run of ``flow`` is called from its first second, from its parameters (display only).

    Every name has a space (``named_by_us``); the flows that read the app rename the run by the
    app's name and who asked once they know them (``tasks.run.label_run``).
    """
    app = _shown(parameters.get("app_id"))
    target, site = _shown(parameters.get("target_app_id")), _shown(parameters.get("site_name"))
    names = {
        "handle-app-change": change_run_name(str(parameters.get("trigger", "updated")), app),
        "promote-app": f"manual promotion of app {app}",
        "rollback-app": f"rollback of app {target} on {site}",
        "alert-on-publish": f"publish alert for app {app}",
        "plan-promotion": f"plan for app {app}",
        "keep-subscriptions": "keep subscriptions",
        "reconcile": "reconcile missed changes",
    }
    name = names.get(flow) or f"run of {_shown(flow)}"
    return clip(name, RUN_NAME_LIMIT)


def name_at_start(flow: str) -> Callable[[], str]:
    """A ``flow_run_name`` for ``@flow(name=flow)``: keeps the name the run was created with when we
    gave it (``start_run``, the webhook), and replaces a name Prefect made up (a scheduled tick, a
    Custom run in the UI) by ``first_run_name``."""

    def name() -> str:
        from prefect.runtime import flow_run

        given = flow_run.name
        if given and named_by_us(given):
            return given
        return first_run_name(flow, flow_run.parameters)

    return name


def names_to_give(runs: Iterable[FlowRun], flows: Mapping[UUID, str]) -> dict[UUID, str]:
    """The runs Prefect named itself (a scheduled tick created ahead, a Custom run for later) and
    the name each should have now, by run id: ``first_run_name`` of its flow, as ``name_at_start``
    would name it when it starts. ``flows``: the flow name of each deployment id; a run of a
    deployment not in it, or with a name of ours, is left as it is."""
    wanted: dict[UUID, str] = {}
    for run in runs:
        flow = flows.get(run.deployment_id) if run.deployment_id is not None else None
        if flow is not None and not named_by_us(run.name):
            wanted[run.id] = first_run_name(flow, run.parameters)
    return wanted


async def with_prefect(api_url: str, call: Callable[[PrefectClient], Awaitable[T]]) -> T:
    """Run ``call(client)`` with a client of ``api_url``, whatever this process's Prefect settings say."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            return await call(client)


async def find_deployment(client: PrefectClient, deployment: str) -> UUID:
    """The id of ``deployment`` (``flow/deployment``; a retired name means today's deployment)."""
    return (await client.read_deployment_by_name(current_name(deployment))).id


async def start_run(
    client: PrefectClient,
    deployment: str,
    parameters: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    idempotency_key: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    known_id: UUID | None = None,
) -> FlowRun:
    """Create a flow run of ``deployment``, named from the start (``name``, else ``first_run_name``);
    the executor picks it up. With a known ``idempotency_key`` Prefect returns the existing run.
    ``known_id``: the deployment's id when the caller keeps it (the webhook), saving a lookup."""
    given = parameters or {}
    return await client.create_flow_run_from_deployment(
        known_id or await find_deployment(client, deployment),
        parameters=given,
        name=name or first_run_name(flow_of(deployment), given),
        idempotency_key=idempotency_key,
        tags=list(tags),
    )


def run_url(api_url: str, run_id: UUID) -> str:
    """Where the Prefect UI shows a flow run."""
    return f"{api_url.removesuffix('/api')}/runs/flow-run/{run_id}"


async def run_states(client: PrefectClient, deployment: str, since: datetime) -> list[tuple[str, str]]:
    """(name, state type) of the runs of ``deployment`` created after ``since``, oldest first."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    only = DeploymentFilter(id=DeploymentFilterId(any_=[await find_deployment(client, deployment)]))
    runs = await client.read_flow_runs(deployment_filter=only, sort=FlowRunSort.EXPECTED_START_TIME_ASC)
    return [
        (r.name, r.state.type.value if r.state else "?")
        for r in runs
        if r.created is not None and r.created >= since
    ]


async def recent_runs(client: PrefectClient, limit: int = 20) -> list[tuple[str, str]]:
    """(name, state name) of the newest flow runs, for a report after a failure."""
    from prefect.client.schemas.sorting import FlowRunSort

    runs = await client.read_flow_runs(limit=limit, sort=FlowRunSort.EXPECTED_START_TIME_DESC)
    return [(r.name, r.state.name if r.state else "?") for r in runs]


@dataclass(frozen=True, slots=True)
class RunProgress:
    """How far a flow run is, as a terminal shows it while following it."""

    name: str
    state: str  # the state's name: Scheduled, Pending, Running, Completed, Failed ...
    final: bool
    completed: bool  # final and Completed: the run did its job
    steps_done: int  # task runs completed
    percent: float | None  # the mean of the run's progress artifacts (export, uploads); None: none yet
    message: str = ""


async def run_progress(client: PrefectClient, run_id: UUID) -> RunProgress:
    """The run's state, its finished steps and its progress artifacts, read once."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    run = await client.read_flow_run(run_id)
    done = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED])))
    tasks = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), task_run_filter=done
    )
    bars = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), type=ArtifactFilterType(any_=["progress"])
        )
    )
    values = [float(a.data) for a in bars if isinstance(a.data, int | float)]
    state = run.state
    return RunProgress(
        name=run.name,
        state=state.name if state and state.name else "Scheduled",
        final=bool(state and state.is_final()),
        completed=bool(state and state.is_completed()),
        steps_done=len(tasks),
        percent=sum(values) / len(values) if values else None,
        message=(state.message or "") if state else "",
    )


async def run_summaries(client: PrefectClient, run_id: UUID) -> list[str]:
    """The markdown artifacts a finished run left (a promotion's summary, a plan), oldest first."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
    from prefect.client.schemas.sorting import ArtifactSort

    found = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), type=ArtifactFilterType(any_=["markdown"])
        ),
        sort=ArtifactSort.CREATED_DESC,
    )
    return [str(a.data) for a in reversed(found) if a.data]


async def follow_run(
    client: PrefectClient,
    run_id: UUID,
    seen: Callable[[RunProgress], None],
    poll_seconds: float = 2.0,
) -> RunProgress:
    """Read the run every ``poll_seconds`` and hand each reading to ``seen`` until the run is final."""
    while True:
        progress = await run_progress(client, run_id)
        seen(progress)
        if progress.final:
            return progress
        await asyncio.sleep(poll_seconds)
