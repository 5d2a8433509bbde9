"""The Prefect Runs page as an admin reads it: runs tagged by purpose, no Cancelled maintenance ticks.

Checked through the Prefect API against prefect.yaml's deployments as `up --register-only`
registers them; no worker runs, so the tests move run states themselves, as a worker would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import uuid4

from prefect.states import Cancelled, Pending

from promoter.prefect_api import HANDLE_CHANGE, KEEP_SUBSCRIPTIONS, PROMOTE, RECONCILE, ROLLBACK, with_prefect
from tests.fixtures.deployments import Registration

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

PROMOTIONS = (HANDLE_CHANGE, PROMOTE, ROLLBACK)
MAINTENANCE = (KEEP_SUBSCRIPTIONS, RECONCILE)


async def test_runs_carry_the_tag_the_runs_page_filters_promotions_or_maintenance_on(
    registered_deployments: Registration,
) -> None:
    """A run of a promotion deployment is tagged `promotion`, a maintenance run `maintenance`, so the
    Runs page's tag filter shows one kind without the other."""

    async def tags(client: PrefectClient) -> tuple[dict[str, set[str]], set[str]]:
        deployments = {
            name: await client.read_deployment_by_name(name) for name in (*PROMOTIONS, *MAINTENANCE)
        }
        # A run takes its deployment's tags (and the webhook's own): shown with one change run.
        parameters = {"app_id": str(uuid4()), "trigger": "updated"}
        change = deployments[PROMOTIONS[0]]
        created = await client.create_flow_run_from_deployment(
            change.id, parameters=parameters, tags=["webhook"], state=Cancelled()
        )
        await client.delete_flow_run(created.id)
        return {name: set(d.tags) for name, d in deployments.items()}, set(created.tags)

    found, change_run = await with_prefect(registered_deployments.api_url, tags)

    assert {"promotion", "webhook"} <= change_run and "maintenance" not in change_run
    assert {name for name, tagged in found.items() if "promotion" in tagged} == set(PROMOTIONS)
    assert {name for name, tagged in found.items() if "maintenance" in tagged} == set(MAINTENANCE)


async def test_a_maintenance_tick_that_meets_the_previous_run_waits_instead_of_showing_cancelled(
    registered_deployments: Registration,
) -> None:
    """While a keep-subscriptions or reconcile run holds the deployment's one slot (the run `up` starts
    at once, a slow machine), the next tick the worker takes waits for the slot: Prefect answers
    AwaitingConcurrencySlot, not a Cancelled run ("Deployment concurrency limit reached") that reads
    as a failure in the UI."""

    async def next_tick(client: PrefectClient, name: str) -> tuple[str, str | None]:
        deployment = await client.read_deployment_by_name(name)
        running = await client.create_flow_run_from_deployment(deployment.id)
        tick = await client.create_flow_run_from_deployment(deployment.id)
        try:
            held = await client.set_flow_run_state(running.id, Pending())
            assert held.state is not None and held.state.is_pending(), held.details
            answer = await client.set_flow_run_state(tick.id, Pending())
            assert answer.state is not None
            return answer.state.type.value, answer.state.name
        finally:
            # Leaving Pending gives the slot back; the runs go, so nothing else meets them.
            await client.set_flow_run_state(running.id, Cancelled(), force=True)
            await client.set_flow_run_state(tick.id, Cancelled(), force=True)
            for run in (running, tick):
                await client.delete_flow_run(run.id)

    async def ticks(client: PrefectClient) -> dict[str, tuple[str, str | None]]:
        return {name: await next_tick(client, name) for name in MAINTENANCE}

    found = await with_prefect(registered_deployments.api_url, ticks)

    assert found == dict.fromkeys(MAINTENANCE, ("SCHEDULED", "AwaitingConcurrencySlot"))
